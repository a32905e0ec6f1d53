"""Layer × multiplier sweeps of a steering vector, with the unsteered pass computed once per batch.

Each batch of prompts (grouped by token length, so little compute goes to padding)
runs through the clean model once; every cell then steers one layer (or one group
of layers together) at one multiplier, at every position, and reads the next-token
logits at each prompt's last real token. How a one-layer cell is computed is the
backend's business (:meth:`~steerlens.backends.protocol.Backend.sweep_pass`): a
HookedTransformer resumes from the cached residual at the steered layer with every
multiplier stacked in one pass; other models run a steered forward pass per cell. A
group of layers is steered together in one forward pass per multiplier. Either way
the result equals ``vec.apply(model, multiplier=m)`` followed by a full forward pass.

``layers`` chooses the cells: ``None`` (each layer of the vector alone), a list of
layers (each alone), ``"joint"`` (the whole vector as one cell) or a list mixing
layers and groups, e.g. ``[[2, 3], 4]``. A group's ``layer`` label is ``"2+3"``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Sequence, Union

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from typing_extensions import Unpack

from steerlens.backends import Backend, SweepPass
from steerlens.checks import check_multipliers
from steerlens.evaluation.metrics import BoundMetric, MetricFn, bind_metric, damage_warning, degenerate
from steerlens.evaluation.progress import progress_bar
from steerlens.hooks import Operator, SteeringSpec, make_spec
from steerlens.samples import SampleLike
from steerlens.settings import STEERING, Run, SettingsKeywords, folded, open_run
from steerlens.tokens import PreparedPrompts, PromptBatch, Prompts, check_prompt_inputs
from steerlens.training import distributed as dist_ops
from steerlens.training import train_steering_vector
from steerlens.vector import LayerGroup, Layers, SteeringVector, resolve_layer_groups, vector_groups

DEFAULT_MULTIPLIERS: tuple[float, ...] = (-4.0, -2.0, 0.0, 2.0, 4.0)
# Rows per head call: one call reads all of W_U, so cells are gathered (bounded memory).
_HEAD_ROWS = 256

LayerLabel = Union[int, str]


@dataclass(frozen=True)
class LogitsCell:
    """Next-token logits of prompts ``indices`` with one layer (or group) steered at one multiplier.

    ``layer`` is the layer, or a group's label such as ``"2+3"``; ``layers`` are the
    layers steered together.
    """

    layer: LayerLabel
    multiplier: float
    indices: list[int]
    steered: Float[Tensor, "batch d_vocab"]
    unsteered: Float[Tensor, "batch d_vocab"]
    layers: LayerGroup = ()


def group_labels(groups: Sequence[LayerGroup]) -> list[LayerLabel]:
    """Column labels: the layer itself when every group is one layer, else ``"2+3"``-style strings."""
    if all(len(group) == 1 for group in groups):
        return [group[0] for group in groups]
    return ["+".join(str(layer) for layer in group) for group in groups]


def iter_steered_logits(
    model: Any,
    vector: SteeringVector,
    prompts: Prompts,
    layers: Layers = None,
    multipliers: float | Iterable[float] = (1.0,),
    *,
    progress: Any = None,
    clean_passes: dict[Any, Any] | None = None,
    **settings: Unpack[SettingsKeywords],
) -> Iterator[LogitsCell]:
    """Last-token logits, steered and unsteered, for each batch × layer (or group) × multiplier.

    Each layer of ``vector`` (or of ``layers``) is applied alone, at every position,
    with ``operator`` (default: addition); ``layers="joint"`` applies the whole vector
    as one cell and a list may hold groups (``[[2, 3], 4]``, see :mod:`.sweep`). Cells
    come batch by batch (prompts grouped by length; ``cell.indices`` are positions in
    ``prompts``), then layer by layer, then in the order of ``multipliers``.

    ``settings`` (:class:`~steerlens.settings.Settings` fields by name, or ``settings=``):
    ``batch_size`` (default 32) is the number of sequences per forward pass: a batch holds
    ``batch_size // len(multipliers)`` prompts (at least one), each run once per
    multiplier. Prompts are strings (chat templates too) or token ids, encoded with
    ``prepend_bos`` (None: the model's default; see :class:`~steerlens.tokens.TokenPolicy`).
    ``steer_from`` says where steering starts in each prompt: None (everywhere), a
    position, one per prompt, ``"answer"`` (after the chat template's assistant header,
    as in CAA) or ``"last"`` (see :mod:`steerlens.tokens.starts`).
    ``show_progress``: a bar of cells with the time left (None: only once the call has run a
    few seconds, see :mod:`steerlens.evaluation.progress`); ``progress`` is an outer bar to
    advance instead (a caller running several sweeps as one job).
    ``clean_passes``: a dict the caller keeps between calls on the same model and vector to
    reuse each batch's clean pass (keyed by the batch's tokens, layers and steering start;
    the unsteered pass does not depend on the multiplier), e.g. when a bisection re-measures
    one layer at a new multiplier each step. Cells are the same with or without it.

    Example:
        >>> for cell in iter_steered_logits(model, vec, ["I think"], multipliers=[-2, 2]):
        ...     print(cell.layer, cell.multiplier, cell.steered.shape)
    """
    run = open_run(model, settings, "iter_steered_logits", STEERING, batch_size=32)
    return steered_cells(run, vector, prompts, layers, multipliers, progress=progress, clean_passes=clean_passes)


@dataclass(frozen=True)
class _Grid:
    """What a sweep's cells are: groups of layers (with their labels) × multipliers."""

    groups: list[LayerGroup]
    labels: list[LayerLabel]
    mults: list[float]


def steered_cells(
    run: Run,
    vector: SteeringVector,
    prompts: Prompts | PreparedPrompts,
    layers: Layers = None,
    multipliers: float | Iterable[float] = (1.0,),
    *,
    progress: Any = None,
    clean_passes: dict[Any, Any] | None = None,
) -> Iterator[LogitsCell]:
    """:func:`iter_steered_logits` below the door: the run's backend and settings, prompts maybe prepared."""
    backend, operator = run.backend, run.settings.operator
    prepared = prompts if isinstance(prompts, PreparedPrompts) else run.prepare(prompts)
    mults = check_multipliers(multipliers)
    groups, vectors = vector_groups(vector, layers, backend.n_layers)
    grid = _Grid(groups, group_labels(groups), mults)
    layer_type = vector.layer_type
    backend.check_vector(vectors, layer_type)
    singles = list(dict.fromkeys(group[0] for group in groups if len(group) == 1))
    per_batch = max(1, run.batch_size // len(mults))
    starts = run.starts(prepared.encoded)
    total = math.ceil(len(prepared) / per_batch) * len(groups) * len(mults)
    bar = progress if progress is not None else progress_bar(total, "Sweeping", run.settings.show_progress)
    try:
        for batch in prepared.batches(per_batch):
            first: int | Tensor = 0 if starts is None else torch.tensor([starts[i] for i in batch.indices])
            specs = [
                [
                    make_spec({layer: vectors[layer] for layer in group}, layer_type, m, operator, first, None)
                    for m in mults
                ]
                for group in groups
            ]
            # Columns before every row's start are the same in every cell (right padding: columns are positions).
            start = 0 if starts is None else int(first.min())
            key = (tuple(batch.indices), tuple(map(tuple, batch.tokens.tolist())), tuple(singles), layer_type, start)
            sweep = None if clean_passes is None else clean_passes.get(key)
            if sweep is None:
                sweep = backend.sweep_pass(batch, singles, layer_type, start)
                if clean_passes is not None:
                    clean_passes[key] = sweep
            pending: list[tuple[int, list[Tensor | None]]] = []
            for g, group in enumerate(groups):
                if len(group) == 1:
                    # Adding 0 x the vector changes nothing: that cell is the clean pass, on every backend.
                    live = [i for i, m in enumerate(mults) if operator is not None or m != 0]
                    computed = sweep.steered(group[0], [specs[g][i] for i in live]) if live else []
                    steered: list[Tensor | None] = [None] * len(mults)
                    for i, result in zip(live, computed):
                        steered[i] = result
                else:
                    steered = [_group_head_input(backend, batch, spec, operator) for spec in specs[g]]
                pending.append((g, steered))
                if sum(len(r) for _, r in pending) * len(batch.indices) >= _HEAD_ROWS or g == len(groups) - 1:
                    for cell in _cells_of(backend, batch, sweep, pending, grid):
                        bar.update(1)
                        yield cell
                    pending = []
    finally:
        if progress is None:
            bar.close()


def _group_head_input(
    backend: Backend, batch: PromptBatch, spec: SteeringSpec, operator: Operator | None
) -> Tensor | None:
    """Head inputs at each row's last token with every layer of ``spec`` steered at once (None: unchanged).

    A sweep pass started while the steering hooks are installed computes its clean
    pass through them, so its ``clean`` input is the steered one.
    """
    if operator is None and spec.multiplier == 0:
        return None  # adding 0 × the vector changes nothing
    with backend.apply(spec):
        return backend.sweep_pass(batch, [], spec.layer_type).clean


def _cells_of(
    backend: Backend,
    batch: PromptBatch,
    sweep: SweepPass,
    pending: list[tuple[int, list[Tensor | None]]],
    grid: _Grid,
) -> Iterator[LogitsCell]:
    """Run the head on the clean and steered inputs of some groups in one call, as cells."""
    inputs = [sweep.clean] + [r for _, steered in pending for r in steered if r is not None]
    with torch.no_grad():
        logits = backend.head(torch.cat(inputs)).split(sweep.clean.shape[0])
    # Yield outside no_grad: the caller's code must not run with gradients silently off.
    unsteered, computed = logits[0], iter(logits[1:])
    for g, steered in pending:
        for m, r in zip(grid.mults, steered):
            yield LogitsCell(
                grid.labels[g], m, batch.indices, unsteered if r is None else next(computed), unsteered, grid.groups[g]
            )


def sweep_layers(
    model: Any,
    training_samples_or_vector: SteeringVector | Iterable[SampleLike],
    eval_prompts: Prompts,
    layers: Layers = None,
    multipliers: Iterable[float] = DEFAULT_MULTIPLIERS,
    metric: str | MetricFn = "kl",
    batch_size: int = 32,
    *,
    per_prompt: bool = False,
    layer_type: str = "resid_post",
    train_kwargs: dict[str, Any] | None = None,
    **settings: Unpack[SettingsKeywords],
) -> pd.DataFrame:
    """A metric of steered vs unsteered next-token logits for each layer (or group) × multiplier.

    ``training_samples_or_vector`` is a :class:`SteeringVector` (its layers are swept,
    or ``layers`` of it). A convenience: given contrast pairs instead, it first calls
    :func:`train_steering_vector` once (one vector per swept layer; ``layers=None``: every
    layer; ``layer_type`` and ``train_kwargs`` go there, with ``prepend_bos``,
    ``show_progress`` and ``distributed``) and sweeps the result; nothing else of training
    happens here. Each layer is steered alone, at every
    position, on each prompt; ``layers="joint"`` steers every layer at once as one
    cell, and groups steer their layers together (``layers=[[2, 3], [4]]``: two cells,
    labelled ``"2+3"`` and ``"4"``). The metric (default ``"kl"``, see
    :mod:`steerlens.metrics`) is read at each prompt's last token; a token metric's
    strings are encoded after each prompt (the token that really follows it).

    ``settings`` (:class:`~steerlens.settings.Settings` fields by name, or ``settings=``) say how
    prompts are read and the model run. Prompts and pairs are strings (chat-template strings too) or token ids, all
    encoded by one policy with ``prepend_bos`` (None: the model's default, see
    :class:`~steerlens.tokens.TokenPolicy`); ``show_progress`` shows training and sweep bars.
    ``steer_from="answer"`` steers each prompt from the assistant's turn on, as CAA does
    (or a position, one per prompt, ``"last"``; see :mod:`steerlens.tokens.starts`).
    Interrupted (Ctrl-C in a notebook), it returns the cells finished so far, with a
    warning and ``df.attrs["interrupted"] = True``.

    Returns one row per layer × multiplier with columns ``layer, multiplier,
    <metric>`` (mean over prompts), ``<metric>_std`` and ``n_prompts``; with
    ``per_prompt=True``, one row per layer × multiplier × prompt with columns
    ``layer, multiplier, prompt_index, prompt, <metric>``. The metric's column name
    is in ``df.attrs["metric"]``.

    Damage is always beside the effect: ``kl`` is KL(steered ‖ unsteered) of the
    next-token distribution where the metric is read (nats; mean over prompts). A
    token metric (``prob_share``, ``logit_diff``, ``prob_mass``) adds
    ``target_mass`` and ``target_mass_unsteered``, the total probability of all its
    tokens steered and unsteered, and ``degenerate``: True where ``target_mass`` fell
    below :data:`~steerlens.evaluation.metrics.DEGENERATE_FRACTION` (0.1) of
    ``target_mass_unsteered``. There the model has stopped saying any of the
    metric's tokens, and a ratio of them can look perfect while describing a broken
    model; a warning counts such cells (and says when the tokens carry under 1% of
    the probability even unsteered). ``show_progress`` (default None) shows a bar of
    cells with the time left once the call has run a few seconds. ``batch_size`` is the number of sequences per
    forward pass: prompts are run ``batch_size // len(multipliers)`` at a time (at
    least one), every multiplier of a prompt in the same pass.

    With ``distributed=True`` each ``torch.distributed`` rank passes its own shard of
    pairs and prompts; every rank gets the table of the whole set, ordered as one
    process would order the shards concatenated in rank order.

    Example:
        >>> df = sweep_layers(model, pairs, ["I think the film", "Honestly, the food"], multipliers=[-4, 0, 4])
        >>> df.pivot(index="layer", columns="multiplier", values="kl")
    """
    keywords = folded(settings, {"batch_size": 32}, batch_size=batch_size)
    run = open_run(model, keywords, "sweep_layers", batch_size=32)
    prompt_list = check_prompt_inputs(eval_prompts)
    if run.settings.distributed:
        dist_ops.check_initialized()
    vector = training_samples_or_vector
    if not isinstance(vector, SteeringVector):
        vector = _trained(run, vector, layers, layer_type, train_kwargs)
    return layer_sweep(run, vector, prompt_list, layers, multipliers, metric, per_prompt=per_prompt)


def _trained(
    run: Run, samples: Iterable[SampleLike], layers: Layers, layer_type: str, train_kwargs: dict[str, Any] | None
) -> SteeringVector:
    """The sweep's convenience: one :func:`train_steering_vector` call for the layers it will sweep."""
    n_layers = run.backend.n_layers
    groups = resolve_layer_groups(layers, range(n_layers), n_layers)
    train_layers = None if layers is None or layers == "joint" else sorted({x for g in groups for x in g})
    kwargs = {
        "show_progress": run.settings.show_progress,
        "prepend_bos": run.settings.prepend_bos,
        "distributed": run.settings.distributed,
        **(train_kwargs or {}),
    }
    return train_steering_vector(run.backend, None, samples, layers=train_layers, layer_type=layer_type, **kwargs)


def layer_sweep(
    run: Run,
    vector: SteeringVector,
    prompt_list: list[Any],
    layers: Layers,
    multipliers: Iterable[float],
    metric: str | MetricFn,
    *,
    per_prompt: bool = False,
) -> pd.DataFrame:
    """:func:`sweep_layers` of a vector, below the door (checked prompts, the run's settings)."""
    distributed = run.settings.distributed
    run.backend.check_tokenizer()
    reader = bind_metric(metric, run.backend.tokenizer, prompt_list)
    name = reader.name
    groups, _ = vector_groups(vector, layers, run.backend.n_layers)
    labels = group_labels(groups)  # one-layer cells sort by layer, groups in the caller's order
    order = {label: label if isinstance(label, int) else i for i, label in enumerate(labels)}
    rows = []
    interrupted = False
    try:
        for cell in steered_cells(run, vector, prompt_list, layers, multipliers):
            for index, values in zip(cell.indices, _cell_values(reader, cell)):
                rows.append(
                    {
                        "_order": order[cell.layer],
                        "layer": cell.layer,
                        "multiplier": cell.multiplier,
                        "prompt_index": index,
                        "prompt": prompt_list[index],
                        **values,
                    }
                )
    except KeyboardInterrupt:
        if distributed or not rows:
            raise
        interrupted = True
        warnings.warn(
            f"sweep interrupted: returning the {len(rows)} prompt × cell values finished so far "
            "(later cells and prompts are missing).",
            RuntimeWarning,
            stacklevel=3,
        )
    columns = [c for c in rows[0] if c not in ("_order", "layer", "multiplier", "prompt_index", "prompt")]
    if distributed:
        rows = _gathered_rows(rows, columns, prompt_list, {v: k for k, v in order.items()})
    frame = pd.DataFrame(rows).sort_values(["_order", "multiplier", "prompt_index"], ignore_index=True)
    if not per_prompt:
        grouped = frame.groupby(["_order", "layer", "multiplier"], sort=True)
        stats = {name: grouped[name].mean(), f"{name}_std": grouped[name].std(), "n_prompts": grouped.size()}
        stats.update({column: grouped[column].mean() for column in columns if column != name})
        frame = pd.DataFrame(stats).reset_index()
    if "target_mass" in frame:
        frame["degenerate"] = degenerate(
            torch.tensor(frame["target_mass"].to_numpy()), torch.tensor(frame["target_mass_unsteered"].to_numpy())
        ).numpy()
        unsteered = float(frame["target_mass_unsteered"].mean())
        message = damage_warning(
            int(frame["degenerate"].sum()), len(frame), unsteered, "rows" if per_prompt else "cells"
        )
        if message:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
    frame = frame.drop(columns="_order")
    frame.attrs["metric"] = name
    frame.attrs["interrupted"] = interrupted
    return frame


def _gathered_rows(
    rows: list[dict[str, Any]], columns: list[str], prompts: list[Any], labels: dict[int, Any]
) -> list[dict[str, Any]]:
    """Every rank's rows, with prompt indices global (this rank's shard follows the ranks before it)."""
    offset = dist_ops.rank_offset(len(prompts))
    numbers = torch.tensor(
        [[r["_order"], r["multiplier"], r["prompt_index"] + offset, *(r[c] for c in columns)] for r in rows],
        dtype=torch.float64,
    )
    all_prompts = dist_ops.all_gather_strings([p if isinstance(p, str) else repr(list(p)) for p in prompts])
    return [
        {
            "_order": int(o),
            "layer": labels[int(o)],
            "multiplier": m,
            "prompt_index": int(i),
            "prompt": all_prompts[int(i)],
            **dict(zip(columns, values)),
        }
        for o, m, i, *values in dist_ops.all_gather_rows(numbers).tolist()
    ]


def _cell_values(reader: BoundMetric, cell: LogitsCell) -> list[dict[str, float]]:
    """Per prompt of a cell: the metric, and its damage beside it (:meth:`BoundMetric.read`)."""
    reading = reader.read(cell.steered, cell.unsteered, cell.indices)
    columns = {reader.name: reading.effect.tolist()}
    if reader.name != "kl":
        columns["kl"] = reading.kl.tolist()
    if reading.mass is not None:
        columns["target_mass"] = reading.mass.tolist()
        columns["target_mass_unsteered"] = reading.mass_unsteered.tolist()  # type: ignore[union-attr]
    return [dict(zip(columns, values)) for values in zip(*columns.values())]
