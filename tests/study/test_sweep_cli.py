"""`moelab sweep | query | status` and `plan --no-probe` through the argument parser (no training)."""

import json

import pytest

from moelab.atomic import atomic_write_json, atomic_write_text
from moelab.cli import build_parser
from moelab.config import StudyConfig, dump_yaml, validate
from moelab.errors import UserError
from moelab.study import store
from moelab.study.cli import add_study_commands, extend_plan_command
from moelab.study.plan import plan


def _parser():
    """moelab's parser, with the study commands added if cli.py does not wire them yet."""
    p = build_parser()
    sub = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction")
    if "sweep" not in sub.choices:
        add_study_commands(sub)
    if not any("--no-probe" in a.option_strings for a in sub.choices["plan"]._actions):
        extend_plan_command(sub.choices["plan"])
    return p


def run(argv, capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        args = _parser().parse_args(argv)
        code = args.func(args) or 0
    except UserError as err:
        code, msg = 2, str(err)
        out = capsys.readouterr()
        return code, out.out, msg
    out = capsys.readouterr()
    return code, out.out, out.err


def _study() -> StudyConfig:
    return validate(StudyConfig, {
        "name": "cli", "budgets": [6e8], "head_dim": 16,
        "grid": {"d_model": [32], "num_experts": [1, 4], "top_k": [1, 2]},
        "base": {"model": {"n_layers": 2}, "data": {"seq_len": 32, "vocab_size": 512},
                 "train": {"batch_size": 4, "device": "cpu"}},
    }, "study")


@pytest.fixture
def sweep_dir(tmp_path):
    study = _study()
    runs = plan(study)
    out = tmp_path / "sweep"
    out.mkdir()
    atomic_write_text(out / "study.yaml", dump_yaml(study))
    atomic_write_json(out / "plan.json", {"study": study.name, "runs": [store.plan_row(r) for r in runs]})
    ok = [r.run_id for r in runs if r.feasible]
    store.run_dir(out, ok[0]).mkdir(parents=True)
    store.write_status(store.run_dir(out, ok[0]), "done", by="sweep", step=14, total_steps=14)
    store.run_dir(out, ok[1]).mkdir(parents=True)
    store.write_status(store.run_dir(out, ok[1]), "running", step=5, total_steps=14, message="training")
    return out, ok


def test_status_lists_every_planned_run(sweep_dir, capsys):
    out, ok = sweep_dir
    code, text, _ = run(["status", str(out), "--json"], capsys)
    data = json.loads(text)
    assert code == 0 and data["sweep_pid"] is None
    states = {r["run_id"]: r["state"] for r in data["runs"]}
    assert len(states) == 4 and states[ok[0]] == "done" and states[ok[1]] == "running"
    assert sorted(states.values()) == ["done", "infeasible", "pending", "running"]
    code, text, _ = run(["status", str(out)], capsys)
    assert code == 0 and "1 done" in text and "5/14" in text


def test_query_prints_a_table_or_json_and_sql_errors_are_one_line(sweep_dir, capsys):
    out, ok = sweep_dir
    code, text, _ = run(["query", str(out), "SELECT run_id, status FROM runs ORDER BY run_id", "--json"], capsys)
    assert code == 0 and len(json.loads(text)) == 4
    code, text, _ = run(["query", str(out), "SELECT status, count(*) AS n FROM runs GROUP BY ALL"], capsys)
    assert code == 0 and "status" in text and "4 rows" in text
    code, _, err = run(["query", str(out), "SELEC oops"], capsys)
    assert code == 2 and "query failed" in err and "\n" not in err


def test_sweep_arguments_are_checked(tmp_path, capsys):
    code, _, err = run(["sweep", "no-such-preset", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "unknown study preset" in err
    study_file = tmp_path / "s.yaml"
    study_file.write_text(dump_yaml(_study()))
    code, _, err = run(["sweep", str(study_file), "--out", str(tmp_path / "o"), "--address", "x:1"], capsys)
    assert code == 2 and "--address" in err
    assert not (tmp_path / "o").exists()


def test_plan_with_and_without_the_probe(tmp_path, capsys, monkeypatch):
    from moelab.study import probe

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(probe, "measure_flops_per_second", lambda device, seconds, *, precision: 1e9)
    study_file = tmp_path / "s.yaml"
    study_file.write_text(dump_yaml(_study()))
    code, text, _ = run(["plan", str(study_file), "--json", "--no-probe"], capsys)
    assert code == 0 and all("est_seconds" not in r for r in json.loads(text))
    code, text, _ = run(["plan", str(study_file), "--json"], capsys)
    rows = json.loads(text)
    assert [r["est_seconds"] == pytest.approx(r["train_flops"] / 1e9) for r in rows if r["feasible"]] == [True] * 3
    code, text, err = run(["plan", str(study_file)], capsys)
    assert code == 0 and "est." in text and "1 GFLOP/s" in err
    # the figure is cached; --refresh-probe measures again and replaces it
    monkeypatch.setattr(probe, "measure_flops_per_second", lambda device, seconds, *, precision: 2e9)
    _, _, err = run(["plan", str(study_file)], capsys)
    assert "1 GFLOP/s" in err
    _, _, err = run(["plan", str(study_file), "--refresh-probe"], capsys)
    assert "2 GFLOP/s" in err
    _, _, err = run(["plan", str(study_file)], capsys)
    assert "2 GFLOP/s" in err


def test_ray_executor_without_ray_installed_says_how_to_install(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    study_file = tmp_path / "s.yaml"
    study_file.write_text(dump_yaml(_study()))
    code, _, err = run(["sweep", str(study_file), "--out", str(tmp_path / "o"), "--executor", "ray"], capsys)
    assert code == 2 and "moelab[ray]" in err and not (tmp_path / "o").exists()


def test_sweep_task_file_is_checked_first_and_then_evaluated_on_every_run(tmp_path, capsys):
    study = _study().model_dump(mode="json")
    study["grid"] = {"d_model": [32], "num_experts": [4], "top_k": [1]}
    study["base"]["eval"] = {"tasks": ["knowledge"], "limit": 3, "max_new_tokens": 4}
    study_file = tmp_path / "s.yaml"
    study_file.write_text(dump_yaml(validate(StudyConfig, study, "study")))
    out = tmp_path / "o"

    bad = tmp_path / "bad.json"
    bad.write_text('[{"prompt": "1+1="}]')
    code, _, err = run(["sweep", str(study_file), "--out", str(out), "--task-file", str(bad), "--quiet"], capsys)
    assert code == 2 and "bad.json" in err and "answer" in err and "\n" not in err
    assert not out.exists()

    good = tmp_path / "sums.jsonl"
    good.write_text("".join(json.dumps({"prompt": f"{a}+{a}=", "answer": f"{2 * a}"}) + "\n" for a in range(5)))
    code, _, _ = run(["sweep", str(study_file), "--out", str(out), "--task-file", str(good), "--quiet"], capsys)
    assert code == 0
    assert str(good.resolve()) in (out / "study.yaml").read_text()
    _, rows, _ = run(["query", str(out), "SELECT key, value FROM evaluations WHERE key LIKE "
                      "'task_loss/file:sums/%'", "--json"], capsys)
    metrics = json.loads(rows)
    assert metrics and all(m["value"] > 0 for m in metrics), metrics
    # the file is part of the study: the same directory without it is a different study
    code, _, err = run(["sweep", str(study_file), "--out", str(out), "--quiet"], capsys)
    assert code == 2 and "different study" in err and "task_files" in err
