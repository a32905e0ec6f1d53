"""Layer × multiplier sweeps of a steering vector, with the unsteered pass computed once per batch.

Each batch of prompts (grouped by token length, so little compute goes to padding)
runs through the clean model once; every cell then steers one layer at one
multiplier, at every position, and reads the next-token logits at each prompt's
last real token. How a cell is computed is the backend's business
(:meth:`~steerlens.backends.protocol.Backend.sweep_pass`): a HookedTransformer
resumes from the cached residual at the steered layer with every multiplier
stacked in one pass; other models run a steered forward pass per cell. Either way
the result equals ``vec.apply(model, multiplier=m)`` followed by a full forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from steerlens.backends import Backend, SweepPass, backend_for
from steerlens.checks import check_batch_size, check_multipliers, check_padding_side, check_prompts
from steerlens.errors import InvalidArgumentError
from steerlens.evaluation.metrics import MetricFn, resolve_metric
from steerlens.hooks import Operator, SteeringSpec, make_spec
from steerlens.layers import resolve_layers
from steerlens.samples import SampleLike
from steerlens.tokens import PaddingSide, PromptBatch, iter_batches
from steerlens.training import train_steering_vector
from steerlens.vector import SteeringVector

DEFAULT_MULTIPLIERS: tuple[float, ...] = (-4.0, -2.0, 0.0, 2.0, 4.0)
# Rows per head call: one call reads all of W_U, so cells are gathered (bounded memory).
_HEAD_ROWS = 256


@dataclass(frozen=True)
class LogitsCell:
    """Next-token logits of prompts ``indices`` with one layer steered at one multiplier."""

    layer: int
    multiplier: float
    indices: list[int]
    steered: Float[Tensor, "batch d_vocab"]
    unsteered: Float[Tensor, "batch d_vocab"]


def prompt_batches(
    backend: Backend, prompts: list[str], batch_size: int, padding_side: PaddingSide | None
) -> Iterator[PromptBatch]:
    """Prompts encoded with the backend's convention and padded, grouped by length (longest first)."""
    side = check_padding_side(padding_side or backend.default_padding_side)
    backend.check_tokenizer()
    encoded = [backend.encode(p) for p in prompts]
    return iter_batches(encoded, batch_size, backend.pad_id, side, backend.device, longest_first=True)


def iter_steered_logits(
    model: Any,
    vector: SteeringVector,
    prompts: str | Iterable[str],
    layers: int | Iterable[int] | None = None,
    multipliers: float | Iterable[float] = (1.0,),
    *,
    tokenizer: Any = None,
    batch_size: int = 32,
    padding_side: PaddingSide | None = None,
    operator: Operator | None = None,
    show_progress: bool = False,
) -> Iterator[LogitsCell]:
    """Last-token logits, steered and unsteered, for each batch × layer × multiplier.

    Each layer of ``vector`` (or of ``layers``) is applied alone, at every position,
    with ``operator`` (default: addition). Cells come batch by batch (prompts grouped
    by length; ``cell.indices`` are positions in ``prompts``), then layer by layer,
    then in the order of ``multipliers``. ``batch_size`` is the number of sequences
    per forward pass: a batch holds ``batch_size // len(multipliers)`` prompts (at
    least one), each run once per multiplier.

    Example:
        >>> for cell in iter_steered_logits(model, vec, ["I think"], multipliers=[-2, 2]):
        ...     print(cell.layer, cell.multiplier, cell.steered.shape)
    """
    backend = backend_for(model, tokenizer)
    prompt_list = check_prompts(prompts)
    mults = check_multipliers(multipliers)
    layer_list = vector.layers if layers is None else resolve_layers(layers, backend.n_layers)
    layer_type, vectors = vector.layer_type, vector.select_layers(layer_list).layer_activations
    backend.check_vector(vectors, layer_type)
    specs = {
        layer: [make_spec({layer: vectors[layer]}, layer_type, m, operator, 0, None) for m in mults]
        for layer in layer_list
    }
    per_batch = max(1, check_batch_size(batch_size) // len(mults))
    batches = prompt_batches(backend, prompt_list, per_batch, padding_side)
    total = math.ceil(len(prompt_list) / per_batch)
    for batch in tqdm(batches, total=total, desc="Sweeping", disable=not show_progress):
        sweep = backend.sweep_pass(batch, layer_list, layer_type)
        pending: list[tuple[int, list[Tensor | None]]] = []
        for layer in layer_list:
            pending.append((layer, sweep.steered(layer, specs[layer])))
            if sum(len(r) for _, r in pending) * len(batch.indices) >= _HEAD_ROWS or layer == layer_list[-1]:
                yield from _cells_of(backend, batch, sweep, pending, mults)
                pending = []


def _cells_of(
    backend: Backend, batch: PromptBatch, sweep: SweepPass, pending: list[tuple[int, list[Tensor | None]]],
    mults: list[float],
) -> Iterator[LogitsCell]:
    """Run the head on the clean and steered inputs of some layers in one call, as cells."""
    inputs = [sweep.clean] + [r for _, steered in pending for r in steered if r is not None]
    with torch.no_grad():
        logits = backend.head(torch.cat(inputs)).split(sweep.clean.shape[0])
    # Yield outside no_grad: the caller's code must not run with gradients silently off.
    unsteered, computed = logits[0], iter(logits[1:])
    for layer, steered in pending:
        for m, r in zip(mults, steered):
            yield LogitsCell(layer, m, batch.indices, unsteered if r is None else next(computed), unsteered)


def sweep_layers(
    model: Any,
    training_samples_or_vector: SteeringVector | Iterable[SampleLike],
    eval_prompts: str | Iterable[str],
    layers: int | Iterable[int] | None = None,
    multipliers: Iterable[float] = DEFAULT_MULTIPLIERS,
    metric: str | MetricFn = "kl",
    batch_size: int = 32,
    *,
    layer_type: str = "resid_post",
    tokenizer: Any = None,
    padding_side: PaddingSide | None = None,
    operator: Operator | None = None,
    per_prompt: bool = False,
    train_kwargs: dict[str, Any] | None = None,
    show_progress: bool = False,
) -> pd.DataFrame:
    """A metric of steered vs unsteered next-token logits for each layer × multiplier.

    ``training_samples_or_vector`` is a :class:`SteeringVector` (its layers are swept,
    or ``layers`` of it) or contrast pairs, from which one vector per layer is trained
    in one pass (``layers=None``: every layer; ``layer_type`` and ``train_kwargs`` go
    to :func:`train_steering_vector`). Each layer is steered alone, at every
    position, on each prompt; the metric (default ``"kl"``, see
    :mod:`steerlens.metrics`) is read at each prompt's last token.

    Returns one row per layer × multiplier with columns ``layer, multiplier,
    <metric>`` (mean over prompts), ``<metric>_std`` and ``n_prompts``; with
    ``per_prompt=True``, one row per layer × multiplier × prompt with columns
    ``layer, multiplier, prompt_index, prompt, <metric>``. The metric's column name
    is in ``df.attrs["metric"]``. ``batch_size`` is the number of sequences per
    forward pass: prompts are run ``batch_size // len(multipliers)`` at a time (at
    least one), every multiplier of a prompt in the same pass.

    Example:
        >>> df = sweep_layers(model, pairs, ["I think the film", "Honestly, the food"], multipliers=[-4, 0, 4])
        >>> df.pivot(index="layer", columns="multiplier", values="kl")
    """
    backend = backend_for(model, tokenizer)
    if isinstance(training_samples_or_vector, SteeringVector):
        vector = training_samples_or_vector
    else:
        vector = train_steering_vector(
            backend, None, training_samples_or_vector, layers=layers, layer_type=layer_type, **(train_kwargs or {})
        )
    name, fn = resolve_metric(metric, backend.tokenizer)
    prompt_list = check_prompts(eval_prompts)
    rows = []
    for cell in iter_steered_logits(
        backend, vector, prompt_list, layers, multipliers, batch_size=batch_size,
        padding_side=padding_side, operator=operator, show_progress=show_progress,
    ):
        values = _metric_values(fn, name, cell)
        for index, value in zip(cell.indices, values):
            rows.append({"layer": cell.layer, "multiplier": cell.multiplier, "prompt_index": index,
                         "prompt": prompt_list[index], name: value})
    frame = pd.DataFrame(rows).sort_values(["layer", "multiplier", "prompt_index"], ignore_index=True)
    if not per_prompt:
        grouped = frame.groupby(["layer", "multiplier"], sort=True)[name]
        stats = {name: grouped.mean(), f"{name}_std": grouped.std(), "n_prompts": grouped.size()}
        frame = pd.DataFrame(stats).reset_index()
    frame.attrs["metric"] = name
    return frame


def _metric_values(fn: MetricFn, name: str, cell: LogitsCell) -> list[float]:
    values = fn(cell.steered, cell.unsteered)
    values = torch.as_tensor(values).detach().reshape(-1)
    if values.shape[0] != cell.steered.shape[0]:
        raise InvalidArgumentError(
            f"metric {name!r} returned {values.shape[0]} values for {cell.steered.shape[0]} prompts; "
            "a metric must return one value per prompt."
        )
    return values.float().cpu().tolist()
