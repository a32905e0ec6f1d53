"""Steered and unsteered generations from the same prompt, for side-by-side comparison."""

from __future__ import annotations

from typing import Any

import torch

from steerlens.vector import SteeringVector


def generate_text(model: Any, prompt: str, max_new_tokens: int = 20, seed: int | None = None) -> str:
    """Greedy (``seed=None``) or seeded sampled continuation of ``prompt``, without the prompt."""
    tokens = model.to_tokens(prompt)
    if seed is not None:
        torch.manual_seed(seed)
    out = model.generate(
        tokens, max_new_tokens=max_new_tokens, do_sample=seed is not None, verbose=False,
        stop_at_eos=True, use_past_kv_cache=True,
    )
    return model.to_string(out[0, tokens.shape[1] :])


def steered_and_unsteered(
    model: Any,
    vector: SteeringVector,
    prompt: str,
    multiplier: float = 4.0,
    max_new_tokens: int = 20,
    seed: int | None = None,
) -> tuple[str, str]:
    """``(steered, unsteered)`` continuations of ``prompt``, same decoding settings.

    Example:
        >>> steered, plain = steered_and_unsteered(model, vec, "The film was", multiplier=6)
    """
    with vector.apply(model, multiplier=multiplier):
        steered = generate_text(model, prompt, max_new_tokens, seed)
    return steered, generate_text(model, prompt, max_new_tokens, seed)
