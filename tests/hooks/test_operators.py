"""Operators against hand computations: norm-preserving addition, angular steering, projection clamp and
multiplicative (plus the classics); the last two also against hand-written hooks on both model routes."""

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
    multiplicative_operator,
    norm_preserving_addition_operator,
    projection_clamp_operator,
)
from steerlens.errors import InvalidArgumentError, NonFiniteError, NumberTypeError

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


# -- projection clamp and multiplicative operators (steerkit's op="clamp" / op="multiplicative") ----------


def test_projection_clamp_and_multiplicative_by_hand():
    a = torch.tensor([[[3.0, 4.0, 0.0], [1.0, -2.0, 5.0]]])
    v = torch.tensor([0.0, 2.0, 0.0])
    clamp = projection_clamp_operator(7.0)
    assert torch.equal(steer(clamp, a, v), torch.tensor([[[3.0, 7.0, 0.0], [1.0, 7.0, 5.0]]]))
    # A negative multiplier flips the direction: the projection on -u is 7, i.e. -7 on u.
    assert torch.equal(steer(clamp, a, -0.5 * v), torch.tensor([[[3.0, -7.0, 0.0], [1.0, -7.0, 5.0]]]))
    assert torch.equal(steer(projection_clamp_operator(0.0), a, v), steer(ablation_operator(), a, v))
    triple = multiplicative_operator(3.0)
    assert torch.equal(steer(triple, a, v), torch.tensor([[[3.0, 12.0, 0.0], [1.0, -6.0, 5.0]]]))
    assert torch.equal(steer(triple, a, -4.0 * v), steer(triple, a, v))  # sign and size of the multiplier ignored
    assert torch.equal(steer(multiplicative_operator(0.0), a, v), steer(ablation_operator(), a, v))
    # multiplier 0 (a zero vector): no direction, the activation is left as it is.
    for operator in (clamp, triple):
        assert torch.equal(steer(operator, a, 0.0 * v), a)


def test_projection_clamp_and_multiplicative_on_random_tensors():
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(2, 5, 16, generator=gen) * 4
    v = torch.randn(16, generator=gen)
    u = v / v.norm()
    across = a - (a @ u)[..., None] * u
    clamped = steer(projection_clamp_operator(-2.5), a, 3.0 * v)
    torch.testing.assert_close(clamped @ u, torch.full((2, 5), -2.5))
    torch.testing.assert_close(clamped - (clamped @ u)[..., None] * u, across)
    scaled = steer(multiplicative_operator(1.7), a, v)
    torch.testing.assert_close(scaled @ u, 1.7 * (a @ u))
    torch.testing.assert_close(scaled - (scaled @ u)[..., None] * u, across)


def test_projection_clamp_and_multiplicative_check_their_numbers_and_keep_dtype():
    for make, name in ((projection_clamp_operator, "value"), (multiplicative_operator, "factor")):
        with pytest.raises(NonFiniteError, match=name):
            make(float("nan"))
        with pytest.raises(NumberTypeError, match=name):
            make("2")
        a = torch.randn(2, 3, 8, dtype=torch.float16)
        delta = make(2.0)(a, torch.randn(8, dtype=torch.float16))
        assert delta.dtype == torch.float16 and delta.shape == a.shape


def clamp_by_hand(act, direction, value):
    u = direction / direction.norm()
    return act + (value - (act * u).sum(-1, keepdim=True)) * u


def scale_by_hand(act, direction, factor):
    u = direction / direction.norm()
    return act + (factor - 1) * (act * u).sum(-1, keepdim=True) * u


HAND_CASES = [
    ("clamp", lambda: projection_clamp_operator(6.0), clamp_by_hand, 6.0, -1.5),
    ("multiplicative", lambda: multiplicative_operator(4.0), scale_by_hand, 4.0, 2.0),
]


@pytest.mark.parametrize("kind,make,by_hand,arg,multiplier", HAND_CASES, ids=[c[0] for c in HAND_CASES])
def test_new_projection_operators_equal_hand_hooks_on_a_hooked_transformer(model, kind, make, by_hand, arg, multiplier):
    """vec.apply with the operator gives the logits of a hand-written TransformerLens hook."""
    layer = 1
    gen = torch.Generator().manual_seed(4)
    direction = torch.randn(model.cfg.d_model, generator=gen)
    vec = SteeringVector({layer: direction}, "resid_post")
    tokens = model.to_tokens(["I love this film", "The food was bad"])
    signed = direction if multiplier > 0 else -direction  # clamp: the multiplier's sign picks the direction
    hand = [(f"blocks.{layer}.hook_resid_post", lambda act, hook: by_hand(act, signed, arg))]
    with torch.no_grad():
        pristine = model(tokens)
        expected = model.run_with_hooks(tokens, fwd_hooks=hand)
        with vec.apply(model, multiplier=multiplier, operator=make()):
            steered = model(tokens)
    torch.testing.assert_close(steered, expected, atol=1e-5, rtol=0)
    assert (steered - pristine).abs().max() > 0.1  # the operator did something


@pytest.mark.parametrize("kind,make,by_hand,arg,multiplier", HAND_CASES, ids=[c[0] for c in HAND_CASES])
def test_new_projection_operators_equal_hand_hooks_on_a_hugging_face_model(kind, make, by_hand, arg, multiplier):
    """vec.apply on a plain HF model gives the logits of a torch forward hook written by hand on its decoder layer."""
    from tiny_hf import INPUT_IDS, make_hf_model

    hf = make_hf_model("llama")
    layer = 0
    direction = torch.randn(hf.config.hidden_size, generator=torch.Generator().manual_seed(5))
    vec = SteeringVector({layer: direction}, "resid_post")
    signed = direction if multiplier > 0 else -direction

    def hand(module, args, out):
        if isinstance(out, tuple):
            return (by_hand(out[0], signed, arg), *out[1:])
        return by_hand(out, signed, arg)

    with torch.no_grad():
        pristine = hf(INPUT_IDS).logits
        handle = hf.model.layers[layer].register_forward_hook(hand)
        try:
            expected = hf(INPUT_IDS).logits
        finally:
            handle.remove()
        with vec.apply(hf, multiplier=multiplier, operator=make()):
            steered = hf(INPUT_IDS).logits
    torch.testing.assert_close(steered, expected, atol=1e-5, rtol=0)
    assert (steered - pristine).abs().max() > 0.1
