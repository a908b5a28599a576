"""moelab's own reasoning generator: column addition with a worked, digit-by-digit solution.

Why a generator of our own beside ``reasoning_gym``: the reasoning task must need a *learned
procedure* that models of the CPU presets' size (50K–3M parameters, 2 layers) can learn in a few
million tokens. Multi-digit addition written out column by column, the way a pupil does it, is
such a procedure: every step reads two digits and a carry at fixed offsets and applies a
one-digit table, so it is learnable at this size, while the answer to a *new* pair of numbers
cannot be recalled from training — a model that memorises training sums instead of learning the
steps fails the held-out split. Difficulty is a dial: digits per operand and number of terms.
Like GSM8K's reference solutions, the answer is the worked steps, then ``#### <result>``::

    question  "What is 47 + 85?"
    solution  "7 + 5 + 0 = 12, carry 1. 4 + 8 + 1 = 13, carry 1."
    final     "132"                 (the answer reads " <solution>\n#### 132")

Every column lists its incoming carry (0 in the first), so all steps have the same shape; the
result is the last carry followed by the columns' last digits, most significant first. The
operands have exactly ``digits`` digits (no leading zero), so a digit's position in the text is
the same for every problem of one difficulty.

A difficulty mixture (``min_digits``): each problem draws its digits per operand uniformly from
``min_digits..digits``, so held-out accuracy averages several lengths, each learned at its own
point of training, instead of one all-or-nothing transition (exact match on a long answer is the
product of its digits' accuracies; Schaeffer et al., arXiv 2304.15004).

The dataset object mimics the part of ``reasoning_gym``'s API the world uses: indexing gives an
entry dict ``{"question", "answer", "metadata"}`` that is a pure function of (seed, index), and
``score_answer(answer, entry)`` gives 1.0 for the exact integer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


NAME = "addition"


def column_steps(operands: list[int]) -> tuple[str, int]:
    """The worked column-addition text for ``operands`` and their sum."""
    width = max(len(str(v)) for v in operands)
    columns = [[int(str(v).zfill(width)[-1 - i]) for v in operands] for i in range(width)]
    carry, steps = 0, []
    for digits in columns:  # least significant column first
        total = sum(digits) + carry
        terms = " + ".join(str(d) for d in digits)
        steps.append(f"{terms} + {carry} = {total}, carry {total // 10}.")
        carry = total // 10
    return " ".join(steps), sum(operands)


@dataclass(frozen=True)
class AdditionDataset:
    """``size`` problems of ``terms`` operands with ``digits`` digits each, drawn from ``seed``.

    The bounds on ``digits`` and ``terms`` are ``WorldConfig``'s (the world builds this from a
    validated config)."""

    seed: int
    size: int
    digits: int = 2
    terms: int = 2
    min_digits: int | None = None  # a mixture of min_digits..digits, drawn per problem; None: all `digits`

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.size:
            raise IndexError(index)
        # One stream per item: an item never depends on how many items came before it.
        # A fixed difficulty keeps its stream name of before the mixture, so its items are unchanged.
        mixture = "" if self.min_digits is None else f"/mix{self.min_digits}"
        rng = random.Random(f"moelab-addition/{self.seed}/{self.digits}/{self.terms}{mixture}/{index}")
        digits = self.digits if self.min_digits is None else rng.randint(self.min_digits, self.digits)
        low = 10 ** (digits - 1) if digits > 1 else 0
        operands = [rng.randint(low, 10**digits - 1) for _ in range(self.terms)]
        solution, result = column_steps(operands)
        question = f"What is {' + '.join(str(v) for v in operands)}?"
        return {"question": question, "answer": str(result),
                "metadata": {"operands": operands, "expression": None, "solution": solution, "digits": digits}}

    @staticmethod
    def score_answer(answer: str | None, entry: dict) -> float:
        return 1.0 if answer is not None and answer.strip() == entry["answer"] else 0.0
