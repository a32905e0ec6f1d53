"""Stage 5, vector into the model: the steering hook, positions it touches, and operators."""

from steerlens.hooks.operators import (
    Operator,
    PatchDeltaOperator,
    ablation_operator,
    ablation_then_addition_operator,
    addition_operator,
    angular_steering_operator,
    multiplicative_operator,
    norm_preserving_addition_operator,
    projection_clamp_operator,
)
from steerlens.hooks.positions import PassPositions, TokenIndices, check_token_indices, position_mask
from steerlens.hooks.steering_hook import SteeringHook, SteeringPatchHandle, SteeringSpec, make_spec
from steerlens.hooks.threads import claim_steering

__all__ = [
    "Operator",
    "PassPositions",
    "PatchDeltaOperator",
    "SteeringPatchHandle",
    "SteeringHook",
    "SteeringSpec",
    "TokenIndices",
    "ablation_operator",
    "ablation_then_addition_operator",
    "addition_operator",
    "angular_steering_operator",
    "check_token_indices",
    "claim_steering",
    "make_spec",
    "multiplicative_operator",
    "norm_preserving_addition_operator",
    "position_mask",
    "projection_clamp_operator",
]
