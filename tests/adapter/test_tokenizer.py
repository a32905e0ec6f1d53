"""A tokenizer made ready for TransformerLens: a private copy with pad/bos tokens, checked against the vocabulary."""

from __future__ import annotations

import pytest
from helpers import make_model
from tiny_hf import make_tokenizer
from tokenizers.processors import TemplateProcessing

from steerlens.adapter.tokenizer import attach_tokenizer, prepare_tokenizer
from steerlens.errors import TokenizerError


def test_a_copy_gets_eos_as_pad_and_the_original_is_left_alone():
    tokenizer = make_tokenizer()  # no pad token
    tok = prepare_tokenizer(tokenizer, d_vocab=64)
    assert tok is not tokenizer and tokenizer.pad_token is None
    assert tok.pad_token == tokenizer.eos_token and tok.bos_token == "<bos>" and tok.padding_side == "right"
    assert tok("the cat")["input_ids"] == tokenizer("the cat")["input_ids"]
    same = prepare_tokenizer(tokenizer, d_vocab=64, copy=False)
    assert same is tokenizer and tokenizer.pad_token == "<eos>"


def test_a_tokenizer_without_bos_uses_eos_as_transformer_lens_does():
    tokenizer = make_tokenizer()
    tokenizer.bos_token = None
    assert prepare_tokenizer(tokenizer, d_vocab=64).bos_token == "<eos>"


def test_refusals_name_the_problem():
    with pytest.raises(TokenizerError, match="token id 21 but the model's vocabulary has only 20 rows"):
        prepare_tokenizer(make_tokenizer(), d_vocab=20)
    with pytest.raises(TokenizerError, match=r"PreTrainedTokenizerBase\), got str"):
        prepare_tokenizer("gpt2", d_vocab=64)  # type: ignore[arg-type]
    bare = make_tokenizer()
    bare.eos_token = bare.bos_token = bare.unk_token = None
    with pytest.raises(TokenizerError, match="no pad, eos, bos or unk token"):
        prepare_tokenizer(bare, d_vocab=64)


@pytest.mark.parametrize("adds_bos", [False, True])
def test_attach_tells_transformer_lens_whether_the_tokenizer_prepends_bos(adds_bos):
    tokenizer = make_tokenizer()
    if adds_bos:
        tokenizer._tokenizer.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    model = make_model(n_layers=1)
    attach_tokenizer(model, tokenizer)
    assert model.tokenizer is not tokenizer and model.cfg.tokenizer_prepends_bos is adds_bos
    # TransformerLens then prepends exactly one BOS either way.
    assert (
        model.to_tokens("the cat", prepend_bos=True)[0].tolist()
        == [1] + tokenizer("the cat", add_special_tokens=False)["input_ids"]
    )
