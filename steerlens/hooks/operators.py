"""Operators decide how a steering vector changes an activation.

An operator is a callable ``(activation, vector) -> delta``; the steered
activation is ``activation + delta``. ``vector`` already includes the multiplier.
"""

from __future__ import annotations

from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor

Operator = Callable[[Tensor, Tensor], Tensor]
PatchDeltaOperator = Operator
"""steering-vectors' name for an operator: ``(activation, vector) -> delta``."""


def addition_operator() -> Operator:
    """Add the (scaled) vector: ``delta = vector``. The default."""

    def addition(activation: Float[Tensor, "... d_model"], vector: Float[Tensor, "d_model"]) -> Tensor:
        return vector.expand_as(activation)

    return addition


def _projection(activation: Tensor, vector: Tensor) -> Tensor:
    norm_sq = (vector * vector).sum()
    if norm_sq == 0:
        return torch.zeros_like(activation)
    coeff = (activation * vector).sum(dim=-1, keepdim=True) / norm_sq
    return coeff * vector


def ablation_operator() -> Operator:
    """Remove the activation's component along the vector (multiplier only fixes the direction)."""

    def ablation(activation: Tensor, vector: Tensor) -> Tensor:
        return -_projection(activation, vector)

    return ablation


def ablation_then_addition_operator() -> Operator:
    """Remove the component along the vector, then add the (scaled) vector."""

    def ablation_then_addition(activation: Tensor, vector: Tensor) -> Tensor:
        return vector - _projection(activation, vector)

    return ablation_then_addition
