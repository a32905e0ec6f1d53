"""Tiny random Hugging Face causal LMs, one per architecture, built offline from configs.

Shared by the adapter (conversion parity) and backend (native steering) tests. Every
model has 2 layers, d_model 32, 4 heads and a 64-token vocabulary; ``make_hf_model``
moves every weight well away from its init value so parity checks cannot pass by
accident (norm gains stay near 1).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers as tf
from tokenizers import Tokenizer, models, pre_tokenizers

VOCAB = 64
N_LAYERS = 2
SPECIAL = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
SIZES = dict(
    num_hidden_layers=N_LAYERS,
    hidden_size=32,
    num_attention_heads=4,
    vocab_size=VOCAB,
    max_position_embeddings=64,
    **SPECIAL,
)
GATED = dict(SIZES, intermediate_size=64)
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8,
}
MOE = dict(num_local_experts=4, num_experts_per_tok=2)

CONFIGS: dict[str, Callable[[], Any]] = {
    # Architectures steerlens also converts to HookedTransformers (before issue 10).
    "gpt2": lambda: tf.GPT2Config(n_layer=N_LAYERS, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=64, **SPECIAL),
    "neox": lambda: tf.GPTNeoXConfig(**GATED),
    "neox_sequential": lambda: tf.GPTNeoXConfig(use_parallel_residual=False, **GATED),
    "llama": lambda: tf.LlamaConfig(num_key_value_heads=2, rope_parameters=LLAMA3_ROPE, **GATED),
    "mistral": lambda: tf.MistralConfig(num_key_value_heads=2, sliding_window=4, **GATED),
    "qwen2": lambda: tf.Qwen2Config(
        num_key_value_heads=2, use_sliding_window=True, sliding_window=4, max_window_layers=1, **GATED
    ),
    "gemma": lambda: tf.GemmaConfig(num_key_value_heads=1, head_dim=8, **GATED),
    "gemma2": lambda: tf.Gemma2Config(
        num_key_value_heads=2, head_dim=8, sliding_window=4, query_pre_attn_scalar=16, **GATED
    ),
    "phi3": lambda: tf.Phi3Config(num_key_value_heads=4, **GATED),
    "opt": lambda: tf.OPTConfig(ffn_dim=64, word_embed_proj_dim=32, **SIZES),
    # The architectures named in issue 10.
    "qwen3": lambda: tf.Qwen3Config(num_key_value_heads=2, head_dim=8, **GATED),
    "qwen3_moe": lambda: tf.Qwen3MoeConfig(
        num_key_value_heads=2,
        head_dim=8,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        decoder_sparse_step=1,
        **GATED,
    ),
    "gemma3": lambda: tf.Gemma3TextConfig(
        num_key_value_heads=2, head_dim=8, sliding_window=4, query_pre_attn_scalar=16, **GATED
    ),
    "olmo": lambda: tf.OlmoConfig(**GATED),
    "olmo2": lambda: tf.Olmo2Config(**GATED),
    "mixtral": lambda: tf.MixtralConfig(num_key_value_heads=2, **MOE, **GATED),
    "phi": lambda: tf.PhiConfig(partial_rotary_factor=0.5, **GATED),
    "gptj": lambda: tf.GPTJConfig(
        n_layer=N_LAYERS, n_embd=32, n_head=4, rotary_dim=4, vocab_size=VOCAB, n_positions=64, **SPECIAL
    ),
    "gpt_neo": lambda: tf.GPTNeoConfig(
        num_layers=N_LAYERS,
        hidden_size=32,
        num_heads=4,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        window_size=4,
        attention_types=[[["global", "local"], 1]],
        **SPECIAL,
    ),
    "bloom": lambda: tf.BloomConfig(n_layer=N_LAYERS, hidden_size=32, n_head=4, vocab_size=VOCAB, **SPECIAL),
    "falcon": lambda: tf.FalconConfig(
        num_hidden_layers=N_LAYERS,
        hidden_size=32,
        num_attention_heads=4,
        vocab_size=VOCAB,
        new_decoder_architecture=False,
        **SPECIAL,
    ),
    "stablelm": lambda: tf.StableLmConfig(num_key_value_heads=4, **GATED),
    "granite": lambda: tf.GraniteConfig(
        num_key_value_heads=2, residual_multiplier=0.5, embedding_multiplier=2.0, logits_scaling=2.0, **GATED
    ),
    "starcoder2": lambda: tf.Starcoder2Config(num_key_value_heads=2, **GATED),
    "cohere": lambda: tf.CohereConfig(num_key_value_heads=2, **GATED),
    "smollm3": lambda: tf.SmolLM3Config(num_key_value_heads=2, **GATED),
    # Further architectures TransformerLens 3.9 has weight conversions for.
    "olmo3": lambda: tf.Olmo3Config(sliding_window=4, **GATED),
    "olmoe": lambda: tf.OlmoeConfig(num_experts=4, num_experts_per_tok=2, **GATED),
    "gpt_bigcode": lambda: tf.GPTBigCodeConfig(
        n_layer=N_LAYERS, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=64, **SPECIAL
    ),
    "apertus": lambda: tf.ApertusConfig(num_key_value_heads=2, **GATED),
    # Issue 18: blocks returning lists, post-norm (OpenAI GPT); an MoE returning [batch * pos, d] rows (Llama 4).
    "openai-gpt": lambda: tf.OpenAIGPTConfig(
        n_layer=N_LAYERS, n_embd=32, n_head=4, vocab_size=VOCAB, n_positions=64, **SPECIAL
    ),
    "llama4_text": lambda: tf.Llama4TextConfig(
        num_key_value_heads=2, head_dim=8, intermediate_size_mlp=64, num_local_experts=4, num_experts_per_tok=1, **GATED
    ),
}
"""name -> a function building the tiny config (a name may stand for a variant, e.g. ``neox_sequential``)."""

# The architectures steerlens converted before issue 10, in CONFIGS' order: the adapter's
# conversion-parity and the HF-vs-HookedTransformer steering tests run on these.
ORIGINAL_ARCHITECTURES = (
    "gpt2",
    "neox",
    "neox_sequential",
    "llama",
    "mistral",
    "qwen2",
    "gemma",
    "gemma2",
    "phi3",
    "opt",
)

# The 16 architectures issue 10 names, which must train and steer natively.
NEW_ARCHITECTURES = (
    "qwen3",
    "qwen3_moe",
    "gemma3",
    "olmo",
    "olmo2",
    "mixtral",
    "phi",
    "gptj",
    "gpt_neo",
    "bloom",
    "falcon",
    "stablelm",
    "granite",
    "starcoder2",
    "cohere",
    "smollm3",
)

INPUT_IDS = torch.tensor([[1, 5, 9, 12, 4, 20, 7, 7, 30, 11], [1, 8, 8, 3, 40, 41, 6, 9, 10, 2]])
"""Longer than the sliding windows above (4), so local attention is really exercised."""


def make_tokenizer() -> tf.PreTrainedTokenizerFast:
    """A WordLevel tokenizer built in memory (no pad token, no BOS post-processor)."""
    words = "the a cat dog sat on mat ran fast slow big small happy sad red blue and or".split()
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    vocab.update({word: index + 4 for index, word in enumerate(words)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return tf.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")


def make_hf_model(name: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> tf.PreTrainedModel:
    """Seeded random model; every weight (norm gains/biases too) is far from its init value."""
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(CONFIGS[name]()).eval()
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            is_gain = param.ndim == 1 and param_name.endswith("weight") and ("norm" in param_name or "ln" in param_name)
            param.copy_(torch.randn_like(param) * 0.2 + (1.0 if is_gain else 0.0))
    return model.to(dtype)


def save_checkpoint(name: str, folder: Path) -> tf.PreTrainedModel:
    """Save ``make_hf_model(name)`` and ``make_tokenizer()`` to ``folder``; return the model."""
    hf_model = make_hf_model(name)
    hf_model.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return hf_model
