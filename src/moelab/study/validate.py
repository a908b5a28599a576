"""Everything a sweep would refuse, checked before its first step (``plan`` reports the same).

    from moelab.study.validate import check_study
    check_study(study)          # UserError naming the first problem; writes nothing

A config validates field by field when it loads (types, ranges, unknown keys, non-finite numbers,
repeated YAML keys). What needs more than one field, the world or an installed package is checked
here: the evaluation tasks and task files exist, every data source's file exists, the post-training and
test-time-compute sections name tasks and splits that exist, no two grid points are the same run, the
experiment loggers asked for are installed, lm-eval knows the ``eval.lm_eval`` tasks, and every
router gets a gradient from the task (measured: moelab.study.router_check). Without it, a
misspelt task trained every model first and failed after.
"""

from __future__ import annotations

from pathlib import Path

from moelab.config import StudyConfig
from moelab.errors import UserError


def _duplicates(values: list) -> list:
    seen, dup = set(), []
    for v in values:
        if v in seen and v not in dup:
            dup.append(v)
        seen.add(v)
    return dup


def check_grid(study: StudyConfig) -> None:
    """No axis lists a value twice (two grid points would be one run, trained twice or clobbered)."""
    axes = {"budgets": study.budgets, "tokens": study.tokens}
    axes |= {f"grid.{name}": list(getattr(study.grid, name)) for name in type(study.grid).model_fields}
    for name, values in axes.items():
        if not all(isinstance(v, (int, float)) for v in values):
            continue
        dup = _duplicates(list(values))
        if dup:
            raise UserError(f"study '{study.name}': {name} lists {dup[0]:g} twice; every grid point must be a "
                            "different run")


def check_sources(study: StudyConfig) -> None:
    for i, source in enumerate(study.base.data.sources):
        if source.kind in ("text", "jsonl", "parquet"):
            path = Path(source.path).expanduser()
            if not path.is_file():
                raise UserError(f"base.data.sources[{i}]: {source.path}: no such file")


def _task(name: str, world, where: str):
    from moelab.eval.tasks import get_task

    try:
        return get_task(name, world)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


def _split(task, split: str, where: str) -> None:
    try:
        task.items(split)
    except UserError as err:
        raise UserError(f"{where}: {err}") from None


def check_tasks(study: StudyConfig) -> None:
    """Evaluation, post-training and test-time-compute tasks and splits, in the study's own world."""
    from moelab.data.world import build_world
    from moelab.eval.taskfile import load_task_file

    ev = study.base.eval
    needs_world = bool(ev.tasks) or study.posttrain is not None or study.ttc is not None
    world = build_world(study.base.data.world) if needs_world else None
    for name in ev.tasks:
        _task(name, world, "base.eval.tasks")
    for path in ev.task_files:
        try:
            load_task_file(path)
        except UserError as err:
            raise UserError(f"base.eval.task_files: {err}") from None
    if study.ttc is not None:
        task = _task(study.ttc.task, world, "ttc.task")
        _split(task, study.ttc.split, "ttc.split")
    if study.posttrain is not None:
        from moelab.posttrain.grpo import load_grpo_config

        cfg = load_grpo_config({**study.posttrain, "model": "."}, "posttrain")
        task = _task(cfg.task, world, "posttrain.task")
        _split(task, cfg.train_split, "posttrain.train_split")
        _split(task, cfg.eval_split, "posttrain.eval_split")


def check_lm_eval(study: StudyConfig) -> None:
    """``eval.lm_eval``: the harness is installed and knows every task (its index takes seconds to build,
    so only when the study asks for lm-eval)."""
    ev = study.base.eval
    if not ev.lm_eval:
        return
    from moelab.eval.lmeval import require_lm_eval, task_manager

    require_lm_eval()
    if ev.lm_eval_include is not None and not Path(ev.lm_eval_include).expanduser().is_dir():
        raise UserError(f"base.eval.lm_eval_include: {ev.lm_eval_include}: no such directory")
    try:
        task_manager(ev.lm_eval, ev.lm_eval_include)
    except UserError as err:
        raise UserError(f"base.eval.lm_eval: {err}") from None


def check_loggers(study: StudyConfig) -> None:
    """The optional experiment loggers the study asks for are installed (else one line, not a failure per run)."""
    from moelab.train.loggers import require_loggers

    require_loggers(study.base.logging)
    if study.posttrain is not None:
        from moelab.posttrain.grpo import load_grpo_config

        require_loggers(load_grpo_config({**study.posttrain, "model": "."}, "posttrain").logging)


def check_study(study: StudyConfig) -> None:
    """Every check above; the first problem is a one-line ``UserError``."""
    from moelab.study.router_check import check_routers_learn

    check_grid(study)
    check_routers_learn(study)
    check_sources(study)
    check_tasks(study)
    check_loggers(study)
    check_lm_eval(study)
