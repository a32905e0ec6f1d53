"""Which layer separates the concept: the separation half of the layer report, without steering.

For each layer of a vector (train it with ``layers=None`` to see them all), the
held-out pairs' prompts are read at the read token and projected on the unit
vector. If the vector captured the concept there, positives project higher than
negatives: the report gives the ROC AUC of that separation, the accuracy at the
best threshold, the share of pairs ordered correctly and the gap in pooled standard
deviations. Beside them, the sizes that make multipliers comparable: the vector's
norm, the typical activation norm at that layer and their ratio, and how much the
direction turns from one layer to the next (cosine with the neighbouring layers'
vectors). Layers are ranked by AUC, then accuracy, then gap.

Separation says where the concept can be *read*, not what *adding* the vector there does:
on a real model every layer may separate held-out pairs perfectly (AUC 1) while steering at
most of them does nothing or breaks the model. :func:`steerlens.evaluation.layer_report`
adds what steering does at each layer and ranks by that; this module is its separation part
(``analysis`` comes before ``evaluation``, which steers).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import pandas as pd
import torch
from typing_extensions import Unpack

from steerlens.analysis.prompt_activations import (
    content_rows,
    iter_prompt_activations,
    unit,
    vector_layers,
)
from steerlens.analysis.separation import best_threshold, roc_auc
from steerlens.samples import SampleLike, normalize_samples
from steerlens.settings import PROMPT_READING, Run, SettingsKeywords, open_run
from steerlens.tokens import ReadIndex, resolve_read_index
from steerlens.vector import SteeringVector

SEPARATION_ONLY = (
    "separation only (AUC of held-out pairs, then accuracy, then separation): says nothing about what steering "
    "at a layer does"
)
"""What ``rank`` means in a separation-only report (``df.attrs["rank_by"]``)."""

COLUMNS = [
    "layer",
    "rank",
    "auc",
    "accuracy",
    "threshold",
    "pair_accuracy",
    "separation",
    "vector_norm",
    "resid_norm",
    "norm_ratio",
    "cos_prev",
    "cos_next",
]


def separation_report(
    model: Any,
    vector: SteeringVector,
    held_out_samples: Iterable[SampleLike],
    *,
    layers: int | Iterable[int] | None = None,
    read_token_index: ReadIndex = -1,
    **settings: Unpack[SettingsKeywords],
) -> pd.DataFrame:
    """One row per layer of ``vector``: how well it separates held-out pairs, and its size there (no steering).

    ``held_out_samples`` are (positive, negative) pairs the vector was *not* trained
    on, read at ``read_token_index`` (or each sample's own read indices), as in
    training; prompts are strings or token ids, encoded as
    :func:`~steerlens.training.train.train_steering_vector` encodes them. ``settings``:
    :class:`~steerlens.settings.Settings` fields by name (``tokenizer``, ``batch_size``
    (default 32), ``padding_side``, ``prepend_bos`` (None: the model's default)) or
    ``settings=``, see :mod:`steerlens.settings`. Columns:

    * ``auc``: ROC AUC of the projections, positives against negatives (1 = every
      positive above every negative, 0.5 = chance);
    * ``accuracy``, ``threshold``: the cut ``projection > threshold -> positive``
      with the best accuracy, and that accuracy;
    * ``pair_accuracy``: share of pairs whose positive projects above its negative;
    * ``separation``: (mean positive − mean negative) / pooled standard deviation;
    * ``vector_norm``, ``resid_norm`` (mean norm of the activation at the vector's
      hook point over every content token of the held-out prompts, BOS excluded),
      ``norm_ratio`` = vector_norm / resid_norm;
    * ``cos_prev``, ``cos_next``: cosine with the vector at the nearest layer below /
      above that the vector has (NaN at the ends);
    * ``rank``: 1 for the layer that separates best (AUC, then accuracy, then separation). This
      says nothing about what steering at that layer does (see
      :func:`steerlens.evaluation.layer_report` with ``prompts`` and ``metric`` for that).

    ``df.attrs["best_layer"]`` is the rank-1 layer and ``df.attrs["rank_by"]`` says what rank means.

    Example:
        >>> vec = train_steering_vector(model, None, sentiment_pairs("train"))   # every layer
        >>> separation_report(model, vec, sentiment_pairs("test"))
    """
    run = open_run(model, settings, "separation_report", PROMPT_READING, batch_size=32)
    return separation_frame(run, vector, held_out_samples, layers, read_token_index)


def separation_frame(
    run: Run,
    vector: SteeringVector,
    held_out_samples: Iterable[SampleLike],
    layers: int | Iterable[int] | None = None,
    read_token_index: ReadIndex = -1,
) -> pd.DataFrame:
    """:func:`separation_report` on ``run``'s model, prompts read and batched as its settings say."""
    backend = run.backend
    samples = normalize_samples(held_out_samples)
    directions = vector_layers(backend, vector, layers)
    units = {layer: unit(direction, layer).to(backend.device) for layer, direction in directions.items()}
    prepared = run.prepare([text for s in samples for text in (s.positive_str, s.negative_str)])
    prompts = prepared.prompts
    overrides = [i for s in samples for i in (s.read_positive_token_index, s.read_negative_token_index)]
    projections = {layer: np.zeros(len(prompts)) for layer in units}
    norm_sums = {layer: 0.0 for layer in units}
    n_tokens = 0
    for item in iter_prompt_activations(backend, prepared, list(units), vector.layer_type, run.batch_size):
        index = item.index
        read = resolve_read_index(
            read_token_index if overrides[index] is None else overrides[index], prompts[index], len(item.token_ids)
        )
        rows = content_rows(item)
        for layer, direction in units.items():
            acts = item.acts[layer]
            projections[layer][index] = float(acts[read] @ direction.to(acts.device))
            norm_sums[layer] += float(acts[rows].norm(dim=-1).double().sum())
        n_tokens += len(item.token_ids[rows])
    ordered = sorted(directions)
    records = []
    for position, layer in enumerate(ordered):
        pos, neg = projections[layer][0::2], projections[layer][1::2]
        cut = best_threshold(pos, neg)
        vector_norm = float(directions[layer].float().norm())
        resid_norm = norm_sums[layer] / n_tokens
        records.append(
            {
                "layer": layer,
                "auc": roc_auc(pos, neg),
                "accuracy": cut.accuracy,
                "threshold": cut.threshold,
                "pair_accuracy": float(np.mean((pos > neg) + 0.5 * (pos == neg))),
                "separation": _separation(pos, neg),
                "vector_norm": vector_norm,
                "resid_norm": resid_norm,
                "norm_ratio": vector_norm / resid_norm if resid_norm > 0 else math.nan,
                "cos_prev": _cosine(directions, layer, ordered[position - 1]) if position > 0 else math.nan,
                "cos_next": _cosine(directions, layer, ordered[position + 1])
                if position + 1 < len(ordered)
                else math.nan,
            }
        )
    frame = pd.DataFrame(records)
    order = frame.sort_values(["auc", "accuracy", "separation"], ascending=False, kind="stable").index
    frame.loc[order, "rank"] = np.arange(1, len(frame) + 1)
    frame["rank"] = frame["rank"].astype(int)
    frame = frame[COLUMNS]
    frame.attrs["best_layer"] = int(frame.loc[frame["rank"] == 1, "layer"].iloc[0])
    frame.attrs["layer_type"] = vector.layer_type
    frame.attrs["n_pairs"] = len(samples)
    frame.attrs["rank_by"] = SEPARATION_ONLY
    return frame


def _separation(pos: np.ndarray, neg: np.ndarray) -> float:
    """Gap between the group means in pooled standard deviations (inf when both groups are constant)."""
    gap = float(pos.mean() - neg.mean())
    pooled = math.sqrt((float(pos.var()) + float(neg.var())) / 2)
    if pooled == 0:
        return math.copysign(math.inf, gap) if gap else 0.0
    return gap / pooled


def _cosine(directions: dict[int, torch.Tensor], a: int, b: int) -> float:
    return float(
        torch.nn.functional.cosine_similarity(
            directions[a].double(), directions[b].double().to(directions[a].device), dim=0
        )
    )
