"""load_model on every path kind; save_model_dir roundtrip; one-line errors."""

import pytest
import torch

from moelab.errors import UserError
from moelab.modelio import load_model, save_model_dir
from moelab.train.trainer import train


def _logits(model):
    ids_BT = torch.arange(1, 17).view(2, 8)
    with torch.no_grad():
        return model(ids_BT).logits


def test_load_every_path_kind(tmp_path, tiny_cfg):
    run = tmp_path / "run"
    cfg = tiny_cfg(train={"steps": 6, "checkpoint_every": 3, "eval_every": 3})
    train(cfg, run, progress=False, max_steps_this_call=3)

    unfinished, tok, mcfg = load_model(run)  # run without model/: latest checkpoint
    from_ckpt, _, _ = load_model(run / "checkpoints" / "step-3")
    assert not unfinished.training and len(tok) <= mcfg.vocab_size  # spare rows: the configured vocabulary is kept
    assert torch.equal(_logits(unfinished), _logits(from_ckpt))

    train(cfg, run, progress=False)
    final, tok, mcfg = load_model(run)  # finished: model/
    same, _, _ = load_model(run / "model")
    last_ckpt, _, _ = load_model(run / "checkpoints" / "step-6")
    assert torch.equal(_logits(final), _logits(same)) and torch.equal(_logits(final), _logits(last_ckpt))
    assert not torch.equal(_logits(final), _logits(unfinished))

    copy = save_model_dir(final, mcfg, tok, tmp_path / "copy")
    again, tok2, cfg2 = load_model(copy)
    assert cfg2 == mcfg and tok2.encode("Alice 12") == tok.encode("Alice 12")
    assert torch.equal(_logits(again), _logits(final))

    from moelab.interop.hf import export_hf

    export_hf(final, mcfg, tmp_path / "hf", tokenizer=tok)
    hf_model, hf_tok, hf_cfg = load_model(tmp_path / "hf")
    assert hf_cfg.num_experts == mcfg.num_experts and len(hf_tok) == len(tok)
    torch.testing.assert_close(_logits(hf_model), _logits(final))


def test_bad_paths_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such file or directory"):
        load_model(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="not a model directory"):
        load_model(tmp_path / "empty")
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(UserError, match="got a file"):
        load_model(tmp_path / "f.txt")
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(UserError, match="only 'mixtral'") as info:
        load_model(tmp_path / "llama")
    assert "\n" not in str(info.value)
