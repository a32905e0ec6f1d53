"""Which layer to steer: each layer ranked by what steering there does, beside how well it separates.

Separation (how well held-out pairs separate along the vector at a layer,
:func:`~steerlens.analysis.separation_report`) says where a concept can be *read*. It says
nothing about what *adding* the vector there does: on SmolLM2-135M every layer from 1 to 29
separates held-out sentiment pairs with AUC 1.0, while steering at some of them moves the
wanted words and at others breaks the model. Given ``prompts`` and a ``metric``,
:func:`layer_report` therefore also steers each layer alone, at a small fixed strength in
typical residual norms, both ways (``+strength`` and ``-strength``), through the fast sweep, and
ranks the layers by the effect ``metric(+strength) − metric(−strength)`` among the layers
whose damage stays within a budget: KL(steered ‖ unsteered) at most ``max_kl`` at both signs,
and not ``degenerate`` (the metric's tokens keep at least
:data:`~steerlens.evaluation.metrics.DEGENERATE_FRACTION` of their unsteered probability).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch
from typing_extensions import Unpack

from steerlens.analysis import relative_vector, residual_norms, separation_report
from steerlens.analysis.layer_report import COLUMNS as SEPARATION_COLUMNS
from steerlens.analysis.prompt_activations import vector_layers
from steerlens.checks import finite_number
from steerlens.errors import InvalidArgumentError
from steerlens.evaluation.metrics import MetricFn, bind_metric, damage_warning, degenerate
from steerlens.evaluation.sweep import steered_cells
from steerlens.samples import SampleLike
from steerlens.settings import STEERING, Run, SettingsKeywords, open_run
from steerlens.tokens import Prompts, ReadIndex, check_prompt_inputs
from steerlens.vector import SteeringVector

DEFAULT_STRENGTH: float = 0.2
"""Steering strength of :func:`layer_report`, in typical residual norms at each layer. On SmolLM2-135M
0.1-0.3 is where layers differ; at 0.5 most layers collapse."""
DEFAULT_MAX_KL: float = 3.0
"""KL budget of :func:`layer_report` (nats, mean over prompts at their next token, at each sign). It is
measured where the effect is wanted, so it includes the effect itself: on SmolLM2-135M, moving the first
word of a reply from English to French (0.1% to 37% of the probability) costs about 2 nats at the best
layers. The budget is there to rule out layers that move the whole next-token distribution (the sentiment
layer that keeps 5% of the judgement words' mass at 0.3 residual norms costs 3.3 nats); the ``degenerate``
flag rules out the layers where the metric's tokens lost their mass. Give a smaller ``max_kl`` to rank by
effect at lower damage."""

STEERING_COLUMNS = [
    "layer",
    "rank",
    "effect",
    "effect_std",
    "metric_minus",
    "metric_unsteered",
    "metric_plus",
    "kl",
    "kl_minus",
    "kl_plus",
    "target_mass_minus",
    "target_mass_unsteered",
    "target_mass_plus",
    "degenerate",
    "within_budget",
    "multiplier",
    "steer_resid_norm",
    "separation_rank",
]

_USES = STEERING - {"operator"}
"""What :func:`layer_report` reads: how prompts are encoded and steered (always by addition)."""


def layer_report(
    model: Any,
    vector: SteeringVector,
    held_out_samples: Iterable[SampleLike],
    *,
    layers: int | Iterable[int] | None = None,
    read_token_index: ReadIndex = -1,
    prompts: Prompts | None = None,
    metric: str | MetricFn | None = None,
    strength: float = DEFAULT_STRENGTH,
    max_kl: float = DEFAULT_MAX_KL,
    **settings: Unpack[SettingsKeywords],
) -> pd.DataFrame:
    """One row per layer of ``vector``: what steering there does (with ``prompts`` and ``metric``) and how
    well it separates held-out pairs; ``rank`` 1 is the layer to steer.

    **Steering** (when ``prompts`` and ``metric`` are given). Each layer is steered alone at
    ``±strength`` typical residual norms (the mean norm of the activation it is added to over the
    prompts' tokens, :func:`~steerlens.analysis.residual_norms`; ``multiplier`` is the same strength
    for ``vector.apply``), at every position (or from ``steer_from``, e.g. ``"answer"``), and
    ``metric`` (any sweep metric, e.g. ``prob_share(positive_words, negative_words)``; it should
    grow in the vector's direction) is read at each prompt's last token. Columns:

    * ``effect`` = mean ``metric(+strength)`` − mean ``metric(−strength)`` (``effect_std``: its
      spread over prompts), from ``metric_minus``, ``metric_unsteered`` and ``metric_plus``;
    * damage, always beside it: ``kl_minus``, ``kl_plus`` (mean KL(steered ‖ unsteered) of the
      next-token distribution, nats) and ``kl`` = the larger; for token metrics
      ``target_mass_minus`` / ``_unsteered`` / ``_plus``, the probability of all the metric's
      tokens, and ``degenerate``: True when either sign leaves them under
      :data:`~steerlens.evaluation.metrics.DEGENERATE_FRACTION` of their unsteered mass;
    * ``within_budget`` = ``kl <= max_kl`` and not degenerate (the KL is taken where the effect is
      wanted, so it includes the effect: see :data:`DEFAULT_MAX_KL`, 3 nats);
    * ``rank``: 1 for the layer with the largest effect within budget, then the other layers
      within budget by effect, then those over the KL budget, then the degenerate ones.
      ``df.attrs["rank_by"]`` says this in words; ``df.attrs["best_layer"]`` is the rank-1 layer
      (None, with a warning, when no layer is within budget).

    **Separation** (always): the columns of :func:`~steerlens.analysis.separation_report` on
    ``held_out_samples`` (pairs the vector was not trained on): ``auc``, ``accuracy``,
    ``threshold``, ``pair_accuracy``, ``separation``, ``vector_norm``, ``resid_norm``,
    ``norm_ratio``, ``cos_prev``, ``cos_next``. With steering, their ranking is kept as
    ``separation_rank``; without ``prompts`` and ``metric`` it is ``rank``, and
    ``df.attrs["rank_by"]`` says that it is separation only, which says nothing about what
    steering at a layer does.

    ``settings``: :class:`~steerlens.settings.Settings` fields by name (``tokenizer``, ``batch_size``
    (default 32), ``padding_side``, ``prepend_bos``, ``steer_from``, ``show_progress``) or ``settings=``,
    see :mod:`steerlens.settings`. Prompts and pairs are strings (chat templates too) or token ids,
    encoded with ``prepend_bos`` (None: the model's default). ``show_progress``: a bar of steered
    cells with the time left (None: once the call has run a few seconds).

    Example:
        >>> vec = train_steering_vector(model, tok, pairs, layers=None)   # every layer
        >>> share = prob_share([" great", " good"], [" awful", " bad"])
        >>> report = layer_report(model, vec, held_out_pairs, tokenizer=tok, prompts=prompts, metric=share)
        >>> report[["layer", "rank", "effect", "kl", "degenerate", "auc"]], report.attrs["rank_by"]
    """
    run = open_run(model, settings, "layer_report", _USES, batch_size=32)
    if (prompts is None) != (metric is None):
        missing = "metric" if metric is None else "prompts"
        raise InvalidArgumentError(
            f"layer_report measures steering only with both prompts= and metric=; {missing} is missing "
            "(pass both, or neither for the separation-only report)."
        )
    size = finite_number(strength, "strength")
    if size <= 0:
        raise InvalidArgumentError(f"strength must be > 0 typical residual norms (e.g. 0.2), got {strength!r}.")
    budget = finite_number(max_kl, "max_kl")
    if budget < 0:
        raise InvalidArgumentError(f"max_kl must be >= 0 nats, got {max_kl!r}.")
    separation = separation_report(
        run.backend, vector, held_out_samples, layers=layers, read_token_index=read_token_index, **_reading(run)
    )
    if prompts is None or metric is None:
        return separation
    name, steering = _steering(run, vector, prompts, metric, layers, size)
    frame = steering.merge(
        separation.rename(columns={"rank": "separation_rank"}), on="layer", how="left", validate="one_to_one"
    )
    frame = _ranked(frame, budget)
    columns = [c for c in STEERING_COLUMNS if c in frame] + [
        c for c in SEPARATION_COLUMNS if c not in ("layer", "rank")
    ]
    frame = frame[columns]
    best = frame.loc[frame["rank"] == 1].iloc[0]
    frame.attrs.update(separation.attrs)
    frame.attrs.update(
        {
            "metric": name,
            "strength": size,
            "max_kl": budget,
            "best_layer": int(best["layer"]) if best["within_budget"] else None,
            "rank_by": (
                f"steering effect: mean {name} at +{size:g} minus at -{size:g} typical residual norms, among "
                f"layers with KL <= {budget:g} nats at both signs and not degenerate (then the layers over the "
                "KL budget, then the degenerate ones)"
            ),
        }
    )
    if not best["within_budget"]:
        warnings.warn(
            f"no layer keeps KL <= {budget:g} nats without degenerating at {size:g} residual norms: rank 1 is not "
            "within budget (best_layer is None); try a smaller strength or a larger max_kl.",
            RuntimeWarning,
            stacklevel=2,
        )
    return frame


def _reading(run: Run) -> dict[str, Any]:
    """The settings the analysis verbs (separation, residual norms) take, by keyword: they only read prompts."""
    return {
        "batch_size": run.batch_size,
        "padding_side": run.settings.padding_side,
        "prepend_bos": run.settings.prepend_bos,
    }


def _steering(
    run: Run,
    vector: SteeringVector,
    prompts: Prompts,
    metric: str | MetricFn,
    layers: int | Iterable[int] | None,
    strength: float,
) -> tuple[str, pd.DataFrame]:
    """``(metric name, one row per layer)``: the metric, KL and target mass at ±strength residual norms."""
    backend = run.backend
    backend.check_tokenizer()
    prompt_list = check_prompt_inputs(prompts)
    reader = bind_metric(metric, backend.tokenizer, prompt_list)
    name = reader.name
    directions = vector_layers(backend, vector, layers)
    layer_list = list(directions)
    original = SteeringVector(directions, vector.layer_type, dict(vector.metadata))
    norms = residual_norms(backend, prompt_list, layer_list, layer_type=vector.layer_type, **_reading(run))
    relative = relative_vector(backend, original, norms=norms)
    signs = {-strength: "minus", strength: "plus"}
    n = len(prompt_list)
    values: dict[tuple[int, str, str], torch.Tensor] = {}

    def put(key: tuple[int, str, str], index: torch.Tensor, column: torch.Tensor) -> None:
        values.setdefault(key, torch.full((n,), math.nan, dtype=torch.float64))[index] = column

    for cell in steered_cells(run, relative, prompt_list, layer_list, list(signs)):
        index, layer, sign = torch.tensor(cell.indices), int(cell.layer), signs[cell.multiplier]
        reading = reader.read(cell.steered, cell.unsteered, cell.indices)
        put((layer, sign, "metric"), index, reading.effect)
        put((layer, sign, "kl"), index, reading.kl)
        if reading.mass is not None:
            put((layer, sign, "target_mass"), index, reading.mass)
        if layer == layer_list[0] and sign == "minus":  # the unsteered pass is the same in every cell
            put((-1, "", "metric"), index, reader.values(cell.unsteered, cell.unsteered, cell.indices))
            if reading.mass_unsteered is not None:
                put((-1, "", "target_mass"), index, reading.mass_unsteered)
    has_mass = (-1, "", "target_mass") in values
    rows = []
    for layer in layer_list:
        effect = values[(layer, "plus", "metric")] - values[(layer, "minus", "metric")]
        row: dict[str, Any] = {
            "layer": layer,
            "effect": float(effect.mean()),
            "effect_std": float(effect.std()) if n > 1 else math.nan,
            "metric_minus": float(values[(layer, "minus", "metric")].mean()),
            "metric_unsteered": float(values[(-1, "", "metric")].mean()),
            "metric_plus": float(values[(layer, "plus", "metric")].mean()),
            "kl_minus": float(values[(layer, "minus", "kl")].mean()),
            "kl_plus": float(values[(layer, "plus", "kl")].mean()),
        }
        row["kl"] = max(row["kl_minus"], row["kl_plus"])
        if has_mass:
            unsteered = float(values[(-1, "", "target_mass")].mean())
            row["target_mass_minus"] = float(values[(layer, "minus", "target_mass")].mean())
            row["target_mass_unsteered"] = unsteered
            row["target_mass_plus"] = float(values[(layer, "plus", "target_mass")].mean())
            row["degenerate"] = bool(
                degenerate(row["target_mass_minus"], unsteered) or degenerate(row["target_mass_plus"], unsteered)
            )
        else:
            row["degenerate"] = False
        original_norm = float(directions[layer].float().norm())
        row["multiplier"] = strength * norms[layer] / original_norm if original_norm > 0 else math.nan
        row["steer_resid_norm"] = norms[layer]
        rows.append(row)
    frame = pd.DataFrame(rows)
    if has_mass:
        message = damage_warning(
            int(frame["degenerate"].sum()), len(frame), float(values[(-1, "", "target_mass")].mean()), "layers"
        )
        if message:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
    return name, frame


def _ranked(frame: pd.DataFrame, budget: float) -> pd.DataFrame:
    """``within_budget`` set and ``rank``: by effect within budget, then over the KL budget, then degenerate."""
    frame = frame.copy()
    frame["degenerate"] = frame["degenerate"].astype(bool)
    frame["within_budget"] = (frame["kl"] <= budget) & ~frame["degenerate"]
    tier = np.where(frame["within_budget"], 0, np.where(frame["degenerate"], 2, 1))
    effect = frame["effect"].fillna(-math.inf).to_numpy()
    order = np.lexsort((frame["layer"].to_numpy(), -effect, tier))  # the last key sorts first
    rank = np.empty(len(frame), dtype=int)
    rank[order] = np.arange(1, len(frame) + 1)
    frame["rank"] = rank
    return frame
