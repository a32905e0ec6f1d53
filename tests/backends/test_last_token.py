"""Finishing a forward pass at the last token equals the full pass, on every route."""

from __future__ import annotations

import pytest
import torch
from helpers import make_model

from steerlens.backends.last_token import _one_token_final_block_ok, final_resid_at_last_token, last_token_resid
from steerlens.tokens.encoding import pad_batch

PROMPTS = ["a b c d e f g", "b c", "c d e f", "d e f g a b c d e f", "e"]


def _batch(model, side):
    seqs = [model.to_tokens(p)[0].tolist() for p in PROMPTS]
    batch = pad_batch(seqs, model.tokenizer.pad_token_id, side)
    last = torch.tensor([batch.position(i, n - 1) for i, n in enumerate(batch.lengths)])
    return batch.tokens, batch.attention_mask, last


@pytest.mark.parametrize("kind", ["standard", "rotary", "gqa"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_equals_full_forward_from_every_layer(kind, side):
    extra = {"n_key_value_heads": 2, "positional_embedding_type": "rotary"} if kind == "gqa" else {}
    model = make_model(
        n_layers=3,
        positional_embedding_type="rotary" if kind != "standard" else "standard",
        **{k: v for k, v in extra.items() if k != "positional_embedding_type"},
    )
    tokens, mask, last = _batch(model, side)
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, attention_mask=mask)
        # A perturbed residual, as steering leaves it.
        for layer in range(model.cfg.n_layers + 1):
            n_layers = model.cfg.n_layers
            start = cache[
                f"blocks.{layer}.hook_resid_pre" if layer < n_layers else f"blocks.{layer - 1}.hook_resid_post"
            ]
            start = start + 0.5 * torch.randn(start.shape[-1])
            full = (
                model(start, start_at_layer=layer, stop_at_layer=n_layers, attention_mask=mask)
                if layer < n_layers
                else start
            )
            got = final_resid_at_last_token(model, start, layer, last, mask)
            torch.testing.assert_close(got, last_token_resid(full, last), atol=1e-5, rtol=1e-5)


def test_one_token_route_is_taken_where_exact():
    standard, rotary = make_model(n_layers=2), make_model(n_layers=2, positional_embedding_type="rotary")
    assert _one_token_final_block_ok(standard.cfg, torch.tensor([3, 5]), 6)
    assert _one_token_final_block_ok(rotary.cfg, torch.tensor([5, 5]), 6)
    assert not _one_token_final_block_ok(rotary.cfg, torch.tensor([3, 5]), 6)  # right-padded rotary
