"""Executors: where a sweep's runs execute — a local process pool or a Ray cluster.

Both run :func:`run_job` for each :class:`Job` and hand back one outcome dict per run
(``{"run_id", "status": done|failed|diverged, "error", "step", "seconds", ...}``). The
worker writes the run's own files (the trainer's checkpoints, metrics, ``eval/``,
``error.txt``); the sweep writes the terminal ``status.json`` from the outcome.

* ``local`` — ``ProcessPoolExecutor`` (spawn). Each worker takes ``cores // workers`` torch
  threads so concurrent runs share the machine's cores; on CUDA each worker gets one GPU.
  A worker dies with the sweep (``PR_SET_PDEATHSIG`` on Linux, a parent watchdog elsewhere),
  so a killed sweep leaves no orphan still writing a run directory.
* ``ray`` — one ``@ray.remote`` task per run with ``num_cpus`` / ``num_gpus`` resources;
  ``address`` joins an existing cluster, otherwise a local Ray instance is started.

``Executor.run(jobs)`` is a generator: it yields an outcome each time a run finishes and
``None`` about every ``poll_s`` seconds in between, so the caller can refresh its display.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from moelab.errors import UserError

# A CPU training run gets this many cores by default (small MoE steps gain little beyond).
THREADS_PER_RUN = 4
# A run directory still locked after this long belongs to another live process.
RUN_LOCK_TIMEOUT_S = 60.0


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_workers(uses_cuda: bool, cores: int | None = None, num_gpus: int = 0) -> int:
    """One run per GPU on CUDA; on CPU ``max(1, cores // THREADS_PER_RUN)`` (1 on a 2-core box)."""
    if uses_cuda and num_gpus > 0:
        return num_gpus
    return max(1, (cores or available_cores()) // THREADS_PER_RUN)


@dataclass
class Job:
    """One run to execute: everything a worker needs, picklable and JSON-ish."""

    run_id: str
    run_dir: str
    config: dict  # RunConfig.model_dump(mode="json")
    threads: int = 1
    uses_cuda: bool = False
    posttrain: dict | None = None  # the study's GRPO options, applied after evaluation
    ttc: dict | None = None  # the study's test-time-compute section
    imported: dict | None = None  # an imported model's record (moelab.study.imported): evaluate, do not train


# ---------------------------------------------------------------- the worker side


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    msg = text[0] if text else ""
    if isinstance(err, UserError) and msg:
        return msg  # already written for the user
    name = type(err).__name__
    return f"{name}: {msg}" if msg else name


def run_job(job: Job, progress: bool = False) -> dict:
    """Train, then evaluate, one run in ``job.run_dir`` (an imported model: prepare its run directory,
    then evaluate); never raises for a run's own failure.

    Exceptions become ``{"status": "failed", "error": one line}`` with the traceback in
    ``error.txt``; ``Diverged`` becomes ``{"status": "diverged", "step": N}``.
    """
    from moelab.study.lock import FileLock, Locked
    from moelab.study.store import read_status, write_status

    rdir = Path(job.run_dir)
    rdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    base = {"run_id": job.run_id, "pid": os.getpid(), "host": os.uname().nodename, "imported": bool(job.imported)}
    lock = FileLock(rdir / ".lock")
    try:
        lock.acquire(timeout=RUN_LOCK_TIMEOUT_S)
    except Locked as err:
        return base | {"status": "failed", "seconds": 0.0,
                       "error": f"run directory is locked by pid {err.pid} (another process is writing it)"}
    try:
        try:
            import torch

            torch.set_num_threads(max(1, job.threads))
            from moelab.config import RunConfig
            from moelab.eval.run import evaluate_run
            from moelab.train.trainer import Diverged, train

            cfg = RunConfig.model_validate(job.config)
            status = read_status(rdir)
            if job.imported:  # trained elsewhere: nothing to train, the evaluation below runs once
                from moelab.study.imported import prepare_run_dir

                write_status(rdir, "running", message="evaluating", pid=os.getpid(), host=base["host"])
                summary = prepare_run_dir(rdir, job.run_id, job.config, job.imported)
            else:
                if not status or status.get("state") != "done":
                    # the trainer's own "done" must stay: it lets train() return at once on a re-run
                    progress_so_far = {k: status[k] for k in ("step", "total_steps") if status and k in status}
                    write_status(rdir, "running", keep=progress_so_far, message="starting", pid=os.getpid(),
                                 host=base["host"])
                summary = train(cfg, rdir, progress=progress)
            evaluation = evaluate_run(rdir, cfg, progress=progress)
            if job.ttc:
                sample_run(rdir, cfg, job.ttc)
            if job.posttrain:
                posttrain_run(rdir, cfg, job.posttrain, progress=progress)
        except Diverged as err:
            return base | {"status": "diverged", "step": err.step, "error": str(err),
                           "seconds": time.time() - started}
        except Exception as err:  # a run's failure must never stop the sweep
            try:
                (rdir / "error.txt").write_text(traceback.format_exc())
            except OSError:
                pass
            from moelab.atomic import is_disk_full

            # a full disk is no fault of the run: the next sweep retries it without --retry-failed
            retry = {"retry_on_rerun": "disk full"} if is_disk_full(err) else {}
            return base | {"status": "failed", "error": _one_line(err), "seconds": time.time() - started, **retry}
        (rdir / "error.txt").unlink(missing_ok=True)
        return base | {"status": "done", "seconds": time.time() - started,
                       "summary": _scalars(summary), "evaluation": _scalars(evaluation)}
    finally:
        lock.release()


def sample_run(rdir: Path, cfg, section: dict) -> Path:
    """Test-time compute for one trained run, once: ``rdir/ttc/<task>-n<N>/{samples.jsonl, ttc.json}``."""
    from moelab.config import TTCSection
    from moelab.data.world import build_world
    from moelab.eval.tasks import get_task, task_label
    from moelab.modelio import load_model
    from moelab.ttc.sampling import sample_task

    t = TTCSection.model_validate(section)
    out = rdir / "ttc" / f"{task_label(t.task).replace('/', '_').replace(':', '_')}-n{t.samples}"
    if (out / "ttc.json").is_file():
        return out
    model, tok, _ = load_model(rdir)
    task = get_task(t.task, build_world(cfg.data.world))
    result = sample_task(model, tok, task, samples=t.samples, split=t.split, limit=t.limit,
                         temperature=t.temperature, top_p=t.top_p, max_new_tokens=t.max_new_tokens, seed=t.seed)
    result.write(out)
    return out


def posttrain_run(rdir: Path, cfg, section: dict, *, progress: bool = False) -> dict:
    """GRPO on one trained run (resumable), then the same evaluation suite on the post-trained
    model: ``rdir/grpo/model`` and ``rdir/grpo/eval/summary.json`` (the store's ``+grpo`` row)."""
    import json

    from moelab.atomic import atomic_write_json
    from moelab.data.world import build_world
    from moelab.eval.gaps import evaluate_model
    from moelab.eval.tasks import get_task
    from moelab.modelio import load_model
    from moelab.posttrain.grpo import grpo, load_grpo_config

    gdir = rdir / "grpo"
    from moelab.jsonfile import json_problem, read_json

    cached = gdir / "eval" / "summary.json"
    if cached.is_file() and not json_problem(cached):  # a damaged cache is evaluated again
        return json.loads(cached.read_text())
    # The study's loggers (base.logging) log the post-training too, unless the section names its own.
    gcfg = load_grpo_config({"logging": cfg.logging.model_dump(mode="json"), **section, "model": str(rdir)}, "posttrain")
    world = build_world(cfg.data.world)
    grpo(gcfg, gdir, task=get_task(gcfg.task, world), world=world, progress=progress)
    model, tok, _ = load_model(gdir / "model")
    train_summary = read_json(rdir / "train_summary.json")
    evaluation = evaluate_model(model, tok, world, cfg.eval, train_summary=train_summary)
    atomic_write_json(cached, evaluation)
    return evaluation


def _scalars(d) -> dict:
    if not isinstance(d, dict):
        return {}
    return {k: v for k, v in d.items() if isinstance(v, (int, float, str, bool)) or v is None}


def _die_with_parent() -> None:
    """Make this worker exit when the process that started it dies (even by SIGKILL)."""
    parent = os.getppid()
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
        return
    except (OSError, AttributeError):
        pass

    def watch() -> None:  # portable fallback: poll the parent
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True, name="moelab-parent-watch").start()


def _init_local_worker(threads: int, gpu_queue) -> None:
    import signal

    from moelab.cpu_alloc import keep_freed_memory

    _die_with_parent()
    keep_freed_memory()
    # Ctrl-C goes to the sweep, which stops the pool; the runs resume from their checkpoints.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    if gpu_queue is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_queue.get())


# ---------------------------------------------------------------- executors


class Executor:
    name = "base"
    workers = 1

    def run(self, jobs: list[Job]) -> Iterator[dict | None]:
        raise NotImplementedError


class LocalExecutor(Executor):
    """A spawn-context process pool of ``workers`` processes sharing the machine's cores."""

    name = "local"

    def __init__(self, workers: int | None = None, *, uses_cuda: bool = False, poll_s: float = 1.0):
        self.cores = available_cores()
        self.num_gpus = _cuda_device_count() if uses_cuda else 0
        self.uses_cuda = uses_cuda and self.num_gpus > 0
        self.workers = workers or default_workers(self.uses_cuda, self.cores, self.num_gpus)
        if self.uses_cuda and self.workers > self.num_gpus:
            raise UserError(f"--workers {self.workers}: only {self.num_gpus} GPU(s) for CUDA runs")
        self.threads = max(1, self.cores // self.workers)
        self.poll_s = poll_s

    def _pool(self, n: int):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("spawn")
        queue = None
        if self.uses_cuda:
            queue = ctx.Queue()
            for i in range(self.num_gpus):
                queue.put(i)
        return ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_local_worker,
                                   initargs=(self.threads, queue))

    def run(self, jobs: list[Job]) -> Iterator[dict | None]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        todo = list(jobs)
        for job in todo:
            job.threads = self.threads
        crashes: dict[str, int] = {}
        while todo:
            pool = self._pool(min(self.workers, len(todo)))
            futures = {pool.submit(run_job, job): job for job in todo}
            todo = []
            finished = progressed = False
            try:
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, timeout=self.poll_s, return_when=FIRST_COMPLETED)
                    if not done:
                        yield None
                        continue
                    for fut in done:
                        job = futures[fut]
                        try:
                            outcome = fut.result()
                            progressed = True
                            yield outcome
                        except BrokenProcessPool:
                            # A worker died (killed, out of memory, segfault) and every unfinished future
                            # broke with it. Runs that were executing get one more try, then fail; runs
                            # that had not started go round again in a fresh pool.
                            if _crashed_mid_run(job):
                                crashes[job.run_id] = crashes.get(job.run_id, 0) + 1
                                progressed = True
                            if crashes.get(job.run_id, 0) >= 2:
                                yield {"run_id": job.run_id, "status": "failed", "seconds": 0.0,
                                       "error": "the worker process died twice (killed or out of memory?)"}
                            else:
                                todo.append(job)
                        except Exception as err:  # e.g. the job could not be pickled
                            yield {"run_id": job.run_id, "status": "failed", "seconds": 0.0, "error": _one_line(err)}
                finished = True
            finally:
                _stop_pool(pool, graceful=finished)
            if todo and not progressed:  # workers die before running anything: do not loop forever
                raise RuntimeError("the local process pool's workers exited before running any run "
                                   "(see the errors above); no run was started")


def _crashed_mid_run(job: Job) -> bool:
    """The run's lock file still names a holder but nobody holds it: its worker died mid-run
    (a worker that finishes releases the lock and clears the PID)."""
    from moelab.study.lock import FileLock, Locked, read_pid

    path = Path(job.run_dir) / ".lock"
    if read_pid(path) is None:
        return False
    lock = FileLock(path)
    try:
        lock.acquire()
    except Locked:
        return False
    lock.release()
    return True


def _stop_pool(pool, *, graceful: bool) -> None:
    """Shut the pool down; on an early exit (Ctrl-C, an error, a closed generator) kill its
    workers rather than wait for their runs (which resume from their checkpoints next time)."""
    if graceful:
        pool.shutdown(wait=True)
        return
    procs = list((getattr(pool, "_processes", None) or {}).values())  # no public API before 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.kill()
    for p in procs:
        p.join(timeout=10)


def _cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


class RayExecutor(Executor):
    """One Ray task per run. ``address`` joins a cluster; otherwise a local instance is started
    (and shut down at the end). ``workers`` caps concurrency through each task's ``num_cpus``."""

    name = "ray"

    def __init__(self, workers: int | None = None, *, address: str | None = None, uses_cuda: bool = False,
                 poll_s: float = 1.0):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError("the ray executor needs Ray: pip install 'moelab[ray]' (or pip install ray)") from None
        self.address, self.requested_workers, self.uses_cuda, self.poll_s = address, workers, uses_cuda, poll_s
        self.workers = workers or 0

    def _connect(self) -> bool:
        import ray

        if ray.is_initialized():
            return False
        try:
            if self.address:
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(include_dashboard=False, log_to_driver=False)
        except Exception as err:  # ConnectionError, RuntimeError, ... — ray's own types vary by version
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
            raise UserError(f"cannot start or join {where}: {_one_line(err)}") from None
        return True

    def run(self, jobs: list[Job]) -> Iterator[dict | None]:
        import ray

        started_here = self._connect()
        try:
            res = ray.cluster_resources()
            cpus = max(1, int(res.get("CPU", 1)))
            gpus = int(res.get("GPU", 0))
            uses_cuda = self.uses_cuda and gpus > 0
            if self.requested_workers:
                per_run = max(1, cpus // self.requested_workers)
            else:
                per_run = max(1, min(THREADS_PER_RUN, cpus))
            self.workers = self.requested_workers or (gpus if uses_cuda else max(1, cpus // per_run))
            remote = ray.remote(_ray_run_job)
            refs = {}
            for job in jobs:
                job.threads = per_run
                job.uses_cuda = uses_cuda
                opts = {"num_cpus": per_run, "num_gpus": 1 if uses_cuda else 0, "max_retries": 0}
                refs[remote.options(**opts).remote(job)] = job
            pending = list(refs)
            while pending:
                done, pending = ray.wait(pending, num_returns=1, timeout=self.poll_s)
                if not done:
                    yield None
                    continue
                for ref in done:
                    job = refs[ref]
                    try:
                        yield ray.get(ref)
                    except Exception as err:  # the task's process died, or Ray failed to run it
                        yield {"run_id": job.run_id, "status": "failed", "seconds": 0.0,
                               "error": f"ray task failed: {_one_line(err)}"}
        finally:
            if started_here:
                ray.shutdown()


def _ray_run_job(job: Job) -> dict:
    from moelab.cpu_alloc import keep_freed_memory

    keep_freed_memory()
    return run_job(job)


def make_executor(name: str, *, workers: int | None = None, address: str | None = None,
                  uses_cuda: bool = False) -> Executor:
    if workers is not None and workers < 1:
        raise UserError(f"--workers: must be at least 1, got {workers}")
    if name == "local":
        if address:
            raise UserError("--address applies to the ray executor only")
        return LocalExecutor(workers, uses_cuda=uses_cuda)
    if name == "ray":
        return RayExecutor(workers, address=address, uses_cuda=uses_cuda)
    raise UserError(f"--executor: unknown executor '{name}' (choose local or ray)")
