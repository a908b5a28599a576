"""Synthetic study rows with known shapes, and fake study directories, for the analysis tests.

Knowledge accuracy rises with total parameters; reasoning accuracy is a parabola in log10 TPP with
its maximum at ``REASONING_OPT_LOG_TPP``; task losses mirror the accuracies; the generalization gap
grows with total parameters. Small deterministic noise keeps the fits honest.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import numpy as np

from moelab import stats
from moelab.study.results import rows_to_csv

VOCAB, LAYERS = 1024, 2
REASONING_OPT_LOG_TPP = 0.1
ITEMS = 300  # items per split: the accuracies' Wilson intervals follow from it


def params(d: int, e: int, k: int) -> tuple[int, int]:
    f = 2 * d
    emb = 2 * VOCAB * d
    return emb + LAYERS * (4 * d * d + 3 * e * d * f), emb + LAYERS * (4 * d * d + 3 * k * d * f)


def make_rows(*, budgets=(1e12, 4e12), d_models=(64,), experts=(1, 2, 4, 8, 16, 32), top_ks=(1, 2),
              lrs=(None,), noise: float = 0.005, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for budget in budgets:
        for d in d_models:
            for e in experts:
                for k in top_ks:
                    for lr in lrs:
                        rid = f"C{budget:.3g}-d{d}-E{e}-k{k}".replace("+", "") + (f"-lr{lr:g}" if lr else "")
                        row = {"run_id": rid, "budget": budget, "d_model": d, "num_experts": e, "top_k": k,
                               "lr": lr or 3e-3, "init_std": 0.02, "seed": 0}
                        if k > e:
                            rows.append(row | {"status": "infeasible", "feasible": False,
                                               "reason": f"top_k={k} exceeds num_experts={e}"})
                            continue
                        total, active = params(d, e, k)
                        tokens = budget / (6 * active)
                        tpp = tokens / total
                        x = math.log10(tpp)
                        lt = math.log10(total)
                        eps = lambda: float(rng.normal(0, noise))  # noqa: E731
                        train_loss = 6.0 - 0.8 * lt + 0.3 * math.log10(budget) * -0.1 + eps()
                        k_acc = min(1.0, max(0.0, 0.1 + 0.3 * (lt - 5) + eps()))
                        r_acc = 0.5 - 0.3 * (x - REASONING_OPT_LOG_TPP) ** 2 + 0.05 * math.log2(active / 2e5) + eps()
                        gap = 0.1 * (lt - 5) + (0.2 * (row["lr"] / 3e-3) if lr else 0) + eps()
                        row |= {"status": "done", "feasible": True, "reason": "",
                                "name": f"d{d}-E{e}-k{k}", "sparsity": 1 - k / e, "total_params": total,
                                "active_params": active, "tokens": int(tokens), "tpp": tpp,
                                "train_flops": 6 * active * tokens, "steps": 100,
                                "final_train_loss": train_loss, "final_val_loss": train_loss + 0.05 + gap / 4,
                                "task_loss/knowledge/heldout": 3.0 - 2 * k_acc + gap,
                                "task_loss/knowledge/train": 3.0 - 2 * k_acc,
                                "accuracy/knowledge/heldout": k_acc, "accuracy/knowledge/train": min(1, k_acc + 0.1),
                                "task_loss_gap/knowledge": gap,
                                "task_loss/reasoning/heldout": 2.5 - 2 * r_acc + gap,
                                "task_loss/reasoning/train": 2.5 - 2 * r_acc,
                                "accuracy/reasoning/heldout": r_acc, "accuracy/reasoning/train": r_acc + 0.05,
                                "task_loss_gap/reasoning": gap,
                                "accuracy/reasoning/chain_sum/heldout": r_acc * 0.9,
                                "task_loss/reasoning/chain_sum/heldout": 2.6 - 2 * r_acc}
                        row |= {f"num_items/{t}/{s}": ITEMS for t in ("knowledge", "reasoning") for s in ("train", "heldout")}
                        rows.append(row)
    return rows


def with_failures(rows: list[dict]) -> list[dict]:
    """Mark one run failed, one diverged and one pending (their results dropped)."""
    out = [dict(r) for r in rows]
    done = [r for r in out if r["status"] == "done"]
    keep = ("run_id", "budget", "d_model", "num_experts", "top_k", "lr", "init_std", "seed", "name", "sparsity",
            "total_params", "active_params", "tokens", "tpp", "train_flops", "steps", "feasible", "reason")
    for r, status in zip(done[1:4], ("failed", "diverged", "pending")):
        for key in list(r):
            if key not in keep:
                del r[key]
        r["status"] = status
        if status == "failed":
            r["error"] = "RuntimeError: boom"
        if status == "diverged":
            r["diverged_step"] = 42
    return out


# ---------------------------------------------------------------- fake study directories


def write_csv_study(d: Path, rows: list[dict]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "results.csv").write_text(rows_to_csv(rows))
    return d


def write_duckdb_study(d: Path, rows: list[dict], *, planned_extra: list[dict] = ()) -> Path:
    """``study.duckdb`` with a ``runs`` table (the store's column typing) and a ``plan.json`` that
    also lists ``planned_extra`` runs the store lacks."""
    import duckdb

    from moelab.study.results import columns
    from moelab.study.store import to_arrow

    d.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(d / "study.duckdb"))
    con.register("_arrow", to_arrow(rows, columns(rows)))
    con.execute("CREATE TABLE runs AS SELECT * FROM _arrow")
    con.close()
    plan = [{k: r.get(k) for k in ("run_id", "budget", "d_model", "num_experts", "top_k", "feasible")}
            for r in [*rows, *planned_extra]]
    (d / "plan.json").write_text(json.dumps({"study": "synthetic", "runs": plan}))
    return d


PLAN_KEYS = ("run_id", "name", "budget", "d_model", "num_experts", "top_k", "sparsity", "lr", "init_std", "seed",
             "total_params", "active_params", "tokens", "tpp", "train_flops", "steps", "feasible", "reason")


def write_sweep_dir(d: Path, rows: list[dict]) -> Path:
    """A sweep directory as the sweep leaves it: ``plan.json`` and per-run status, train summary and
    evaluation files (no store)."""
    from moelab.study import store

    d.mkdir(parents=True, exist_ok=True)
    plan = [{k: r.get(k) for k in PLAN_KEYS} | {"config": None} for r in rows]
    (d / "plan.json").write_text(json.dumps({"study": "synthetic", "runs": plan}))
    for r in rows:
        if r["status"] != "done":
            continue
        rdir = store.run_dir(d, r["run_id"])
        (rdir / "eval").mkdir(parents=True)
        store.write_status(rdir, "done", by="sweep", message="trained and evaluated")
        (rdir / "train_summary.json").write_text(json.dumps(
            {"final_train_loss": r["final_train_loss"], "final_val_loss": r["final_val_loss"]}))
        (rdir / "eval" / "summary.json").write_text(json.dumps(
            {k: v for k, v in r.items() if "/" in k}))
    return d


def noise_model(rng) -> tuple[dict, dict, dict]:
    """One model's per-item losses (bits, tokens) for each task and split, fixed across a noise
    study, and its true accuracies: every run of the study is this model evaluated again."""
    item_bits = {(t, s): rng.gamma(2.0, 0.5, ITEMS) * 5 for t in ("knowledge", "reasoning") for s in ("train", "heldout")}
    item_tokens = {key: rng.integers(3, 8, ITEMS) for key in item_bits}
    true_acc = {("knowledge", "train"): 0.45, ("knowledge", "heldout"): 0.05,
                ("reasoning", "train"): 0.35, ("reasoning", "heldout"): 0.33}
    return item_bits, item_tokens, true_acc


def noise_study(seed: int, *, with_seeds: bool = False) -> list[dict]:
    """A study of pure noise: dense models of many sizes that are all the same model (plus GRPO rows)."""
    rng = np.random.default_rng(seed)
    item_bits, item_tokens, true_acc = noise_model(rng)
    rows = []
    seeds = (0, 1, 2) if with_seeds else (0,)
    for budget in (1e12, 4e12):
        for d in (48, 64):
            for e in (1, 2, 4, 8, 16, 32):
                for lr in (1e-3, 3e-3):
                    for sd in seeds:
                        total, active = params(d, e, 1)
                        tokens = budget / (6 * active)
                        row = {"run_id": f"C{budget:g}-d{d}-E{e}-lr{lr:g}-s{sd}", "status": "done", "budget": budget,
                               "d_model": d, "num_experts": e, "top_k": 1, "lr": lr, "init_std": 0.02, "seed": sd,
                               "total_params": total, "active_params": active, "tokens": tokens,
                               "tpp": tokens / total, "name": f"d{d}-E{e}-k1",
                               # the same model: training losses are its own plus run-to-run jitter
                               "final_train_loss": 2.0 + rng.normal(0, 0.01),
                               "final_val_loss": 2.1 + rng.normal(0, 0.01)}
                        row |= evaluate_noise(rng, item_bits, item_tokens, true_acc)
                        rows.append(row)
    post = []
    for r in rows[:12]:
        p = dict(r, run_id=r["run_id"] + "+grpo", posttrain="grpo", base_run_id=r["run_id"])
        p |= evaluate_noise(rng, item_bits, item_tokens, true_acc)
        post.append(p)
    return rows + post


def evaluate_noise(rng, item_bits, item_tokens, true_acc) -> dict:
    """One evaluation of the noise model: a fresh draw of items, accuracies binomial about the truth."""
    out = {}
    for (task, split), bits in item_bits.items():
        idx = rng.integers(0, ITEMS, ITEMS)  # a fresh draw of the evaluation items
        b, t = bits[idx], item_tokens[(task, split)][idx]
        lo, hi = stats.bootstrap_ratio_interval(b, t, n_boot=300, seed=int(rng.integers(1 << 30)))
        acc = rng.binomial(ITEMS, true_acc[(task, split)]) / ITEMS
        alo, ahi = stats.wilson_interval(acc, ITEMS)
        out |= {f"task_loss/{task}/{split}": b.sum() / t.sum(), f"task_loss_lo/{task}/{split}": lo,
                f"task_loss_hi/{task}/{split}": hi, f"accuracy/{task}/{split}": acc,
                f"accuracy_lo/{task}/{split}": alo, f"accuracy_hi/{task}/{split}": ahi,
                f"num_items/{task}/{split}": ITEMS}
    for task in ("knowledge", "reasoning"):
        out[f"task_loss_gap/{task}"] = out[f"task_loss/{task}/heldout"] - out[f"task_loss/{task}/train"]
    return out


@functools.lru_cache(maxsize=None)
def _wilson(acc: float) -> tuple[float, float]:
    """The Wilson interval over ``ITEMS`` items, remembered: the noise tests draw thousands of studies
    from a few hundred possible accuracies, and scipy's binomtest is a millisecond each."""
    return stats.wilson_interval(acc, ITEMS)


def seeded_study(rng, *, seeds=(0, 1, 2, 3, 4), d_models=(48, 64), experts=(1, 2, 4, 8, 16, 32),
                 loss_slope: float = 0.0, acc_slope: float = 0.0, seed_sd: float = 0.01,
                 acc_seed_sd: float = 0.02, true_acc: float = 0.3) -> list[dict]:
    """A one-budget study trained with every seed of ``seeds`` (the CPU presets' ``grid.seed``).

    Validation (and train) loss is ``2.1 + loss_slope · (log10 total − 5.5)`` plus a normal seed
    effect of sd ``seed_sd``; knowledge accuracy on each split is a binomial draw over ``ITEMS``
    items about ``true_acc + acc_slope · (log10 total − 5.5)`` plus a seed effect of sd
    ``acc_seed_sd``, with its Wilson interval — so the seeds scatter by their own noise and the
    items'. Reasoning accuracy has no effect at all. ``rng``: a numpy Generator."""
    rows = []
    for d in d_models:
        for e in experts:
            total, active = params(d, e, 1)
            tokens = 1e12 / (6 * active)
            lt = math.log10(total) - 5.5
            for sd in seeds:
                loss = 2.1 + loss_slope * lt + float(rng.normal(0, seed_sd))
                row = {"run_id": f"C1e12-d{d}-E{e}-k1-s{sd}", "status": "done", "budget": 1e12, "d_model": d,
                       "num_experts": e, "top_k": 1, "lr": 1e-3, "init_std": 0.02, "seed": sd,
                       "name": f"d{d}-E{e}-k1", "total_params": total, "active_params": active, "tokens": tokens,
                       "tpp": tokens / total, "final_train_loss": loss - 0.1, "final_val_loss": loss}
                shift = float(rng.normal(0, acc_seed_sd))
                for task, p in (("knowledge", true_acc + acc_slope * lt + shift), ("reasoning", true_acc + shift)):
                    for split in ("train", "heldout"):
                        acc = rng.binomial(ITEMS, min(max(p, 0.0), 1.0)) / ITEMS
                        lo, hi = _wilson(acc)
                        row |= {f"accuracy/{task}/{split}": acc, f"accuracy_lo/{task}/{split}": lo,
                                f"accuracy_hi/{task}/{split}": hi, f"num_items/{task}/{split}": ITEMS}
                rows.append(row)
    return rows
