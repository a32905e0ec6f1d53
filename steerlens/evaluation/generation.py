"""Steered and unsteered generations from the same prompt, for side-by-side comparison.

Prompts are strings (chat-template strings too) or token ids, encoded by the one
tokenization policy (:class:`~steerlens.tokens.TokenPolicy`) with ``prepend_bos``.
"""

from __future__ import annotations

from typing import Any

from steerlens.backends import backend_for
from steerlens.tokens import PromptInput, check_prepend_bos
from steerlens.vector import SteeringVector


def generate_text(
    model: Any,
    prompt: PromptInput,
    max_new_tokens: int = 20,
    seed: int | None = None,
    tokenizer: Any = None,
    *,
    prepend_bos: bool | None = None,
) -> str:
    """Greedy (``seed=None``) or seeded sampled continuation of ``prompt``, without the prompt.

    Example:
        >>> generate_text(model, tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    """
    backend = backend_for(model, tokenizer)
    backend.check_tokenizer()
    return backend.generate(prompt, max_new_tokens, seed, check_prepend_bos(prepend_bos))


def steered_and_unsteered(
    model: Any,
    vector: SteeringVector,
    prompt: PromptInput,
    multiplier: float = 4.0,
    max_new_tokens: int = 20,
    seed: int | None = None,
    tokenizer: Any = None,
    *,
    prepend_bos: bool | None = None,
) -> tuple[str, str]:
    """``(steered, unsteered)`` continuations of ``prompt``, same decoding settings and tokens.

    Example:
        >>> steered, plain = steered_and_unsteered(model, vec, "The film was", multiplier=6)
    """
    backend = backend_for(model, tokenizer)
    with vector.apply(backend, multiplier=multiplier):
        steered = generate_text(backend, prompt, max_new_tokens, seed, prepend_bos=prepend_bos)
    return steered, generate_text(backend, prompt, max_new_tokens, seed, prepend_bos=prepend_bos)
