"""Repeated sampling on a tiny model: records written, curves recomputable and monotone in coverage."""

import json

import pytest
import torch

from moelab.config import ModelConfig, WorldConfig
from moelab.data.tokenizer import train_tokenizer
from moelab.data.world import Task, TaskItem, build_world
from moelab.errors import UserError
from moelab.model.transformer import MoETransformer
from moelab.ttc.sampling import SAMPLES_FILE, SUMMARY_FILE, recompute_from_jsonl, sample_task


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny():
    world = build_world(WorldConfig(num_people=20, reasoning_train_items=40, reasoning_eval_items=6,
                                    knowledge_eval_items=6, bio_paraphrases=2))
    tok = train_tokenizer(world.documents(), vocab_size=300)
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=len(tok), d_model=32, n_layers=2, n_heads=2, num_experts=4, top_k=2,
                      max_seq_len=96, init_std=0.5)  # a large init std makes a peaky, less uniform sampler
    model = MoETransformer(cfg).eval()
    return world, tok, model


def _letter_task() -> Task:
    """A generative task a random model solves sometimes: correct when the answer's first line holds an 'e'."""
    items = [TaskItem(prompt=f"Question: Say a word number {i}.\nAnswer:", answer=" e", gold="e", meta={"index": i})
             for i in range(5)]

    def score(item: TaskItem, prediction: str) -> float:
        return float(item.gold in prediction.split("\n")[0])

    return Task("letters", "knowledge", {"heldout": items, "train": items}, score, stop_strings=("\n",))


def test_sample_task_writes_records_and_monotone_curves(tiny, tmp_path):
    _, tok, model = tiny
    result = sample_task(model, tok, _letter_task(), samples=8, temperature=1.0, top_p=1.0, max_new_tokens=6,
                         seed=0, batch_size=16)
    curves = result.curves
    assert curves["n"] == [1, 2, 4, 8]
    assert curves["num_questions"] == 5 and curves["num_samples"] == 8
    cov = curves["pass_at_k"]
    assert all(b >= a - 1e-12 for a, b in zip(cov, cov[1:])), cov
    assert 0.0 < cov[-1] and cov[0] < 1.0  # non-trivial: some but not all samples are right
    assert curves["greedy"] is not None and 0.0 <= curves["greedy"] <= 1.0
    # pass@1 is the plain share of correct samples
    samples = [r for r in result.records if r["kind"] == "sample"]
    assert len(samples) == 40
    assert cov[0] == pytest.approx(sum(r["correct"] for r in samples) / 40)

    paths = result.write(tmp_path)
    assert paths["samples"] == tmp_path / SAMPLES_FILE and (tmp_path / SUMMARY_FILE).is_file()
    lines = [json.loads(x) for x in (tmp_path / SAMPLES_FILE).read_text().splitlines()]
    assert lines[0]["kind"] == "header" and lines[0]["samples"] == 8
    kinds = [r["kind"] for r in lines[1:]]
    assert kinds.count("sample") == 40 and kinds.count("greedy") == 5
    for r in lines[1:]:
        assert {"question", "completion", "extracted", "correct"} <= set(r)
    again = recompute_from_jsonl(tmp_path / SAMPLES_FILE)
    for key in ("n", "pass_at_k", "majority", "greedy"):
        assert again[key] == pytest.approx(curves[key])
    assert again["task"] == "letters"
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["pass_at_k"] == pytest.approx(cov)


def test_sampling_is_reproducible_and_seed_dependent(tiny):
    _, tok, model = tiny
    task = _letter_task()
    kw = dict(samples=4, temperature=1.0, top_p=0.95, max_new_tokens=5, batch_size=8)
    a = sample_task(model, tok, task, seed=1, **kw)
    b = sample_task(model, tok, task, seed=1, **kw)
    c = sample_task(model, tok, task, seed=2, **kw)
    completions = lambda r: [x["completion"] for x in r.records if x["kind"] == "sample"]  # noqa: E731
    assert completions(a) == completions(b)
    assert completions(a) != completions(c)


def test_world_reasoning_task_runs(tiny):
    world, tok, model = tiny
    result = sample_task(model, tok, world.tasks()["reasoning"], samples=2, limit=3, max_new_tokens=8)
    assert result.curves["n"] == [1, 2] and result.curves["num_questions"] == 3


@pytest.mark.parametrize("kw,msg", [
    (dict(samples=0), "--samples"),
    (dict(samples=2, temperature=0.0), "--temperature"),
    (dict(samples=2, top_p=0.0), "--top-p"),
    (dict(samples=2, split="nope"), "no split"),
])
def test_bad_options_are_one_line_user_errors(tiny, kw, msg):
    _, tok, model = tiny
    with pytest.raises(UserError) as err:
        sample_task(model, tok, _letter_task(), **kw)
    assert msg in str(err.value) and "\n" not in str(err.value)


def test_recompute_rejects_missing_file(tmp_path):
    with pytest.raises(UserError):
        recompute_from_jsonl(tmp_path / "none.jsonl")
