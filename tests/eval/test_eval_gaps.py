"""The three levels and their gaps: arithmetic on given numbers, and one tiny end-to-end evaluation."""

import json

import pytest

from moelab.config import EvalConfig
from moelab.eval.gaps import assemble_levels, evaluate_model, generalization_gap


def test_generalization_gap():
    assert generalization_gap(3.5, 2.0) == 1.5
    assert generalization_gap(2.0, 3.0) == -1.0
    assert generalization_gap(None, 2.0) is None
    assert generalization_gap(2.0, float("nan")) is None


def test_assemble_levels_on_given_numbers():
    tl = {("knowledge", "train"): {"bits_per_token": 1.0, "bits_per_byte": 0.25, "mean_bits_per_token": 1.1,
                                   "num_items": 10, "num_truncated": 0},
          ("knowledge", "heldout"): {"bits_per_token": 4.0, "bits_per_byte": 1.0, "mean_bits_per_token": 4.2,
                                     "num_items": 10, "num_truncated": 1},
          ("file:gsm8k", "heldout"): {"bits_per_token": 2.0, "bits_per_byte": 0.5, "mean_bits_per_token": 2.0,
                                      "num_items": 5, "num_truncated": 0}}
    acc = {("knowledge", "train"): {"accuracy": 0.9, "exact_match": 0.8, "acc_norm": None, "num_items": 10},
           ("knowledge", "heldout"): {"accuracy": 0.2, "exact_match": 0.2, "acc_norm": None, "num_items": 10},
           ("file:gsm8k", "heldout"): {"accuracy": 0.0, "exact_match": 0.0, "acc_norm": None, "num_items": 5}}
    out = assemble_levels(train_loss=2.0, val_loss=2.25, task_loss=tl, accuracy=acc)
    assert out["pretrain_gap"] == 0.25 and out["pretrain_train_loss"] == 2.0
    assert out["task_loss/knowledge/heldout"] == 4.0 and out["task_loss_bpb/knowledge/train"] == 0.25
    assert out["task_loss_gap/knowledge"] == 3.0
    assert out["accuracy_gap/knowledge"] == pytest.approx(0.7)
    assert "task_loss_gap/file:gsm8k" not in out and out["accuracy/file:gsm8k/heldout"] == 0.0
    assert out["num_truncated/knowledge/heldout"] == 1
    assert assemble_levels()["pretrain_gap"] is None
    json.dumps(out, allow_nan=False)  # JSON-able, no NaN


def test_evaluate_model_end_to_end(small_world, tokenizer, model, tmp_path):
    path = tmp_path / "mini.json"
    path.write_text(json.dumps([{"prompt": "Question: 2+2?\nAnswer:", "answer": " 2+2=4\n#### 4"}] * 3))
    cfg = EvalConfig(tasks=["knowledge", "reasoning/addition"], task_files=[str(path)], limit=2, max_new_tokens=3,
                     shots=1)
    out = evaluate_model(model, tokenizer, small_world, cfg, train_summary={"train_loss": 5.0, "val_loss": 5.5},
                         records_dir=tmp_path / "records")
    json.dumps(out, allow_nan=False)
    assert out["pretrain_gap"] == 0.5
    for task in ("knowledge", "reasoning/addition"):
        for split in ("train", "heldout"):
            assert out[f"task_loss/{task}/{split}"] > 0 and out[f"num_items/{task}/{split}"] == 2
            assert 0 <= out[f"accuracy/{task}/{split}"] <= 1
        assert out[f"task_loss_gap/{task}"] == pytest.approx(
            out[f"task_loss/{task}/heldout"] - out[f"task_loss/{task}/train"])
    assert out["num_items/file:mini/heldout"] == 2 and "task_loss_gap/file:mini" not in out
    written = sorted(p.name for p in (tmp_path / "records").iterdir())
    assert "file_mini--heldout.jsonl" in written and "reasoning_addition--train.jsonl" in written
