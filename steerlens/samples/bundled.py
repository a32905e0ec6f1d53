"""Chat data a researcher can start from: A/B behaviour items, chat contrast pairs, neutral chat prompts.

The files are JSONL in ``steerlens/samples/data/``, written for steerlens (not copied from
any published data set) by ``scripts/build_bundled_samples.py``:

* A/B items (:func:`ab_items`) for the behaviours of :data:`BEHAVIOURS`, CAA records that
  :func:`~steerlens.samples.chat.caa_pairs` and :func:`~steerlens.samples.chat.caa_items`
  render in any tokenizer's chat template. In each split the matching letter is ``A`` for
  half of the items and ``B`` for the other half, so a model's letter bias cannot pass for the
  behaviour;
* chat contrast pairs (:func:`chat_contrast_pairs`) for the kinds of :data:`CHAT_CONTRASTS`:
  one user turn answered by the assistant in two ways (positive vs negative sentiment, food
  vs travel), ending on the reply's last word;
* neutral chat prompts (:func:`neutral_chat_prompts`) for measuring a steered model's replies.

Splits are fixed in the files (a ``split`` field): test items share no question, and test
contrast pairs no user turn and no reply, with training ones.

Example:
    >>> list_behaviours()
    ['sycophancy', 'caution']
    >>> vec = train_steering_vector(model, tok, caa_pairs(tok, ab_items("sycophancy")), layers=[12])
    >>> df = ab_behavior_probability(model, vec, caa_items(tok, ab_items("sycophancy", "test")), tokenizer=tok)
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

from steerlens.errors import InvalidArgumentError, PairsFileError
from steerlens.samples.chat import chat_prompt

Split = Literal["train", "test", "all"]
SPLITS: tuple[str, ...] = ("train", "test", "all")

BEHAVIOURS: dict[str, str] = {
    "sycophancy": (
        "agreeing with the user's stated opinion: the user says which option they believe "
        "(letter and text) before a two-option question of taste; matching answers pick it."
    ),
    "caution": (
        "choosing the cautious option: the user asks whether to go ahead with a risky plan; "
        "matching answers decline ('No, it is too risky.') rather than encourage it."
    ),
}
"""Behaviour name → what a matching answer does (``ab_<name>.jsonl``)."""

CHAT_CONTRASTS: dict[str, str] = {
    "sentiment": "the assistant's reply to the same user turn, positive vs negative.",
    "topic": "the assistant's reply to the same neutral user turn, about food vs about travel.",
}
"""Contrast kind → what its pairs contrast (``chat_<kind>.jsonl``)."""

_RECORD_KEYS = {
    "ab": ("question", "answer_matching_behavior", "answer_not_matching_behavior", "split"),
    "chat": ("user", "positive", "negative", "split"),
    "neutral": ("user",),
}


def list_behaviours() -> list[str]:
    """The names :func:`ab_items` accepts."""
    return list(BEHAVIOURS)


def list_chat_contrasts() -> list[str]:
    """The kinds :func:`chat_contrast_pairs` accepts."""
    return list(CHAT_CONTRASTS)


def _check_name(value: Any, known: dict[str, str], what: str) -> str:
    if not isinstance(value, str) or value not in known:
        raise InvalidArgumentError(f"unknown {what} {value!r}; available: {', '.join(known)}.")
    return value


def _check_split(split: Any) -> str:
    if not isinstance(split, str) or split not in SPLITS:
        raise InvalidArgumentError(f"split must be one of {', '.join(SPLITS)}, got {split!r}.")
    return split


@lru_cache(maxsize=None)
def _read(name: str, kind: str) -> tuple[tuple[tuple[str, str], ...], ...]:
    """The records of a bundled file, each as ``(key, value)`` items; every line is checked."""
    keys = _RECORD_KEYS[kind]
    try:
        text = (resources.files("steerlens.samples") / "data" / name).read_text(encoding="utf-8")
    except OSError as exc:
        raise PairsFileError(
            f"the bundled data file {name!r} is missing from steerlens/samples/data ({exc.strerror or exc}); "
            "reinstall steerlens."
        ) from exc
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PairsFileError(f"{name}, line {lineno}: invalid JSON ({exc.msg}).") from exc
        if not isinstance(obj, dict) or any(not isinstance(obj.get(key), str) or not obj[key] for key in keys):
            raise PairsFileError(f"{name}, line {lineno}: needs non-empty strings under {', '.join(keys)}.")
        records.append(tuple((key, obj[key]) for key in keys))
    return tuple(records)


def _records(name: str, kind: str, split: str = "all") -> list[dict[str, str]]:
    out = [dict(record) for record in _read(name, kind)]
    if split != "all":
        out = [record for record in out if record["split"] == split]
    return out


def ab_items(behaviour: str, split: Split = "train") -> list[dict[str, str]]:
    """A/B items of ``behaviour`` as CAA records (fresh dicts, safe to edit).

    Keys: ``question`` (the question with its ``(A)``/``(B)`` choices),
    ``answer_matching_behavior`` and ``answer_not_matching_behavior`` (``"(A)"``/``"(B)"``),
    ``split``. ``split`` is ``"train"``, ``"test"`` or ``"all"``.

    Example:
        >>> ab_items("caution", "test")[0]["question"]
        'Should I ...?\\n\\nChoices:\\n(A) ...\\n(B) ...'
        >>> pairs = caa_pairs(tokenizer, ab_items("caution"))
    """
    _check_name(behaviour, BEHAVIOURS, "behaviour")
    return _records(f"ab_{behaviour}.jsonl", "ab", _check_split(split))


def chat_contrast_records(kind: str, split: Split = "train") -> list[dict[str, str]]:
    """Contrast records of ``kind``: ``user`` (the user's turn), ``positive`` / ``negative``
    (the assistant's two replies), ``split``."""
    _check_name(kind, CHAT_CONTRASTS, "chat contrast kind")
    return _records(f"chat_{kind}.jsonl", "chat", _check_split(split))


def chat_contrast_pairs(
    kind: str, split: Split = "train", *, tokenizer: Any, system_prompt: str | None = None
) -> list[tuple[str, str]]:
    """``(positive, negative)`` chats in ``tokenizer``'s chat template: the user's turn, then each reply.

    Each string is :func:`~steerlens.samples.chat.chat_prompt` of the user's turn (it ends where
    the assistant's answer starts) followed by one reply, so both end on the reply's last word,
    where training reads by default.

    Example:
        >>> pos, neg = chat_contrast_pairs("sentiment", tokenizer=tok)[0]
        >>> pos[-40:]
        '...assistant\\nIt was wonderful, and I loved every minute of it.'
    """
    return [
        (prompt + record["positive"], prompt + record["negative"])
        for record in chat_contrast_records(kind, split)
        for prompt in [chat_prompt(tokenizer, record["user"], system_prompt=system_prompt)]
    ]


def neutral_chat_prompts(tokenizer: Any = None, *, system_prompt: str | None = None) -> list[str]:
    """50 user requests with no sentiment and no topic lean ("Write one sentence about a park.").

    Without ``tokenizer``, the bare user texts; with one, each rendered by its chat template up
    to where the assistant's answer starts (ready for generation or logit comparisons).
    """
    users = [record["user"] for record in _records("neutral_chat_prompts.jsonl", "neutral")]
    if tokenizer is None:
        return users
    return [chat_prompt(tokenizer, user, system_prompt=system_prompt) for user in users]


__all__ = [
    "BEHAVIOURS",
    "CHAT_CONTRASTS",
    "ab_items",
    "chat_contrast_pairs",
    "chat_contrast_records",
    "list_behaviours",
    "list_chat_contrasts",
    "neutral_chat_prompts",
]
