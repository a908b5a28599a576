"""The reasoning half of the default world: procedural problems from ``reasoning_gym``.

Each generator is configured small enough for a tiny model (few terms, small numbers).
A problem becomes the prompt ``"Question: <question>\\nAnswer:"`` and the reference answer
``" <worked solution>\\n#### <answer>"``; the worked solution is derived from the
generator's metadata when it holds an arithmetic expression, else it is left out and the
answer is just ``" #### <answer>"``. Scoring extracts the final answer and counts it
correct when the generator's own ``score_answer`` gives it full credit.
"""

from __future__ import annotations

import ast
import difflib
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable

from moelab.data import arithmetic
from moelab.errors import UserError

# Generator settings a ~1M-parameter model can learn; other generators use reasoning_gym's defaults.
GENERATOR_KWARGS: dict[str, dict[str, Any]] = {
    # allow_parentheses=True selects reasoning_gym's evaluating generator: its simple
    # generator computes left to right, which disagrees with operator precedence for '*'.
    # The problem spaces are kept large (3-4 one-digit terms; two-digit chain sums) so that
    # few fresh problems repeat a training question: with 2-term one-digit problems ~20% do,
    # and skipping them would tilt the heldout split towards longer, harder problems.
    "basic_arithmetic": dict(
        min_terms=3, max_terms=4, min_digits=1, max_digits=1,
        operators=("+", "-", "*"), allow_parentheses=True, allow_negation=False,
    ),
    "chain_sum": dict(min_terms=2, max_terms=3, min_digits=2, max_digits=2),
}


def _chain_sum_question(entry: dict) -> str:
    # The original repeats "State the final answer to the following arithmetic problem:"
    # on every item; the short form matches basic_arithmetic's "Calculate <expr>.".
    expression = entry.get("metadata", {}).get("expression")
    return f"Calculate {expression}." if expression else entry["question"].strip()


# Rewrites of questions whose instructions repeat across items (to save sequence length).
QUESTION_REWRITES: dict[str, Callable[[dict], str]] = {"chain_sum": _chain_sum_question}


@dataclass(frozen=True)
class Problem:
    """One generated problem, formatted for the world."""

    generator: str
    index: int  # reasoning_gym item index (the item's seed is the dataset seed + index)
    question: str
    solution: str  # worked steps, "" when none could be derived
    final: str  # the generator's answer
    entry: dict  # the raw reasoning_gym entry, needed by score_answer

    @property
    def prompt(self) -> str:
        return f"Question: {self.question}\nAnswer:"

    @property
    def answer(self) -> str:
        if self.solution:
            return f" {self.solution}\n#### {self.final}"
        return f" #### {self.final}"


def load_generator(name: str, *, seed: int, size: int, options: dict[str, Any] | None = None):
    """A dataset with this world's settings: moelab's own ``addition`` (``options``: digits,
    terms) or a reasoning_gym generator; unknown names are a UserError."""
    if name == arithmetic.NAME:
        return arithmetic.AdditionDataset(seed=seed, size=max(size, 1), **(options or {}))
    import reasoning_gym  # imported here: it registers ~100 generators on import

    known = sorted(reasoning_gym.factory.DATASETS)
    if name not in known:
        close = difflib.get_close_matches(name, [arithmetic.NAME, *known], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"data.world.reasoning_tasks: unknown generator '{name}' (neither moelab's "
                        f"'{arithmetic.NAME}' nor a reasoning_gym one){hint}")
    return reasoning_gym.create_dataset(name, seed=seed, size=max(size, 1), **GENERATOR_KWARGS.get(name, {}))


def make_problem(name: str, index: int, entry: dict) -> Problem:
    rewrite = QUESTION_REWRITES.get(name)
    question = rewrite(entry) if rewrite else entry["question"].strip()
    final = str(entry["answer"]).strip()
    metadata = entry.get("metadata", {})
    expression = metadata.get("expression")
    if isinstance(metadata.get("solution"), str):  # a generator that writes its own worked steps
        solution = metadata["solution"]
    else:
        solution = worked_solution(expression, final) if isinstance(expression, str) else ""
    return Problem(name, index, question, solution, final, entry)


def generate_problems(
    name: str, *, seed: int, count: int, exclude: set[str] = frozenset(), max_tries_per_item: int = 20,
    options: dict[str, Any] | None = None,
) -> list[Problem]:
    """``count`` problems with distinct questions, none of them in ``exclude``.

    Items are drawn at indices 0, 1, 2, ... of the dataset seeded ``seed``; duplicates are
    skipped, so with a small problem space fewer than ``count`` may come back.
    """
    dataset = load_generator(name, seed=seed, size=count * max_tries_per_item, options=options)
    seen = set(exclude)
    problems: list[Problem] = []
    for index in range(count * max_tries_per_item):
        if len(problems) == count:
            break
        problem = make_problem(name, index, dataset[index])
        if problem.question in seen:
            continue
        seen.add(problem.question)
        problems.append(problem)
    return problems


# ------------------------------------------------------------------ worked solutions

_OPS = {ast.Add: ("+", operator.add), ast.Sub: ("-", operator.sub), ast.Mult: ("*", operator.mul),
        ast.Div: ("/", operator.floordiv)}  # reasoning_gym evaluates '/' as floor division
_APPLY = dict(_OPS.values())  # symbol -> function
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def _to_tree(node: ast.AST) -> int | tuple:
    """An int, or (op, left, right); ValueError for anything but integer arithmetic."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _to_tree(node.operand)
        if isinstance(inner, int):  # a negative literal such as -7
            return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return (_OPS[type(node.op)][0], _to_tree(node.left), _to_tree(node.right))
    raise ValueError("not integer arithmetic")


def _show(tree: int | tuple) -> str:
    """Print with the fewest parentheses that keep the order in which it is reduced."""
    if isinstance(tree, int):
        return str(tree)
    op, left, right = tree
    left_s, right_s = _show(left), _show(right)
    if isinstance(left, tuple) and _PRECEDENCE[left[0]] < _PRECEDENCE[op]:
        left_s = f"( {left_s} )"
    # A right operand of equal precedence is bracketed: it is reduced before the left one.
    if isinstance(right, tuple) and _PRECEDENCE[right[0]] <= _PRECEDENCE[op]:
        right_s = f"( {right_s} )"
    return f"{left_s} {op} {right_s}"


def _reduce_once(tree: tuple) -> int | tuple:
    """Evaluate the leftmost operation whose operands are both numbers."""
    op, left, right = tree
    if isinstance(left, tuple):
        return (op, _reduce_once(left), right)
    if isinstance(right, tuple):
        return (op, left, _reduce_once(right))
    if op == "/" and right == 0:
        raise ValueError("division by zero")
    return _APPLY[op](left, right)


def worked_solution(expression: str, final: str) -> str:
    """``"2 + 3 * 4 = 2 + 12 = 14"``: the expression rewritten after each operation.

    Returns "" when the expression is not integer arithmetic or does not evaluate to
    ``final`` (then the answer carries no worked solution).
    """
    try:
        tree = _to_tree(ast.parse(expression.strip().rstrip("="), mode="eval").body)
        steps = [_show(tree)]
        while isinstance(tree, tuple):
            tree = _reduce_once(tree)
            steps.append(_show(tree))
    except (SyntaxError, ValueError, RecursionError):
        return ""
    if str(tree) != final:
        return ""
    return " = ".join(steps)


# ------------------------------------------------------------------ scoring

_FINAL = re.compile(r"####\s*([^\n]*)")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _is_number(text: str) -> bool:
    return _NUMBER.fullmatch(text.strip()) is not None


def extract_answer(prediction: str, gold: str) -> str:
    """The final answer in a prediction: after ``####``; else the last number (when the
    gold is a number); else the first non-empty line."""
    match = _FINAL.search(prediction)
    if match:
        return match.group(1).strip()
    if _is_number(gold):
        numbers = _NUMBER.findall(prediction)
        if numbers:
            return numbers[-1]
    stripped = prediction.strip()
    return stripped.split("\n", 1)[0].strip() if stripped else ""


def score_with_generator(scorer: Callable[[str, dict], float], entry: dict, prediction: str, gold: str) -> float:
    """1.0 when the generator's own ``score_answer`` gives the extracted answer full credit, else 0.0.

    Partial credit is dropped on purpose: reasoning_gym's default scorer pays
    len(gold)/len(answer) when the gold is a substring ("3" in "12345" scores 0.2), which
    would read as accuracy for a wrong answer.
    """
    return 1.0 if scorer(extract_answer(prediction, gold), entry) >= 1.0 else 0.0
