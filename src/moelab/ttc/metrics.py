"""Test-time-compute metrics: unbiased pass@k, majority vote, and their curves over n = 1, 2, 4, …, N.

Pure Python, no torch. One question's samples are two parallel sequences: the extracted answers
(``None`` when nothing could be extracted: an *invalid* sample) and whether each sample is correct.

pass@k (coverage)
    The unbiased estimator of Chen et al. (2021, "Evaluating Large Language Models Trained on Code"):
    with n samples of which c are correct, ``pass@k = 1 - C(n-c, k) / C(n, k)``, the chance that k
    samples drawn without replacement from the n include a correct one. Computed as the product
    ``1 - prod_{i=n-c+1}^{n} (1 - k/i)`` (their numerically stable form: no huge binomials).
    Every k of a curve uses all N samples of the question, so the curve is non-decreasing in k.

Majority vote (self-consistency) at n
    Over the *first* n samples, invalid answers ignored, the most frequent answer wins and the
    question counts as solved when the winner is correct. Tie rule: the answer that reached the
    tied count first wins — equivalently, scanning the samples in order, the leader changes only
    when another answer strictly overtakes it. So ``[A, B, B, A]`` votes B (B reached 2 at the
    third sample, A only at the fourth), and the vote at n never depends on samples after n.
    No valid answer among the first n samples counts as wrong. A winning answer is correct when
    the first sample that gave it was scored correct (samples with equal extracted answers are
    scored equally by every extractor-based scorer, so "first" only fixes a convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

__all__ = [
    "pass_at_k",
    "curve_points",
    "majority_winner",
    "majority_correct",
    "majority_correct_prefixes",
    "QuestionSamples",
    "ttc_curves",
]


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k for one question: ``1 - C(n-c, k) / C(n, k)``.

    ``k`` must be in 1..n and ``c`` in 0..n.
    """
    n, c = num_samples, num_correct
    if not 0 <= c <= n:
        raise ValueError(f"num_correct={c} must be in 0..num_samples={n}")
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must be in 1..num_samples={n}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    fail = 1.0
    for i in range(n - c + 1, n + 1):
        fail *= 1.0 - k / i
    return 1.0 - fail


def curve_points(num_samples: int) -> list[int]:
    """``[1, 2, 4, …]`` up to ``num_samples``, with ``num_samples`` itself last when it is not a power of 2."""
    if num_samples < 1:
        raise ValueError(f"num_samples={num_samples} must be positive")
    points, n = [], 1
    while n <= num_samples:
        points.append(n)
        n *= 2
    if points[-1] != num_samples:
        points.append(num_samples)
    return points


def _leaders(answers: Sequence[Hashable | None]) -> list[int | None]:
    """For each prefix length n = 1..len(answers), the index of the first sample giving the voted
    answer among the first n (None when none of them is valid). See the module docstring's tie rule."""
    counts: dict[Hashable, int] = {}
    first_index: dict[Hashable, int] = {}
    leader: Hashable | None = None
    leader_count = 0
    out: list[int | None] = []
    for i, answer in enumerate(answers):
        if answer is not None:
            count = counts.get(answer, 0) + 1
            counts[answer] = count
            first_index.setdefault(answer, i)
            if count > leader_count:  # strictly more: a tie keeps the incumbent
                leader, leader_count = answer, count
        out.append(None if leader is None else first_index[leader])
    return out


def majority_winner(answers: Sequence[Hashable | None]) -> Hashable | None:
    """The majority-vote answer (invalid ``None`` answers ignored), or None when no answer is valid."""
    leaders = _leaders(answers)
    if not leaders or leaders[-1] is None:
        return None
    return answers[leaders[-1]]


def majority_correct(answers: Sequence[Hashable | None], correct: Sequence[bool], n: int | None = None) -> bool:
    """Whether majority vote over the first ``n`` samples (default: all) is correct."""
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} correctness flags")
    n = len(answers) if n is None else n
    if not 1 <= n <= len(answers):
        raise ValueError(f"n={n} must be in 1..{len(answers)}")
    return majority_correct_prefixes(answers[:n], correct[:n])[-1]


def majority_correct_prefixes(answers: Sequence[Hashable | None], correct: Sequence[bool]) -> list[bool]:
    """Majority-vote correctness for every prefix n = 1..len(answers), in one pass."""
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} correctness flags")
    return [idx is not None and bool(correct[idx]) for idx in _leaders(answers)]


@dataclass
class QuestionSamples:
    """One question's samples: extracted answers (None = invalid) and correctness, in sample order."""

    answers: list[Hashable | None]
    correct: list[bool]
    greedy_correct: bool | None = None

    def __post_init__(self) -> None:
        if len(self.answers) != len(self.correct):
            raise ValueError(f"{len(self.answers)} answers but {len(self.correct)} correctness flags")
        if not self.answers:
            raise ValueError("a question needs at least one sample")


def ttc_curves(questions: Sequence[QuestionSamples]) -> dict:
    """Coverage (pass@k) and majority-vote accuracy at n = 1, 2, 4, …, N, averaged over questions.

    N is the smallest sample count among the questions (every question normally has the same).
    Returns ``{"n": [...], "pass_at_k": [...], "majority": [...], "greedy": float | None,
    "num_questions": int, "num_samples": N, "invalid_rate": float}``; ``greedy`` is the mean of
    the questions' ``greedy_correct`` when every question has one, else None. ``invalid_rate`` is
    the share of all samples (first N of each question) with no extracted answer.
    """
    if not questions:
        raise ValueError("no questions")
    num_samples = min(len(q.answers) for q in questions)
    points = curve_points(num_samples)
    coverage = [0.0] * len(points)
    majority = [0.0] * len(points)
    invalid = 0
    for q in questions:
        answers, correct = q.answers[:num_samples], q.correct[:num_samples]
        num_correct = sum(bool(c) for c in correct)
        prefixes = majority_correct_prefixes(answers, correct)
        invalid += sum(a is None for a in answers)
        for j, n in enumerate(points):
            coverage[j] += pass_at_k(num_samples, num_correct, n)
            majority[j] += float(prefixes[n - 1])
    m = len(questions)
    greedy_flags = [q.greedy_correct for q in questions]
    greedy = None if any(g is None for g in greedy_flags) else sum(bool(g) for g in greedy_flags) / m
    return {
        "n": points,
        "pass_at_k": [c / m for c in coverage],
        "majority": [v / m for v in majority],
        "greedy": greedy,
        "num_questions": m,
        "num_samples": num_samples,
        "invalid_rate": invalid / (m * num_samples),
    }
