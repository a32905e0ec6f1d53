"""Vectors to and from the ``steering-vectors`` library (same tensors, its layer-type names).

``steering-vectors`` keeps ``layer_activations: dict[int, Tensor]`` with a
``layer_type`` named after the HF module hooked: its ``"decoder_block"`` output is our
``resid_post``, ``"self_attn"`` our ``attn_out`` and ``"mlp"`` our ``mlp_out``.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from steerlens.backends import backend_for, stored_layer_type
from steerlens.errors import InvalidArgumentError
from steerlens.layers import ALIASES, MODULE_LAYER_TYPES, MODULE_PREFIX, resolve_layers
from steerlens.vector import SteeringVector

# steering-vectors layer type -> steerlens layer type
SV_LAYER_TYPES: dict[str, str] = ALIASES


def to_steering_vectors(vec: SteeringVector) -> dict[str, Any]:
    """The keyword arguments of ``steering_vectors.SteeringVector`` for ``vec``.

    Example:
        >>> import steering_vectors
        >>> theirs = steering_vectors.SteeringVector(**to_steering_vectors(vec))
    """
    names = {ours: theirs for theirs, ours in SV_LAYER_TYPES.items()}
    names.update(
        {
            f"{MODULE_PREFIX}{theirs}": theirs
            for theirs in SV_LAYER_TYPES
            if f"{MODULE_PREFIX}{theirs}" in MODULE_LAYER_TYPES
        }
    )  # already the module of that name: steering-vectors' own meaning
    if vec.layer_type not in names:
        raise InvalidArgumentError(
            f"steering-vectors has no layer type for {vec.layer_type!r}; it knows {sorted(names)} "
            "(as decoder_block, self_attn, mlp). Train at one of those."
        )
    return {
        "layer_activations": {layer: t.detach().clone() for layer, t in vec.layer_activations.items()},
        "layer_type": names[vec.layer_type],
    }


def from_steering_vectors(
    source: Any, metadata: Mapping[str, Any] | None = None, *, model: Any = None
) -> SteeringVector:
    """A steerlens vector from a ``steering_vectors.SteeringVector`` (or a dict with the same fields).

    Its layer type is stored under the canonical name. Pass the Hugging Face ``model`` it
    was trained on to keep steering-vectors' meaning where a name is a module with
    another tensor than the canonical one (Gemma 2's ``post_attention_layernorm`` becomes
    ``module:post_attention_layernorm``, not ``ln2``).

    Example:
        >>> vec = from_steering_vectors(theirs)  # theirs.layer_type == "decoder_block"
        >>> vec.layer_type
        'resid_post'
    """
    fields = source if isinstance(source, Mapping) else vars(source) if hasattr(source, "__dict__") else {}
    if "layer_activations" not in fields:
        raise InvalidArgumentError(
            f"expected a steering_vectors.SteeringVector or a dict with 'layer_activations', got "
            f"{type(source).__name__}."
        )
    layer_type = fields.get("layer_type", "decoder_block")
    if layer_type not in SV_LAYER_TYPES:
        raise InvalidArgumentError(
            f"steering-vectors layer type {layer_type!r} has no TransformerLens hook point; "
            f"steerlens can import {sorted(SV_LAYER_TYPES)}."
        )
    activations = {int(layer): torch.as_tensor(t).detach().clone() for layer, t in fields["layer_activations"].items()}
    stored = SV_LAYER_TYPES[layer_type]
    if model is not None:
        backend = backend_for(model, None)
        stored = stored_layer_type(backend, layer_type, resolve_layers(list(activations), backend.n_layers))
    return SteeringVector(activations, stored, dict(metadata or {}))
