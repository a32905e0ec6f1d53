"""The steering hook reads its vector at call time: optimisable, editable, inference-mode safe."""

from __future__ import annotations

import torch

from steerlens import SteeringVector, ablation_operator


def test_optimising_a_vector_through_apply_lowers_the_loss(model):
    tokens = model.to_tokens("I love this film")
    target = 5
    v = torch.zeros(model.cfg.d_model, requires_grad=True)
    vec = SteeringVector({1: v, 2: torch.zeros(model.cfg.d_model)})
    optimiser = torch.optim.Adam([v], lr=0.1)
    losses = []
    with vec.apply(model):  # one block, many backward passes
        for _ in range(6):
            loss = -torch.log_softmax(model(tokens)[0, -1], -1)[target]
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.3, losses
    # Independently: the final vector, added by a manual hook, gives the last step's update's loss.
    with torch.no_grad():
        manual = model.run_with_hooks(tokens, fwd_hooks=[("blocks.1.hook_resid_post", lambda a, hook: a + v)])
        with vec.apply(model):
            steered = model(tokens)
    torch.testing.assert_close(steered, manual, atol=1e-6, rtol=0)


def test_in_place_edits_take_effect_inside_the_block(model):
    tokens = model.to_tokens("The food was")
    vec = SteeringVector({2: torch.zeros(model.cfg.d_model)})
    with torch.no_grad():
        clean = model(tokens)
        with vec.apply(model, multiplier=2.0):
            assert torch.equal(model(tokens), clean)
            vec.layer_activations[2].fill_(0.5)
            edited = model(tokens)
        expected = model.run_with_hooks(tokens, fwd_hooks=[("blocks.2.hook_resid_post", lambda a, hook: a + 1.0)])
    torch.testing.assert_close(edited, expected, atol=1e-6, rtol=0)


def test_inference_mode_pass_then_a_tracked_pass(model):
    tokens = model.to_tokens("The trip was")
    v = torch.randn(model.cfg.d_model, requires_grad=True)
    vec = SteeringVector({1: v})
    with vec.apply(model, operator=ablation_operator()):
        with torch.inference_mode():
            model(tokens)
        out = model(tokens)
        out[0, -1].sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad).all()
