"""Argument types of the command line: comma-separated lists with one-line errors."""

from __future__ import annotations

import argparse
from typing import Callable, TypeVar

T = TypeVar("T")


def _number_list(text: str, convert: Callable[[str], T], kind: str) -> list[T]:
    try:
        values = [convert(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {kind}, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected at least one of the comma-separated {kind}")
    return values


def int_list(text: str) -> list[int]:
    """``"2,3"`` -> ``[2, 3]`` (negative layers allowed: ``"-1"``)."""
    return _number_list(text, int, "integers")


def float_list(text: str) -> list[float]:
    """``"-4,-2,2,4"`` -> ``[-4.0, -2.0, 2.0, 4.0]``."""
    return _number_list(text, float, "numbers")


def word_list(text: str) -> list[str]:
    """``"good,great"`` -> ``[" good", " great"]``: words as they appear mid-sentence, with their space."""
    words = [" " + w.strip() for w in text.split(",") if w.strip()]
    if not words:
        raise argparse.ArgumentTypeError("expected comma-separated words")
    return words


def positive_int(text: str) -> int:
    """``"16"`` -> ``16``; zero, negatives and non-integers are one-line usage errors."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value
