"""Recognising the model objects steerlens accepts, and turning them into HookedTransformers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steerlens.errors import UnsupportedModelError


def is_hooked_transformer(model: Any) -> bool:
    from transformer_lens import HookedTransformer

    return isinstance(model, HookedTransformer)


def is_hf_model(model: Any) -> bool:
    try:
        from transformers import PreTrainedModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, PreTrainedModel)


def is_transformer_bridge(model: Any) -> bool:
    """A TransformerLens ``TransformerBridge`` (it wraps a Hugging Face model, ``.original_model``)."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:  # pragma: no cover - older TransformerLens
        return False
    return isinstance(model, TransformerBridge)


def unwrap_bridge(model: Any) -> Any:
    """The Hugging Face model inside a ``TransformerBridge``; any other model as it is."""
    return model.original_model if is_transformer_bridge(model) else model


@dataclass(frozen=True)
class ResolvedModel:
    """A HookedTransformer to read activations from, and how to tokenize for it.

    ``exact_tokenizer`` is True when the user gave a Hugging Face model: prompts are
    then tokenized exactly as the HF tokenizer does, as the ``steering-vectors``
    library does, rather than with TransformerLens' BOS convention.
    """

    model: Any
    tokenizer: Any
    exact_tokenizer: bool


def resolve_model(model: Any, tokenizer: Any) -> ResolvedModel:
    """Accept a HookedTransformer, a Hugging Face ``PreTrainedModel`` or a ``TransformerBridge``.

    A bridge is read through the Hugging Face model it wraps (with the bridge's tokenizer
    unless one is given), so a vector trained on it steers the bridge and the HF model alike.
    """
    if is_transformer_bridge(model):
        tokenizer = tokenizer if tokenizer is not None else model.tokenizer
        model = model.original_model
    if is_hooked_transformer(model):
        return ResolvedModel(model, tokenizer, exact_tokenizer=False)
    if is_hf_model(model):
        from steerlens.adapter import adapt_hf_model

        if tokenizer is None:
            raise UnsupportedModelError(
                "a Hugging Face model needs its tokenizer: pass tokenizer=AutoTokenizer.from_pretrained(...)."
            )
        return ResolvedModel(adapt_hf_model(model, tokenizer), tokenizer, exact_tokenizer=True)
    raise UnsupportedModelError(
        f"cannot use a {type(model).__name__}; pass a transformer_lens.HookedTransformer, a "
        "TransformerBridge, a transformers.PreTrainedModel, or load one with steerlens.load_model(...)."
    )
