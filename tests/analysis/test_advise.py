"""The advisor: recommendations from the fits, out-of-range budgets flagged, unknown families refused."""

from __future__ import annotations

import pytest
from analysis_synth import REASONING_OPT_LOG_TPP, write_csv_study, write_sweep_dir

from moelab.analysis.advise import advise, format_advice, parse_budget
from moelab.errors import UserError


@pytest.fixture
def study(tmp_path, synthetic_rows):
    return write_csv_study(tmp_path / "s", synthetic_rows)


def test_unknown_task_family_is_a_one_line_user_error(study):
    with pytest.raises(UserError) as err:
        advise(study, 2e12, "poetry", n_boot=100)
    msg = str(err.value)
    assert "'poetry'" in msg and "knowledge" in msg and "reasoning" in msg and "\n" not in msg


def test_in_range_budget_recommends_near_the_known_optimum(study):
    a = advise(study, 1e12, "reasoning", n_boot=300)
    assert a["in_range"] and a["metric"] == "accuracy" and not a["note"]
    lo, hi = a["tpp_interval"]
    assert lo <= 10 ** REASONING_OPT_LOG_TPP <= hi
    rec = a["recommendation"]
    assert rec["d_model"] == 64 and rec["top_k"] == 2  # the better active size in the synthetic data
    assert rec["num_experts"] in (4, 8) and lo * 0.7 <= rec["tpp"] <= hi * 1.3
    text = format_advice(a)
    assert "inside the measured range" in text and "bootstrap interval" in text


def test_out_of_range_budget_is_flagged(study):
    a = advise(study, 1e15, "reasoning", n_boot=100)
    assert not a["in_range"] and "outside the measured range" in a["note"]
    assert "OUTSIDE" in format_advice(a)
    assert not advise(study, 1e9, "knowledge", n_boot=100)["in_range"]


def test_parse_budget():
    assert parse_budget("2e13") == 2e13 and parse_budget("20T") == 2e13 and parse_budget("1.5P") == 1.5e15
    for bad in ("lots", "-1", "0", "nan"):
        with pytest.raises(UserError):
            parse_budget(bad)


def test_cli_exit_code_2_for_an_unknown_family(study, capsys):
    from moelab.analysis.cli import add_analysis_commands
    from moelab.cli import _Parser

    parser = _Parser(prog="moelab")
    add_analysis_commands(parser.add_subparsers(dest="command", required=True, parser_class=_Parser))
    args = parser.parse_args(["advise", str(study), "--budget", "1e12", "--task-family", "knowledge",
                              "--bootstrap", "100"])
    assert args.func(args) == 0
    assert "recommendation: d_model=64" in capsys.readouterr().out
    args = parser.parse_args(["advise", str(study), "--budget", "1e12", "--task-family", "poetry"])
    with pytest.raises(UserError):
        args.func(args)


def test_moelab_main_advise_unknown_family(study, capsys):
    from moelab import cli

    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    if "advise" not in sub.choices:
        pytest.skip("moelab advise is not wired into moelab.cli yet")
    assert cli.main(["advise", str(study), "--budget", "1e12", "--task-family", "poetry"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "poetry" in err


def test_advise_reads_a_sweep_directory_without_writing(tmp_path, synthetic_rows):
    sweep = write_sweep_dir(tmp_path / "sweep", synthetic_rows)
    before = sorted(p.relative_to(sweep) for p in sweep.rglob("*"))
    from_files = advise(sweep, 1e12, "reasoning", n_boot=200)
    assert sorted(p.relative_to(sweep) for p in sweep.rglob("*")) == before  # no store written
    from_csv = advise(write_csv_study(tmp_path / "csv", synthetic_rows), 1e12, "reasoning", n_boot=200)
    assert from_files["optimal_tpp"] == pytest.approx(from_csv["optimal_tpp"])
    assert from_files["recommendation"]["num_experts"] == from_csv["recommendation"]["num_experts"]


def test_a_family_with_several_top_k_recommends_its_best_models_k(tmp_path, synthetic_rows):
    """per_k studies: every k of a d_model has the same active parameters, so one active-size
    family holds several k; the advice uses the k of the family's best model."""
    from moelab.analysis.data import load_study_rows

    rows = [dict(r) for r in synthetic_rows]
    k1_active = {(r["budget"], r["d_model"]): r["active_params"] for r in rows
                 if r.get("status") == "done" and r["top_k"] == 1}
    for r in rows:
        if r.get("status") == "done" and r["top_k"] == 2:
            r["active_params"] = k1_active[(r["budget"], r["d_model"])] * 1.02
    study = write_csv_study(tmp_path / "perk", rows)
    loaded, _ = load_study_rows(study, write_store=False)
    assert len({r["active_size"] for r in loaded if r.get("status") == "done" and r["budget"] == 1e12}) == 1
    a = advise(study, 1e12, "reasoning", n_boot=100)
    rec = a["recommendation"]
    assert rec is not None and rec["top_k"] in (1, 2) and rec["num_experts"] >= rec["top_k"]
    best_k = next(r["top_k"] for r in loaded if r["run_id"] == a["nearest_budget"]["best_run_id"])
    assert rec["top_k"] == best_k
