"""The sweep: train, then evaluate, every feasible run of a study — restartable.

    moelab sweep smoke --out runs/smoke [--executor local|ray] [--workers N] [--retry-failed]
    from moelab.study.sweep import sweep
    result = sweep(load_study_config("smoke"), Path("runs/smoke"))

Layout of ``DIR``: ``study.yaml`` (the study; a different one refuses the directory),
``plan.json`` (every planned run, infeasible ones with their reason, each run's precision fixed at its first
sweep: :mod:`moelab.study.precision_plan`), ``runs/<run_id>/``
(the trainer's run directory plus ``eval/`` and ``status.json``), ``.lock`` (held for the
sweep's life, names its PID) and the store (``study.duckdb``, ``results.parquet``,
``results.csv``), rebuilt after every finished run.

Imported models (the study's ``models:``, :mod:`moelab.study.imported`) are not trained: their
run directory is prepared from the checkpoint and evaluated with the same suite (then sampled and
post-trained when the study asks), exactly once like any run.

Re-running the same command skips done runs, resumes unfinished ones from their last
checkpoint (the trainer does that), and skips failed runs unless ``retry_failed``. A
diverged run is a result, not an error: it is kept and not retried (resuming it would
diverge again at the same step). A failing run never stops the others: the worker catches
its exception, saves the traceback to ``runs/<id>/error.txt`` and the sweep marks the run
``failed`` with the one-line message.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from moelab.atomic import atomic_write_json, atomic_write_text
from moelab.config import StudyConfig, dump_yaml, read_yaml, validate
from moelab.errors import UserError
from moelab.study import store
from moelab.study.executors import Job, make_executor
from moelab.study.lock import SweepLock
from moelab.study.plan import PlannedRun, plan
from moelab.study.precision_plan import fix_precisions, recorded_precisions


@dataclass
class SweepResult:
    out: Path
    planned: int  # every point of the grid, infeasible ones included
    feasible: int
    executor: str = "local"
    workers: int = 1
    done: list[str] = field(default_factory=list)  # done at the end (skipped or run now)
    failed: list[str] = field(default_factory=list)
    diverged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # not executed by this call (already finished)
    executed: list[str] = field(default_factory=list)  # executed by this call
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and len(self.done) + len(self.diverged) == self.feasible

    def to_dict(self) -> dict:
        return {"out": str(self.out), "planned": self.planned, "feasible": self.feasible, "executor": self.executor,
                "workers": self.workers, "done": self.done, "failed": self.failed, "diverged": self.diverged,
                "skipped": self.skipped, "executed": self.executed, "seconds": round(self.seconds, 3),
                "store": str(self.out / store.STORE_FILE)}


# ---------------------------------------------------------------- setting up DIR


def _prepare_out(out: Path) -> None:
    from moelab.outdir import claim_output

    claim_output(out, "sweep")  # a folder of another kind, or not moelab's, is refused before any write
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out {out}: cannot create ({err.strerror})") from None
    if not _writable(out):
        raise UserError(f"--out {out}: not writable")


def _writable(path: Path) -> bool:
    import os

    return os.access(path, os.W_OK | os.X_OK)


def _check_same_study(study: StudyConfig, out: Path) -> bool:
    """True when ``out`` already holds this study; ``UserError`` when it holds another one."""
    path = out / store.STUDY_FILE
    if not path.is_file():
        return False
    try:
        saved = validate(StudyConfig, read_yaml(path), str(path))
    except UserError:
        raise UserError(f"--out {out}: output directory holds a different study ({path} is not a valid study)") \
            from None
    old, new = saved.model_dump(mode="json"), study.model_dump(mode="json")
    for d in (old, new):  # loggers are operational: turning TensorBoard on does not make another study
        d["base"].pop("logging", None)
        if isinstance(d.get("posttrain"), dict):
            d["posttrain"].pop("logging", None)
    if old != new:
        diff = _first_difference(old, new)
        raise UserError(f"--out {out}: output directory holds a different study ({diff}); use a new --out")
    return True


def _first_difference(old, new, path: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else key)
    return f"{path or 'study'}: {old!r} there, {new!r} now"


# ---------------------------------------------------------------- the sweep


def sweep(study: StudyConfig, out: str | Path, *, executor: str = "local", workers: int | None = None,
          retry_failed: bool = False, address: str | None = None, progress: bool = True) -> SweepResult:
    """Train and evaluate every feasible run of ``study`` into ``out``; see the module docstring."""
    from moelab.study.validate import check_study

    out = Path(out)
    started = time.time()
    check_study(study)  # tasks, splits, files, GRPO/TTC options, loggers, lm-eval: before anything is written
    runs = plan(study)
    feasible = [r for r in runs if r.feasible]
    if not feasible:
        reason = runs[0].reason if runs else "empty grid"
        raise UserError(f"study '{study.name}': no feasible run ({reason})")
    _check_sources(feasible, out)
    wants_cuda = any(r.config.train.device != "cpu" for r in feasible)
    ex = make_executor(executor, workers=workers, address=address, uses_cuda=wants_cuda)  # checks before writing
    _prepare_out(out)
    _check_same_study(study, out)  # a different study is refused before the lock file is made
    with SweepLock(out):
        if not _check_same_study(study, out):
            atomic_write_text(out / store.STUDY_FILE, dump_yaml(study))
        # Precisions are fixed here, once, and read back by every later invocation (study.precision_plan).
        precisions = fix_precisions(feasible, recorded_precisions(store.saved_plan_rows(out) or []),
                                    lambda run_id: store.run_dir(out, run_id))
        atomic_write_json(out / store.PLAN_FILE, {"study": study.name, "runs": [
            store.plan_row(r) | precisions.get(r.run_id, {}) for r in runs]})
        result = SweepResult(out=out, planned=len(runs), feasible=len(feasible), executor=ex.name)
        jobs = _jobs_to_run(feasible, out, retry_failed, result, study)
        store.rebuild_store(out)
        try:
            if jobs:
                _execute(ex, jobs, {r.run_id: r for r in feasible}, out, result, progress)
        finally:
            store.rebuild_store(out)
        result.workers = ex.workers
        for r in feasible:
            state = store.run_state(store.read_status(store.run_dir(out, r.run_id)))
            {"done": result.done, "failed": result.failed, "diverged": result.diverged}.get(state, []).append(r.run_id)
        result.seconds = time.time() - started
    if progress:
        _print_summary(result)
    return result


def _check_sources(feasible: list[PlannedRun], out: Path) -> None:
    """A source is never its own destination: an imported checkpoint may not live inside ``out``."""
    where = out.resolve()
    for r in feasible:
        if r.imported and (Path(r.source).resolve() == where or where in Path(r.source).resolve().parents):
            raise UserError(f"--out {out}: holds the imported checkpoint {r.source}; use an --out outside it")


def _jobs_to_run(feasible: list[PlannedRun], out: Path, retry_failed: bool, result: SweepResult,
                 study: StudyConfig) -> list[Job]:
    jobs = []
    for r in feasible:
        rdir = store.run_dir(out, r.run_id)
        status = store.read_status(rdir)
        state = store.run_state(status)
        if status is None and (rdir / "status.json").exists():  # damaged: say so, then check the run again
            import warnings

            warnings.warn(f"{rdir / 'status.json'} was damaged; checking {r.run_id} again (training resumes "
                          "from its last checkpoint, a finished evaluation is kept)")
        if status is None:
            rdir.mkdir(parents=True, exist_ok=True)
            store.write_status(rdir, "pending", message="planned")
        retry = retry_failed or bool(status and status.get("retry_on_rerun"))  # e.g. the disk was full
        if state in ("done", "diverged") or (state == "failed" and not retry):
            result.skipped.append(r.run_id)
            continue
        imported = None
        if r.imported:
            from moelab.study.imported import import_record

            imported = import_record(r)
        jobs.append(Job(run_id=r.run_id, run_dir=str(rdir), config=r.config.model_dump(mode="json"),
                        posttrain=study.posttrain, ttc=study.ttc.model_dump() if study.ttc else None,
                        imported=imported))
    return jobs


def _record(out: Path, outcome: dict) -> dict:
    """Write the terminal ``status.json`` of a finished run from its worker's outcome."""
    rdir = store.run_dir(out, outcome["run_id"])
    previous = store.read_status(rdir) or {}
    keep = {k: v for k, v in previous.items() if k not in ("by", "retry_on_rerun")}
    common = {"by": "sweep", "seconds": round(float(outcome.get("seconds") or 0.0), 3),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    status = outcome["status"]
    if status == "done":
        what = "imported and evaluated" if outcome.get("imported") else "trained and evaluated"
        return store.write_status(rdir, "done", keep=keep, message=what, **common)
    if status == "diverged":
        return store.write_status(rdir, "diverged", keep=keep, step=outcome.get("step"),
                                  message=outcome.get("error") or "diverged", **common)
    error_file = rdir / "error.txt"
    extra = {"error_file": "error.txt"} if error_file.is_file() else {}
    if outcome.get("retry_on_rerun"):
        extra["retry_on_rerun"] = outcome["retry_on_rerun"]
    return store.write_status(rdir, "failed", keep=keep, message=outcome.get("error") or "failed", **common, **extra)


def _execute(ex, jobs: list[Job], planned: dict[str, PlannedRun], out: Path, result: SweepResult,
             progress: bool) -> None:
    display = _Display(jobs, planned, out, result, enabled=progress)
    with display, contextlib.closing(ex.run(jobs)) as outcomes:
        for outcome in outcomes:
            if outcome is None:
                display.refresh()
                continue
            _record(out, outcome)
            result.executed.append(outcome["run_id"])
            display.finished(outcome)
            store.rebuild_store(out)


# ---------------------------------------------------------------- progress display


class _Display:
    """A rich bar for the whole study (runs done / total, ETA by training FLOPs) and a line
    per finished run; the bar's text names the runs in flight and their step."""

    def __init__(self, jobs: list[Job], planned: dict[str, PlannedRun], out: Path, result: SweepResult,
                 enabled: bool):
        self.jobs, self.planned, self.out, self.result, self.enabled = jobs, planned, out, result, enabled
        self.pending = {j.run_id for j in jobs}
        trained = [planned[j.run_id].train_flops for j in jobs if not j.imported] or [1.0]
        # an imported model is only evaluated: it weighs as much as an average run to train
        self.flops = {j.run_id: max(sum(trained) / len(trained) if j.imported else planned[j.run_id].train_flops, 1.0)
                      for j in jobs}
        self.step0 = {j.run_id: self._steps(j.run_id)[0] for j in jobs}  # resumed runs start part-way
        self.finished_flops = 0.0
        self.t0 = time.time()
        self.bar = None

    def __enter__(self) -> "_Display":
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            from moelab.ui import console

            self.bar = Progress(TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("runs"),
                                TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console)
            self.bar.__enter__()
            total = len(self.planned)
            skipped = total - len(self.jobs)
            self.task = self.bar.add_task("sweep", total=total, completed=skipped, info="starting")
            if skipped:
                self.bar.console.print(f"{skipped} of {total} runs already finished; {len(self.jobs)} to run "
                                       f"({self.result.executor} executor)")
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def _steps(self, run_id: str) -> tuple[int, int]:
        status = store.read_status(store.run_dir(self.out, run_id)) or {}
        total = status.get("total_steps") or self.planned[run_id].steps or 1
        step = status.get("step") or 0
        return int(step), int(total)

    def _info(self) -> str:
        running, partial = [], 0.0
        for rid in sorted(self.pending):
            status = store.read_status(store.run_dir(self.out, rid)) or {}
            step, total = self._steps(rid)
            partial += self.flops[rid] * max(0, step - self.step0[rid]) / max(total, 1)
            if status.get("state") == "running" and self.planned[rid].imported:
                running.append(f"{rid} eval")
            elif status.get("state") == "running" and status.get("message") != "planned":
                running.append(f"{rid} {step}/{total}")
            elif status.get("state") == "done":
                running.append(f"{rid} eval")
        if not self.pending:
            return "all runs finished"
        done_flops = self.finished_flops + partial
        remaining = sum(self.flops.values()) - done_flops
        elapsed = time.time() - self.t0
        eta = ""
        if done_flops > 0 and elapsed > 1:
            from moelab.ui import _duration

            eta = f"ETA {_duration(remaining * elapsed / done_flops)}"
        shown = ", ".join(running[:3]) + (f" +{len(running) - 3}" if len(running) > 3 else "")
        return " · ".join(x for x in (eta, shown) if x)

    def refresh(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, info=self._info())

    def finished(self, outcome: dict) -> None:
        rid = outcome["run_id"]
        self.pending.discard(rid)
        self.finished_flops += self.flops.get(rid, 0.0) * (1 - self.step0.get(rid, 0) / max(self._steps(rid)[1], 1))
        if self.bar is None:
            return
        self.bar.update(self.task, advance=1, info=self._info())
        self.bar.console.print(_outcome_line(outcome, self.planned.get(rid)))


def _outcome_line(outcome: dict, run: PlannedRun | None) -> str:
    from moelab.ui import _duration

    rid, secs = outcome["run_id"], _duration(float(outcome.get("seconds") or 0.0))
    name = f" ({run.name})" if run is not None and run.name else ""
    if outcome["status"] == "done":
        s = outcome.get("summary") or {}
        bits = [f"{k.removeprefix('final_').replace('_', ' ')} {s[k]:.3f}"
                for k in ("final_train_loss", "final_val_loss") if isinstance(s.get(k), (int, float))]
        return f"[green]✓[/green] {rid}{name} done in {secs}" + "".join(f" · {b}" for b in bits)
    if outcome["status"] == "diverged":
        return f"[yellow]![/yellow] {rid}{name} diverged at step {outcome.get('step')}"
    return f"[red]✗[/red] {rid}{name} failed: {outcome.get('error')} (runs/{rid}/error.txt)"


def _print_summary(result: SweepResult) -> None:
    from moelab.ui import _duration, console

    parts = [f"{len(result.done)} done"]
    if result.failed:
        parts.append(f"[red]{len(result.failed)} failed[/red] (re-run with --retry-failed)")
    if result.diverged:
        parts.append(f"[yellow]{len(result.diverged)} diverged[/yellow]")
    left = result.feasible - len(result.done) - len(result.failed) - len(result.diverged)
    if left:
        parts.append(f"{left} unfinished")
    infeasible = result.planned - result.feasible
    if infeasible:
        parts.append(f"{infeasible} infeasible")
    console.print(f"sweep of {result.feasible} runs: " + ", ".join(parts) + f" in {_duration(result.seconds)}; "
                  f"results in {result.out / store.STORE_FILE}")


# ---------------------------------------------------------------- status of a sweep directory


def sweep_status(out: str | Path) -> list[dict]:
    """One row per planned run of ``out``: run_id, name, state, step/total, message — read from
    the per-run files (no store needed, works while a sweep runs)."""
    out = Path(out)
    if not out.is_dir():
        raise UserError(f"{out}: no such directory")
    rows = []
    for planned in store.load_plan_rows(out):
        rid = planned["run_id"]
        row = {"run_id": rid, "name": planned.get("name") or "", "state": "infeasible", "step": None,
               "total_steps": planned.get("steps"), "message": planned.get("reason") or ""}
        if planned.get("feasible"):
            status = store.read_status(store.run_dir(out, rid))
            row["state"] = store.run_state(status)
            if status:
                row["step"] = status.get("step")
                row["total_steps"] = status.get("total_steps") or row["total_steps"]
                row["message"] = status.get("message") or ""
            else:
                row["message"] = ""
            damaged = store.damaged_files(store.run_dir(out, rid))
            if damaged:
                row["state"], row["message"] = "corrupt", "damaged: " + "; ".join(damaged)
        rows.append(row)
    return rows
