"""lm-evaluation-harness cross-check: the harness and moelab agree on the same items, offline.

Items: the small world's held-out knowledge and reasoning questions, written to local JSONL files,
with harness task YAMLs over them (``dataset_path: json``). The harness runs through
``moelab eval lm-eval`` (a subprocess with HF_DATASETS_OFFLINE / HF_HUB_OFFLINE set) and through
``run_lm_eval`` on a Hugging Face Mixtral directory. What must agree:

* ``loglikelihood``: the harness's summed log-probability of each answer equals ``-nll`` of moelab's
  task loss (relative difference <= 1e-4 in fp32) — which holds only because the bridge makes the
  harness prepend BOS, as moelab does (the control below scores without BOS and disagrees);
* ``generate_until`` (greedy, moelab's stop strings as ``until``, ``max_gen_toks`` = moelab's
  ``max_new_tokens``): the same completion per item, and the harness's exact match (lower case,
  punctuation, articles and whitespace ignored) equals moelab's knowledge accuracy, per item and
  on average. A random model checks the completions token by token; a scripted model that answers
  one question right makes the accuracy non-trivial.

One difference is known and avoided by these items: the harness's exact match drops all whitespace,
moelab's normalisation only collapses it ("marine biology" vs "marinebiology").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from moelab.errors import UserError
from moelab.eval.tasks import REASONING_STOPS

from eval_helpers import scripted_model

MAX_NEW_TOKENS = 16
LOGLIK_TASK, GEN_TASK = "moelab_xcheck_loglik", "moelab_xcheck_gen"


def _write_jsonl(path, items):
    path.write_text("".join(json.dumps({"prompt": it.prompt, "answer": it.answer, "gold": it.gold}) + "\n"
                            for it in items))
    return path


def _harness_tasks(root, loglik_file, gen_file, cache_dir):
    """Two harness task YAMLs over local files: log-likelihood of the answer, and greedy generation."""
    common = {"dataset_path": "json", "test_split": "test", "doc_to_text": "{{prompt}}"}
    loglik = {
        **common, "task": LOGLIK_TASK, "output_type": "loglikelihood",
        "dataset_kwargs": {"data_files": {"test": str(loglik_file)}, "cache_dir": str(cache_dir)},
        "doc_to_target": "{{answer}}", "target_delimiter": "",  # moelab scores the answer exactly as written
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }
    gen = {
        **common, "task": GEN_TASK, "output_type": "generate_until",
        "dataset_kwargs": {"data_files": {"test": str(gen_file)}, "cache_dir": str(cache_dir)},
        "doc_to_target": "{{gold}}",
        # moelab's stops for a knowledge task file: the next few-shot question, then the newline.
        "generation_kwargs": {"until": [*REASONING_STOPS, "\n"], "max_gen_toks": MAX_NEW_TOKENS, "do_sample": False},
        "metric_list": [{"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
                         "ignore_case": True, "ignore_punctuation": True,
                         "regexes_to_ignore": [r"(?i)\b(?:a|an|the)\b", r"\s+"]}],
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "loglik.yaml").write_text(yaml.safe_dump(loglik))
    (root / "gen.yaml").write_text(yaml.safe_dump(gen))
    return root


@pytest.fixture(scope="module")
def setup(small_world, tokenizer, model, tmp_path_factory):
    """A saved tiny random model, the item files and the harness tasks over them."""
    from moelab.modelio import save_model_dir

    root = tmp_path_factory.mktemp("lmeval")
    tasks = small_world.tasks()
    knowledge = tasks["knowledge"].splits["heldout"][:10]
    reasoning = tasks["reasoning"].splits["heldout"][:10]
    loglik_file = _write_jsonl(root / "loglik.jsonl", knowledge + reasoning)
    gen_file = _write_jsonl(root / "gen.jsonl", knowledge)
    _harness_tasks(root / "tasks", loglik_file, gen_file, root / "datasets-cache")
    model_dir = save_model_dir(model, model.cfg, tokenizer, root / "model")
    return {"root": root, "model_dir": model_dir, "loglik_file": loglik_file, "gen_file": gen_file,
            "tasks_dir": root / "tasks", "knowledge": knowledge}


def _offline_env(root):
    return {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(root / "hf-home"),
            "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "2"}


def _samples(path):
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda d: d["doc_id"])


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-12)


def test_harness_agrees_with_moelab_through_the_cli(setup):
    """`moelab eval lm-eval` on a moelab model directory: log-likelihoods and greedy completions."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")  # lm-eval's "hf" model needs it
    from moelab.eval.accuracy import accuracy
    from moelab.eval.taskloss import encode_pairs, sequence_nll, task_loss
    from moelab.eval.tasks import get_task
    from moelab.modelio import load_model

    root, out = setup["root"], setup["root"] / "out-cli"
    proc = subprocess.run(
        [sys.executable, "-m", "moelab", "eval", "lm-eval", "--model", str(setup["model_dir"]),
         "--tasks", LOGLIK_TASK, GEN_TASK, "--include-path", str(setup["tasks_dir"]), "--device", "cpu",
         "--batch-size", "8", "--json", "--out", str(out)],
        capture_output=True, text=True, env=_offline_env(root), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert set(summary) == {LOGLIK_TASK, GEN_TASK}
    assert (out / "results.json").is_file()

    model, tok, _ = load_model(setup["model_dir"])
    # Log-likelihoods: the harness's sum of log-probs is moelab's -NLL, item by item.
    task = get_task(f"file:{setup['loglik_file']}")
    items = task.splits["heldout"]
    ours = task_loss(model, tok, items)
    theirs = _samples(out / f"samples_{LOGLIK_TASK}.jsonl")
    assert [d["doc"]["prompt"] for d in theirs] == [it.prompt for it in items]
    for d, nll in zip(theirs, ours.nll):
        assert _rel(-d["resps"][0][0][0], nll) <= 1e-4, (d["doc"], nll)
    # Control: without BOS (lm-eval's default for a tokenizer that adds none) the numbers differ.
    prompts, answers = encode_pairs(tok, [(it.prompt, it.answer) for it in items])
    no_bos, _, _ = sequence_nll(model, [p[1:] for p in prompts], answers)
    assert max(_rel(-d["resps"][0][0][0], x) for d, x in zip(theirs, no_bos)) > 1e-3

    # Greedy generation: identical completions, identical exact match.
    gen_task = get_task(f"file:{setup['gen_file']}")
    native = accuracy(model, tok, gen_task, max_new_tokens=MAX_NEW_TOKENS)
    theirs = _samples(out / f"samples_{GEN_TASK}.jsonl")
    assert [d["filtered_resps"][0] for d in theirs] == [r["completion"] for r in native.records]
    assert [bool(d["exact_match"]) for d in theirs] == [r["correct"] for r in native.records]
    assert summary[GEN_TASK]["exact_match"] == pytest.approx(native.accuracy)


def test_harness_accuracy_equals_moelab_on_a_hugging_face_directory(setup, tokenizer, tmp_path, monkeypatch):
    """``run_lm_eval`` on an HF Mixtral directory (passed as is) of a model that answers one question."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")
    from moelab.eval.accuracy import accuracy
    from moelab.eval.lmeval import run_lm_eval, summarize
    from moelab.eval.tasks import get_task
    from moelab.interop.hf import export_hf
    from moelab.modelio import load_model

    for key, value in _offline_env(setup["root"]).items():
        if key.startswith(("HF_", "TOKENIZERS")):
            monkeypatch.setenv(key, value)
    items = setup["knowledge"]
    ends = tokenizer.encode(items[0].prompt, add_special_tokens=False)[-1]
    script = None
    for it in items:  # a gold whose tokens, with "\nQuestion:", are all distinct
        ids = tokenizer.encode(f" {it.gold}\nQuestion:", add_special_tokens=False)
        if len(set(ids)) == len(ids) and ids[-1] == ends:
            script = f" {it.gold}\nQuestion:"
            break
    assert script is not None, "no knowledge item suits a scripted answer"
    model = scripted_model(tokenizer, script)
    hf_dir = export_hf(model, model.cfg, tmp_path / "hf", tokenizer=tokenizer)

    results = run_lm_eval(hf_dir, [GEN_TASK], include_path=setup["tasks_dir"], batch_size=4,
                          output=tmp_path / "out")
    harness = summarize(results)[GEN_TASK]["exact_match"]
    hf_model, hf_tok, _ = load_model(hf_dir)  # moelab's own view of the same directory
    native = accuracy(hf_model, hf_tok, get_task(f"file:{setup['gen_file']}"), max_new_tokens=MAX_NEW_TOKENS)
    assert 0 < native.accuracy < 1
    assert harness == pytest.approx(native.accuracy)
    per_doc = sorted(results["samples"][GEN_TASK], key=lambda d: d["doc_id"])
    assert [bool(d["exact_match"]) for d in per_doc] == [r["correct"] for r in native.records]
    assert (tmp_path / "out" / f"samples_{GEN_TASK}.jsonl").is_file()


MC_TASK = "moelab_xcheck_mc"


def test_plain_harness_on_an_export_agrees_with_moelab(setup, tokenizer, model, tmp_path, monkeypatch):
    """What users run — ``lm_eval --model hf --model_args pretrained=EXPORT``, no ``add_bos_token`` — on a
    moelab export: its tokenizer adds BOS by itself, so every log-likelihood is moelab's, and the
    multiple-choice metrics acc / acc_norm (per character) / acc_bytes (per byte) agree item by item."""
    lm_eval = pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")
    from lm_eval.tasks import TaskManager

    from moelab.data.world import TaskItem
    from moelab.eval.accuracy import accuracy
    from moelab.eval.lmeval import summarize
    from moelab.eval.taskloss import task_loss
    from moelab.eval.tasks import get_task
    from moelab.interop.hf import export_hf

    for key, value in _offline_env(setup["root"]).items():
        if key.startswith(("HF_", "TOKENIZERS")):
            monkeypatch.setenv(key, value)
    hf_dir = export_hf(model, model.cfg, tmp_path / "hf", tokenizer=tokenizer)
    # Multiple choice: the right answer among cities whose characters and UTF-8 bytes differ in number.
    others = [" São Paulo", " Kraków", " Zürich", " Oslo"]
    mc = [TaskItem(it.prompt, it.answer, it.gold,
                   meta={"choices": [others[k % 4], it.answer, others[(k + 1) % 4]], "label": 1})
          for k, it in enumerate(setup["knowledge"][:8])]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps({"prompt": it.prompt, "answer": it.answer, **it.meta}) + "\n"
                                               for it in mc))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "loglik.yaml").write_text((setup["tasks_dir"] / "loglik.yaml").read_text())
    (tasks / "mc.yaml").write_text(yaml.safe_dump({
        "task": MC_TASK, "dataset_path": "json", "test_split": "test", "output_type": "multiple_choice",
        "dataset_kwargs": {"data_files": {"test": str(tmp_path / "mc.jsonl")}, "cache_dir": str(tmp_path / "cache")},
        "doc_to_text": "{{prompt}}", "doc_to_choice": "choices", "doc_to_target": "label", "target_delimiter": "",
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True}
                        for m in ("acc", "acc_norm", "acc_bytes")],
    }))
    results = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={hf_dir},dtype=float32", tasks=[LOGLIK_TASK, MC_TASK],
        task_manager=TaskManager(include_path=str(tasks), include_defaults=False), batch_size=8, device="cpu",
        log_samples=True)

    items = get_task(f"file:{setup['loglik_file']}").splits["heldout"]
    theirs = sorted(results["samples"][LOGLIK_TASK], key=lambda d: d["doc_id"])
    for d, nll in zip(theirs, task_loss(model, tokenizer, items).nll, strict=True):
        assert _rel(-d["resps"][0][0][0], nll) <= 2e-5, (d["doc"], nll)
    native = accuracy(model, tokenizer, mc)
    theirs = sorted(results["samples"][MC_TASK], key=lambda d: d["doc_id"])
    for d, rec in zip(theirs, native.records, strict=True):
        assert [r[0][0] for r in d["resps"]] == pytest.approx(rec["logliks"], rel=2e-5)
        assert (d["acc"], d["acc_norm"], d["acc_bytes"]) == (rec["correct"], rec["correct_norm"], rec["correct_bytes"])
    agg = summarize(results)[MC_TASK]
    assert (agg["acc"], agg["acc_norm"], agg["acc_bytes"]) == pytest.approx((native.accuracy, native.acc_norm,
                                                                             native.acc_bytes))


def test_missing_lm_eval_names_the_extra(monkeypatch, capsys, setup):
    from moelab.cli import main
    from moelab.eval.lmeval import run_lm_eval

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` now raises ImportError
    with pytest.raises(UserError, match=r"pip install 'moelab\[lm-eval\]'"):
        run_lm_eval(setup["model_dir"], ["gsm8k"])
    assert main(["eval", "lm-eval", "--model", str(setup["model_dir"]), "--tasks", "gsm8k"]) == 2
    err = capsys.readouterr().err.strip()
    assert "moelab[lm-eval]" in err and len(err.splitlines()) == 1


def test_bad_arguments_are_user_errors(setup, tmp_path):
    pytest.importorskip("lm_eval")
    from moelab.eval.lmeval import run_lm_eval

    with pytest.raises(UserError, match="no such directory"):
        run_lm_eval(setup["model_dir"], [GEN_TASK], include_path=tmp_path / "nowhere")
    with pytest.raises(UserError, match="at least one task"):
        run_lm_eval(setup["model_dir"], [])
    with pytest.raises(UserError, match="--limit"):
        run_lm_eval(setup["model_dir"], [GEN_TASK], limit=0)
    with pytest.raises(UserError, match="no such model directory"):
        run_lm_eval(tmp_path / "no-model", [GEN_TASK], include_path=setup["tasks_dir"])
    lost = tmp_path / "lost"  # a task whose data file is gone: one line, not a traceback
    lost.mkdir()
    spec = yaml.safe_load((setup["tasks_dir"] / "gen.yaml").read_text())
    spec["task"] = "moelab_xcheck_lost"
    spec["dataset_kwargs"]["data_files"]["test"] = str(tmp_path / "gone.jsonl")
    (lost / "lost.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(UserError, match="could not read a file or dataset.*gone.jsonl"):
        run_lm_eval(setup["model_dir"], ["moelab_xcheck_lost"], include_path=lost)


def test_lm_evals_own_input_checks_end_in_one_line(setup, tmp_path, capsys):
    """A task config lm-eval itself refuses (here a metric it does not know, which it meets as a
    KeyError deep inside): the command's last stderr line says so, exit 2, no traceback."""
    pytest.importorskip("lm_eval")
    from moelab.cli import main

    bad = tmp_path / "bad"
    bad.mkdir()
    spec = yaml.safe_load((setup["tasks_dir"] / "gen.yaml").read_text())
    spec["task"] = "moelab_xcheck_badmetric"
    spec["metric_list"] = [{"metric": "no_such_metric"}]
    (bad / "bad.yaml").write_text(yaml.safe_dump(spec))
    code = main(["eval", "lm-eval", "--model", str(setup["model_dir"]), "--tasks", "moelab_xcheck_badmetric",
                 "--include-path", str(bad), "--limit", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("moelab: error: lm-eval refused the run: ")


def test_a_runs_evaluation_includes_the_studys_lm_eval_tasks(setup, tmp_path, monkeypatch):
    """``eval.lm_eval`` in a run's (or a study's base) config: ``evaluate_run`` runs those harness tasks
    on the run's model and keeps their metrics in ``eval/summary.json`` under ``lm_eval/<task>``; the
    study check refuses a task the harness does not know, before anything is written."""
    pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")
    import shutil

    from moelab.config import RunConfig, StudyConfig, dump_yaml
    from moelab.eval.run import evaluate_run
    from moelab.study.validate import check_study

    for key, value in _offline_env(setup["root"]).items():
        if key.startswith(("HF_", "TOKENIZERS")):
            monkeypatch.setenv(key, value)
    cfg = RunConfig.model_validate({"eval": {"tasks": [], "task_files": [str(setup["gen_file"])], "limit": 3,
                                             "max_new_tokens": MAX_NEW_TOKENS, "lm_eval": [GEN_TASK],
                                             "lm_eval_include": str(setup["tasks_dir"]), "lm_eval_limit": 3}})
    run = tmp_path / "run"
    shutil.copytree(setup["model_dir"], run / "model")
    (run / "config.yaml").write_text(dump_yaml(cfg))
    (run / "train_summary.json").write_text("{}")
    summary = evaluate_run(run, cfg, progress=False)
    assert set(summary["lm_eval"]) == {GEN_TASK} and 0 <= summary["lm_eval"][GEN_TASK]["exact_match"] <= 1
    assert json.loads((run / "eval" / "summary.json").read_text())["lm_eval"] == summary["lm_eval"]
    assert (run / "eval" / "lm-eval" / f"samples_{GEN_TASK}.jsonl").is_file()

    study = StudyConfig.model_validate({"tokens": [1e5], "base": {"eval": {
        "tasks": [], "lm_eval": ["moelab_no_such_task"], "lm_eval_include": str(setup["tasks_dir"])}}})
    with pytest.raises(UserError, match="base.eval.lm_eval: lm-eval task.*moelab_no_such_task"):
        check_study(study)


def test_summarize_and_json_of_harness_results():
    import numpy as np

    from moelab.eval.lmeval import _jsonable, summarize

    results = {"results": {"t": {"alias": "t", "exact_match,none": np.float64(0.5),
                                 "exact_match_stderr,none": "N/A", "acc,strict": 1.0}}}
    assert summarize(results) == {"t": {"exact_match": 0.5, "acc,strict": 1.0}}
    assert _jsonable({"a": (np.int64(3), float("nan")), "b": np.dtype("float32")}) == {"a": [3, None], "b": "float32"}


def test_model_args_align_bos_and_dtype(tmp_path):
    from moelab.eval.lmeval import _model_args

    fp32 = _model_args(tmp_path, bf16=False, max_length=128)
    assert fp32 == {"pretrained": str(tmp_path), "dtype": "float32", "add_bos_token": True, "max_length": 128}
    bf16 = _model_args(tmp_path, bf16=True, max_length=None)
    assert bf16["dtype"] == "float32" and bf16["mixed_precision_dtype"] == "bfloat16"
    assert bf16["softmax_dtype"] == "float32" and "max_length" not in bf16

