"""The report builds for full, partial (failed / diverged / missing runs) and one-run studies."""

from __future__ import annotations

import json
import re

from analysis_synth import make_rows, write_csv_study, write_duckdb_study, write_sweep_dir

from moelab.analysis.report import build_report, write_demo_report

N_BOOT = 200


def _pngs(report_dir):
    return sorted(p.stem for p in report_dir.glob("*.png"))


def test_report_from_store_with_failed_diverged_pending_and_missing_runs(tmp_path, failing_rows):
    missing = {"run_id": "C1e12-d64-E32-k1", "budget": 1e12, "d_model": 64, "num_experts": 32, "top_k": 1,
               "feasible": True}
    study = write_duckdb_study(tmp_path / "study", failing_rows, planned_extra=[missing])
    index = build_report(study, n_boot=N_BOOT)
    assert index == study / "report" / "index.html"
    page = index.read_text()
    for status in ("failed: RuntimeError: boom", "diverged at step 42", "pending", "missing", "infeasible"):
        assert status in page, status
    assert "C1e12-d64-E32-k1" in page  # the missing run is listed
    for section in ("Summary", "Study", "Pretraining loss", "Task family: knowledge", "Task family: reasoning",
                    "Train–test generalization gap", "Loss–accuracy gap", "Optimal sparsity: reasoning"):
        assert f">{section}</h2>" in page, section
    # every image the page shows exists, and every figure's series is also a CSV
    report = study / "report"
    for src in re.findall(r'<img src="([^"]+)"', page):
        assert (report / src).is_file(), src
    pngs = _pngs(report)
    assert {"pretrain-train-loss-vs-total", "knowledge-acc-vs-total", "reasoning-loss-vs-tpp",
            "reasoning-acc-vs-density", "gap-reasoning-vs-total", "lossacc-reasoning", "optimum-reasoning-acc"} <= set(pngs)
    assert all((report / "data" / f"{p}.csv").is_file() for p in pngs)
    summary = (report / "data" / "summary.csv").read_text()
    assert "every feasible planned run finished,no," in summary


def test_report_summary_is_computed_from_the_data(tmp_path, synthetic_rows):
    study = write_csv_study(tmp_path / "s", synthetic_rows)
    build_report(study, n_boot=N_BOOT)
    import csv

    with open(study / "report" / "data" / "summary.csv") as fh:
        answers = {r["claim"]: r["answer"] for r in csv.DictReader(fh)}
    assert answers["knowledge accuracy rises with total parameters at every active size"] == "yes"
    # reasoning accuracy peaks inside the range: it does not rise at every active size
    assert answers["reasoning accuracy rises with total parameters at every active size"] != "yes"
    assert answers["the best reasoning accuracy of each active size is its model with the most total parameters"] in (
        "no", "inconclusive")
    assert set(answers.values()) <= {"yes", "no", "inconclusive", "not enough data"}
    with open(study / "report" / "data" / "optimum-reasoning.csv") as fh:
        groups = list(csv.DictReader(fh))
    # the synthetic reasoning accuracy peaks at log10 TPP = 0.1 within each 1e12 active-size group
    g = next(r for r in groups if r["metric"] == "accuracy" and r["group"] == "C1T-A210K")
    assert g["interior"] == "True"
    assert float(g["interval_lo_tpp"]) <= 10 ** 0.1 <= float(g["interval_hi_tpp"])


def test_report_for_a_single_run(tmp_path):
    row = next(r for r in make_rows(budgets=(1e12,), experts=(4,), top_ks=(1,)) if r["status"] == "done")
    study = write_csv_study(tmp_path / "one", [row])
    page = build_report(study, n_boot=N_BOOT).read_text()
    assert "skipped: needs at least 2 models" in page
    assert row["run_id"] in page
    assert "not enough data" in page


def test_report_with_lr_axis_grpo_and_ttc(tmp_path):
    rows = make_rows(budgets=(1e12,), experts=(1, 4, 16), lrs=(1e-3, 3e-3))
    done = [r for r in rows if r["status"] == "done"]
    post = []
    for r in done[:3]:
        p = dict(r, run_id=r["run_id"] + "+grpo", posttrain="grpo", base_run_id=r["run_id"])
        p["accuracy/reasoning/heldout"] = r["accuracy/reasoning/heldout"] + 0.05
        post.append(p)
    study = write_csv_study(tmp_path / "s", rows + post)
    for i, r in enumerate(done[:2]):
        ttc = study / "runs" / r["run_id"] / "eval" / "ttc-reasoning-n8" / "ttc.json"
        ttc.parent.mkdir(parents=True)
        ttc.write_text(json.dumps({"task": "reasoning", "n": [1, 2, 4, 8], "pass_at_k": [0.3, 0.4, 0.5, 0.6],
                                   "majority": [0.3, 0.32, 0.33, 0.35 + i / 10], "greedy": 0.31 + i / 10}))
    page = build_report(study, n_boot=N_BOOT).read_text()
    assert ">Post-training (GRPO)</h2>" in page and ">Test-time compute</h2>" in page
    pngs = set(_pngs(study / "report"))
    assert {"grpo-reasoning", "ttc-reasoning", "gap-reasoning-vs-lr"} <= pngs
    assert "grows with the learning rate" in page
    assert "GRPO keeps the pretrained models&#x27; ranking" in page
    n_done = sum(r["status"] == "done" for r in rows)  # post-trained variants are not planned runs
    n_infeasible = sum(r["status"] == "infeasible" for r in rows)
    summary = (study / "report" / "data" / "summary.csv").read_text()
    assert (f'every feasible planned run finished,yes,"{n_done} done, {n_infeasible} infeasible; '
            f'post-trained: 3 grpo done"') in summary


def test_demo_report_is_one_self_contained_file(tmp_path, failing_rows):
    path = write_demo_report(failing_rows, tmp_path / "report.html", title="demo — synthetic")
    page = path.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "knowledge: accuracy against total parameters" in page
    assert "reasoning: accuracy against total parameters" in page
    assert "Validation loss against total parameters" in page
    assert not list(tmp_path.glob("*.png"))  # nothing written beside it


def test_report_on_a_sweep_directory_builds_the_store_first(tmp_path, failing_rows):
    sweep = write_sweep_dir(tmp_path / "sweep", failing_rows)
    page = build_report(sweep, n_boot=N_BOOT).read_text()
    assert (sweep / "study.duckdb").is_file() and "source: study.duckdb" in page
    # the sweep's own view of runs without a sweep-written status: pending
    assert page.count(">pending</td>") >= 3
    assert "knowledge: accuracy against total parameters" in page


def test_active_size_families_follow_the_expert_width_rule():
    """per_k: every top-k of a d_model has the same active parameters (± the router) → one family;
    fixed width: top-k changes the active parameters → one family per top-k."""
    from moelab.analysis.data import _active_sizes

    rows = [  # d, k, active params (router rows make E-variants differ slightly)
        {"d_model": 32, "top_k": 1, "active_params": 53_500}, {"d_model": 32, "top_k": 1, "active_params": 57_500},
        {"d_model": 32, "top_k": 2, "active_params": 53_700}, {"d_model": 32, "top_k": 4, "active_params": 54_400},
        {"d_model": 64, "top_k": 1, "active_params": 150_000}, {"d_model": 64, "top_k": 2, "active_params": 250_000},
        {"d_model": 64, "top_k": 2, "active_params": 252_000},
    ]
    _active_sizes(rows)
    sizes = [r["active_size"] for r in rows]
    assert len(set(sizes[:4])) == 1 and 53_500 <= sizes[0] <= 57_500  # one per_k family, its median
    assert sizes[4] == 150_000 and sizes[5] == sizes[6] != sizes[4]  # fixed width: k=1 and k=2 differ


def test_report_with_a_seed_axis_shows_the_run_to_run_spread(tmp_path):
    """Three seeds per configuration, with a known seed noise (sd 0.05) much smaller than the E effect:
    the section appears, its CSV holds mean and sd per configuration, the summary says the
    configurations differ by more than the seeds."""
    import csv

    import numpy as np

    rows = []
    rng = np.random.default_rng(0)
    for seed in (0, 1, 2):
        for r in make_rows(budgets=(1e12,), experts=(1, 4, 16, 32), top_ks=(1,), noise=0.0):
            r = dict(r, seed=seed, run_id=f"{r['run_id']}-s{seed}")
            if r["status"] == "done":
                r["task_loss/reasoning/heldout"] += float(rng.normal(0, 0.05))
            rows.append(r)
    study = write_csv_study(tmp_path / "s", rows)
    page = build_report(study, n_boot=N_BOOT).read_text()
    assert ">Run-to-run spread (seeds)</h2>" in page
    spread = list(csv.DictReader(open(study / "report" / "data" / "seed-spread.csv")))
    assert len(spread) == 4 and all(r["seeds"] == "3" for r in spread)
    sds = [float(r["task_loss/reasoning/heldout sd"]) for r in spread]
    assert 0.005 < float(np.median(sds)) < 0.15  # the injected 0.05
    summary = (study / "report" / "data" / "summary.csv").read_text()
    assert "task_loss/reasoning/heldout differs between configurations by more than between seeds,yes" in summary


def test_report_without_a_seed_axis_has_no_spread_section(tmp_path, synthetic_rows):
    study = write_csv_study(tmp_path / "s", synthetic_rows)
    page = build_report(study, n_boot=N_BOOT).read_text()
    assert "Run-to-run spread" not in page and "between seeds" not in page
