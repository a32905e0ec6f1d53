"""Batching prompts (``steerlens/tokens/batching.py``): padded batches hold each prompt's ids
exactly, the mask and ``last`` find its real tokens, and a padded batch through a model gives
each prompt's logits as when it runs alone."""

from __future__ import annotations

import pytest
import torch
from helpers import make_model

from steerlens.backends import backend_for
from steerlens.errors import InvalidArgumentError, SteerlensError
from steerlens.tokens import iter_batches, prepare_prompts

ENCODED = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [14, 15]]
PAD = 0


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("longest_first", [False, True])
def test_every_row_holds_its_prompt_and_the_mask_marks_it(side, longest_first):
    batches = list(iter_batches(ENCODED, 3, PAD, side, "cpu", longest_first=longest_first))
    seen = [i for batch in batches for i in batch.indices]
    assert sorted(seen) == list(range(len(ENCODED)))
    if not longest_first:
        assert seen == list(range(len(ENCODED)))  # the caller's order
    else:
        assert [len(ENCODED[i]) for i in seen] == sorted(map(len, ENCODED), reverse=True)
    for batch in batches:
        assert len(batch.indices) <= 3
        width = max(len(ENCODED[i]) for i in batch.indices)
        assert batch.tokens.shape == batch.attention_mask.shape == (len(batch.indices), width)
        for row, i in enumerate(batch.indices):
            ids, mask = batch.tokens[row].tolist(), batch.attention_mask[row].tolist()
            real = [t for t, m in zip(ids, mask) if m]
            assert real == ENCODED[i] and sum(mask) == len(ENCODED[i])
            pads = width - len(ENCODED[i])
            expected_mask = [0] * pads + [1] * len(ENCODED[i]) if side == "left" else [1] * len(ENCODED[i]) + [0] * pads
            assert mask == expected_mask
            assert all(t == PAD for t, m in zip(ids, mask) if not m)
            assert ids[int(batch.last[row])] == ENCODED[i][-1]
            assert [ids[batch.column(row, k)] for k in range(len(ENCODED[i]))] == ENCODED[i]


def test_bad_batch_size_and_side_are_errors():
    with pytest.raises(SteerlensError, match="batch_size"):
        list(iter_batches(ENCODED, 0, PAD, "right", "cpu"))
    with pytest.raises(SteerlensError, match="padding_side"):
        list(iter_batches(ENCODED, 2, PAD, "middle", "cpu"))


@pytest.fixture(scope="module")
def model():
    return make_model(n_layers=2)


@pytest.mark.parametrize("prepend_bos", [True, False])
def test_prepare_prompts_encodes_as_transformer_lens_does(model, prepend_bos):
    texts = ["I love this film", "a b"]
    prepared = prepare_prompts(backend_for(model), [*texts, [3, 4, 5]], prepend_bos=prepend_bos)
    for text, ids in zip(texts, prepared.encoded):
        assert ids == model.to_tokens(text, prepend_bos=prepend_bos)[0].tolist()
    bos = [model.tokenizer.bos_token_id] if prepend_bos else []
    assert prepared.encoded[2] == bos + [3, 4, 5]  # ids as given, the flag changing exactly the BOS
    assert len(prepared) == 3 and prepared.prompts[:2] == texts


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_padded_batch_gives_each_prompts_own_logits(model, side):
    texts = ["I love this film and", "a b", "The food was"]
    prepared = prepare_prompts(backend_for(model), texts, prepend_bos=True, padding_side=side)
    assert prepared.padding_side == side
    for batch in prepared.batches(8):
        with torch.no_grad():
            logits = model(batch.tokens, attention_mask=batch.attention_mask)
        for row, i in enumerate(batch.indices):
            with torch.no_grad():
                alone = model(torch.tensor([prepared.encoded[i]]))[0, -1]
            torch.testing.assert_close(logits[row, int(batch.last[row])], alone, atol=1e-4, rtol=1e-4)


def test_prepare_prompts_refuses_bad_input_before_encoding(model):
    with pytest.raises(SteerlensError):
        prepare_prompts(backend_for(model), [])
    with pytest.raises(InvalidArgumentError):
        prepare_prompts(backend_for(model), ["a"], prepend_bos="yes")
