"""A tiny random Llama written as a llama.cpp GGUF model file, as llama.cpp's converter writes one.

transformers reads it (``from_pretrained(folder, gguf_file=name)``, what
``steerlens.adapter.gguf`` de-quantizes and caches) and so does llama.cpp itself. The
weights are float32 and the file is a few hundred KB, so loading it takes a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers as tf

VOCAB = 64
N_LAYERS = 3
# A byte-level BPE vocabulary (GPT-2 style): "Ġ" is the space byte, "Ċ" the newline byte.
# "<|endoftext|>", "<unk>" and "<mask>": the tokens transformers' GPT-2 and Gemma tokenizers add when missing.
TOKENS = ["<|endoftext|>", "<s>", "</s>", "Ċ", "Ġ", *"abcdefghijklmnopqrstuvwxyz", "ab", "Ġa", "<unk>", "<mask>"]
TOKENS += [f"w{i}" for i in range(VOCAB - len(TOKENS))]
MERGES = ["a b", "Ġ a"]


def tiny_llama(seed: int = 0) -> tf.LlamaForCausalLM:
    """A seeded random Llama (3 layers, d_model 32, 4 heads, 2 KV heads, 64 tokens), weights far from init."""
    config = tf.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = tf.LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            gain = 1.0 if name.endswith("norm.weight") else 0.0
            param.copy_(torch.randn_like(param) * 0.2 + gain)
    return model


def _permute(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's rotary layout for a Q or K projection (undone by transformers on load)."""
    return (
        weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def write_llama_gguf(model: tf.LlamaForCausalLM, path: Path) -> Path:
    """Write ``model`` as a float32 llama.cpp GGUF file at ``path`` (tensor names and layouts as llama.cpp's)."""
    return write_gguf(model, path)


# -- any architecture transformers reads from GGUF -------------------------------------------

# A sentencepiece vocabulary (llama.cpp's "llama" tokenizer model), as Gemma files carry: "▁" is the space.
SP_TOKENS = ["<pad>", "<bos>", "<eos>", "<unk>", "<mask>", "▁", *"abcdefghijklmnopqrstuvwxyz", "ab", "▁a", "▁ab"]
SP_TOKENS += [f"v{i}" for i in range(VOCAB - len(SP_TOKENS))]

# Hugging Face model_type -> llama.cpp architecture name
GGUF_ARCH = {
    "llama": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma2": "gemma2",
    "gemma3_text": "gemma3",
    "phi3": "phi3",
}


def big_vocabulary(size: int = 52_000) -> tuple[list[str], list[str]]:
    """A byte-level BPE vocabulary of ``size`` tokens (specials, letters, then merged pairs of growing length) and its merges.

    Every merged token is two earlier tokens joined, and its merge is listed, as in a real
    BPE file; ``size`` above 50k makes the tokenizer as large as SmolLM2's (49k) or larger.
    """
    letters = list("abcdefghijklmnopqrstuvwxyz")
    tokens = ["<|endoftext|>", "<s>", "</s>", "Ċ", "Ġ", *letters]
    merges: list[str] = []
    pairs = [a + b for a in letters for b in letters]
    for pair in pairs:
        tokens.append(pair)
        merges.append(f"{pair[0]} {pair[1]}")
    for first in pairs:
        for second in pairs:
            if len(tokens) >= size:
                return tokens, merges
            tokens.append(first + second)
            merges.append(f"{first} {second}")
    raise ValueError(f"at most {len(tokens)} tokens")


def tiny_model(model_type: str, vocab: int = VOCAB, seed: int = 0) -> tf.PreTrainedModel:
    """A seeded random model of ``model_type`` (tiny_hf's sizes, ``vocab`` rows), weights far from init."""
    from tiny_hf import CONFIGS

    name = {"gemma3_text": "gemma3"}.get(model_type, model_type)
    config = CONFIGS[name]() if name != "llama" else tiny_llama().config
    config.vocab_size = vocab
    if model_type == "qwen3":
        config.head_dim = 128  # transformers reads no head size from a Qwen3 GGUF: its default, 128
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            gain = 1.0 if param.ndim == 1 and "norm" in param_name else 0.0
            param.copy_(torch.randn_like(param) * 0.2 + gain)
    return model


def write_gguf(
    model: tf.PreTrainedModel, path: Path, tokens: list[str] | None = None, merges: list[str] | None = None
) -> Path:
    """Write ``model`` as a float32 llama.cpp GGUF file of its architecture, named and laid out as llama.cpp's converter does.

    Tensor names come from gguf's own name map; Llama's Q and K are permuted to llama.cpp's
    rotary layout and Gemma's norm gains stored as ``1 + w``, which transformers undoes on load.
    """
    import gguf

    cfg = model.config
    arch = GGUF_ARCH[cfg.model_type]
    sentencepiece = arch.startswith("gemma") and tokens is None  # Gemma's own tokenizer class reads these only
    if sentencepiece:
        tokens, merges = SP_TOKENS, []
    tokens, merges = tokens or TOKENS, merges if merges is not None else MERGES
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(f"tiny-{arch}")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    if getattr(cfg, "sliding_window", None):
        writer.add_sliding_window(cfg.sliding_window)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama" if sentencepiece else "gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.NORMAL] * (len(tokens) - 3))
    if sentencepiece:
        writer.add_token_scores([-float(i) for i in range(len(tokens))])
        writer.add_unk_token_id(3)
    else:
        writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(False)
    arch_id = next(key for key, name in gguf.MODEL_ARCH_NAMES.items() if name == arch)
    names = gguf.get_tensor_name_map(arch_id, cfg.num_hidden_layers)
    tied = cfg.get_text_config().tie_word_embeddings
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue
        base, suffix = hf_name.rsplit(".", 1)
        value = tensor.detach().to(torch.float32).numpy()
        if arch == "llama" and base.endswith(("q_proj", "k_proj")):
            heads = cfg.num_attention_heads if base.endswith("q_proj") else cfg.num_key_value_heads
            value = _permute(value, heads)
        if arch.startswith("gemma") and base.endswith("norm"):
            value = value + 1
        writer.add_tensor(f"{names.get_name(base)}.{suffix}", np.ascontiguousarray(value))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
