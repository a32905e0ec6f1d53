"""Operators decide how a steering vector changes an activation.

An operator is a callable ``(activation, vector) -> delta``; the steered
activation is ``activation + delta``. ``vector`` already includes the multiplier.
Addition, ablation and their combination change the activation along the vector;
the norm-preserving and angular operators change only its direction, keeping its
size (what later layer norms expect).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.checks import finite_number
from steerlens.errors import InvalidArgumentError

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


def norm_preserving_addition_operator() -> Operator:
    """Add the (scaled) vector, then rescale each steered activation to its original L2 norm.

    ``steered = (a + v) * |a| / |a + v|``, so the direction moves but the size of the
    residual stream does not: later layers' norms see the magnitude they are used to,
    which lets larger multipliers steer without blowing the activation up. A position
    where ``a + v`` is zero is left at ``a + v`` (there is no direction to rescale).
    Computed in float32, returned in the activation's dtype.

    Example:
        >>> with vec.apply(model, multiplier=4.0, operator=norm_preserving_addition_operator()):
        ...     logits = model("The film was")
    """

    def norm_preserving_addition(activation: Float[Tensor, "... d_model"], vector: Float[Tensor, "d_model"]) -> Tensor:
        act = activation.float()
        moved = act + vector.float()
        moved_norm = moved.norm(dim=-1, keepdim=True)
        scale = torch.where(moved_norm > 0, act.norm(dim=-1, keepdim=True) / moved_norm.clamp_min(1e-30), 1.0)
        return (moved * scale - act).to(activation.dtype)

    return norm_preserving_addition


def angular_steering_operator(degrees: float) -> Operator:
    """Rotate each activation towards the (scaled) vector by ``degrees``, in the plane the two span.

    The norm of the activation is kept and only its angle to the vector changes: an
    activation at angle θ from the vector ends at angle ``max(θ - degrees, 0)`` (it
    never overshoots the vector). The multiplier's sign picks the direction (a
    negative multiplier rotates towards ``-vector``); its size does not matter.
    An activation exactly parallel or antiparallel to the vector spans no plane and
    is left as it is. Computed in float32, returned in the activation's dtype.

    Example:
        >>> with vec.apply(model, operator=angular_steering_operator(30.0)):
        ...     logits = model("The film was")
    """
    angle = finite_number(degrees, "degrees")
    if not 0.0 <= angle <= 180.0:
        raise InvalidArgumentError(
            f"degrees must be between 0 and 180, got {angle}; pass a negative multiplier to rotate away "
            "from the vector."
        )
    radians = math.radians(angle)

    def angular_steering(activation: Float[Tensor, "... d_model"], vector: Float[Tensor, "d_model"]) -> Tensor:
        unit = _unit(vector)
        if unit is None:
            return torch.zeros_like(activation)
        act = activation.float()
        along = (act * unit).sum(-1, keepdim=True)
        across = act - along * unit
        across_norm = across.norm(dim=-1, keepdim=True)
        # Below float32 rounding of the activation, the component across the vector is noise: no plane.
        planar = across_norm > 1e-6 * act.norm(dim=-1, keepdim=True).clamp_min(1e-30)
        other = torch.where(planar, across / across_norm.clamp_min(1e-30), 0.0)
        theta = torch.atan2(across_norm, along)  # 0..pi, the angle from the vector
        new_theta = (theta - radians).clamp_min(0.0)
        size = act.norm(dim=-1, keepdim=True)
        rotated = size * (torch.cos(new_theta) * unit + torch.sin(new_theta) * other)
        return torch.where(planar, rotated - act, 0.0).to(activation.dtype)

    return angular_steering


def _unit(vector: Tensor) -> Tensor | None:
    """The float32 unit vector along ``vector``, None when it is zero (no direction)."""
    vec = vector.float()
    norm = vec.norm()
    return None if norm == 0 else vec / norm


def _delta_along(activation: Tensor, vector: Tensor, change: Callable[[Tensor], Tensor]) -> Tensor:
    """``change(a·u) u`` with ``u`` the vector's unit direction, computed in float32 and returned in the
    activation's dtype; zero when the vector has no direction."""
    unit = _unit(vector)
    if unit is None:
        return torch.zeros_like(activation)
    along = (activation.float() * unit).sum(-1, keepdim=True)
    return (change(along) * unit).to(activation.dtype)


def projection_clamp_operator(value: float) -> Operator:
    """Set each activation's projection on the vector's unit direction to ``value``, for any vector.

    ``steered = a + (value - a·u) u`` with ``u = vector / |vector|``: the component
    along the direction is replaced by ``value`` (in the residual stream's units, the
    size ``a·u`` has), everything orthogonal to it is kept (steerkit's
    ``op="clamp"``). ``value=0`` is :func:`ablation_operator`.

    The multiplier only picks the direction: its size is ignored (``value`` is the
    size), a negative one flips ``u`` (so ``multiplier=-1`` sets the projection on the
    vector to ``-value``), and ``multiplier=0`` leaves the activation as it is (a zero
    vector has no direction), as a sweep's multiplier-0 cell expects. Computed in
    float32, returned in the activation's dtype. Named apart from
    :func:`steerlens.sae.clamp_operator`, which clamps SAE latents.

    Example:
        >>> with vec.apply(model, operator=projection_clamp_operator(8.0)):  # a·u = 8 at every position
        ...     logits = model("The film was")
    """
    target = finite_number(value, "value")

    def projection_clamp(activation: Float[Tensor, "... d_model"], vector: Float[Tensor, "d_model"]) -> Tensor:
        return _delta_along(activation, vector, lambda along: target - along)

    return projection_clamp


def multiplicative_operator(factor: float) -> Operator:
    """Scale each activation's component along the vector's unit direction by ``factor``, for any vector.

    ``steered = a + (factor - 1)(a·u) u`` with ``u = vector / |vector|`` (steerkit's
    ``op="multiplicative"``): ``factor=2`` doubles what the activation already has of
    the direction, ``0`` removes it (as :func:`ablation_operator`), ``-1`` reflects it;
    the rest of the activation is kept. Unlike addition it adds nothing where the
    activation has none of the direction, so it amplifies a feature only where it is
    present.

    The multiplier only switches the operator on: ``u u^T`` is the same for ``u`` and
    ``-u``, so the multiplier's sign and size are ignored, except that
    ``multiplier=0`` leaves the activation as it is (a zero vector has no direction),
    as a sweep's multiplier-0 cell expects. Computed in float32, returned in the
    activation's dtype.

    Example:
        >>> with vec.apply(model, operator=multiplicative_operator(3.0)):
        ...     logits = model("The film was")
    """
    scale = finite_number(factor, "factor") - 1.0

    def multiplicative(activation: Float[Tensor, "... d_model"], vector: Float[Tensor, "d_model"]) -> Tensor:
        return _delta_along(activation, vector, lambda along: scale * along)

    return multiplicative
