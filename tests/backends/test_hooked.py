"""The HookedTransformer backend: reads against run_with_cache, the sweep's resumed cells against a hand-written
hook, hooks added and removed by identity (also after ``model.reset_hooks()``)."""

from __future__ import annotations

import pytest
import torch
from helpers import make_model
from torch.utils.hooks import RemovableHandle

from steerlens import SteeringVector
from steerlens.backends import backend_for, steering_hooks_on
from steerlens.backends.hooked import HookedBackend
from steerlens.errors import ModelMismatchError, PromptTooLongError
from steerlens.hooks import make_spec
from steerlens.tokens import iter_batches


def test_patch_handle_model_hooks_are_the_torch_hooks_on_a_hooked_transformer(model):

    vec = SteeringVector({1: torch.ones(model.cfg.d_model), 2: torch.ones(model.cfg.d_model)})
    tokens = model.to_tokens("I love it")
    with torch.no_grad():
        clean = model(tokens)
    handle = vec.patch_activations(model, multiplier=1.5)
    assert all(isinstance(h, RemovableHandle) for h in handle.model_hooks)
    installed = {
        k
        for name in ("blocks.1.hook_resid_post", "blocks.2.hook_resid_post")
        for k in model.hook_dict[name]._forward_hooks
    }
    assert installed and installed <= {h.id for h in handle.model_hooks}
    for hook in handle.model_hooks:  # steering-vectors' way to undo a patch by hand
        hook.remove()
    with torch.no_grad():
        assert torch.equal(model(tokens), clean)
    assert steering_hooks_on(model) == [] and not any(p.fwd_hooks for p in model.hook_dict.values())
    handle.remove()  # still safe afterwards


def test_reset_hooks_after_patch_leaves_nothing_behind(model):
    """The TransformerLens idiom: patch, then model.reset_hooks(); no block pre-hook may pile up."""
    from steerlens.backends import steering_hooks_on

    tokens = model.to_tokens("I love it")
    vec = SteeringVector({1: torch.ones(model.cfg.d_model), 2: torch.ones(model.cfg.d_model)})
    with torch.no_grad():
        clean = model(tokens)
        for _ in range(3):
            vec.patch_activations(model, multiplier=2.0)
            assert not torch.equal(model(tokens), clean)
            model.reset_hooks()
            assert steering_hooks_on(model) == []
        assert torch.equal(model(tokens), clean)
    assert all(len(block._forward_pre_hooks) == 0 for block in model.blocks)


PROMPTS = ["the cat sat on the mat", "a dog", "happy red blue and the cat ran fast"]


def batches(model, prompts, side="left", size=3):
    encoded = [model.to_tokens(p)[0].tolist() for p in prompts]
    return encoded, list(iter_batches(encoded, size, model.tokenizer.pad_token_id, side, "cpu"))


@pytest.mark.parametrize("side", ["left", "right"])
def test_read_of_a_padded_batch_equals_each_prompts_own_run(model, side):
    backend = HookedBackend(model, model.tokenizer)
    encoded, (batch,) = batches(model, PROMPTS, side)
    sites = [(0, "resid_post"), (2, "mlp_out"), (1, "resid_pre")]
    acts = backend.read(batch, sites)
    for row, index in enumerate(batch.indices):
        ids = torch.tensor([encoded[index]])
        _, cache = model.run_with_cache(ids)
        cols = [batch.column(row, i) for i in range(len(encoded[index]))]
        for layer, layer_type in sites:
            name = f"blocks.{layer}.hook_{layer_type}"
            torch.testing.assert_close(acts[(layer, layer_type)][row, cols], cache[name][0], atol=1e-5, rtol=0)


def test_continuations_of_a_prefix_run_once_equal_the_whole_texts(model):
    backend = HookedBackend(model, model.tokenizer)
    prefix = model.to_tokens("the cat sat on")  # with BOS
    rests = [model.to_tokens(t, prepend_bos=False)[0].tolist() for t in ("the mat", "a big red dog and")]
    batch = next(iter_batches(rests, 2, model.tokenizer.pad_token_id, "right", "cpu"))
    (acts,) = backend.read_continuations(prefix.repeat(2, 1), [batch], [(1, "resid_post")])
    for row, rest in enumerate(rests):
        _, cache = model.run_with_cache(torch.cat([prefix[0], torch.tensor(rest)])[None])
        whole = cache["blocks.1.hook_resid_post"][0, prefix.shape[1] :]
        torch.testing.assert_close(acts[(1, "resid_post")][row, : len(rest)], whole, atol=1e-5, rtol=0)


@pytest.mark.parametrize("layer_type", ["resid_post", "resid_pre", "mlp_out"])
def test_a_sweep_cell_resumed_from_the_cache_equals_a_hand_hooked_full_run(model, layer_type):
    backend = HookedBackend(model, model.tokenizer)
    encoded, (batch,) = batches(model, PROMPTS, "left")
    vec = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    sweep = backend.sweep_pass(batch, [1], layer_type)
    assert sweep.fast is (layer_type != "mlp_out")  # the other layer types run the whole model, steered
    specs = [make_spec({1: vec}, layer_type, m, None, 0, None) for m in (0.0, 2.0, -1.0)]
    clean_cell, *cells = sweep.steered(1, specs)
    if sweep.fast:
        assert clean_cell is None  # multiplier 0 leaves the activation unchanged: the clean pass is that cell
    else:
        torch.testing.assert_close(clean_cell, sweep.clean, atol=1e-5, rtol=0)
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    for row, index in enumerate(batch.indices):
        ids = torch.tensor([encoded[index]])
        _, cache = model.run_with_cache(ids, names_filter=last)
        torch.testing.assert_close(sweep.clean[row], cache[last][0, -1], atol=1e-5, rtol=0)
        for m, cell in zip((2.0, -1.0), cells):
            hooks = [(f"blocks.1.hook_{layer_type}", lambda act, hook, m=m: act + m * vec)]
            with model.hooks(fwd_hooks=hooks):
                _, steered = model.run_with_cache(ids, names_filter=last)
            torch.testing.assert_close(cell[row], steered[last][0, -1], atol=1e-4, rtol=0)
    assert steering_hooks_on(model) == []


def test_vectors_that_do_not_fit_the_model_are_refused(model):
    backend = HookedBackend(model, model.tokenizer)
    with pytest.raises(ModelMismatchError, match="d_model 7 but the model has 32"):
        backend.check_vector({1: torch.ones(7)}, "resid_post")
    with pytest.raises(ModelMismatchError, match="layer 4 but the model has only 4 layers"):
        backend.check_vector({4: torch.ones(32)}, "resid_post")
    parallel = HookedBackend(make_model(n_layers=1, parallel_attn_mlp=True), model.tokenizer)
    with pytest.raises(ModelMismatchError, match="no hook point 'blocks.0.hook_resid_mid'"):
        parallel.check_sites([(0, "resid_mid")])
    with pytest.raises(ModelMismatchError, match="cannot be steered at layer_type 'resid_mid'"):
        parallel.check_vector({0: torch.ones(32)}, "resid_mid")


def test_generation_past_the_context_is_refused_before_generating(model):
    backend = HookedBackend(model, model.tokenizer)
    used, n_ctx = model.to_tokens("the cat sat").shape[1], model.cfg.n_ctx
    assert backend.context_length == n_ctx
    with pytest.raises(PromptTooLongError, match=f"takes {used} of the model's {n_ctx}-token context; use max_new"):
        backend.generate("the cat sat", n_ctx - used + 1, seed=None)
    assert isinstance(backend.generate("the cat sat", n_ctx - used, seed=None), str)


def test_facts_read_from_the_model(model):
    backend = backend_for(model)
    assert isinstance(backend, HookedBackend)
    assert (backend.n_layers, backend.d_model) == (model.cfg.n_layers, model.cfg.d_model)
    assert backend.token_embedding is not None and torch.equal(backend.token_embedding, model.W_E)
    converted = make_model(n_layers=1, original_architecture="LlamaForCausalLM")
    assert backend_for(converted).architecture == "llama" and backend.architecture is None
