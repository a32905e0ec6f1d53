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
TOKENS = ["<pad>", "<s>", "</s>", "Ċ", "Ġ", *"abcdefghijklmnopqrstuvwxyz", "ab", "Ġa"]
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
    import gguf

    cfg = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(TOKENS)
    writer.add_token_types([gguf.TokenType.CONTROL] * 3 + [gguf.TokenType.NORMAL] * (VOCAB - 3))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(False)
    state = {k: v.detach().to(torch.float32).numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        writer.add_tensor(f"blk.{i}.attn_norm.weight", state[p + "input_layernorm.weight"])
        writer.add_tensor(
            f"blk.{i}.attn_q.weight", _permute(state[p + "self_attn.q_proj.weight"], cfg.num_attention_heads)
        )
        writer.add_tensor(
            f"blk.{i}.attn_k.weight", _permute(state[p + "self_attn.k_proj.weight"], cfg.num_key_value_heads)
        )
        writer.add_tensor(f"blk.{i}.attn_v.weight", state[p + "self_attn.v_proj.weight"])
        writer.add_tensor(f"blk.{i}.attn_output.weight", state[p + "self_attn.o_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", state[p + "post_attention_layernorm.weight"])
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", state[p + "mlp.gate_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_up.weight", state[p + "mlp.up_proj.weight"])
        writer.add_tensor(f"blk.{i}.ffn_down.weight", state[p + "mlp.down_proj.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    writer.add_tensor("output.weight", state["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
