"""`moelab eval list|taskloss|accuracy|all` as real subprocesses, on a tiny model directory.

Every command of this file is started once, a few at a time, by the module fixture (the machine is
shared and each process pays the torch import); the tests then check what each one printed and
wrote: the same numbers as the library computes in-process, JSON outputs under ``--out``, and for
bad task files exit code 2 with one line on stderr naming the file (and the item), nothing written.
A Hugging Face Mixtral directory (``transformers``' own ``save_pretrained``) is scored too, against
the task loss computed directly with ``transformers``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from eval_helpers import shared_file

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
       "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
SMALL_WORLD = dict(num_people=20, reasoning_train_items=40, reasoning_eval_items=10, knowledge_eval_items=10,
                   bio_paraphrases=2)  # conftest's small_world


def _moelab(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moelab", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=300)


def _hf_mixtral_dir(tokenizer, path: Path) -> Path:
    """A tiny random Mixtral written by transformers itself, with the tokenizer beside it."""
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    config = MixtralConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                           num_experts_per_tok=2, max_position_embeddings=128, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                           tie_word_embeddings=False, initializer_range=0.1)
    MixtralForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def env(small_world, tokenizer, model, tmp_path_factory):
    from moelab.config import DataConfig, RunConfig, WorldConfig, dump_yaml
    from moelab.modelio import save_model_dir

    root = tmp_path_factory.mktemp("eval-cli")
    # A run directory: its config.yaml tells `moelab eval` which world the model belongs to.
    (root / "run").mkdir()
    (root / "run" / "config.yaml").write_text(dump_yaml(RunConfig(model=model.cfg, data=DataConfig(
        world=WorldConfig(**SMALL_WORLD), vocab_size=len(tokenizer)))))
    model_dir = save_model_dir(model, model.cfg, tokenizer, root / "run" / "model")
    tasks = small_world.tasks()
    items = tasks["knowledge"].splits["heldout"][:3] + tasks["reasoning"].splits["heldout"][:3]
    small = root / "small.jsonl"
    small.write_text("".join(json.dumps({"prompt": it.prompt, "answer": it.answer}) + "\n" for it in items))
    bad = {
        "missing": (root / "missing.json", json.dumps([{"prompt": "Q: a?", "answer": " b"}, {"prompt": "Q: c?"}])),
        "empty": (root / "empty.json", "[]"),
        "invalid": (root / "invalid.json", '[{"prompt": "Q: a?", "answer": " b"},\n {"prompt": "Q"'),
    }
    for path, text in bad.values():
        path.write_text(text)
    hf_dir = _hf_mixtral_dir(tokenizer, root / "hf-mixtral")
    from eval_helpers import tiny_model

    short = tiny_model(len(tokenizer), max_seq_len=64)  # the default 48 new tokens would leave 16 of prompt
    short_dir = save_model_dir(short, short.cfg, tokenizer, root / "short")
    gsm8k = shared_file("gsm8k_4shot.json")
    out = root / "out"
    commands = {
        "list": ["eval", "list"],
        "taskloss": ["eval", "taskloss", "--model", model_dir, "--task", "knowledge", "--limit", 3, "--json",
                     "--out", out / "taskloss"],
        "taskloss_gsm8k": ["eval", "taskloss", "--model", model_dir, "--task-file", gsm8k, "--limit", 3, "--json",
                           "--out", out / "taskloss-gsm8k"],
        "accuracy_gsm8k": ["eval", "accuracy", "--model", model_dir, "--task-file", gsm8k, "--limit", 3,
                           "--max-new-tokens", 8, "--json", "--out", out / "accuracy-gsm8k"],
        "all": ["eval", "all", "--model", model_dir, "--task", "knowledge", "--task-file", gsm8k, "--limit", 2,
                "--max-new-tokens", 4, "--json", "--out", out / "all"],
        "hf": ["eval", "taskloss", "--model", hf_dir, "--task-file", small, "--json", "--out", out / "hf"],
        "capped": ["eval", "accuracy", "--model", short_dir, "--task-file", small, "--limit", 2, "--json"],
        "bad_missing": ["eval", "taskloss", "--model", model_dir, "--task-file", bad["missing"][0], "--out", out / "x1"],
        "bad_empty": ["eval", "taskloss", "--model", model_dir, "--task-file", bad["empty"][0], "--out", out / "x2"],
        "bad_invalid": ["eval", "accuracy", "--model", model_dir, "--task-file", bad["invalid"][0], "--out", out / "x3"],
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(_moelab, *argv) for name, argv in commands.items()}
        results = {name: f.result() for name, f in futures.items()}
    return {"root": root, "out": out, "model_dir": model_dir, "hf_dir": hf_dir, "small": small, "gsm8k": gsm8k,
            "bad": {k: v[0] for k, v in bad.items()}, "results": results}


def _ok(env, name) -> dict | list:
    proc = env["results"][name]
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout) if proc.stdout.lstrip().startswith(("{", "[")) else proc.stdout


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_list(env):
    names = _ok(env, "list").splitlines()
    assert {"knowledge", "reasoning", "reasoning/addition"} <= set(names)
    assert names[-1].startswith("file:")


def test_taskloss_builtin_task_uses_the_runs_world(env, small_world, tokenizer, model):
    from moelab.eval.taskloss import task_loss

    summary = _ok(env, "taskloss")
    expected = task_loss(model, tokenizer, small_world.tasks()["knowledge"].splits["heldout"][:3])
    assert summary["task"] == "knowledge" and summary["split"] == "heldout" and summary["num_items"] == 3
    assert summary["bits_per_token"] == pytest.approx(expected.bits_per_token, rel=1e-5)
    assert json.loads((env["out"] / "taskloss" / "taskloss.json").read_text()) == summary
    rows = _jsonl(env["out"] / "taskloss" / "taskloss.jsonl")
    assert [r["nll"] for r in rows] == pytest.approx(expected.nll, rel=1e-5)
    items = small_world.tasks()["knowledge"].splits["heldout"][:3]
    assert [(r["index"], r["prompt"]) for r in rows] == [(k, it.prompt) for k, it in enumerate(items)]


def test_accuracy_caps_new_tokens_with_a_one_line_warning(env):
    """48 new tokens on a 64-token model would leave long prompts 16 tokens: they keep up to 32 and generate
    fewer new tokens, said in one line on stderr."""
    summary = _ok(env, "capped")
    assert summary["num_items"] == 2 and summary["num_truncated"] == 0
    lines = [x for x in env["results"]["capped"].stderr.splitlines() if "max_new_tokens" in x]
    assert len(lines) == 1, env["results"]["capped"].stderr
    assert lines[0].startswith("moelab: warning: max_new_tokens=48 would leave a 64-token model 16 tokens of prompt: ")
    assert "prompts keep up to 32 (half the context)" in lines[0]


def test_taskloss_on_gsm8k_4shot(env, tokenizer, model):
    from moelab.eval.taskfile import load_task_file
    from moelab.eval.taskloss import task_loss

    summary = _ok(env, "taskloss_gsm8k")
    expected = task_loss(model, tokenizer, load_task_file(env["gsm8k"])[:3])
    assert summary["num_items"] == 3 and summary["num_truncated"] == expected.num_truncated == 3  # 4-shot > 128
    rows = _jsonl(env["out"] / "taskloss-gsm8k" / "taskloss.jsonl")
    assert [r["nll"] for r in rows] == pytest.approx(expected.nll, rel=1e-5)
    assert [r["num_tokens"] for r in rows] == expected.num_tokens


def test_accuracy_on_gsm8k_4shot(env, tokenizer, model):
    from moelab.eval.accuracy import accuracy
    from moelab.eval.tasks import get_task

    summary = _ok(env, "accuracy_gsm8k")
    expected = accuracy(model, tokenizer, get_task(f"file:{env['gsm8k']}"), limit=3, max_new_tokens=8)
    assert summary["num_items"] == 3 and summary["accuracy"] == expected.accuracy
    out = env["out"] / "accuracy-gsm8k"
    assert json.loads((out / "accuracy.json").read_text()) == summary
    rows = _jsonl(out / "accuracy.jsonl")
    assert [r["completion"] for r in rows] == [r["completion"] for r in expected.records]
    assert [r["gold"] for r in rows] == ["18", "3", "70000"]  # the first three GSM8K test answers


def test_all_records_the_levels_and_gaps(env):
    summary = _ok(env, "all")
    for key in ("task_loss/knowledge/train", "task_loss/knowledge/heldout", "task_loss_gap/knowledge",
                "accuracy/knowledge/heldout", "accuracy_gap/knowledge", "task_loss/file:gsm8k_4shot/heldout",
                "accuracy/file:gsm8k_4shot/heldout", "num_items/file:gsm8k_4shot/heldout"):
        assert key in summary, key
    assert summary["num_items/knowledge/train"] == 2
    assert summary["task_loss_gap/knowledge"] == pytest.approx(
        summary["task_loss/knowledge/heldout"] - summary["task_loss/knowledge/train"])
    out = env["out"] / "all"
    assert json.loads((out / "summary.json").read_text()) == summary
    records = sorted(p.name for p in (out / "records").iterdir())
    assert records == ["file_gsm8k_4shot--heldout.jsonl", "knowledge--heldout.jsonl", "knowledge--train.jsonl"]


@pytest.mark.parametrize("case, needle", [
    ("bad_missing", "item 1: missing field 'answer'"),
    ("bad_empty", "no items"),
    ("bad_invalid", "invalid JSON at line 2"),
])
def test_bad_task_files_stop_with_one_line(env, case, needle):
    proc = env["results"][case]
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    name = {"bad_missing": "missing", "bad_empty": "empty", "bad_invalid": "invalid"}[case]
    assert lines[0].startswith("moelab: error: ") and str(env["bad"][name]) in lines[0] and needle in lines[0]
    assert proc.stdout == ""
    assert not any(env["out"].glob("x*"))  # nothing written


def test_taskloss_of_a_hugging_face_mixtral_directory_equals_transformers(env, tokenizer):
    from transformers import MixtralForCausalLM

    from moelab.eval.taskfile import load_task_file

    summary = _ok(env, "hf")
    rows = _jsonl(env["out"] / "hf" / "taskloss.jsonl")
    items = load_task_file(env["small"])
    assert summary["num_items"] == len(items) == len(rows)
    hf = MixtralForCausalLM.from_pretrained(env["hf_dir"], dtype=torch.float32).eval()
    for it, row in zip(items, rows):
        prompt = [tokenizer.bos_token_id, *tokenizer.encode(it.prompt, add_special_tokens=False)]
        answer = tokenizer.encode(it.answer, add_special_tokens=False)
        ids = torch.tensor([prompt + answer])
        with torch.no_grad():
            logp = torch.log_softmax(hf(ids).logits[0, :-1].double(), dim=-1)
        targets = ids[0, 1:]
        nll = -logp[torch.arange(len(prompt) - 1, ids.shape[1] - 1), targets[len(prompt) - 1:]].sum().item()
        assert row["num_tokens"] == len(answer)
        assert abs(row["nll"] - nll) / nll <= 1e-4


def _bits(capsys, argv) -> float:
    from moelab.cli import main

    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)["bits_per_token"]


def test_bf16_autocast_and_device_choice(env, capsys):
    """In-process: --bf16 on CPU runs under autocast and stays close to fp32; an absent CUDA is a user error."""
    from moelab.cli import main

    base = ["eval", "taskloss", "--model", str(env["model_dir"]), "--task-file", str(env["small"]), "--json"]
    fp32 = _bits(capsys, [*base, "--device", "cpu"])
    bf16 = _bits(capsys, [*base, "--device", "cpu", "--bf16"])
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=2e-2)
    assert _bits(capsys, [*base, "--device", "cpu", "--no-bf16"]) == fp32
    if not torch.cuda.is_available():
        assert main([*base, "--device", "cuda"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no CUDA device" in err[0]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_defaults_to_bf16_autocast(env, capsys):
    from moelab.cli import main

    base = ["eval", "taskloss", "--model", str(env["model_dir"]), "--task-file", str(env["small"]), "--json"]
    fp32 = _bits(capsys, [*base, "--device", "cpu"])
    cuda_bf16 = _bits(capsys, [*base, "--device", "auto"])  # CUDA, bf16 by default
    assert cuda_bf16 == pytest.approx(fp32, rel=2e-2)
    assert _bits(capsys, [*base, "--device", "cuda", "--no-bf16"]) == pytest.approx(fp32, rel=1e-4)
    argv = ["eval", "accuracy", "--model", str(env["model_dir"]), "--task-file", str(env["small"]),
            "--max-new-tokens", "8", "--json", "--device", "cuda"]
    assert main(argv) == 0 and json.loads(capsys.readouterr().out)["num_items"] == 6
