"""Operators against hand computations: norm-preserving addition and angular steering (plus the classics)."""

from __future__ import annotations

import math

import pytest
import torch

from steerlens import (
    SteeringVector,
    ablation_operator,
    ablation_then_addition_operator,
    addition_operator,
    angular_steering_operator,
    norm_preserving_addition_operator,
)
from steerlens.errors import InvalidArgumentError

S = math.sqrt(0.5)


def steer(operator, activation, vector):
    return activation + operator(activation, vector)


def test_addition_and_ablation_by_hand():
    a = torch.tensor([[[3.0, 4.0, 0.0]]])
    v = torch.tensor([0.0, 2.0, 0.0])
    assert torch.equal(steer(addition_operator(), a, v), torch.tensor([[[3.0, 6.0, 0.0]]]))
    assert torch.equal(steer(ablation_operator(), a, v), torch.tensor([[[3.0, 0.0, 0.0]]]))
    assert torch.equal(steer(ablation_then_addition_operator(), a, v), torch.tensor([[[3.0, 2.0, 0.0]]]))


def test_norm_preserving_addition_by_hand():
    a = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, -1.0, 0.0]]])
    v = torch.tensor([0.0, 4.0, 0.0])
    out = steer(norm_preserving_addition_operator(), a, v)
    # (3, 4, 0) has norm 5; scaled back to |a| = 3: (9/5, 12/5, 0).
    torch.testing.assert_close(out[0, 0], torch.tensor([1.8, 2.4, 0.0]))
    # A zero activation stays zero (its norm is 0).
    torch.testing.assert_close(out[0, 1], torch.zeros(3))
    # (0, -1, 0) + (0, 4, 0) = (0, 3, 0) rescaled to norm 1.
    torch.testing.assert_close(out[0, 2], torch.tensor([0.0, 1.0, 0.0]))
    # a + v = 0: nothing to rescale, the sum itself is returned.
    torch.testing.assert_close(steer(norm_preserving_addition_operator(), -v.view(1, 1, 3), v), torch.zeros(1, 1, 3))


def test_norm_preserving_addition_keeps_every_norm_on_random_tensors():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4, 7, 16, generator=gen) * 5
    v = torch.randn(16, generator=gen) * 3
    out = steer(norm_preserving_addition_operator(), a, v)
    torch.testing.assert_close(out.norm(dim=-1), a.norm(dim=-1))
    # ... and points where the plain sum points.
    cos = torch.nn.functional.cosine_similarity(out, a + v, dim=-1)
    torch.testing.assert_close(cos, torch.ones_like(cos))


def test_angular_steering_by_hand():
    v = torch.tensor([0.0, 3.0, 0.0])
    a = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0.0, -2.0, 0.0]]])
    out = steer(angular_steering_operator(45.0), a, v)
    expected = torch.tensor(
        [
            [2 * S, 2 * S, 0.0],  # 90° from v -> 45°, norm 2
            [0.0, S, -S],  # in the plane of (0,0,-1) and v
            [0.0, math.sqrt(2), 0.0],  # 45° from v: lands on v, norm sqrt(2)
            [0.0, 2.0, 0.0],  # already along v
            [0.0, -2.0, 0.0],  # antiparallel: spans no plane, left as it is
        ]
    )
    torch.testing.assert_close(out[0], expected)


def angle(x, direction):
    """Degrees between each row of ``x`` and ``direction`` (atan2: accurate near 0 and 180)."""
    x, unit = x.double(), (direction / direction.norm()).double()
    along = (x * unit).sum(-1)
    across = (x - along[..., None] * unit).norm(dim=-1)
    return torch.rad2deg(torch.atan2(across, along)).float()


def test_angular_steering_negative_multiplier_rotates_away_and_keeps_norms():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(3, 5, 8, generator=gen)
    v = torch.randn(8, generator=gen)
    for degrees in (0.0, 10.0, 60.0, 180.0):
        towards = steer(angular_steering_operator(degrees), a, v)
        away = steer(angular_steering_operator(degrees), a, -2.5 * v)
        torch.testing.assert_close(towards.norm(dim=-1), a.norm(dim=-1))
        torch.testing.assert_close(away.norm(dim=-1), a.norm(dim=-1))
        before = angle(a, v)
        torch.testing.assert_close(angle(towards, v), (before - degrees).clamp_min(0), atol=1e-3, rtol=0)
        torch.testing.assert_close(angle(away, -v), (180 - before - degrees).clamp_min(0), atol=1e-3, rtol=0)


def test_angular_steering_checks_its_angle():
    for bad in (-1.0, 181.0, float("nan")):
        with pytest.raises(ValueError):
            angular_steering_operator(bad)
    with pytest.raises(InvalidArgumentError, match="between 0 and 180"):
        angular_steering_operator(200)


def test_new_operators_steer_a_model_through_apply(model):
    """Through vec.apply: the steered residual is the hand-computed one, at the hooked layer only."""
    tokens = model.to_tokens("I love this film")
    name = "blocks.1.hook_resid_post"
    gen = torch.Generator().manual_seed(2)
    vec = SteeringVector({1: torch.randn(model.cfg.d_model, generator=gen)}, "resid_post")
    _, clean = model.run_with_cache(tokens, names_filter=name)
    a = clean[name]
    for operator, by_hand in (
        (
            norm_preserving_addition_operator(),
            lambda a, v: (a + v) * a.norm(dim=-1, keepdim=True) / (a + v).norm(dim=-1, keepdim=True),
        ),
        (angular_steering_operator(180.0), None),
    ):
        seen = {}
        with vec.apply(model, multiplier=2.0, operator=operator):
            model.run_with_hooks(tokens, fwd_hooks=[(name, lambda x, hook: seen.setdefault("x", x.clone()))])
        torch.testing.assert_close(seen["x"].norm(dim=-1), a.norm(dim=-1))
        if by_hand is not None:
            torch.testing.assert_close(seen["x"], by_hand(a, 2.0 * vec.layer_activations[1]))
        else:  # 180 degrees towards v: every position lands on v's direction
            unit = vec.layer_activations[1] / vec.layer_activations[1].norm()
            torch.testing.assert_close(seen["x"], a.norm(dim=-1, keepdim=True) * unit, atol=1e-4, rtol=1e-4)


def test_operators_keep_half_precision():
    a = torch.randn(2, 3, 8, dtype=torch.float16)
    v = torch.randn(8, dtype=torch.float16)
    for operator in (norm_preserving_addition_operator(), angular_steering_operator(30)):
        delta = operator(a, v)
        assert delta.dtype == torch.float16 and delta.shape == a.shape
