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
from typing_extensions import Unpack

from steerlens.analysis.prompt_activations import (
    content_rows,
    iter_prompt_activations,
    unit,
    vector_layers,
)
from steerlens.backends import Backend, stored_layer_type
from steerlens.errors import InvalidArgumentError
from steerlens.layers import check_layer_name, resolve_layers
from steerlens.settings import PROMPT_READING, Run, SettingsKeywords, open_run
from steerlens.tokens import Prompts
from steerlens.vector import SteeringVector


def residual_norms(
    model: Any,
    prompts: Prompts,
    layers: int | Iterable[int] | None = None,
    *,
    layer_type: str = "resid_post",
    **settings: Unpack[SettingsKeywords],
) -> dict[int, float]:
    """Mean L2 norm of the activation at ``(layer, layer_type)`` over every content token of ``prompts``.

    A leading BOS token is left out: it carries nothing of the prompt and, in many
    models, has a norm many times that of any other token. ``layers=None``: every
    layer. Returns ``{layer: mean norm}`` (non-negative layer indices). Prompts are
    strings or token ids. ``settings``: :class:`~steerlens.settings.Settings` fields by
    name (``tokenizer``, ``batch_size`` (default 32), ``padding_side``, ``prepend_bos``
    (None: the model's default)) or ``settings=``, see :mod:`steerlens.settings`.

    Example:
        >>> residual_norms(model, neutral_prompts("sentiment"), layers=[1, 2])
        {1: 35.9, 2: 57.9}
    """
    run = open_run(model, settings, "residual_norms", PROMPT_READING, batch_size=32)
    return norms_on(run, prompts, layers, layer_type)


def norms_on(
    run: Run, prompts: Prompts, layers: int | Iterable[int] | None = None, layer_type: str = "resid_post"
) -> dict[int, float]:
    """:func:`residual_norms` on ``run``'s model, prompts read and batched as its settings say."""
    backend = run.backend
    prepared = run.prepare(prompts)
    layer_list = resolve_layers(layers, backend.n_layers, layer_type)
    layer_type = stored_layer_type(backend, check_layer_name(layer_type), layer_list)
    backend.check_sites([(layer, layer_type) for layer in layer_list])
    totals = {layer: torch.zeros((), dtype=torch.float64) for layer in layer_list}
    count = 0
    for item in iter_prompt_activations(backend, prepared, layer_list, layer_type, run.batch_size):
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
    **settings: Unpack[SettingsKeywords],
) -> SteeringVector:
    """``vector`` with each layer rescaled to the typical activation norm at that layer.

    Multiplier ``m`` then adds ``m`` times a typical residual norm (of
    ``vector.layer_type`` at that layer, measured on ``prompts`` by
    :func:`residual_norms`, or given as ``norms``). The norms used are kept in
    ``metadata["residual_norms"]`` (keys are layer strings, as JSON stores them) and
    the original norms in ``metadata["original_norms"]``, so a relative multiplier
    ``m`` equals the absolute multiplier ``m * residual_norm / original_norm`` on
    the original vector. Prompts and ``settings`` (``tokenizer``, ``batch_size`` (default 32),
    ``padding_side``, ``prepend_bos``, or ``settings=``) as in :func:`residual_norms`;
    negative layer keys count from the end (the result's keys do not).

    Example:
        >>> rel = relative_vector(model, vec, neutral_prompts("sentiment"))
        >>> with rel.apply(model, multiplier=0.5):   # half a typical residual norm at each layer
        ...     logits = model("The film was")
    """
    run = open_run(model, settings, "relative_vector", PROMPT_READING, batch_size=32)
    directions = vector_layers(run.backend, vector, None)
    if norms is None:
        if prompts is None:
            raise InvalidArgumentError(
                "relative_vector needs prompts to measure residual norms on (or norms={layer: norm})."
            )
        norms = norms_on(run, prompts, list(directions), vector.layer_type)
    return rescaled(run.backend, vector, norms)


def rescaled(backend: Backend, vector: SteeringVector, norms: dict[int, float]) -> SteeringVector:
    """``vector`` with each layer's direction scaled to ``norms[layer]`` (:func:`relative_vector`'s last step)."""
    directions = vector_layers(backend, vector, None)
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
