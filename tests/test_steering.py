"""Applying vectors: steered activations and logits against manual hooks, positions, generation."""

from __future__ import annotations

import pytest
import torch
from helpers import make_model, random_vector

from steerlens import SteeringVector, ablation_operator, ablation_then_addition_operator
from steerlens.backends import steering_hooks_on
from steerlens.errors import ModelMismatchError, NonFiniteError, TokenIndexError

PROMPT = "The food was delicious and the"


def manual_logits(model, tokens, vec, multiplier, positions=None):
    """Logits with a hand-written hook that adds multiplier * v at `positions` (all if None)."""

    def add(act, hook, v):
        delta = multiplier * v
        if positions is None:
            return act + delta
        act = act.clone()
        act[:, positions] += delta
        return act

    hooks = [
        (f"blocks.{layer}.hook_{vec.layer_type}", lambda a, hook, v=v: add(a, hook, v))
        for layer, v in vec.layer_activations.items()
    ]
    return model.run_with_hooks(tokens, fwd_hooks=hooks)


def test_steered_activation_and_logits_match_manual_hook(model):
    tokens = model.to_tokens(PROMPT)
    vec = random_vector(model, layers=(1, 2))
    _, clean = model.run_with_cache(tokens)
    pristine = model(tokens)
    with vec.apply(model, multiplier=2.5):
        logits, steered = model.run_with_cache(tokens)
    # Layer 1 is steered on top of the clean residual: exactly unsteered + m * v everywhere.
    torch.testing.assert_close(
        steered["blocks.1.hook_resid_post"],
        clean["blocks.1.hook_resid_post"] + 2.5 * vec.layer_activations[1],
        atol=1e-5,
        rtol=0,
    )
    torch.testing.assert_close(logits, manual_logits(model, tokens, vec, 2.5), atol=1e-5, rtol=0)
    assert not torch.allclose(logits, pristine, atol=1e-3)
    assert torch.equal(model(tokens), pristine)
    assert steering_hooks_on(model) == []


def test_min_token_index_and_token_indices(model):
    tokens = model.to_tokens(PROMPT)
    n = tokens.shape[1]
    vec = random_vector(model)
    name = "blocks.1.hook_resid_post"
    _, clean = model.run_with_cache(tokens)
    cases = [
        (dict(min_token_index=4), list(range(4, n))),
        (dict(token_indices=[0, 3, 7]), [0, 3, 7]),
        (dict(token_indices=slice(2, 9, 3)), [2, 5, 8]),
        (dict(token_indices=torch.arange(n) % 2 == 1), list(range(1, n, 2))),
        (dict(min_token_index=5, token_indices=[1, 6, 8]), [6, 8]),
    ]
    for kwargs, positions in cases:
        with vec.apply(model, multiplier=-1.5, **kwargs):
            logits, steered = model.run_with_cache(tokens)
        diff = (steered[name] - clean[name])[0]
        changed = [i for i in range(n) if diff[i].abs().max() > 0]
        assert changed == positions, kwargs
        torch.testing.assert_close(
            diff[positions], (-1.5 * vec.layer_activations[1]).expand(len(positions), -1), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(logits, manual_logits(model, tokens, vec, -1.5, positions), atol=1e-5, rtol=0)


def test_hooks_removed_when_body_raises(model):
    tokens = model.to_tokens(PROMPT)
    pristine = model(tokens)
    vec = random_vector(model)
    with pytest.raises(RuntimeError, match="boom"):
        with vec.apply(model, multiplier=3.0):
            model(tokens)
            raise RuntimeError("boom")
    assert steering_hooks_on(model) == []
    assert torch.equal(model(tokens), pristine)


def test_patch_and_remove_keep_user_hooks(model):
    tokens = model.to_tokens(PROMPT)
    pristine = model(tokens)
    vec = random_vector(model)
    expected = manual_logits(model, tokens, vec, 2.0)
    seen = []
    model.add_hook("blocks.1.hook_resid_post", lambda a, hook: seen.append(1))
    try:
        handle = vec.patch(model, multiplier=2.0)
        torch.testing.assert_close(model(tokens), expected, atol=1e-5, rtol=0)
        handle.remove()
        handle.remove()  # idempotent
        assert steering_hooks_on(model) == []
        assert torch.equal(model(tokens), pristine)
        with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda a, hook: seen.append(0))]):
            with vec.apply(model):
                model(tokens)
            n = len(seen)
            model(tokens)  # the user's context hook survives steerlens' exit
            assert seen[n:].count(0) == 1
        assert 1 in seen and model.hook_dict["blocks.1.hook_resid_post"].fwd_hooks
    finally:
        model.reset_hooks(including_permanent=True)


def generate_tokens(model, prompt_tokens, n_new, use_cache):
    out = model.generate(
        prompt_tokens,
        max_new_tokens=n_new,
        do_sample=False,
        use_past_kv_cache=use_cache,
        verbose=False,
        stop_at_eos=False,
    )
    return out.clone()  # generate returns inference-mode tensors


@pytest.mark.parametrize("min_offset", [0, 2])
def test_generation_with_kv_cache_steers_absolute_positions(model, min_offset):
    """Each generated token's activation equals the full-sequence recomputation with a manual hook."""
    prompt = model.to_tokens(PROMPT)
    n_prompt, n_new = prompt.shape[1], 6
    min_index = 0 if min_offset == 0 else n_prompt + min_offset
    vec = random_vector(model, layers=(2,), scale=6.0)
    name = "blocks.2.hook_resid_post"
    per_step = []
    capture = (name, lambda a, hook: per_step.append(a.detach().clone()))
    with vec.apply(model, multiplier=1.0, min_token_index=min_index):
        with model.hooks(fwd_hooks=[capture]):
            out = generate_tokens(model, prompt, n_new, use_cache=True)
        uncached = generate_tokens(model, prompt, n_new, use_cache=False)
    assert torch.equal(out, uncached)
    assert len(per_step) == n_new and per_step[0].shape[1] == n_prompt and per_step[1].shape[1] == 1
    # Independent recomputation over the whole generated sequence, steering positions >= min_index.
    positions = list(range(min_index, out.shape[1]))
    full = []
    _, clean = model.run_with_cache(out)

    def manual(act, hook):
        act = act.clone()
        act[:, positions] += vec.layer_activations[2]
        full.append(act)
        return act

    model.run_with_hooks(out, fwd_hooks=[(name, manual)])
    expected = full[0][0]
    cached_seq = torch.cat(per_step, dim=1)[0]
    torch.testing.assert_close(cached_seq, expected[: cached_seq.shape[0]], atol=1e-4, rtol=0)
    steered_positions = (
        ((cached_seq - clean[name][0, : cached_seq.shape[0]]).abs().amax(-1) > 1e-2).nonzero().flatten().tolist()
    )
    assert steered_positions == [p for p in positions if p < cached_seq.shape[0]]
    unsteered = generate_tokens(model, prompt, n_new, use_cache=True)
    assert not torch.equal(unsteered, out), "the multiplier is too weak to show steering"


def test_ablation_operators(model):
    tokens = model.to_tokens(PROMPT)
    vec = random_vector(model)
    v = vec.layer_activations[1]
    name = "blocks.1.hook_resid_post"
    with vec.apply(model, operator=ablation_operator()):
        _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(cache[name][0] @ v, torch.zeros(tokens.shape[1]), atol=1e-4, rtol=0)
    with vec.apply(model, multiplier=2.0, operator=ablation_then_addition_operator()):
        _, cache = model.run_with_cache(tokens)
    expected = torch.full((tokens.shape[1],), 2.0 * float(v @ v))
    torch.testing.assert_close(cache[name][0] @ v, expected, atol=1e-3, rtol=1e-5)
    # A user operator: delta = (a, v) -> 0.5 * v is the same as addition with multiplier 0.5.
    with vec.apply(model, multiplier=1.0, operator=lambda a, vv: 0.5 * vv):
        got = model(tokens)
    torch.testing.assert_close(got, manual_logits(model, tokens, vec, 0.5), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_are_steered_with_cast_vector(dtype):
    model = make_model(dtype=dtype, seed=3)
    tokens = model.to_tokens(PROMPT)
    vec = random_vector(model)  # float32 vector on a half-precision model
    with vec.apply(model, multiplier=2.0):
        _, cache = model.run_with_cache(tokens)
    _, clean = model.run_with_cache(tokens)
    name = "blocks.1.hook_resid_post"
    assert cache[name].dtype == dtype
    expected = clean[name] + (2.0 * vec.layer_activations[1]).to(dtype)
    torch.testing.assert_close(cache[name], expected, atol=0, rtol=0)


def test_mismatched_model_fails_before_any_forward(model):
    calls = []
    handle = model.blocks[0].register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ModelMismatchError, match="d_model"):
            with SteeringVector({1: torch.ones(16)}).apply(model):
                model("hi")
        with pytest.raises(ModelMismatchError, match="only 4 layers"):
            with SteeringVector({9: torch.ones(32)}).apply(model):
                model("hi")
        parallel = make_model(parallel_attn_mlp=True, n_layers=2)
        with pytest.raises(ModelMismatchError, match="no hook point"):
            SteeringVector({0: torch.ones(32)}, "resid_mid").patch(parallel)
    finally:
        handle.remove()
    assert calls == []
    assert steering_hooks_on(model) == []


def test_bad_multiplier_and_positions(model):
    vec = random_vector(model)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(NonFiniteError, match="multiplier"):
            with vec.apply(model, multiplier=bad):
                pass
    with pytest.raises(TokenIndexError, match="non-negative"):
        vec.patch(model, token_indices=[-1])
    with pytest.raises(TokenIndexError, match="slice"):
        vec.patch(model, token_indices=slice(-1, None))
    with pytest.raises(TokenIndexError, match="min_token_index"):
        vec.patch(model, min_token_index=-2)
    assert steering_hooks_on(model) == []


def test_nested_application_equals_sum(model):
    tokens = model.to_tokens(PROMPT)
    a, b = random_vector(model, (1, 2), seed=1), random_vector(model, (2, 3), seed=2)
    with a.apply(model, multiplier=1.5), b.apply(model, multiplier=1.5):
        nested = model(tokens)
    with (a + b).apply(model, multiplier=1.5):
        summed = model(tokens)
    torch.testing.assert_close(nested, summed, atol=1e-5, rtol=0)


def test_generation_past_the_context_is_a_clear_error(toy):
    """Not TransformerLens' IndexError deep in the position embedding: one error naming the fix."""
    from steerlens.errors import PromptTooLongError
    from steerlens.evaluation import generate_text, steered_and_unsteered

    n_ctx = toy.cfg.n_ctx
    with pytest.raises(PromptTooLongError, match=r"max_new_tokens=\d+ or less"):
        generate_text(toy, "The food was", max_new_tokens=n_ctx)
    vec = random_vector(toy, (1,))
    with pytest.raises(PromptTooLongError):
        steered_and_unsteered(toy, vec, "The food was", multiplier=1.0, max_new_tokens=10 * n_ctx)
    assert len(generate_text(toy, "The food was", max_new_tokens=3)) > 0
