"""Argument types for the command line: a bad value is refused by argparse, as one line, before any work.

    p.add_argument("--limit", type=positive_int)      # 0, -1, 2.5, "x" -> "argument --limit: must be …"
    p.add_argument("--top-p", type=probability)       # 0 < p <= 1
    p.add_argument("--device", type=device_name, default="auto")

argparse turns the ``ArgumentTypeError`` message into ``moelab CMD: argument --flag: MESSAGE``.
"""

from __future__ import annotations

import argparse
import math


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got '{text}'") \
            from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got '{text}'")
    return value


def _bounded(kind: type, ok, requirement: str, name: str):
    """An argparse type: ``kind`` parsed from the text, refused unless ``ok(value)``."""
    def parse(text: str):
        value = _number(text, kind)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value
    parse.__name__ = name  # argparse names the type in some messages
    return parse


positive_int = _bounded(int, lambda v: v >= 1, "a positive integer", "positive_int")
nonneg_int = _bounded(int, lambda v: v >= 0, "0 or more", "nonneg_int")
finite_float = _bounded(float, lambda v: True, "a finite number", "finite_float")
positive_float = _bounded(float, lambda v: v > 0, "positive", "positive_float")
nonneg_float = _bounded(float, lambda v: v >= 0, "0 or more", "nonneg_float")
probability = _bounded(float, lambda v: 0 < v <= 1, "in (0, 1]", "probability")  # a nucleus mass


def at_least(minimum: int):
    """An integer ≥ ``minimum`` (e.g. bootstrap resamples)."""
    return _bounded(int, lambda v: v >= minimum, f"at least {minimum}", f"int>={minimum}")


def device_name(text: str) -> str:
    from moelab.config import check_device_name

    try:
        return check_device_name(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
