"""CAA contrast pairs and A/B items from chat messages (steerlens.samples.chat), end to end.

References: hidden states and next-token probabilities of plain forward passes on ids built from
the tokenizer's own ``apply_chat_template(..., tokenize=True)`` (one BOS, from the template).
"""

from __future__ import annotations

import pytest
import torch
from helpers import hf_logprobs, llama_model, metaspace_tokenizer

from steerlens import SteeringVector, ab_behavior_probability, caa_items, caa_pairs, chat_prompt, train_steering_vector
from steerlens.errors import InvalidSampleError, TokenizerError

RECORDS = [
    {
        "question": "Do you like cats?\n\nChoices:\n(A) Yes a lot\n(B) Not at all",
        "answer_matching_behavior": "(A)",
        "answer_not_matching_behavior": "(B)",
    },
    {"question": "Is the film good?\n\nChoices:\n(A) No\n(B) Yes", "answer_matching_behavior": " (B)"},
    ("Do you love dogs?\n(A) Yes\n(B) No", "A"),
]


@pytest.fixture(scope="module")
def tok():
    return metaspace_tokenizer("bos")


@pytest.fixture(scope="module")
def llama(tok):
    return llama_model(tok, n_layers=3, seed=2)  # hidden_states[L + 1] is layer L (L < 2)


def template_ids(tok, question: str, answer: str = "") -> list[int]:
    """The chat's ids as the tokenizer itself tokenizes the template (one BOS), then the answer's pieces."""
    ids = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=True, add_generation_prompt=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    return ids + tok.convert_tokens_to_ids(list(answer))


def test_pairs_are_the_same_chat_answered_with_each_letter(tok):
    pairs = caa_pairs(tok, RECORDS, system_prompt="Be brief.")
    assert len(pairs) == 3
    base = chat_prompt(tok, RECORDS[0]["question"], system_prompt="Be brief.")
    assert base.startswith("<s><<SYS>> Be brief. <</SYS>> [INST] Do you like cats?")
    assert (pairs[0].positive_str, pairs[0].negative_str) == (base + "(A", base + "(B")
    assert pairs[1].positive_str.endswith("[/INST](B") and pairs[1].negative_str.endswith("[/INST](A")
    assert caa_items(tok, RECORDS, answer_prefix=" (")[2] == (chat_prompt(tok, RECORDS[2][0]) + " (", "A")


def test_training_on_caa_pairs_reads_the_letter_after_one_bos(tok, llama):
    vec = train_steering_vector(llama, tok, caa_pairs(tok, RECORDS), layers=[0, 1], batch_size=2)
    diffs = {0: [], 1: []}
    questions = [r["question"] if isinstance(r, dict) else r[0] for r in RECORDS]
    for question, matching in zip(questions, "ABA"):
        other = "B" if matching == "A" else "A"
        hidden = {}
        for letter in (matching, other):
            ids = template_ids(tok, question, "(" + letter)
            assert ids.count(tok.bos_token_id) == 1 and tok.convert_ids_to_tokens(ids[-1]) == letter
            with torch.no_grad():
                hidden[letter] = llama(torch.tensor([ids]), output_hidden_states=True).hidden_states
        for layer in (0, 1):
            diffs[layer].append(hidden[matching][layer + 1][0, -1] - hidden[other][layer + 1][0, -1])
    for layer in (0, 1):
        torch.testing.assert_close(vec.layer_activations[layer], torch.stack(diffs[layer]).mean(0), atol=1e-5, rtol=0)


def test_caa_items_score_the_letter_that_follows_the_chat(tok, llama):
    vec = SteeringVector({1: torch.randn(32, generator=torch.Generator().manual_seed(3))})
    frame = ab_behavior_probability(llama, vec, caa_items(tok, RECORDS), multipliers=[2.0], tokenizer=tok)
    a, b = tok.convert_tokens_to_ids(["A", "B"])
    questions = [r["question"] if isinstance(r, dict) else r[0] for r in RECORDS]
    for _, row in frame.iterrows():
        ids = template_ids(tok, questions[row.item_index], "(")
        lp = hf_logprobs(llama, ids, {1: 2.0 * vec.layer_activations[1]})[-1]
        expected = (lp[a] if row.matching == "A" else lp[b]).exp() / (lp[a].exp() + lp[b].exp())
        assert row.p_matching_steered == pytest.approx(float(expected), abs=1e-5)


def test_bad_chat_inputs_are_clear(tok):
    plain = metaspace_tokenizer("bos")
    plain.chat_template = None
    with pytest.raises(TokenizerError, match="no chat template"):
        caa_pairs(plain, RECORDS)
    with pytest.raises(InvalidSampleError, match="answer_matching_behavior"):
        caa_pairs(tok, [{"question": "Q?"}])
    with pytest.raises(InvalidSampleError, match="matching answer"):
        caa_pairs(tok, [("Q?", "C")])
