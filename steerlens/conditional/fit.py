"""Fitting a steering condition's threshold from prompts that should and should not be steered.

:func:`fit_condition` scores labelled prompts exactly as
:func:`steerlens.conditional.steering.conditional_steering` scores a prompt pass, and
puts the threshold where it separates them best (midway in the widest gap among
the equally accurate cuts), reporting how well it does: on held-out prompts, the
accuracy tells how often the steering will fire when it should and stay off when
it should not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor
from typing_extensions import Unpack

from steerlens.analysis.separation import best_threshold, roc_auc
from steerlens.conditional.steering import Aggregate, Condition, scores_on
from steerlens.errors import InvalidArgumentError
from steerlens.layers import resolve_layers
from steerlens.settings import PROMPT_READING, SettingsKeywords, open_run
from steerlens.tokens import Prompts
from steerlens.vector import SteeringVector


@dataclass(frozen=True)
class FittedCondition:
    """A condition with its fitted threshold, and how well it separated the prompts it was fitted on."""

    condition: Condition
    auc: float
    """ROC AUC of the scores, prompts to steer against prompts to leave alone."""
    accuracy: float
    """Share of the fitting prompts on the right side of the threshold."""
    steer_scores: Tensor
    other_scores: Tensor


def fit_condition(
    model: Any,
    condition: Condition | SteeringVector,
    steer_prompts: Prompts,
    other_prompts: Prompts,
    *,
    layer: int | None = None,
    aggregate: Aggregate = "mean",
    **settings: Unpack[SettingsKeywords],
) -> FittedCondition:
    """The threshold that best tells ``steer_prompts`` (steer these) from ``other_prompts`` (leave these).

    ``condition`` is a :class:`~steerlens.conditional.steering.Condition` (its threshold
    and ``above`` are replaced) or a steering vector (its direction at ``layer``,
    scored with ``aggregate``). If the prompts to steer score *lower* than the others,
    the fitted condition holds below the threshold (``above=False``). A vector's negative
    layer keys and a negative ``layer`` count from the end of the model (a condition
    fitted from a vector names its layer non-negative). Prompts are strings or token ids, read
    as :func:`~steerlens.conditional.steering.condition_scores` reads them. ``settings``:
    :class:`~steerlens.settings.Settings` fields by name (``tokenizer``, ``batch_size``
    (default 32), ``padding_side``, ``prepend_bos`` (None: the model's default)) or
    ``settings=``, see :mod:`steerlens.settings`.

    Example:
        >>> fitted = fit_condition(model, topic_vec, food_prompts, travel_prompts, layer=2)
        >>> fitted.accuracy, fitted.condition.threshold
    """
    run = open_run(model, settings, "fit_condition", PROMPT_READING, batch_size=32)
    n_layers = run.backend.n_layers
    if isinstance(condition, SteeringVector):
        at = None if layer is None else resolve_layers([layer], n_layers)[0]
        condition = Condition.from_vector(condition.resolved(n_layers), at, aggregate=aggregate)
    elif not isinstance(condition, Condition):
        raise InvalidArgumentError(
            f"condition must be a Condition or a SteeringVector, got {type(condition).__name__}."
        )
    elif layer is not None and resolve_layers([layer], n_layers) != resolve_layers([condition.layer], n_layers):
        raise InvalidArgumentError(f"layer={layer} but the condition reads layer {condition.layer}; pass one of them.")
    steer = scores_on(run, condition, steer_prompts)
    other = scores_on(run, condition, other_prompts)
    auc = roc_auc(steer.tolist(), other.tolist())
    above = auc >= 0.5
    sign = 1.0 if above else -1.0
    cut = best_threshold((sign * steer).tolist(), (sign * other).tolist())
    fitted = replace(condition, threshold=sign * cut.threshold, above=above)
    return FittedCondition(fitted, max(auc, 1 - auc), cut.accuracy, steer, other)


def condition_accuracy(
    model: Any,
    condition: Condition,
    steer_prompts: Prompts,
    other_prompts: Prompts,
    **settings: Unpack[SettingsKeywords],
) -> float:
    """Share of prompts the condition classifies right: steer_prompts must hold, other_prompts must not.

    The prompts are scored by :func:`~steerlens.conditional.steering.condition_scores` with
    the same ``settings`` (``tokenizer``, ``batch_size`` (default 32), ``padding_side``,
    ``prepend_bos``, or ``settings=``, see :mod:`steerlens.settings`).

    Example:
        >>> condition_accuracy(model, fitted.condition, held_out_food, held_out_travel)
        1.0
    """
    run = open_run(model, settings, "condition_accuracy", PROMPT_READING, batch_size=32)
    steer = condition.holds(scores_on(run, condition, steer_prompts))
    other = condition.holds(scores_on(run, condition, other_prompts))
    return float(torch.cat([steer, ~other]).float().mean())
