"""Contrast pairs, neutral prompts and measuring words for the toy model (files: :mod:`steerlens.formats.pairs`).

Two concepts, varied independently in the toy model's corpus
(:mod:`steerlens.toy.corpus`):

* ``"sentiment"``: groups ``positive`` / ``negative`` (adjectives);
* ``"topic"``: groups ``film`` / ``food`` / ``travel`` (nouns).

Everything is generated from templates with fixed seeds, so it is identical on every
machine. Splits are held out by template: ``"train"`` data uses the even-numbered
templates of a family and ``"test"`` the odd-numbered ones, so test strings never
occur in train and test prompts use sentence stems that training pairs do not.

Example:
    >>> pairs = sentiment_pairs("train")
    >>> pairs[0]
    ('... The soup was wonderful.', '... The soup was terrible.')
    >>> concept_words("sentiment")["positive"][:2]
    [' good', ' great']
"""

from __future__ import annotations

import random
from typing import Iterable, Literal, Sequence, TypeVar

from steerlens.errors import InvalidArgumentError
from steerlens.toy import corpus as C

Pair = tuple[str, str]
Split = Literal["train", "test"]
Concept = Literal["sentiment", "topic"]
CONCEPTS: tuple[str, ...] = ("sentiment", "topic")
N_PAIRS = {"train": 64, "test": 32}
N_PROMPTS = 48
T = TypeVar("T")


def _check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise InvalidArgumentError(f"split must be 'train' or 'test', got {split!r}.")


def _check_concept(concept: str) -> None:
    if concept not in CONCEPTS:
        raise InvalidArgumentError(f"concept must be one of {CONCEPTS}, got {concept!r}.")


def _half(items: Sequence[T], split: str) -> tuple[T, ...]:
    """The templates of a split: even-numbered for train, odd-numbered for test."""
    return tuple(items[0::2] if split == "train" else items[1::2])


def _unique(items: Iterable[T], n: int) -> list[T]:
    seen: dict[T, None] = {}
    for item in items:
        seen.setdefault(item, None)
        if len(seen) == n:
            break
    return list(seen)


def concept_words(concept: Concept) -> dict[str, list[str]]:
    """The words that measure ``concept``, by group, each with its leading space.

    Each is a single token of the toy tokenizer. Sentiment groups are
    ``positive``/``negative``; topic groups are ``film``/``food``/``travel``.

    Example:
        >>> concept_words("topic")["food"][:3]
        [' meal', ' dinner', ' soup']
    """
    _check_concept(concept)
    if concept == "sentiment":
        return {s: C.measured(C.ADJECTIVES[s], C.MEASURED_ADJECTIVES) for s in C.SENTIMENTS}
    return {t: C.measured(C.TOPIC_NOUNS[t], C.MEASURED_NOUNS) for t in C.TOPICS}


def _noun_stems(split: str) -> tuple[str, ...]:
    """Opening sentences cut before their topic noun: "Let me tell you about the"."""
    return tuple(t.split(" {J}")[0] for t in _half(C.OPENINGS_NOUN, split))


def _sentiment_pair(seed: int, split: str) -> Pair:
    """A topic-free mood sentence, then an opening cut before its noun, for both sentiments.

    Pairs are read at that last "the", where the model predicts a sentiment adjective
    or a topic noun while the topic is still open, so their difference is the
    sentiment alone, as the model carries it beside an undecided topic.
    """
    rng = random.Random(seed)
    start = rng.choice(C.PREFACES) if rng.random() < 0.3 else ""
    template = f"{rng.choice(_half(C.MOOD_SENTENCES, split))} {rng.choice(_noun_stems(split))}"
    body_seed = rng.randrange(2**31)
    pos, neg = (C.fill(template, random.Random(body_seed), "film", s) for s in C.SENTIMENTS)
    return f"{start} {pos}".strip(), f"{start} {neg}".strip()


def sentiment_pairs(split: Split = "train") -> list[Pair]:
    """``(positive, negative)`` contrast pairs that differ only in sentiment words.

    64 train pairs, 32 test pairs, topics balanced.

    Example:
        >>> vec = train_steering_vector(model, None, sentiment_pairs("train"), layers=[2])
    """
    _check_split(split)
    base = 0 if split == "train" else 10_000
    return _unique((_sentiment_pair(base + i, split) for i in range(10_000)), N_PAIRS[split])


def _topic_text(seed: int, split: str, topic: str) -> str:
    """A sentiment-free topic opening, then a neutral stem ending in "the".

    The mirror image of :func:`_sentiment_pair`: read where the model predicts a
    topic noun or a sentiment adjective while the sentiment is still open, the
    difference is the topic alone.
    """
    rng = random.Random(seed)
    prefix = rng.choice(C.PREFACES) + " " if rng.random() < 0.3 else ""
    first = C.fill(rng.choice(_half(C.OPENINGS_NOUN + C.OPENINGS_ACTIVITY, split)), rng, topic, None)
    return f"{prefix}{first} {rng.choice(_half(C.NEUTRAL_THE_STEMS, split))}"


def topic_pairs(split: Split = "train", positive: str = "food", negative: str = "travel") -> list[Pair]:
    """``(positive-topic, negative-topic)`` pairs: the same sentences about another topic.

    Example:
        >>> topic_pairs("test", positive="film", negative="food")[0]
        ('Here is my review of the movie. ...', 'Here is my review of the dinner. ...')
    """
    _check_split(split)
    for topic in (positive, negative):
        if topic not in C.TOPICS:
            raise InvalidArgumentError(f"topic must be one of {C.TOPICS}, got {topic!r}.")
    if positive == negative:
        raise InvalidArgumentError("positive and negative must be different topics.")
    base = 0 if split == "train" else 10_000
    pairs = ((_topic_text(base + i, split, positive), _topic_text(base + i, split, negative)) for i in range(10_000))
    return _unique(pairs, N_PAIRS[split])


def neutral_prompts(concept: Concept, split: Split = "test") -> list[str]:
    """48 prompts whose next word is naturally a word of ``concept``, without a hint of its group.

    Sentiment prompts name a topic and end in a stem like ``"... The film was"``
    (topics balanced); topic prompts end in ``"... about the"`` and name no topic.

    Example:
        >>> neutral_prompts("topic", "test")[0]
        'Here is my review of the'
    """
    _check_split(split)
    _check_concept(concept)
    if concept == "topic":
        prompts = [f"{pre}{stem}" for pre in ("", *(p + " " for p in C.PREFACES)) for stem in _noun_stems(split)]
        return prompts[:N_PROMPTS]

    def render(i: int) -> str:
        rng = random.Random((0 if split == "train" else 10_000) + i)
        topic = C.TOPICS[i % len(C.TOPICS)]
        start = C.opening(rng, topic)
        return f"{start} " + C.fill(rng.choice(_half(C.SENTIMENT_STEMS, split)), rng, topic, None)

    return _unique((render(i) for i in range(10_000)), N_PROMPTS)


__all__ = [
    "CONCEPTS",
    "Pair",
    "concept_words",
    "neutral_prompts",
    "sentiment_pairs",
    "topic_pairs",
]
