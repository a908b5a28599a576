"""Seeds are replicates: five seeds per configuration are repeated points on their line, not lines.

The studies' CPU presets train every configuration with ``grid.seed: [0, 1, 2, 3, 4]``. A line of
models is (budget, active size, lr, init std); the verdicts pool a configuration's seeds (the
slope over all seed points, Welch's t between configurations), the figures draw a configuration
as its seed mean ± sd, and the typed table behind both holds floats.
"""

import math

import matplotlib
import numpy as np
import pytest
from scipy.stats import ttest_ind

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402

from moelab import stats  # noqa: E402
from moelab.analysis.data import TOTAL, VAL_LOSS, accuracy_of, normalise  # noqa: E402
from moelab.analysis.figures import Style, _points, draw_series, series_figure  # noqa: E402
from moelab.analysis.summary import best_at_largest, monotone_in_total  # noqa: E402
from moelab.analysis.table import se_column, table  # noqa: E402
from moelab.analysis.verdicts import detectable  # noqa: E402

from analysis_synth import make_rows, seeded_study  # noqa: E402

FALLS = "validation loss falls with total parameters at every active size"


# ---------------------------------------------------------------- (a) a planted effect, one seed-line against it


def test_a_planted_effect_reads_yes_though_one_seed_line_alone_goes_the_other_way():
    rng = np.random.default_rng(0)
    rows = seeded_study(rng, loss_slope=-0.10, seed_sd=0.01)
    # seed 4 of the d64 line: its own models rise with total parameters (a noisy seed can do that)
    flipped = [r for r in rows if r["d_model"] == 64 and r["seed"] == 4]
    centre = np.mean([math.log10(r["total_params"]) for r in flipped])
    for r in flipped:
        r["final_val_loss"] += 0.16 * (math.log10(r["total_params"]) - centre)
    rows = normalise(rows)
    alone = stats.slope_test([math.log10(r["total_params"]) for r in flipped], [r["final_val_loss"] for r in flipped])
    assert alone.estimate > 0  # as its own line it points the wrong way: the old per-seed rule said inconclusive
    s = monotone_in_total(rows, VAL_LOSS, increasing=False, what="validation loss")
    assert s.claim == FALLS
    assert s.answer == stats.YES, s.detail
    assert "5 seeds per configuration as replicates" in s.detail and "in 2 lines" in s.detail
    assert "over 60 models" in s.detail  # every seed a point: 2 lines × 6 configurations × 5 seeds


def test_the_pooled_slope_has_one_intercept_per_line_not_per_seed():
    rows = normalise(seeded_study(np.random.default_rng(1), loss_slope=-0.10))
    s = monotone_in_total(rows, VAL_LOSS, increasing=False, what="validation loss")
    frame = table(rows, quantities=[VAL_LOSS, TOTAL])
    x = np.log10(frame[TOTAL.key]).tolist()
    by_hand = stats.slope_test(x, frame[VAL_LOSS.key].tolist(), frame["d_model"].tolist(), level=stats.LEVEL)
    assert f"{by_hand.estimate:+.3g} nats/token per 10× total parameters" in s.detail
    assert by_hand.df == 60 - 2 - 1


# ---------------------------------------------------------------- (b) pure noise


def test_pure_noise_never_reads_yes_for_best_at_largest():
    """200 studies of seed and item noise alone (2 lines × 3 configurations × 5 seeds): the
    largest configuration is never found 'better' more often than the level allows."""
    rng = np.random.default_rng(2024)
    answers = []
    for _ in range(200):
        rows = normalise(seeded_study(rng, experts=(1, 4, 16)))
        answers.append(best_at_largest(rows, accuracy_of("knowledge", rows), what="knowledge accuracy").answer)
    rate = answers.count(stats.YES) / len(answers)
    assert rate <= 1 - stats.LEVEL, rate
    assert answers.count(stats.INCONCLUSIVE) >= 150  # decided as "cannot tell", not dodged


def test_welch_false_positive_rate_for_one_pair_is_at_most_the_level():
    """One line, two configurations, five seeds each, no item intervals: exactly Welch's test,
    whose one-sided false-positive rate is (1 − level) / 2 — below the level, and not zero."""
    rng = np.random.default_rng(7)
    yes = 0
    for _ in range(200):
        rows = seeded_study(rng, d_models=(64,), experts=(1, 8), acc_seed_sd=0.03)
        for r in rows:  # seed noise only: the accuracies have no interval over items
            for k in [k for k in r if k.startswith(("accuracy_lo", "accuracy_hi", "num_items"))]:
                del r[k]
        rows = normalise(rows)
        yes += best_at_largest(rows, accuracy_of("knowledge", rows), what="k").answer == stats.YES
    assert 0 < yes / 200 <= 1 - stats.LEVEL, yes


# ---------------------------------------------------------------- (c) Welch's interval by hand


def _pair_rows(a: list[float], b: list[float], *, intervals: bool = False) -> list[dict]:
    """One line: E=8 (the largest) with accuracies ``a`` over its seeds, E=1 with ``b``."""
    rows = []
    for e, values in ((8, a), (1, b)):
        for seed, acc in enumerate(values):
            total = 1e6 * e
            row = {"run_id": f"E{e}-s{seed}", "name": f"d64-E{e}-k1", "status": "done", "budget": 1e12,
                   "d_model": 64, "num_experts": e, "top_k": 1, "lr": 1e-3, "init_std": 0.02, "seed": seed,
                   "total_params": total, "active_params": 2e5, "accuracy/knowledge/train": acc}
            if intervals:
                row |= {"accuracy_lo/knowledge/train": acc - 0.05, "accuracy_hi/knowledge/train": acc + 0.05}
            rows.append(row)
    return normalise(rows)


def test_best_at_largest_is_welchs_interval_on_the_seeds():
    a = [0.41, 0.44, 0.39, 0.45, 0.42]
    b = [0.38, 0.40, 0.37, 0.43, 0.36]
    rows = _pair_rows(a, b)
    s = best_at_largest(rows, accuracy_of("knowledge", rows), what="knowledge accuracy")
    # by hand, with scipy: one line, so the level is the verdict's own 95 %
    result = ttest_ind(a, b, equal_var=False)
    ci = result.confidence_interval(confidence_level=0.95)
    diff = np.mean(a) - np.mean(b)
    assert f"= {diff * 100:+.3g} points, interval [{ci.low * 100:+.3g}, {ci.high * 100:+.3g}]" in s.detail, s.detail
    assert "5 seeds per configuration as replicates (Welch t interval on the seeds)" in s.detail
    assert "(5 vs 5 seeds)" in s.detail
    effect = stats.welch_test(a, b, level=0.95)
    assert (effect.lo, effect.hi) == pytest.approx((ci.low, ci.high))
    assert effect.df == pytest.approx(result.df)  # Welch–Satterthwaite, fractional
    se = math.sqrt(np.var(a, ddof=1) / 5 + np.var(b, ddof=1) / 5)
    assert effect.se == pytest.approx(se)
    assert effect.estimate / effect.se == pytest.approx(result.statistic)
    # the verdict follows the interval; an inconclusive one states the MDE from Welch's se and df
    assert s.answer == effect.verdict()
    if s.answer == stats.INCONCLUSIVE:
        mde = detectable(effect.se, effect.df, 0.95)
        assert f"an effect above {mde * 100:.3g} points would have been detected" in s.detail
        assert mde > detectable(effect.se, 0, 0.95)  # the t test with few seeds needs more than a z test


def test_seeds_that_agree_exactly_fall_back_on_the_items_standard_error():
    rows = _pair_rows([0.5] * 5, [0.45] * 5, intervals=True)
    s = best_at_largest(rows, accuracy_of("knowledge", rows), what="knowledge accuracy")
    item_se = stats.se_from_interval(0.45, 0.55)
    effect = stats.welch_test([0.5] * 5, [0.45] * 5, item_se=math.sqrt(2 * item_se**2 / 5), level=0.95)
    assert effect.se == pytest.approx(math.sqrt(2 * item_se**2 / 5)) and effect.df == 8
    assert f"interval [{effect.lo * 100:+.3g}, {effect.hi * 100:+.3g}]" in s.detail
    assert stats.welch_test([0.5] * 5, [0.45] * 5) is None  # no spread, no items: no interval


def test_one_seed_keeps_the_item_interval_rule():
    rows = _pair_rows([0.5], [0.4], intervals=True)
    s = best_at_largest(rows, accuracy_of("knowledge", rows), what="knowledge accuracy")
    se = stats.se_from_interval(0.45, 0.55)
    d = stats.difference_test(0.5, se, 0.4, se)
    assert f"interval [{d.lo * 100:+.3g}, {d.hi * 100:+.3g}]" in s.detail
    assert s.detail.startswith("one seed per configuration: the models' intervals over items")


# ---------------------------------------------------------------- (d) figures


def _draw(rows):
    fig, ax = plt.subplots()
    info = draw_series(ax, _points(rows, TOTAL, VAL_LOSS), VAL_LOSS, style=Style(rows))
    return fig, ax, info


def _data_lines(ax):
    """The lines through several points (not markers, not legend proxies)."""
    return [ln for ln in ax.lines if len(ln.get_xdata()) > 1 and ln.get_linestyle() not in ("None", "none", "")]


def test_a_seeded_study_draws_one_line_per_configuration_line_with_sd_error_bars():
    rows = normalise(seeded_study(np.random.default_rng(3)))
    fig, ax, info = _draw(rows)
    try:
        assert (info.min_n, info.max_n) == (5, 5)
        assert len(_data_lines(ax)) == 2  # one per (budget, active size, lr, init std), not 2 × 5 seeds
        bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        assert len(bars) == 12  # one per configuration: 2 active sizes × 6 E
        # a line's points are the seed means; the error bar spans ± the seeds' sample sd
        frame = table(rows, quantities=[VAL_LOSS])
        means = frame.groupby(["d_model", "num_experts"])[VAL_LOSS.key].agg(["mean", "std"])
        line_y = sorted(y for ln in _data_lines(ax) for y in ln.get_ydata())
        assert line_y == pytest.approx(sorted(means["mean"]))
        seg = bars[0].lines[2][0].get_segments()[0]  # the vertical bar: (x, mean − sd) to (x, mean + sd)
        sd = (seg[1][1] - seg[0][1]) / 2
        assert any(sd == pytest.approx(v) for v in means["std"])
        assert "mean ± sd over 5 seeds" in ax.get_legend_handles_labels()[1]
    finally:
        plt.close(fig)


def test_series_figure_says_mean_and_sd_over_seeds(tmp_path):
    import csv

    rows = normalise(seeded_study(np.random.default_rng(4), seeds=(0, 1, 2)))
    fig = series_figure(rows, TOTAL, VAL_LOSS, tmp_path, "val", title="t", style=Style(rows))
    assert "mean ± sd over 3 seeds per configuration" in fig.caption
    with open(fig.csv) as fh:
        data = list(csv.DictReader(fh))
    assert len(data) == 36 and {r["seeds"] for r in data} == {"3"} and data[0]["val_loss seed sd"]


def test_a_single_seed_study_looks_as_before():
    rows = normalise(make_rows(budgets=(1e12,), top_ks=(1,)))
    fig, ax, info = _draw(rows)
    try:
        assert info.max_n == 1
        assert len(_data_lines(ax)) == 1 and not ax.containers  # val loss has no item interval
        assert not any("seeds" in label for label in ax.get_legend_handles_labels()[1])
    finally:
        plt.close(fig)


# ---------------------------------------------------------------- (e) the typed table


def test_the_typed_table_has_float_columns_for_numbers_and_keeps_text():
    rows = normalise(seeded_study(np.random.default_rng(5), seeds=(0, 1)))
    rows[0]["lr"] = "0.001"  # text from a CSV
    rows[1]["final_val_loss"] = None
    rows[1]["val_loss"] = None
    acc = accuracy_of("knowledge", rows)
    frame = table(rows, quantities=[acc])
    for c in ("budget", "d_model", "num_experts", "top_k", "lr", "init_std", "seed", "total_params", "val_loss",
              "accuracy/knowledge/train", acc.key, se_column(acc), "active_size"):
        assert frame[c].dtype == np.float64, c
    assert frame.loc[0, "lr"] == 0.001 and np.isnan(frame.loc[1, "val_loss"])
    for c in ("status", "label", "run_id", "budget_kind", "posttrain"):
        assert frame[c].dtype == object and frame.loc[0, c] == rows[0][c], c
    assert frame[se_column(acc)].iloc[0] == pytest.approx(acc.se(rows[0]))
    # forced numeric: an axis every row lacks is a NaN column to group on
    empty = table([{"lr": None}, {"lr": ""}], numeric=["lr"])
    assert empty["lr"].dtype == np.float64 and empty["lr"].isna().all()
    # a column with any text that is not a number stays text
    assert table([{"x": 1}, {"x": "abc"}])["x"].dtype == object


def test_mixed_seed_counts_and_an_imported_model_without_seed_or_lr():
    """One configuration with a single seed beside five-seed ones, plus an imported model (no seed,
    no lr): every verdict and the figure still read them — the single seed by the items' rule, the
    imported model as a configuration of its own."""
    rng = np.random.default_rng(6)
    rows = seeded_study(rng, d_models=(64,), experts=(1, 4, 16))
    rows = [r for r in rows if not (r["num_experts"] == 16 and r["seed"] > 0)]  # the largest: one seed
    imported = dict(rows[0], run_id="hf-d64-E1", origin="imported", seed=None, lr=None, init_std=None)
    rows = normalise(rows + [imported])
    acc = accuracy_of("knowledge", rows)
    s = best_at_largest(rows, acc, what="knowledge accuracy")
    assert "1–5 seeds per configuration as replicates" in s.detail
    assert "against a single seed, the items' intervals plus the median seed sd" in s.detail
    assert "(1 vs 5 seeds)" in s.detail and s.answer != stats.NOT_ENOUGH
    assert monotone_in_total(rows, acc, increasing=True, what="knowledge accuracy").answer != stats.NOT_ENOUGH
    fig, ax, info = _draw(rows)
    try:
        assert (info.min_n, info.max_n) == (5, 5)  # configurations drawn with a bar: the five-seed ones
        assert len([c for c in ax.containers if isinstance(c, ErrorbarContainer)]) == 2
    finally:
        plt.close(fig)


# ---------------------------------------------------------------- claim 1's premise: memorisable tokens


def test_memorisable_loss_gets_its_row_figure_and_seed_spread_only_when_measured(tmp_path):
    from moelab.analysis.data import MEMO_LOSS, present
    from moelab.analysis.seeds import seed_quantities
    from moelab.analysis.summary import summarize

    rng = np.random.default_rng(3)
    rows = seeded_study(rng)
    assert not present(normalise(rows), MEMO_LOSS)
    claims = [s.claim for s in summarize(normalise(rows), ["knowledge"], {})]
    assert not any("memorisable" in c for c in claims)  # older evaluations: no row, no failure
    for r in rows:  # planted: the facts' own tokens get easier with total parameters, seeds scatter
        r["pretrain_loss_memorisable"] = 0.8 - 0.2 * (math.log10(r["total_params"]) - 5.5) + rng.normal(0, 0.01)
    rows = normalise(rows)
    statements = summarize(rows, ["knowledge"], {})
    [row] = [s for s in statements if s.claim.startswith("pretraining loss on memorisable tokens")]
    assert any(s.claim.startswith("pretrain_loss_memorisable differs between configurations") for s in statements)
    assert row.claim == "pretraining loss on memorisable tokens falls with total parameters at every active size"
    assert row.answer == stats.YES, row.detail
    assert MEMO_LOSS.key in [q.key for q in seed_quantities(rows, ["knowledge"])]
    fig = series_figure(rows, TOTAL, MEMO_LOSS, tmp_path, "memo", title="t", style=Style(rows))
    assert "mean ± sd over 5 seeds per configuration" in fig.caption
