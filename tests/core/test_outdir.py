"""The output-folder rule (moelab.outdir): kinds recognised by their files, refusals that name them."""

from __future__ import annotations

from pathlib import Path

import pytest

from moelab.errors import UserError
from moelab.outdir import claim_output, describe, kinds_of

LAYOUTS = {  # what each command leaves in its folder (top level)
    "run": ["config.yaml", "metrics.jsonl", "checkpoints/", "tokenizer/", "status.json"],
    "sweep": ["study.yaml", "plan.json", "runs/", "study.duckdb", "results.csv", ".lock"],
    "demo": ["demo.json", "runs/", "results.csv", "report.html"],
    "grpo": ["grpo_config.yaml", "reference/", "checkpoints/", "metrics.jsonl", "model/"],
    "model": ["moelab_model.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"],
    "hf-export": ["config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer.model"],
    "ttc": ["samples.jsonl", "ttc.json"],
    "eval": ["summary.json", "records/", "ttc-reasoning-n16/", "lm-eval/"],
    "megatron": ["D1e12-d64-E4-k1.sh", "D1e12-d64-E4-k2.sh"],
}


def _make(root: Path, names: list[str]) -> Path:
    root.mkdir()
    for name in names:
        (root / name.rstrip("/")).mkdir() if name.endswith("/") else (root / name).write_text("x")
    return root


@pytest.mark.parametrize("kind", sorted(LAYOUTS))
def test_each_kind_is_recognised_alone_and_claimable_only_by_itself(kind, tmp_path):
    folder = _make(tmp_path / "out", LAYOUTS[kind])
    assert kinds_of(folder) == [kind]
    assert claim_output(folder, kind) is True  # a re-run of the same kind
    for other in LAYOUTS:
        if other != kind:
            with pytest.raises(UserError, match="holds .*use a new or empty folder"):
                claim_output(folder, other)


def test_new_and_empty_folders_are_free_and_nothing_is_created(tmp_path):
    assert claim_output(tmp_path / "new" / "deeper", "run") is False
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    assert claim_output(tmp_path / "empty", "sweep") is False
    (tmp_path / "crashed").mkdir()  # an atomic writer's temp file alone does not make a folder foreign
    (tmp_path / "crashed" / ".status.json.host-123.abcd.tmp").write_text("")
    assert claim_output(tmp_path / "crashed", "run") is False


def test_foreign_files_are_named_and_the_source_is_never_the_destination(tmp_path):
    folder = _make(tmp_path / "mine", ["notes.txt", "data/", "a.csv", "b.csv"])
    assert describe(folder) == "4 entries moelab did not write (a.csv, b.csv, data/ and 1 more)"
    with pytest.raises(UserError, match="moelab did not write"):
        claim_output(folder, "eval")
    model = _make(tmp_path / "model", [*LAYOUTS["model"], "README.md"])
    with pytest.raises(UserError, match="holds README.md, which moelab did not write and would replace"):
        claim_output(model, "model")
    with pytest.raises(UserError, match="is the source"):
        claim_output(tmp_path / "src", "hf-export", sources=[tmp_path / "src"])
    with pytest.raises(UserError, match="contains the source"):
        claim_output(tmp_path, "model", sources=[tmp_path / "src" / "hf"])
    assert claim_output(tmp_path / "run" / "hf", "hf-export", sources=[tmp_path / "run"]) is False  # inside: fine
