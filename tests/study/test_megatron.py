"""`moelab plan --emit megatron`: Megatron-LM launch scripts whose literal arguments are the plan's.

The scripts are read back two ways: their argument arrays parsed with shlex, and the script run
with a stand-in ``torchrun`` first on PATH that records the arguments it was handed (Megatron and
GPUs are not here; the script up to its launch line is).
"""

import json
import os
import re
import shlex
import stat
import subprocess
import sys

import pytest

from moelab.config import StudyConfig, load_study_config, validate
from moelab.errors import UserError
from moelab.study.megatron import MANIFEST, MegatronOptions, megatron_args, write_scripts
from moelab.study.plan import plan

MOELAB = [sys.executable, "-m", "moelab"]

# The seed paper's release script optimal-sparsity-math-d512-E8-k2-320M-A170M.sh, value by value.
RELEASE_D512_E8_K2 = {
    "--hidden-size": 512, "--ffn-hidden-size": 1024, "--num-layers": 16, "--num-attention-heads": 4,
    "--num-query-groups": 4, "--seq-length": 4096, "--max-position-embeddings": 4096,
    "--global-batch-size": 1024, "--micro-batch-size": 16, "--lr": 4e-4, "--min-lr": 4e-5,
    "--lr-warmup-iters": 2000, "--train-iters": 29803, "--lr-decay-iters": 29803, "--lr-decay-style": "cosine",
    "--weight-decay": 0.1, "--clip-grad": 1.0, "--adam-beta1": 0.9, "--adam-beta2": 0.95, "--adam-eps": 1e-8,
    "--init-method-std": 0.02, "--norm-epsilon": 1e-5, "--rotary-base": 10000, "--num-experts": 8,
    "--moe-router-topk": 2, "--moe-aux-loss-coeff": 1e-2, "--moe-router-load-balancing-type": "aux_loss",
    "--moe-z-loss-coeff": 1e-3, "--normalization": "RMSNorm", "--position-embedding-type": "rope",
}
ARCH_SWITCHES = ("--swiglu", "--disable-bias-linear", "--untie-embeddings-and-output-weights", "--moe-grouped-gemm",
                 "--bf16")


def flags(tokens: list[str]) -> dict[str, str | None]:
    """``--flag value`` / ``--switch`` tokens as a dict (a switch maps to None)."""
    out: dict[str, str | None] = {}
    for i, tok in enumerate(tokens):
        if tok.startswith("--"):
            nxt = tokens[i + 1] if i + 1 < len(tokens) else None
            out[tok] = None if nxt is None or nxt.startswith("--") else nxt
    return out


def literal_args(script: str) -> dict[str, str | None]:
    """The arguments of every ``NAME=( … )`` array of literals (the model and its schedule)."""
    arrays = re.findall(r"^([A-Z_]+)=\(\n(.*?)^\)$", script, flags=re.S | re.M)
    assert {name for name, _ in arrays} >= {"MODEL_ARGS", "MOE_ARGS", "TRAINING_ARGS"}
    out: dict[str, str | None] = {}
    for name, body in arrays:
        if name != "PARALLEL_ARGS":  # the one array made of placeholders
            tokens = shlex.split(body, comments=True)
            assert not any("$" in t for t in tokens), (name, tokens)  # literal values only
            out |= flags(tokens)
    return out


def value(args, flag):
    return float(args[flag])


def expect(run) -> dict:
    """What the planner says the script must hold."""
    m, t = run.config.model, run.config.train
    return {"--num-layers": m.n_layers, "--hidden-size": m.d_model, "--ffn-hidden-size": m.ffn_hidden,
            "--num-attention-heads": m.n_heads, "--num-query-groups": m.kv_heads,
            "--seq-length": run.config.data.seq_len,
            "--max-position-embeddings": m.max_seq_len, "--global-batch-size": t.batch_size,
            "--micro-batch-size": t.batch_size // t.grad_accum, "--train-iters": run.steps, "--lr": t.lr,
            "--min-lr": t.lr * t.min_lr_ratio, "--lr-warmup-iters": t.warmup_steps, "--lr-decay-iters": run.steps,
            "--weight-decay": t.weight_decay, "--clip-grad": t.grad_clip, "--adam-beta1": t.beta1,
            "--adam-beta2": t.beta2, "--adam-eps": t.adam_eps, "--init-method-std": m.init_std,
            "--norm-epsilon": m.rms_eps, "--rotary-base": m.rope_theta, "--num-experts": m.num_experts,
            "--moe-ffn-hidden-size": m.ffn_hidden, "--moe-router-topk": m.top_k, "--seed": t.seed,
            # Megatron adds the router losses per layer: a layer-mean run's coefficients are divided by L.
            "--moe-aux-loss-coeff": t.aux_loss_coef / (1 if t.router_loss_layers == "sum" else m.n_layers),
            "--moe-z-loss-coeff": t.z_loss_coef / (1 if t.router_loss_layers == "sum" else m.n_layers)}


def check_against_plan(script: str, run) -> dict:
    args = literal_args(script)
    for flag, want in expect(run).items():
        assert value(args, flag) == pytest.approx(want, rel=1e-12), (run.run_id, flag, args[flag], want)
    for switch in ARCH_SWITCHES[:2] + ARCH_SWITCHES[3:]:
        assert switch in args and args[switch] is None, switch
    assert ("--untie-embeddings-and-output-weights" in args) == (not run.config.model.tie_embeddings)
    assert ("--group-query-attention" in args) == (run.config.model.kv_heads < run.config.model.n_heads)
    # The gate: Megatron's default is the renormalised one; the probability itself needs pre-softmax.
    assert ("--moe-router-pre-softmax" in args) == (not run.config.model.renormalize_gate)
    return args


@pytest.fixture(scope="module")
def paper_scripts(tmp_path_factory):
    out = tmp_path_factory.mktemp("megatron") / "paper"
    res = subprocess.run([*MOELAB, "plan", "paper", "--emit", "megatron", "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "wrote 69 Megatron-LM launch scripts" in res.stdout
    return out


def test_paper_grid_gives_69_scripts(paper_scripts):
    runs = plan(load_study_config("paper"))
    feasible = {r.run_id for r in runs if r.feasible}
    assert len(runs) == 72 and len(feasible) == 69
    assert all(r.top_k == 16 and r.num_experts == 8 for r in runs if not r.feasible)
    scripts = sorted(paper_scripts.glob("*.sh"))
    assert {p.stem for p in scripts} == feasible
    for p in scripts:
        assert p.stat().st_mode & stat.S_IXUSR, p
        res = subprocess.run(["bash", "-n", str(p)], capture_output=True, text=True)
        assert res.returncode == 0, (p.name, res.stderr)
    manifest = json.loads((paper_scripts / MANIFEST).read_text())
    assert set(manifest["scripts"]) == feasible and len(manifest["infeasible"]) == 3


def test_d512_E8_k2_equals_the_release_script(paper_scripts):
    script = (paper_scripts / "D1.25e11-d512-E8-k2.sh").read_text()
    assert "d512-E8-k2-320M-A170M" in script.splitlines()[1]
    args = literal_args(script)
    for flag, want in RELEASE_D512_E8_K2.items():
        if isinstance(want, str):
            assert args[flag] == want, flag
        else:
            assert value(args, flag) == want, (flag, args[flag])
    for switch in ARCH_SWITCHES:
        assert switch in args and args[switch] is None, switch
    assert args["--split"] == "990,10,0" and args["--attention-dropout"] == args["--hidden-dropout"] == "0.0"


@pytest.mark.parametrize("run_id", ["D1.25e11-d512-E8-k2", "D1.25e11-d1024-E256-k2", "D1.25e11-d2048-E128-k16",
                                    "D1.25e11-d1024-E16-k16"])
def test_paper_scripts_hold_the_planners_numbers(paper_scripts, run_id):
    run = next(r for r in plan(load_study_config("paper")) if r.run_id == run_id)
    args = check_against_plan((paper_scripts / f"{run_id}.sh").read_text(), run)
    assert value(args, "--num-attention-heads") == run.d_model // 128


def test_cpu_preset_and_other_settings_hold_the_planners_numbers(tmp_path):
    runs = plan(load_study_config("paper-cpu"))
    paths = write_scripts(runs, tmp_path / "cpu", "paper-cpu")
    assert len(paths) == sum(r.feasible for r in runs) >= 2
    for path in paths:
        check_against_plan(path.read_text(), next(r for r in runs if r.run_id == path.stem))
    # grouped-query attention, tied embeddings, WSD, another seed and rope base, a micro-batch override
    study = validate(StudyConfig, {
        "name": "gqa", "budgets": [1e12], "head_dim": 16, "grid": {"d_model": [64], "num_experts": [4], "top_k": [2]},
        "base": {"model": {"n_kv_heads": 2, "tie_embeddings": True, "rope_theta": 500000.0},
                 "data": {"seq_len": 32}, "train": {"batch_size": 8, "grad_accum": 2, "schedule": "wsd",
                                                    "decay_fraction": 0.25, "seed": 3, "adam_eps": 1e-6}}}, "study")
    runs = plan(study)
    (path,) = write_scripts(runs, tmp_path / "gqa", "gqa")
    args = check_against_plan(path.read_text(), runs[0])
    assert args["--num-query-groups"] == "2" and args["--lr-decay-style"] == "WSD"
    assert value(args, "--lr-wsd-decay-iters") == -(-runs[0].steps // 4)
    groups = megatron_args(runs[0], micro_batch=2)
    assert dict(groups["TRAINING_ARGS"])["--micro-batch-size"] == "2"
    with pytest.raises(UserError, match="--micro-batch-size 3: must divide"):
        megatron_args(runs[0], micro_batch=3)


def test_top1_scripts_carry_the_pre_softmax_gate_and_layer_mean_coefficients_are_per_layer(tmp_path):
    runs = [r for r in plan(load_study_config("paper-cpu")) if r.feasible]
    top1 = [r for r in runs if r.config.model.top_k == 1]
    assert top1 and any(r.config.model.top_k >= 2 for r in runs)
    for r in runs:  # Megatron-LM refuses top-1 without --moe-router-pre-softmax
        moe = dict(megatron_args(r)["MOE_ARGS"])
        assert ("--moe-router-pre-softmax" in moe) == (r.config.model.top_k == 1), r.run_id
    study = validate(StudyConfig, {
        "name": "old-recipe", "budgets": [1e12], "head_dim": 16, "grid": {"d_model": [64], "num_experts": [4], "top_k": [2]},
        "base": {"model": {"n_layers": 4}, "data": {"seq_len": 32},
                 "train": {"router_loss_layers": "mean", "aux_loss_coef": 0.02, "z_loss_coef": 0.004}}}, "study")
    (run,) = plan(study)
    moe = dict(megatron_args(run)["MOE_ARGS"])
    assert (moe["--moe-aux-loss-coeff"], moe["--moe-z-loss-coeff"]) == ("0.005", "0.001")
    unscaled = validate(StudyConfig, {**study.model_dump(mode="json"), "base": {
        **study.base.model_dump(mode="json"), "model": {**study.base.model.model_dump(mode="json"), "depth_scaled_init": False}}},
        "study")
    with pytest.raises(UserError, match="depth_scaled_init is false"):
        megatron_args(plan(unscaled)[0])


def stub_torchrun(tmp_path):
    """A ``torchrun`` that writes the arguments it was given, one per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "torchrun"
    stub.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "$ARGS_OUT"\n')
    stub.chmod(0o755)
    return bin_dir


def test_script_launches_pretrain_gpt_with_its_literals_and_placeholders(paper_scripts, tmp_path):
    script = paper_scripts / "D1.25e11-d512-E8-k2.sh"
    env = {**os.environ, "PATH": f"{stub_torchrun(tmp_path)}:{os.environ['PATH']}", "ARGS_OUT": str(tmp_path / "a"),
           "DATA_PATH": "0.3 /data/a_text_document 0.7 /data/b_text_document", "TOKENIZER_MODEL": "/tok dir",
           "MEGATRON_LM": "/opt/Megatron-LM", "NNODES": "4", "TP": "2", "EP": "8"}
    res = subprocess.run(["bash", str(script), "--wandb-project", "x"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    argv = (tmp_path / "a").read_text().splitlines()
    assert argv[:2] == ["--nnodes", "4"] and "/opt/Megatron-LM/pretrain_gpt.py" in argv
    args = argv[argv.index("/opt/Megatron-LM/pretrain_gpt.py") + 1:]
    i = args.index("--data-path")
    assert args[i + 1:i + 5] == ["0.3", "/data/a_text_document", "0.7", "/data/b_text_document"]
    got = flags(args)
    assert got["--tokenizer-model"] == "/tok dir" and got["--tokenizer-type"] == "HuggingFaceTokenizer"
    assert got["--tensor-model-parallel-size"] == "2" and got["--expert-model-parallel-size"] == "8"
    assert "--sequence-parallel" in got and got["--wandb-project"] == "x"
    assert got["--save"] == got["--load"] == "checkpoints/D1.25e11-d512-E8-k2"
    for flag, want in RELEASE_D512_E8_K2.items():
        assert (got[flag] == want) if isinstance(want, str) else (float(got[flag]) == want), flag

    del env["DATA_PATH"]  # the data placeholder must be set: one clear line, no launch
    (tmp_path / "a").unlink()
    res = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert res.returncode != 0 and "set DATA_PATH" in res.stderr and not (tmp_path / "a").exists()


def test_options_set_the_placeholders_defaults(tmp_path):
    runs = plan(load_study_config("paper"))
    opts = MegatronOptions(data_path="1.0 /my data/x_text_document", tokenizer_model="/t/llm-jp",
                           megatron_lm="/opt/M LM", micro_batch_size=4)
    paths = write_scripts(runs, tmp_path / "s", "paper", opts)
    text = paths[0].read_text()
    assert literal_args(text)["--micro-batch-size"] == "4"
    out = tmp_path / "a"
    env = {**os.environ, "PATH": f"{stub_torchrun(tmp_path)}:{os.environ['PATH']}", "ARGS_OUT": str(out)}
    for var in ("DATA_PATH", "TOKENIZER_MODEL", "MEGATRON_LM"):
        env.pop(var, None)
    res = subprocess.run(["bash", str(paths[0])], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    args = out.read_text().splitlines()
    assert "/opt/M LM/pretrain_gpt.py" in args and flags(args)["--tokenizer-model"] == "/t/llm-jp"
    i = args.index("--data-path")
    assert args[i + 1:i + 4] == ["1.0", "/my", "data/x_text_document"]  # words split on spaces, as Megatron's


def test_out_folder_of_another_kind_is_refused_before_writing(tmp_path):
    runs = plan(load_study_config("paper-cpu"))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds other files"):
        write_scripts(runs, other, "paper-cpu")
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    res = subprocess.run([*MOELAB, "plan", "paper-cpu", "--emit", "megatron", "--out", str(other)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "holds other files" in res.stderr
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    res = subprocess.run([*MOELAB, "plan", "paper-cpu", "--out", str(tmp_path / "x")], capture_output=True, text=True)
    assert res.returncode == 2 and "--emit and --out go together" in res.stderr and not (tmp_path / "x").exists()


def test_own_folder_is_written_again_and_stale_scripts_go(tmp_path):
    out = tmp_path / "s"
    out.mkdir()  # empty: fine
    runs = plan(load_study_config("paper-cpu"))
    first = write_scripts(runs, out, "paper-cpu")
    fewer = [r for r in runs if r.run_id != first[0].stem]
    second = write_scripts(fewer, out, "paper-cpu")  # its own kind: written again
    assert sorted(p.name for p in out.glob("*.sh")) == sorted(p.name for p in second)
    assert not first[0].exists() and len(second) == len(first) - 1
    assert not list(out.glob(".*"))  # no temp files left behind


def test_no_feasible_run_is_one_line_error_and_no_folder(tmp_path):
    study = validate(StudyConfig, {"name": "none", "budgets": [1e12], "grid": {"d_model": [64], "num_experts": [2],
                                                                             "top_k": [4]}}, "study")
    with pytest.raises(UserError, match="no feasible run .*top_k=4 exceeds num_experts=2"):
        write_scripts(plan(study), tmp_path / "s", "none")
    assert not (tmp_path / "s").exists()


def test_tensor_parallel_pads_the_header_counts_and_must_divide_the_heads(tmp_path):
    from moelab import accounting

    assert [accounting.padded_vocab_size(99_584, tp) for tp in (1, 2, 4, 8)] == [99_584, 99_584, 99_840, 100_352]
    run = next(r for r in plan(load_study_config("paper")) if r.run_id == "D1.25e11-d512-E8-k2")
    from moelab.study.megatron import render_script

    for tp, vocab in ((4, 99_840), (8, 100_352)):
        if run.config.model.n_heads % tp:
            with pytest.raises(UserError, match=f"tensor-parallel size {tp} does not divide the 4 attention heads"):
                render_script(run, "paper", MegatronOptions(tensor_parallel=tp))
            continue
        head = render_script(run, "paper", MegatronOptions(tensor_parallel=tp)).splitlines()[2]
        padded = run.config.model.model_copy(update={"vocab_size": vocab})
        assert f"# {accounting.total_params(padded):,} parameters, {accounting.active_params(padded):,} active" in head
    res = subprocess.run([*MOELAB, "plan", "paper", "--emit", "megatron", "--out", str(tmp_path / "tp8"),
                          "--tensor-parallel", "8"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "d512" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "tp8").exists()
    d1024 = next(r for r in plan(load_study_config("paper")) if r.run_id == "D1.25e11-d1024-E8-k2")
    head = render_script(d1024, "paper", MegatronOptions(tensor_parallel=8)).splitlines()[2]
    big = d1024.config.model.model_copy(update={"vocab_size": 100_352})
    assert f"# {accounting.total_params(big):,} parameters" in head and 'TP="${TP:-8}"' in \
        render_script(d1024, "paper", MegatronOptions(tensor_parallel=8))
