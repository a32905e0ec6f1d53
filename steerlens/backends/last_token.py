"""Finishing a HookedTransformer forward pass from a residual, when only the last token's output matters.

Sweeps need the next-token logits of each prompt and nothing else. Every block but
the final one must run on every position (later blocks attend to them), but the
final block only needs keys and values of the earlier positions: its queries,
attention output and MLP are needed at the last real token alone. That is exactly
what TransformerLens computes for one new token with a KV cache, so the final block
runs as a one-token step over a cache filled from the same residual.
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor


def last_token_resid(
    final_resid: Float[Tensor, "batch pos d_model"], last: Int[Tensor, "batch"]
) -> Float[Tensor, "batch d_model"]:
    """The residual at column ``last[i]`` of each row."""
    rows = torch.arange(final_resid.shape[0], device=final_resid.device)
    return final_resid[rows, last.to(final_resid.device)]


def unembed(model: Any, resid: Float[Tensor, "n d_model"]) -> Float[Tensor, "n d_vocab"]:
    """TransformerLens' own final norm, unembed and soft-cap on single positions (float32).

    ``start_at_layer=n_layers`` runs no block. Unembedding reads the whole ``W_U``
    whatever the number of rows, so callers gather many rows into one call.
    """
    return model(resid[:, None], start_at_layer=model.cfg.n_layers)[:, 0].float()


def _one_token_final_block_ok(cfg: Any, last: Tensor, n_pos: int) -> bool:
    """Whether the final block can run as a one-token KV-cache step with the same result.

    The step puts the query at the last column. Absolute position embeddings are
    already in the residual, so any row works (right padding is masked out); rotary
    attention rotates the query by its column, so every row must end there (left
    padding or equal lengths). Exotic attention variants take the plain route.
    """
    if cfg.use_attn_in or cfg.use_split_qkv_input or getattr(cfg, "use_logn_attn", False):
        return False
    if getattr(cfg, "clip_qkv", None) is not None or "Olmo" in str(cfg.original_architecture or ""):
        return False
    if any(kind != "global" for kind in (getattr(cfg, "attn_types", None) or ["global"])):
        return False
    if cfg.positional_embedding_type == "standard":
        return True
    return cfg.positional_embedding_type == "rotary" and bool((last == n_pos - 1).all())


def final_resid_at_last_token(
    model: Any,
    resid: Float[Tensor, "batch pos d_model"],
    start_at_layer: int,
    last: Int[Tensor, "batch"],
    attention_mask: Int[Tensor, "batch pos"],
) -> Float[Tensor, "batch d_model"]:
    """The residual after the last block at each row's last real token, starting from block ``start_at_layer``.

    Equal (to float rounding) to running blocks ``start_at_layer..`` on every position
    and picking column ``last[i]``, but the final block does one token's work.
    """
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

    n_layers = model.cfg.n_layers
    if start_at_layer >= n_layers:
        return last_token_resid(resid, last)
    if not _one_token_final_block_ok(model.cfg, last.cpu(), resid.shape[1]):
        final = model(resid, start_at_layer=start_at_layer, stop_at_layer=n_layers, attention_mask=attention_mask)
        return last_token_resid(final, last)
    if start_at_layer < n_layers - 1:
        resid = model(resid, start_at_layer=start_at_layer, stop_at_layer=n_layers - 1, attention_mask=attention_mask)
    block = model.blocks[n_layers - 1]
    normed = block.ln1(resid)
    _, keys, values = block.attn.calculate_qkv_matrices(normed, normed, normed)
    # The cache holds the keys and values of columns 0..pos-2 (before rotary, as
    # TransformerLens caches them); the step appends those of the query itself.
    cache = TransformerLensKeyValueCacheEntry(past_keys=keys[:, :-1], past_values=values[:, :-1], frozen=True)
    query = last_token_resid(resid, last)[:, None]
    return block(query, past_kv_cache_entry=cache, attention_mask=attention_mask.to(query.device))[:, 0]
