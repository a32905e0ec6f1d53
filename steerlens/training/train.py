"""Stage 4, activations to a vector: training steering vectors from contrast pairs.

:func:`aggregate_activations` turns extracted activations
(:func:`~steerlens.training.activations.extract_activations`) into one vector per layer.
:func:`train_steering_vector` fuses the two and streams, so that the mean
aggregator's memory does not grow with the number of pairs.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import Tensor

from steerlens._version import __version__
from steerlens.errors import InvalidArgumentError, NonFiniteError
from steerlens.samples import SampleLike
from steerlens.tokens import PaddingSide, ReadIndex
from steerlens.training.activations import iter_activation_batches, prepare
from steerlens.training.aggregators import Aggregator, accumulator_for, call_aggregator, mean_aggregator
from steerlens.vector import SteeringVector


def aggregate_activations(
    pos_acts: dict[int, Tensor | list[Tensor]],
    neg_acts: dict[int, Tensor | list[Tensor]],
    aggregator: Aggregator | None = None,
) -> dict[int, Tensor]:
    """One vector per layer from extracted activations (lists of rows are accepted too)."""
    aggregator = aggregator or mean_aggregator()

    def stacked(acts: Tensor | list[Tensor]) -> Tensor:
        return acts if isinstance(acts, Tensor) else torch.stack([a.reshape(-1) for a in acts])

    if set(pos_acts) != set(neg_acts):
        raise InvalidArgumentError(
            f"positive and negative activations cover different layers: {sorted(pos_acts)} vs "
            f"{sorted(neg_acts)}; pass the two dicts from one extract_activations call."
        )
    return {
        layer: _finite(layer, call_aggregator(aggregator, stacked(pos_acts[layer]), stacked(neg_acts[layer])))
        for layer in pos_acts
    }


def _finite(layer: int, vector: Tensor) -> Tensor:
    if not torch.isfinite(vector).all():
        raise NonFiniteError(
            f"the trained vector for layer {layer} contains NaN or inf; the model produced "
            "non-finite activations. Check the model's dtype (try float32) and the prompts."
        )
    return vector


def train_steering_vector(
    model: Any,
    tokenizer: Any,
    training_samples: Iterable[SampleLike],
    layers: int | Iterable[int] | None = None,
    layer_type: str = "resid_post",
    read_token_index: ReadIndex = -1,
    batch_size: int = 1,
    show_progress: bool = False,
    aggregator: Aggregator | None = None,
    move_to_cpu: bool = False,
    tqdm_desc: str = "Training steering vector",
    padding_side: PaddingSide | None = None,
) -> SteeringVector:
    """Train a steering vector from (positive, negative) prompt pairs.

    The default is the mean, over pairs, of the difference between the activations
    at the read token (the last token unless ``read_token_index`` says otherwise).

    Example:
        >>> vec = train_steering_vector(model, None, [("I love it", "I hate it")], layers=[2])
        >>> with vec.apply(model, multiplier=4.0):
        ...     text = model.generate("The film was", max_new_tokens=5)
    """
    aggregator = aggregator or mean_aggregator()
    backend, samples, layer_list = prepare(model, tokenizer, training_samples, layers, layer_type, batch_size)
    accumulators = {layer: accumulator_for(aggregator) for layer in layer_list}
    for pos, neg in iter_activation_batches(
        backend, samples, layer_list, layer_type, read_token_index, batch_size, padding_side,
        show_progress, tqdm_desc,
    ):
        for layer, acc in accumulators.items():
            p, n = (pos[layer].cpu(), neg[layer].cpu()) if move_to_cpu else (pos[layer], neg[layer])
            acc.update(p, n)
    vectors = {layer: _finite(layer, acc.result()) for layer, acc in accumulators.items()}
    metadata = {
        "model_name": backend.model_name,
        "d_model": backend.d_model,
        "n_layers": backend.n_layers,
        "steerlens_version": __version__,
        "training": {
            "n_samples": len(samples),
            "read_token_index": read_token_index if isinstance(read_token_index, int) else "callable",
            "aggregator": repr(aggregator),
            "batch_size": batch_size,
        },
    }
    return SteeringVector(vectors, layer_type=layer_type, metadata=metadata)
