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
    """Accept a HookedTransformer or a Hugging Face ``PreTrainedModel``."""
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
        "transformers.PreTrainedModel, or load one with steerlens.load_model(...)."
    )
