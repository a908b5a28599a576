"""The folders the bad-input battery points its commands at: built once per test module.

``assets/`` holds a run directory with a (random) tiny model, its Hugging Face export, a sweep
directory with a results store, a valid study, run config and task file. Every case must leave all
of it byte for byte as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from rel_helpers import TINY_WORLD, make_fake_run, tiny_run

# A study small enough that validating it (it builds its world) takes milliseconds.
STUDY = {"name": "battery", "tokens": [2.0e+4],
         "grid": {"d_model": [32], "num_experts": [1, 2], "top_k": [1]},
         "base": {"model": {"n_layers": 1, "max_seq_len": 32},
                  "data": {"world": TINY_WORLD, "vocab_size": 300, "seq_len": 32},
                  "train": {"batch_size": 4, "device": "cpu", "precision": "fp32"}}}


def study(**overrides) -> dict:
    """STUDY with top-level keys replaced and ``base`` sections merged: ``study(base={"eval": {...}})``."""
    data = json.loads(json.dumps(STUDY))
    for key, value in overrides.items():
        if key == "base":
            for section, fields in value.items():
                data["base"].setdefault(section, {}).update(fields)
        else:
            data[key] = value
    return data


def _fake_sweep(root: Path) -> Path:
    """A finished two-run sweep as the sweep leaves it (study.yaml, plan.json, per-run files), and its store."""
    from moelab.config import StudyConfig, dump_yaml
    from moelab.study import store
    from moelab.study.plan import plan

    out = root / "sweep"
    out.mkdir()
    cfg = StudyConfig.model_validate(STUDY)
    (out / "study.yaml").write_text(dump_yaml(cfg))
    runs = plan(cfg)
    (out / "plan.json").write_text(json.dumps({"study": cfg.name, "runs": [store.plan_row(r) for r in runs]}))
    for i, r in enumerate(runs):
        rdir = store.run_dir(out, r.run_id)
        (rdir / "eval").mkdir(parents=True)
        store.write_status(rdir, "done", by="sweep", message="trained and evaluated")
        (rdir / "train_summary.json").write_text(json.dumps({"final_train_loss": 3.0 - i, "final_val_loss": 3.1 - i}))
        (rdir / "eval" / "summary.json").write_text(json.dumps(
            {"accuracy/knowledge/train": 0.2 + 0.1 * i, "accuracy/knowledge/heldout": 0.01}))
    store.rebuild_store(out)
    return out


def build_assets(root: Path) -> Path:
    from moelab.interop.hf import export_hf
    from moelab.modelio import load_model

    root.mkdir(parents=True, exist_ok=True)
    run = make_fake_run(root)
    model, tok, cfg = load_model(run / "model")
    export_hf(model, cfg, root / "hf", tokenizer=tok)
    _fake_sweep(root)
    (root / "study.yaml").write_text(yaml.safe_dump(STUDY, sort_keys=False))
    (root / "run.yaml").write_text(yaml.safe_dump(tiny_run(train={"steps": 2}), sort_keys=False))
    (root / "task.json").write_text(json.dumps([{"prompt": "Q: 1+1? A:", "answer": " 2"},
                                                {"prompt": "Q: 2+2? A:", "answer": " 4"}]))
    (root / "results.csv").write_text(
        "run_id,status,budget,d_model,num_experts,top_k,total_params,active_params,train_flops,"
        "accuracy/reasoning/heldout\n"
        "a,done,1e12,32,2,1,1000,800,1e12,0.5\n")
    (root / "advise").mkdir()  # a study measured at 6e10 FLOPs, as the issue-27 battery found it
    (root / "advise" / "results.csv").write_text(
        "run_id,status,budget,d_model,num_experts,top_k,total_params,active_params,tokens,tpp,train_flops,"
        "accuracy/reasoning/heldout,num_items/reasoning/heldout\n"
        "a,done,6e10,32,2,1,150000,100000,100000,0.667,6e10,0.30,50\n"
        "b,done,6e10,32,4,1,250000,100000,100000,0.4,6e10,0.35,50\n"
        "c,done,6e10,32,8,1,450000,100000,100000,0.222,6e10,0.32,50\n")
    (root / "afile").write_text("a regular file, not a directory\n")
    return root
