"""Checkpoints: roundtrip, corruption fallback, failed writes, pickle refusal, atomic helpers."""

import json
import os
import random
import warnings

import numpy as np
import pytest
import torch

from moelab.atomic import atomic_dir, atomic_write_json, atomic_write_text
from moelab.config import TrainConfig
from moelab.errors import UserError
from moelab.train import checkpoint as ck
from moelab.train.optim import build_optimizer


class Net(torch.nn.Module):
    def __init__(self, tied=False):
        super().__init__()
        self.embed = torch.nn.Embedding(11, 6)
        self.norm = torch.nn.Parameter(torch.ones(6))
        self.head = torch.nn.Linear(6, 11, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.embed(ids) * self.norm)


def _trained(seed=0, tied=False):
    torch.manual_seed(seed)
    net = Net(tied)
    opt = build_optimizer(net, TrainConfig(lr=1e-2))
    for _ in range(2):
        net(torch.arange(11)).logsumexp(-1).mean().backward()
        opt.step()
        opt.zero_grad()
    return net, opt


def test_roundtrip_weights_optimizer_rng(tmp_path):
    net, opt = _trained()
    torch.manual_seed(123), np.random.seed(7), random.seed(9)
    path = ck.save_checkpoint(tmp_path, 2, net, opt, {"tokens": 99, "data_position": 2})
    expect = (torch.rand(3), np.random.rand(3), random.random())
    assert sorted(os.listdir(path)) == ["manifest.json", "model.safetensors", "optim.pt", "state.json"]

    torch.manual_seed(1)
    net2 = Net()
    opt2 = build_optimizer(net2, TrainConfig(lr=1e-2))
    assert ck.latest_complete(tmp_path) == path
    state = ck.load_checkpoint(path, net2, opt2)
    assert state["step"] == 2 and state["tokens"] == 99
    for (n, a), (_, b) in zip(net.state_dict().items(), net2.state_dict().items()):
        assert torch.equal(a, b), n
    s1, s2 = opt.state_dict(), opt2.state_dict()
    for i in s1["state"]:
        for k in s1["state"][i]:
            assert torch.equal(s1["state"][i][k], s2["state"][i][k])
    ck.restore_rng_state(state["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expect[0]) and np.array_equal(got[1], expect[1]) and got[2] == expect[2]


def test_tied_weights_roundtrip(tmp_path):
    net, opt = _trained(tied=True)
    path = ck.save_checkpoint(tmp_path, 1, net, opt, {})
    net2 = Net(tied=True)
    ck.load_checkpoint(path, net2)
    assert torch.equal(net2.embed.weight, net.embed.weight)
    assert net2.head.weight is net2.embed.weight


def test_keep_last_n(tmp_path):
    net, opt = _trained()
    for step in (1, 2, 3, 4):
        ck.save_checkpoint(tmp_path, step, net, opt, {}, keep=2)
    assert [s for s, _ in ck.step_dirs(tmp_path)] == [3, 4]


@pytest.mark.parametrize("damage", ["truncate", "bitflip", "delete_manifest"])
def test_corrupt_latest_falls_back(tmp_path, damage):
    net, opt = _trained()
    ck.save_checkpoint(tmp_path, 5, net, opt, {})
    newest = ck.save_checkpoint(tmp_path, 10, net, opt, {})
    target = newest / "model.safetensors"
    if damage == "truncate":
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2])
    elif damage == "bitflip":
        data = bytearray(target.read_bytes())
        data[len(data) - 3] ^= 0x10
        target.write_bytes(bytes(data))
    else:
        (newest / "manifest.json").unlink()
    with pytest.warns(UserWarning, match="corrupt"):
        assert ck.latest_complete(tmp_path).name == "step-5"
    with pytest.raises(UserError, match="corrupt|not a checkpoint"):
        ck.load_checkpoint(newest, Net())


def test_failed_write_keeps_previous(tmp_path, monkeypatch):
    net, opt = _trained()
    good = ck.save_checkpoint(tmp_path, 1, net, opt, {"tokens": 1})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        ck.save_checkpoint(tmp_path, 2, net, opt, {"tokens": 2}, keep=1)
    monkeypatch.undo()
    assert ck.latest_complete(tmp_path) == good
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-1"]  # no temp dir left
    # overwriting the same step also keeps one complete version
    ck.save_checkpoint(tmp_path, 1, net, opt, {"tokens": 3})
    assert ck.read_state(ck.latest_complete(tmp_path))["tokens"] == 3


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_optim_pickle_is_refused(tmp_path):
    net, opt = _trained()
    path = ck.save_checkpoint(tmp_path, 1, net, opt, {})
    torch.save({"state": {}, "param_groups": [], "payload": Evil()}, path / "optim.pt")
    ck.write_manifest(path, 1)  # a consistent manifest: only the unpickler can stop it
    with pytest.raises(UserError, match="refusing to load"):
        ck.load_checkpoint(path, Net(), build_optimizer(Net(), TrainConfig()))


def test_atomic_helpers(tmp_path):
    atomic_write_json(tmp_path / "a.json", {"x": 1})
    atomic_write_text(tmp_path / "a.json", '{"x": 2}')
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 2}
    with atomic_dir(tmp_path / "d") as d:
        (d / "f").write_text("one")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("two")
            raise RuntimeError("boom")
    assert (tmp_path / "d" / "f").read_text() == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "d"]
