"""Steered and unsteered generations from the same prompt, for side-by-side comparison."""

from __future__ import annotations

from typing import Any

from steerlens.backends import backend_for
from steerlens.vector import SteeringVector


def generate_text(
    model: Any, prompt: str, max_new_tokens: int = 20, seed: int | None = None, tokenizer: Any = None
) -> str:
    """Greedy (``seed=None``) or seeded sampled continuation of ``prompt``, without the prompt."""
    backend = backend_for(model, tokenizer)
    backend.check_tokenizer()
    return backend.generate(prompt, max_new_tokens, seed)


def steered_and_unsteered(
    model: Any,
    vector: SteeringVector,
    prompt: str,
    multiplier: float = 4.0,
    max_new_tokens: int = 20,
    seed: int | None = None,
    tokenizer: Any = None,
) -> tuple[str, str]:
    """``(steered, unsteered)`` continuations of ``prompt``, same decoding settings.

    Example:
        >>> steered, plain = steered_and_unsteered(model, vec, "The film was", multiplier=6)
    """
    backend = backend_for(model, tokenizer)
    with vector.apply(backend, multiplier=multiplier):
        steered = generate_text(backend, prompt, max_new_tokens, seed)
    return steered, generate_text(backend, prompt, max_new_tokens, seed)
