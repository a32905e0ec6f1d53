"""Contrast pairs and prompts on disk: JSONL pairs and plain-text prompt lists.

Both formats are read without executing anything, and every malformed line is
reported with its number and the fix. Only regular files are read, up to ``max_bytes``;
writing is atomic (:mod:`steerlens.formats.safe_io`).
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

from steerlens.errors import InvalidSampleError, InvalidSampleTypeError, PairsFileError, PromptsFileError
from steerlens.formats.safe_io import DEFAULT_MAX_BYTES, read_regular_file, write_atomic

Pair = tuple[str, str]


def _line_error(path: str, lineno: int, problem: str) -> PairsFileError:
    return PairsFileError(
        f"{path}, line {lineno}: {problem}. Each line must be a JSON object like "
        '{"positive": "...", "negative": "..."} (blank lines are skipped).'
    )


def load_pairs_jsonl(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[Pair]:
    """Read ``(positive, negative)`` pairs from a JSONL file.

    Each non-blank line is a JSON object with non-empty string values under
    ``"positive"`` and ``"negative"``. Other keys (ids, sources...) are allowed and
    ignored. Raises :class:`PairsFileError`, naming the line number and the problem,
    for invalid JSON or UTF-8, a non-object line, a missing key, a non-string or
    blank value, an unreadable file, or a file with no pairs; and for anything but a regular
    file (a folder, a FIFO, a device) or a file over ``max_bytes``.

    Example:
        >>> load_pairs_jsonl("pairs.jsonl")
        [('I love it', 'I hate it')]
    """
    name = os.fspath(path)
    raw = read_regular_file(
        name, max_bytes, lambda problem: PairsFileError(f"cannot read pairs file {name!r}: {problem}")
    )
    pairs: list[Pair] = []
    for lineno, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise _line_error(name, lineno, f"not valid UTF-8 ({exc.reason})") from exc
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise _line_error(name, lineno, f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
        except (ValueError, RecursionError) as exc:  # too deeply nested, or an int over Python's digit limit
            raise _line_error(name, lineno, f"invalid JSON ({type(exc).__name__}: {str(exc)[:80]})") from exc
        if not isinstance(obj, dict):
            raise _line_error(name, lineno, f"expected a JSON object, got {type(obj).__name__}")
        pair = []
        for key in ("positive", "negative"):
            if key not in obj:
                raise _line_error(name, lineno, f"missing key {key!r}")
            value = obj[key]
            if not isinstance(value, str):
                raise _line_error(name, lineno, f"{key!r} must be a string, got {type(value).__name__}")
            if not value.strip():
                raise _line_error(name, lineno, f"{key!r} is empty")
            pair.append(value)
        pairs.append((pair[0], pair[1]))
    if not pairs:
        raise PairsFileError(f"{name}: the file contains no pairs.")
    return pairs


def load_prompts_txt(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[str]:
    """Read evaluation prompts from a UTF-8 text file, one prompt a line (blank lines skipped).

    Trailing whitespace is stripped (a prompt ending in a space would change its last
    token). Raises :class:`PromptsFileError` for an unreadable, non-UTF-8 or empty file, and for
    anything but a regular file or a file over ``max_bytes``.

    Example:
        >>> load_prompts_txt("prompts.txt")
        ['The film was', 'Honestly, the food was']
    """
    name = os.fspath(path)
    fail = lambda problem: PromptsFileError(f"cannot read prompts file {name!r}: {problem}")  # noqa: E731
    raw = read_regular_file(name, max_bytes, fail)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PromptsFileError(f"{name}: not valid UTF-8 ({exc.reason}); save the prompts as UTF-8 text.") from exc
    prompts = [line.rstrip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise PromptsFileError(f"{name}: the file contains no prompts; write one prompt a line.")
    return prompts


def save_pairs_jsonl(pairs: Iterable[Sequence[str]], path: str | os.PathLike[str]) -> None:
    """Write ``(positive, negative)`` pairs as JSONL that :func:`load_pairs_jsonl` reads back.

    Example:
        >>> save_pairs_jsonl(sentiment_pairs("train"), "sentiment.jsonl")
    """
    lines = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise InvalidSampleTypeError(f"pair {i} must be a (positive, negative) pair, got {pair!r}.")
        if not all(isinstance(s, str) for s in pair):
            raise InvalidSampleTypeError(f"pair {i} must hold two strings, got {pair!r}.")
        if not all(s.strip() for s in pair):
            raise InvalidSampleError(f"pair {i} has an empty string: {pair!r}.")
        lines.append(json.dumps({"positive": pair[0], "negative": pair[1]}, ensure_ascii=False))
    write_atomic(path, "".join(line + "\n" for line in lines).encode("utf-8"))


__all__ = ["Pair", "load_pairs_jsonl", "load_prompts_txt", "save_pairs_jsonl"]
