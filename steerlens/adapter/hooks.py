"""Record the activations of an HF model at TL hook points, using torch forward hooks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from steerlens.adapter.names import HFSite, hf_site

Site = tuple[int, str]


def site_tensor(
    site: HFSite, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
) -> torch.Tensor:
    """Pick the tensor ``site`` refers to out of a module call's inputs or output.

    Inputs are the first positional argument (or ``hidden_states=``); outputs may be a
    tuple, in which case the activation is its first element.
    """
    if site.io == "input":
        return args[0] if args else kwargs["hidden_states"]
    return output[0] if isinstance(output, tuple) else output


@contextlib.contextmanager
def record_hf_activations(
    hf_model: nn.Module, sites: Iterable[Site]
) -> Iterator[dict[Site, torch.Tensor]]:
    """Collect detached ``[batch, pos, d_model]`` copies of the HF tensors at TL hook points.

    Example:
        >>> with record_hf_activations(hf, [(0, "resid_post")]) as acts:
        ...     hf(input_ids)
        >>> acts[(0, "resid_post")].shape  # [batch, pos, d_model]
    """
    recorded: dict[Site, torch.Tensor] = {}
    layer_shapes: dict[str, torch.Size] = {}
    handles: list[RemovableHandle] = []

    def remember_shape(path: str) -> Any:
        def hook(_module: nn.Module, args: Any, kwargs: Any) -> None:
            layer_shapes[path] = (args[0] if args else kwargs["hidden_states"]).shape

        return hook

    def record(key: Site, site: HFSite) -> Any:
        def hook(_module: nn.Module, args: Any, kwargs: Any, output: Any = None) -> None:
            value = site_tensor(site, args, kwargs, output).detach().clone()
            if site.flattened:
                value = value.view(layer_shapes[site.layer_path])
            recorded[key] = value

        return hook

    try:
        for layer, layer_type in sites:
            key = (layer, layer_type)
            site = hf_site(hf_model, layer, layer_type)
            module = hf_model.get_submodule(site.path)
            if site.flattened:
                layer_module = hf_model.get_submodule(site.layer_path)
                handles.append(
                    layer_module.register_forward_pre_hook(
                        remember_shape(site.layer_path), with_kwargs=True
                    )
                )
            register = (
                module.register_forward_pre_hook
                if site.io == "input"
                else module.register_forward_hook
            )
            handles.append(register(record(key, site), with_kwargs=True))
        yield recorded
    finally:
        for handle in handles:
            handle.remove()
