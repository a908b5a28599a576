"""A battery of malformed inputs across the command line, run as real ``python -m moelab`` processes.

Each case must exit with code 2, print exactly one line on stderr that names the problem, print no
traceback, and leave its output location as it found it (absent stays absent, an existing
directory keeps every byte). The processes run concurrently (they mostly wait on imports).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
import yaml

from rel_helpers import make_fake_run, moelab, snapshot, tiny_run


@dataclass
class Case:
    id: str
    needle: str  # must appear in the one stderr line (case-insensitive)
    build: Callable[[Path, Path], tuple[list, Path | None]]  # (case dir, assets) -> (argv, output to watch)


def _yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return path


def _train(cfg) -> Callable:
    """``moelab train CFG --out d/out``; cfg is a dict (dumped as YAML) or raw text/bytes."""
    def build(d: Path, a: Path):
        path = d / "run.yaml"
        if isinstance(cfg, bytes):
            path.write_bytes(cfg)
        else:
            _yaml(path, cfg)
        return ["train", path, "--out", d / "out", "--quiet"], d / "out"
    return build


def _plan(study) -> Callable:
    def build(d: Path, a: Path):
        return ["plan", _yaml(d / "study.yaml", study), "--no-probe"], None
    return build


def _eval(sub: str, *extra, task_file=None, model: str | None = None) -> Callable:
    """``moelab eval SUB --model M [--task-file F] --out d/out``; task_file is (suffix, bytes)."""
    def build(d: Path, a: Path):
        argv = ["eval", sub, "--model", model or (a / "run" / "model"), "--limit", "2", "--out", d / "out", *extra]
        if task_file is not None:
            suffix, content = task_file
            f = d / f"task{suffix}"
            f.write_bytes(content)
            argv += ["--task-file", f]
        return argv, d / "out"
    return build


def _grpo(*extra, model: str | None = None) -> Callable:
    def build(d: Path, a: Path):
        return ["grpo", "--model", model or (a / "run" / "model"), "--task", "reasoning", "--out", d / "out",
                "--steps", "1", "--quiet", *extra], d / "out"
    return build


def _ttc(*extra) -> Callable:
    def build(d: Path, a: Path):
        return ["ttc", "--model", a / "run" / "model", "--task", "reasoning", "--samples", "2", "--limit", "1",
                "--out", d / "out", "--quiet", *extra], d / "out"
    return build


def _under_a_file(cmd: Callable[[Path, Path], list]) -> Callable:
    """An output path below a regular file: unwritable for root too (ENOTDIR)."""
    def build(d: Path, a: Path):
        (d / "afile").write_text("not a directory\n")
        return cmd(d, a), d / "afile"
    return build


def _text_corpus(content: bytes, **data) -> Callable:
    def build(d: Path, a: Path):
        corpus = d / "corpus.txt"
        corpus.write_bytes(content)
        cfg = tiny_run(data={"sources": [{"kind": "text", "path": str(corpus)}], **data})
        return _train(cfg)(d, a)
    return build


def _different_run(d: Path, a: Path):
    from moelab.config import RunConfig, dump_yaml

    out = d / "out"
    out.mkdir()
    (out / "config.yaml").write_text(dump_yaml(RunConfig.model_validate(tiny_run(train={"lr": 1e-3}))))
    (out / "metrics.jsonl").write_text('{"kind": "train", "step": 1, "loss": 5.0}\n')
    return _train(tiny_run())(d, a)[0], out


def _different_study(d: Path, a: Path):
    out = d / "out"
    out.mkdir()
    other = {"name": "other", "tokens": [1e5], "grid": {"d_model": [32], "num_experts": [2], "top_k": [1]}}
    _yaml(out / "study.yaml", other)
    (out / "plan.json").write_text(json.dumps({"study": "other", "runs": []}))
    (out / ".lock").write_text("")
    study = {"name": "mine", "tokens": [1e5], "grid": {"d_model": [32], "num_experts": [4], "top_k": [1]}}
    return ["sweep", _yaml(d / "study.yaml", study), "--out", out, "--quiet"], out


def _hf_dir(config: dict, weights: str) -> Callable:
    """A Hugging Face-style directory: config.json and a weights file ('safetensors' or 'bin')."""
    def build(d: Path, a: Path):
        hf = d / "hf"
        hf.mkdir()
        (hf / "config.json").write_text(json.dumps(config))
        if weights == "safetensors":
            from safetensors.torch import save_file

            save_file({"model.embed_tokens.weight": torch.zeros(4, 4)}, str(hf / "model.safetensors"))
        else:
            torch.save({"model.embed_tokens.weight": torch.zeros(4, 4)}, hf / "pytorch_model.bin")
        return ["import-hf", hf, d / "out"], d / "out"
    return build


def _mixtral_config() -> dict:
    from moelab.config import ModelConfig
    from moelab.interop.hf import config_to_hf

    cfg = ModelConfig(vocab_size=64, d_model=16, n_layers=1, n_heads=2, num_experts=2, top_k=1, max_seq_len=32)
    return config_to_hf(cfg).to_dict()


LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 16, "num_hidden_layers": 1,
         "num_attention_heads": 2, "intermediate_size": 32, "vocab_size": 64}
NOT_UTF8 = b"\xff\xfe\x00bad"
SMALL_STUDY = {"name": "s", "tokens": [1e5], "grid": {"d_model": [32], "num_experts": [4], "top_k": [1]}}

CASES = [
    # ---- moelab train: the run config
    Case("train-truncated-yaml", "invalid YAML", _train("model:\n  d_model: [64,\n  n_layers: 2\n")),
    Case("train-not-utf8", "not UTF-8", _train(b"model:\n  d_model: 64\n  \xff\xfe\n")),
    Case("train-wrong-type", "model.d_model", _train(tiny_run(model={"d_model": "big"}))),
    Case("train-unknown-key", "did you mean 'steps'", _train(tiny_run(train={"stpes": 5}))),
    Case("train-k-greater-than-e", "top_k=4 exceeds num_experts=2",
         _train(tiny_run(model={"num_experts": 2, "top_k": 4}))),
    Case("train-zero-steps", "train.steps", _train(tiny_run(train={"steps": 0}))),
    Case("train-no-cuda", "no CUDA device", _train(tiny_run(train={"device": "cuda"}))),
    Case("train-source-missing", "no such file", _train(tiny_run(data={"sources": [
        {"kind": "text", "path": "/no/such/corpus.txt"}]}))),
    Case("train-empty-corpus", "empty corpus", _text_corpus(b"")),
    Case("train-corpus-too-small", "fewer than one batch", _text_corpus(
        "\n\n".join(f"Document number {i} is short." for i in range(40)).encode(), val_fraction=0.5)),
    Case("train-out-under-a-file", "not a directory", _under_a_file(
        lambda d, a: _train(tiny_run())(d, a)[0][:3] + [d / "afile" / "sub", "--quiet"])),
    Case("train-out-holds-other-run", "different run", _different_run),
    # ---- moelab plan / sweep: the study
    Case("plan-negative-budget", "budget must be positive", _plan({**SMALL_STUDY, "tokens": [], "budgets": [-1e12]})),
    Case("plan-wrong-type", "grid.top_k", _plan({**SMALL_STUDY, "grid": {"top_k": ["two"]}})),
    Case("plan-unknown-key", "did you mean 'num_experts'", _plan({**SMALL_STUDY, "grid": {"num_expert": [8]}})),
    Case("plan-malformed-base", "base.model.d_model", _plan({**SMALL_STUDY, "base": {"model": {"d_model": -4}}})),
    Case("sweep-no-feasible-run", "no feasible run", lambda d, a: (
        ["sweep", _yaml(d / "s.yaml", {**SMALL_STUDY, "grid": {"d_model": [32], "num_experts": [2],
                                                                "top_k": [4]}}), "--out", d / "out"], d / "out")),
    Case("sweep-out-holds-other-study", "different study", _different_study),
    Case("sweep-out-under-a-file", "not a directory", _under_a_file(
        lambda d, a: ["sweep", _yaml(d / "s.yaml", SMALL_STUDY), "--out", d / "afile" / "sub", "--quiet"])),
    # ---- moelab eval: task files and task names
    Case("eval-taskfile-missing-field", "missing field 'answer'",
         _eval("taskloss", task_file=(".json", b'[{"prompt": "Q: 1+1?"}]'))),
    Case("eval-taskfile-invalid-json", "invalid JSON", _eval("taskloss", task_file=(".json", b'[{"prompt": "a",'))),
    Case("eval-taskfile-not-utf8", "not UTF-8", _eval("accuracy", task_file=(".jsonl", NOT_UTF8))),
    Case("eval-taskfile-empty-list", "no items", _eval("taskloss", task_file=(".json", b"[]"))),
    Case("eval-all-taskfile-problem", "missing field 'prompt'",
         _eval("all", task_file=(".json", b'[{"answer": "4"}]'))),
    Case("eval-out-under-a-file", "not a directory", _under_a_file(
        lambda d, a: _eval("taskloss", "--task", "knowledge", "--out", d / "afile" / "sub")(d, a)[0])),
    Case("eval-unknown-task", "unknown task", _eval("accuracy", "--task", "reasonin")),
    Case("eval-model-missing", "no such file or directory", _eval("taskloss", "--task", "knowledge",
                                                                  model="/no/such/model")),
    # ---- models from elsewhere
    Case("import-hf-llama", "'llama' is not supported", _hf_dir(LLAMA, "safetensors")),
    Case("import-hf-pickle-only", "only pickle weights", lambda d, a: _hf_dir(_mixtral_config(), "bin")(d, a)),
    Case("export-hf-out-under-a-file", "not a directory", _under_a_file(
        lambda d, a: ["export-hf", a / "run" / "model", d / "afile" / "hf"])),
    # ---- post-training and sampling
    Case("grpo-group-size-1", "group_size must be at least 2", _grpo("--group-size", "1")),
    Case("grpo-unknown-task", "unknown task", _grpo("--task", "nope")),
    Case("grpo-out-under-a-file", "not a directory", _under_a_file(
        lambda d, a: _grpo("--out", d / "afile" / "sub")(d, a)[0])),
    Case("ttc-temperature-0", "--temperature: must be positive", _ttc("--temperature", "0")),
    Case("ttc-out-under-a-file", "not a directory", _under_a_file(
        lambda d, a: _ttc("--out", d / "afile" / "sub")(d, a)[0])),
    # ---- analysis
    Case("advise-unknown-family", "task family 'poetry' is not in study",
         lambda d, a: (["advise", a, "--budget", "1e12", "--task-family", "poetry"], a / "report")),
    # ---- the four tracebacks of issue 27, as real processes
    Case("report-random-bytes-csv", "results.csv: not a results CSV",
         lambda d, a: (["report", _study_csv(d, bytes(range(128, 256)) * 16)], d / "s")),
    Case("report-header-only-csv", "nothing to report",
         lambda d, a: (["report", _study_csv(d, b"run_id,status\n")], d / "s")),
    Case("grpo-config-a-list", "expected a mapping of GRPO options",
         lambda d, a: (_grpo("--config", _file(d / "g.yaml", "- lr\n- 1e-5\n"))(d, a)[0], d)),
    Case("advise-budget-1e30", "1.67e+19x the largest measured budget",
         lambda d, a: (["advise", _study_csv(d, ADVISE_CSV), "--budget", "1e30", "--task-family", "reasoning"],
                       d / "s")),
]



# a study measured at 6e10 FLOPs (for advise)
ADVISE_CSV = (b"run_id,status,budget,d_model,num_experts,top_k,total_params,active_params,tokens,tpp,train_flops,"
              b"accuracy/reasoning/heldout,num_items/reasoning/heldout\n"
              b"a,done,6e10,32,2,1,150000,100000,100000,0.667,6e10,0.30,50\n"
              b"b,done,6e10,32,4,1,250000,100000,100000,0.4,6e10,0.35,50\n")


def _file(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _study_csv(d: Path, data: bytes) -> Path:
    """``d/s`` holding only a ``results.csv`` of ``data``."""
    (d / "s").mkdir()
    (d / "s" / "results.csv").write_bytes(data)
    return d / "s"


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    """A fake pretraining run (config.yaml with a tiny world, model/) and a results.csv to advise on."""
    root = tmp_path_factory.mktemp("assets")
    make_fake_run(root)
    (root / "results.csv").write_text(
        "run_id,status,budget,d_model,num_experts,top_k,total_params,active_params,train_flops,"
        "accuracy/reasoning/heldout\n"
        "a,done,1e12,32,2,1,1000,800,1e12,0.5\n")
    return root


@pytest.fixture(scope="module")
def outcomes(assets, tmp_path_factory, request) -> dict:
    """Run the selected cases concurrently: id -> (CompletedProcess, watched path, snapshot before)."""
    # other test files parametrise a `case` too (with plain values): keep only this file's cases
    selected = {item.callspec.params["case"].id for item in request.session.items
                if hasattr(item, "callspec") and isinstance(item.callspec.params.get("case"), Case)}
    prepared = {}
    for case in CASES:
        if case.id not in selected:
            continue
        d = tmp_path_factory.mktemp(case.id)
        argv, watch = case.build(d, assets)
        prepared[case.id] = (argv, watch, snapshot(watch) if watch is not None else None, d)

    def go(item):
        cid, (argv, watch, before, d) = item
        return cid, (moelab(*argv, cwd=d), watch, before)

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(go, prepared.items()))


def test_the_battery_is_big_enough():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, outcomes):
    res, watch, before = outcomes[case.id]
    lines = res.stderr.strip().splitlines()
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    assert res.returncode == 2, f"exit {res.returncode}: {res.stderr[-2000:]}"
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("moelab: error: "), lines[0]
    assert case.needle.lower() in lines[0].lower(), lines[0]
    if watch is not None:
        assert snapshot(watch) == before, f"{watch} changed: {snapshot(watch)}"
