"""Steering a plain Hugging Face model with torch hooks on the modules mapped to TL hook points.

``vec.apply(hf_model)`` lands here. Each steered site gets a forward (or forward-pre)
hook that runs the same :class:`~steerlens.steering.SteeringHook` as on a
HookedTransformer, so the arithmetic is identical. Positions are absolute, as on a
HookedTransformer: a forward pre-hook on the root model reads the KV cache length
before each call, which is the position of the first column of that call (also
during ``hf_model.generate``, one token at a time).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from steerlens.adapter.configs import tl_config_dict
from steerlens.adapter.hooks import site_tensor
from steerlens.adapter.names import HFSite, hf_site
from steerlens.errors import ModelMismatchError
from steerlens.steering import SteeringHandle, SteeringHook, SteeringSpec


def _cache_length(args: tuple, kwargs: dict) -> int:
    """Tokens already in the KV cache of a ``*ForCausalLM.forward`` call (0 without a cache)."""
    cache = kwargs.get("past_key_values")
    if cache is None and len(args) > 1 and hasattr(args[1], "get_seq_length"):
        cache = args[1]  # past_key_values passed positionally
    if cache is not None and hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    positions = kwargs.get("cache_position")
    if isinstance(positions, torch.Tensor) and positions.numel():
        return int(positions.reshape(-1)[0])
    return 0


@dataclass
class RootOffset:
    """Forward pre-hook on the root model: stores the absolute position of the call's first column."""

    store: list[int]

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.store[0] = _cache_length(args, kwargs)


@dataclass
class LayerShape:
    """Forward pre-hook on a decoder layer: remembers ``[batch, pos, d_model]`` for flattened sites (OPT's MLP)."""

    store: dict[str, torch.Size]

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self.store["shape"] = (args[0] if args else kwargs["hidden_states"]).shape


@dataclass
class HFSteer:
    """The torch hook steerlens puts on one HF module (recognisable by its type)."""

    hook: SteeringHook
    site: HFSite
    layer_shape: dict[str, torch.Size]

    def _steer(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.site.flattened:
            return self.hook(tensor)
        shape = self.layer_shape["shape"]
        return self.hook(tensor.view(shape)).view(tensor.shape)

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict, output: Any = None) -> Any:
        tensor = self._steer(site_tensor(self.site, args, kwargs, output))
        if self.site.io == "input":
            if args:
                return (tensor, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": tensor}
        if isinstance(output, tuple):
            return (tensor, *output[1:])
        return tensor


def check_hf_compatible(model: Any, spec: SteeringSpec) -> dict[int, HFSite]:
    """The HF site of every steered layer, refusing a vector that does not fit, before any forward pass."""
    fields = tl_config_dict(model.config)
    for layer, vec in spec.vectors.items():
        if vec.shape[-1] != fields["d_model"]:
            raise ModelMismatchError(
                f"the vector has d_model {vec.shape[-1]} but the model's hidden size is {fields['d_model']}; "
                "it was trained on another model. Train it on this model."
            )
        if layer >= fields["n_layers"]:
            raise ModelMismatchError(
                f"the vector steers layer {layer} but the model has only {fields['n_layers']} layers; "
                "select the layers that exist with vec.select_layers([...])."
            )
    sites = {layer: hf_site(model, layer, spec.layer_type) for layer in spec.vectors}
    for layer, site in sites.items():
        if not site.steerable:
            raise ModelMismatchError(
                f"{spec.layer_type} of layer {layer} is not a module input or output on this Hugging Face "
                "model, so it cannot be steered there; steer the HookedTransformer from "
                "steerlens.load_model(hf_model) instead, or train at resid_pre/resid_post."
            )
    return sites


def patch(model: Any, spec: SteeringSpec) -> SteeringHandle:
    """Add steering hooks to ``model`` until ``handle.remove()``."""
    sites = check_hf_compatible(model, spec)
    offset = [0]
    handles = [model.register_forward_pre_hook(RootOffset(offset), with_kwargs=True)]
    try:
        for layer, vec in spec.vectors.items():
            site = sites[layer]
            shape: dict[str, torch.Size] = {}
            if site.flattened:
                layer_module = model.get_submodule(site.layer_path)
                handles.append(layer_module.register_forward_pre_hook(LayerShape(shape), with_kwargs=True))
            steer = HFSteer(SteeringHook(vec, spec, offset), site, shape)
            module = model.get_submodule(site.path)
            register = module.register_forward_pre_hook if site.io == "input" else module.register_forward_hook
            handles.append(register(steer, with_kwargs=True))
    except BaseException:
        for handle in handles:
            handle.remove()
        raise

    def remove() -> None:
        for handle in handles:
            handle.remove()

    return SteeringHandle(remove)


@contextmanager
def apply(model: Any, spec: SteeringSpec) -> Iterator[Any]:
    """Steer ``model`` inside the ``with`` block; every hook is removed on exit, also on error."""
    handle = patch(model, spec)
    try:
        yield model
    finally:
        handle.remove()


def hf_steering_hooks_on(model: nn.Module) -> list[str]:
    """Paths of modules that still carry a steerlens hook (empty when the model is clean)."""
    ours = (HFSteer, RootOffset, LayerShape)
    return [
        name or "<root>"
        for name, module in model.named_modules()
        if any(isinstance(h, ours) for h in [*module._forward_hooks.values(), *module._forward_pre_hooks.values()])
    ]
