"""The toy data sets: contrast pairs per concept, neutral prompts, the concepts' measuring words."""

from __future__ import annotations

import pytest

from steerlens.errors import InvalidArgumentError
from steerlens.toy import concept_words, neutral_prompts, sentiment_pairs, topic_pairs
from steerlens.toy.datasets import CONCEPTS


@pytest.mark.parametrize("make", [sentiment_pairs, topic_pairs])
def test_pairs_splits_are_disjoint_and_deterministic(make):
    train, test = make("train"), make("test")
    assert len(train) == 64 and len(test) == 32
    assert not set(train) & set(test)
    assert make("train") == train
    assert all(p != n and p.strip() and n.strip() for p, n in train + test)


@pytest.mark.parametrize("concept", CONCEPTS)
def test_neutral_prompts_splits(concept):
    train, test = neutral_prompts(concept, "train"), neutral_prompts(concept, "test")
    assert len(train) == len(test) == 48
    assert not set(train) & set(test)
    assert neutral_prompts(concept, "test") == test


@pytest.mark.parametrize("concept", CONCEPTS)
def test_neutral_prompts_do_not_name_a_group(concept):
    words = {w.strip() for group in concept_words(concept).values() for w in group}
    for prompt in neutral_prompts(concept, "train") + neutral_prompts(concept, "test"):
        assert not words & set(prompt.replace(".", " ").replace(",", " ").split())


@pytest.mark.parametrize("concept", CONCEPTS)
def test_concept_words_are_single_tokens(toy, concept):
    groups = concept_words(concept)
    seen = set()
    for words in groups.values():
        for word in words:
            ids = toy.tokenizer.encode(word, add_special_tokens=False)
            assert len(ids) == 1, word
            seen.add(ids[0])
    assert len(seen) == sum(len(w) for w in groups.values())


def test_pairs_share_their_context():
    for pos, neg in sentiment_pairs("train") + topic_pairs("train"):
        assert pos.split(". ")[0] == neg.split(". ")[0] or pos.split(". ")[1:] == neg.split(". ")[1:]


def test_bad_split_or_concept():
    with pytest.raises(InvalidArgumentError):
        sentiment_pairs("dev")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        neutral_prompts("colour")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        topic_pairs(positive="food", negative="food")
