"""`moelab demo --preset smoke` end to end, as a user runs it (the issue's thin path)."""

import csv
import subprocess
import sys


def test_smoke_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "moelab", "demo", "--preset", "smoke", "--out", str(out), "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]

    rows = list(csv.DictReader((out / "results.csv").open()))
    done = [r for r in rows if r["status"] == "done"]
    assert len(done) == 3 and {(r["num_experts"], r["top_k"]) for r in done} == {("1", "1"), ("4", "1"), ("4", "2")}
    assert [r["status"] for r in rows if r not in done] == ["infeasible"]  # E=1, k=2 listed with its reason
    for r in done:
        for col in ("d_model", "total_params", "active_params", "tpp", "train_flops", "val_loss",
                    "task_loss/knowledge/heldout", "task_loss/reasoning/heldout",
                    "accuracy/knowledge/heldout", "accuracy/reasoning/heldout"):
            assert r[col] != "", col
        assert 0.0 <= float(r["accuracy/knowledge/heldout"]) <= 1.0
        for task in ("knowledge", "reasoning"):  # every accuracy and task loss carries its 95 % interval
            for metric in ("accuracy", "task_loss"):
                lo, v, hi = (float(r[f"{metric}{sfx}/{task}/heldout"]) for sfx in ("_lo", "", "_hi"))
                assert lo <= v <= hi and lo < hi
        assert float(r["task_loss/reasoning/heldout"]) > 0
        assert int(r["total_params"]) >= int(r["active_params"])
        assert float(r["pretrain_loss_memorisable"]) > 0 and 0 < float(r["memorisable_token_share"]) < 1
    dense = next(r for r in done if r["num_experts"] == "1")
    assert dense["total_params"] == dense["active_params"] and float(dense["sparsity"]) == 0.0

    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "accuracy" in html.lower()
    assert "95 % CI" in html and "Decision rule" in html

    import json

    recorded = json.loads((out / "demo.json").read_text())
    assert recorded["preset"] == "smoke" and set(recorded["precisions"]) == {r["run_id"] for r in done}
    # re-running reuses every finished run: no training, no evaluation (their files stay untouched)
    kept = sorted(out.glob("runs/*/train_summary.json")) + sorted(out.glob("runs/*/eval/summary.json"))
    assert len(kept) == 6
    before = {p: p.stat().st_mtime_ns for p in kept}
    res = subprocess.run([sys.executable, "-m", "moelab", "demo", "--preset", "smoke", "--out", str(out), "--quiet"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in kept} == before
    assert len(list(csv.DictReader((out / "results.csv").open()))) == len(rows)
    assert json.loads((out / "demo.json").read_text())["precisions"] == recorded["precisions"]


def test_the_seed_table_gives_each_models_mean_and_sd():
    from moelab.demo import seed_table

    rows = [{"name": "dense", "val_loss": 0.40, "accuracy/knowledge/train": 0.5, "accuracy/reasoning/heldout": 0.2},
            {"name": "dense", "val_loss": 0.44, "accuracy/knowledge/train": 0.7, "accuracy/reasoning/heldout": 1.0},
            {"name": "E4", "val_loss": 0.42, "accuracy/knowledge/train": None}]
    header, body = seed_table(rows)
    assert header[:3] == ["model", "seeds", "val loss"]
    assert body[0] == ["dense", "2", "0.420 ± 0.028", "60 ± 14", "60 ± 57", "–"]
    assert body[1] == ["E4", "1", "0.420", "–", "–", "–"]
