"""Layer types, TransformerLens hook names, and validation of layer lists."""

from __future__ import annotations

from typing import Iterable, Literal, get_args

from steerlens.errors import LayerError

LayerType = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"]
LAYER_TYPES: tuple[str, ...] = get_args(LayerType)


def check_layer_type(layer_type: str) -> str:
    """Return ``layer_type`` if it is known, else raise :class:`LayerError`."""
    if layer_type not in LAYER_TYPES:
        raise LayerError(
            f"unknown layer_type {layer_type!r}; use one of {', '.join(LAYER_TYPES)}."
        )
    return layer_type


def hook_name(layer: int, layer_type: str) -> str:
    """TransformerLens hook name, e.g. ``hook_name(3, "resid_post") == "blocks.3.hook_resid_post"``."""
    return f"blocks.{layer}.hook_{check_layer_type(layer_type)}"


def resolve_layers(layers: int | Iterable[int] | None, n_layers: int) -> list[int]:
    """Validate ``layers`` against a model with ``n_layers`` blocks.

    ``None`` means every layer; negative indices count from the end and come back
    positive. Out-of-range and duplicated layers are errors, not silently fixed.

    Example:
        >>> resolve_layers([-1, 0], n_layers=4)
        [3, 0]
    """
    if layers is None:
        return list(range(n_layers))
    if isinstance(layers, bool) or (not isinstance(layers, int) and not hasattr(layers, "__iter__")):
        raise LayerError(f"layers must be an int, a list of ints or None, got {layers!r}.")
    requested = [layers] if isinstance(layers, int) else list(layers)
    if not requested:
        raise LayerError("layers is empty; pass at least one layer index, or None for all layers.")
    resolved: list[int] = []
    for layer in requested:
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise LayerError(f"layer {layer!r} is not an int; pass integer layer indices.")
        if not -n_layers <= layer < n_layers:
            raise LayerError(
                f"layer {layer} is out of range for a model with {n_layers} layers; "
                f"use 0..{n_layers - 1} (or -{n_layers}..-1 from the end)."
            )
        positive = layer % n_layers
        if positive in resolved:
            raise LayerError(
                f"layer {layer} is requested twice (as layer {positive}); list each layer once."
            )
        resolved.append(positive)
    return resolved
