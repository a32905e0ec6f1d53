"""Model kinds behind one protocol, and the one place that decides which kind a model is.

:func:`backend_for` turns whatever the user passed (a ``HookedTransformer``, a Hugging
Face ``PreTrainedModel``, a TransformerLens ``TransformerBridge``, or a backend
already) into a :class:`~steerlens.backends.protocol.Backend`. Nothing else in
steerlens asks what kind of model it has.
"""

from __future__ import annotations

from typing import Any, Sequence

from torch import nn

from steerlens.backends.layer_config import (
    LayerMatcher,
    ModelLayerConfig,
    check_layer_config,
    get_num_matching_layers,
    guess_and_enhance_layer_config,
)
from steerlens.backends.protocol import Backend, Site, SweepPass
from steerlens.errors import InvalidArgumentError, UnsupportedModelError


def backend_for(model: Any, tokenizer: Any = None, layer_config: Any = None) -> Backend:
    """The backend serving ``model``; ``tokenizer`` overrides the model's own.

    A torch module holding a Hugging Face model (a PEFT/LoRA model, a custom ``nn.Module``
    whose ``forward`` passes through) is served as steering-vectors serves it: hooks on the
    wrapper's modules (``layer_config`` paths start at the wrapper), passes through its
    ``forward`` (:class:`~steerlens.backends.wrapped.WrappedBackend`).

    A ``TransformerBridge`` (TransformerLens 3 or 4) is served by its TransformerLens hook
    points (:class:`~steerlens.backends.bridge.BridgeBackend`), with the bridge's tokenizer
    unless one is given; its residual stream is the wrapped Hugging Face model's, so a vector
    trained on either steers both; with ``layer_config`` it is served through the Hugging Face
    model it wraps, whose modules the config names. ``layer_config`` (a steering-vectors
    ``ModelLayerConfig``) says where a Hugging Face model keeps its layers when steerlens
    should not find them itself.

    Example:
        >>> backend_for(hooked_transformer).n_layers
        12
    """
    from steerlens.backends.bridge import BridgeBackend, is_transformer_bridge
    from steerlens.backends.hf import HFBackend
    from steerlens.backends.hooked import HookedBackend
    from steerlens.backends.wrapped import WrappedBackend, wrapped_hf_model

    check_layer_config(layer_config)
    if isinstance(model, HFBackend) and layer_config is not None:
        return type(model)(model.model, tokenizer if tokenizer is not None else model.tokenizer, layer_config)
    if isinstance(model, (HookedBackend, HFBackend)):
        backend = model if tokenizer is None or tokenizer is model.tokenizer else model.with_tokenizer(tokenizer)
    elif is_transformer_bridge(model) and layer_config is not None:
        backend = HFBackend(model.original_model, tokenizer if tokenizer is not None else model.tokenizer, layer_config)
    elif is_transformer_bridge(model):
        backend = BridgeBackend(model, tokenizer if tokenizer is not None else model.tokenizer)
    elif _is_hooked_transformer(model):
        backend = HookedBackend(model, tokenizer if tokenizer is not None else model.tokenizer)
    elif _is_hf_model(model):
        return HFBackend(model, tokenizer, layer_config)
    elif wrapped_hf_model(model) is not None or (isinstance(model, nn.Module) and layer_config):
        # PEFT/LoRA or a custom nn.Module around a Hugging Face model; any module whose layers a config names
        return WrappedBackend(model, tokenizer, layer_config)
    else:
        raise UnsupportedModelError(
            f"cannot use a {type(model).__name__}; pass a transformer_lens.HookedTransformer, a "
            "TransformerBridge, a transformers.PreTrainedModel, a torch module holding one (PEFT, a custom "
            "wrapper) or naming its layers with layer_config=..., or load one with steerlens.load_model(...)."
        )
    if layer_config is not None and isinstance(backend, HookedBackend):
        raise InvalidArgumentError(
            "layer_config is for Hugging Face models; a HookedTransformer names its layers by hook points. "
            "Drop layer_config and choose layer_type (e.g. 'resid_post')."
        )
    return backend


def stored_layer_type(backend: Backend, layer_type: str, layers: Sequence[int]) -> str:
    """The name a vector trained at ``layer_type`` on ``layers`` is stored, and read, under.

    The canonical name (``decoder_block`` -> ``resid_post``), except on a Hugging Face model
    where a steering-vectors name is a module carrying another tensor than its canonical
    name (Gemma 2's ``post_attention_layernorm``): then ``module:<name>``.

    Example:
        >>> stored_layer_type(backend_for(gemma2), "post_attention_layernorm", [0])
        'module:post_attention_layernorm'
    """
    return backend.stored_layer_type(layer_type, layers)


def _is_hooked_transformer(model: Any) -> bool:
    from steerlens._tl import HookedTransformer  # a stand-in no model is an instance of on TransformerLens 4

    return isinstance(model, HookedTransformer)


def _is_hf_model(model: Any) -> bool:
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel)


def steering_hooks_on(model: Any) -> list[str]:
    """Where a steerlens hook is still installed on ``model`` (empty when it is clean).

    On a HookedTransformer or a TransformerBridge: hook point names; on a Hugging Face
    model: module paths.

    Example:
        >>> with vec.apply(model):
        ...     steering_hooks_on(model)
        ['blocks.2.hook_resid_post', 'blocks.2']
        >>> steering_hooks_on(model)
        []
    """
    from steerlens.backends.wrapped import WrappedBackend

    try:
        backend = backend_for(model)
    except UnsupportedModelError:
        if not isinstance(model, nn.Module):
            raise
        backend = WrappedBackend(model, None)  # a module steered through a layer_config: its module tree says it
    return backend.steering_hooks()


__all__ = [
    "Backend",
    "LayerMatcher",
    "ModelLayerConfig",
    "Site",
    "SweepPass",
    "backend_for",
    "get_num_matching_layers",
    "guess_and_enhance_layer_config",
    "steering_hooks_on",
    "stored_layer_type",
]
