"""Untrusted files never run code: every command that loads weights reads safetensors, and the one
pickle moelab reads (a checkpoint's ``optim.pt``) goes through ``torch.load(weights_only=True)``.
Each malicious file below carries a payload that would create ``PWNED`` if it were unpickled."""

from __future__ import annotations

import json
import os
import pickle

import torch
import yaml

from rel_helpers import make_fake_run, moelab, tiny_run


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _one_line_refusal(res, needle: str) -> None:
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert needle in lines[0], lines[0]


def test_train_refuses_to_resume_from_a_checkpoint_with_a_pickle_payload(tmp_path):
    from moelab.train.checkpoint import write_manifest

    cfg, run, pwned = tmp_path / "run.yaml", tmp_path / "run", tmp_path / "PWNED"
    cfg.write_text(yaml.safe_dump(tiny_run(train={"steps": 10, "checkpoint_every": 5})))
    assert moelab("train", cfg, "--out", run, "--quiet", "--stop-after", 5).returncode == 0
    ckpt = run / "checkpoints" / "step-5"
    state = torch.load(ckpt / "optim.pt", weights_only=True)
    state["payload"] = Payload(pwned)
    torch.save(state, ckpt / "optim.pt")
    write_manifest(ckpt, 5)  # a consistent manifest: only the weights-only unpickler stands in the way
    before = (run / "status.json").read_text()
    res = moelab("train", cfg, "--out", run, "--quiet")
    _one_line_refusal(res, "refusing to load")
    assert not pwned.exists()
    assert (run / "status.json").read_text() == before  # refused before training touched anything


def test_a_model_directory_whose_weights_are_a_pickle_is_refused(tmp_path):
    model, pwned = make_fake_run(tmp_path) / "model", tmp_path / "PWNED"
    (model / "model.safetensors").write_bytes(pickle.dumps({"embed.weight": Payload(pwned)}))
    res = moelab("generate", "--model", model, "--prompt", "hi", "--max-new-tokens", "1")
    _one_line_refusal(res, "unreadable safetensors file")
    assert not pwned.exists()


def test_a_pickle_only_hugging_face_directory_is_refused(tmp_path):
    from moelab.config import ModelConfig
    from moelab.interop.hf import config_to_hf

    hf, pwned = tmp_path / "hf", tmp_path / "PWNED"
    hf.mkdir()
    cfg = ModelConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, num_experts=2, top_k=1, max_seq_len=32)
    (hf / "config.json").write_text(json.dumps(config_to_hf(cfg).to_dict()))
    torch.save({"model.embed_tokens.weight": Payload(pwned)}, hf / "pytorch_model.bin")
    res = moelab("generate", "--model", hf, "--prompt", "hi", "--max-new-tokens", "1")
    _one_line_refusal(res, "only pickle weights (pytorch_model.bin)")
    assert not pwned.exists()
