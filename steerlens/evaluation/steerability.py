"""Per-item steerability: how much each prompt or A/B item moves per unit of steering, and how linearly.

A mean over items hides what Tan et al. (2024, "Analyzing the generalization and
reliability of steering vectors") found: steerability varies a lot from item to item, and
for many items steering moves the behaviour the wrong way (anti-steerable items). For each
item (× layer), :func:`steerability` measures the metric at every multiplier through the
fast sweep (:func:`~steerlens.evaluation.sweep.steered_cells`), fits it against the
multiplier by least squares and reports the slope, the fit's R², the unsteered value and
the damage beside it; :func:`steerability_summary` gives the mean slope, the share of
anti-steerable items (slope < 0) and the spread per layer, and :func:`plot_steerability`
draws the per-item lines and the histogram of slopes.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
from typing_extensions import Unpack

from steerlens.checks import check_multipliers
from steerlens.errors import InvalidArgumentError
from steerlens.evaluation.comparison import ABItem, ItemLike, as_ab_items, letter_pair
from steerlens.evaluation.metrics import (
    DEGENERATE_FRACTION,
    BoundMetric,
    MetricFn,
    bind_metric,
    damage_warning,
    kl_divergence,
)
from steerlens.evaluation.sweep import LogitsCell, steered_cells
from steerlens.settings import STEERING, Run, SettingsKeywords, open_run
from steerlens.tokens import Prompts, check_prompt_inputs
from steerlens.vector import Layers, SteeringVector

AB_METRICS = ("matching_logit_diff", "p_matching")
"""Metrics of A/B items: ``log P(matching letter) − log P(other letter)`` (the default for items, unbounded,
so its slope is comparable across items) or the matching letter's probability normalised over the two."""

SUMMARY_COLUMNS = [
    "layer",
    "n_items",
    "mean_slope",
    "median_slope",
    "std_slope",
    "anti_steerable_share",
    "mean_r2",
    "mean_kl_max",
    "n_degenerate",
]


_USES = STEERING - {"operator"}
"""What :func:`steerability` reads: how prompts are encoded and steered (always by addition)."""


def steerability(
    model: Any,
    vector: SteeringVector,
    prompts_or_ab_items: Prompts | Iterable[ItemLike],
    metric: str | MetricFn | None,
    multipliers: Iterable[float],
    *,
    layers: Layers = None,
    **settings: Unpack[SettingsKeywords],
) -> pd.DataFrame:
    """One row per item × layer: the least-squares slope of ``metric`` against the multiplier, its R²,
    the unsteered value and the damage.

    Items are either prompts (strings, chat templates too, or token ids) with any sweep
    ``metric`` (a token metric such as :func:`~steerlens.evaluation.metrics.logit_diff`, a preset
    name or a callable ``(steered_logits, unsteered_logits) -> per-prompt values``), or A/B items
    (:class:`~steerlens.evaluation.comparison.ABItem`, CAA records, ``(prompt, letter)`` pairs) with
    ``metric=None`` or ``"matching_logit_diff"`` (log P(matching letter) − log P(other letter), the
    letters read in the context of each prompt as :func:`~steerlens.evaluation.comparison.ab_behavior_probability`
    does) or ``"p_matching"`` (P(matching) / (P(A) + P(B))). Each layer of ``vector`` (or of
    ``layers``; groups and ``"joint"`` as in :func:`~steerlens.evaluation.sweep.sweep_layers`) is
    steered alone at each of ``multipliers`` (at least two different ones; include 0 to anchor the
    line at the unsteered model), from ``steer_from`` on (``"answer"``: the assistant's turn, as
    CAA does), and the metric is read at each item's last token.

    Columns: ``item_index, prompt`` (and ``matching`` for A/B items), ``layer``, ``slope`` and
    ``intercept`` of the least-squares line of the metric against the multiplier, ``r2`` (its R²;
    NaN when the metric does not change), ``unsteered`` (the metric without steering), ``values``
    (the metric at each multiplier, in the order given), and the damage: ``kl_mean`` (mean
    KL(steered ‖ unsteered) of the next-token distribution over the non-zero multipliers) and
    ``kl_max`` (the largest); for token metrics and A/B items ``target_mass_unsteered`` and
    ``target_mass_min`` (the probability of the metric's tokens or of the two letters, unsteered
    and its least over the multipliers) and ``degenerate`` (True when that least fell below
    :data:`~steerlens.evaluation.metrics.DEGENERATE_FRACTION` of the unsteered mass: the line then
    describes a model that stopped answering with those tokens).

    A slope below 0 marks an anti-steerable item: steering moves it against the vector. The
    summary per layer (:func:`steerability_summary`: mean, median and spread of the slopes, share
    of anti-steerable items, mean R², damage) is in ``df.attrs["summary"]`` (``{layer: {...}}``);
    :func:`plot_steerability` draws it.

    ``settings``: :class:`~steerlens.settings.Settings` fields by name (``tokenizer``, ``batch_size``
    (default 32), ``padding_side``, ``prepend_bos``, ``steer_from``, ``show_progress``) or ``settings=``,
    see :mod:`steerlens.settings`. ``show_progress``: a bar of cells with the time left (None: once the
    call has run a few seconds). Prompts are encoded with ``prepend_bos`` (None: the model's default)
    and padded on ``padding_side``.

    Example:
        >>> items = caa_items(tok, ab_items("sycophancy", "test"))
        >>> df = steerability(model, vec, items, None, [-1, -0.5, 0, 0.5, 1], tokenizer=tok, steer_from="answer")
        >>> df.attrs["summary"], plot_steerability(df)
    """
    run = open_run(model, settings, "steerability", _USES, batch_size=32)
    run.backend.check_tokenizer()
    mults = check_multipliers(multipliers)
    if len(set(mults)) < 2:
        raise InvalidArgumentError(
            f"steerability fits a line against the multiplier: give at least two different multipliers, got {mults}."
        )
    return item_steerability(run, vector, prompts_or_ab_items, metric, mults, layers=layers)


def item_steerability(
    run: Run,
    vector: SteeringVector,
    prompts_or_ab_items: Prompts | Iterable[ItemLike],
    metric: str | MetricFn | None,
    multipliers: list[float],
    *,
    layers: Layers = None,
) -> pd.DataFrame:
    """:func:`steerability` below the door: the run's backend and settings, ``multipliers`` checked."""
    mults = multipliers
    items, prompts = _items_and_prompts(prompts_or_ab_items, metric)
    tok = run.backend.tokenizer
    reading: _ABMetric | BoundMetric
    if items is not None:
        name = "p_matching" if metric == "p_matching" else "matching_logit_diff"
        reading = _ABMetric(name, items, [letter_pair(tok, item.prompt, ("A", "B")) for item in items])
    else:
        reading = bind_metric(metric, tok, prompts)  # type: ignore[arg-type]
        name = reading.name
    n = len(prompts)
    cells: dict[tuple[Any, float], dict[str, torch.Tensor]] = {}
    clean: dict[str, torch.Tensor] = {}
    layer_order: dict[Any, int] = {}
    for cell in steered_cells(run, vector, prompts, layers, mults):
        layer_order.setdefault(cell.layer, len(layer_order))
        index = torch.tensor(cell.indices)
        columns, unsteered = _columns(reading, cell)
        slot = cells.setdefault((cell.layer, cell.multiplier), {})
        for key, column in columns.items():
            slot.setdefault(key, torch.full((n,), math.nan, dtype=torch.float64))[index] = column
        for key, column in unsteered.items():
            clean.setdefault(key, torch.full((n,), math.nan, dtype=torch.float64))[index] = column
    x = np.array(mults, dtype=np.float64)
    rows = []
    for layer in sorted(layer_order, key=layer_order.__getitem__):
        grid = {
            key: np.stack([cells[(layer, m)][key].numpy() for m in mults], axis=1) for key in cells[(layer, mults[0])]
        }
        for i in range(n):
            slope, intercept, r2 = _fit(x, grid["metric"][i])
            row: dict[str, Any] = {"item_index": i, "prompt": prompts[i]}
            if items is not None:
                row["matching"] = items[i].matching
            kls = grid["kl"][i][x != 0]
            row.update(
                {
                    "layer": layer,
                    "slope": slope,
                    "intercept": intercept,
                    "r2": r2,
                    "unsteered": float(clean["metric"][i]),
                    "values": grid["metric"][i].tolist(),
                    "kl_mean": float(kls.mean()) if kls.size else 0.0,
                    "kl_max": float(kls.max()) if kls.size else 0.0,
                }
            )
            if "mass" in grid:
                unsteered_mass = float(clean["mass"][i])
                least = float(grid["mass"][i].min())
                row.update(
                    {
                        "target_mass_unsteered": unsteered_mass,
                        "target_mass_min": least,
                        "degenerate": least < DEGENERATE_FRACTION * unsteered_mass,
                    }
                )
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs["metric"] = name
    frame.attrs["multipliers"] = mults
    frame.attrs["summary"] = {record.pop("layer"): record for record in steerability_summary(frame).to_dict("records")}
    if "degenerate" in frame:
        message = damage_warning(
            int(frame["degenerate"].sum()), len(frame), float(clean["mass"].mean()), "item × layer rows"
        )
        if message:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
    return frame


def _items_and_prompts(inputs: Any, metric: Any) -> tuple[list[ABItem] | None, list[Any]]:
    """A/B items and their prompts (metric None or an A/B metric), else the prompts and None."""
    if metric is None or (isinstance(metric, str) and metric in AB_METRICS):
        if isinstance(inputs, (str, ABItem, Mapping)):
            inputs = [inputs]
        listed = list(inputs)
        if listed and (isinstance(listed[0], str) or _is_ids(listed[0])):
            raise InvalidArgumentError(
                f"metric={metric!r} scores A/B items (ABItem, CAA records or (prompt, letter) pairs), but plain "
                "prompts were given; pass a sweep metric for prompts (e.g. logit_diff(...)) or A/B items."
            )
        items = as_ab_items(listed)
        return items, check_prompt_inputs([item.prompt for item in items])
    listed = [inputs] if isinstance(inputs, str) else list(inputs)
    if listed and (isinstance(listed[0], (ABItem, Mapping)) or _is_letter_pair(listed[0])):
        raise InvalidArgumentError(
            f"A/B items are scored with metric=None ('matching_logit_diff') or 'p_matching', not {metric!r}."
        )
    return None, check_prompt_inputs(listed)


def _is_letter_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], str) and value[1] in ("A", "B")


def _is_ids(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, int) for v in value)


@dataclass(frozen=True)
class _ABMetric:
    """The A/B items' metric (``name``) and each item's letter ids (``[A, B]``, read after its prompt)."""

    name: str
    items: list[ABItem]
    letter_ids: list[list[int]]


def _columns(reading: _ABMetric | BoundMetric, cell: LogitsCell) -> tuple[dict[str, Any], dict[str, Any]]:
    """One cell's per-prompt ``metric``, ``kl`` and (token metrics, A/B items) ``mass``; and the unsteered ones."""
    if isinstance(reading, BoundMetric):
        read = reading.read(cell.steered, cell.unsteered, cell.indices)
        columns = {"metric": read.effect, "kl": read.kl}
        unsteered = {"metric": reading.values(cell.unsteered, cell.unsteered, cell.indices)}
        if read.mass is not None:
            columns["mass"], unsteered["mass"] = read.mass, read.mass_unsteered
        return columns, unsteered
    ab = [reading.letter_ids[i] for i in cell.indices]
    choice = [0 if reading.items[i].matching == "A" else 1 for i in cell.indices]
    columns = _ab_columns(reading.name, cell.steered, ab, choice)
    columns["kl"] = kl_divergence(cell.steered, cell.unsteered).double().cpu()
    return columns, _ab_columns(reading.name, cell.unsteered, ab, choice)


def _ab_columns(name: str, logits: torch.Tensor, letter_ids: list[list[int]], choice: list[int]) -> dict[str, Any]:
    """Per row: the A/B metric (matching − other letter log-probability, or normalised P(matching)) and P(A)+P(B)."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    rows = torch.arange(logits.shape[0])
    ids = torch.tensor(letter_ids, device=logits.device)
    pick = torch.tensor(choice, device=logits.device)
    pair = logprobs[rows, ids.T].T  # [batch, 2]: log P(A), log P(B)
    matching, other = pair[rows, pick], pair[rows, 1 - pick]
    value = matching - other if name == "matching_logit_diff" else torch.sigmoid(matching - other)
    return {"metric": value.double().cpu(), "mass": pair.exp().sum(-1).double().cpu()}


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``y ≈ slope * x + intercept`` and its R² (NaN when ``y`` is constant or not finite)."""
    if not np.all(np.isfinite(y)):
        return math.nan, math.nan, math.nan
    dx = x - x.mean()
    slope = float(dx @ (y - y.mean()) / (dx @ dx))
    intercept = float(y.mean() - slope * x.mean())
    total = float(((y - y.mean()) ** 2).sum())
    residual = float(((y - (slope * x + intercept)) ** 2).sum())
    r2 = 1.0 - residual / total if total > 0 else math.nan
    return slope, intercept, r2


def steerability_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per layer of a :func:`steerability` table: how steerable its items are, with the damage.

    Columns: ``n_items``, ``mean_slope``, ``median_slope``, ``std_slope`` (the spread across items),
    ``anti_steerable_share`` (share of items with slope < 0: steering moves them against the
    vector), ``mean_r2``, ``mean_kl_max`` (mean over items of the largest KL) and
    ``n_degenerate`` (items whose metric tokens lost their mass; 0 for metrics without tokens).

    Example:
        >>> steerability_summary(steerability(model, vec, items, None, [-1, 0, 1], tokenizer=tok))
    """
    missing = [c for c in ("layer", "slope", "r2", "kl_max") if c not in table]
    if missing:
        raise InvalidArgumentError(f"the table has no column(s) {missing}; pass a steerability() DataFrame.")
    rows = []
    for layer, group in table.groupby("layer", sort=False):
        slopes = group["slope"].to_numpy(dtype=np.float64)
        rows.append(
            {
                "layer": layer,
                "n_items": len(group),
                "mean_slope": float(np.nanmean(slopes)),
                "median_slope": float(np.nanmedian(slopes)),
                "std_slope": float(np.nanstd(slopes, ddof=1)) if len(slopes) > 1 else math.nan,
                "anti_steerable_share": float(np.mean(slopes < 0)),
                "mean_r2": float(group["r2"].mean()),
                "mean_kl_max": float(group["kl_max"].mean()),
                "n_degenerate": int(group["degenerate"].sum()) if "degenerate" in group else 0,
            }
        )
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def plot_steerability(table: pd.DataFrame, layer: Any = None, *, title: str | None = None) -> Any:
    """Per-item lines of the metric against the multiplier (anti-steerable items in red) and a histogram of
    the slopes, for one layer of a :func:`steerability` table (a matplotlib Figure).

    ``layer``: which layer (default: the table's only layer, or its first with a note in the title).

    Example:
        >>> plot_steerability(steerability(model, vec, items, None, [-1, 0, 1], tokenizer=tok)).savefig("s.png")
    """
    from steerlens.evaluation.plots import _figure

    missing = [c for c in ("layer", "slope", "values") if c not in table]
    if missing:
        raise InvalidArgumentError(f"the table has no column(s) {missing}; pass a steerability() DataFrame.")
    layers = list(dict.fromkeys(table["layer"]))
    chosen = layers[0] if layer is None else layer
    if chosen not in layers:
        raise InvalidArgumentError(f"layer {layer!r} is not in the table; it has layers {layers}.")
    rows = table[table["layer"] == chosen]
    mults = table.attrs.get("multipliers") or list(range(len(rows["values"].iloc[0])))
    name = table.attrs.get("metric", "metric")
    fig = _figure(figsize=(10, 4))
    lines, hist = fig.subplots(1, 2)
    for values, slope in zip(rows["values"], rows["slope"]):
        anti = bool(slope < 0)
        lines.plot(mults, values, color="tab:red" if anti else "tab:blue", alpha=0.8 if anti else 0.35, lw=1)
    lines.set_xlabel("multiplier")
    lines.set_ylabel(name)
    lines.set_title("per item (red: anti-steerable, slope < 0)")
    slopes = rows["slope"].to_numpy(dtype=np.float64)
    hist.hist(slopes[np.isfinite(slopes)], bins=min(30, max(5, len(slopes) // 2)), color="tab:blue", alpha=0.7)
    hist.axvline(0.0, color="black", lw=1)
    hist.axvline(float(np.nanmean(slopes)), color="tab:orange", lw=2, label=f"mean {np.nanmean(slopes):.3g}")
    hist.set_xlabel(f"slope of {name} per unit multiplier")
    hist.set_ylabel("items")
    hist.legend()
    anti_share = float(np.mean(slopes < 0))
    note = f" (first of {len(layers)} layers)" if layer is None and len(layers) > 1 else ""
    fig.suptitle(title or f"steerability at layer {chosen}{note}: {anti_share:.0%} of items anti-steerable")
    fig.tight_layout()
    return fig
