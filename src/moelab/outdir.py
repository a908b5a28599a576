"""Who owns an output folder: one rule for every command that writes one (docs/reliability.md).

A command writes only into a folder that is new, empty, or already of its own kind (a re-run
resumes or refreshes it). Anything else is refused before any write, naming what the folder holds:

    claim_output(Path(args.out), "hf-export", sources=[args.model])   # UserError, or nothing

Kinds are recognised by the files moelab writes (no marker file: folders written by earlier
versions are recognised the same way). A source is never its own destination: a folder that is,
or contains, one of ``sources`` is refused whatever it holds.

Each command still checks identity within its kind (the trainer: the same run config; the sweep:
the same study); this module only keeps commands out of each other's folders and out of folders
moelab did not write.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path

from moelab.errors import UserError


@dataclass(frozen=True)
class Kind:
    name: str
    described: str  # "a training run": how an error names a folder of this kind
    signature: tuple[str, ...]  # any one of these top-level names marks the kind
    requires: tuple[str, ...] = ()  # …together with all of these
    owned: tuple[str, ...] | None = None  # every name it may hold (patterns); None: not checked
    excludes: tuple[str, ...] = ()  # names that mark another kind instead


# What a tokenizer's save_pretrained may write (a BPE's tokenizer.json, a SentencePiece model, GPT-2 files…)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                    "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json")

KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("sweep", "a sweep (study.yaml, plan.json, runs/)", ("study.yaml", "plan.json", "runs"),
         excludes=("demo.json", "report.html")),
    Kind("demo", "a demo (results.csv, report.html, runs/)", ("demo.json", "report.html"), excludes=("study.yaml",)),
    Kind("grpo", "a GRPO post-training run (grpo_config.yaml)", ("grpo_config.yaml", "grpo_summary.json")),
    Kind("run", "a training run (config.yaml, checkpoints/, metrics.jsonl)",
         ("config.yaml", "checkpoints", "metrics.jsonl", "status.json", "train_summary.json", "imported.json"),
         excludes=("grpo_config.yaml", "study.yaml")),
    Kind("model", "a moelab model directory (moelab_model.json, model.safetensors)", ("moelab_model.json",),
         owned=("moelab_model.json", "model.safetensors", *_TOKENIZER_FILES)),
    Kind("hf-export", "a Hugging Face checkpoint (config.json, *.safetensors)", ("config.json",),
         requires=("*.safetensors",), excludes=("moelab_model.json",),
         owned=("config.json", "generation_config.json", "*.safetensors", "model.safetensors.index.json",
                *_TOKENIZER_FILES)),
    Kind("ttc", "test-time-compute samples (samples.jsonl, ttc.json)", ("samples.jsonl", "ttc.json")),
    Kind("eval", "evaluation results (summary.json, taskloss.json, accuracy.json…)",
         ("summary.json", "taskloss.json", "accuracy.json", "code.json", "results.json", "records")),
    Kind("megatron", "Megatron-LM launch scripts (*.sh)", ("*.sh",), owned=("*.sh", "README.md", "plan.json")),
)}


def _names(path: Path) -> list[str]:
    """Top-level entries, without the atomic writers' temp files (``.NAME.<pid>….tmp``/``.old``) and
    the sweep's lock, which any kind may leave behind after a crash."""
    return sorted(n for n in os.listdir(path)
                  if not (n.startswith(".") and (n.endswith((".tmp", ".old")) or n == ".lock")))


def _has(names: list[str], pattern: str) -> bool:
    return any(fnmatch.fnmatchcase(n, pattern) for n in names)


def kinds_of(path: Path) -> list[str]:
    """The kinds ``path``'s contents mark (usually one; none for a folder moelab did not write)."""
    names = _names(path)
    return [k.name for k in KINDS.values()
            if any(_has(names, s) for s in k.signature) and all(_has(names, r) for r in k.requires)
            and not any(_has(names, e) for e in k.excludes)]


def describe(path: Path) -> str:
    """What a folder holds, for an error message."""
    found = kinds_of(path)
    if found:
        return KINDS[found[0]].described
    names = _names(path)
    shown = ", ".join(n + ("/" if (path / n).is_dir() else "") for n in names[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'} moelab did not write ({shown}{more})"


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def claim_output(path: str | Path, kind: str, *, flag: str = "--out", sources=()) -> bool:
    """Check that a command of ``kind`` may write into ``path``; refuse (``UserError``) otherwise.

    Returns True when ``path`` already holds this kind (a re-run), False when it is new or empty.
    Creates nothing: call it before the first write.
    """
    from moelab.resources import check_writable_dir

    path = Path(path)
    spec = KINDS[kind]
    resolved = path.expanduser().resolve()
    for src in sources:
        if src is None:
            continue
        src_path = Path(src).expanduser().resolve()
        if _inside(src_path, resolved):
            what = "is" if src_path == resolved else "contains"
            raise UserError(f"{flag} {path}: {what} the source {src}; a command never writes over its own input "
                            "(choose another folder)")
    check_writable_dir(path, flag)
    if not path.exists() or not _names(path):
        return False
    found = kinds_of(path)
    if kind not in found:
        raise UserError(f"{flag} {path}: holds {describe(path)}, not {spec.described.split(' (')[0]}; "
                        "use a new or empty folder")
    if spec.owned is not None:
        foreign = [n for n in _names(path) if not any(fnmatch.fnmatchcase(n, p) for p in spec.owned)]
        if foreign:
            raise UserError(f"{flag} {path}: holds {', '.join(foreign[:3])}, which moelab did not write and would "
                            f"replace; use a new or empty folder")
    return True


def read_own_manifest(out: Path, manifest_name: str, kind: str, what: str, flag: str = "--out") -> dict | None:
    """For commands that mark their folder with a JSON manifest (``{"kind": KIND, …}``): the
    manifest, or None when ``out`` is new or empty; a ``UserError`` naming what ``out`` holds
    otherwise (``what``: how the error names this command's files, e.g. "prepared data")."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise UserError(f"{flag} {out}: not a directory")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return None
    if manifest_name not in entries:
        raise UserError(f"{flag} {out}: folder holds other files ({entries[0]}, …), not {what}; "
                        "use a new or empty folder")
    try:
        import json

        manifest = json.loads((out / manifest_name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"{out / manifest_name}: unreadable manifest ({err}); use a new or empty folder") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != kind:
        raise UserError(f"{out / manifest_name}: not the manifest of moelab's {what}; use a new or empty folder")
    return manifest
