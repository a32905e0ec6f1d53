"""Reading activations for contrast pairs and training steering vectors from them.

Two stages, both public: :func:`extract_activations` reads the residual stream
(or another hook point) at the read token of every prompt, and
:func:`aggregate_activations` turns them into one vector per layer.
:func:`train_steering_vector` fuses the two and streams, so that the mean
aggregator's memory does not grow with the number of pairs.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

import steerlens
from steerlens.aggregators import Aggregator, accumulator_for, call_aggregator, mean_aggregator
from steerlens.errors import InvalidArgumentError, ModelMismatchError, NonFiniteError
from steerlens.layers import check_layer_type, hook_name, resolve_layers
from steerlens.models import ResolvedModel, resolve_model
from steerlens.samples import SampleLike, SteeringVectorTrainingSample, normalize_samples
from steerlens.tokenization import (
    PaddingSide,
    ReadIndex,
    check_tokenizer_fits,
    encode_prompt,
    pad_batch,
    pad_token_id,
    resolve_read_index,
)
from steerlens.vector import SteeringVector

LayerActs = dict[int, Float[Tensor, "batch d_model"]]


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}.")


def iter_activation_batches(
    resolved: ResolvedModel,
    samples: Sequence[SteeringVectorTrainingSample],
    layers: list[int],
    layer_type: str,
    read_token_index: ReadIndex,
    batch_size: int,
    padding_side: PaddingSide | None,
    show_progress: bool,
    tqdm_desc: str,
) -> Iterator[tuple[LayerActs, LayerActs]]:
    """Yield ``(positive, negative)`` activations at the read token, one batch of pairs at a time.

    Positives and negatives of a batch share one forward pass, which stops right
    after the deepest requested layer and caches only the requested hook points.
    """
    model = resolved.model
    side: PaddingSide = padding_side or getattr(resolved.tokenizer or model.tokenizer, "padding_side", None) or "right"
    if side not in ("left", "right"):
        raise InvalidArgumentError(f"padding_side must be 'left' or 'right', got {side!r}.")
    names = [hook_name(layer, layer_type) for layer in layers]
    missing = [n for n in names if n not in model.hook_dict]
    if missing:
        raise ModelMismatchError(
            f"the model has no hook point {missing[0]!r}; this architecture does not expose "
            f"layer_type {layer_type!r}. Choose another layer_type (e.g. 'resid_post')."
        )
    pad_id = pad_token_id(model, resolved.tokenizer)
    device = model.cfg.device
    stop_at = max(layers) + 1
    starts = range(0, len(samples), batch_size)
    for start in tqdm(starts, desc=tqdm_desc, disable=not show_progress):
        chunk = samples[start : start + batch_size]
        prompts = [s.positive_str for s in chunk] + [s.negative_str for s in chunk]
        overrides = [s.read_positive_token_index for s in chunk] + [
            s.read_negative_token_index for s in chunk
        ]
        encoded = [
            encode_prompt(model, resolved.tokenizer, p, exact=resolved.exact_tokenizer) for p in prompts
        ]
        batch = pad_batch(encoded, pad_id, side)
        rows = torch.arange(len(prompts))
        cols = torch.tensor(
            [
                batch.position(i, resolve_read_index(read_token_index if o is None else o, p, len(ids)))
                for i, (p, o, ids) in enumerate(zip(prompts, overrides, encoded))
            ]
        )
        with torch.no_grad():
            _, cache = model.run_with_cache(
                batch.tokens.to(device),
                attention_mask=batch.attention_mask.to(device),
                names_filter=names,
                stop_at_layer=stop_at,
                return_cache_object=False,
            )
        n = len(chunk)
        pos: LayerActs = {}
        neg: LayerActs = {}
        for layer, name in zip(layers, names):
            acts = cache[name]
            read = acts[rows.to(acts.device), cols.to(acts.device)]
            pos[layer], neg[layer] = read[:n], read[n:]
        del cache
        yield pos, neg


def _prepare(
    model: Any,
    tokenizer: Any,
    training_samples: Iterable[SampleLike],
    layers: int | Iterable[int] | None,
    layer_type: str,
    batch_size: int,
) -> tuple[ResolvedModel, list[SteeringVectorTrainingSample], list[int]]:
    resolved = resolve_model(model, tokenizer)
    check_layer_type(layer_type)
    _check_batch_size(batch_size)
    if not resolved.exact_tokenizer:
        check_tokenizer_fits(resolved.model, tokenizer if tokenizer is not None else resolved.model.tokenizer)
    samples = normalize_samples(training_samples)
    return resolved, samples, resolve_layers(layers, resolved.model.cfg.n_layers)


def extract_activations(
    model: Any,
    tokenizer: Any,
    training_samples: Iterable[SampleLike],
    layers: int | Iterable[int] | None = None,
    layer_type: str = "resid_post",
    read_token_index: ReadIndex = -1,
    batch_size: int = 1,
    show_progress: bool = False,
    move_to_cpu: bool = False,
    tqdm_desc: str = "Extracting activations",
    padding_side: PaddingSide | None = None,
) -> tuple[dict[int, Tensor], dict[int, Tensor]]:
    """Activations at the read token for every pair: ``(positive, negative)``, each ``{layer: [n, d_model]}``.

    Example:
        >>> pos, neg = extract_activations(model, None, [("I love it", "I hate it")], layers=[1])
        >>> pos[1].shape
        torch.Size([1, 64])
    """
    resolved, samples, layer_list = _prepare(model, tokenizer, training_samples, layers, layer_type, batch_size)
    pos_rows: dict[int, list[Tensor]] = {layer: [] for layer in layer_list}
    neg_rows: dict[int, list[Tensor]] = {layer: [] for layer in layer_list}
    for pos, neg in iter_activation_batches(
        resolved, samples, layer_list, layer_type, read_token_index, batch_size, padding_side,
        show_progress, tqdm_desc,
    ):
        for layer in layer_list:
            pos_rows[layer].append(pos[layer].cpu() if move_to_cpu else pos[layer])
            neg_rows[layer].append(neg[layer].cpu() if move_to_cpu else neg[layer])
    return (
        {layer: torch.cat(rows) for layer, rows in pos_rows.items()},
        {layer: torch.cat(rows) for layer, rows in neg_rows.items()},
    )


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
    resolved, samples, layer_list = _prepare(model, tokenizer, training_samples, layers, layer_type, batch_size)
    accumulators = {layer: accumulator_for(aggregator) for layer in layer_list}
    for pos, neg in iter_activation_batches(
        resolved, samples, layer_list, layer_type, read_token_index, batch_size, padding_side,
        show_progress, tqdm_desc,
    ):
        for layer, acc in accumulators.items():
            p, n = (pos[layer].cpu(), neg[layer].cpu()) if move_to_cpu else (pos[layer], neg[layer])
            acc.update(p, n)
    vectors = {layer: _finite(layer, acc.result()) for layer, acc in accumulators.items()}
    cfg = resolved.model.cfg
    metadata = {
        "model_name": getattr(cfg, "model_name", None),
        "d_model": cfg.d_model,
        "n_layers": cfg.n_layers,
        "steerlens_version": steerlens.__version__,
        "training": {
            "n_samples": len(samples),
            "read_token_index": read_token_index if isinstance(read_token_index, int) else "callable",
            "aggregator": repr(aggregator),
            "batch_size": batch_size,
        },
    }
    return SteeringVector(vectors, layer_type=layer_type, metadata=metadata)
