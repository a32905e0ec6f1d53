"""``steer_from``: measuring functions steer each prompt from its answer on, as CAA does.

The reference is a hand-written TransformerLens hook that adds the vector only at
positions at or after each prompt's start, found here by searching the token ids.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import make_chat_model, random_vector, steered_logits_by_hand

from steerlens import ab_behavior_probability, compare_logits, sweep_layers
from steerlens.errors import InvalidArgumentError, TokenizerError
from steerlens.tokens import single_target_id
from steerlens.tokens.starts import assistant_header, steer_starts

QUESTIONS = ["I love this film , it was", "The food was terrible", "What a lovely day for a walk"]


@pytest.fixture(scope="module")
def chat_model():
    return make_chat_model()


def items(tokenizer) -> list[tuple[str, str]]:
    """A/B prompts in the chat template (they start with the BOS text, so no second BOS is added)."""
    out = []
    for i, question in enumerate(QUESTIONS):
        chat = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        out.append((chat + "the park (", "A" if i % 2 else "B"))
    return out


def by_hand_start(ids: list[int], header: list[int]) -> int:
    return max(i + len(header) for i in range(len(ids)) if ids[i : i + len(header)] == header)


def test_steer_starts_for_each_kind(chat_model):
    tok = chat_model.tokenizer
    header = tok("<|endoftext|>assistant\n", add_special_tokens=False)["input_ids"]
    assert assistant_header(tok) == header
    encoded = [chat_model.to_tokens(prompt, prepend_bos=False)[0].tolist() for prompt, _ in items(tok)]
    assert steer_starts(tok, encoded, "answer") == [by_hand_start(ids, header) for ids in encoded]
    assert steer_starts(tok, encoded, "last") == [len(ids) - 1 for ids in encoded]
    assert steer_starts(tok, encoded, 3) == [3, 3, 3]
    assert steer_starts(tok, encoded, [1, 2, 3]) == [1, 2, 3]
    assert steer_starts(tok, encoded, None) is None
    with pytest.raises(InvalidArgumentError, match="3 prompts"):
        steer_starts(tok, encoded, [1, 2])
    with pytest.raises(InvalidArgumentError, match="no assistant header"):
        steer_starts(tok, [[5, 6, 7]], "answer")
    with pytest.raises(InvalidArgumentError, match="not known"):
        steer_starts(tok, encoded, "first")
    plain = copy.deepcopy(tok)
    plain.chat_template = None
    with pytest.raises(TokenizerError, match="chat template"):
        steer_starts(plain, encoded, "answer")


def _steered_last_logits(model, vec, layer: int, multiplier: float, ids: list[int], start: int) -> torch.Tensor:
    return steered_logits_by_hand(model, vec, layer, multiplier, ids, start)[-1]


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_ab_probability_from_the_answer_equals_a_hand_written_hook(chat_model, padding_side):
    tok = chat_model.tokenizer
    vec = random_vector(chat_model, (1, 2), seed=7, scale=4.0)
    ab = items(tok)
    got = ab_behavior_probability(
        chat_model, vec, ab, multipliers=[-2.0, 2.0], steer_from="answer", padding_side=padding_side
    )
    everywhere = ab_behavior_probability(chat_model, vec, ab, multipliers=[-2.0, 2.0], padding_side=padding_side)
    header = assistant_header(tok)
    for row in got.itertuples():
        a, b = single_target_id(tok, row.prompt, "A"), single_target_id(tok, row.prompt, "B")
        ids = chat_model.to_tokens(row.prompt, prepend_bos=False)[0].tolist()
        logits = _steered_last_logits(chat_model, vec, row.layer, row.multiplier, ids, by_hand_start(ids, header))
        pair = torch.softmax(logits[[a, b]], -1)
        expected = pair[0 if row.matching == "A" else 1].item()
        assert row.p_matching_steered == pytest.approx(expected, abs=1e-5)
    assert (got.p_matching_steered - everywhere.p_matching_steered).abs().max() > 1e-3


def test_sweep_and_compare_with_one_start_per_prompt(chat_model):
    vec = random_vector(chat_model, (1,), seed=8, scale=4.0)
    prompts = [prompt for prompt, _ in items(chat_model.tokenizer)]
    starts = [2, 5, 9]
    frame = sweep_layers(chat_model, vec, prompts, multipliers=[3.0], metric="kl", per_prompt=True, steer_from=starts)
    compared = compare_logits(chat_model, vec, prompts, multipliers=[3.0], steer_from=starts)
    for index, prompt in enumerate(prompts):
        ids = chat_model.to_tokens(prompt, prepend_bos=False)[0].tolist()
        steered = _steered_last_logits(chat_model, vec, 1, 3.0, ids, starts[index]).log_softmax(-1)
        with torch.no_grad():
            clean = chat_model(torch.tensor([ids]))[0, -1].log_softmax(-1)
        kl = (steered.exp() * (steered - clean)).sum().item()
        assert frame.kl[index] == pytest.approx(kl, abs=1e-5, rel=1e-4)
        assert compared.kl[index] == pytest.approx(kl, abs=1e-5, rel=1e-4)
