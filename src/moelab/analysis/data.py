"""A study's result rows, read and normalised for analysis.

    rows = load_study_rows(Path("runs/smoke"))      # the store's ``runs`` table, else results.csv
    tasks = task_names(rows); fams = families(rows)
    acc = accuracy_of("reasoning", rows)            # a Quantity: key, axis label, getter

Rows come from ``DIR/study.duckdb`` (table ``runs``; rebuilt with
:func:`moelab.study.store.rebuild_store` when the database is missing but the directory is a
sweep directory), else from ``DIR/results.csv``. Planned runs that have no row at all (in
``plan.json`` but absent from the results) are added with status ``missing``.

Normalisation gives every row the same few columns whatever wrote it: ``status``,
``train_loss`` / ``val_loss`` (the trainer's ``final_*`` values or the evaluation's
``pretrain_*`` ones; None for an imported model without a train log), ``sparsity``, ``density``,
``tpp``, ``posttrain`` ("" for a pretrained model), ``origin`` (``trained`` here or ``imported``: a
study's ``models:``, evaluated like the rest) and ``label``. Evaluation keys follow :mod:`moelab.eval.gaps`:
``<metric>/<task>/<split>`` (the task may contain a slash) and ``<metric>/<task>`` for gaps.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from moelab.errors import UserError, one_line

# Statuses a row can have; ``missing`` means planned but absent from the results.
STATUSES = ("done", "running", "pending", "failed", "diverged", "infeasible", "missing")
SPLIT_METRICS = ("task_loss", "task_loss_bpb", "task_loss_mean", "accuracy", "exact_match", "acc_norm",
                 "acc_bytes", "digit_accuracy", "num_items", "num_truncated", "task_loss_lo", "task_loss_hi", "accuracy_lo", "accuracy_hi")
GAP_METRICS = ("task_loss_gap", "accuracy_gap")
# Which split is the headline of a task: held-out items first (what generalises), then any test split.
HEADLINE_SPLITS = ("heldout", "test", "validation", "val", "train")
# Except for memorisation: the paper's memorisation benchmarks measure recall of what pretraining
# showed, which is the default world's knowledge "train" split (facts whose QA pairs are in the
# corpus); its "heldout" split (people known only from biographies) measures knowledge extraction,
# which stays at chance at CPU scale (calibration, docs/reproduction.md). Both stay in every table;
# the gap figures read both.
HEADLINE_BY_TASK = {"knowledge": "train"}
FAMILY_ORDER = ("knowledge", "reasoning")

_ALIASES = {
    "train_loss": ("train_loss", "final_train_loss", "pretrain_train_loss", "train_final_train_loss"),
    "val_loss": ("val_loss", "final_val_loss", "pretrain_val_loss", "train_final_val_loss"),
}


# ---------------------------------------------------------------- values


def num(v: Any) -> float | None:
    """A finite float, or None (for None, '', NaN, inf, text and booleans)."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, str):
        v = v.strip()
        if not v:
            return None
        try:
            v = float(v)
        except ValueError:
            return None
    if isinstance(v, (int, float)):
        v = float(v)
        return v if math.isfinite(v) else None
    return None


def _coerce(v: Any) -> Any:
    """CSV text → int / float / bool / None where it looks like one."""
    if not isinstance(v, str):
        return v
    s = v.strip()
    if s == "":
        return None
    if s in ("True", "true"):
        return True
    if s in ("False", "false"):
        return False
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s)
    except ValueError:
        return v


# ---------------------------------------------------------------- loading


def read_csv_rows(path: Path) -> list[dict]:
    """The rows of a results CSV; ``UserError`` naming the file when it is not one (moelab writes it
    atomically, so a damaged file was changed by something else)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return [{k: _coerce(v) for k, v in r.items() if k is not None} for r in csv.DictReader(fh)]
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{path}: not a results CSV ({type(err).__name__}: {one_line(err)}); "
                        "restore it or rebuild it from the per-run files (`moelab query DIR --rebuild`)") from None


def read_store_rows(db: Path) -> list[dict]:
    import duckdb

    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error as err:
        raise UserError(f"{db}: cannot open the results store ({str(err).splitlines()[0]})") from None
    try:
        cur = con.execute("SELECT * FROM runs")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
    except duckdb.Error as err:
        raise UserError(f"{db}: no readable 'runs' table ({str(err).splitlines()[0]})") from None
    finally:
        con.close()


def load_study_rows(study_dir: str | Path, *, write_store: bool = True) -> tuple[list[dict], str]:
    """(normalised rows, where they came from) for a study directory; see the module docstring.

    A sweep directory without a store gets one (``write_store``) or, read-only, has its per-run
    files gathered in memory (:func:`moelab.study.store.collect`).
    """
    d = Path(study_dir)
    if not d.is_dir():
        raise UserError(f"{d}: no such directory")
    db, csv_path = d / "study.duckdb", d / "results.csv"
    rows: list[dict] | None = None
    source = ""
    if not db.is_file() and ((d / "plan.json").is_file() or (d / "study.yaml").is_file()):
        try:
            from moelab.study import store
        except ImportError:  # an older tree without the store: fall back to results.csv
            store = None
        if store is not None and write_store:
            store.rebuild_store(d)
        elif store is not None:
            rows, source = store.collect(d)[0], "the per-run files (no store yet)"
    if rows is None and db.is_file():
        rows, source = read_store_rows(db), f"{db.name} (runs table)"
    elif rows is None and csv_path.is_file():
        rows, source = read_csv_rows(csv_path), csv_path.name
    elif rows is None:
        raise UserError(f"{d}: no results (neither study.duckdb nor results.csv)")
    rows = add_missing_planned(rows, d / "plan.json")
    if not rows:  # a header-only CSV, an empty store: an empty report would look like a result
        named = {csv_path.name: csv_path, f"{db.name} (runs table)": db}.get(source, d)
        raise UserError(f"{named}: no runs in it; nothing to report (train some runs first)")
    return normalise(rows), source


def add_missing_planned(rows: list[dict], plan_json: Path) -> list[dict]:
    """Planned runs absent from ``rows`` become rows with status ``missing``."""
    try:
        plan = json.loads(plan_json.read_text())
    except (OSError, ValueError):
        return rows
    planned = plan.get("runs") if isinstance(plan, dict) else None
    if not isinstance(planned, list):
        return rows
    have = {r.get("run_id") for r in rows}
    extra = []
    for p in planned:
        if isinstance(p, dict) and p.get("run_id") not in have:
            row = {k: v for k, v in p.items() if k != "config"}
            row["status"] = "missing" if p.get("feasible", True) else "infeasible"
            extra.append(row)
    return rows + extra


def normalise(rows: list[dict]) -> list[dict]:
    """Copies of ``rows`` with the common columns of the module docstring filled in."""
    out = []
    for raw in rows:
        r = {k: _coerce(v) for k, v in raw.items()}
        for key, aliases in _ALIASES.items():
            r[key] = next((num(r.get(a)) for a in aliases if num(r.get(a)) is not None), None)
        e, k = num(r.get("num_experts")), num(r.get("top_k"))
        if e and k:
            if num(r.get("sparsity")) is None:
                r["sparsity"] = 1.0 - k / e
            r["density"] = k / e
        if num(r.get("tpp")) is None and num(r.get("tokens")) and num(r.get("total_params")):
            r["tpp"] = r["tokens"] / r["total_params"]
        status = r.get("status")
        if not status:
            has_results = r["train_loss"] is not None or any(_parse(key) for key in r)
            status = "done" if has_results else ("infeasible" if r.get("feasible") is False else "pending")
        r["status"] = str(status)
        # iso-token studies (the planner's ``tokens:``) plan on a token budget; the rest on FLOPs
        b, t = num(r.get("budget")), num(r.get("tokens"))
        by_tokens = str(r.get("run_id") or "").startswith("D") or (b is not None and t is not None and abs(b - t) <= 1)
        r["budget_kind"] = "tokens" if by_tokens else "FLOPs"
        r["posttrain"] = str(r.get("posttrain") or "")
        r["origin"] = str(r.get("origin") or "trained")
        r["label"] = str(r.get("name") or r.get("run_id") or "?") + (f" +{r['posttrain']}" if r["posttrain"] else "")
        out.append(r)
    _active_sizes(out)
    return out


_SAME_ACTIVE = 0.10  # relative difference under which two top-k groups of one d_model are one size


def _active_sizes(rows: list[dict]) -> None:
    """``active_size``: the median active parameters of one active-size family.

    A family is the models of one d_model whose active parameters agree within 10 %: models that
    differ only in E differ slightly in active parameters (the router has E rows), and with
    ``expert_width_rule: per_k`` every top-k of a d_model has the same active parameters, yet each
    such set is one active size in the seed paper's sense: one colour, one line, one fit group.
    With fixed expert width, top-k changes the active parameters and so starts a family of its own.
    """
    by_shape: dict = {}
    for r in rows:
        if num(r.get("active_params")) and r.get("d_model") is not None and r.get("top_k") is not None:
            by_shape.setdefault((r["d_model"], r["top_k"]), []).append(num(r["active_params"]))
    family_of: dict = {}  # (d_model, top_k) → list of active params of its merged family
    for d in {d for d, _ in by_shape}:
        groups = sorted(((sorted(v)[len(v) // 2], k) for (dd, k), v in by_shape.items() if dd == d))
        family: list = []
        for i, (median, k) in enumerate(groups):
            if i and median > groups[i - 1][0] * (1 + _SAME_ACTIVE):
                family = []
            family.extend(by_shape[(d, k)])
            family_of[(d, k)] = family
    for r in rows:
        vals = family_of.get((r.get("d_model"), r.get("top_k")))
        r["active_size"] = float(sorted(vals)[len(vals) // 2]) if vals else num(r.get("active_params"))


def without_train_log(rows: list[dict]) -> list[dict]:
    """Finished imported models that have no pretraining loss (no ``train_log``)."""
    return [r for r in completed(rows) if r["origin"] == "imported" and r["train_loss"] is None
            and r["val_loss"] is None]


def completed(rows: list[dict], *, posttrain: str = "") -> list[dict]:
    """Rows with results to plot: status ``done``, pretrained (or the given post-training)."""
    return [r for r in rows if r["status"] == "done" and r.get("posttrain", "") == posttrain]


# ---------------------------------------------------------------- evaluation keys


def _parse(key: str) -> tuple[str, str, str | None] | None:
    """``metric/task/split`` → (metric, task, split); ``gap/task`` → (gap, task, None); else None."""
    if not isinstance(key, str):
        return None
    key = key.removeprefix("eval/")  # the store prefixes evaluation keys that clash with a plan column
    parts = key.split("/")
    if parts[0] in SPLIT_METRICS and len(parts) >= 3:
        return parts[0], "/".join(parts[1:-1]), parts[-1]
    if parts[0] in GAP_METRICS and len(parts) >= 2:
        return parts[0], "/".join(parts[1:]), None
    return None


def eval_value(row: dict, metric: str, task: str, split: str | None = None) -> float | None:
    key = f"{metric}/{task}" + (f"/{split}" if split else "")
    v = row.get(key)
    if v is None:
        v = row.get(f"eval/{key}")
    return num(v)


def task_names(rows: list[dict]) -> list[str]:
    """Every task with a task loss or accuracy in some row: known families first, then by name."""
    seen = {p[1] for r in rows for key in r if (p := _parse(key)) and p[0] in ("task_loss", "accuracy")}
    return sorted(seen, key=_task_order)


def _task_order(task: str) -> tuple:
    top = task.split("/")[0]
    return (FAMILY_ORDER.index(top) if top in FAMILY_ORDER else len(FAMILY_ORDER), top, task.count("/"), task)


def families(rows: list[dict]) -> list[str]:
    """The tasks the report treats as families: every task whose parent task is absent
    (``reasoning/addition`` is a sub-task when ``reasoning`` is there)."""
    tasks = task_names(rows)
    present = set(tasks)

    def has_parent(t: str) -> bool:
        parts = t.split("/")
        return any("/".join(parts[:i]) in present for i in range(1, len(parts)))

    return [t for t in tasks if not has_parent(t)]


def splits_of(rows: list[dict], task: str) -> list[str]:
    found = {p[2] for r in rows for key in r if (p := _parse(key)) and p[1] == task and p[2]}
    return sorted(found, key=lambda s: (HEADLINE_SPLITS.index(s) if s in HEADLINE_SPLITS else 99, s))


def headline_split(rows: list[dict], task: str) -> str | None:
    splits = splits_of(rows, task)
    preferred = HEADLINE_BY_TASK.get(task)
    if preferred in splits:
        return preferred
    return splits[0] if splits else None


# ---------------------------------------------------------------- quantities


@dataclass(frozen=True)
class Quantity:
    """One plotted quantity: its CSV column, axis label (with unit), getter and direction."""

    key: str
    label: str
    get: Callable[[dict], float | None]
    log: bool = False
    higher_is_better: bool | None = None
    interval: Callable[[dict], tuple[float, float] | None] | None = None  # 95 % over items

    def values(self, rows: list[dict]) -> list[float | None]:
        return [self.get(r) for r in rows]

    def ci(self, row: dict) -> tuple[float, float] | None:
        return self.interval(row) if self.interval is not None else None

    def se(self, row: dict) -> float | None:
        """The standard error the row's 95 % interval implies (None without one)."""
        from moelab.stats import se_from_interval

        ci = self.ci(row)
        return se_from_interval(*ci) if ci else None


def column(key: str, label: str, *, log: bool = False, higher_is_better: bool | None = None) -> Quantity:
    return Quantity(key, label, lambda r, k=key: num(r.get(k)), log, higher_is_better)


TOTAL = column("total_params", "total parameters", log=True)
ACTIVE = column("active_params", "active parameters", log=True)
TPP = column("tpp", "tokens per parameter (TPP)", log=True)
SPARSITY = column("sparsity", "sparsity (1 − k/E)")
DENSITY = column("density", "density (k/E)", log=True)
FLOPS = column("train_flops", "training FLOPs", log=True)
LR = column("lr", "peak learning rate", log=True)
INIT_STD = column("init_std", "init std", log=True)
TRAIN_LOSS = column("train_loss", "train loss (nats/token)", higher_is_better=False)
VAL_LOSS = column("val_loss", "validation loss (nats/token)", higher_is_better=False)
# Claim 1's premise where capacity binds (moelab.eval.memorisable): the facts' own tokens, and the rest.
MEMO_LOSS = column("pretrain_loss_memorisable", "pretraining loss on memorisable tokens (nats/token)",
                   higher_is_better=False)
OTHER_LOSS = column("pretrain_loss_other", "pretraining loss on the other tokens (nats/token)", higher_is_better=False)


def present(rows: list[dict], quantity: "Quantity") -> bool:
    """Whether any row has a value of ``quantity`` (older evaluations lack the newer metrics)."""
    return any(quantity.get(r) is not None for r in rows)


def pretrain_gap() -> Quantity:
    def get(r):
        t, v = num(r.get("train_loss")), num(r.get("val_loss"))
        return None if t is None or v is None else v - t
    return Quantity("pretrain_gap", "validation − train loss (nats/token)", get, higher_is_better=False)


def task_loss_interval(row: dict, task: str, split: str | None) -> tuple[float, float] | None:
    """The evaluation's 95 % bootstrap interval over items (None for evaluations without one)."""
    lo, hi = eval_value(row, "task_loss_lo", task, split), eval_value(row, "task_loss_hi", task, split)
    return (lo, hi) if lo is not None and hi is not None else None


def accuracy_interval(row: dict, task: str, split: str | None) -> tuple[float, float] | None:
    """The evaluation's 95 % Wilson interval; for older evaluations, recomputed from accuracy and items."""
    lo, hi = eval_value(row, "accuracy_lo", task, split), eval_value(row, "accuracy_hi", task, split)
    if lo is not None and hi is not None:
        return lo, hi
    from moelab.stats import wilson_interval

    n = eval_value(row, "num_items", task, split)
    return wilson_interval(eval_value(row, "accuracy", task, split), int(n) if n else None)


def task_loss_of(task: str, rows: list[dict], split: str | None = None) -> Quantity:
    split = split or headline_split(rows, task)
    return Quantity(f"task_loss/{task}/{split}", f"{task} task loss, {split} (bits/token)",
                    lambda r: eval_value(r, "task_loss", task, split), higher_is_better=False,
                    interval=lambda r: task_loss_interval(r, task, split))


def accuracy_of(task: str, rows: list[dict], split: str | None = None) -> Quantity:
    split = split or headline_split(rows, task)
    return Quantity(f"accuracy/{task}/{split}", f"{task} accuracy, {split} (fraction correct)",
                    lambda r: eval_value(r, "accuracy", task, split), higher_is_better=True,
                    interval=lambda r: accuracy_interval(r, task, split))


def digit_accuracy_of(task: str, rows: list[dict], split: str | None = None) -> Quantity:
    """Per-digit accuracy (whole-number answers): the continuous companion of exact match."""
    split = split or headline_split(rows, task)
    return Quantity(f"digit_accuracy/{task}/{split}", f"{task} per-digit accuracy, {split} (fraction)",
                    lambda r: eval_value(r, "digit_accuracy", task, split), higher_is_better=True)


def task_gap_of(task: str) -> Quantity:
    def get(r):
        g = eval_value(r, "task_loss_gap", task)
        if g is None:
            h, t = eval_value(r, "task_loss", task, "heldout"), eval_value(r, "task_loss", task, "train")
            g = None if h is None or t is None else h - t
        return g

    def interval(r):
        # the two splits hold different items: their errors add in quadrature
        from moelab.stats import Z, se_from_interval

        g, h, t = get(r), task_loss_interval(r, task, "heldout"), task_loss_interval(r, task, "train")
        if g is None or h is None or t is None:
            return None
        half = Z * (se_from_interval(*h) ** 2 + se_from_interval(*t) ** 2) ** 0.5
        return g - half, g + half
    return Quantity(f"task_loss_gap/{task}", f"{task} task-loss gap, held-out − train (bits/token)", get,
                    higher_is_better=False, interval=interval)


def accuracy_gap_of(task: str) -> Quantity:
    return Quantity(f"accuracy_gap/{task}", f"{task} accuracy gap, train − held-out",
                    lambda r: eval_value(r, "accuracy_gap", task), higher_is_better=False)


def budget_symbol(rows: list[dict]) -> str:
    """'D' (tokens) when the study's budgets are token counts, else 'C' (FLOPs)."""
    return "D" if any(r.get("budget_kind") == "tokens" for r in rows) else "C"


def budget_text(value: float | None, rows: list[dict]) -> str:
    """'6T FLOPs' or '3M tokens'."""
    from moelab.analysis.figures import fmt_si

    return f"{fmt_si(value)} {'tokens' if budget_symbol(rows) == 'D' else 'FLOPs'}"

