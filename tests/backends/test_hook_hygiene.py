"""Hooks never outlive their context: random programs of apply/patch/remove/generate/raise.

Hypothesis draws a program of nested steps; after it runs (whatever it raised), the
model must carry no steerlens hook and its logits must equal the pristine ones exactly.
"""

from __future__ import annotations

from contextlib import ExitStack

import pytest
import torch
from helpers import make_model, random_vector
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steerlens import SteeringVector
from steerlens.backends import steering_hooks_on

MODEL = make_model(n_layers=3)
TOKENS = MODEL.to_tokens("a b c d e")
PRISTINE = torch.empty(0)  # set by the fixture below, under the thread count the tests run with
LAYER_TYPES = ["resid_pre", "resid_post", "attn_out", "mlp_out", "resid_mid"]


class Boom(Exception):
    pass


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny forwards on a shared, oversubscribed CPU are many times slower with two spinning threads.
    # Exact logits depend on the thread count (matmul blocking), so the reference is taken here.
    global PRISTINE
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with torch.no_grad():
        PRISTINE = MODEL(TOKENS)
    yield
    torch.set_num_threads(threads)


def vector(seed: int, layer_type: str) -> SteeringVector:
    """Raw ``randn`` draws at layers 0..seed % 3."""
    return random_vector(32, range(seed % 3 + 1), layer_type, seed=seed, scale=1.0)


step = st.recursive(
    st.one_of(
        st.tuples(st.just("forward")),
        st.tuples(st.just("generate"), st.booleans()),
        st.tuples(st.just("raise")),
        st.tuples(st.just("patch"), st.integers(0, 50), st.sampled_from(LAYER_TYPES), st.booleans()),
    ),
    lambda inner: st.tuples(
        st.just("apply"),
        st.integers(0, 50),
        st.sampled_from(LAYER_TYPES),
        st.floats(-4, 4, allow_nan=False),
        st.lists(inner, max_size=3),
    ),
    max_leaves=6,
)


def run(program: list, stack: ExitStack) -> None:
    for op in program:
        kind = op[0]
        if kind == "forward":
            with torch.no_grad():
                MODEL(TOKENS)
        elif kind == "generate":
            MODEL.generate(TOKENS, max_new_tokens=2, use_past_kv_cache=op[1], verbose=False, do_sample=False)
        elif kind == "raise":
            raise Boom()
        elif kind == "patch":
            handle = vector(op[1], op[2]).patch(MODEL, multiplier=1.5)
            if op[3]:
                handle.remove()
            else:
                stack.callback(handle.remove)  # removed when the program ends, like a user's cleanup
        else:
            with vector(op[1], op[2]).apply(MODEL, multiplier=op[3]):
                assert steering_hooks_on(MODEL)
                run(op[4], stack)


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, max_size=5))
def test_random_programs_leave_no_hook(program):
    try:
        with ExitStack() as stack:
            run(program, stack)
    except Boom:
        pass
    assert steering_hooks_on(MODEL) == []
    assert all(not point.fwd_hooks and not point.bwd_hooks for point in MODEL.hook_dict.values())
    assert all(not block._forward_pre_hooks for block in MODEL.blocks)
    with torch.no_grad():
        assert torch.equal(MODEL(TOKENS), PRISTINE)


MODEL64 = make_model(n_layers=3, dtype=torch.float64)


def coarse_vector(seed: int, layer_type: str) -> SteeringVector:
    """Entries on a 1/256 grid: products with multipliers k/4 are exact in float32, so rounding cannot blur the test."""
    raw = vector(seed, layer_type).layer_activations
    return SteeringVector({layer: (draw * 256).round() / 256 for layer, draw in raw.items()}, layer_type)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 1000),
    st.integers(0, 1000),
    st.sampled_from(["resid_pre", "resid_post", "attn_out"]),
    st.integers(-12, 12),
    st.integers(-12, 12),
)
def test_nested_vectors_equal_their_sum(seed_a, seed_b, layer_type, k_a, k_b):
    a, b = coarse_vector(seed_a, layer_type), coarse_vector(seed_b, layer_type)
    m_a, m_b = k_a / 4, k_b / 4
    zero = torch.zeros(32)
    summed = {
        layer: m_a * a.layer_activations.get(layer, zero) + m_b * b.layer_activations.get(layer, zero)
        for layer in sorted(set(a.layers) | set(b.layers))
    }
    # Reference independent of steerlens: plain TransformerLens hooks adding the summed vector.
    manual = [
        (f"blocks.{layer}.hook_{layer_type}", lambda act, hook, v=vec: act + v.to(act.dtype))
        for layer, vec in summed.items()
    ]
    for model, tol in ((MODEL64, 1e-6), (MODEL, 1e-5)):  # float32 adds its own rounding to each sum
        tokens = model.to_tokens("a b c d e")
        with torch.no_grad():
            with a.apply(model, multiplier=m_a), b.apply(model, multiplier=m_b):
                nested = model(tokens)
            expected = model.run_with_hooks(tokens, fwd_hooks=manual)
            with SteeringVector(summed, layer_type).apply(model):
                together = model(tokens)
        torch.testing.assert_close(nested, expected, atol=tol, rtol=0)
        torch.testing.assert_close(together, expected, atol=tol, rtol=0)
        assert not steering_hooks_on(model)


def test_users_hooks_survive_steerlens_exit():
    seen: list[str] = []
    with MODEL.hooks(fwd_hooks=[("blocks.1.hook_resid_post", lambda act, hook: seen.append("ctx"))]):
        with vector(1, "resid_post").apply(MODEL):
            MODEL(TOKENS)
        handle = vector(2, "resid_post").patch(MODEL)
        handle.remove()
        MODEL(TOKENS)
    MODEL.add_hook("blocks.0.hook_resid_post", lambda act, hook: seen.append("added"))
    MODEL.add_hook("blocks.2.hook_resid_pre", lambda act, hook: seen.append("permanent"), is_permanent=True)
    pre = MODEL.blocks[1].register_forward_pre_hook(lambda module, args: seen.append("torch pre-hook"))
    try:
        with vector(3, "resid_post").apply(MODEL):
            pass
        with pytest.raises(Boom), vector(4, "resid_post").apply(MODEL):
            raise Boom()
        vector(5, "resid_pre").patch(MODEL).remove()
        MODEL(TOKENS)
    finally:
        pre.remove()
        MODEL.reset_hooks(including_permanent=True)
    assert seen == ["ctx", "ctx", "added", "torch pre-hook", "permanent"]
    with torch.no_grad():
        assert torch.equal(MODEL(TOKENS), PRISTINE)


def _tl_by_hand(model, tokens, vec: SteeringVector, multiplier: float) -> torch.Tensor:
    """Logits with ``multiplier * vec`` added by hand-written TransformerLens hooks (the reference)."""
    hooks = [
        (f"blocks.{layer}.hook_{vec.layer_type}", lambda act, hook, v=v: act + multiplier * v.to(act.dtype))
        for layer, v in vec.layer_activations.items()
    ]
    with torch.no_grad():
        return model.run_with_hooks(tokens, fwd_hooks=hooks)


def _hf_by_hand(model, ids, vec: SteeringVector, multiplier: float) -> torch.Tensor:
    """Logits with ``multiplier * vec`` added to decoder layers' outputs by plain torch hooks (the reference)."""

    def add(module, args, output, v):
        return (
            (output[0] + multiplier * v,) + tuple(output[1:]) if isinstance(output, tuple) else output + multiplier * v
        )

    handles = [
        model.model.layers[layer].register_forward_hook(lambda m, a, o, v=v: add(m, a, o, v))
        for layer, v in vec.layer_activations.items()
    ]
    try:
        with torch.no_grad():
            return model(ids).logits
    finally:
        for handle in handles:
            handle.remove()


def test_blocks_exited_out_of_order_remove_their_own_hooks_on_hooked_transformer():
    a, b = vector(11, "resid_post"), vector(22, "resid_post")
    b_alone = _tl_by_hand(MODEL, TOKENS, b, -2.0)
    ctx_a, ctx_b = a.apply(MODEL, multiplier=1.5), b.apply(MODEL, multiplier=-2.0)
    ctx_a.__enter__()
    ctx_b.__enter__()
    ctx_a.__exit__(None, None, None)  # a ends first: b's steering must stay, a's must go
    with torch.no_grad():
        after_a = MODEL(TOKENS)
    ctx_b.__exit__(None, None, None)
    with torch.no_grad():
        after_b = MODEL(TOKENS)
    assert not torch.equal(b_alone, PRISTINE)
    torch.testing.assert_close(after_a, b_alone, atol=1e-5, rtol=0)
    assert torch.equal(after_b, PRISTINE)
    assert steering_hooks_on(MODEL) == []


def test_patch_inside_apply_and_apply_exits_keep_the_patch():
    a, b = vector(13, "resid_post"), vector(14, "resid_post")
    b_alone = _tl_by_hand(MODEL, TOKENS, b, 0.5)
    with a.apply(MODEL, multiplier=1.0):
        handle = b.patch(MODEL, multiplier=0.5)
    try:
        with torch.no_grad():
            torch.testing.assert_close(MODEL(TOKENS), b_alone, atol=1e-5, rtol=0)
    finally:
        handle.remove()
    with torch.no_grad():
        assert torch.equal(MODEL(TOKENS), PRISTINE)


def test_blocks_exited_out_of_order_on_hugging_face():
    from tiny_hf import INPUT_IDS, make_hf_model

    hf = make_hf_model("llama")
    with torch.no_grad():
        pristine = hf(INPUT_IDS).logits
    a, b = vector(11, "resid_post"), vector(22, "resid_post")  # layers 0..2; the tiny Llama has 2
    a, b = (SteeringVector({k: v for k, v in x.layer_activations.items() if k < 2}, "resid_post") for x in (a, b))
    b_alone = _hf_by_hand(hf, INPUT_IDS, b, -2.0)
    ctx_a, ctx_b = a.apply(hf, multiplier=1.5), b.apply(hf, multiplier=-2.0)
    ctx_a.__enter__()
    ctx_b.__enter__()
    ctx_a.__exit__(None, None, None)
    with torch.no_grad():
        after_a = hf(INPUT_IDS).logits
    ctx_b.__exit__(None, None, None)
    with torch.no_grad():
        after_b = hf(INPUT_IDS).logits
    assert not torch.equal(b_alone, pristine)
    torch.testing.assert_close(after_a, b_alone, atol=1e-5, rtol=0)
    assert torch.equal(after_b, pristine)
    assert steering_hooks_on(hf) == []
