"""The study report: the seed paper's figures for any (finished or partly finished) study.

    moelab report runs/smoke [--open]          # → runs/smoke/report/index.html
    build_report(Path("runs/smoke"))           # the same, as a function
    write_demo_report(rows, Path("out/report.html"), title="…")   # one self-contained file

Sections: a plain-language summary computed from the data; the study table (every planned run
with its status — failed, diverged, pending and missing runs shown as such); pretraining loss;
for each task family, task loss and accuracy against total parameters, TPP and density at fixed
FLOPs; the train–test generalization gap (and the learning-rate / init-std axes when the study
has them); the loss–accuracy gap (accuracy against task loss with a monotone fit and per-model
residuals); GRPO and test-time compute when present; optimal sparsity per family and budget /
active size with bootstrap intervals. Each figure's series is also written as CSV under
``report/data/``. A figure that needs more models than the study has is replaced by a note.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from moelab.accounting import human_count
from moelab.analysis import data as D
from moelab.analysis import html as H
from moelab.analysis.extras import grpo_pairs, grpo_reward_curves, ttc_curves
from moelab.analysis.figures import Figure, Style, fmt_si, isotonic_figure, optimum_figure, prepost_figure
from moelab.analysis.figures import reward_figure, series_figure, ttc_figure, write_csv
from moelab.analysis.fits import isotonic
from moelab.analysis.optimum import optimal_sparsity
from moelab.analysis.summary import NA, summarize
from moelab.stats import DECISION_RULE
from moelab.study.results import rows_to_csv

__all__ = ["build_report", "write_demo_report", "render_report"]

REPORT_DIR = "report"


@dataclass
class Section:
    title: str
    intro: str = ""  # HTML
    figures: list[Figure] = field(default_factory=list)
    tables: list[str] = field(default_factory=list)  # HTML, shown before the figures
    level: int = 2


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


# ---------------------------------------------------------------- sections


def _study_table(rows: list[dict], fams: list[str]) -> str:
    vary = [c for c in ("lr", "init_std", "seed") if len({r.get(c) for r in rows if r.get(c) is not None}) > 1]
    post = any(r.get("posttrain") for r in rows)
    header = ["run", "model", "status", "budget", "d", "E", "k", "sparsity", "total", "active", "tokens", "TPP",
              "FLOPs", *vary, *(["post-training"] if post else []), "train loss", "val loss"]
    splits = {f: D.splits_of(rows, f) for f in fams}
    for f in fams:
        header += [f"{f} task loss, {sp} [95 % CI]" for sp in splits[f]]
        header += [f"{f} acc., {sp} [95 % CI]" for sp in splits[f]]
    body, classes = [], []
    order = sorted(rows, key=lambda r: (D.num(r.get("budget")) or 0, D.num(r.get("active_size")) or 0,
                                        D.num(r.get("total_params")) or 0, str(r.get("run_id")), r.get("posttrain", "")))
    for r in order:
        status = r["status"]
        if status == "failed" and r.get("error"):
            status += f": {str(r['error'])[:120]}"
        elif status == "diverged":
            status += f" at step {r.get('diverged_step') or r.get('step') or '?'}"
        elif status == "infeasible" and r.get("reason"):
            status += f": {r['reason']}"
        n = D.num
        if r["status"] == "infeasible":
            body.append([r.get("run_id"), r.get("name") or "", status, fmt_si(n(r.get("budget"))), r.get("d_model"),
                         r.get("num_experts"), r.get("top_k")] + ["–"] * (len(header) - 7))
            classes.append("st-infeasible")
            continue
        name = (r.get("name") or "") + (" (imported)" if r.get("origin") == "imported" else "")
        row = [r.get("run_id"), name, status, fmt_si(n(r.get("budget"))), r.get("d_model"),
               r.get("num_experts"), r.get("top_k"), _f(n(r.get("sparsity")), ".3f"),
               _count(n(r.get("total_params"))), _count(n(r.get("active_params"))), fmt_si(n(r.get("tokens"))),
               _f(n(r.get("tpp")), ".3g"), fmt_si(n(r.get("train_flops"))), *[r.get(c) for c in vary],
               *([r.get("posttrain") or "–"] if post else []), _f(r.get("train_loss"), ".4f"),
               _f(r.get("val_loss"), ".4f")]
        for f in fams:
            row += [_with_ci(D.task_loss_of(f, rows, sp), r, ".3f") for sp in splits[f]]
            row += [_with_ci(D.accuracy_of(f, rows, sp), r, ".3f") for sp in splits[f]]
        body.append(row)
        classes.append(f"st-{r['status']}")
    return H.table(header, body, left=3, nowrap=2, row_classes=classes)


def _with_ci(q: D.Quantity, r: dict, spec: str) -> str:
    """``0.360 [0.306, 0.414]``: the value and its 95 % interval over items, where it has one."""
    v, ci = q.get(r), q.ci(r)
    if v is None:
        return "–"
    return f"{v:{spec}}" + (f" [{ci[0]:{spec}}, {ci[1]:{spec}}]" if ci else "")


def _f(v, spec: str) -> str:
    v = D.num(v)
    return "–" if v is None else format(v, spec)


def _count(v) -> str:
    return "–" if not v else human_count(v)


def _pretraining(rows, style, out) -> Section:
    done = D.completed(rows)
    figs = [series_figure(done, D.TOTAL, D.TRAIN_LOSS, out, "pretrain-train-loss-vs-total", style=style,
                          title="Pretraining train loss against total parameters",
                          caption="One line per active size (colour) and budget (line style); marker = top-k."),
            series_figure(done, D.TOTAL, D.VAL_LOSS, out, "pretrain-val-loss-vs-total", style=style,
                          title="Validation loss against total parameters",
                          caption="Held-out pretraining text; one line per active size.")]
    for y, tag, what in ((D.MEMO_LOSS, "memorisable", "the facts' own tokens (attribute values in biographies, "
                          "answers of QA pairs)"), (D.OTHER_LOSS, "other", "every other token of the corpus")):
        if D.present(done, y):  # claim 1's premise where capacity binds (moelab.eval.memorisable)
            figs.append(series_figure(done, D.TOTAL, y, out, f"pretrain-{tag}-loss-vs-total", style=style,
                                      title=f"Pretraining loss on {tag} tokens against total parameters",
                                      caption=f"Training-corpus sample; {what}."))
    return Section("Pretraining loss", intro=_no_train_log_note(rows), figures=figs)


def _no_train_log_note(rows) -> str:
    """Says which imported models have no pretraining loss (no train_log) and are left out."""
    missing = D.without_train_log(rows)
    if not missing:
        return ""
    names = ", ".join(H.esc(str(r.get("label"))) for r in missing)
    return (f'<p class="note">{len(missing)} imported model{"s" if len(missing) != 1 else ""} without a '
            f"<code>train_log</code> (no pretraining loss) left out of the figures that need one: {names}.</p>")


def _family(rows, fam, style, out) -> Section:
    done = D.completed(rows)
    loss, acc = D.task_loss_of(fam, rows), D.accuracy_of(fam, rows)
    s = _slug(fam)
    figs = []
    for y, yname in ((loss, "task loss"), (acc, "accuracy")):
        tag = "loss" if y is loss else "acc"
        figs += [
            series_figure(done, D.TOTAL, y, out, f"{s}-{tag}-vs-total", style=style,
                          title=f"{fam}: {yname} against total parameters",
                          caption="One line per active size; at fixed active size more experts = more total parameters."),
            series_figure(done, D.TPP, y, out, f"{s}-{tag}-vs-tpp", style=style,
                          title=f"{fam}: {yname} against tokens per parameter",
                          caption="TPP = training tokens / total parameters."),
            series_figure(done, D.DENSITY, y, out, f"{s}-{tag}-vs-density", style=style,
                          title=f"{fam}: {yname} against density k/E at fixed FLOPs",
                          caption="Each line holds budget and active size fixed (iso-FLOP): sparsity = 1 − density; "
                                  "left is sparser."),
        ]
    split = D.headline_split(rows, fam)
    why = (" (memorisation: the facts whose question/answer pairs were in pretraining; the held-out split, "
           "people known only from biographies, is in the study table and the gap section)"
           if D.HEADLINE_BY_TASK.get(fam) == split else "")
    intro = (f"<p>Task loss: NLL of the reference answer in bits per token, split <code>{H.esc(split)}</code>{why}; "
             f"accuracy: the task's scorer on greedy generations. Error bars: 95 % intervals over items.</p>")
    return Section(f"Task family: {fam}", intro=intro, figures=figs)


def _gaps(rows, fams, style, out) -> Section:
    done = D.completed(rows)
    figs = [series_figure(done, D.TOTAL, D.pretrain_gap(), out, "gap-pretrain-vs-total", style=style,
                          title="Pretraining generalization gap against total parameters",
                          caption="Validation − train loss (positive: held-out text is harder).")]
    for fam in fams:
        gap, s = D.task_gap_of(fam), _slug(fam)
        figs += [series_figure(done, D.TOTAL, gap, out, f"gap-{s}-vs-total", style=style,
                               title=f"{fam}: train–test gap against total parameters",
                               caption="Task loss on held-out items − task loss on train-split items."),
                 series_figure(done, D.TPP, gap, out, f"gap-{s}-vs-tpp", style=style,
                               title=f"{fam}: train–test gap against TPP")]
        for axis, q in (("lr", D.LR), ("init_std", D.INIT_STD)):
            if len({D.num(r.get(axis)) for r in done}) > 1:
                # seeds are replicates: a configuration's seeds are one mean ± sd point of its line
                others = [c for c in ("budget", "d_model", "num_experts", "top_k", "lr", "init_std") if c != axis]
                figs.append(series_figure(
                    done, q, gap, out, f"gap-{s}-vs-{axis}", style=style,
                    title=f"{fam}: train–test gap against {q.label}",
                    caption=f"One line per architecture (label: E and k) with everything but {axis} fixed.",
                    line_key=lambda r, o=others: tuple(D.num(r.get(c)) for c in o),
                    end_label=lambda r: f"E{r.get('num_experts')} k{r.get('top_k')}"))
    intro = "<p>Positive gap = worse on held-out data than on data like the training data.</p>" + _no_train_log_note(rows)
    return Section("Train–test generalization gap", intro=intro, figures=figs)


def _loss_accuracy(rows, fams, style, out) -> Section:
    done = D.completed(rows)
    figs = []
    for fam in fams:
        loss, acc, s = D.task_loss_of(fam, rows), D.accuracy_of(fam, rows), _slug(fam)
        pts = [(x, y) for r in done if (x := loss.get(r)) is not None and (y := acc.get(r)) is not None]
        title = f"{fam}: accuracy against task loss (monotone fit) and residuals"
        if len(pts) >= 2:
            fit = isotonic([p[0] for p in pts], [p[1] for p in pts], increasing=False)
            resid = [y - float(fit.predict(x)) for x, y in pts]
            worst = max(abs(v) for v in resid)
            figs.append(isotonic_figure(done, loss, acc, out, f"lossacc-{s}", title=title, style=style, fit=fit,
                                        caption=f"Isotonic (non-increasing) fit of accuracy on task loss across "
                                                f"{len(pts)} models; largest |residual| {worst:.3f}."))
        else:
            figs.append(Figure(f"lossacc-{s}", title, note=f"skipped: needs at least 2 models with task loss and "
                                                            f"accuracy (the study has {len(pts)})"))
        figs.append(series_figure(done, D.TRAIN_LOSS, acc, out, f"lossacc-{s}-vs-train-loss", style=style,
                                  title=f"{fam}: accuracy against pretraining train loss",
                                  caption="At equal train loss, compare active sizes (colours)."))
    intro = ("<p>How far accuracy departs from what task loss predicts: a model above the fit does better than "
             "its task loss suggests.</p>") + _no_train_log_note(rows)
    return Section("Loss–accuracy gap", intro=intro, figures=figs)


def _posttrain(rows, fams, style, out, prepost, study_dir=None) -> Section | None:
    if not prepost:
        return None
    rewards = grpo_reward_curves(study_dir, rows)
    figs = [reward_figure(rewards, out, "grpo-reward", title="GRPO: mean reward per step", style=style,
                          caption="The verifier's reward on each step's sampled completions, one line per model.")
            ] if rewards else []
    figs += [prepost_figure(prepost["pairs"], prepost["pre"](fam), prepost["post"](fam), out, f"grpo-{_slug(fam)}",
                           title=f"{fam}: accuracy before and after {prepost['kind']}", style=style, x=D.TOTAL,
                           ylabel=prepost["pre"](fam).label,
                           caption="Filled markers, solid lines: pretrained; open markers, dashed: post-trained.")
             for fam in fams]
    return Section("Post-training (GRPO)", intro=f"<p>{len(prepost['pairs'])} post-trained models.</p>", figures=figs)


def _ttc(style, out, curves) -> Section | None:
    if not curves:
        return None
    figs = []
    for task, c in curves.items():
        figs.append(ttc_figure(c, out, f"ttc-{_slug(task)}", title=f"{task}: test-time compute", style=style,
                               caption="Majority vote (solid, labelled E and k) and coverage pass@n (dotted) against "
                                       "samples per question."))
        pairs = [(dict(r, _greedy=cv.get("greedy"), _vote=cv["majority"][-1]),) * 2 for r, cv in c
                 if cv.get("majority")]
        n_max = max((cv["n"][-1] for _, cv in c if cv.get("n")), default=0)
        greedy = D.Quantity("greedy", "accuracy", lambda r: D.num(r.get("_greedy")), higher_is_better=True)
        vote = D.Quantity(f"majority@{n_max}", "accuracy", lambda r: D.num(r.get("_vote")), higher_is_better=True)
        figs.append(prepost_figure(pairs, greedy, vote, out, f"ttc-{_slug(task)}-vs-total", style=style, x=D.TOTAL,
                                   title=f"{task}: greedy and majority vote @{n_max} against total parameters",
                                   names=("greedy", f"majority vote @{n_max}"),
                                   ylabel=f"{task} accuracy (fraction of questions)",
                                   caption="Does voting change which sparsity is best? One pair of lines per active "
                                           "size."))
    return Section("Test-time compute", figures=figs)


def _optimal(rows, fams, style, out, optima) -> list[Section]:
    sections = []
    for fam in fams:
        groups = optima.get(fam, [])
        s = _slug(fam)
        if not groups:
            sections.append(Section(f"Optimal sparsity: {fam}", intro='<p class="note">No finished model has this '
                                    "family's metrics with a TPP; nothing to fit.</p>"))
            continue
        described = [g.describe() for g in groups]
        header = ["metric", "group", "models", "best model", "best value", "best TPP", "fitted optimum TPP",
                  "interval (TPP)", "inside range", "measured TPP"]
        body = []
        for d in described:
            interval = ("–" if d["interval_lo_tpp"] is None else
                        f"[{d['interval_lo_tpp']:.3g}, {d['interval_hi_tpp']:.3g}] ({d['interval_level']:.0%})")
            body.append([d["metric"], d["group"], d["models"], d["best_model"], _f(d["best_value"], ".4g"),
                         _f(d["best_tpp"], ".3g"), _f(d["fit_optimum_tpp"], ".3g"), interval,
                         {True: "yes", False: "no (edge)", None: "–"}[d["interior"]],
                         f"{_f(d['measured_tpp_min'], '.3g')} – {_f(d['measured_tpp_max'], '.3g')}"])
        write_csv(out / "data" / f"optimum-{s}.csv", list(described[0]), [list(d.values()) for d in described])
        figs = []
        for metric, tag in (("accuracy", "acc"), ("task_loss", "loss")):
            mg = [g for g in groups if g.metric == metric]
            if mg:
                figs.append(optimum_figure(mg, out, f"optimum-{s}-{tag}", style=style,
                                           title=f"{fam}: {metric.replace('_', ' ')} against TPP, fitted optimum",
                                           caption="Lines: quadratic fits in log10 TPP per active size (colour) and "
                                                   "pooled (black, dashed). Top: each fit's optimum with its bootstrap "
                                                   "interval (models resampled)."))
        intro = ("<p>Per budget and active size (and all active sizes of a budget pooled): the best measured model, "
                 "and a quadratic of the metric in log10 TPP whose optimum is located on the measured range with a "
                 "percentile bootstrap interval (models resampled with replacement, the curve refitted). "
                 "'no (edge)' means the fitted curve is monotone over the measured range: the optimum lies at or "
                 "beyond the edge.</p>")
        sections.append(Section(f"Optimal sparsity: {fam}", intro=intro, tables=[H.table(header, body, left=4)],
                                figures=figs))
    return sections


def _seed_spread(rows, fams, out) -> Section | None:
    """Mean ± sd over seeds per configuration, when the study has a seed axis."""
    from moelab.analysis.seeds import CONFIG_AXES, spread_rows, spread_summary

    header, body = spread_rows(rows, fams)
    if not body:
        return None
    write_csv(out / "data" / "seed-spread.csv", header, body)
    summary = [[key, f"{seed_sd:.3g}", f"{config_sd:.3g}", f"{config_sd / seed_sd:.2g}" if seed_sd else "–", n]
               for key, seed_sd, config_sd, n in spread_summary(rows, fams)]
    n_cfg = len(CONFIG_AXES)  # each row: the configuration, the number of seeds, then (mean, sd) pairs
    table = []
    for r in body:
        cfg = [fmt_si(r[0]), *("–" if v is None else f"{v:g}" for v in r[1:n_cfg])]
        stats = ["–" if m is None or sd is None else f"{m:.3g} ± {sd:.2g}"
                 for m, sd in zip(r[n_cfg + 1::2], r[n_cfg + 2::2])]
        table.append([*cfg, r[n_cfg], *stats])
    short = {"d_model": "d", "num_experts": "E", "top_k": "k", "init_std": "init std"}
    cols = [*(short.get(c, c) for c in CONFIG_AXES), "seeds", *(h.removesuffix(" mean") for h in header[n_cfg + 1::2])]
    intro = ("<p>The same configuration trained with different seeds (initialisation and batch order). A "
             "difference between configurations smaller than the seed spread is not an effect. Values: mean ± "
             "sample standard deviation over the seeds.</p>")
    return Section("Run-to-run spread (seeds)", intro=intro, tables=[
        H.table(["quantity", "median sd across seeds", "sd of configuration means", "ratio", "configurations"],
                summary, left=1),
        H.table(cols, table, left=n_cfg)])


# ---------------------------------------------------------------- assembling


def _sections(rows: list[dict], out: Path, study_dir: Path | None, *, n_boot: int) -> list[Section]:
    style = Style([r for r in rows if r["status"] == "done"] or rows)
    fams = D.families(rows)
    optima = {f: [g for m in ("accuracy", "task_loss") for g in optimal_sparsity(rows, f, metric=m, n_boot=n_boot)]
              for f in fams}
    prepost = grpo_pairs(rows)
    curves = ttc_curves(study_dir, rows)
    statements = summarize(rows, fams, optima, prepost=prepost, ttc=curves, margins=_margins(study_dir))
    cls = {"yes": "ans-yes", "no": "ans-no", "inconclusive": "ans-inconclusive", NA: "ans-na",
           "equivalent": "ans-yes", "not equivalent": "ans-no"}
    summary_tbl = H.table(["question", "answer", "evidence"], [[s.claim, s.answer, s.detail] for s in statements],
                          left=3, cell_classes={(i, 1): cls.get(s.answer, "") for i, s in enumerate(statements)})
    write_csv(out / "data" / "summary.csv", ["claim", "answer", "detail"],
              [[s.claim, s.answer, s.detail] for s in statements])
    (out / "data" / "study-table.csv").write_text(rows_to_csv([{k: v for k, v in r.items() if k != "config"}
                                                               for r in rows]), encoding="utf-8")
    sections = [
        Section("Summary", intro="<p>Each answer is computed from this study's numbers (evidence on the right). "
                                 f"<b>Decision rule.</b> {H.esc(DECISION_RULE)}</p>", tables=[summary_tbl]),
        Section("Study", tables=[_study_table(rows, fams)]),
        _pretraining(rows, style, out),
        *[_family(rows, f, style, out) for f in fams],
        _gaps(rows, fams, style, out),
        _loss_accuracy(rows, fams, style, out),
        _posttrain(rows, fams, style, out, prepost, study_dir),
        _ttc(style, out, curves),
        _seed_spread(rows, fams, out),
        *_optimal(rows, fams, style, out, optima),
    ]
    return [s for s in sections if s is not None]


def render_report(rows: list[dict], out: Path, *, title: str, source: str, study_dir: Path | None = None,
                  embed: bool = False, n_boot: int = 1000) -> str:
    """The report page's HTML for normalised ``rows``; figures and CSVs are written under ``out``."""
    sections = _sections(rows, out, study_dir, n_boot=n_boot)
    counts = {s: sum(r["status"] == s for r in rows) for s in D.STATUSES}
    meta = (f"{len(rows)} planned runs (" + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + f") · "
            f"source: {H.esc(source)} · built {time.strftime('%Y-%m-%d %H:%M')}")
    toc = "".join(f'<li><a href="#{_slug(s.title)}">{H.esc(s.title)}</a></li>' for s in sections)
    body = [f"<nav><ul>{toc}</ul></nav>"]
    for s in sections:
        body.append(f'<h{s.level} id="{_slug(s.title)}">{H.esc(s.title)}</h{s.level}>{s.intro}')
        body += s.tables
        body.append(H.figures(s.figures, embed=embed, base=out))
    if not embed:
        csvs = sorted((out / "data").glob("*.csv"))
        body.append('<h2 id="data">Data files</h2><p>' + " · ".join(
            f'<a href="data/{H.esc(p.name)}">{H.esc(p.name)}</a>' for p in csvs) + "</p>")
    return H.page(title, meta, "\n".join(body))


def build_report(study_dir: Path, *, n_boot: int = 1000) -> Path:
    """Build ``study_dir/report/index.html`` (+ PNGs and ``data/*.csv``) and return its path.

    The report directory is built beside the old one and swapped in whole.
    """
    from moelab.atomic import atomic_dir
    from moelab.resources import check_writable_dir

    study_dir = Path(study_dir)
    if study_dir.is_dir():  # a missing one is named by load_study_rows
        check_writable_dir(study_dir, "report: the study folder")  # read-only: refused before any work
    rows, source = D.load_study_rows(study_dir)
    name = _study_name(study_dir)
    with atomic_dir(study_dir / REPORT_DIR) as tmp:
        page = render_report(rows, tmp, title=f"moelab report — study '{name}'", source=source,
                             study_dir=study_dir, n_boot=n_boot)
        (tmp / "index.html").write_text(page, encoding="utf-8")
    return study_dir / REPORT_DIR / "index.html"


def write_demo_report(rows: list[dict], path: Path, title: str) -> Path:
    """One self-contained HTML file (figures embedded as base64) for the demo's rows."""
    from moelab.atomic import atomic_write_text

    path = Path(path)
    with tempfile.TemporaryDirectory() as tmp:
        page = render_report(D.normalise(rows), Path(tmp), title=title, source="this demo run", embed=True,
                             study_dir=path.parent if (path.parent / "runs").is_dir() else None)
    atomic_write_text(path, page)
    return path


def _margins(study_dir: Path | None):
    """The study file's equivalence margins (``analysis.equivalence``), declared before it ran; a bad
    value stops with the config's one-line error. None without a study file."""
    if study_dir is None or not (Path(study_dir) / "study.yaml").is_file():
        return None
    from moelab.config import AnalysisSection
    from moelab.config_io import read_yaml, validate

    # only the analysis section: a study file saved by an older moelab must not stop its report
    path = Path(study_dir) / "study.yaml"
    data = read_yaml(path)
    section = data.get("analysis") if isinstance(data, dict) else None
    return validate(AnalysisSection, section or {}, f"{path} (analysis)").equivalence


def _study_name(study_dir: Path) -> str:
    try:
        import yaml

        name = (yaml.safe_load((study_dir / "study.yaml").read_text()) or {}).get("name")
    except (OSError, ValueError, AttributeError):
        name = None
    return str(name or study_dir.resolve().name)
