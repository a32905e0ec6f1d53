"""The bundled chat data (steerlens.samples.bundled): sizes, balance, splits, and rendering in a chat template.

No real model: the records are checked as data and rendered with a tiny in-memory tokenizer
carrying a ChatML-style template (the kind SmolLM2 and Qwen use).
"""

from __future__ import annotations

from collections import Counter

import pytest
from tiny_hf import make_tokenizer

from steerlens import caa_items, caa_pairs
from steerlens.errors import InvalidArgumentError, InvalidSampleError, SteerlensError
from steerlens.samples import bundled
from steerlens.samples.chat import answer_letter, caa_record

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
BEHAVIOURS = bundled.list_behaviours()
KINDS = bundled.list_chat_contrasts()


@pytest.fixture(scope="module")
def tok():
    tokenizer = make_tokenizer()
    tokenizer.chat_template = CHATML
    return tokenizer


def test_there_are_at_least_two_behaviours_and_two_contrast_kinds():
    assert len(BEHAVIOURS) >= 2 and set(BEHAVIOURS) == set(bundled.BEHAVIOURS)
    assert set(KINDS) == {"sentiment", "topic"}


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_ab_items_are_many_unique_and_letter_balanced_in_each_split(behaviour):
    every = bundled.ab_items(behaviour, "all")
    assert len(every) >= 150
    questions = [record["question"] for record in every]
    assert len(set(questions)) == len(questions), "duplicate questions"
    for split in ("train", "test"):
        records = bundled.ab_items(behaviour, split)
        assert records and all(record["split"] == split for record in records)
        letters = Counter(answer_letter(caa_record(record)[1]) for record in records)
        assert letters["A"] == letters["B"] == len(records) / 2, (split, letters)
    train, test = (bundled.ab_items(behaviour, split) for split in ("train", "test"))
    assert len(train) + len(test) == len(every) and len(train) > len(test)
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    assert bundled.ab_items(behaviour) == train  # train is the default


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_every_record_parses_and_names_both_choices(behaviour):
    for index, record in enumerate(bundled.ab_items(behaviour, "all")):
        question, matching = caa_record(record, where=f"item {index}: ")
        other = record["answer_not_matching_behavior"]
        assert {answer_letter(matching), answer_letter(other)} == {"A", "B"}, index
        assert question.count("\n(A) ") == 1 and question.count("\n(B) ") == 1, index
        assert question.index("\n(A) ") < question.index("\n(B) "), index


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_items_render_in_a_chat_template(behaviour, tok):
    records = bundled.ab_items(behaviour, "test")
    items = caa_items(tok, records)
    assert len(items) == len(records)
    for (prompt, letter), record in zip(items, records):
        assert prompt.startswith("<|im_start|>user\n" + record["question"] + "<|im_end|>\n")
        assert prompt.endswith("<|im_start|>assistant\n(")
        assert "(" + letter + ")" == record["answer_matching_behavior"]
    pairs = caa_pairs(tok, records, system_prompt="Answer with a letter.")
    assert pairs[0].positive_str.startswith("<|im_start|>system\nAnswer with a letter.<|im_end|>")
    assert {pair.positive_str[-1] for pair in pairs} == {"A", "B"}
    assert all(pair.positive_str[:-1] == pair.negative_str[:-1] for pair in pairs)


def test_records_are_fresh_copies():
    behaviour = BEHAVIOURS[0]
    bundled.ab_items(behaviour)[0]["question"] = "changed"
    assert bundled.ab_items(behaviour)[0]["question"] != "changed"


@pytest.mark.parametrize("kind", KINDS)
def test_chat_contrast_pairs_are_many_distinct_and_split_without_overlap(kind, tok):
    every = bundled.chat_contrast_records(kind, "all")
    assert len(every) >= 100
    keys = [(r["user"], r["positive"], r["negative"]) for r in every]
    assert len(set(keys)) == len(keys)
    assert all(r["positive"] != r["negative"] for r in every)
    train, test = (bundled.chat_contrast_records(kind, split) for split in ("train", "test"))
    assert len(train) + len(test) == len(every) and train and test
    for field in ("user", "positive", "negative"):
        assert not {r[field] for r in train} & {r[field] for r in test}, field
    pairs = bundled.chat_contrast_pairs(kind, "test", tokenizer=tok)
    assert len(pairs) == len(test)
    for (pos, neg), record in zip(pairs, test):
        head = "<|im_start|>user\n" + record["user"] + "<|im_end|>\n<|im_start|>assistant\n"
        assert (pos, neg) == (head + record["positive"], head + record["negative"])


def test_neutral_chat_prompts(tok):
    users = bundled.neutral_chat_prompts()
    assert len(users) >= 50 and len(set(users)) == len(users)
    rendered = bundled.neutral_chat_prompts(tok, system_prompt="Be brief.")
    assert rendered[0] == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n" + users[0] + "<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.mark.parametrize(
    "call, names",
    [
        (lambda: bundled.ab_items("flattery"), BEHAVIOURS),
        (lambda: bundled.ab_items(None), BEHAVIOURS),
        (lambda: bundled.chat_contrast_records("weather"), KINDS),
        (lambda: bundled.chat_contrast_pairs("weather", tokenizer=None), KINDS),
        (lambda: bundled.ab_items(BEHAVIOURS[0], "validation"), ("train", "test", "all")),
        (lambda: bundled.chat_contrast_records("topic", "dev"), ("train", "test", "all")),
    ],
)
def test_unknown_names_raise_a_steerlens_error_naming_the_available_ones(call, names):
    with pytest.raises(InvalidArgumentError) as info:
        call()
    assert isinstance(info.value, (SteerlensError, ValueError))
    for name in names:
        assert name in str(info.value)


def test_caa_record_errors_are_kept():
    with pytest.raises(InvalidSampleError, match="'answer_matching_behavior' is missing"):
        caa_record({"question": "Q?"})
