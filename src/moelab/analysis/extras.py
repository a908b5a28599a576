"""Post-training (GRPO) pairs and test-time-compute curves of a study, when it has them.

GRPO results are found in either form:

* **variant rows** — rows with ``posttrain`` set (e.g. ``grpo``), evaluated by the usual suite,
  linked to their pretrained row by ``base_run_id`` / ``pretrain_run_id`` / ``parent_run_id``,
  else by a ``run_id`` that extends the pretrained one (``<id>+grpo``, ``<id>/grpo``, ``<id>-grpo``),
  else by the same model name, budget, lr, init std and seed;
* **summary columns** on a pretrained row — the flattened GRPO summary
  (``grpo/accuracy_before``, ``grpo/accuracy_after``, ``grpo/task``, ``grpo/eval_split``).

TTC curves are the ``ttc.json`` files (:mod:`moelab.ttc.sampling`) under ``runs/<id>/ttc/`` and
``runs/<id>/eval/ttc-*/`` (and the same under a GRPO run's directory, ignored here).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from moelab.analysis.data import accuracy_of, completed, num

_LINKS = ("base_run_id", "pretrain_run_id", "parent_run_id")


def _match_key(r: dict) -> tuple:
    return (r.get("name"), num(r.get("budget")), num(r.get("lr")), num(r.get("init_std")), num(r.get("seed")))


def grpo_pairs(rows: list[dict]) -> dict | None:
    """``{"pairs": [(pre_row, post_row)], "post": family -> Quantity, "kind": str}`` or None."""
    pre_rows = completed(rows)
    by_id = {r.get("run_id"): r for r in pre_rows}
    by_key = {_match_key(r): r for r in pre_rows}
    post_rows = [r for r in rows if r["status"] == "done" and r.get("posttrain")]
    pairs = []
    for post in post_rows:
        pre = next((by_id[v] for c in _LINKS if (v := post.get(c)) in by_id), None)
        if pre is None:
            rid = str(post.get("run_id") or "")
            pre = next((r for i, r in by_id.items() if i and rid != i and rid.startswith(i) and rid[len(i)] in "+/-_:"),
                       None)
        pre = pre or by_key.get(_match_key(post))
        if pre is not None:
            pairs.append((pre, post))
    if pairs:
        kinds = sorted({p[1]["posttrain"] for p in pairs})
        return {"pairs": pairs, "post": lambda fam: accuracy_of(fam, [p[1] for p in pairs]), "kind": "/".join(kinds),
                "pre": lambda fam: accuracy_of(fam, [p[0] for p in pairs])}
    # summary columns: pre and post accuracy as the GRPO run measured them, on its own eval split
    synth = []
    split = "heldout"
    for r in pre_rows:
        before, after = num(r.get("grpo/accuracy_before")), num(r.get("grpo/accuracy_after"))
        task = r.get("grpo/task")
        if before is None or after is None or not task:
            continue
        split = str(r.get("grpo/eval_split") or "heldout")
        key = f"accuracy/{task}/{split}"
        synth.append(({**r, key: before}, {**r, key: after, "posttrain": "grpo"}))
    if not synth:
        return None
    return {"pairs": synth, "post": lambda fam: accuracy_of(fam, [], split),
            "pre": lambda fam: accuracy_of(fam, [], split), "kind": "grpo (its own before/after evaluation)"}


def ttc_curves(study_dir: Path | None, rows: list[dict]) -> dict[str, list[tuple[dict, dict]]]:
    """``{task: [(row, curves)]}`` for every ``ttc.json`` of a done, pretrained run."""
    out: dict[str, list[tuple[dict, dict]]] = defaultdict(list)
    if study_dir is None:
        return {}
    for r in completed(rows):
        rdir = Path(study_dir) / "runs" / str(r.get("run_id"))
        files = sorted([*rdir.glob("ttc/*.json"), *rdir.glob("ttc/*/ttc.json"), *rdir.glob("eval/ttc-*/ttc.json")])
        for f in files:
            try:
                c = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(c, dict) and isinstance(c.get("n"), list) and isinstance(c.get("majority"), list):
                out[str(c.get("task") or f.parent.name)].append((r, c))
    return dict(out)


def grpo_reward_curves(study_dir: Path | None, rows: list[dict]) -> list[tuple[dict, list[tuple[int, float, float]]]]:
    """``[(pretrained row, [(step, mean reward, reward sd)])]`` from each run's ``grpo/metrics.jsonl``."""
    if study_dir is None:
        return []
    out = []
    for r in completed(rows):
        path = Path(study_dir) / "runs" / str(r.get("run_id")) / "grpo" / "metrics.jsonl"
        try:
            lines = path.read_text().splitlines()
        except OSError:
            continue
        points = []
        for line in lines:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("kind") == "grpo" and num(rec.get("reward_mean")) is not None:
                points.append((int(rec["step"]), float(rec["reward_mean"]), num(rec.get("reward_std")) or 0.0))
        if points:
            out.append((r, sorted(points)))
    return out
