"""``moelab grpo`` / ``moelab ttc`` command lines on a tiny saved model, and their one-line errors."""

import json

import pytest
import torch
import yaml

from moelab.config import ModelConfig, RunConfig
from moelab.data.tokenizer import train_tokenizer
from moelab.data.world import build_world
from moelab.errors import UserError
from moelab.model.transformer import MoETransformer
from moelab.modelio import save_model_dir
from moelab.posttrain.cli import _standalone_parser, world_for_model

WORLD = {"num_people": 12, "reasoning_train_items": 20, "reasoning_eval_items": 4, "knowledge_eval_items": 4,
         "bio_paraphrases": 1}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A fake pretraining run directory: config.yaml with a tiny world, and model/."""
    root = tmp_path_factory.mktemp("run")
    cfg = RunConfig.model_validate({"data": {"world": WORLD}})
    (root / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    tok = train_tokenizer(build_world(cfg.data.world).documents(), vocab_size=300)
    torch.manual_seed(0)
    mcfg = ModelConfig(vocab_size=len(tok), d_model=32, n_layers=1, n_heads=2, num_experts=2, top_k=1,
                       max_seq_len=96)
    save_model_dir(MoETransformer(mcfg), mcfg, tok, root / "model")
    return root


def run(argv, capsys):
    """What ``moelab.cli.main`` does with these commands: UserError -> one line, exit code 2."""
    try:
        args = _standalone_parser().parse_args(argv)
        code = args.func(args) or 0
    except UserError as err:
        print(f"moelab: error: {err}", file=__import__("sys").stderr)
        code = 2
    out = capsys.readouterr()
    return code, out.out, out.err


def test_world_comes_from_the_models_run(run_dir):
    world = world_for_model(run_dir / "model")
    assert world is not None and world.config.num_people == WORLD["num_people"]
    assert world_for_model(run_dir.parent / "nowhere") is None


def test_ttc_command_writes_records_and_recomputes(run_dir, tmp_path, capsys):
    out = tmp_path / "ttc"
    code, stdout, err = run(["ttc", "--model", str(run_dir / "model"), "--task", "reasoning", "--samples", "3",
                             "--limit", "2", "--max-new-tokens", "6", "--out", str(out), "--json", "--quiet"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["n"] == [1, 2, 3] and summary["num_questions"] == 2
    assert (out / "samples.jsonl").is_file() and (out / "ttc.json").is_file()
    code, stdout, _ = run(["ttc", "--recompute", str(out / "samples.jsonl"), "--json"], capsys)
    assert code == 0 and json.loads(stdout)["pass_at_k"] == pytest.approx(summary["pass_at_k"])
    code, stdout, _ = run(["ttc", "--recompute", str(out / "samples.jsonl")], capsys)
    assert code == 0 and "pass@n" in stdout and "greedy accuracy" in stdout


def test_ttc_default_output_is_in_the_run(run_dir, capsys):
    code, stdout, err = run(["ttc", "--model", str(run_dir / "model"), "--task", "knowledge", "--samples", "1",
                             "--limit", "1", "--max-new-tokens", "4", "--quiet"], capsys)
    assert code == 0, err
    assert (run_dir / "eval" / "ttc-knowledge-n1" / "samples.jsonl").is_file()


def test_grpo_command_runs_and_writes_a_model(run_dir, tmp_path, capsys):
    out = tmp_path / "grpo"
    code, stdout, err = run(["grpo", "--model", str(run_dir / "model"), "--task", "reasoning", "--out", str(out),
                             "--steps", "2", "--prompts-per-step", "2", "--group-size", "2", "--max-new-tokens", "6",
                             "--eval-limit", "2", "--lr", "1e-4", "--json", "--quiet"], capsys)
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["state"] == "done" and summary["steps"] == 2
    assert (out / "model" / "moelab_model.json").is_file()
    # a GRPO output leads back to the world of the run it started from
    assert world_for_model(out / "model").config.num_people == WORLD["num_people"]


@pytest.mark.parametrize("extra,msg", [
    (["--group-size", "1"], "group_size"),
    (["--temperature", "0"], "temperature"),
    (["--task", "nope"], "unknown task"),
    (["--steps", "0"], "steps"),
])
def test_grpo_bad_options_exit_2_with_one_line(run_dir, tmp_path, capsys, extra, msg):
    out = tmp_path / "grpo"
    argv = ["grpo", "--model", str(run_dir / "model"), "--task", "reasoning", "--out", str(out), "--quiet"]
    code, _, err = run(argv + extra, capsys)
    assert code == 2
    assert err.count("\n") == 1 and msg in err
    assert not out.exists()


@pytest.mark.parametrize("extra,msg", [
    (["--samples", "0"], "--samples"),
    (["--samples", "2", "--temperature", "0"], "--temperature"),
    (["--samples", "2", "--task", "nope"], "unknown task"),
    ([], "required"),
])
def test_ttc_bad_options_exit_2_with_one_line(run_dir, capsys, extra, msg):
    argv = ["ttc", "--model", str(run_dir / "model"), "--quiet"]
    if "--task" not in extra and extra:
        argv += ["--task", "reasoning"]
    code, _, err = run(argv + extra, capsys)
    assert code == 2
    assert err.count("\n") == 1 and msg in err
