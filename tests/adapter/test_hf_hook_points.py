"""TransformerLens hook points on a Hugging Face model or config: which module carries which tensor."""

from __future__ import annotations

import pytest
import torch
from tiny_hf import CONFIGS, INPUT_IDS, N_LAYERS, make_hf_model

from steerlens.adapter import describe_architecture, hf_module, hf_site
from steerlens.adapter.hf_hook_points import hf_module_path
from steerlens.errors import LayerError


def test_name_mapping_api() -> None:
    llama = make_hf_model("llama")
    assert hf_module(llama, 0, "resid_post") is llama.model.layers[0]
    assert hf_module(llama, -1, "attn_out") is llama.model.layers[1].self_attn
    assert hf_site(llama, 1, "resid_mid").steerable is False
    assert hf_site(llama, 0, "resid_pre").io == "input"
    gemma2 = CONFIGS["gemma2"]()
    assert hf_site(gemma2, 1, "mlp_out").path == "model.layers.1.post_feedforward_layernorm"
    assert hf_site(CONFIGS["opt"](), 0, "mlp_out").path == "model.decoder.layers.0.fc2"
    with pytest.raises(LayerError, match="parallel"):
        hf_site(CONFIGS["neox"](), 0, "resid_mid")
    with pytest.raises(LayerError, match="out of range"):
        hf_site(llama, N_LAYERS, "resid_post")
    with pytest.raises(LayerError, match="unknown layer_type"):
        hf_site(llama, 0, "attn_in")
    assert "transformer.h.{L}.attn" in describe_architecture(CONFIGS["gpt2"]())


def test_a_config_and_its_model_name_the_same_module_and_that_module_carries_the_hidden_state():
    gpt2 = make_hf_model("gpt2")
    for layer, layer_type in ((0, "attn_out"), (1, "mlp_out"), (-1, "resid_post")):
        assert hf_module_path(CONFIGS["gpt2"](), layer, layer_type) == hf_module_path(gpt2, layer, layer_type)
    assert hf_module_path(gpt2, 0, "attn_out") == "transformer.h.0.attn"
    seen = []
    handle = hf_module(gpt2, 0, "resid_post").register_forward_hook(
        lambda m, a, out: seen.append(out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad():
        hidden = gpt2(INPUT_IDS, output_hidden_states=True).hidden_states
    handle.remove()
    torch.testing.assert_close(seen[0], hidden[1], atol=0, rtol=0)
