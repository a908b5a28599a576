"""The calibration table of issue 25: each option's seed spread, read from finished sweeps.

    python scripts/calibration.py /work/cal/a /work/cal/b [--reeval] [--max-new-tokens 96]

For every sweep folder: per configuration (all but the seed), the mean, seed sd and range of held-out
reasoning accuracy (exact match), per-digit accuracy, the answer's task loss (bits/token), knowledge
accuracy (train split) and the pretraining loss on memorisable tokens; then the lottery criterion of
issue 25 item 3 (seed sd ≤ 10 points, mean within 30–90 %). ``--reeval`` evaluates every run again
with today's code (e.g. to add per-digit accuracy to runs evaluated before it existed); with
``--max-new-tokens`` the evaluation gets that generation budget (the eval section of the run's config
is otherwise used as trained).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

import torch

from moelab.config import load_run_config
from moelab.eval.run import evaluate_run

METRICS = [("accuracy/reasoning/heldout", "reasoning held-out", 100), ("digit_accuracy/reasoning/heldout",
           "per-digit held-out", 100), ("task_loss/reasoning/heldout", "answer loss (bits/tok)", 1),
           ("accuracy/implicit/heldout", "implicit held-out", 100), ("accuracy/implicit/train", "implicit train", 100),
           ("task_loss/implicit/heldout", "implicit loss (bits/tok)", 1),
           ("accuracy/knowledge/train", "knowledge train", 100), ("pretrain_loss_memorisable", "memorisable loss", 1),
           ("pretrain_val_loss", "val loss", 1)]


def evaluation(run_dir: Path, reeval: bool, max_new_tokens: int | None) -> dict:
    summary = run_dir / "eval" / "summary.json"
    if reeval and summary.is_file():
        shutil.move(summary, summary.with_suffix(".before-reeval.json"))
    cfg = load_run_config(run_dir / "config.yaml")
    if max_new_tokens:
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"max_new_tokens": max_new_tokens})})
    return evaluate_run(run_dir, cfg, progress=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweeps", nargs="+", type=Path)
    ap.add_argument("--reeval", action="store_true")
    ap.add_argument("--max-new-tokens", type=int)
    args = ap.parse_args()
    torch.set_num_threads(1)
    for sweep in args.sweeps:
        groups: dict[str, list[dict]] = defaultdict(list)
        for run_dir in sorted((sweep / "runs").iterdir()):
            if not (run_dir / "train_summary.json").is_file():
                continue
            config = run_dir.name.rsplit("-s", 1)[0]
            groups[config].append(evaluation(run_dir, args.reeval, args.max_new_tokens))
        for config, evals in groups.items():
            print(f"{sweep.name} {config}: {len(evals)} seeds")
            for key, label, scale in METRICS:
                values = [e[key] * scale for e in evals if e.get(key) is not None]
                if not values:
                    continue
                sd = statistics.stdev(values) if len(values) > 1 else float("nan")
                print(f"  {label:24s} mean {statistics.fmean(values):7.3f}  sd {sd:6.3f}  "
                      f"range [{min(values):.3f}, {max(values):.3f}]  " + " ".join(f"{v:.3g}" for v in values))
            acc = [e["accuracy/reasoning/heldout"] * 100 for e in evals if e.get("accuracy/reasoning/heldout") is not None]
            if len(acc) >= 2:
                mean, sd = statistics.fmean(acc), statistics.stdev(acc)
                ok = sd <= 10 and 30 <= mean <= 90
                print(f"  criterion (sd ≤ 10 points, mean 30–90 %): {'met' if ok else 'not met'} "
                      f"(mean {mean:.1f}, sd {sd:.1f})")
        print(json.dumps({"sweep": str(sweep), "configs": len(groups)}))


if __name__ == "__main__":
    main()
