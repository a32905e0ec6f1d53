"""Per-component outputs of one pass at each row's last real token, on a HookedTransformer (against
run_with_cache and hand hooks) and on a Hugging Face model (against hand-written torch hooks)."""

from __future__ import annotations

import pytest
import torch
from helpers import make_model
from tiny_hf import make_hf_model, make_tokenizer

from steerlens.backends import backend_for
from steerlens.backends.components import HFComponents, HookedComponents, NormForm, Patch, component_reader
from steerlens.errors import UnsupportedModelError
from steerlens.hooks import make_spec
from steerlens.tokens import iter_batches

IDS = [[0, 12, 30, 44, 51, 7], [0, 60, 9, 33], [0, 5, 5, 70, 81, 90, 14, 3]]
HF_IDS = [[1, 5, 9, 12, 4, 20, 7], [1, 8, 8, 3], [1, 40, 41, 6, 9, 10]]


@pytest.fixture(scope="module")
def tiny():
    return make_model(n_layers=3, seed=3)


@pytest.fixture(scope="module")
def llama():
    return make_hf_model("llama"), make_tokenizer()


def batch_of(ids, pad_id=0):
    return next(iter_batches(ids, len(ids), pad_id, "left", "cpu"))


def test_the_reader_follows_the_model_kind(tiny, llama):
    assert isinstance(component_reader(backend_for(tiny)), HookedComponents)
    assert isinstance(component_reader(backend_for(*llama)), HFComponents)
    with pytest.raises(UnsupportedModelError, match="layer_config"):
        component_reader(backend_for(llama[0], llama[1], layer_config={"decoder_block": "model.layers.{num}"}))


def test_hooked_components_are_run_with_cache_at_each_prompts_last_token(tiny):
    reader = component_reader(backend_for(tiny))
    batch = batch_of(IDS)
    run = reader.run(batch, None, [0, 2])
    n = tiny.cfg.n_layers
    for row, index in enumerate(batch.indices):
        logits, cache = tiny.run_with_cache(torch.tensor([IDS[index]]))
        for layer in (0, 2):
            torch.testing.assert_close(
                run.attn[layer][row], cache[f"blocks.{layer}.hook_attn_out"][0, -1], atol=1e-5, rtol=0
            )
            torch.testing.assert_close(
                run.mlp[layer][row], cache[f"blocks.{layer}.hook_mlp_out"][0, -1], atol=1e-5, rtol=0
            )
            z = cache[f"blocks.{layer}.attn.hook_z"][0, -1]  # [heads, d_head]
            torch.testing.assert_close(run.z[layer][row], z, atol=1e-5, rtol=0)
            heads = torch.einsum("hd,hdm->m", z, reader.head_weights(layer)) + tiny.blocks[layer].attn.b_O
            torch.testing.assert_close(heads, run.attn[layer][row], atol=1e-4, rtol=0)
        torch.testing.assert_close(run.resid[row], cache[f"blocks.{n - 1}.hook_resid_post"][0, -1], atol=1e-5, rtol=0)
        torch.testing.assert_close(run.scale[row], cache["ln_final.hook_scale"][0, -1, 0], atol=1e-5, rtol=0)
        torch.testing.assert_close(run.normed[row], cache["ln_final.hook_normalized"][0, -1], atol=1e-5, rtol=0)
        torch.testing.assert_close(run.logits[row], logits[0, -1], atol=1e-4, rtol=0)


def test_a_patched_mlp_output_equals_a_hand_hook_and_a_resumed_pass_the_full_one(tiny):
    reader = component_reader(backend_for(tiny))
    batch = batch_of(IDS)
    value = torch.randn(len(IDS), tiny.cfg.d_model, generator=torch.Generator().manual_seed(1))
    spec = make_spec(
        {1: torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(2))}, "resid_post", 2.0, None, 0, None
    )
    patched = reader.run(batch, spec, [2], patch=Patch("mlp", 1, None, value), keep=(2,))
    for row, index in enumerate(batch.indices):
        ids = torch.tensor([IDS[index]])

        def replace(act, hook, row=row):
            act = act.clone()
            act[0, -1] = value[row]
            return act

        def steer(act, hook):
            return act + 2.0 * spec.vectors[1]

        with tiny.hooks(fwd_hooks=[("blocks.1.hook_mlp_out", replace), ("blocks.1.hook_resid_post", steer)]):
            expected = tiny(ids)[0, -1]
        torch.testing.assert_close(patched.logits[row], expected, atol=1e-4, rtol=0)
    # Layers 0-1 are the same in a pass that only differs after them: resuming at 2 gives the full pass.
    full = reader.run(batch, spec, [2], patch=Patch("mlp", 1, None, value))
    resumed = reader.run(batch, spec, [2], resume=(2, patched))
    torch.testing.assert_close(resumed.logits, full.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(resumed.mlp[2], full.mlp[2], atol=1e-5, rtol=0)


def test_hf_components_are_the_modules_outputs_at_each_prompts_last_token(llama):
    model, tokenizer = llama
    reader = component_reader(backend_for(model, tokenizer))
    batch = batch_of(HF_IDS)
    run = reader.run(batch, None, [0, 1])
    assert reader.heads_note == ""
    for row, index in enumerate(batch.indices):
        seen, handles = {}, []
        for layer in (0, 1):
            block = model.model.layers[layer]
            handles.append(
                block.self_attn.register_forward_hook(
                    lambda m, a, out, at=layer: seen.__setitem__(("attn", at), out[0])
                )
            )
            handles.append(
                block.mlp.register_forward_hook(lambda m, a, out, at=layer: seen.__setitem__(("mlp", at), out))
            )
        handles.append(model.model.norm.register_forward_pre_hook(lambda m, a: seen.__setitem__("resid", a[0])))
        with torch.no_grad():
            logits = model(torch.tensor([HF_IDS[index]])).logits
        for handle in handles:
            handle.remove()
        for layer in (0, 1):
            torch.testing.assert_close(run.attn[layer][row], seen[("attn", layer)][0, -1], atol=1e-5, rtol=0)
            torch.testing.assert_close(run.mlp[layer][row], seen[("mlp", layer)][0, -1], atol=1e-5, rtol=0)
            heads = torch.einsum("hd,hdm->m", run.z[layer][row], reader.head_weights(layer))
            torch.testing.assert_close(heads, run.attn[layer][row], atol=1e-4, rtol=0)  # o_proj has no bias
        torch.testing.assert_close(run.resid[row], seen["resid"][0, -1], atol=1e-5, rtol=0)
        torch.testing.assert_close(run.logits[row], logits[0, -1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["hooked", "hf"])
def test_the_readout_is_the_derivative_of_the_logits_at_the_frozen_scale(kind, tiny, llama):
    backend = backend_for(tiny) if kind == "hooked" else backend_for(*llama)
    reader = component_reader(backend)
    run = reader.run(batch_of(IDS if kind == "hooked" else HF_IDS), None, [0])
    grad = torch.randn(run.logits.shape, generator=torch.Generator().manual_seed(4))
    direction = reader.readout(run, grad)
    step = 1e-2 * torch.randn(run.resid.shape, generator=torch.Generator().manual_seed(5))
    moved = reader.head(run.resid + step, run, scale=run.scale) - reader.head(run.resid, run, scale=run.scale)
    # With the scale frozen the map resid -> logits is linear, so the first-order change is exact.
    torch.testing.assert_close((moved * grad).sum(-1), (direction * step).sum(-1), atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(reader.head(run.resid, run), run.logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("make", [lambda d: torch.nn.LayerNorm(d), lambda d: torch.nn.RMSNorm(d, eps=1e-6)])
def test_the_probed_norm_form_reproduces_the_norm(make):
    torch.manual_seed(0)
    d = 16
    norm = make(d)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(d))
        if getattr(norm, "bias", None) is not None:
            norm.bias.copy_(torch.randn(d))
    form = NormForm.probe(norm, d, norm.weight)
    assert form.centred is isinstance(norm, torch.nn.LayerNorm)
    x = 3 * torch.randn(5, d) + 1.0
    with torch.no_grad():
        y = norm(x)
    torch.testing.assert_close(form.apply(x, form.scale(x, y)), y, atol=1e-4, rtol=1e-4)
