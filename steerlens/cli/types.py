"""Argument types of the command line: comma-separated lists and output paths, with one-line errors."""

from __future__ import annotations

import argparse
from pathlib import Path
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


def output_file(text: str) -> Path:
    """An output file path that can be written, checked when the arguments are parsed (before any training):
    not a folder, in an existing folder that accepts a new file. Anything else is a one-line usage error."""
    from steerlens.formats.safe_io import output_path_problem

    problem = output_path_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def output_folder(text: str) -> Path:
    """An output folder (created later if missing) whose files can be written, checked when the arguments are
    parsed: not a file, and its nearest existing folder accepts a new file."""
    from steerlens.formats.safe_io import folder_problem

    problem = folder_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return Path(text)
