"""Power and equivalence: the figures match hand computations, and studies of noise read *equivalent*.

The noise study here varies top-k at fixed active parameters (expert width per k) with five seeds
per configuration; every model is the same model, so top-k truly has no effect and a margin above
the study's noise must read *equivalent*, never *yes* or *not equivalent*.
"""

import math

import numpy as np
import pytest
from scipy.stats import nct, norm, t

from moelab import stats
from moelab.analysis.data import families, normalise
from moelab.analysis.extras import grpo_pairs
from moelab.analysis.summary import summarize
from moelab.analysis.verdicts import (EQUIVALENT, NOT_EQUIVALENT, detectable, replicate_tost, smallest_margin,
                                      tost)
from moelab.config import EquivalenceMargins
from moelab.errors import UserError

from analysis_synth import ITEMS, evaluate_noise, noise_model, noise_study, params



# ---------------------------------------------------------------- hand computations


def test_tost_matches_the_two_one_sided_z_tests():
    # effect 0.01 ± 0.02 against ±0.05: p = max(P(Z > (0.01 + 0.05)/0.02), P(Z < (0.01 − 0.05)/0.02))
    eq = tost(0.01, 0.02, 0.05)
    assert eq.p == pytest.approx(max(norm.sf(3.0), norm.cdf(-2.0)))
    assert eq.p == pytest.approx(0.022750131948179, rel=1e-9)
    assert eq.answer == EQUIVALENT
    assert tost(0.01, 0.02, 0.05, level=0.99).answer == stats.INCONCLUSIVE  # α = 0.01 < 0.0228
    # shown beyond the margin: (0.2 − 0.05)/0.02 = 7.5 standard errors above +δ
    assert tost(0.2, 0.02, 0.05).answer == NOT_EQUIVALENT
    # with a t distribution: df = 4
    eq = tost(0.01, 0.02, 0.05, df=4)
    assert eq.p == pytest.approx(t.cdf(-2.0, 4))
    assert (eq.effect.lo, eq.effect.hi) == pytest.approx((0.01 - 2.7764451051977987 * 0.02,
                                                          0.01 + 2.7764451051977987 * 0.02))


def test_replicate_tost_is_statsmodels_and_matches_the_pooled_t_by_hand():
    a, b = [0.41, 0.38, 0.44, 0.40, 0.39], [0.40, 0.42, 0.37, 0.41, 0.43]
    eq = replicate_tost(a, b, 0.05, paired=False)
    ma, mb = np.mean(a), np.mean(b)
    sp2 = (np.sum((np.array(a) - ma) ** 2) + np.sum((np.array(b) - mb) ** 2)) / 8
    se = math.sqrt(sp2 * (1 / 5 + 1 / 5))
    p = max(t.sf((ma - mb + 0.05) / se, 8), t.cdf((ma - mb - 0.05) / se, 8))
    assert eq.p == pytest.approx(p, rel=1e-9)
    assert eq.effect.se == pytest.approx(se) and eq.effect.df == 8
    assert eq.answer == EQUIVALENT
    # paired: the differences' one-sample t test
    d = np.array(a) - np.array(b)
    se_d = d.std(ddof=1) / math.sqrt(5)
    eq = replicate_tost(a, b, 0.05, paired=True)
    assert eq.p == pytest.approx(max(t.sf((d.mean() + 0.05) / se_d, 4), t.cdf((d.mean() - 0.05) / se_d, 4)))


def test_minimum_detectable_effect_by_hand():
    # normal: (z₀.₉₇₅ + z₀.₈)·se = (1.95996 + 0.84162)·se; the far tail adds < 1e-6 of power
    assert detectable(0.1) == pytest.approx((1.959963984540054 + 0.8416212335729143) * 0.1, rel=1e-4)
    # Bonferroni level 0.999: (z₀.₉₉₉₅ + z₀.₈)·se
    assert detectable(0.1, level=0.999) == pytest.approx((norm.ppf(0.9995) + norm.ppf(0.8)) * 0.1, rel=1e-4)
    # t with df = 4: the exact noncentral t, so the power at the MDE is 80 %
    mde = detectable(0.1, df=4)
    crit = t.ppf(0.975, 4)
    power = nct.sf(crit, 4, mde / 0.1) + nct.cdf(-crit, 4, mde / 0.1)
    assert power == pytest.approx(0.80, abs=1e-3)
    assert mde == pytest.approx((t.ppf(0.975, 4) + t.ppf(0.8, 4)) * 0.1, rel=0.03)  # the textbook approximation
    # one degree of freedom at a Bonferroni level: a finite, huge figure (never the solver's bound)
    assert detectable(0.1, df=1, level=0.999) > 100 * 0.1
    assert detectable(None) is None and detectable(0.0) is None


def test_smallest_margin_by_hand():
    # TOST at α = 0.05 with no true effect reaches 80 % power when δ = (z₀.₉₅ + z₀.₉)·se
    assert smallest_margin(0.01) == pytest.approx((1.6448536269514722 + 1.2815515655446004) * 0.01)
    # check by simulation-free calculation: P(both one-sided tests reject | effect 0) at that δ
    delta, se = smallest_margin(0.01), 0.01
    p_both = norm.cdf(delta / se - norm.ppf(0.95)) - norm.cdf(-delta / se + norm.ppf(0.95))
    assert p_both == pytest.approx(0.80, abs=0.01)


def test_a_negative_margin_stops_with_one_line(tmp_path):
    from moelab.config import load_study_config

    with pytest.raises(Exception):
        EquivalenceMargins(accuracy=-0.05)
    f = tmp_path / "study.yaml"
    f.write_text("name: s\nbudgets: [1e12]\nanalysis: {equivalence: {accuracy: -0.05}}\n")
    with pytest.raises(UserError) as err:
        load_study_config(f)
    assert "\n" not in str(err.value).strip() and "accuracy" in str(err.value)
    f.write_text("name: s\nbudgets: [1e12]\nanalysis: {equivalence: {accuracy: 0.05, task_loss_bits: 0.02}}\n")
    assert load_study_config(f).analysis.equivalence.task_loss_bits == 0.02


# ---------------------------------------------------------------- studies


def _topknoise_study(seed: int, *, planted: float = 0.0) -> list[dict]:
    """Top-k 1 and 2 at the same active parameters, five seeds each; ``planted`` adds to k = 2's
    reasoning accuracy (headline: held-out)."""
    rng = np.random.default_rng(seed)
    item_bits, item_tokens, true_acc = noise_model(rng)
    rows = []
    for d in (48, 64):
        for e in (2, 4, 8, 16):
            for k in (1, 2):
                for sd in range(5):
                    total, active = params(d, e, 1)  # expert width per k: the same active parameters
                    tokens = 1e12 / (6 * active)
                    row = {"run_id": f"C1e12-d{d}-E{e}-k{k}-s{sd}", "status": "done", "budget": 1e12, "d_model": d,
                           "num_experts": e, "top_k": k, "lr": 1e-3, "init_std": 0.02, "seed": sd,
                           "total_params": total, "active_params": active, "tokens": tokens, "tpp": tokens / total,
                           "name": f"d{d}-E{e}-k{k}", "final_train_loss": 2.0 + rng.normal(0, 0.01),
                           "final_val_loss": 2.1 + rng.normal(0, 0.01)}
                    acc = dict(true_acc)
                    if k == 2:
                        acc[("reasoning", "heldout")] += planted
                    rows.append(row | evaluate_noise(rng, item_bits, item_tokens, acc))
    return rows


def _answers(rows, margins=None):
    rows = normalise(rows)
    fams = families(rows)
    return {s.claim: (s.answer, s.detail) for s in summarize(rows, fams, {}, prepost=grpo_pairs(rows),
                                                               margins=margins)}


MARGINS = EquivalenceMargins(accuracy=0.05, task_loss_bits=0.1)


@pytest.mark.parametrize("seed", range(2))
def test_noise_with_a_margin_above_its_noise_reads_equivalent_never_yes(seed):
    answers = _answers(_topknoise_study(seed), MARGINS)
    topk = {c: a for c, a in answers.items() if "top-k has little effect" in c}
    assert len(topk) == 4  # accuracy and task loss of both families
    assert {a for a, _ in topk.values()} == {EQUIVALENT}, topk
    assert all(a != stats.YES for c, (a, _) in answers.items() if c != "every feasible planned run finished")
    # every inconclusive says what it could have seen
    for c, (a, detail) in answers.items():
        if a == stats.INCONCLUSIVE and "rank correlation" not in detail and "between seeds" not in c:
            assert "would have been detected" in detail, (c, detail)


def test_a_planted_top_k_effect_is_not_equivalent():
    answers = _answers(_topknoise_study(5, planted=0.15), MARGINS)
    answer, detail = answers["reasoning accuracy: top-k has little effect at fixed active parameters (equivalence)"]
    assert answer == NOT_EQUIVALENT, detail
    assert "points" in detail
    # the knowledge rows of the same study stay equivalent
    assert answers["knowledge accuracy: top-k has little effect at fixed active parameters (equivalence)"][0] == \
        EQUIVALENT


def test_without_declared_margins_the_equivalence_rows_say_so():
    answers = _answers(_topknoise_study(0))
    a, detail = answers["reasoning accuracy: top-k has little effect at fixed active parameters (equivalence)"]
    assert a == stats.NOT_ENOUGH and "analysis.equivalence.accuracy" in detail


def test_grpo_on_noise_keeps_the_trend_or_cannot_tell_and_a_planted_trend_is_caught():
    rows = noise_study(1)
    answers = _answers(rows, MARGINS)
    claim = "GRPO keeps the knowledge accuracy trend in total parameters (equivalence)"
    assert answers[claim][0] in (EQUIVALENT, stats.INCONCLUSIVE), answers[claim]
    # GRPO that helps the large models 30 points per decade of total parameters changes the trend
    for r in rows:
        if r.get("posttrain") == "grpo":
            acc = min(0.99, 0.45 + 0.3 * (math.log10(r["total_params"]) - 5))
            r["accuracy/knowledge/train"] = acc
            r["accuracy_lo/knowledge/train"], r["accuracy_hi/knowledge/train"] = stats.wilson_interval(acc, ITEMS)
    assert _answers(rows, MARGINS)[claim][0] == NOT_EQUIVALENT


def test_the_report_reads_the_margins_from_the_study_file(tmp_path):
    from moelab.analysis.report import _margins

    assert _margins(tmp_path) is None
    (tmp_path / "study.yaml").write_text("name: s\nanalysis: {equivalence: {accuracy: 0.05}}\n")
    assert _margins(tmp_path).accuracy == 0.05 and _margins(tmp_path).task_loss_bits is None
    (tmp_path / "study.yaml").write_text("name: s\nanalysis: {equivalence: {accuracy: 0}}\n")
    with pytest.raises(UserError):
        _margins(tmp_path)


def test_top_k_equivalence_uses_the_seed_spread_not_only_the_items():
    """A 19-point top-k difference inside a 38-point seed spread is not evidence of anything: the
    item intervals alone (±1.4 points) would call it "not equivalent"."""
    import math
    import statistics

    from moelab.analysis.data import accuracy_of
    from moelab.analysis.equivalence import topk_little_effect

    rng = np.random.default_rng(11)
    rows = []
    for e in (4, 16):
        for k in (1, 2):
            for sd in range(5):
                acc = float(np.clip(rng.normal(0.6 - 0.19 * (k == 2), 0.38), 0, 1))
                half = 1.96 * math.sqrt(max(acc * (1 - acc), 0.01) / 300)
                rows.append({"run_id": f"r{e}{k}{sd}", "status": "done", "budget": 8e6, "d_model": 64,
                             "num_experts": e, "top_k": k, "lr": 3e-3, "init_std": 0.02, "seed": sd,
                             "total_params": 1e5 * e, "active_params": 1.5e5, "name": f"E{e}k{k}",
                             "accuracy/reasoning/heldout": acc, "accuracy_lo/reasoning/heldout": acc - half,
                             "accuracy_hi/reasoning/heldout": acc + half, "num_items/reasoning/heldout": 300})
    rows = normalise(rows)
    q = accuracy_of("reasoning", rows)
    s = topk_little_effect(rows, q, 0.05, what="reasoning accuracy", level=0.95)
    assert s.answer == stats.INCONCLUSIVE, s.detail
    assert "5–5 seeds per configuration as replicates within each of 2 set(s)" in s.detail
    # the standard error by hand: each set's seed variances over their counts, summed, over the sets
    sets = [[[r["accuracy/reasoning/heldout"] for r in rows if r["num_experts"] == e and r["top_k"] == k]
             for k in (2, 1)] for e in (4, 16)]
    se = math.sqrt(sum(statistics.variance(a) / 5 + statistics.variance(b) / 5 for a, b in sets)) / 2
    diff = statistics.fmean(statistics.fmean(a) - statistics.fmean(b) for a, b in sets)
    from scipy.stats import t

    half = t.ppf(0.975, 16) * se
    assert f"[{(diff - half) * 100:+.3g}, {(diff + half) * 100:+.3g}]" in s.detail
