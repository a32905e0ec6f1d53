"""Contrast pairs and A/B prompts from chat conversations, in the model's own chat template.

Contrastive activation addition (CAA) trains on multiple-choice questions: the same
conversation is answered once with the letter of the behaviour (``(A``) and once with
the other letter (``(B``), and the vector is the difference of the activations at
the letter. Chat models must see their own template, so the conversation is
rendered by ``tokenizer.apply_chat_template``; the rendered text starts with the
template's BOS (``<s>``), which steerlens' tokenization policy never doubles.

Example:
    >>> record = {"question": "Do you like cats?\\n(A) Yes\\n(B) No", "answer_matching_behavior": "(A)"}
    >>> pair = caa_pairs(llama_tokenizer, [record], answer_prefix=" (")[0]
    >>> pair.positive_str, pair.negative_str[-12:]
    ('<s>[INST] Do you like cats?\\n(A) Yes\\n(B) No [/INST] (A', 'o [/INST] (B')
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping, Sequence, Union

from steerlens.errors import InvalidArgumentError, InvalidSampleError, TokenizerError
from steerlens.samples.sample import SteeringVectorTrainingSample

ChatItem = Union[Mapping[str, str], tuple[str, str]]
"""A CAA record (``question`` with its choices, ``answer_matching_behavior`` like ``"(A)"``)
or a ``(question, matching_letter)`` pair."""

Message = Mapping[str, str]


def chat_prompt(tokenizer: Any, user: str, *, system_prompt: str | None = None, history: Sequence[Message] = ()) -> str:
    """The conversation ``[system] + history + user`` rendered by the tokenizer's chat template,
    ending where the assistant's answer starts.

    Example:
        >>> chat_prompt(llama_tokenizer, "Hi")
        '<s>[INST] Hi [/INST]'
    """
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + list(history)
    messages.append({"role": "user", "content": user})
    if getattr(tokenizer, "chat_template", None) is None:
        raise TokenizerError(
            "the tokenizer has no chat template; load the chat model's own tokenizer, or set "
            "tokenizer.chat_template (a Jinja template) first."
        )
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def caa_record(
    record: Mapping[str, Any], error: type[ValueError] = InvalidSampleError, where: str = ""
) -> tuple[Any, Any]:
    """``(question, answer_matching_behavior)`` of a CAA dataset record; ``error`` names a missing key."""
    try:
        return record["question"], record["answer_matching_behavior"]
    except KeyError as missing:
        raise error(
            f"{where}a CAA record needs 'question' and 'answer_matching_behavior'; {missing} is missing."
        ) from None


def answer_letter(answer: Any, letters: tuple[str, str] = ("A", "B")) -> str | None:
    """The letter an answer like ``"(A)"``, ``" (B)"`` or ``"A"`` names; None when it is none of ``letters``."""
    pattern = "|".join(re.escape(letter) for letter in letters)
    match = re.fullmatch(rf"\s*\(?\s*({pattern})\s*\)?\s*", str(answer))
    return None if match is None else match.group(1)


def _question_and_letter(index: int, item: ChatItem, letters: tuple[str, str]) -> tuple[str, str]:
    if isinstance(item, Mapping):
        question, answer = caa_record(item, where=f"item {index}: ")
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        question, answer = item
    else:
        raise InvalidSampleError(
            f"item {index} is {type(item).__name__}; pass CAA records (dicts) or (question, letter) pairs."
        )
    letter = answer_letter(answer, letters)
    if not isinstance(question, str) or not question.strip() or letter is None:
        raise InvalidSampleError(
            f"item {index}: needs a question and a matching answer among {letters} (like '(A)'), "
            f"got {question!r:.60} and {answer!r}."
        )
    return question, letter


def caa_items(
    tokenizer: Any,
    items: Iterable[ChatItem],
    *,
    system_prompt: str | None = None,
    answer_prefix: str = "(",
    letters: tuple[str, str] = ("A", "B"),
) -> list[tuple[str, str]]:
    """``(prompt, matching letter)`` per item: the chat ending right before the answer letter.

    Pass the result to :func:`~steerlens.evaluation.comparison.ab_behavior_probability`,
    which reads the two letters in the context of each prompt.

    Example:
        >>> caa_items(llama_tokenizer, [("Do you like cats?", "A")])
        [('<s>[INST] Do you like cats? [/INST](', 'A')]
    """
    out = []
    for index, item in enumerate(items):
        question, letter = _question_and_letter(index, item, letters)
        out.append((chat_prompt(tokenizer, question, system_prompt=system_prompt) + answer_prefix, letter))
    if not out:
        raise InvalidArgumentError("no items given; pass at least one A/B question.")
    return out


def caa_pairs(
    tokenizer: Any,
    items: Iterable[ChatItem],
    *,
    system_prompt: str | None = None,
    answer_prefix: str = "(",
    letters: tuple[str, str] = ("A", "B"),
) -> list[SteeringVectorTrainingSample]:
    """CAA contrast pairs: each item's conversation answered with the matching letter vs the other one.

    The positive prompt ends in ``answer_prefix + matching letter``, the negative one in
    the other letter, so training reads (by default, at the last token) the activation
    at the answer letter. ``answer_prefix`` is what the assistant writes before the
    letter: ``"("`` for templates whose generation prompt ends in a newline, ``" ("``
    to follow ``[/INST]`` with a space as CAA's Llama-2 prompts do.

    Example:
        >>> vec = train_steering_vector(model, tokenizer, caa_pairs(tokenizer, records), layers=[13])
    """
    pairs = []
    for prompt, letter in caa_items(
        tokenizer, items, system_prompt=system_prompt, answer_prefix=answer_prefix, letters=letters
    ):
        other = letters[1] if letter == letters[0] else letters[0]
        pairs.append(SteeringVectorTrainingSample(prompt + letter, prompt + other))
    return pairs
