"""lm-evaluation-harness bridge: run any harness task on any model moelab can load.

    moelab eval lm-eval --model runs/d64-E4-k2 --tasks gsm8k hellaswag --limit 100
    moelab eval lm-eval --model runs/x --tasks my_task --include-path my_tasks/ --json --out eval/lm-eval
    results = run_lm_eval("runs/x", ["my_task"], include_path="my_tasks/", limit=10)
    results["results"]["my_task"]["exact_match,none"]

How: the model is loaded with :func:`moelab.modelio.load_model` (model, run, checkpoint
directory), written as a Hugging Face Mixtral checkpoint into a temporary directory
(:func:`moelab.interop.hf.export_hf`, tokenizer included) and handed to lm-eval's Python API
(``lm_eval.simple_evaluate(model="hf", ...)``). A Hugging Face Mixtral directory is passed to
lm-eval as it is (no copy). lm-eval is an optional extra: ``pip install 'moelab[lm-eval]'``.

Alignment with moelab's own evaluation (what the cross-check test pins down)
    * **BOS.** moelab reads ``BOS + prompt`` everywhere (task loss, accuracy), and lm-eval's ``hf``
      model adds a BOS only when the tokenizer does. A moelab export's tokenizer adds it by itself,
      as Mixtral's does (:func:`moelab.interop.hf.export_hf`), so even a plain ``lm_eval --model hf
      --model_args pretrained=EXPORT`` conditions on moelab's first token. We also pass
      ``add_bos_token=True`` — for Hugging Face directories passed as they are, whose tokenizer may
      not — and lm-eval then encodes every context with exactly one BOS, for ``loglikelihood`` and
      ``generate_until`` alike.
    * **Multiple choice.** moelab's ``acc``, ``acc_norm`` (per character) and ``acc_bytes`` (per UTF-8
      byte) are lm-eval's metrics of the same names.
    * **Log-likelihoods.** lm-eval tokenizes ``context + continuation`` as one string and splits the
      ids at the length of the tokenized context; moelab tokenizes prompt and answer separately.
      The ids agree whenever no BPE merge straddles the boundary — always for moelab's byte-level
      tokenizers when the context ends in a non-whitespace character and the continuation starts
      with a space or a newline (GSM8K-style ``"...Answer:"`` + ``" ..."``). Summed log-likelihoods
      then equal ``-nll`` of :func:`moelab.eval.taskloss.task_loss` (harness task: ``doc_to_text:
      "{{prompt}}"``, ``doc_to_target: "{{answer}}"``, ``target_delimiter: ""``). A context that
      ends in whitespace (HumanEval prompts end in a newline) differs: lm-eval moves the trailing
      whitespace onto the continuation and scores it too.
    * **Generation.** Both decode greedily, stop at EOS and at the stop strings, and keep at most
      ``max_seq_len - max_new_tokens`` context tokens. lm-eval cuts the decoded text at the stop
      string, moelab drops any token that overlaps it: they differ only when a token straddles the
      start of a stop string (moelab's byte-level BPE never merges a newline with a non-space).
      Give a harness task moelab's stop strings (``until``) and ``max_gen_toks`` to compare.
    * **dtype.** fp32 by default. ``bf16=True`` (the default on CUDA, as in ``moelab eval``) keeps
      fp32 weights, runs the forward under bf16 autocast (lm-eval's ``mixed_precision_dtype``) and
      takes the log-softmax in fp32 (``softmax_dtype``), which is what moelab's own evaluation does.

Offline use: set ``HF_DATASETS_OFFLINE=1`` and ``HF_HUB_OFFLINE=1`` and use tasks whose data are
local files (``dataset_path: json`` with ``dataset_kwargs: {data_files: ...}``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from moelab.cli_args import device_name, nonneg_int
from moelab.errors import UserError, one_line

__all__ = ["run_lm_eval", "add_lmeval_command", "summarize"]

_INSTALL_HINT = "lm-eval is not installed; install the optional extra: pip install 'moelab[lm-eval]'"
_CPU_BATCH = 16


def require_lm_eval():
    try:
        import lm_eval
        import lm_eval.tasks  # noqa: F401  (TaskManager)
    except ImportError as err:
        raise UserError(f"{_INSTALL_HINT} ({err})") from None
    return lm_eval


def _is_hf_mixtral(path: Path) -> bool:
    cfg = path / "config.json"
    if not (path.is_dir() and cfg.is_file()) or (path / "moelab_model.json").is_file():
        return False
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("model_type") in ("mixtral", "qwen2_moe")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False


def task_manager(tasks: Sequence[str], include_path: str | Path | None):
    """A TaskManager that knows ``tasks``; scans lm-eval's ~15k built-in YAMLs (slow) only when needed."""
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        include = Path(include_path)
        if not include.is_dir():
            raise UserError(f"--include-path {include}: no such directory")
        local = TaskManager(include_path=str(include), include_defaults=False)
        if not set(tasks) - set(local.all_tasks) - set(local.all_groups) - set(local.all_tags):
            return local
    manager = TaskManager(include_path=None if include_path is None else str(include_path))
    known = set(manager.all_tasks) | set(manager.all_groups) | set(manager.all_tags)
    missing = [t for t in tasks if t not in known and not manager.match_tasks([t])]
    if missing:
        where = f" in {include_path} or" if include_path is not None else ""
        raise UserError(f"lm-eval task(s) not found{where} among lm-eval's built-in tasks: {', '.join(missing)}")
    return manager


def _model_args(hf_dir: Path, *, bf16: bool, max_length: int | None) -> dict[str, Any]:
    args: dict[str, Any] = {"pretrained": str(hf_dir), "dtype": "float32", "add_bos_token": True}
    if bf16:  # as moelab on CUDA: fp32 weights, bf16 autocast, log-softmax in fp32
        args["mixed_precision_dtype"] = "bfloat16"
        args["softmax_dtype"] = "float32"
    if max_length is not None:
        args["max_length"] = max_length
    return args


def run_lm_eval(
    model_path: str | Path,
    tasks: Sequence[str],
    *,
    include_path: str | Path | None = None,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    batch_size: int | str | None = None,
    device: str = "cpu",
    bf16: bool | None = None,
    output: str | Path | None = None,
    log_samples: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Run lm-eval ``tasks`` on the model at ``model_path``; returns ``simple_evaluate``'s dict.

    ``results["results"][task]`` holds the metrics (keys ``"<metric>,<filter>"``), and with
    ``log_samples`` ``results["samples"][task]`` the per-document requests and responses.
    ``batch_size=None`` means lm-eval's ``"auto"`` on CUDA and 16 on CPU; ``bf16=None`` means on
    for CUDA (autocast, fp32 weights). ``output`` (a directory) receives ``results.json`` and
    ``samples_<task>.jsonl``. See the module docstring for how this aligns with moelab's numbers.
    """
    lm_eval = require_lm_eval()
    tasks = list(tasks)
    if not tasks:
        raise UserError("lm-eval: give at least one task")
    if limit is not None and limit <= 0:
        raise UserError(f"--limit: must be positive, got {limit}")
    if num_fewshot is not None and num_fewshot < 0:
        raise UserError(f"--num-fewshot: must be >= 0, got {num_fewshot}")
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is available (use --device cpu or auto)")
    if bf16 is None:
        bf16 = device.startswith("cuda")
    if batch_size is None:
        batch_size = "auto" if device.startswith("cuda") else _CPU_BATCH
    src = Path(model_path).expanduser()
    if not src.is_dir():  # before the task index, which can take seconds to build
        raise UserError(f"{src}: no such model directory")
    manager = task_manager(tasks, include_path)

    with tempfile.TemporaryDirectory(prefix="moelab-lmeval-") as tmp:
        if _is_hf_mixtral(src):
            hf_dir, max_length = src, None
        else:
            from moelab.interop.hf import export_hf
            from moelab.modelio import load_model

            model, tokenizer, cfg = load_model(src, device="cpu")
            hf_dir = export_hf(model, cfg, Path(tmp) / "hf", tokenizer=tokenizer)
            max_length = cfg.max_seq_len
            del model
        try:  # lm-eval prints progress to stdout; keep stdout for our own (--json) output
            with contextlib.redirect_stdout(sys.stderr):
                results = lm_eval.simple_evaluate(
                    model="hf",
                    model_args=_model_args(hf_dir, bf16=bf16, max_length=max_length),
                    tasks=tasks,
                    task_manager=manager,
                    num_fewshot=num_fewshot,
                    limit=limit,
                    batch_size=batch_size,
                    device=device,
                    log_samples=log_samples,
                    random_seed=seed,
                    numpy_random_seed=seed,
                    torch_random_seed=seed,
                    fewshot_random_seed=seed,
                )
        except OSError as err:  # a task's data file or hub dataset it cannot read (offline, a typo)
            first = one_line(err)
            raise UserError(f"lm-eval could not read a file or dataset it needs: {first}") from None
        except (AssertionError, ValueError, KeyError, TypeError) as err:
            # lm-eval checks its inputs (task configs, few-shot counts, model arguments) with asserts and
            # ValueErrors: the cause is the input, so one line, not lm-eval's 30-line traceback
            first = one_line(err)
            raise UserError(f"lm-eval refused the run: {type(err).__name__}: {first}") from None
    if results is None:  # non-zero ranks under torchrun
        return {}
    results = dict(results)
    if output is not None:
        write_results(results, output)
    return results


def _jsonable(obj: Any) -> Any:
    """lm-eval's results hold numpy numbers, dtypes and callables: make them JSON (non-finite -> None)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        try:
            return _jsonable(obj.item())
        except (TypeError, ValueError):
            pass
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    return str(obj)


def write_results(results: dict[str, Any], out_dir: str | Path) -> Path:
    """``results.json`` (everything but the samples) and ``samples_<task>.jsonl`` into ``out_dir``."""
    from moelab.atomic import atomic_write_json, atomic_write_text

    out = Path(out_dir)
    samples = results.get("samples") or {}
    atomic_write_json(out / "results.json", _jsonable({k: v for k, v in results.items() if k != "samples"}))
    for task, docs in samples.items():
        lines = "".join(json.dumps(_jsonable(d), ensure_ascii=False) + "\n" for d in docs)
        atomic_write_text(out / f"samples_{task.replace('/', '_')}.jsonl", lines)
    return out


def summarize(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{task: {metric[,filter]: value}}`` without the stderr entries and the alias."""
    out: dict[str, dict[str, Any]] = {}
    for task, metrics in (results.get("results") or {}).items():
        out[task] = {
            (k[: -len(",none")] if k.endswith(",none") else k): _jsonable(v)
            for k, v in metrics.items()
            if k != "alias" and "_stderr" not in k
        }
    return out


# ---------------------------------------------------------------- CLI


def _limit(text: str) -> int | float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"--limit: expected a number, got '{text}'") from None
    return int(value) if value.is_integer() else value


def cmd_lm_eval(args) -> int:
    results = run_lm_eval(
        args.model, args.tasks, include_path=args.include_path, limit=args.limit, num_fewshot=args.num_fewshot,
        batch_size=args.batch_size, device=args.device, bf16=args.bf16, output=args.out,
    )
    summary = summarize(results)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        from moelab.ui import print_kv

        for task, metrics in summary.items():
            print_kv(metrics, title=f"lm-eval {task}")
    return 0


def _batch_size(text: str) -> int | str:
    if text == "auto" or text.startswith("auto:"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise UserError(f"--batch-size: expected an integer or 'auto', got '{text}'") from None
    if value < 1:
        raise UserError(f"--batch-size: must be >= 1, got {value}")
    return value


def add_lmeval_command(esub) -> None:
    """Register ``moelab eval lm-eval`` on the ``moelab eval`` subparsers (works without lm-eval installed:
    the command then stops with the install hint)."""
    s = esub.add_parser("lm-eval", help="run lm-evaluation-harness tasks (optional extra moelab[lm-eval])")
    s.add_argument("--model", required=True, help="run, checkpoint, model or Hugging Face Mixtral directory")
    s.add_argument("--tasks", nargs="+", required=True, help="harness task, group or tag names")
    s.add_argument("--include-path", help="directory of extra task YAMLs (scanned recursively)")
    s.add_argument("--limit", type=_limit, help="first N documents per task (a fraction when < 1)")
    s.add_argument("--num-fewshot", type=nonneg_int)
    s.add_argument("--batch-size", type=_batch_size, help="default: auto on CUDA, 16 on CPU")
    s.add_argument("--device", type=device_name, default="auto")
    s.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast with fp32 weights (default: on for CUDA)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--out", help="directory for results.json and samples_<task>.jsonl")
    s.set_defaults(func=cmd_lm_eval)
