"""``precision: auto``: the rule, its cache, what the trainer logs, and that a resume keeps it."""

import json

import pytest

from moelab.config import ModelConfig
from moelab.study import probe
from moelab.train import precision as P
from moelab.train.metrics import read_jsonl
from moelab.train.trainer import train

SMALL = ModelConfig(d_model=32, n_layers=1, n_heads=2, num_experts=4, top_k=2, vocab_size=128, max_seq_len=16)


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fast_bf16_cpu(monkeypatch):
    """The kernel check of a CPU with native bf16 (Zen 4 and Zen 5 measured ×2–2.5), so that the
    rule goes on to time the steps, whatever CPU runs the suite (Zen 3 measured ×0.02–0.05)."""
    monkeypatch.setattr(P, "bf16_matmul_speedup", lambda: 2.0)


def test_fixed_rule(monkeypatch):
    monkeypatch.setenv(P.ENV, "fp32")
    choice = P.resolve_precision("auto", "cpu", SMALL, batch=4, seq=16)
    assert choice.precision == "fp32" and P.ENV in choice.rule and choice.bf16_speedup is None
    assert P.resolve_precision("auto", "cuda", SMALL, batch=4, seq=16).precision == "bf16"
    assert P.resolve_precision("bf16", "cpu").precision == "bf16"
    assert P.resolve_precision("fp32", "cuda").precision == "fp32"
    assert probe.resolve_precision("auto", "cpu") == "fp32" and probe.resolve_precision("auto", "cuda:0") == "bf16"


def test_a_misspelt_rule_is_one_line_error(monkeypatch):
    from moelab.errors import UserError

    monkeypatch.setenv(P.ENV, "meassure")
    with pytest.raises(UserError, match="MOELAB_AUTO_PRECISION='meassure': use 'measure'"):
        P.resolve_precision("auto", "cpu", SMALL, batch=4, seq=16)


@pytest.mark.parametrize("value", ["", "measure"])
@pytest.mark.parametrize("speedup,expected", [(1.5, "bf16"), (1.05, "fp32"), (0.7, "fp32")])
def test_measured_rule_picks_the_faster_precision_and_caches_it(monkeypatch, cache_home, fast_bf16_cpu, speedup,
                                                               expected, value):
    monkeypatch.setenv(P.ENV, value)  # unset or empty: the default, measured
    calls = []
    monkeypatch.setattr(P, "measure_bf16_speedup", lambda cfg, batch, seq: calls.append((batch, seq)) or speedup)
    if not value:
        monkeypatch.delenv(P.ENV)
    choice = P.resolve_precision("auto", "cpu", SMALL, batch=4, seq=16)
    assert choice.precision == expected and choice.bf16_speedup == speedup and "measured" in choice.rule
    assert P.resolve_precision("auto", "cpu", SMALL, batch=4, seq=16) == choice and len(calls) == 1  # cached
    P.resolve_precision("auto", "cpu", SMALL, batch=8, seq=16)  # another size: measured
    assert len(calls) == 2
    cache = json.loads(P.cache_file().read_text())
    sizes = [k for k in cache if not k.endswith("|matmul")]
    assert len(cache) == 3 and all("family" in k and "torch" in k and ("B8 T16" in k or "B4 T16" in k) for k in sizes)
    assert len(sizes) == 2 and cache[P.matmul_cache_key()]["bf16_speedup"] == 2.0  # the kernel check, once
    assert P.resolve_precision("fp32", "cpu", SMALL, batch=4, seq=16).precision == "fp32"  # explicit wins


def test_measurement_runs_the_real_step(cache_home):
    assert P.measure_bf16_speedup(SMALL, 4, 16, repeats=2, warmup=1) > 0


def test_a_cpu_without_fast_bf16_kernels_is_fp32_without_timing_a_step(monkeypatch, cache_home):
    monkeypatch.delenv(P.ENV)
    monkeypatch.setattr(P, "bf16_matmul_speedup", lambda: 0.03)  # as measured on a Zen 3 EPYC
    monkeypatch.setattr(P, "measure_bf16_speedup", lambda *a: pytest.fail("the step must not be timed"))
    choice = P.resolve_precision("auto", "cpu", SMALL, batch=4, seq=16)
    assert choice.precision == "fp32" and choice.bf16_speedup is None
    assert "bf16 matmul measured x0.03" in choice.rule and "not timed" in choice.rule


def test_the_kernel_check_measures_for_real():
    assert P.bf16_matmul_speedup(rows=64, width=64, seconds=0.01) > 0


def test_trainer_logs_the_choice_and_a_resume_keeps_it(monkeypatch, cache_home, fast_bf16_cpu, tmp_path, tiny_cfg):
    monkeypatch.setenv(P.ENV, "measure")
    monkeypatch.setattr(P, "measure_bf16_speedup", lambda cfg, batch, seq: 2.0)
    cfg = tiny_cfg(train={"precision": "auto", "steps": 8, "checkpoint_every": 4})
    run = tmp_path / "run"
    assert train(cfg, run, progress=False, max_steps_this_call=4)["step"] == 4
    P.cache_file().unlink()  # the machine now measures fp32 as faster: the run must not switch
    monkeypatch.setattr(P, "measure_bf16_speedup", lambda cfg, batch, seq: 0.5)
    summary = train(cfg, run, progress=False)
    assert summary["precision"] == "bf16" and "checkpoint" in summary["precision_rule"]
    assert summary["bf16_speedup"] == 2.0 and "measured" in summary["precision_rule"]
    assert {r["precision"] for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "train"} == {"bf16"}
    # bit-identical to an uninterrupted explicit-bf16 run
    ref = tmp_path / "ref"
    train(tiny_cfg(train={"precision": "bf16", "steps": 8, "checkpoint_every": 4}), ref, progress=False)
    losses = lambda d: [r["loss"] for r in read_jsonl(d / "metrics.jsonl") if r["kind"] == "train"]  # noqa: E731
    assert losses(run) == losses(ref)


def test_fp32_runs_say_so(tmp_path, tiny_cfg, monkeypatch):
    monkeypatch.setenv(P.ENV, "fp32")
    summary = train(tiny_cfg(train={"precision": "auto", "steps": 2}), tmp_path / "r", progress=False)
    assert summary["precision"] == "fp32" and "auto" in summary["precision_rule"]


def test_the_default_measures_for_real(tmp_path, tiny_cfg, monkeypatch, cache_home):
    """No stand-in: the default rule checks this CPU's bf16 kernels and, where they are fast,
    times both real steps; it trains in the faster precision and says which path decided."""
    monkeypatch.delenv(P.ENV)
    summary = train(tiny_cfg(train={"precision": "auto", "steps": 2}), tmp_path / "r", progress=False)
    cache = json.loads(P.cache_file().read_text())
    matmul = cache.pop(P.matmul_cache_key())["bf16_speedup"]
    if matmul < P.MIN_MATMUL_GAIN:  # e.g. Zen 3: no step timed
        assert summary["precision"] == "fp32" and summary["bf16_speedup"] is None and not cache
        assert f"bf16 matmul measured x{matmul:.2f}" in summary["precision_rule"]
    else:  # e.g. Zen 4, Zen 5: both steps timed
        speedup = summary["bf16_speedup"]
        assert speedup > 0 and summary["precision"] == ("bf16" if speedup >= P.MIN_GAIN else "fp32")
        assert "measured" in summary["precision_rule"] and "matmul" not in summary["precision_rule"]
        (entry,) = cache.values()
        assert entry["bf16_speedup"] == pytest.approx(speedup, abs=1e-3)


def test_planner_estimates_each_run_at_the_precision_the_trainer_will_pick(monkeypatch, cache_home, fast_bf16_cpu):
    from moelab.config import StudyConfig, validate
    from moelab.study.plan import plan

    study = validate(StudyConfig, {
        "name": "p", "budgets": [1e12], "head_dim": 16,
        "grid": {"d_model": [64], "num_experts": [1, 4], "top_k": [1]},
        "base": {"data": {"seq_len": 32}, "train": {"batch_size": 4, "device": "cpu", "precision": "auto"}},
    }, "study")
    monkeypatch.setenv(P.ENV, "measure")
    monkeypatch.setattr(probe, "measure_flops_per_second", lambda device, seconds, *, precision:
                        {"fp32": 1e9, "bf16": 2e9}[precision])
    # bf16 measured faster for the dense model only
    monkeypatch.setattr(P, "measure_bf16_speedup", lambda cfg, batch, seq: 1.5 if cfg.num_experts == 1 else 0.9)
    runs = [r for r in plan(study) if r.feasible]
    probe.estimate_plan(study, runs)
    for r in runs:
        rate = 2e9 if r.num_experts == 1 else 1e9
        assert r.est_seconds == pytest.approx(r.train_flops / rate)


def test_plan_says_which_precision_each_run_is_estimated_at(monkeypatch, cache_home, fast_bf16_cpu, tmp_path, capsys):
    import yaml

    from moelab import cli

    study = {"name": "p", "budgets": [1e12], "head_dim": 16,
             "grid": {"d_model": [64], "num_experts": [1, 4], "top_k": [1]},
             "base": {"data": {"seq_len": 32}, "train": {"batch_size": 4, "device": "cpu", "precision": "auto"}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(study))
    monkeypatch.setattr(probe, "measure_flops_per_second", lambda device, seconds, *, precision: 1e9)
    monkeypatch.setattr(P, "measure_bf16_speedup", lambda cfg, batch, seq: 1.5 if cfg.num_experts == 1 else 0.9)
    monkeypatch.delenv(P.ENV)
    assert cli.main(["plan", str(path)]) == 0
    err = capsys.readouterr().err
    assert "each run's precision" in err and "1 in bf16, 1 in fp32" in err
    monkeypatch.setenv(P.ENV, "fp32")
    assert cli.main(["plan", str(path)]) == 0
    assert "1 GFLOP/s (cpu, fp32)" in capsys.readouterr().err
