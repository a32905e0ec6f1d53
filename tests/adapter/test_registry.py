"""The architecture registry: one spec per HF model type, and the variants TransformerLens cannot represent."""

from __future__ import annotations

import pytest
import transformers as tf
from tiny_hf import CONFIGS, GATED, N_LAYERS, SIZES, make_hf_model

from steerlens.adapter import ARCHITECTURES, arch_spec, supported_architectures
from steerlens.adapter.registry import check_convertible
from steerlens.errors import UnsupportedModelError


def test_arch_spec_and_supported_architectures() -> None:
    llama = make_hf_model("llama")
    assert arch_spec(llama).causal_lm == "LlamaForCausalLM"
    assert set(supported_architectures()) == {spec.causal_lm for spec in ARCHITECTURES.values()}


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_each_spec_names_the_class_transformers_itself_maps_its_model_type_to(model_type: str) -> None:
    spec = ARCHITECTURES[model_type]
    assert spec.model_type == model_type
    assert tf.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type] == spec.causal_lm
    assert spec.normalization in ("LN", "RMS") and spec.positions in ("rotary", "standard", "alibi")


def test_a_tiny_config_of_every_supported_family_is_convertible() -> None:
    checked = 0
    for name, make_config in CONFIGS.items():
        config = make_config()
        if config.model_type in ARCHITECTURES:
            assert check_convertible(config) is ARCHITECTURES[config.model_type], name
            checked += 1
    assert checked >= 10


@pytest.mark.parametrize(
    "config, reason",
    [
        (lambda: tf.OPTConfig(do_layer_norm_before=False, ffn_dim=64, word_embed_proj_dim=32, **SIZES), "post-layer"),
        (lambda: tf.GPT2Config(n_layer=N_LAYERS, n_embd=32, n_head=4, add_cross_attention=True), "cross-attention"),
        (lambda: tf.BloomConfig(n_layer=N_LAYERS, hidden_size=48, n_head=12), "12 heads"),
        (lambda: tf.OlmoConfig(num_key_value_heads=2, **GATED), "grouped-query"),
        (lambda: tf.PhiConfig(qk_layernorm=True, **GATED), "qk_layernorm"),
    ],
)
def test_a_variant_the_converter_cannot_represent_is_refused_with_the_reason(config, reason) -> None:
    config = config()
    assert arch_spec(config).model_type == config.model_type  # the family is known...
    with pytest.raises(UnsupportedModelError, match=reason) as error:  # ...this variant is not
        check_convertible(config)
    assert "Supported architectures:" in str(error.value)


def test_an_unknown_architecture_lists_every_supported_one() -> None:
    with pytest.raises(UnsupportedModelError, match="'FalconForCausalLM'|'falcon'") as error:
        arch_spec(CONFIGS["falcon"]())
    for causal_lm in supported_architectures():
        assert causal_lm in str(error.value)
    with pytest.raises(UnsupportedModelError):
        arch_spec(object())
