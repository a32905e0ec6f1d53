"""Padding token lists into a batch, finding a token's column in it, read indices and tokenizer checks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from helpers import make_tokenizer

from steerlens.errors import TokenIndexError, TokenizerError
from steerlens.tokens import check_tokenizer_fits, pad_token_id, resolve_read_index
from steerlens.tokens.encoding import pad_batch

SEQS = [[5, 6, 7], [8], [9, 10]]


@pytest.mark.parametrize("side", ["left", "right"])
def test_pad_batch_puts_each_row_on_its_side_with_a_mask(side):
    batch = pad_batch(SEQS, -1, side)
    for row, seq in enumerate(SEQS):
        pad = [-1] * (3 - len(seq))
        expected = pad + seq if side == "left" else seq + pad
        assert batch.tokens[row].tolist() == expected
        assert batch.attention_mask[row].tolist() == [int(t != -1) for t in expected]
        # Every token of the row is found at its column.
        assert [batch.tokens[row, batch.position(row, i)].item() for i in range(len(seq))] == seq
    assert batch.lengths == (3, 1, 2) and batch.padding_side == side and batch.tokens.dtype == torch.long


def test_read_index_counts_from_either_end_or_asks_the_prompt():
    assert resolve_read_index(-1, "abc", 5) == 4
    assert resolve_read_index(0, "abc", 5) == 0
    assert resolve_read_index(-5, "abc", 5) == 0
    assert resolve_read_index(lambda prompt: len(prompt) - 4, "abcdef", 5) == 2
    with pytest.raises(TokenIndexError, match="has 5 tokens"):
        resolve_read_index(5, "abc", 5)
    with pytest.raises(TokenIndexError, match="has 5 tokens"):
        resolve_read_index(-6, "abc", 5)
    with pytest.raises(TokenIndexError, match="must be an int"):
        resolve_read_index(True, "abc", 5)
    with pytest.raises(TokenIndexError, match="must be an int"):
        resolve_read_index(lambda prompt: 1.0, "abc", 5)


def test_pad_token_id_falls_back_to_eos_then_zero():
    assert pad_token_id(SimpleNamespace(pad_token_id=3, eos_token_id=2)) == 3
    assert pad_token_id(SimpleNamespace(pad_token_id=None, eos_token_id=2)) == 2
    assert pad_token_id(SimpleNamespace()) == 0


def test_a_tokenizer_larger_than_the_vocabulary_is_refused():
    tokenizer = make_tokenizer()
    fits = SimpleNamespace(cfg=SimpleNamespace(d_vocab=len(tokenizer)))
    check_tokenizer_fits(fits, tokenizer)
    too_small = SimpleNamespace(cfg=SimpleNamespace(d_vocab=len(tokenizer) - 1))
    with pytest.raises(TokenizerError, match="does not belong"):
        check_tokenizer_fits(too_small, tokenizer)
    with pytest.raises(TokenizerError, match="no tokenizer"):
        check_tokenizer_fits(fits, None)
