#!/usr/bin/env python
"""Calibrate the default world: learning curves of a few models on its task families.

    .venv/bin/python scripts/calibrate_world.py --out runs/calib/A --model dense:64:1:1 \
        --tokens 6e6 --points 6 --world '{"qa_repeats": 4}'

Trains one model (``NAME:d_model:num_experts:top_k[:n_layers]``) on the world given by the
``paper-cpu`` preset's base config plus ``--world`` overrides, evaluates task loss and greedy
accuracy (train and held-out splits of every task) at ``--points`` evenly spaced checkpoints, and
appends one JSON line per point to ``OUT/curve.jsonl``. Re-running resumes (training and the
points already evaluated). ``--plot DIR…`` draws the curves of several such folders into one PNG.

This is the instrument's calibration (docs/reproduction.md, "Calibration"): it is run on
separate models before any study, and the world's defaults are chosen from its curves, never
from a study's results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _run_config(args):
    """The planner's run config for one model of the preset's design (same rules as a study)."""
    from moelab.config import GridConfig, RunConfig, StudyConfig, load_study_config
    from moelab.study.plan import plan

    study = load_study_config(args.preset).model_dump(mode="json")
    name, d, e, k, *rest = args.model.split(":")
    study["grid"] = GridConfig(d_model=[int(d)], num_experts=[int(e)], top_k=[int(k)]).model_dump()
    study["tokens"], study["budgets"] = [args.tokens], []
    if rest:
        study["base"]["model"]["n_layers"] = int(rest[0])
    study["base"]["data"]["world"].update(json.loads(args.world))
    (run,) = plan(StudyConfig.model_validate(study))
    assert run.feasible, run.reason
    every = max(1, run.steps // args.points)
    cfg = run.config.model_dump(mode="json")
    cfg["train"].update(checkpoint_every=every, keep_checkpoints=2, eval_every=every, precision=args.precision)
    cfg["eval"].update(limit=args.limit, max_new_tokens=args.max_new_tokens)
    cfg["name"] = name
    return RunConfig.model_validate(cfg), every


def calibrate(args) -> None:
    import torch

    from moelab.data.world import build_world
    from moelab.eval.gaps import evaluate_model
    from moelab.modelio import load_model
    from moelab.train.trainer import train

    torch.set_num_threads(args.threads)
    cfg, every = _run_config(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    curve = out / "curve.jsonl"
    done = {json.loads(line)["step"] for line in curve.read_text().splitlines()} if curve.is_file() else set()
    world = build_world(cfg.data.world)
    run_dir = out / "run"
    step = 0
    while True:
        started = time.time()
        state = train(cfg, run_dir, progress=False, max_steps_this_call=every)
        train_s = time.time() - started
        step = int(state.get("step", state.get("steps", 0)))
        if step not in done:
            started = time.time()
            model, tokenizer, _ = load_model(run_dir)
            result = evaluate_model(model, tokenizer, world, cfg.eval)
            record = {"step": step, "tokens": step * cfg.train.batch_size * cfg.data.seq_len,
                      "model": args.model, "world": json.loads(args.world),
                      "total_params": sum(p.numel() for p in model.parameters()),
                      "train_s": round(train_s, 1), "eval_s": round(time.time() - started, 1), **result}
            with curve.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            keys = [k for k in record if k.startswith("accuracy/") and k.count("/") == 2]
            print(f"{args.model} step {step}: " + ", ".join(f"{k[9:]} {record[k]:.3f}" for k in keys), flush=True)
        if state.get("state") != "running":
            break


def plot(folders: list[str], out_png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = []
    for folder in folders:
        lines = [json.loads(x) for x in (Path(folder) / "curve.jsonl").read_text().splitlines()]
        series.append((Path(folder).name, sorted(lines, key=lambda r: r["step"])))
    panels = [("accuracy", "knowledge"), ("accuracy", "reasoning"), ("task_loss", "knowledge"), ("task_loss", "reasoning")]
    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    for ax, (metric, task) in zip(axes, panels):
        for i, (name, rows) in enumerate(series):
            for split, style in (("train", "-"), ("heldout", "--")):
                key = f"{metric}/{task}/{split}"
                pts = [(r["tokens"], r[key]) for r in rows if r.get(key) is not None]
                if pts:
                    ax.plot(*zip(*pts), style, color=f"C{i}", marker="o", ms=3, label=f"{name} {split}")
        ax.set_xlabel("training tokens")
        ax.set_title(f"{task} {metric.replace('_', ' ')}" + (" (bits/token)" if metric == "task_loss" else ""))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    print(out_png)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out")
    p.add_argument("--model", default="dense:64:1:1")
    p.add_argument("--preset", default="paper-cpu")
    p.add_argument("--world", default="{}", help="JSON overrides of data.world")
    p.add_argument("--tokens", type=float, default=6e6)
    p.add_argument("--points", type=int, default=6)
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--precision", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--plot", nargs="+", help="curve folders to draw (with --out as the PNG path)")
    args = p.parse_args(argv)
    if args.plot:
        plot(args.plot, args.out)
    else:
        calibrate(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
