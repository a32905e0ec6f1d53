"""fast_generation: weights in the layout TransformerLens' forward reads, a leaner block forward, results bit-identical.

Every comparison is against the same model put back into TransformerLens' own layout and
forward (``tl_layout``): that is what generation computed before the fix.
"""

from __future__ import annotations

import copy
import io
import pickle
import tempfile
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from helpers import make_model, random_vector
from tiny_hf import make_hf_model
from tiny_hf import make_tokenizer as make_word_tokenizer
from transformer_lens.components import TransformerBlock

from steerlens import load_model, tl_speedup
from steerlens.adapter import convert_hf_model
from steerlens.errors import UnsupportedModelError
from steerlens.tl_speedup import fast_generation, is_fast, restore_tl_forward
from steerlens.toy import load_toy_model

TOY_PROMPTS = ["The food was", "Let me tell you about the hotel , it", "I think", "The film"]
WORD_PROMPTS = ["the cat sat on the mat", "a dog ran", "the big red dog sat on a small mat and ran"]
# One architecture per code path fast_generation touches: GPT-2 (plain attention + MLP), LLaMA (grouped-query
# attention, gated MLP, rotary), OLMo (clip_qkv), Gemma 2 (soft caps), BLOOM (ALiBi), Mixtral (mixture of experts),
# GPT-NeoX (parallel attention and MLP).
ARCHITECTURES = ("gpt2", "llama", "olmo", "gemma2", "bloom", "mixtral", "neox")


def tl_layout(model: Any) -> Any:
    """A copy of ``model`` as TransformerLens makes it: contiguous weights, its own block forward."""
    reference = restore_tl_forward(copy.deepcopy(model))
    with torch.no_grad():
        for param in reference.parameters():
            param.data = param.data.contiguous()
    assert not is_fast(reference)
    assert all(type(block) is TransformerBlock for block in reference.blocks)
    return reference


def generate(model: Any, prompt: Any, seed: int | None, steer: bool) -> torch.Tensor:
    """Tokens from ``model.generate`` (12 new, no early stop), optionally steered at layer 1."""
    kwargs = dict(max_new_tokens=12, stop_at_eos=False, verbose=False, return_type="tokens", do_sample=seed is not None)
    if seed is not None:
        torch.manual_seed(seed)
        kwargs.update(temperature=1.5, top_k=20)
    if not steer:
        return model.generate(prompt, **kwargs)
    with random_vector(model, layers=[1], scale=4.0).apply(model, multiplier=2.0):
        return model.generate(prompt, **kwargs)


@pytest.fixture(scope="module")
def toy_pair() -> tuple[Any, Any]:
    fast = load_toy_model(fast_generation=True)
    return fast, tl_layout(fast)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def converted_pair(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    fast = convert_hf_model(make_hf_model(request.param), tokenizer=make_word_tokenizer(), fast_generation=True)
    return fast, tl_layout(fast)


# -- bit-identical results -------------------------------------------------------------


@pytest.mark.parametrize("seed", [None, 7], ids=["greedy", "sampled"])
@pytest.mark.parametrize("steer", [False, True], ids=["unsteered", "steered"])
@pytest.mark.parametrize("prompt", [TOY_PROMPTS[1], TOY_PROMPTS], ids=["one", "left-padded-batch"])
def test_toy_generations_are_bit_identical(toy_pair, prompt, seed, steer):
    fast, reference = toy_pair
    assert torch.equal(generate(fast, prompt, seed, steer), generate(reference, prompt, seed, steer))


def test_toy_logits_are_equal(toy_pair):
    fast, reference = toy_pair
    tokens = fast.to_tokens(TOY_PROMPTS, padding_side="left")
    with torch.no_grad():
        assert torch.equal(fast(tokens), reference(tokens))
        # The unembedding alone, as sweeps call it (backends.tail.unembed).
        resid = torch.randn(5, 1, fast.cfg.d_model)
        assert torch.equal(fast(resid, start_at_layer=fast.cfg.n_layers), reference(resid, start_at_layer=4))


@pytest.mark.parametrize("seed", [None, 3], ids=["greedy", "sampled"])
@pytest.mark.parametrize("steer", [False, True], ids=["unsteered", "steered"])
def test_converted_generations_are_bit_identical(converted_pair, seed, steer):
    fast, reference = converted_pair
    assert is_fast(fast)
    for prompt in (WORD_PROMPTS[0], WORD_PROMPTS):
        assert torch.equal(generate(fast, prompt, seed, steer), generate(reference, prompt, seed, steer))


def test_converted_logits_are_equal(converted_pair):
    fast, reference = converted_pair
    tokens = fast.to_tokens(WORD_PROMPTS, padding_side="left")
    with torch.no_grad():
        assert torch.equal(fast(tokens), reference(tokens))


@pytest.mark.parametrize("flag", ["use_attn_result", "use_split_qkv_input", "use_attn_in", "use_hook_mlp_in"])
def test_other_attention_paths_stay_bit_identical(flag):
    """``use_attn_result`` sums over a W_O view whose strides set the order: W_O follows the flag."""
    fast = load_toy_model(fast_generation=True)
    reference = tl_layout(fast)
    tokens = fast.to_tokens(TOY_PROMPTS, padding_side="left")
    for value in (True, False, True):
        for model in (fast, reference):
            getattr(model, f"set_{flag}")(value)
        with torch.no_grad():
            assert torch.equal(fast(tokens), reference(tokens)), (flag, value)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_casting_keeps_the_layout_and_the_results(toy_pair, dtype):
    fast, reference = (copy.deepcopy(model).to(dtype) for model in toy_pair)
    assert is_fast(fast)
    tokens = fast.to_tokens(TOY_PROMPTS, padding_side="left")
    with torch.no_grad():
        assert torch.equal(fast(tokens), reference(tokens))
    assert torch.equal(generate(fast, TOY_PROMPTS, None, True), generate(reference, TOY_PROMPTS, None, True))


# -- what changes, what does not -------------------------------------------------------


def fresh_tl(model: Any) -> Any:
    """A HookedTransformer built by TransformerLens from ``model``'s config: the layout every parameter must keep."""
    from transformer_lens import HookedTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return HookedTransformer(copy.deepcopy(model.cfg))


@pytest.mark.parametrize("source", ["toy", "llama"])
def test_parameters_keep_transformer_lens_shapes_and_strides(source):
    """Storage as TransformerLens' own model: shapes and strides, safetensors, pickle (issue 28, item 14)."""
    from safetensors.torch import load_file, save_file

    fast = dict(fast_generation=True)
    model = (
        load_toy_model(**fast)
        if source == "toy"
        else load_model(make_hf_model("llama"), tokenizer=make_word_tokenizer(), **fast)
    )
    assert is_fast(model)
    generate(model, "the cat" if source == "llama" else TOY_PROMPTS[0], None, True)  # a generate call leaves nothing
    own = dict(fresh_tl(model).named_parameters())
    params = dict(model.named_parameters())
    assert params.keys() == own.keys()
    for name, param in params.items():
        assert (param.shape, param.stride()) == (own[name].shape, own[name].stride()), name
    assert {k: v.stride() for k, v in model.state_dict().items()} == {
        k: v.stride() for k, v in fresh_tl(model).state_dict().items()
    }
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/model.safetensors"
        save_file(model.state_dict(), path)  # raised "non contiguous tensor: blocks.0.attn.W_Q" before
        loaded = load_file(path)
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())
    restored = pickle.loads(pickle.dumps(model))
    assert {k: v.stride() for k, v in restored.named_parameters()} == {k: v.stride() for k, v in own.items()}
    # No cached copy is kept on the model: the same buffers as TransformerLens' own, nothing more.
    assert [name for name, _ in model.named_buffers()] == [name for name, _ in fresh_tl(model).named_buffers()]


def test_generate_lays_each_weight_out_once_per_call(toy_pair, monkeypatch):
    """Within one generate call every rearranged weight is made once and reused by every later token."""
    fast, _ = toy_pair
    made: list[tuple[int, int]] = []
    original = tl_speedup.laid_out

    def recording(param: torch.Tensor, permutation: tuple[int, ...]) -> torch.Tensor:
        out = original(param, permutation)
        made.append((id(param), out.data_ptr()))
        return out

    monkeypatch.setattr(tl_speedup, "laid_out", recording)
    generate(fast, TOY_PROMPTS[1], None, True)
    weights = {param for param, _ in made}
    # W_Q, W_K, W_V, W_O per block and W_U, each called once per token, always the same copy.
    assert len(weights) == 4 * fast.cfg.n_layers + 1
    assert len(made) == 12 * len(weights)
    assert all(len({ptr for param, ptr in made if param == w}) == 1 for w in weights)
    assert tl_speedup._GENERATION.get() is None  # the cache is gone with the call


def test_a_weight_edited_in_place_during_generate_is_laid_out_again(toy_pair):
    """The cache notices in-place edits (version counter) and new tensors (data_ptr) in the middle of a call."""
    fast, reference = (copy.deepcopy(model) for model in toy_pair)
    results = []
    for model in (fast, reference):
        calls = [0]

        def edit(act: torch.Tensor, hook: Any, model: Any = model, calls: list = calls) -> None:
            calls[0] += 1
            if calls[0] == 4:  # the 4th token: scale a weight in place, replace another
                model.blocks[1].attn.W_O.mul_(-4.0)
                model.unembed.W_U.data = model.unembed.W_U.data.flip(0).contiguous()

        model.add_hook("blocks.0.hook_resid_pre", edit)
        try:
            results.append(generate(model, TOY_PROMPTS[1], None, False))
        finally:
            model.reset_hooks()
    assert torch.equal(results[0], results[1])


def recorded_copies(monkeypatch: pytest.MonkeyPatch) -> dict[int, list[torch.Tensor]]:
    """Every rearranged weight ``laid_out`` hands out, by parameter (kept alive, so distinct copies stay distinct)."""
    made: dict[int, list[torch.Tensor]] = {}
    original = tl_speedup.laid_out

    def recording(param: torch.Tensor, permutation: tuple[int, ...]) -> torch.Tensor:
        out = original(param, permutation)
        made.setdefault(id(param), []).append(out)
        return out

    monkeypatch.setattr(tl_speedup, "laid_out", recording)
    return made


@pytest.mark.parametrize("run", ["sweep", "compare", "train"])
def test_steerlens_passes_lay_each_weight_out_once_per_call(toy_pair, monkeypatch, run):
    """A sweep, compare_logits or training read runs many passes; each rearranged weight is made once in the call.

    Without the backend's cache every pass would make its own copies, as TransformerLens does
    (next test); the results equal TransformerLens' own forward's.
    """
    from steerlens import compare_logits, sweep_layers, train_steering_vector

    fast, reference = toy_pair
    vec = random_vector(fast, layers=[0, 1], scale=2.0)
    calls = {
        "sweep": lambda model: sweep_layers(model, vec, TOY_PROMPTS, multipliers=(-1.0, 1.0))["kl"],
        "compare": lambda model: compare_logits(model, vec, TOY_PROMPTS, multipliers=(-1.0, 1.0))["kl"],
        "train": lambda model: train_steering_vector(
            model, None, [(p + " great", p + " awful") for p in TOY_PROMPTS], layers=[0, 1], batch_size=1
        ).layer_activations[1],
    }
    made = recorded_copies(monkeypatch)
    got = calls[run](fast)
    assert any(len(outs) > 1 for outs in made.values())  # several passes read the weights ...
    assert all(all(out is outs[0] for out in outs) for outs in made.values())  # ... one copy each
    assert tl_speedup._GENERATION.get() is None  # nothing left open after the call
    assert torch.equal(torch.as_tensor(np.asarray(got)), torch.as_tensor(np.asarray(calls[run](reference))))


def test_plain_passes_copy_each_pass_as_transformer_lens(toy_pair, monkeypatch):
    """Outside steerlens' calls and generate nothing is cached: each forward pass makes its copies."""
    fast, _ = toy_pair
    made = recorded_copies(monkeypatch)
    tokens = fast.to_tokens(TOY_PROMPTS[1])
    with torch.no_grad():
        fast(tokens)
        fast(tokens)
    assert made and all(len(outs) == 2 and outs[0] is not outs[1] for outs in made.values())


def test_the_backend_cache_sees_edits_between_calls(toy_pair):
    """One backend (one steerlens call) keeps its copies across passes, remade when a weight changes in between."""
    from steerlens.backends import backend_for

    fast, reference = (copy.deepcopy(model) for model in toy_pair)
    backend, resid = backend_for(fast), torch.randn(3, fast.cfg.d_model, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(backend.head(resid), reference(resid[:, None], start_at_layer=reference.cfg.n_layers)[:, 0])
        for model in (fast, reference):
            model.unembed.W_U.mul_(-3.0)
        assert torch.equal(backend.head(resid), reference(resid[:, None], start_at_layer=reference.cfg.n_layers)[:, 0])
    assert backend.layouts  # the copies live with the backend, not the model
    assert not [name for name, _ in fast.named_buffers() if "layout" in name]


def test_gated_mlp_and_grouped_query_weights_keep_their_strides():
    model = convert_hf_model(make_hf_model("llama"), tokenizer=make_word_tokenizer(), fast_generation=True)
    mlp, attn = model.blocks[0].mlp, model.blocks[0].attn
    assert all(w.is_contiguous() for w in (mlp.W_gate, mlp.W_in, mlp.W_out, attn._W_K, attn._W_V, attn.W_Q, attn.W_O))


def test_values_shapes_and_parameter_objects_unchanged():
    reference = tl_layout(load_toy_model())
    model = copy.deepcopy(reference)
    before = dict(model.named_parameters())
    assert fast_generation(model) is model
    after = dict(model.named_parameters())
    assert before.keys() == after.keys()
    for name, param in after.items():
        assert param is before[name]
        assert torch.equal(param, reference.get_parameter(name)) and param.shape == reference.get_parameter(name).shape


def test_safe_to_call_twice():
    model = load_toy_model()
    pointers = {name: param.data_ptr() for name, param in model.named_parameters()}
    assert fast_generation(fast_generation(model)) is model
    assert pointers == {name: param.data_ptr() for name, param in model.named_parameters()}
    assert not any(module._forward_pre_hooks for module in model.modules())


def test_refuses_models_that_are_not_hooked_transformers():
    with pytest.raises(UnsupportedModelError, match="Hugging Face model needs no such fix"):
        fast_generation(make_hf_model("gpt2"))


def test_an_unembedding_tied_to_the_embedding_stays_tied():
    model = tl_layout(load_toy_model())
    model.unembed.W_U = torch.nn.Parameter(model.embed.W_E.T)  # shares W_E's storage
    fast_generation(model)
    assert model.unembed.W_U.data_ptr() == model.embed.W_E.data_ptr() and is_fast(model)


def test_load_state_dict_then_generate(toy_pair):
    fast, reference = toy_pair
    model = copy.deepcopy(fast)
    generate(model, TOY_PROMPTS[0], None, False)
    other = load_toy_model()
    with torch.no_grad():
        for param in other.parameters():
            param.mul_(0.9)
    model.load_state_dict(other.state_dict())
    assert is_fast(model)
    assert torch.equal(generate(model, TOY_PROMPTS[0], None, True), generate(other, TOY_PROMPTS[0], None, True))


def test_trainable_after_a_call_under_inference_mode():
    """Parameters stay normal tensors, so autograd still works on the model."""
    model = tl_layout(load_toy_model())
    with torch.inference_mode():
        fast_generation(model)
    loss = model(model.to_tokens(TOY_PROMPTS[1]), return_type="loss")
    loss.backward()
    assert model.unembed.W_U.grad is not None


# -- the lean block forward ------------------------------------------------------------

# Architectures whose blocks TransformerLens runs down another path (soft caps and sandwich norms,
# ALiBi, parallel attention and MLP): the lean forward steps aside for them.
FALLBACK_ARCHITECTURES = {"Gemma2ForCausalLM", "BloomForCausalLM", "GPTNeoXForCausalLM"}
RESIDUAL_HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out")


@pytest.fixture
def lean_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The attention modules the lean forward ran, in order (it is not TransformerLens' forward)."""
    calls: list[Any] = []
    original = tl_speedup._attention

    def counting(parts: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(parts.attn)
        return original(parts, *args, **kwargs)

    monkeypatch.setattr(tl_speedup, "_attention", counting)
    return calls


def lean_expected(model: Any) -> int:
    """How many blocks of one forward pass of ``model`` run the lean forward."""
    return 0 if model.cfg.original_architecture in FALLBACK_ARCHITECTURES else model.cfg.n_layers


def test_blocks_run_the_lean_forward(converted_pair, lean_calls):
    fast, reference = converted_pair
    assert all(isinstance(block, TransformerBlock) and type(block) is not TransformerBlock for block in fast.blocks)
    assert repr(fast.blocks[0]).startswith("TransformerBlock(")  # prints as before
    with torch.no_grad():
        fast(fast.to_tokens(WORD_PROMPTS, padding_side="left"))
    assert len(lean_calls) == lean_expected(fast)
    assert lean_calls == [block.attn for block in fast.blocks][: len(lean_calls)]


@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_run_with_cache_is_unchanged(converted_pair, grad, lean_calls):
    """Every hook point fires with the same values: all of them (TransformerLens' forward), or the residual ones."""
    fast, reference = converted_pair
    tokens = fast.to_tokens(WORD_PROMPTS, padding_side="left")
    residual = lambda name: name.endswith(RESIDUAL_HOOKS)  # noqa: E731
    for names_filter in (None, residual):
        with torch.set_grad_enabled(grad):
            logits, cache = fast.run_with_cache(tokens, names_filter=names_filter)
            ref_logits, ref_cache = reference.run_with_cache(tokens, names_filter=names_filter)
        assert torch.equal(logits, ref_logits)
        assert list(cache.keys()) == list(ref_cache.keys()) and len(cache) > 0
        for name in cache.keys():
            assert torch.equal(cache[name], ref_cache[name]), name
    # With every hook point hooked, or a gradient, TransformerLens' forward ran; residual hooks alone: the lean one.
    assert len(lean_calls) == (0 if grad else lean_expected(fast))


def test_hooks_fire_as_often_as_in_transformer_lens(converted_pair):
    """A hook inside a block (here ln1's, called three times per block) sends that block down TransformerLens' path."""
    fast, reference = converted_pair
    tokens = fast.to_tokens(WORD_PROMPTS, padding_side="left")
    seen: dict[int, list[tuple[str, torch.Tensor]]] = {id(fast): [], id(reference): []}
    for model in (fast, reference):
        record = lambda act, hook, log=seen[id(model)]: log.append((hook.name, act.clone()))  # noqa: E731
        hooks = [(name, record) for name in ("blocks.0.ln1.hook_normalized", "blocks.1.hook_resid_post")]
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            model(tokens)
    fast_seen, ref_seen = seen[id(fast)], seen[id(reference)]
    assert [name for name, _ in fast_seen] == [name for name, _ in ref_seen]
    assert [name for name, _ in fast_seen].count("blocks.0.ln1.hook_normalized") == 3
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(fast_seen, ref_seen))


@pytest.mark.parametrize(
    "hook_name", ["blocks.0.attn.hook_pattern", "blocks.1.ln1.hook_normalized", "blocks.0.mlp.hook_post"]
)
def test_a_hook_that_changes_values_inside_a_block(converted_pair, hook_name, lean_calls):
    fast, reference = converted_pair
    if hook_name not in fast.hook_dict:  # a mixture of experts names its MLP hooks otherwise
        pytest.skip(f"{fast.cfg.original_architecture} has no {hook_name}")
    tokens = fast.to_tokens(WORD_PROMPTS, padding_side="left")
    halve = lambda act, hook: act * 0.5  # noqa: E731
    with torch.no_grad():
        out = [model.run_with_hooks(tokens, fwd_hooks=[(hook_name, halve)]) for model in (fast, reference)]
    assert torch.equal(*out)
    if lean_expected(fast):  # only the hooked block steps aside; the MLP's hooks need no step aside (a module call)
        steps_aside = ".mlp." not in hook_name
        assert len(lean_calls) == fast.cfg.n_layers - steps_aside
        assert (fast.blocks[int(hook_name.split(".")[1])].attn in lean_calls) != steps_aside


def test_steering_at_ln1_generates_as_transformer_lens(converted_pair):
    """A steering hook on ln1 (fired three times per block in TransformerLens) keeps every call."""
    fast, reference = converted_pair
    outs = []
    for model in (fast, reference):
        vector = random_vector(model, layers=[1], layer_type="ln1", scale=2.0)
        with vector.apply(model, multiplier=1.5):
            outs.append(model.generate(WORD_PROMPTS, max_new_tokens=6, verbose=False, do_sample=False))
    assert outs[0] == outs[1]


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode], ids=["no_grad", "inference_mode"])
def test_a_mask_changed_in_place_between_passes(converted_pair, mode):
    """Rotary ids and the causal mask are shared by a pass's blocks, never reused for another mask."""
    from transformer_lens.utilities import get_attention_mask

    fast, reference = converted_pair
    tokens = fast.to_tokens(WORD_PROMPTS, padding_side="left")
    side = fast.tokenizer.padding_side
    fast.tokenizer.padding_side = "left"
    try:
        original = get_attention_mask(fast.tokenizer, tokens, fast.cfg.default_prepend_bos)
    finally:
        fast.tokenizer.padding_side = side
    with mode():
        mask = original.clone()
        first = fast(tokens, attention_mask=mask)
        assert torch.equal(first, reference(tokens, attention_mask=mask.clone()))
        mask[:, -2] = 0  # the same tensor object, other values
        second = fast(tokens, attention_mask=mask)
        assert torch.equal(second, reference(tokens, attention_mask=mask.clone()))
        assert not torch.equal(first, second)


def test_rotary_tables_extended_on_the_way(lean_calls):
    """Past its rotary table TransformerLens extends it; the lean forward lets it, then takes over again."""
    fast = convert_hf_model(make_hf_model("llama"), tokenizer=make_word_tokenizer(), fast_generation=True)
    reference = tl_layout(fast)
    for model in (fast, reference):
        for block in model.blocks:
            block.attn.rotary_cos, block.attn.rotary_sin = block.attn.rotary_cos[:3], block.attn.rotary_sin[:3]
    tokens = fast.to_tokens(WORD_PROMPTS[2])
    with torch.no_grad():
        assert torch.equal(fast(tokens), reference(tokens))
        assert not lean_calls and fast.blocks[0].attn.rotary_cos.shape[0] >= tokens.shape[1]
        assert torch.equal(fast(tokens), reference(tokens))
    assert len(lean_calls) == fast.cfg.n_layers


# -- TransformerLens' own model in every observable way ----------------------------------
#
# ``twins``: a plain HookedTransformer from tests/helpers.py, and a second one TransformerLens builds from the same
# config and state dict, passed through fast_generation. Everything a user can look at must agree.

TWIN_CONFIGS = {
    "gpt2-like": {},  # LayerNorm, learned positions, plain attention and MLP
    "llama-like": dict(positional_embedding_type="rotary", n_key_value_heads=2, gated_mlp=True),
}
TWIN_PROMPTS = ["the cat sat on the mat", "a dog", "hello there world, how are you"]


@pytest.fixture(scope="module", params=list(TWIN_CONFIGS))
def twins(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    from transformer_lens import HookedTransformer

    plain = make_model(n_layers=3, **TWIN_CONFIGS[request.param])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        built = HookedTransformer(copy.deepcopy(plain.cfg), tokenizer=plain.tokenizer, default_padding_side="right")
    built.load_state_dict(plain.state_dict())
    fast = fast_generation(built.eval())
    assert is_fast(fast) and type(plain) is HookedTransformer
    return fast, plain


def twin_tokens(model: Any) -> torch.Tensor:
    return model.to_tokens(TWIN_PROMPTS, padding_side="left")


def test_twins_take_the_lean_path(twins, lean_calls):
    """The comparisons below are of the lean forward, not of TransformerLens' forward twice."""
    fast, plain = twins
    with torch.no_grad():
        assert torch.equal(fast(twin_tokens(fast)), plain(twin_tokens(plain)))
    assert lean_calls == [block.attn for block in fast.blocks]


def test_state_dict_and_attributes_are_transformer_lens_own(twins):
    """Keys (in order), shapes, strides, dtypes, values; buffers; and no attribute added to any module."""
    fast, plain = twins
    generate(fast, TWIN_PROMPTS, None, True)  # after a generate call (and its cache) as before
    mine, theirs = fast.state_dict(), plain.state_dict()
    assert list(mine) == list(theirs)
    for key, tensor in mine.items():
        other = theirs[key]
        assert (tensor.shape, tensor.stride(), tensor.dtype) == (other.shape, other.stride(), other.dtype), key
        assert torch.equal(tensor, other), key
    assert [name for name, _ in fast.named_buffers()] == [name for name, _ in plain.named_buffers()]
    modules, plain_modules = dict(fast.named_modules()), dict(plain.named_modules())
    assert list(modules) == list(plain_modules)
    for name, module in modules.items():
        assert isinstance(module, type(plain_modules[name])), name
        assert vars(module).keys() == vars(plain_modules[name]).keys(), name
    assert repr(fast) == repr(plain)


def test_state_dict_saves_with_safetensors_and_loads_into_plain_tl(twins, tmp_path):
    from safetensors.torch import load_file, save_file

    fast, plain = twins
    save_file(fast.state_dict(), tmp_path / "fast.safetensors")
    other = copy.deepcopy(plain)
    with torch.no_grad():
        for param in other.parameters():
            param.zero_()
    other.load_state_dict(load_file(tmp_path / "fast.safetensors"))
    with torch.no_grad():
        assert torch.equal(other(twin_tokens(other)), plain(twin_tokens(plain)))


def _torch_round_trip(model: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


COPIES = {
    "deepcopy": copy.deepcopy,
    "pickle": lambda model: pickle.loads(pickle.dumps(model)),
    "torch.save": _torch_round_trip,
}


@pytest.mark.parametrize("how", list(COPIES))
def test_copies_give_identical_logits_and_stay_fast(twins, how, lean_calls):
    fast, plain = twins
    copied = COPIES[how](fast)
    assert is_fast(copied) and type(copied.blocks[0]) is type(fast.blocks[0])
    with torch.no_grad():
        assert torch.equal(copied(twin_tokens(copied)), plain(twin_tokens(plain)))
    assert lean_calls == [block.attn for block in copied.blocks]  # the copy runs the lean forward
    assert torch.equal(generate(copied, TWIN_PROMPTS, 5, True), generate(plain, TWIN_PROMPTS, 5, True))


def test_hooks_and_run_with_cache_as_transformer_lens(twins):
    """``model.hooks`` (forward hooks reading and editing, a backward hook) and ``run_with_cache``: same values."""
    fast, plain = twins
    seen: dict[int, list[tuple[str, torch.Tensor]]] = {}
    outs = []
    for model in (fast, plain):
        log = seen.setdefault(id(model), [])
        record = lambda act, hook, log=log: log.append((hook.name, act.detach().clone()))  # noqa: E731
        fwd = [
            ("blocks.0.hook_resid_post", record),
            ("blocks.1.hook_resid_mid", lambda act, hook: act * 1.5),
            ("blocks.2.hook_mlp_out", record),
        ]
        with torch.no_grad(), model.hooks(fwd_hooks=fwd):
            logits = model(twin_tokens(model))
        with model.hooks(fwd_hooks=fwd, bwd_hooks=[("blocks.1.hook_resid_pre", record)]):
            model(twin_tokens(model), return_type="loss").backward()
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            cached_logits, cache = model.run_with_cache(twin_tokens(model))
        outs.append((logits, cached_logits, cache))
    (logits, cached, cache), (ref_logits, ref_cached, ref_cache) = outs
    assert torch.equal(logits, ref_logits) and torch.equal(cached, ref_cached)
    assert not torch.equal(logits, cached)  # the editing hook was on, then off
    fast_seen, plain_seen = seen[id(fast)], seen[id(plain)]
    assert [name for name, _ in fast_seen] == [name for name, _ in plain_seen] and len(fast_seen) == 5
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(fast_seen, plain_seen))
    assert list(cache.keys()) == list(ref_cache.keys())
    assert all(torch.equal(cache[name], ref_cache[name]) for name in cache.keys())
    assert not any(module._forward_hooks or module._backward_hooks for module in fast.modules())


@pytest.mark.parametrize("seed", [None, 11], ids=["greedy", "sampled"])
def test_generate_as_transformer_lens(twins, seed):
    fast, plain = twins
    for prompt in (TWIN_PROMPTS[0], TWIN_PROMPTS):
        for steer in (False, True):
            assert torch.equal(generate(fast, prompt, seed, steer), generate(plain, prompt, seed, steer))


def pickled_classes(model: Any) -> set[tuple[str, str]]:
    """The (module, name) of every class and function unpickling ``model`` looks up."""
    found: set[tuple[str, str]] = set()

    class Recording(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            found.add((module, name))
            return super().find_class(module, name)

    Recording(io.BytesIO(pickle.dumps(model))).load()
    return found


def test_restore_tl_forward_gives_transformer_lens_own_model(twins):
    """Every module's class and attributes as TransformerLens', and a pickle that names no steerlens code."""
    from transformer_lens import HookedTransformer

    fast, plain = twins
    restored = restore_tl_forward(copy.deepcopy(fast))
    with torch.no_grad():
        restored(twin_tokens(restored))
    assert type(restored) is HookedTransformer and type(restored).generate is HookedTransformer.generate
    modules, plain_modules = dict(restored.named_modules()), dict(plain.named_modules())
    for name, module in modules.items():
        assert type(module) is type(plain_modules[name]), name
        assert vars(module).keys() == vars(plain_modules[name]).keys(), name
    assert all(type(block).forward is TransformerBlock.forward for block in restored.blocks)
    assert pickled_classes(restored) == pickled_classes(plain)
    # Why the speed-up is opt-in (module docstring): a fast model's pickle needs steerlens to load.
    assert {module for module, _ in pickled_classes(fast) - pickled_classes(plain)} == {"steerlens.tl_speedup"}
    assert is_fast(fast)  # the original is untouched


def test_restore_tl_forward_undoes_the_lean_blocks():
    model = load_toy_model(fast_generation=True)
    assert restore_tl_forward(model) is model
    assert all(type(block) is TransformerBlock for block in model.blocks) and not is_fast(model)
    assert is_fast(fast_generation(model))


# -- every loading route ---------------------------------------------------------------


def test_load_model_routes_are_plain_unless_asked(tmp_path, monkeypatch):
    """The speed-up is opt-in: every route returns TransformerLens' own classes, ``fast_generation=True`` the lean ones."""
    from transformer_lens import HookedTransformer

    from steerlens.adapter import load as load_module

    hf = make_hf_model("gpt2")
    hf.save_pretrained(tmp_path)
    make_word_tokenizer().save_pretrained(tmp_path)
    routes = {
        "toy": lambda **kw: load_model("toy", **kw),
        "hf model": lambda **kw: load_model(hf, tokenizer=make_word_tokenizer(), **kw),
        "convert": lambda **kw: convert_hf_model(hf, tokenizer=make_word_tokenizer(), **kw),
        "folder": lambda **kw: load_model(tmp_path, **kw),
        "toy loader": lambda **kw: load_toy_model(**kw),
    }
    for name, route in routes.items():
        plain = route()
        assert type(plain) is HookedTransformer and not is_fast(plain), name
        assert all(type(block) is TransformerBlock for block in plain.blocks), name
        assert is_fast(route(fast_generation=True)), name

    # TransformerLens' own official models: stand in for the download with a toy model in TL's layout.
    plain = tl_layout(load_toy_model())
    monkeypatch.setattr(HookedTransformer, "from_pretrained_no_processing", lambda *a, **k: plain)
    monkeypatch.setattr(load_module, "hub_offline", lambda: False)
    assert load_module._load_tl_official("gpt2", None, None, None, False) is plain
    assert not is_fast(plain)
