"""Fitting a steering condition's threshold from prompts that should and should not be steered.

:func:`fit_condition` scores labelled prompts exactly as
:func:`steerlens.hooks.conditional.conditional_steering` scores a prompt pass, and
puts the threshold where it separates them best (midway in the widest gap among
the equally accurate cuts), reporting how well it does: on held-out prompts, the
accuracy tells how often the steering will fire when it should and stay off when
it should not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import Tensor

from steerlens.checks import check_prompts
from steerlens.errors import InvalidArgumentError
from steerlens.evaluation.separation import best_threshold, roc_auc
from steerlens.hooks.conditional import Aggregate, Condition, condition_scores
from steerlens.tokens import PaddingSide
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
    steer_prompts: str | Iterable[str],
    other_prompts: str | Iterable[str],
    *,
    layer: int | None = None,
    aggregate: Aggregate = "mean",
    tokenizer: Any = None,
    batch_size: int = 32,
    padding_side: PaddingSide | None = None,
) -> FittedCondition:
    """The threshold that best tells ``steer_prompts`` (steer these) from ``other_prompts`` (leave these).

    ``condition`` is a :class:`~steerlens.hooks.conditional.Condition` (its threshold
    and ``above`` are replaced) or a steering vector (its direction at ``layer``,
    scored with ``aggregate``). If the prompts to steer score *lower* than the others,
    the fitted condition holds below the threshold (``above=False``).

    Example:
        >>> fitted = fit_condition(model, topic_vec, food_prompts, travel_prompts, layer=2)
        >>> fitted.accuracy, fitted.condition.threshold
    """
    if isinstance(condition, SteeringVector):
        condition = Condition.from_vector(condition, layer, aggregate=aggregate)
    elif not isinstance(condition, Condition):
        raise InvalidArgumentError(
            f"condition must be a Condition or a SteeringVector, got {type(condition).__name__}."
        )
    elif layer is not None and layer != condition.layer:
        raise InvalidArgumentError(f"layer={layer} but the condition reads layer {condition.layer}; pass one of them.")
    steer = condition_scores(model, condition, check_prompts(steer_prompts), tokenizer=tokenizer,
                             batch_size=batch_size, padding_side=padding_side)
    other = condition_scores(model, condition, check_prompts(other_prompts), tokenizer=tokenizer,
                             batch_size=batch_size, padding_side=padding_side)
    auc = roc_auc(steer.tolist(), other.tolist())
    above = auc >= 0.5
    sign = 1.0 if above else -1.0
    cut = best_threshold((sign * steer).tolist(), (sign * other).tolist())
    fitted = Condition(condition.direction, condition.layer, condition.layer_type, sign * cut.threshold,
                       condition.aggregate, above, condition.skip_first)
    return FittedCondition(fitted, max(auc, 1 - auc), cut.accuracy, steer, other)


def condition_accuracy(
    model: Any, condition: Condition, steer_prompts: Iterable[str], other_prompts: Iterable[str], **kwargs: Any
) -> float:
    """Share of prompts the condition classifies right: steer_prompts must hold, other_prompts must not.

    Example:
        >>> condition_accuracy(model, fitted.condition, held_out_food, held_out_travel)
        1.0
    """
    steer = condition.holds(condition_scores(model, condition, steer_prompts, **kwargs))
    other = condition.holds(condition_scores(model, condition, other_prompts, **kwargs))
    return float(torch.cat([steer, ~other]).float().mean())
