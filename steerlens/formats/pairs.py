"""Contrast pairs and prompts on disk: JSONL pairs (optionally with a shared prompt), and prompt lists
as plain text (one a line) or JSONL (JSON strings or chat message lists).

Every format is read without executing anything, and every malformed line is
reported with its number and the fix. Only regular files are read, up to ``max_bytes``;
writing is atomic (:mod:`steerlens.formats.safe_io`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Iterator, Sequence, Union

from steerlens.errors import InvalidSampleError, InvalidSampleTypeError, PairsFileError, PromptsFileError
from steerlens.formats.safe_io import DEFAULT_MAX_BYTES, read_regular_file, write_atomic

Pair = tuple[str, str]
Message = dict[str, str]
"""One chat turn, ``{"role": "user", "content": "..."}``."""
PromptItem = Union[str, list[Message]]
"""A prompt as a prompts file holds it: text, or a conversation ending in the user's turn."""

PAIR_LINE = '{"positive": "...", "negative": "..."}, optionally with "prompt": "..."'
PROMPT_LINE = 'a JSON string "..." or a message list ending in the user\'s turn [{"role": "user", "content": "..."}]'


@dataclass(frozen=True)
class PromptedPair:
    """One line of a pairs file: two texts, and the prompt both answer when the line has one.

    Without a prompt the two texts are whole inputs; with one they are replies to it, so the
    command line can put the prompt in a chat template's user turn and the replies after it.
    """

    positive: str
    negative: str
    prompt: str | None = None

    def texts(self) -> Pair:
        """``(prompt + positive, prompt + negative)``: the texts as written, joined with nothing between."""
        start = self.prompt or ""
        return start + self.positive, start + self.negative


def _json_lines(raw: bytes, line_error: Callable[[int, str], ValueError]) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed JSON)`` of each non-blank line; ``line_error`` reports a line that is not JSON."""
    for lineno, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise line_error(lineno, f"not valid UTF-8 ({exc.reason})") from exc
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise line_error(lineno, f"invalid JSON ({exc.msg} at column {exc.colno})") from exc
        except (ValueError, RecursionError) as exc:  # too deeply nested, or an int over Python's digit limit
            raise line_error(lineno, f"invalid JSON ({type(exc).__name__}: {str(exc)[:80]})") from exc
        yield lineno, obj


def _line_error(path: str, lineno: int, problem: str) -> PairsFileError:
    return PairsFileError(
        f"{path}, line {lineno}: {problem}. Each line must be a JSON object like {PAIR_LINE} (blank lines are skipped)."
    )


def _text(obj: dict[str, Any], key: str, fail: Callable[[str], ValueError]) -> str:
    if key not in obj:
        raise fail(f"missing key {key!r}")
    value = obj[key]
    if not isinstance(value, str):
        raise fail(f"{key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise fail(f"{key!r} is empty")
    return value


def read_pairs_jsonl(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[PromptedPair]:
    """Read the pairs of a JSONL file with their optional shared ``"prompt"``.

    Each non-blank line is a JSON object with non-empty strings under ``"positive"`` and
    ``"negative"``, and optionally ``"prompt"`` (non-empty too; ``"user"`` is taken as its alias, as in
    the bundled chat pairs of :mod:`steerlens.samples.bundled`). Other keys are ignored. Errors are
    those of :func:`load_pairs_jsonl`.

    Example:
        >>> read_pairs_jsonl("replies.jsonl")[0]
        PromptedPair(positive='Gladly!', negative='No.', prompt='Can you help me?')
    """
    name = os.fspath(path)
    raw = read_regular_file(
        name, max_bytes, lambda problem: PairsFileError(f"cannot read pairs file {name!r}: {problem}")
    )
    pairs: list[PromptedPair] = []
    for lineno, obj in _json_lines(raw, lambda n, problem: _line_error(name, n, problem)):
        fail = partial(_line_error, name, lineno)
        if not isinstance(obj, dict):
            raise fail(f"expected a JSON object, got {type(obj).__name__}")
        positive, negative = _text(obj, "positive", fail), _text(obj, "negative", fail)
        if "prompt" in obj and "user" in obj:
            raise fail("give the shared prompt under 'prompt' or 'user', not both")
        key = "prompt" if "prompt" in obj else "user" if "user" in obj else None
        pairs.append(PromptedPair(positive, negative, None if key is None else _text(obj, key, fail)))
    if not pairs:
        raise PairsFileError(f"{name}: the file contains no pairs.")
    return pairs


def load_pairs_jsonl(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[Pair]:
    """Read ``(positive, negative)`` pairs from a JSONL file.

    Each non-blank line is a JSON object with non-empty string values under
    ``"positive"`` and ``"negative"``. A line may also hold a non-empty ``"prompt"`` (or ``"user"``): the pair is
    then ``(prompt + positive, prompt + negative)``, joined as written (put any space in the
    replies). Other keys (ids, sources...) are allowed and ignored. Raises :class:`PairsFileError`,
    naming the line number and the problem, for invalid JSON or UTF-8, a non-object line, a missing
    key, a non-string or blank value, an unreadable file, or a file with no pairs; and for anything
    but a regular file (a folder, a FIFO, a device) or a file over ``max_bytes``.

    Example:
        >>> load_pairs_jsonl("pairs.jsonl")
        [('I love it', 'I hate it')]
    """
    return [pair.texts() for pair in read_pairs_jsonl(path, max_bytes=max_bytes)]


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
    raw = read_regular_file(name, max_bytes, _cannot_read(name))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PromptsFileError(f"{name}: not valid UTF-8 ({exc.reason}); save the prompts as UTF-8 text.") from exc
    prompts = [line.rstrip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise PromptsFileError(f"{name}: the file contains no prompts; write one prompt a line.")
    return prompts


def _cannot_read(name: str) -> Callable[[str], PromptsFileError]:
    return lambda problem: PromptsFileError(f"cannot read prompts file {name!r}: {problem}")


def _prompt_line_error(path: str, lineno: int, problem: str) -> PromptsFileError:
    return PromptsFileError(f"{path}, line {lineno}: {problem}. Each line must be {PROMPT_LINE} (blank lines skipped).")


def _messages(value: list[Any], fail: Callable[[str], PromptsFileError]) -> list[Message]:
    if not value:
        raise fail("the message list is empty")
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise fail(f"message {i} is a {type(message).__name__}, not an object")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise fail(f"message {i} needs a string {key!r}")
        messages.append(dict(message))
    if messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
        raise fail("the last message must be the user's turn (role 'user', not empty): the model answers it")
    return messages


def load_prompts_jsonl(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[PromptItem]:
    """Read prompts from a JSONL file: each non-blank line a JSON string or a list of chat messages.

    A string is a prompt kept exactly (newlines and trailing spaces included, unlike the text
    format). A message list ``[{"role": ..., "content": ...}, ...]`` is a conversation ending in the
    user's turn, to be rendered with the model's chat template (:func:`steerlens.samples.chat.chat_prompt`).
    Raises :class:`PromptsFileError` naming the file and line for anything else (invalid JSON or
    UTF-8, an empty string, a message without a string role or content, a list not ending with the
    user's turn), and for an unreadable or empty file.

    Example:
        >>> load_prompts_jsonl("prompts.jsonl")
        ['The film was', [{'role': 'user', 'content': 'How was the film?'}]]
    """
    name = os.fspath(path)
    raw = read_regular_file(name, max_bytes, _cannot_read(name))
    prompts: list[PromptItem] = []
    for lineno, obj in _json_lines(raw, lambda n, problem: _prompt_line_error(name, n, problem)):
        fail = partial(_prompt_line_error, name, lineno)
        if isinstance(obj, str):
            if not obj.strip():
                raise fail("the prompt is empty")
            prompts.append(obj)
        elif isinstance(obj, list):
            prompts.append(_messages(obj, fail))
        else:
            raise fail(f"expected a string or a list of messages, got {type(obj).__name__}")
    if not prompts:
        raise PromptsFileError(f"{name}: the file contains no prompts; write one JSON string or message list a line.")
    return prompts


def load_prompts(path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> list[PromptItem]:
    """Read a prompts file in the format its extension names: ``.jsonl`` is :func:`load_prompts_jsonl`,
    anything else the text format of :func:`load_prompts_txt` (one prompt a line).

    Example:
        >>> load_prompts("prompts.txt")
        ['The film was', 'Honestly, the food was']
    """
    if os.fspath(path).lower().endswith(".jsonl"):
        return load_prompts_jsonl(path, max_bytes=max_bytes)
    return list(load_prompts_txt(path, max_bytes=max_bytes))


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


__all__ = [
    "Message",
    "Pair",
    "PromptItem",
    "PromptedPair",
    "load_pairs_jsonl",
    "load_prompts",
    "load_prompts_jsonl",
    "load_prompts_txt",
    "read_pairs_jsonl",
    "save_pairs_jsonl",
]
