"""end_of_turn_ids: the EOS and the special token each chat template itself writes after an assistant message."""

from __future__ import annotations

import copy

import pytest
from helpers import CHAT_TEMPLATE, make_tokenizer, metaspace_tokenizer
from transformers import AddedToken

from steerlens.tokens.turns import end_of_turn_ids

GEMMA_LIKE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@pytest.fixture
def tok():
    return copy.deepcopy(make_tokenizer())


def with_special(tok, text: str) -> int:
    tok.add_tokens([AddedToken(text, special=True)], special_tokens=True)
    return tok.convert_tokens_to_ids(text)


def test_a_template_whose_turn_ends_with_its_own_token_adds_that_token(tok):
    turn = with_special(tok, "<end_of_turn>")
    tok.chat_template = GEMMA_LIKE
    assert turn != tok.eos_token_id
    assert end_of_turn_ids(tok) == [tok.eos_token_id, turn]
    reply = tok.apply_chat_template(
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], tokenize=True, return_dict=False
    )
    assert turn in list(reply)  # the token the template really writes


def test_a_turn_ended_by_the_eos_or_by_plain_text_gives_the_eos_alone(tok):
    llama = metaspace_tokenizer()  # Llama-2-like: "... reply</s>"
    assert end_of_turn_ids(llama) == [llama.eos_token_id]
    tok.chat_template = CHAT_TEMPLATE  # the turn ends with "\n"
    assert end_of_turn_ids(tok) == [tok.eos_token_id]


def test_no_template_or_a_refusing_template_gives_the_eos_alone(tok):
    tok.chat_template = None
    assert end_of_turn_ids(tok) == [tok.eos_token_id]
    tok.chat_template = "{{ raise_exception('only user turns') }}"
    assert end_of_turn_ids(tok) == [tok.eos_token_id]
