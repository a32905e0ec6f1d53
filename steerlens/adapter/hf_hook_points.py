"""TransformerLens hook points on a Hugging Face model: which module carries which tensor.

One mapping serves the whole package: :mod:`steerlens.backends.hf_layout` finds the
decoder layers, attention, MLP and norms of any decoder-only model from its module
tree; these functions expose it by TL hook name, for a model or (built on the meta
device, no memory) for a bare config. See :func:`describe_architecture` for a table.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from steerlens.backends.hf_layout import HFLayout, hf_layout
from steerlens.backends.hf_layout import ModuleSite as HFSite
from steerlens.layers import check_layer_type, resolve_layers


def _layout(config_or_model: Any) -> HFLayout:
    if isinstance(config_or_model, nn.Module):
        return hf_layout(config_or_model)
    from transformers import AutoModelForCausalLM

    # The module tree is all that is needed: build it on the meta device (no weights).
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return hf_layout(AutoModelForCausalLM.from_config(config_or_model))


def hf_site(config_or_model: Any, layer: int, layer_type: str) -> HFSite:
    """The HF module (and input/output side) holding TL's ``blocks.{layer}.hook_{layer_type}``.

    Accepts an HF model or config. Negative layers count from the end.

    Example:
        >>> site = hf_site(LlamaConfig(num_hidden_layers=4), 1, "mlp_out")
        >>> site.path, site.io
        ('model.layers.1.mlp', 'output')
    """
    layout = _layout(config_or_model)
    (resolved,) = resolve_layers(layer, layout.n_layers)
    return layout.site(resolved, check_layer_type(layer_type))


def hf_module_path(config_or_model: Any, layer: int, layer_type: str) -> str:
    """Dotted path of the HF module for a TL hook point, e.g. ``"model.layers.3"``.

    Check :func:`hf_site` to know whether the module's input or output is meant.

    Example:
        >>> hf_module_path(GPT2Config(), 0, "attn_out")
        'transformer.h.0.attn'
    """
    return hf_site(config_or_model, layer, layer_type).path


def hf_module(hf_model: nn.Module, layer: int, layer_type: str) -> nn.Module:
    """The ``nn.Module`` of ``hf_model`` to hook for a TL hook point (see :func:`hf_site`).

    Example:
        >>> hf_module(llama, 0, "resid_post") is llama.model.layers[0]
        True
    """
    return hf_model.get_submodule(hf_module_path(hf_model, layer, layer_type))


def describe_architecture(config_or_model: Any) -> str:
    """Human-readable table of the TL <-> HF mapping for one model or config.

    Example:
        >>> print(describe_architecture(GPT2Config(n_layer=2)))
        GPT2LMHeadModel: 2 decoder layers at transformer.h
          resid_pre   input of transformer.h.{L}
        ...
    """
    return _layout(config_or_model).describe()


__all__ = ["HFSite", "describe_architecture", "hf_module", "hf_module_path", "hf_site"]
