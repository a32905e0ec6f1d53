"""Stage 4, activations to a vector: training steering vectors from contrast pairs.

:func:`aggregate_activations` turns extracted activations
(:func:`~steerlens.training.activations.extract_activations`) into one vector per layer.
:func:`train_steering_vector` fuses the two and streams, so that the mean
aggregator's memory does not grow with the number of pairs.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterable

import torch
from torch import Tensor
from typing_extensions import Unpack

from steerlens._version import __version__
from steerlens.backends.layer_config import ModelLayerConfig
from steerlens.errors import InvalidArgumentError, NonFiniteError
from steerlens.layers import LayerType
from steerlens.samples import SampleLike
from steerlens.settings import READING, SettingsKeywords
from steerlens.tokens import ReadIndex
from steerlens.training import distributed as dist_ops
from steerlens.training.activations import (
    in_caller_order,
    iter_activation_batches,
    open_pair_reading,
    pair_settings,
    split_pairs,
)
from steerlens.training.aggregators import (
    Aggregator,
    MeanAggregator,
    accumulator_for,
    call_aggregator,
    mean_aggregator,
)
from steerlens.vector import SteeringVector, backend_metadata


def aggregate_activations(
    pos_acts_by_layer: dict[int, Tensor | list[Tensor]],
    neg_acts_by_layer: dict[int, Tensor | list[Tensor]],
    aggregator: Aggregator = mean_aggregator(),
) -> dict[int, Tensor]:
    """One vector per layer from extracted activations.

    Each value is a ``[n, d_model]`` tensor, or a list of ``[batch, d_model]`` batches
    (what :func:`~steerlens.training.activations.extract_activations` returns), or a
    list of ``[d_model]`` rows.

    Example:
        >>> pos, neg = extract_activations(model, None, pairs, layers=[2])
        >>> aggregate_activations(pos, neg, pca_aggregator())[2].shape
        torch.Size([64])
    """
    if set(pos_acts_by_layer) != set(neg_acts_by_layer):
        raise InvalidArgumentError(
            f"positive and negative activations cover different layers: {sorted(pos_acts_by_layer)} vs "
            f"{sorted(neg_acts_by_layer)}; pass the two dicts from one extract_activations call."
        )
    return {
        layer: _finite(
            layer,
            call_aggregator(aggregator, _rows(layer, pos_acts_by_layer[layer]), _rows(layer, neg_acts_by_layer[layer])),
        )
        for layer in pos_acts_by_layer
    }


def _rows(layer: int, acts: Tensor | list[Tensor]) -> Tensor:
    """``[n, d_model]`` from a tensor, a list of ``[batch, d_model]`` batches or a list of ``[d_model]`` rows."""
    if isinstance(acts, Tensor):
        parts = [acts]
    else:
        parts = list(acts)
        if not parts or not all(isinstance(a, Tensor) for a in parts):
            raise InvalidArgumentError(f"layer {layer}: activations must be a tensor or a non-empty list of tensors.")
    dims = {a.dim() for a in parts}
    if dims == {1}:
        return torch.stack(parts)
    if dims == {2}:
        return torch.cat(parts)
    raise InvalidArgumentError(
        f"layer {layer}: activations must be [n, d_model] tensors (or [d_model] rows), got shapes "
        f"{sorted({tuple(a.shape) for a in parts})}."
    )


def _finite(layer: int, vector: Tensor) -> Tensor:
    if not torch.isfinite(vector).all():
        raise NonFiniteError(
            f"the trained vector for layer {layer} contains NaN or inf; the model produced "
            "non-finite activations. Check the model's dtype (try float32) and the prompts."
        )
    return vector


TRAINING: frozenset[str] = READING | {"distributed"}
"""The settings :func:`train_steering_vector` reads: reading activations, and gathering across ranks."""


def train_steering_vector(
    model: Any,
    tokenizer: Any,
    training_samples: Iterable[SampleLike],
    layers: int | Iterable[int] | None = None,
    layer_type: LayerType = "decoder_block",
    layer_config: ModelLayerConfig | None = None,
    move_to_cpu: bool = False,
    read_token_index: ReadIndex = -1,
    show_progress: bool = False,
    aggregator: Aggregator = mean_aggregator(),
    batch_size: int = 1,
    tqdm_desc: str = "Training steering vector",
    **settings: Unpack[SettingsKeywords],
) -> SteeringVector:
    """Train a steering vector from (positive, negative) prompt pairs.

    The default is the mean, over pairs, of the difference between the activations
    at the read token (the last token unless ``read_token_index`` says otherwise).
    Parameters are those of steering-vectors 0.12.2, in its order. ``settings``:
    :class:`~steerlens.settings.Settings` fields by name (``padding_side``, ``prepend_bos``:
    TransformerLens' meaning, None: the model's default, see :class:`~steerlens.tokens.TokenPolicy`;
    ``distributed=True`` when each ``torch.distributed`` rank passes its own shard of the pairs:
    every rank gets the vector of the whole set, the mean from summed statistics, other
    aggregators from the gathered differences, see :mod:`steerlens.training.distributed`) or
    ``settings=``, see :mod:`steerlens.settings`. ``tokenizer``, ``show_progress`` and
    ``batch_size`` given here other than their defaults win over ``settings=``'s; left at
    their defaults they take its.

    Example:
        >>> vec = train_steering_vector(model, None, [("I love it", "I hate it")], layers=[2])
        >>> with vec.apply(model, multiplier=4.0):
        ...     text = model.generate("The film was", max_new_tokens=5)
    """
    aggregator = aggregator if aggregator is not None else mean_aggregator()
    chosen = pair_settings(
        settings,
        "train_steering_vector",
        TRAINING,
        tokenizer=tokenizer,
        show_progress=show_progress,
        batch_size=batch_size,
    )
    if chosen.distributed:
        dist_ops.check_initialized()
    reading = open_pair_reading(
        model,
        training_samples,
        chosen,
        layers=layers,
        layer_type=layer_type,
        layer_config=layer_config,
        read_token_index=read_token_index,
    )
    samples, backend = reading.samples, reading.run.backend
    accumulators = {layer: accumulator_for(aggregator) for layer in reading.layers}
    batches = iter_activation_batches(reading, tqdm_desc)
    if isinstance(aggregator, MeanAggregator):
        # Batches are grouped by prompt length, not by pair: the running sums need no pairing.
        parts = (split_pairs(rows, acts) for rows, acts in batches)
    else:
        parts = iter([in_caller_order(batches)])
    for pos, neg in parts:
        for layer, acc in accumulators.items():
            p, n = (pos[layer].cpu(), neg[layer].cpu()) if move_to_cpu else (pos[layer], neg[layer])
            acc.update(p, n)
    n_samples = len(samples)
    if chosen.distributed:
        for acc in accumulators.values():
            acc.merge_ranks()
        n_samples = int(dist_ops.all_sum(torch.tensor(n_samples)).item())
    vectors = {layer: _finite(layer, acc.result()) for layer, acc in accumulators.items()}
    training: dict[str, Any] = {
        "n_samples": n_samples,
        "read_token_index": read_token_index if isinstance(read_token_index, int) else _name_of(read_token_index),
        "aggregator": _name_of(aggregator),
        "batch_size": chosen.batch_size,
    }
    overrides = [[s.read_positive_token_index, s.read_negative_token_index] for s in samples]
    if any(o != [None, None] for o in overrides):
        # Per pair: [positive, negative] read index, null where the default above applied.
        training["per_sample_read_token_index"] = overrides
    # Name (for display), shape, backend kind and weight fingerprint of the model trained on.
    metadata = {**backend_metadata(backend), "steerlens_version": __version__, "training": training}
    return SteeringVector(vectors, layer_type=reading.layer_type, metadata=metadata)


def _name_of(fn: Any) -> str:
    """A readable, stable name for an aggregator or read-index callable (never ``<function ... at 0x...>``)."""
    if type(fn).__repr__ is not object.__repr__ and not inspect.isfunction(fn) and not inspect.ismethod(fn):
        return repr(fn)
    return getattr(fn, "__qualname__", None) or type(fn).__name__
