"""The bad-input battery (docs/reliability.md): malformed and adversarial input to every command.

Each case must exit with code 2, print exactly one line on stderr (``moelab: error: …``) that names
the problem, print no traceback, and leave every folder it touched byte for byte as it was — its own
case folder and the shared assets (a run, its Hugging Face export, a sweep with its store). A few
valid counterparts at the end must succeed, so that the rules do not refuse good input.

The cases run in this process through ``moelab.cli.main`` (the same code path as the command line,
without the interpreter start-up per case); ``test_bad_input.py`` runs a subset as real processes.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import yaml

from battery_assets import build_assets, study
from rel_helpers import snapshot, tiny_run


@dataclass
class Case:
    id: str
    needle: str  # must appear in the one stderr line (case-insensitive)
    build: Callable[[Path, Path], list]  # (case dir, assets) -> argv


def _w(path: Path, data) -> Path:
    """Write ``data`` (a dict/list as YAML, str or bytes as is) to ``path``."""
    if isinstance(data, bytes):
        path.write_bytes(data)
    elif isinstance(data, str):
        path.write_text(data)
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _csv(d: Path, data: bytes) -> Path:
    """A study folder ``d/s`` holding only ``results.csv`` with ``data``."""
    (d / "s").mkdir()
    (d / "s" / "results.csv").write_bytes(data)
    return d / "s"


def train(cfg, *extra) -> Callable:
    return lambda d, a: ["train", _w(d / "run.yaml", cfg), "--out", d / "out", "--quiet", *extra]


def train_into(prepare: Callable[[Path, Path], Path]) -> Callable:
    """``train`` (a valid config) into a folder ``prepare`` fills."""
    return lambda d, a: ["train", a / "run.yaml", "--out", prepare(d, a), "--quiet"]


def plan(data) -> Callable:
    return lambda d, a: ["plan", _w(d / "study.yaml", data), "--no-probe"]


def sweep(data, *extra) -> Callable:
    return lambda d, a: ["sweep", _w(d / "study.yaml", data), "--out", d / "out", "--quiet", *extra]


def ev(sub: str, *extra, model=None) -> Callable:
    return lambda d, a: ["eval", sub, "--model", model or a / "run", *extra]


def gen(*extra) -> Callable:
    return lambda d, a: ["generate", "--model", a / "run", "--prompt", "Q: who?", *extra]


def grpo(*extra, out=None) -> Callable:
    return lambda d, a: ["grpo", "--model", a / "run", "--task", "reasoning", "--steps", "1", "--quiet",
                         "--out", out(d, a) if out else d / "out", *extra]


def ttc(*extra) -> Callable:
    return lambda d, a: ["ttc", "--model", a / "run", "--task", "reasoning", "--samples", "2", "--limit", "1",
                         "--quiet", "--out", d / "out", *extra]


def query(sql: str) -> Callable:
    return lambda d, a: ["query", a / "sweep", sql.replace("{d}", str(d)).replace("{a}", str(a))]


def bench(*extra) -> Callable:
    return lambda d, a: ["bench", *extra]


# ---- folders that belong to something else


def foreign(d: Path, a: Path) -> Path:
    (d / "out").mkdir()
    (d / "out" / "notes.txt").write_text("my own notes\n")
    return d / "out"


def copy_of(name: str) -> Callable[[Path, Path], Path]:
    def build(d: Path, a: Path) -> Path:
        shutil.copytree(a / name, d / "out")
        return d / "out"
    return build


def hf_dir(config, weights: str = "safetensors") -> Callable[[Path, Path], Path]:
    """A Hugging Face-style folder: ``config`` (dict, or raw text) and a weights file."""
    def build(d: Path, a: Path) -> Path:
        hf = d / "hf"
        shutil.copytree(a / "hf", hf)
        if config is not None:
            (hf / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
        if weights == "bin":
            (hf / "model.safetensors").rename(hf / "pytorch_model.bin")
        elif weights == "truncated":
            data = (hf / "model.safetensors").read_bytes()
            (hf / "model.safetensors").write_bytes(data[: len(data) // 2])
        elif weights == "garbage":
            (hf / "model.safetensors").write_bytes(b"\x00" * 64)
        return hf
    return build


def import_hf(prepare, out=None) -> Callable:
    return lambda d, a: ["import-hf", prepare(d, a), out(d, a) if out else d / "out"]


def run_with_config(text) -> Callable[[Path, Path], Path]:
    """A copy of the assets' run whose ``config.yaml`` is replaced by ``text``."""
    def build(d: Path, a: Path) -> Path:
        shutil.copytree(a / "run", d / "run")
        _w(d / "run" / "config.yaml", text)
        return d / "run"
    return build


def _hf_config(a: Path) -> dict:
    return json.loads((a / "hf" / "config.json").read_text())


def hf_with(**changes) -> Callable[[Path, Path], Path]:
    def build(d: Path, a: Path) -> Path:
        return hf_dir(_hf_config(a) | changes)(d, a)
    return build


SELECT = "SELECT run_id, status FROM runs"
BAD_YAML = "model:\n  d_model: [64,\n  n_layers: 2\n"
NOT_UTF8 = b"model:\n  d_model: 64\n  \xff\xfe\n"

CASES = [
    # ---- params
    Case("params-tokens-nan", "--tokens: must be a finite number", lambda d, a: ["params", "--tokens", "nan"]),
    Case("params-tokens-inf", "--tokens: must be a finite number", lambda d, a: ["params", "--tokens", "inf"]),
    Case("params-tokens-negative", "--tokens: must be positive", lambda d, a: ["params", "--tokens", "-1"]),
    Case("params-tokens-zero", "--tokens: must be positive", lambda d, a: ["params", "--tokens", "0"]),
    Case("params-tokens-word", "expected a number", lambda d, a: ["params", "--tokens", "lots"]),
    Case("params-d-model-zero", "--d-model: must be a positive integer", lambda d, a: ["params", "--d-model", "0"]),
    Case("params-d-model-fraction", "expected an integer", lambda d, a: ["params", "--d-model", "2.5"]),
    Case("params-k-above-e", "exceeds num_experts", lambda d, a: ["params", "--experts", "2", "--top-k", "3"]),
    Case("params-heads-indivisible", "not divisible", lambda d, a: ["params", "--d-model", "64", "--heads", "3"]),
    Case("params-unknown-preset", "unknown architecture preset", lambda d, a: ["params", "--preset", "gpt5"]),
    Case("params-layers-negative", "--layers: must be a positive integer", lambda d, a: ["params", "--layers", "-2"]),
    # ---- train: the run config
    Case("train-config-missing", "no such file", lambda d, a: ["train", d / "nope.yaml", "--out", d / "out"]),
    Case("train-config-is-dir", "is a directory, not a YAML file", lambda d, a: ["train", d, "--out", d / "out"]),
    Case("train-truncated-yaml", "invalid YAML", train(BAD_YAML)),
    Case("train-not-utf8", "not UTF-8", train(NOT_UTF8)),
    Case("train-empty-file", "run config is empty", train("")),
    Case("train-comments-only", "run config is empty", train("# nothing here\n# at all\n")),
    Case("train-top-level-list", "expected a mapping", train("- model\n- data\n")),
    Case("train-duplicate-key", "appears twice", train("train:\n  steps: 5\n  steps: 50\n")),
    Case("train-bool-as-number", "model.d_model: expected a number", train(tiny_run(model={"d_model": True}))),
    Case("train-string-as-number", "model.d_model: expected a number", train("model:\n  d_model: '64'\n")),
    Case("train-number-as-bool", "model.tie_embeddings: expected true or false",
         train(tiny_run(model={"tie_embeddings": 1}))),
    Case("train-wrong-type", "model.d_model", train(tiny_run(model={"d_model": "big"}))),
    Case("train-unknown-key", "did you mean 'steps'", train(tiny_run(train={"stpes": 5}))),
    Case("train-unknown-section", "unknown key 'optimizer'", train({"optimizer": {"lr": 1}})),
    Case("train-k-above-e", "top_k=4 exceeds num_experts=2", train(tiny_run(model={"num_experts": 2, "top_k": 4}))),
    Case("train-zero-steps", "train.steps", train(tiny_run(train={"steps": 0}))),
    Case("train-lr-inf", "train.lr: Input should be a finite number", train("train:\n  lr: .inf\n")),
    Case("train-lr-nan", "train.lr: Input should be a finite number", train("train:\n  lr: .nan\n")),
    Case("train-lr-negative", "train.lr", train(tiny_run(train={"lr": -1e-3}))),
    Case("train-device-tpu", "unknown device 'tpu'", train(tiny_run(train={"device": "tpu"}))),
    Case("train-device-cuda", "no CUDA device", train(tiny_run(train={"device": "cuda"}))),
    Case("train-precision-fp16", "train.precision", train(tiny_run(train={"precision": "fp16"}))),
    Case("train-batch-indivisible", "not divisible by grad_accum",
         train(tiny_run(train={"batch_size": 6, "grad_accum": 4}))),
    Case("train-vocab-too-small", "data.vocab_size", train(tiny_run(data={"vocab_size": 10}))),
    Case("train-bad-attribute", "unknown knowledge attribute",
         train(tiny_run(data={"world": {"knowledge_attributes": ["shoe_size"]}}))),
    Case("train-source-missing", "no such file",
         train(tiny_run(data={"sources": [{"kind": "text", "path": "/no/such/corpus.txt"}]}))),
    Case("train-source-no-path", "needs a path", train(tiny_run(data={"sources": [{"kind": "jsonl"}]}))),
    Case("train-stop-after-zero", "--stop-after: must be a positive integer", train(tiny_run(), "--stop-after", "0")),
    Case("train-out-under-a-file", "not a directory",
         lambda d, a: ["train", a / "run.yaml", "--out", a / "afile" / "sub", "--quiet"]),
    Case("train-out-foreign-folder", "moelab did not write", train_into(foreign)),
    Case("train-out-holds-sweep", "holds a sweep", train_into(copy_of("sweep"))),
    Case("train-out-holds-hf", "holds a Hugging Face checkpoint", train_into(copy_of("hf"))),
    Case("train-out-holds-model", "holds a moelab model directory", train_into(copy_of("run/model"))),
    Case("train-out-holds-other-run", "different run", train_into(copy_of("run"))),
    # ---- plan: the study
    Case("plan-missing-file", "unknown study preset or file", lambda d, a: ["plan", "nosuchpreset", "--no-probe"]),
    Case("plan-a-directory", "is a directory, not a study file", lambda d, a: ["plan", a / "sweep", "--no-probe"]),
    Case("plan-negative-budget", "budget must be positive", plan(study(tokens=[], budgets=[-1e12]))),
    Case("plan-budget-inf", "budgets.0: Input should be a finite number",
         lambda d, a: ["plan", _w(d / "s.yaml", "name: s\nbudgets: [.inf]\n"), "--no-probe"]),
    Case("plan-tokens-nan", "tokens.0: Input should be a finite number",
         lambda d, a: ["plan", _w(d / "s.yaml", "name: s\ntokens: [.nan]\n"), "--no-probe"]),
    Case("plan-budgets-and-tokens", "exactly one of", plan(study(budgets=[1e12]))),
    Case("plan-neither-budgets-nor-tokens", "exactly one of", plan(study(tokens=[]))),
    Case("plan-wrong-type", "grid.top_k", plan(study(grid={"top_k": ["two"]}))),
    Case("plan-bool-in-grid", "grid.top_k: expected a number", plan(study(grid={"top_k": [True]}))),
    Case("plan-unknown-key", "did you mean 'num_experts'", plan(study(grid={"num_expert": [8]}))),
    Case("plan-malformed-base", "base.model.d_model", plan(study(base={"model": {"d_model": -4}}))),
    Case("plan-heads-rule", "heads_rule", plan(study(heads_rule="golden"))),
    Case("plan-duplicate-grid-value", "grid.num_experts lists 2 twice",
         plan(study(grid={"d_model": [32], "num_experts": [2, 2], "top_k": [1]}))),
    Case("plan-duplicate-tokens", "tokens lists", plan(study(tokens=[2e4, 2e4]))),
    Case("plan-duplicate-yaml-key", "appears twice",
         lambda d, a: ["plan", _w(d / "s.yaml", "name: a\nname: b\ntokens: [1.0e+5]\n"), "--no-probe"]),
    Case("plan-unknown-eval-task", "base.eval.tasks: unknown task 'reasonin'",
         plan(study(base={"eval": {"tasks": ["knowledge", "reasonin"]}}))),
    Case("plan-missing-task-file", "base.eval.task_files", plan(study(base={"eval": {"task_files": ["/no/t.json"]}}))),
    Case("plan-bad-task-file", "missing field 'answer'", lambda d, a: ["plan", _w(d / "s.yaml", study(base={"eval": {
        "task_files": [str(_w(d / "t.json", '[{"prompt": "x"}]'))]}})), "--no-probe"]),
    Case("plan-task-file-flag", "invalid JSON", lambda d, a: ["plan", a / "study.yaml", "--no-probe", "--task-file",
                                                             _w(d / "t.json", '[{"prompt": ')]),
    Case("plan-ttc-unknown-task", "ttc.task: unknown task", plan(study(ttc={"task": "poetry"}))),
    Case("plan-ttc-unknown-split", "ttc.split: task 'reasoning' has no split 'test'",
         plan(study(ttc={"task": "reasoning", "split": "test"}))),
    Case("plan-ttc-zero-samples", "ttc.samples", plan(study(ttc={"samples": 0}))),
    Case("plan-posttrain-unknown-task", "posttrain.task: unknown task", plan(study(posttrain={"task": "nope"}))),
    Case("plan-posttrain-bad-split", "posttrain.train_split", plan(study(posttrain={"train_split": "dev"}))),
    Case("plan-posttrain-group-size", "group_size must be at least 2", plan(study(posttrain={"group_size": 1}))),
    Case("plan-posttrain-unknown-option", "unknown key", plan(study(posttrain={"learning_rate": 1e-5}))),
    Case("plan-posttrain-bool-steps", "steps: expected a number", plan(study(posttrain={"steps": True}))),
    Case("plan-source-missing", "base.data.sources[0]: /no/file.txt: no such file",
         plan(study(base={"data": {"sources": [{"kind": "text", "path": "/no/file.txt"}]}}))),
    Case("plan-device-tpu", "unknown device", plan(study(base={"train": {"device": "tpu"}}))),
    # ---- sweep: the same checks, before the folder exists
    Case("sweep-unknown-eval-task", "unknown task", sweep(study(base={"eval": {"tasks": ["reasonin"]}}))),
    Case("sweep-duplicate-grid", "lists 32 twice", sweep(study(grid={"d_model": [32, 32], "num_experts": [1],
                                                                      "top_k": [1]}))),
    Case("sweep-ttc-split", "no split 'test'", sweep(study(ttc={"split": "test"}))),
    Case("sweep-posttrain-task", "posttrain.task", sweep(study(posttrain={"task": "nope"}))),
    Case("sweep-source-missing", "no such file",
         sweep(study(base={"data": {"sources": [{"kind": "jsonl", "path": "/no/c.jsonl"}]}}))),
    Case("sweep-bad-task-file-flag", "no such task file", sweep(study(), "--task-file", "/no/such/task.json")),
    Case("sweep-no-feasible-run", "no feasible run", sweep(study(grid={"d_model": [32], "num_experts": [2],
                                                                        "top_k": [4]}))),
    Case("sweep-workers-zero", "--workers: must be a positive integer", sweep(study(), "--workers", "0")),
    Case("sweep-executor-unknown", "invalid choice", sweep(study(), "--executor", "slurm")),
    Case("sweep-out-holds-run", "holds a training run",
         lambda d, a: ["sweep", a / "study.yaml", "--out", copy_of("run")(d, a), "--quiet"]),
    Case("sweep-out-foreign", "moelab did not write",
         lambda d, a: ["sweep", a / "study.yaml", "--out", foreign(d, a), "--quiet"]),
    Case("sweep-out-other-study", "different study",
         lambda d, a: ["sweep", _w(d / "s.yaml", study(name="other")), "--out", copy_of("sweep")(d, a), "--quiet"]),
    Case("sweep-out-under-a-file", "not a directory",
         lambda d, a: ["sweep", a / "study.yaml", "--out", a / "afile" / "sub", "--quiet"]),
    # ---- demo
    Case("demo-unknown-preset", "unknown study preset", lambda d, a: ["demo", "--preset", "huge", "--out", d / "o"]),
    Case("demo-does-not-fit", "memory", lambda d, a: ["demo", "--preset", "paper", "--out", d / "o", "--quiet"]),
    Case("demo-out-holds-sweep", "holds a sweep",
         lambda d, a: ["demo", "--preset", "smoke", "--out", copy_of("sweep")(d, a), "--quiet"]),
    Case("demo-out-holds-run", "holds a training run",
         lambda d, a: ["demo", "--preset", "smoke", "--out", copy_of("run")(d, a), "--quiet"]),
    Case("demo-out-foreign", "moelab did not write",
         lambda d, a: ["demo", "--preset", "smoke", "--out", foreign(d, a), "--quiet"]),
    Case("demo-out-other-preset", "holds a demo of preset 'demo'", lambda d, a: [
        "demo", "--preset", "smoke", "--out", _demo_of(d, "demo"), "--quiet"]),
    # ---- eval
    Case("eval-limit-zero", "--limit: must be a positive integer", ev("taskloss", "--task", "knowledge", "--limit", "0")),
    Case("eval-limit-negative", "--limit: must be a positive integer",
         ev("taskloss", "--task", "knowledge", "--limit", "-1")),
    Case("eval-split-unknown", "has no split 'nosuchsplit'",
         ev("taskloss", "--task", "knowledge", "--split", "nosuchsplit")),
    Case("eval-accuracy-split-unknown", "has no split 'dev'", ev("accuracy", "--task", "reasoning", "--split", "dev")),
    Case("eval-unknown-task", "unknown task", ev("accuracy", "--task", "reasonin")),
    Case("eval-task-and-file", "exactly one of", lambda d, a: ev("taskloss", "--task", "knowledge", "--task-file",
                                                                  a / "task.json")(d, a)),
    Case("eval-no-task", "exactly one of", ev("taskloss")),
    Case("eval-model-missing", "no such file or directory", ev("taskloss", "--task", "knowledge", model="/no/model")),
    Case("eval-model-is-file", "got a file", lambda d, a: ev("taskloss", "--task", "knowledge", model=a / "afile")(d, a)),
    Case("eval-model-not-a-model", "not a model directory",
         lambda d, a: ev("taskloss", "--task", "knowledge", model=d)(d, a)),
    Case("eval-device-tpu", "unknown device 'tpu'", ev("taskloss", "--task", "knowledge", "--device", "tpu")),
    Case("eval-device-cuda", "no CUDA device", ev("taskloss", "--task", "knowledge", "--device", "cuda")),
    Case("eval-shots-negative", "--shots: must be 0 or more", ev("accuracy", "--task", "reasoning", "--shots", "-2")),
    Case("eval-new-tokens-negative", "--max-new-tokens: must be a positive integer",
         ev("accuracy", "--task", "reasoning", "--max-new-tokens", "-1")),
    Case("eval-new-tokens-zero", "--max-new-tokens: must be a positive integer",
         ev("accuracy", "--task", "reasoning", "--max-new-tokens", "0")),
    Case("eval-all-limit-zero", "--limit: must be a positive integer", ev("all", "--limit", "0")),
    Case("eval-all-unknown-task", "unknown task", ev("all", "--task", "poetry")),
    Case("eval-taskfile-missing-field", "missing field 'answer'", lambda d, a: ev(
        "taskloss", "--task-file", _w(d / "t.json", '[{"prompt": "Q: 1+1?"}]'))(d, a)),
    Case("eval-taskfile-invalid-json", "invalid JSON", lambda d, a: ev(
        "taskloss", "--task-file", _w(d / "t.json", '[{"prompt": "a",'))(d, a)),
    Case("eval-taskfile-empty", "no items", lambda d, a: ev("taskloss", "--task-file", _w(d / "t.json", "[]"))(d, a)),
    Case("eval-taskfile-not-utf8", "not UTF-8", lambda d, a: ev(
        "accuracy", "--task-file", _w(d / "t.jsonl", b"\xff\xfe\x00bad"))(d, a)),
    Case("eval-taskfile-missing", "no such task file", ev("taskloss", "--task-file", "/no/such/task.json")),
    Case("eval-out-is-source", "is the source", lambda d, a: ev("taskloss", "--task", "knowledge", "--out",
                                                                 a / "run")(d, a)),
    Case("eval-out-holds-model", "holds a moelab model directory", lambda d, a: ev(
        "taskloss", "--task", "knowledge", "--out", copy_of("run/model")(d, a))(d, a)),
    Case("eval-out-foreign", "moelab did not write", lambda d, a: ev(
        "taskloss", "--task", "knowledge", "--out", foreign(d, a))(d, a)),
    Case("eval-out-under-a-file", "not a directory", lambda d, a: ev(
        "taskloss", "--task", "knowledge", "--out", a / "afile" / "x")(d, a)),
    Case("eval-truncated-run-config", "invalid YAML", lambda d, a: ev(
        "taskloss", "--task", "knowledge", model=run_with_config(BAD_YAML)(d, a))(d, a)),
    Case("eval-empty-run-config", "run config is empty", lambda d, a: ev(
        "accuracy", "--task", "knowledge", model=run_with_config("")(d, a))(d, a)),
    Case("eval-code-workers-zero", "--workers: must be a positive integer", lambda d, a: ev(
        "code", "--task-file", a / "task.json", "--workers", "0")(d, a)),
    Case("eval-code-n-zero", "--n: must be a positive integer", lambda d, a: ev(
        "code", "--task-file", a / "task.json", "--n", "0")(d, a)),
    Case("eval-code-timeout-zero", "--timeout: must be positive", lambda d, a: ev(
        "code", "--task-file", a / "task.json", "--timeout", "0")(d, a)),
    Case("eval-code-top-p", "--top-p: must be in (0, 1]", lambda d, a: ev(
        "code", "--task-file", a / "task.json", "--top-p", "1.5")(d, a)),
    Case("eval-code-temperature", "--temperature: must be 0 or more", lambda d, a: ev(
        "code", "--task-file", a / "task.json", "--temperature", "-1")(d, a)),
    Case("eval-lmeval-fewshot", "--num-fewshot: must be 0 or more",
         lambda d, a: ["eval", "lm-eval", "--model", a / "run", "--tasks", "x", "--num-fewshot", "-1"]),
    Case("eval-lmeval-device", "unknown device",
         lambda d, a: ["eval", "lm-eval", "--model", a / "run", "--tasks", "x", "--device", "tpu"]),
    Case("eval-lmeval-include-missing", "no such directory", lambda d, a: [
        "eval", "lm-eval", "--model", a / "run", "--tasks", "x", "--include-path", d / "none"]),
    # ---- generate
    Case("generate-new-tokens-negative", "--max-new-tokens: must be a positive integer", gen("--max-new-tokens", "-1")),
    Case("generate-temperature-negative", "--temperature: must be 0 or more", gen("--temperature", "-1")),
    Case("generate-temperature-nan", "--temperature: must be a finite number", gen("--temperature", "nan")),
    Case("generate-top-p-above-1", "--top-p: must be in (0, 1]", gen("--top-p", "2")),
    Case("generate-top-p-zero", "--top-p: must be in (0, 1]", gen("--top-p", "0")),
    Case("generate-past-context", "exceeds the model's context", gen("--max-new-tokens", "500")),
    Case("generate-long-prompt", "exceeds the model's context",
         lambda d, a: ["generate", "--model", a / "run", "--prompt", "word " * 400, "--max-new-tokens", "4"]),
    Case("generate-model-missing", "no such file", lambda d, a: ["generate", "--model", d / "x", "--prompt", "hi"]),
    Case("generate-seed-word", "invalid int value", gen("--seed", "lucky")),
    # ---- import-hf
    Case("import-hf-llama", "'llama' is not supported", import_hf(hf_with(model_type="llama"))),
    Case("import-hf-pickle-only", "only pickle weights", import_hf(hf_dir(None, "bin"))),
    Case("import-hf-truncated-weights", "unreadable safetensors file", import_hf(hf_dir(None, "truncated"))),
    Case("import-hf-garbage-weights", "unreadable safetensors file", import_hf(hf_dir(None, "garbage"))),
    Case("import-hf-config-not-json", "not", import_hf(hf_dir("{ this is not json"))),
    Case("import-hf-config-a-list", "not a JSON object", import_hf(hf_dir("[1, 2]"))),
    Case("import-hf-shape-mismatch", "weights do not match", import_hf(hf_with(intermediate_size=24, moe_intermediate_size=24))),
    Case("import-hf-missing-dir", "no such file", lambda d, a: ["import-hf", d / "nohf", d / "out"]),
    Case("import-hf-out-is-source", "is the source", lambda d, a: ["import-hf", a / "hf", a / "hf"]),
    Case("import-hf-out-contains-source", "contains the source", lambda d, a: ["import-hf", a / "hf", a]),
    Case("import-hf-out-holds-run", "holds a training run",
         import_hf(lambda d, a: a / "hf", out=copy_of("run"))),
    Case("import-hf-out-foreign", "moelab did not write", import_hf(lambda d, a: a / "hf", out=foreign)),
    Case("import-hf-out-model-plus-foreign", "which moelab did not write", import_hf(
        lambda d, a: a / "hf", out=lambda d, a: _with_extra(copy_of("run/model")(d, a)))),
    # ---- export-hf
    Case("export-hf-into-run-model", "holds a moelab model directory",
         lambda d, a: ["export-hf", copy_of("run")(d, a), d / "out" / "model"]),
    Case("export-hf-out-is-source", "is the source", lambda d, a: ["export-hf", a / "run", a / "run"]),
    Case("export-hf-out-foreign", "moelab did not write", lambda d, a: ["export-hf", a / "run", foreign(d, a)]),
    Case("export-hf-out-holds-sweep", "holds a sweep", lambda d, a: ["export-hf", a / "run", copy_of("sweep")(d, a)]),
    Case("export-hf-hf-plus-foreign", "which moelab did not write",
         lambda d, a: ["export-hf", a / "run", _with_extra(copy_of("hf")(d, a))]),
    Case("export-hf-model-missing", "no such file", lambda d, a: ["export-hf", d / "none", d / "out"]),
    Case("export-hf-out-under-a-file", "not a directory", lambda d, a: ["export-hf", a / "run", a / "afile" / "hf"]),
    # ---- grpo
    Case("grpo-group-size-1", "group_size must be at least 2", grpo("--group-size", "1")),
    Case("grpo-config-a-list", "g.yaml: expected a mapping of GRPO options, got a list",
         lambda d, a: grpo("--config", _w(d / "g.yaml", "- lr\n- 1e-5\n"))(d, a)),
    Case("grpo-config-a-scalar", "expected a mapping of GRPO options", lambda d, a: grpo("--config", _w(d / "g.yaml", "3\n"))(d, a)),
    Case("grpo-unknown-task", "unknown task", lambda d, a: grpo()(d, a)[:3] + ["--task", "nope", "--out", d / "o"]),
    Case("grpo-steps-zero", "steps", grpo("--steps", "0")),
    Case("grpo-lr-nan", "--lr: must be a finite number", grpo("--lr", "nan")),
    Case("grpo-lr-negative", "lr", grpo("--lr", "-1e-5")),
    Case("grpo-top-p", "top_p", grpo("--top-p", "2")),
    Case("grpo-temperature-zero", "temperature must be > 0", grpo("--temperature", "0")),
    Case("grpo-device-tpu", "unknown device", grpo("--device", "tpu")),
    Case("grpo-precision", "invalid choice", grpo("--precision", "fp16")),
    Case("grpo-split-unknown", "no items in split 'dev'", grpo("--train-split", "dev")),
    Case("grpo-config-missing", "no such file", lambda d, a: grpo("--config", d / "none.yaml")(d, a)),
    Case("grpo-config-truncated", "invalid YAML", lambda d, a: grpo("--config", _w(d / "g.yaml", "lr: [1,\n"))(d, a)),
    Case("grpo-config-duplicate-key", "appears twice",
         lambda d, a: grpo("--config", _w(d / "g.yaml", "lr: 1.0e-5\nlr: 1.0\n"))(d, a)),
    Case("grpo-config-unknown-key", "unknown key", lambda d, a: grpo("--config", _w(d / "g.yaml", {"lrate": 1}))(d, a)),
    Case("grpo-out-is-source", "is the source", grpo(out=lambda d, a: a / "run")),
    Case("grpo-out-holds-run", "holds a training run", grpo(out=copy_of("run"))),
    Case("grpo-out-foreign", "moelab did not write", grpo(out=foreign)),
    Case("grpo-out-under-a-file", "not a directory", grpo(out=lambda d, a: a / "afile" / "g")),
    # ---- ttc
    Case("ttc-temperature-0", "--temperature: must be positive", ttc("--temperature", "0")),
    Case("ttc-batch-size-0", "--batch-size: must be a positive integer", ttc("--batch-size", "0")),
    Case("ttc-samples-0", "--samples: must be a positive integer",
         lambda d, a: ["ttc", "--model", a / "run", "--task", "reasoning", "--samples", "0"]),
    Case("ttc-limit-0", "--limit: must be a positive integer", ttc("--limit", "0")),
    Case("ttc-top-p", "--top-p: must be in (0, 1]", ttc("--top-p", "1.01")),
    Case("ttc-split-unknown", "has no split 'valid'", ttc("--split", "valid")),
    Case("ttc-unknown-task", "unknown task", lambda d, a: ["ttc", "--model", a / "run", "--task", "x",
                                                           "--samples", "2", "--out", d / "o"]),
    Case("ttc-no-model", "are required", lambda d, a: ["ttc", "--task", "reasoning", "--samples", "2"]),
    Case("ttc-out-holds-run", "holds a training run", lambda d, a: ttc()(d, a)[:-1] + [copy_of("run")(d, a)]),
    Case("ttc-out-under-a-file", "not a directory", lambda d, a: ttc()(d, a)[:-1] + [a / "afile" / "t"]),
    Case("ttc-recompute-missing", "no such samples file", lambda d, a: ["ttc", "--recompute", d / "samples.jsonl"]),
    Case("ttc-recompute-garbage", "invalid JSON at line 1", lambda d, a: ["ttc", "--recompute", _w(d / "samples.jsonl", "{not json\n")]),
    # ---- query: read-only for real
    Case("query-copy-to-file", "disabled by configuration", query("COPY (SELECT 1) TO '{d}/x.csv'")),
    Case("query-copy-over-results", "disabled by configuration",
         query("COPY (SELECT 'forged' AS run_id) TO '{a}/sweep/results.csv' (HEADER)")),
    Case("query-copy-over-status", "disabled by configuration",
         query("COPY (SELECT 'pending' AS state) TO '{a}/sweep/runs/x/status.json'")),
    Case("query-export-database", "disabled by configuration", query("EXPORT DATABASE '{d}/dump'")),
    Case("query-attach", "disabled by configuration", query("ATTACH '{d}/other.duckdb' AS other")),
    Case("query-read-csv", "disabled by configuration", query("SELECT * FROM read_csv('/etc/passwd')")),
    Case("query-glob", "disabled by configuration", query("SELECT * FROM glob('{a}/*')")),
    Case("query-install", "disabled by configuration", query("INSTALL httpfs")),
    Case("query-load", "disabled", query("LOAD httpfs")),
    Case("query-enable-access", "configuration has been locked", query("SET enable_external_access = true")),
    Case("query-pragma", "configuration has been locked", query("PRAGMA threads = 1")),
    Case("query-drop", "read-only", query("DROP TABLE runs")),
    Case("query-delete", "read-only", query("DELETE FROM runs")),
    Case("query-update", "read-only", query("UPDATE runs SET status = 'pending'")),
    Case("query-create", "read-only", query("CREATE TABLE forged AS SELECT 1")),
    Case("query-empty", "the SQL is empty", query("")),
    Case("query-blank", "the SQL is empty", query("   \n")),
    Case("query-syntax", "query failed", query("SELEC nothing")),
    Case("query-no-such-table", "query failed", query("SELECT * FROM nothing")),
    Case("query-not-a-sweep", "no results store", lambda d, a: ["query", d, SELECT]),
    Case("query-missing-dir", "no such directory", lambda d, a: ["query", d / "none", SELECT]),
    # ---- status, report, advise
    Case("status-missing-dir", "no such directory", lambda d, a: ["status", d / "none"]),
    Case("status-a-file", "no such directory", lambda d, a: ["status", a / "afile"]),
    Case("report-bootstrap-zero", "--bootstrap: must be at least 50", lambda d, a: ["report", a / "sweep",
                                                                                     "--bootstrap", "0"]),
    Case("report-bootstrap-small", "--bootstrap: must be at least 50", lambda d, a: ["report", a / "sweep",
                                                                                      "--bootstrap", "10"]),
    Case("report-missing-dir", "no such directory", lambda d, a: ["report", d / "none"]),
    Case("advise-bootstrap-zero", "--bootstrap: must be at least 50", lambda d, a: [
        "advise", a, "--budget", "1e12", "--task-family", "reasoning", "--bootstrap", "0"]),
    Case("advise-unknown-family", "task family 'poetry' is not in study",
         lambda d, a: ["advise", a, "--budget", "1e12", "--task-family", "poetry"]),
    Case("advise-budget-word", "budget", lambda d, a: ["advise", a, "--budget", "lots", "--task-family", "reasoning"]),
    Case("advise-budget-negative", "budget", lambda d, a: ["advise", a, "--budget", "-1e12",
                                                           "--task-family", "reasoning"]),
    Case("advise-metric", "invalid choice", lambda d, a: ["advise", a, "--budget", "1e12", "--task-family",
                                                          "reasoning", "--metric", "vibes"]),
    Case("advise-missing-dir", "no such directory", lambda d, a: ["advise", d / "none", "--budget", "1e12", "--task-family", "x"]),
    # a results.csv of random bytes, and one with a header only: the file named, nothing written
    Case("report-garbage-csv", "results.csv: not a results CSV",
         lambda d, a: ["report", _csv(d, bytes(range(128, 256)) * 16)]),
    Case("report-header-only-csv", "results.csv: no runs in it; nothing to report",
         lambda d, a: ["report", _csv(d, b"run_id,status,budget,train_flops\n")]),
    Case("advise-header-only-csv", "nothing to report",
         lambda d, a: ["advise", _csv(d, b"run_id,status\n"), "--budget", "1e12", "--task-family", "reasoning"]),
    # a study measured at 6e10 FLOPs: 1e30 recommended 7e19 experts; refused, saying why
    Case("advise-budget-beyond-the-measured-range", "1.67e+19x the largest measured budget",
         lambda d, a: ["advise", a / "advise", "--budget", "1e30", "--task-family", "reasoning"]),
    Case("advise-budget-far-below-the-measured-range", "extrapolates at most x1000",
         lambda d, a: ["advise", a / "advise", "--budget", "1e5", "--task-family", "reasoning"]),
    # ---- bench
    Case("bench-does-not-fit", "needs at least", bench("score", "--d-model", "1000000000")),
    Case("bench-train-does-not-fit", "memory", bench("train", "--d-model", "65536", "--heads", "4")),
    Case("bench-threads-zero", "--threads: must be a positive integer", bench("score", "--threads", "0")),
    Case("bench-repeats-zero", "--repeats: must be a positive integer", bench("score", "--repeats", "0")),
    Case("bench-batch-zero", "--batch: must be a positive integer", bench("train", "--batch", "0")),
    Case("bench-warmup-negative", "--warmup: must be 0 or more", bench("train", "--warmup", "-1")),
    Case("bench-device-tpu", "unknown device", bench("score", "--device", "tpu")),
    Case("bench-mode", "invalid choice", bench("infer")),
    Case("bench-k-above-e", "exceeds num_experts", bench("score", "--experts", "2", "--top-k", "4")),
    # ---- the command line itself
    Case("no-command", "required", lambda d, a: []),
    Case("unknown-command", "invalid choice", lambda d, a: ["trian"]),
    Case("unknown-flag", "unrecognized arguments", lambda d, a: ["params", "--d-modle", "64"]),
]


def _with_extra(folder: Path) -> Path:
    (folder / "README.md").write_text("a file the user put here\n")
    return folder


def _demo_of(d: Path, preset: str) -> Path:
    (d / "demo").mkdir()
    (d / "demo" / "demo.json").write_text(json.dumps({"preset": preset}))
    return d / "demo"


@pytest.fixture(scope="module")
def assets(tmp_path_factory, one_thread) -> Path:
    return build_assets(tmp_path_factory.mktemp("battery") / "assets")


def run_cli(argv: list, cwd: Path) -> tuple[int, str, str]:
    """``moelab ARGV`` in this process: (exit code, stdout, stderr)."""
    from moelab.cli import main

    out, err = io.StringIO(), io.StringIO()
    before = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(x) for x in argv])
    finally:
        os.chdir(before)
    return code, out.getvalue(), err.getvalue()


def test_the_battery_is_big_enough():
    assert len(CASES) >= 150 and len({c.id for c in CASES}) == len(CASES)
    assert all(c.needle for c in CASES), "every case names what its one line must say"
    commands = {c.id.split("-")[0] for c in CASES}
    for command in ("params", "train", "plan", "sweep", "demo", "eval", "generate", "import", "export", "grpo",
                    "ttc", "query", "status", "report", "advise", "bench"):
        assert command in commands, command


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line_and_changes_nothing(case, assets, tmp_path):
    argv = case.build(tmp_path, assets)
    before_case, before_assets = snapshot(tmp_path), snapshot(assets)
    code, _, err = run_cli(argv, tmp_path)
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err[-3000:]
    assert code == 2, f"exit {code}: {err[-2000:]}"
    assert len(lines) == 1, err
    assert lines[0].startswith("moelab: error: "), lines[0]
    assert case.needle.lower() in lines[0].lower(), lines[0]
    assert snapshot(tmp_path) == before_case, "the case's folder changed"
    assert snapshot(assets) == before_assets, "the shared assets changed"


# ---- valid counterparts: the same commands with good input succeed


GOOD = [
    ("params", lambda d, a: ["params", "--d-model", "64", "--experts", "4", "--top-k", "2", "--tokens", "1e9"]),
    ("plan", lambda d, a: ["plan", a / "study.yaml", "--no-probe"]),
    ("plan-yaml-1e-floats", lambda d, a: ["plan", _w(d / "s.yaml", "name: s\ntokens: [2e4]\ngrid: {d_model: [32], "
                                                                   "num_experts: [1], top_k: [1]}\n"), "--no-probe"]),
    ("eval-taskloss", lambda d, a: ["eval", "taskloss", "--model", a / "run", "--task", "knowledge", "--limit", "2",
                                    "--out", d / "ev", "--json"]),
    ("eval-taskloss-into-run-eval", lambda d, a: ["eval", "taskloss", "--model", copy_of("run")(d, a), "--task",
                                                  "knowledge", "--limit", "2", "--out", d / "out" / "eval"]),
    ("eval-twice-into-one-folder", lambda d, a: _twice(["eval", "taskloss", "--model", a / "run", "--task-file",
                                                        a / "task.json", "--out", d / "ev", "--json"])),
    ("generate", lambda d, a: ["generate", "--model", a / "run", "--prompt", "Q: who?", "--max-new-tokens", "4"]),
    ("query", lambda d, a: ["query", a / "sweep", SELECT, "--json"]),
    ("advise-within-the-extrapolation-limit", lambda d, a: ["advise", a / "advise", "--budget", "6e12",
                                                           "--task-family", "reasoning", "--bootstrap", "50"]),
    ("query-temp-table", lambda d, a: ["query", a / "sweep", "CREATE TEMP TABLE t AS SELECT 1 AS x; SELECT x FROM t"]),
    ("status", lambda d, a: ["status", a / "sweep"]),
    ("export-hf", lambda d, a: ["export-hf", a / "run", d / "hf"]),
    ("export-hf-again-into-own-export", lambda d, a: ["export-hf", a / "run", copy_of("hf")(d, a)]),
    ("export-hf-inside-run", lambda d, a: ["export-hf", copy_of("run")(d, a), d / "out" / "hf"]),
    ("import-hf", lambda d, a: ["import-hf", a / "hf", d / "m"]),
    ("import-hf-again-into-own-model", lambda d, a: ["import-hf", a / "hf", copy_of("run/model")(d, a)]),
    ("eval-a-grpo-output", lambda d, a: ["eval", "taskloss", "--model", _fake_grpo_output(d, a), "--task",
                                         "knowledge", "--limit", "2"]),
    ("demo-preset-named-like-a-folder", lambda d, a: (d / "demo").mkdir() or ["plan", "demo", "--no-probe"]),
    ("train-into-empty-folder", lambda d, a: (d / "out").mkdir() or ["train", a / "run.yaml", "--out", d / "out",
                                                                       "--quiet"]),
]


def _fake_grpo_output(d: Path, a: Path) -> Path:
    """A GRPO output folder as ``moelab grpo`` leaves it (its config, the final ``model/``)."""
    shutil.copytree(a / "run" / "model", d / "g" / "model")
    (d / "g" / "grpo_config.yaml").write_text(yaml.safe_dump({"model": str(a / "run"), "task": "knowledge"}))
    return d / "g"


def _twice(argv: list) -> list:
    """``argv`` after a first run of it (the second must be accepted: same kind of folder)."""
    code, _, err = run_cli(argv, Path.cwd())
    assert code == 0, err
    return argv


@pytest.mark.parametrize("name,build", GOOD, ids=[g[0] for g in GOOD])
def test_valid_counterparts_succeed(name, build, assets, tmp_path):
    argv = build(tmp_path, assets)
    before_assets = snapshot(assets)
    code, _, err = run_cli(argv, tmp_path)
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    assert snapshot(assets) == before_assets, "the shared assets changed"
