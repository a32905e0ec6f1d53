"""Steering strength in the model's own units: multiples of a typical residual-stream norm.

A multiplier means nothing across models, layers or aggregators: a mean-difference
vector and a PCA direction of the same concept differ in norm by orders of
magnitude, and residual norms grow with depth. :func:`relative_vector` rescales each
layer of a vector to the typical norm of the activation it is added to (measured on
prompts by :func:`residual_norms`), so that multiplier 0.5 adds half a typical
residual norm, whatever the model, layer or aggregator.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable

import torch

from steerlens.analysis.prompt_activations import content_rows, iter_prompt_activations, unit, vector_layers
from steerlens.backends import backend_for, stored_layer_type
from steerlens.errors import InvalidArgumentError
from steerlens.layers import check_layer_name, resolve_layers
from steerlens.tokens import PaddingSide, Prompts, prepare_prompts
from steerlens.vector import SteeringVector


def residual_norms(
    model: Any,
    prompts: Prompts,
    layers: int | Iterable[int] | None = None,
    *,
    layer_type: str = "resid_post",
    tokenizer: Any = None,
    batch_size: int = 32,
    padding_side: PaddingSide | None = None,
    prepend_bos: bool | None = None,
) -> dict[int, float]:
    """Mean L2 norm of the activation at ``(layer, layer_type)`` over every content token of ``prompts``.

    A leading BOS token is left out: it carries nothing of the prompt and, in many
    models, has a norm many times that of any other token. ``layers=None``: every
    layer. Returns ``{layer: mean norm}`` (non-negative layer indices). Prompts are
    strings or token ids, encoded with ``prepend_bos`` (None: the model's default).

    Example:
        >>> residual_norms(model, neutral_prompts("sentiment"), layers=[1, 2])
        {1: 35.9, 2: 57.9}
    """
    backend = backend_for(model, tokenizer)
    prepared = prepare_prompts(backend, prompts, prepend_bos=prepend_bos, padding_side=padding_side)
    layer_list = resolve_layers(layers, backend.n_layers, layer_type)
    layer_type = stored_layer_type(backend, check_layer_name(layer_type), layer_list)
    backend.check_sites([(layer, layer_type) for layer in layer_list])
    totals = {layer: torch.zeros((), dtype=torch.float64) for layer in layer_list}
    count = 0
    for item in iter_prompt_activations(backend, prepared, layer_list, layer_type, batch_size):
        rows = content_rows(item)
        for layer in layer_list:
            totals[layer] += item.acts[layer][rows].norm(dim=-1).double().sum().cpu()
        count += len(item.token_ids[rows])
    return {layer: float(totals[layer] / count) for layer in layer_list}


def relative_vector(
    model: Any,
    vector: SteeringVector,
    prompts: Prompts | None = None,
    *,
    norms: dict[int, float] | None = None,
    tokenizer: Any = None,
    batch_size: int = 32,
    padding_side: PaddingSide | None = None,
    prepend_bos: bool | None = None,
) -> SteeringVector:
    """``vector`` with each layer rescaled to the typical activation norm at that layer.

    Multiplier ``m`` then adds ``m`` times a typical residual norm (of
    ``vector.layer_type`` at that layer, measured on ``prompts`` by
    :func:`residual_norms`, or given as ``norms``). The norms used are kept in
    ``metadata["residual_norms"]`` (keys are layer strings, as JSON stores them) and
    the original norms in ``metadata["original_norms"]``, so a relative multiplier
    ``m`` equals the absolute multiplier ``m * residual_norm / original_norm`` on
    the original vector. Prompts, ``padding_side`` and ``prepend_bos`` as in
    :func:`residual_norms`; negative layer keys count from the end (the result's keys do not).

    Example:
        >>> rel = relative_vector(model, vec, neutral_prompts("sentiment"))
        >>> with rel.apply(model, multiplier=0.5):   # half a typical residual norm at each layer
        ...     logits = model("The film was")
    """
    backend = backend_for(model, tokenizer)
    directions = vector_layers(backend, vector, None)
    if norms is None:
        if prompts is None:
            raise InvalidArgumentError(
                "relative_vector needs prompts to measure residual norms on (or norms={layer: norm})."
            )
        norms = residual_norms(
            backend,
            prompts,
            list(directions),
            layer_type=vector.layer_type,
            batch_size=batch_size,
            padding_side=padding_side,
            prepend_bos=prepend_bos,
        )
    missing = [layer for layer in directions if layer not in norms]
    if missing:
        raise InvalidArgumentError(f"norms has no entry for layers {missing}; give one per layer of the vector.")
    scaled = {
        layer: (unit(direction, layer) * float(norms[layer])).to(direction.dtype)
        for layer, direction in directions.items()
    }
    metadata = {
        **vector.metadata,
        "residual_norms": {str(layer): float(norms[layer]) for layer in directions},
        "original_norms": {str(layer): float(direction.float().norm()) for layer, direction in directions.items()},
    }
    return replace(vector, layer_activations=scaled, metadata=metadata)
