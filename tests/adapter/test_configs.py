"""Parity of the converters added for the wider set of TransformerLens 3.9 architectures.

Each architecture's tiny random checkpoint (``tiny_hf``) is saved to a temporary folder
and loaded offline with ``load_model``; the TransformerLens model must reproduce the HF
model's log-probs and residual stream, with and without weight processing. The
registry's HF module paths are checked against TL's hooks with plain torch hooks, and
variants TransformerLens cannot represent must be refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers as tf
from helpers import hf_site_activations
from tiny_hf import CONFIGS, GATED, INPUT_IDS, N_LAYERS, SPECIAL, save_checkpoint

from steerlens import load_model
from steerlens.adapter import convert_hf_model, supported_architectures
from steerlens.backends.hf_layout import hf_layout
from steerlens.errors import LayerError, UnsupportedModelError
from steerlens.layers import hook_name

ATOL = 1e-4

# tiny_hf name -> (config.model_type, HF causal-LM class).
NEW_ARCHITECTURES = {
    "qwen3": ("qwen3", "Qwen3ForCausalLM"),
    "gemma3": ("gemma3_text", "Gemma3ForCausalLM"),
    "olmo": ("olmo", "OlmoForCausalLM"),
    "olmo2": ("olmo2", "Olmo2ForCausalLM"),
    "olmo3": ("olmo3", "Olmo3ForCausalLM"),
    "olmoe": ("olmoe", "OlmoeForCausalLM"),
    "mixtral": ("mixtral", "MixtralForCausalLM"),
    "gptj": ("gptj", "GPTJForCausalLM"),
    "gpt_neo": ("gpt_neo", "GPTNeoForCausalLM"),
    "bloom": ("bloom", "BloomForCausalLM"),
    "phi": ("phi", "PhiForCausalLM"),
    "gpt_bigcode": ("gpt_bigcode", "GPTBigCodeForCausalLM"),
    "apertus": ("apertus", "ApertusForCausalLM"),
}

MIXED_LAYERS = ["sliding_attention", "full_attention"]
YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 16}

# Variants the tiny defaults do not reach: per-layer-type RoPE (global and local layers
# both present), YaRN, sliding windows, QKV clipping, partial GPT-J rotary.
VARIANTS: dict[str, Callable[[], Any]] = {
    "gemma3_mixed_linear": lambda: tf.Gemma3TextConfig(
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=4,
        query_pre_attn_scalar=16,
        layer_types=MIXED_LAYERS,
        final_logit_softcapping=3.0,
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        },
        **GATED,
    ),
    "olmo3_mixed_yarn": lambda: tf.Olmo3Config(
        num_key_value_heads=2,
        sliding_window=4,
        layer_types=MIXED_LAYERS,
        rope_parameters={
            "full_attention": dict(YARN, rope_theta=5e5, attention_factor=1.3),
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
        },
        **GATED,
    ),
    "qwen3_yarn_sliding": lambda: tf.Qwen3Config(
        num_key_value_heads=4,
        head_dim=16,
        rope_parameters=YARN,
        use_sliding_window=True,
        sliding_window=4,
        max_window_layers=1,
        **GATED,
    ),
    "olmoe_clip_renormalised": lambda: tf.OlmoeConfig(
        num_experts=4, num_experts_per_tok=2, clip_qkv=0.3, norm_topk_prob=True, num_key_value_heads=2, **GATED
    ),
    "gptj_partial_rotary": lambda: tf.GPTJConfig(
        n_layer=N_LAYERS, n_embd=32, n_head=4, rotary_dim=6, n_inner=48, vocab_size=64, n_positions=64, **SPECIAL
    ),
}

# Variants TransformerLens cannot represent exactly -> (config, expected message part).
REFUSED: dict[str, tuple[Callable[[], Any], str]] = {
    "olmo_gqa": (lambda: tf.OlmoConfig(num_key_value_heads=2, **GATED), "grouped-query"),
    "olmo2_bias": (lambda: tf.Olmo2Config(attention_bias=True, **GATED), "attention_bias"),
    "phi_qk_layernorm": (lambda: tf.PhiConfig(qk_layernorm=True, **GATED), "qk_layernorm"),
    "bloom_12_heads": (
        lambda: tf.BloomConfig(n_layer=N_LAYERS, hidden_size=48, n_head=12, vocab_size=64),
        "power of two",
    ),
    "bigcode_multi_head": (
        lambda: tf.GPTBigCodeConfig(n_layer=N_LAYERS, n_embd=32, n_head=4, vocab_size=64, multi_query=False),
        "multi_query",
    ),
    "gemma3_bidirectional": (
        lambda: tf.Gemma3TextConfig(
            num_key_value_heads=2, head_dim=8, sliding_window=4, use_bidirectional_attention=True, **GATED
        ),
        "bidirectional",
    ),
    "qwen3_dynamic_rope": (
        lambda: tf.Qwen3Config(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}, **GATED),
        "dynamic",
    ),
    "gemma3_llama3_global_rope": (
        lambda: tf.Gemma3TextConfig(
            num_key_value_heads=2,
            head_dim=8,
            sliding_window=4,
            layer_types=MIXED_LAYERS,
            rope_parameters={
                "full_attention": {
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "rope_theta": 1e6,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 8,
                },
                "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
            },
            **GATED,
        ),
        "llama3",
    ),
}


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach the hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], tuple]]:
    """name -> (saved folder, the HF model it was saved from), built once per name."""
    saved: dict[str, tuple[Path, Any]] = {}
    factories = {**CONFIGS, **VARIANTS}

    def get(name: str) -> tuple[Path, Any]:
        if name not in saved:
            folder = tmp_path_factory.mktemp(name)
            with pytest.MonkeyPatch.context() as patch:
                patch.setitem(CONFIGS, name, factories[name])
                saved[name] = (folder, save_checkpoint(name, folder))
        return saved[name]

    yield get


def hf_log_probs(hf_model: Any) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    with torch.no_grad():
        out = hf_model(INPUT_IDS, output_hidden_states=True)
    return out.logits.log_softmax(-1), out.hidden_states


def assert_matches_hf(model: Any, hf_model: Any) -> None:
    """Log-probs and every non-final ``resid_post`` agree with HF to ``ATOL``."""
    expected, hidden_states = hf_log_probs(hf_model)
    with torch.no_grad():
        logits, cache = model.run_with_cache(INPUT_IDS)
    diff = (logits.log_softmax(-1) - expected).abs().max().item()
    assert diff <= ATOL, f"max |d log-prob| = {diff:.2e}"
    # HF's last hidden state comes after the final norm, so it is not resid_post.
    for layer in range(N_LAYERS - 1):
        resid = cache[f"blocks.{layer}.hook_resid_post"]
        assert (resid - hidden_states[layer + 1]).abs().max() <= ATOL, layer


@pytest.mark.parametrize("name", list(NEW_ARCHITECTURES))
def test_folder_load_matches_hf(name: str, checkpoint: Callable) -> None:
    folder, hf_model = checkpoint(name)
    model_type, causal_lm = NEW_ARCHITECTURES[name]
    assert hf_model.config.model_type == model_type and type(hf_model).__name__ == causal_lm
    model = load_model(folder, device="cpu")
    assert model.cfg.original_architecture == causal_lm
    assert_matches_hf(model, hf_model)


@pytest.mark.parametrize("name", list(NEW_ARCHITECTURES))
def test_processed_weights_keep_log_probs(name: str, checkpoint: Callable) -> None:
    folder, hf_model = checkpoint(name)
    model = load_model(folder, device="cpu", process_weights=True)
    expected, _ = hf_log_probs(hf_model)
    with torch.no_grad():
        # Centring the unembedding shifts each position's logits by a constant.
        diff = (model(INPUT_IDS).log_softmax(-1) - expected).abs().max().item()
    assert diff <= ATOL, f"max |d log-prob| = {diff:.2e}"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_config_variants_match_hf(name: str, checkpoint: Callable) -> None:
    folder, hf_model = checkpoint(name)
    model = load_model(folder, device="cpu")
    assert_matches_hf(model, hf_model)
    if "mixed" in name:
        assert model.cfg.attn_types == ["local", "global"]
        assert model.cfg.rotary_base_local == 1e4


@pytest.mark.parametrize("name", list(NEW_ARCHITECTURES))
def test_native_hf_sites_carry_the_tl_hooks(name: str, checkpoint: Callable) -> None:
    """Every site steerlens reads natively on the HF model equals the converted model's TL hook."""
    _, hf_model = checkpoint(name)
    model = convert_hf_model(hf_model)  # the in-memory path, no folder
    layout = hf_layout(hf_model)
    sites = []
    for layer in range(layout.n_layers):
        # ln1/ln2 are left out: TL's hook_normalized comes before the norm's gain, HF's norm output after it.
        for layer_type in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out"):
            try:
                layout.site(layer, layer_type)
            except LayerError:
                continue
            sites.append((layer, layer_type))
    with torch.no_grad(), hf_site_activations(hf_model, sites) as seen:
        hf_model(INPUT_IDS)
        _, cache = model.run_with_cache(INPUT_IDS)
    kinds = {layer_type for _, layer_type in sites}
    assert {"resid_pre", "resid_post"} <= kinds
    if name != "bloom":  # BLOOM's sublayers add the residual themselves (see hf_layout)
        assert {"attn_out", "mlp_out"} <= kinds
    for layer, layer_type in sites:
        key = hook_name(layer, layer_type)
        value = seen[(layer, layer_type)]
        assert (cache[key] - value.reshape(cache[key].shape)).abs().max() <= ATOL, key


@pytest.mark.parametrize("name", list(REFUSED))
def test_unrepresentable_variants_are_refused(name: str) -> None:
    make_config, message = REFUSED[name]
    hf_model = tf.AutoModelForCausalLM.from_config(make_config())
    with pytest.raises(UnsupportedModelError, match=message):
        load_model(hf_model)


@pytest.mark.parametrize("name", ["falcon", "cohere"])
def test_unsupported_architecture_lists_supported(name: str, tmp_path: Path) -> None:
    CONFIGS[name]().save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError) as error:
        load_model(tmp_path, device="cpu")
    message = str(error.value)
    assert repr(name) in message
    for causal_lm in supported_architectures():
        assert causal_lm in message
    for _, causal_lm in NEW_ARCHITECTURES.values():
        assert causal_lm in message
