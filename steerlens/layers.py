"""Layer types, TransformerLens hook names, and validation of layer lists.

steerlens' layer types are TransformerLens' hook points. The names the
``steering-vectors`` library uses are accepted everywhere:

===========================  =============  ====================================
steering-vectors name         canonical      TransformerLens hook
===========================  =============  ====================================
``decoder_block``             ``resid_post`` ``blocks.{L}.hook_resid_post``
``self_attn``                 ``attn_out``   ``blocks.{L}.hook_attn_out``
``mlp``                       ``mlp_out``    ``blocks.{L}.hook_mlp_out``
``input_layernorm``           ``ln1``        ``blocks.{L}.ln1.hook_normalized``
``post_attention_layernorm``  ``ln2``        ``blocks.{L}.ln2.hook_normalized``
===========================  =============  ====================================

On a HookedTransformer ``ln1``/``ln2`` are TransformerLens' ``hook_normalized``
(the normalised input, before the norm's gain and bias); on a Hugging Face model
they are the norm module's output (after them), which is what steering-vectors reads.

On a Hugging Face model a steering-vectors name means what it means there: the output
of the decoder layer's sub-module of that name, where the layer has one. Where that is
not the canonical name's tensor (Gemma 2/3's ``post_attention_layernorm`` normalises the
attention output; their ``self_attn``/``mlp`` come before the post-sublayer norms), a
vector trained there is stored as ``module:<name>`` (e.g. ``module:post_attention_layernorm``),
which always means that module's output and steers Hugging Face models only; elsewhere it
is stored under the canonical name.
"""

from __future__ import annotations

import numbers
import re
import sys
from typing import Iterable, Literal, get_args

from steerlens.errors import LayerError

CanonicalLayerType = Literal["resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "ln1", "ln2"]
ModuleLayerType = Literal[
    "module:self_attn",
    "module:mlp",
    "module:input_layernorm",
    "module:post_attention_layernorm",
]
"""The output of the Hugging Face decoder layer's sub-module of that name (steering-vectors' meaning)."""
LayerType = Literal[
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn_out",
    "mlp_out",
    "ln1",
    "ln2",
    "decoder_block",
    "self_attn",
    "mlp",
    "input_layernorm",
    "post_attention_layernorm",
    "module:self_attn",
    "module:mlp",
    "module:input_layernorm",
    "module:post_attention_layernorm",
]
TL_LAYER_TYPES: tuple[str, ...] = get_args(CanonicalLayerType)
"""The layer types that are TransformerLens hook points."""
MODULE_PREFIX = "module:"
MODULE_LAYER_TYPES: tuple[str, ...] = get_args(ModuleLayerType)
LAYER_TYPES: tuple[str, ...] = TL_LAYER_TYPES + MODULE_LAYER_TYPES
"""Every name a vector is stored under."""
ALIASES: dict[str, str] = {
    "decoder_block": "resid_post",
    "self_attn": "attn_out",
    "mlp": "mlp_out",
    "input_layernorm": "ln1",
    "post_attention_layernorm": "ln2",
}
"""steering-vectors layer type -> canonical layer type."""
STEERING_VECTORS_NAMES: dict[str, str] = {canonical: alias for alias, canonical in ALIASES.items()}


def check_layer_type(layer_type: str) -> str:
    """The canonical name of ``layer_type`` (steering-vectors names accepted), else :class:`LayerError`.

    Example:
        >>> check_layer_type("decoder_block")
        'resid_post'
    """
    if isinstance(layer_type, str) and layer_type in LAYER_TYPES:
        return layer_type
    if isinstance(layer_type, str) and layer_type in ALIASES:
        return ALIASES[layer_type]
    raise LayerError(
        f"unknown layer_type {layer_type!r}; use one of {', '.join(TL_LAYER_TYPES)} "
        f"(or steering-vectors' {', '.join(ALIASES)}, or {', '.join(MODULE_LAYER_TYPES)})."
    )


def check_layer_name(layer_type: str) -> str:
    """``layer_type`` unchanged if it is a known name (canonical, steering-vectors', ``module:``), else a LayerError.

    Backends resolve a steering-vectors name themselves: on a Hugging Face model it may
    name another tensor than its canonical name.
    """
    check_layer_type(layer_type)
    return layer_type


def module_name(layer_type: str) -> str | None:
    """The Hugging Face sub-module a layer type names (``"mlp"`` for ``mlp`` and ``module:mlp``), else None.

    ``decoder_block`` and the canonical names name hook points, not modules.
    """
    if layer_type in MODULE_LAYER_TYPES:
        return layer_type[len(MODULE_PREFIX) :]
    if layer_type in ALIASES and layer_type != "decoder_block":
        return layer_type
    return None


def hook_name(layer: int, layer_type: str) -> str:
    """TransformerLens hook name, e.g. ``hook_name(3, "resid_post") == "blocks.3.hook_resid_post"``."""
    canonical = check_layer_type(layer_type)
    if canonical in MODULE_LAYER_TYPES:
        raise LayerError(
            f"layer_type {canonical!r} is the output of a Hugging Face decoder layer's sub-module "
            f"{module_name(canonical)!r} (steering-vectors' meaning on that model); a HookedTransformer has no such "
            "module. Steer the Hugging Face model it was trained on, or train at a canonical layer type "
            f"({', '.join(TL_LAYER_TYPES)})."
        )
    if canonical in ("ln1", "ln2"):
        return f"blocks.{layer}.{canonical}.hook_normalized"
    return f"blocks.{layer}.hook_{canonical}"


_HOOK_NAME = re.compile(r"^blocks\.(\d+)\.(hook_[a-z_]+|ln[12]\.hook_normalized)$")
HOOK_NAME_FORMS = (
    "blocks.L.hook_resid_pre, blocks.L.hook_resid_mid, blocks.L.hook_resid_post, blocks.L.hook_attn_out, "
    "blocks.L.hook_mlp_out, blocks.L.ln1.hook_normalized, blocks.L.ln2.hook_normalized"
)
"""The TransformerLens hook names that name a layer and a layer type (see :func:`parse_hook_name`)."""


def parse_hook_name(name: str) -> tuple[int, str]:
    """``(layer, layer type)`` of a TransformerLens hook name: the inverse of :func:`hook_name`.

    TransformerLens users name a site by its hook (``"blocks.12.hook_resid_post"``);
    every function taking layers accepts such a name where it takes a layer. A name
    steerlens does not read or steer at (``hook_z``, ``hook_embed``) is a :class:`LayerError`.

    Example:
        >>> parse_hook_name("blocks.12.hook_resid_post"), parse_hook_name("blocks.3.ln1.hook_normalized")
        ((12, 'resid_post'), (3, 'ln1'))
    """
    match = _HOOK_NAME.match(name.strip()) if isinstance(name, str) else None
    kind = None
    if match is not None:
        suffix = match.group(2)
        kind = suffix.split(".")[0] if suffix.endswith("hook_normalized") else suffix[len("hook_") :]
    if kind not in TL_LAYER_TYPES:
        raise LayerError(
            f"layer {name!r} is not a whole number or a TransformerLens hook name steerlens reads and steers at; "
            f"pass an integer layer, or one of {HOOK_NAME_FORMS} (L a layer number)."
        )
    return int(match.group(1)), kind  # type: ignore[union-attr]


def hook_name_layer(name: str, layer_type: str | None = None, source: str = "layer_type") -> int:
    """The layer a hook name names, checked against ``layer_type`` (the vector's, or the one trained at).

    A hook name carries its own layer type; when it differs from ``layer_type`` the call
    would read or steer another tensor than the name says, so it is a :class:`LayerError`
    naming both (``source`` says where ``layer_type`` came from). steering-vectors' names
    count as their canonical one (``decoder_block`` is ``resid_post``).

    Example:
        >>> hook_name_layer("blocks.2.hook_resid_post", "decoder_block")
        2
    """
    layer, kind = parse_hook_name(name)
    wanted = None if layer_type is None else check_layer_type(layer_type)
    if wanted is not None and wanted != kind:
        shown = repr(wanted) if wanted == layer_type else f"{layer_type!r} ({wanted})"
        same = f"{hook_name(layer, wanted)!r} or layer {layer}" if wanted in TL_LAYER_TYPES else f"layer {layer}"
        raise LayerError(
            f"hook name {name!r} is a {kind} hook, but {source} is {shown}: they name different tensors. "
            f"Pass {same} to stay at {wanted}, or "
            + (f"use layer_type={kind!r}" if source == "layer_type" else f"a vector trained at {kind!r}")
            + " for the hook's own tensor."
        )
    return layer


def as_layer_index(value: object, layer_type: str | None = None, source: str = "layer_type") -> int:
    """A layer index from a Python, numpy or one-element tensor number that is a whole number.

    ``np.float64(2)`` (what a float DataFrame column holds) is layer 2; ``2.5`` and bools
    are errors. A string is a TransformerLens hook name (``"blocks.2.hook_resid_post"`` is
    layer 2), checked against ``layer_type`` when given (see :func:`hook_name_layer`).
    """
    if isinstance(value, str):
        return hook_name_layer(value, layer_type, source)
    torch = sys.modules.get("torch")  # a tensor can only exist once torch is imported; never import it here
    if torch is not None and isinstance(value, torch.Tensor) and value.numel() == 1 and value.dtype != torch.bool:
        value = value.item()
    if not isinstance(value, bool) and isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        if float(value).is_integer():
            value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise LayerError(
            f"layer {value!r} is not a whole number; pass integer layer indices or hook names "
            "(e.g. 'blocks.2.hook_resid_post')."
        )
    return int(value)


def resolve_layers(
    layers: int | str | Iterable[int | str] | None,
    n_layers: int,
    layer_type: str | None = None,
    source: str = "layer_type",
) -> list[int]:
    """Validate ``layers`` against a model with ``n_layers`` blocks.

    ``None`` means every layer; negative indices count from the end and come back
    positive. Out-of-range and duplicated layers are errors, not silently fixed.
    numpy and torch integers (and 1-D integer tensors/arrays) are accepted, and
    TransformerLens hook names (``"blocks.2.hook_resid_post"``), whose layer type must be
    ``layer_type`` when it is given (see :func:`hook_name_layer`).

    Example:
        >>> resolve_layers([-1, 0], n_layers=4)
        [3, 0]
        >>> resolve_layers("blocks.2.hook_resid_post", n_layers=4, layer_type="resid_post")
        [2]
    """
    if layers is None:
        return list(range(n_layers))
    if isinstance(layers, bytes):
        raise LayerError(f"layers must be an int, a hook name, a list of them or None, got {layers!r}.")
    scalar = isinstance(layers, str) or not hasattr(layers, "__iter__") or getattr(layers, "ndim", 1) == 0
    requested = [layers] if scalar else list(layers)  # type: ignore[arg-type]
    if not requested:
        raise LayerError("layers is empty; pass at least one layer index, or None for all layers.")
    resolved: list[int] = []
    for item in requested:
        layer = as_layer_index(item, layer_type, source)
        if not -n_layers <= layer < n_layers:
            raise LayerError(
                f"layer {layer} is out of range for a model with {n_layers} layers; "
                f"use 0..{n_layers - 1} (or -{n_layers}..-1 from the end)."
            )
        positive = layer % n_layers
        if positive in resolved:
            raise LayerError(f"layer {layer} is requested twice (as layer {positive}); list each layer once.")
        resolved.append(positive)
    return resolved
