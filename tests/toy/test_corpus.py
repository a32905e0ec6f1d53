"""The toy corpus: documents with one topic and one (mostly held) sentiment, reproducible per seed."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from steerlens.toy.corpus import (
    ADJECTIVES,
    MIXED,
    MOOD_SENTENCES,
    NEUTRAL_BODIES,
    PREFACES,
    SENTIMENT_BODIES,
    SENTIMENT_STEMS,
    SENTIMENTS,
    TOPIC_NOUNS,
    TOPICS,
    article,
    fill,
    iter_documents,
    measured,
    opening,
    render_document,
)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def test_article_follows_the_first_letter():
    assert article("awful") == "an awful"
    assert article("excellent") == "an excellent"
    assert article("great") == "a great"


def test_measured_words_get_their_mid_sentence_space():
    assert measured(["good", "bad", "dull"], 2) == [" good", " bad"]


def test_fill_with_the_same_rng_state_aligns_the_two_sentiments():
    template = "The {N} was {aA} one."
    texts = {s: fill(template, random.Random(7), "food", s, adj=3) for s in SENTIMENTS}
    assert texts["positive"] == f"The {texts['positive'].split()[1]} was {article(ADJECTIVES['positive'][3])} one."
    assert texts["negative"] == texts["positive"].replace(
        article(ADJECTIVES["positive"][3]), article(ADJECTIVES["negative"][3])
    )
    assert texts["positive"].split()[1] in TOPIC_NOUNS["food"]


@pytest.mark.parametrize("topic", TOPICS)
def test_a_neutral_opening_names_the_topic_and_no_sentiment(topic):
    rng = random.Random(1)
    sentiment_words = set(itertools.chain(*ADJECTIVES.values()))
    for _ in range(50):
        text = opening(rng, topic, None, preface=False)
        assert not words(text) & sentiment_words, text
    others = {n for t in TOPICS if t != topic for n in TOPIC_NOUNS[t]}
    named = [words(opening(rng, topic, None, preface=False)) for _ in range(50)]
    assert not any(w & others for w in named)


def test_a_document_keeps_its_topic_and_mostly_its_sentiment():
    # A noun can also occur in the fixed wording ("I have a story to share"); only the slot nouns count.
    fixed = words(" ".join(PREFACES + MOOD_SENTENCES + NEUTRAL_BODIES + SENTIMENT_BODIES + SENTIMENT_STEMS))
    others = {n for t in ("film", "food") for n in TOPIC_NOUNS[t]} - fixed
    rng = random.Random(0)
    held = other = 0
    for _ in range(300):
        found = words(render_document(rng, topic="travel", sentiment="negative"))
        assert not found & others
        held += len(found & set(ADJECTIVES["negative"]))
        other += len(found & set(ADJECTIVES["positive"]))
    # Sentences switch to the other sentiment with probability MIXED (0.15), so some do, but few.
    assert 0.3 * MIXED < other / (held + other) < 2 * MIXED


def test_documents_are_reproducible_per_seed_and_cover_every_topic():
    first = list(itertools.islice(iter_documents(3), 60))
    assert first == list(itertools.islice(iter_documents(3), 60))
    assert first != list(itertools.islice(iter_documents(4), 60))
    for topic in TOPICS:
        assert any(words(doc) & set(TOPIC_NOUNS[topic]) for doc in first)
