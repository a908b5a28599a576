"""Answer extraction: turn a model's free-text completion into a short answer to compare.

Pure string functions, no torch.

Numeric (GSM8K-style), in order of preference:
  1. the number after the first ``#### `` marker (the GSM8K reference format),
  2. the number after the first "the answer is" (case-insensitive; the few-shot CoT format),
  3. the last number anywhere in the text.
Numbers may carry a sign, a ``$``, thousands separators (``1,234``) and decimals; a trailing period
is sentence punctuation, not a decimal point. Compare with :func:`normalize_number`, which maps
``"12.0"``, ``"12"``, ``"$12"`` and ``"+12.00"`` to the same string.

Knowledge (short factual answers): the first non-empty line, then SQuAD-style normalisation
(lower case, punctuation removed, articles "a/an/the" removed, whitespace collapsed).
"""

from __future__ import annotations

import re
import string
from decimal import Decimal, InvalidOperation

__all__ = [
    "extract_numeric",
    "normalize_number",
    "numbers_match",
    "first_line",
    "normalize_text",
    "extract_knowledge",
    "extract_gold",
]

# A number: optional sign, optional "$" (either order: "-$5", "$-5"), then either a comma-grouped
# integer (1,234,567 — groups of exactly three, so "1,2,3" reads as three numbers) or plain digits,
# then an optional fraction that must have digits after the point (so "18." is 18). The sign must
# touch the number, so "10 - 5" is 10 and 5, and "16-3-4" is 16, 3, 4. The look-behind keeps a match
# from starting inside a word or a longer number ("x2", "v1.2" hold no number).
_NUMBER = (
    r"(?<![\w.])"
    r"(?P<sign>[-+\u2212])?(?:\$\s?)?(?P<sign2>[-\u2212])?"
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)?(?P<frac>\.\d+)?"
    r"(?!\d)"
)
_NUMBER_RE = re.compile(_NUMBER)
_HASH_RE = re.compile(r"####\s*" + _NUMBER)
_ANSWER_IS_RE = re.compile(r"the (?:final )?answer is[:\s]*" + _NUMBER, re.IGNORECASE)


def _match_to_str(m: re.Match[str]) -> str | None:
    """The canonical text of a number match (no '$', no commas), or None if it has no digits."""
    int_part, frac = m.group("int"), m.group("frac")
    if int_part is None and frac is None:
        return None
    negative = (m.group("sign") in ("-", "\u2212")) or (m.group("sign2") in ("-", "\u2212"))
    text = (int_part or "0").replace(",", "") + (frac or "")
    return ("-" if negative else "") + text


def _first(regex: re.Pattern[str], text: str) -> str | None:
    for m in regex.finditer(text):
        value = _match_to_str(m)
        if value is not None:
            return value
    return None


def extract_numeric(text: str) -> str | None:
    """The final numeric answer in ``text`` (see module docstring), or None when it has no number.

    The result is the number as written minus ``$`` and commas (``"-1234.5"``); pass it through
    :func:`normalize_number` before comparing.
    """
    for regex in (_HASH_RE, _ANSWER_IS_RE):
        value = _first(regex, text)
        if value is not None:
            return value
    last = None
    for m in _NUMBER_RE.finditer(text):
        value = _match_to_str(m)
        if value is not None:
            last = value
    return last


def normalize_number(text: str | None) -> str | None:
    """Canonical decimal string of a number, or None if ``text`` is not one.

    ``"12.0" -> "12"``, ``"1,234" -> "1234"``, ``"$5" -> "5"``, ``"-0.50" -> "-0.5"``, ``"-0" -> "0"``.
    Surrounding whitespace and a trailing period are ignored.
    """
    if text is None:
        return None
    s = text.strip().rstrip(".").replace(",", "").replace("$", "").replace("\u2212", "-").replace(" ", "")
    if not s:
        return None
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    if d == 0:
        return "0"
    out = format(d.normalize(), "f")
    return out


def numbers_match(prediction: str | None, gold: str | None) -> bool:
    """True when both parse as numbers and are equal after :func:`normalize_number`."""
    a, b = normalize_number(prediction), normalize_number(gold)
    return a is not None and a == b


def first_line(text: str) -> str:
    """The first non-empty line of ``text``, stripped."""
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


_ARTICLES_RE = re.compile(r"\b(a|an|the)\b")
_PUNCT_TABLE = str.maketrans("", "", string.punctuation)


def normalize_text(text: str) -> str:
    """SQuAD-style answer normalisation: lower case, drop punctuation and articles, collapse spaces."""
    s = text.lower().translate(_PUNCT_TABLE)
    s = _ARTICLES_RE.sub(" ", s)
    return " ".join(s.split())


def extract_knowledge(text: str) -> str:
    """Normalised first line of a completion: the short-answer extraction for knowledge tasks."""
    return normalize_text(first_line(text))


def extract_gold(answer: str) -> str:
    """The short gold answer of a reference continuation.

    A GSM8K-style answer ending in ``#### N`` gives N (normalised); anything else is the stripped answer.
    """
    if "####" in answer:
        value = _first(_HASH_RE, answer)
        if value is not None:
            return normalize_number(value) or value
        return answer.rsplit("####", 1)[1].strip()
    return answer.strip()
