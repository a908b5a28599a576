"""pass@k and majority vote against hand-computed values."""

import math

import pytest

from moelab.ttc.metrics import (
    QuestionSamples,
    curve_points,
    majority_correct,
    majority_correct_prefixes,
    majority_winner,
    pass_at_k,
    ttc_curves,
)


@pytest.mark.parametrize(
    "n,c,k,expected",
    [
        (5, 2, 2, 1 - 3 / 10),  # C(3,2)/C(5,2) = 3/10
        (4, 1, 1, 0.25),
        (10, 3, 1, 0.3),  # pass@1 is the plain success rate
        (5, 0, 3, 0.0),
        (5, 4, 2, 1.0),  # n - c = 1 < k: every pair holds a correct one
        (5, 5, 5, 1.0),
        (6, 1, 3, 0.5),  # 1 - C(5,3)/C(6,3) = 1 - 10/20
        (8, 2, 4, 1 - 15 / 70),  # C(6,4)=15, C(8,4)=70
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_matches_binomial_formula_and_is_monotone():
    for n in range(1, 17):
        for c in range(n + 1):
            prev = -1.0
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                got = pass_at_k(n, c, k)
                assert got == pytest.approx(exact, abs=1e-12)
                assert got >= prev - 1e-15
                prev = got


def test_pass_at_k_is_stable_for_large_n():
    # C(1024, 512) overflows a float; the product form does not.
    assert 0.0 < pass_at_k(1024, 3, 512) <= 1.0
    assert pass_at_k(1024, 3, 512) == pytest.approx(1 - (512 * 511 * 510) / (1024 * 1023 * 1022))


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 0)


def test_curve_points():
    assert curve_points(1) == [1]
    assert curve_points(8) == [1, 2, 4, 8]
    assert curve_points(5) == [1, 2, 4, 5]
    assert curve_points(128) == [1, 2, 4, 8, 16, 32, 64, 128]


def test_majority_plain_and_invalid_ignored():
    answers = ["7", None, "3", "7", None]
    correct = [True, False, False, True, False]
    assert majority_winner(answers) == "7"
    assert majority_correct(answers, correct)
    # invalid answers do not vote even when they are the most frequent "answer"
    assert majority_winner([None, None, None, "4"]) == "4"


def test_majority_tie_goes_to_the_answer_that_reached_the_count_first():
    # A B B A: B reaches 2 at sample 3, A only at sample 4 -> B wins
    assert majority_winner(["A", "B", "B", "A"]) == "B"
    # A B: both reach 1, A first
    assert majority_winner(["A", "B"]) == "A"
    # B A A B C C: A reaches 2 first (sample 3), B and C reach 2 later
    assert majority_winner(["B", "A", "A", "B", "C", "C"]) == "A"
    correct = [False, True, True, False]
    assert majority_correct_prefixes(["A", "B", "B", "A"], correct) == [False, False, True, True]
    assert majority_correct(["A", "B", "B", "A"], correct, n=2) is False


def test_majority_all_invalid_is_wrong():
    assert majority_winner([None, None]) is None
    assert majority_correct([None, None, None], [False, False, False]) is False
    assert majority_correct_prefixes([None, "5", None], [False, True, False]) == [False, True, True]


def test_ttc_curves_hand_example():
    # q1: 4 samples, 1 correct; majority: [x] [x,y] [x,y,5] [x,y,5,x] -> x x x x (x wrong)
    q1 = QuestionSamples(answers=["x", "y", "5", "x"], correct=[False, False, True, False], greedy_correct=False)
    # q2: all invalid -> pass@k 0, majority 0
    q2 = QuestionSamples(answers=[None] * 4, correct=[False] * 4, greedy_correct=False)
    # q3: 2 correct of 4; majority: [9]=wrong, [9,2] 9 wrong, [9,2,2] 2 right, [9,2,2,9] tie 2 reached first -> right
    q3 = QuestionSamples(answers=["9", "2", "2", "9"], correct=[False, True, True, False], greedy_correct=True)
    out = ttc_curves([q1, q2, q3])
    assert out["n"] == [1, 2, 4]
    expected_cov = [
        (0.25 + 0 + 0.5) / 3,
        ((1 - 3 / 6) + 0 + (1 - 1 / 6)) / 3,  # q1: 1 - C(3,2)/C(4,2); q3: 1 - C(2,2)/C(4,2)
        (1 + 0 + 1) / 3,
    ]
    assert out["pass_at_k"] == pytest.approx(expected_cov)
    assert out["majority"] == pytest.approx([0.0, 0.0, 1 / 3])
    assert out["greedy"] == pytest.approx(1 / 3)
    assert out["num_questions"] == 3 and out["num_samples"] == 4
    assert out["invalid_rate"] == pytest.approx(4 / 12)


def test_ttc_curves_without_greedy():
    out = ttc_curves([QuestionSamples(["1"], [True])])
    assert out["greedy"] is None
    assert out["pass_at_k"] == [1.0] and out["majority"] == [1.0]
