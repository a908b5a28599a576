"""GRPO end to end on a tiny learnable task: reward rises, resume is exact, bad options are one-line errors."""

import json
import random

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from moelab.config import ModelConfig
from moelab.data.tokenizer import train_tokenizer
from moelab.data.world import Task, TaskItem
from moelab.errors import UserError
from moelab.model.transformer import MoETransformer
from moelab.modelio import load_model
from moelab.posttrain.grpo import CONFIG_FILE, GRPOConfig, grpo, load_grpo_config

TARGET = "C"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def letters():
    """A tiny model pretrained to answer with a random letter A-D, and a task rewarding one letter.

    After pretraining the model answers each letter about a quarter of the time, so GRPO starts
    near reward 0.25 with plenty of groups that carry a signal.
    """
    rng = random.Random(0)
    prompts = [f"Question: Pick a letter for item {i}.\nAnswer:" for i in range(64)]
    docs = [p + " " + rng.choice("ABCD") for p in prompts for _ in range(2)]
    tok = train_tokenizer(docs, vocab_size=300)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(tok), d_model=32, n_layers=2, n_heads=2, num_experts=4, top_k=2,
                      max_seq_len=48)
    model = MoETransformer(cfg)
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    seqs = [[bos, *tok.encode(d, add_special_tokens=False), eos] for d in docs]
    ids = torch.full((len(seqs), max(map(len, seqs))), pad)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        x = ids[torch.randint(0, len(seqs), (32,), generator=gen)]
        y = x[:, 1:].clone()
        y[y == pad] = -100
        loss = F.cross_entropy(model(x[:, :-1]).logits.flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()

    items = [TaskItem(prompt=p, answer=f" {TARGET}", gold=TARGET, meta={"index": i}) for i, p in enumerate(prompts)]

    def score(item: TaskItem, text: str) -> float:
        return float(text.strip()[:1] == item.gold)

    task = Task("letters", "knowledge", {"train": items[:48], "heldout": items[48:]}, score, stop_strings=("\n",))
    return model, tok, task


def _cfg(**kw) -> GRPOConfig:
    base = dict(steps=40, prompts_per_step=8, group_size=8, lr=1e-3, max_new_tokens=4, eval_every=20,
                eval_limit=16, checkpoint_every=20, device="cpu", seed=0)
    return GRPOConfig(**{**base, **kw})


def _records(out, kind):
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if json.loads(x)["kind"] == kind]


def test_reward_rises_on_a_tiny_task(letters, tmp_path):
    model, tok, task = letters
    before = {k: v.clone() for k, v in model.state_dict().items()}
    summary = grpo(_cfg(), tmp_path, model=model, tokenizer=tok, task=task, progress=False)
    assert summary["state"] == "done" and summary["steps"] == 40
    steps = _records(tmp_path, "grpo")
    assert [r["step"] for r in steps] == list(range(1, 41))
    first = sum(r["reward_mean"] for r in steps[:5]) / 5
    last = sum(r["reward_mean"] for r in steps[-5:]) / 5
    assert first < 0.5, first  # near chance (1 in 4) at the start
    assert last > first + 0.3, (first, last)
    for r in steps:
        assert {"reward_mean", "zero_variance_groups", "kl", "response_length", "clip_frac", "entropy",
                "grad_norm"} <= set(r)
        assert 0.0 <= r["zero_variance_groups"] <= 1.0 and 0.0 <= r["clip_frac"] <= 1.0
    assert steps[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # the first rollout policy is the reference
    assert steps[-1]["kl"] > 0.0
    evals = _records(tmp_path, "eval")
    assert [r["step"] for r in evals] == [0, 20, 40]
    # the caller's model is untouched; the output is a loadable model directory
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    trained, tok2, cfg2 = load_model(tmp_path / "model")
    assert cfg2 == model.cfg and len(tok2) == len(tok)
    assert not torch.equal(trained.state_dict()["lm_head.weight"], before["lm_head.weight"])
    assert (tmp_path / CONFIG_FILE).is_file() and (tmp_path / "reference" / "model.safetensors").is_file()
    # a finished run returns its summary without training again
    assert grpo(_cfg(), tmp_path, model=model, tokenizer=tok, task=task, progress=False) == summary


def test_resume_is_exact(letters, tmp_path):
    model, tok, task = letters
    cfg = _cfg(steps=4, checkpoint_every=2, eval_every=2, updates_per_batch=2, micro_batch_size=24)
    a, b = tmp_path / "a", tmp_path / "b"
    grpo(cfg, a, model=model, tokenizer=tok, task=task, progress=False)
    partial = grpo(cfg, b, model=model, tokenizer=tok, task=task, progress=False, max_steps_this_call=2)
    assert partial == {"state": "running", "step": 2, "total_steps": 4}
    # a resumed run ignores the model argument: the reference and checkpoint come from the directory
    grpo(cfg, b, model=None, tokenizer=None, task=task, progress=False)
    wa, wb = load_file(str(a / "model" / "model.safetensors")), load_file(str(b / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)

    def strip(path):
        return [{k: v for k, v in json.loads(x).items() if k != "elapsed_s"}
                for x in (path / "metrics.jsonl").read_text().splitlines()]

    assert strip(a) == strip(b)


def test_tensorboard_logs_what_metrics_jsonl_says_across_a_resume(letters, tmp_path):
    """GRPO's records (``grpo`` per step, ``eval`` at 0 and every eval_every) reach TensorBoard too; a resume
    (with the logger turned on only then: loggers are operational) continues the same event directory."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from moelab.train.loggers import scalars

    model, tok, task = letters
    cfg = _cfg(steps=3, checkpoint_every=1, eval_every=2, eval_limit=4)
    grpo(cfg, tmp_path, model=model, tokenizer=tok, task=task, progress=False, max_steps_this_call=1)
    assert not (tmp_path / "logs").exists()
    grpo(_cfg(steps=3, checkpoint_every=1, eval_every=2, eval_limit=4, logging={"tensorboard": True}), tmp_path,
         task=task, progress=False)
    acc = EventAccumulator(str(tmp_path / "logs" / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    expected: dict[str, dict[int, float]] = {}
    for r in (json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()):
        if r["step"] >= 2:  # logged by the second call (the first did steps 0 and 1)
            for tag, value in scalars(r).items():
                expected.setdefault(tag, {})[r["step"]] = value
    assert {"grpo/reward_mean", "grpo/kl", "eval/accuracy"} <= set(expected)
    assert set(acc.Tags()["scalars"]) == set(expected)
    for tag, by_step in expected.items():
        assert [(e.step, pytest.approx(e.value, rel=1e-6, abs=1e-9)) for e in acc.Scalars(tag)] == \
               [(s, by_step[s]) for s in sorted(by_step)]


def test_changed_settings_on_resume_are_refused(letters, tmp_path):
    model, tok, task = letters
    grpo(_cfg(steps=1, eval_limit=2), tmp_path, model=model, tokenizer=tok, task=task, progress=False)
    with pytest.raises(UserError, match="group_size"):
        grpo(_cfg(steps=2, eval_limit=2, group_size=4), tmp_path, model=model, tokenizer=tok, task=task,
             progress=False)


@pytest.mark.parametrize("data,msg", [
    ({"group_size": 1}, "group_size"),
    ({"temperature": 0.0}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
    ({"groupsize": 4}, "did you mean 'group_size'"),
    ({"clip_eps": 0.0}, "clip_eps"),
])
def test_bad_options_are_one_line_user_errors(data, msg):
    with pytest.raises(UserError) as err:
        load_grpo_config(data, "grpo")
    assert msg in str(err.value) and "\n" not in str(err.value)


def test_unknown_task_and_split_fail_before_writing(letters, tmp_path):
    model, tok, task = letters
    out = tmp_path / "out"
    with pytest.raises(UserError, match="unknown task"):
        grpo(_cfg(task="nope"), out, model=model, tokenizer=tok, world=None, progress=False)
    with pytest.raises(UserError, match="split"):
        grpo(_cfg(train_split="missing"), out, model=model, tokenizer=tok, task=task, progress=False)
    assert not out.exists()
