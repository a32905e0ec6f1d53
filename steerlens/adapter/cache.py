"""Per-model cache of HF -> TransformerLens conversions.

Training code calls :func:`adapt_hf_model` every time a user hands it a Hugging Face
model; converting once per model object keeps repeated calls cheap. Entries are keyed
weakly, so a cached ``HookedTransformer`` is freed together with its HF model.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from transformer_lens import HookedTransformer
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from steerlens.adapter.load import convert_hf_model


@dataclass
class _Entry:
    model: HookedTransformer
    tokenizer: weakref.ReferenceType[PreTrainedTokenizerBase] | None
    fingerprint: tuple[Any, ...]


_CACHE: "weakref.WeakKeyDictionary[PreTrainedModel, _Entry]" = weakref.WeakKeyDictionary()


def _fingerprint(hf_model: PreTrainedModel) -> tuple[Any, ...]:
    """Changes when parameters are replaced, moved, cast or modified in place.

    ``Tensor._version`` counts in-place writes (optimizer steps, ``load_state_dict``), so a
    model fine-tuned between two calls is converted again instead of served stale.
    """
    parts: list[Any] = []
    for param in hf_model.parameters():
        try:
            version = param._version
        except RuntimeError:  # inference-mode tensors have no version counter
            version = None
        parts.append((param.data_ptr(), version, param.dtype, str(param.device)))
    return tuple(parts)


def adapt_hf_model(
    hf_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase | None = None
) -> HookedTransformer:
    """The ``HookedTransformer`` equivalent of ``hf_model``, converted once and cached.

    A second call with the same model (and the same or no tokenizer) returns the same
    object, as long as the HF weights have not changed since. The conversion keeps the
    HF model's device and dtype and does not fold or centre weights, so TL residual
    activations equal the HF hidden states.

    Example:
        >>> hf = AutoModelForCausalLM.from_pretrained("ckpt")
        >>> adapt_hf_model(hf) is adapt_hf_model(hf)
        True
    """
    entry = _CACHE.get(hf_model)
    fingerprint = _fingerprint(hf_model)
    if entry is not None and entry.fingerprint == fingerprint:
        cached_tokenizer = entry.tokenizer() if entry.tokenizer is not None else None
        if tokenizer is None or tokenizer is cached_tokenizer:
            return entry.model
    model = convert_hf_model(hf_model, tokenizer)
    _CACHE[hf_model] = _Entry(
        model=model,
        tokenizer=None if tokenizer is None else weakref.ref(tokenizer),
        fingerprint=fingerprint,
    )
    return model
