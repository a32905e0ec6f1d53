"""Build a ``HookedTransformerConfig`` from a Hugging Face config.

TransformerLens' own config builder only accepts its official model names (it refuses
local folders and unknown hub ids), so steerlens derives the TL config from the HF
config itself, reading the per-family facts from :mod:`steerlens.adapter.registry`.
"""

from __future__ import annotations

from typing import Any

import torch
from transformer_lens import HookedTransformerConfig
from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

from steerlens.adapter.registry import ArchSpec, check_convertible
from steerlens.errors import UnsupportedModelError

# HF activation names that TransformerLens spells differently.
_ACTIVATION_ALIASES = {"swish": "silu", "gelu_python": "gelu"}

# RoPE variants HF and TL compute identically. Others (linear, dynamic, yarn,
# longrope, ...) are refused rather than converted into a silently different model.
_SUPPORTED_ROPE_TYPES = ("default", "llama3")


def _rope_parameters(hf: Any) -> dict[str, Any]:
    """The RoPE settings as one flat dict (transformers 5 ``rope_parameters`` or 4.x fields)."""
    params = getattr(hf, "rope_parameters", None)
    if isinstance(params, dict) and params and all(isinstance(v, dict) for v in params.values()):
        # Per-layer-type RoPE (e.g. {"full_attention": {...}, "sliding_attention": {...}}).
        distinct = {repr(sorted(v.items())) for v in params.values()}
        if len(distinct) > 1:
            raise UnsupportedModelError(
                "steerlens cannot adapt models with different RoPE settings per layer type."
            )
        params = next(iter(params.values()))
    merged: dict[str, Any] = dict(getattr(hf, "rope_scaling", None) or {})
    merged.update(params or {})
    if "rope_theta" not in merged:
        merged["rope_theta"] = getattr(hf, "rope_theta", None) or getattr(
            hf, "rotary_emb_base", 10000.0
        )
    if "partial_rotary_factor" not in merged:
        merged["partial_rotary_factor"] = getattr(
            hf, "partial_rotary_factor", getattr(hf, "rotary_pct", 1.0)
        )
    return merged


def _rotary_fields(hf: Any, d_head: int) -> dict[str, Any]:
    rope = _rope_parameters(hf)
    rope_type = rope.get("rope_type") or rope.get("type") or "default"
    if rope_type not in _SUPPORTED_ROPE_TYPES:
        raise UnsupportedModelError(
            f"steerlens cannot adapt RoPE scaling type {rope_type!r}; "
            f"supported: {', '.join(_SUPPORTED_ROPE_TYPES)}."
        )
    fields: dict[str, Any] = {
        "positional_embedding_type": "rotary",
        "rotary_base": float(rope["rope_theta"]),
        # HF truncates (int) the rotary width; round() would differ for odd widths.
        "rotary_dim": int(d_head * float(rope["partial_rotary_factor"] or 1.0)),
        "rotary_adjacent_pairs": False,  # every supported family uses rotate_half
    }
    if rope_type == "llama3":
        fields.update(
            use_NTK_by_parts_rope=True,
            NTK_by_parts_factor=float(rope["factor"]),
            NTK_by_parts_low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
            NTK_by_parts_high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
            NTK_original_ctx_len=int(
                rope.get("original_max_position_embeddings", hf.max_position_embeddings)
            ),
        )
    return fields


def _local_attention_fields(hf: Any, n_layers: int) -> dict[str, Any]:
    window = getattr(hf, "sliding_window", None)
    if not window:
        return {}
    layer_types = getattr(hf, "layer_types", None)
    if layer_types:
        attn_types = ["local" if kind == "sliding_attention" else "global" for kind in layer_types]
    else:  # Mistral / Phi-3 style: one window for every layer
        attn_types = ["local"] * n_layers
    if "local" not in attn_types:
        return {}
    return {"use_local_attn": True, "window_size": int(window), "attn_types": attn_types}


def _activation(hf: Any, spec: ArchSpec) -> str:
    name = getattr(hf, spec.act_attr, None)
    name = _ACTIVATION_ALIASES.get(name, name)
    if name not in SUPPORTED_ACTIVATIONS:
        raise UnsupportedModelError(
            f"steerlens cannot adapt activation function {name!r}; "
            f"TransformerLens supports {', '.join(sorted(SUPPORTED_ACTIVATIONS))}."
        )
    return name


def _model_name(hf: Any, spec: ArchSpec) -> str:
    """Last component of the checkpoint's name or path, else the model type."""
    name = str(getattr(hf, "_name_or_path", "") or spec.model_type)
    return name.rstrip("/\\").replace("\\", "/").split("/")[-1] or spec.model_type


def tl_config_dict(hf: Any) -> dict[str, Any]:
    """``HookedTransformerConfig`` fields for an HF config, without device/dtype.

    Example:
        >>> tl_config_dict(transformers.GPT2Config(n_layer=2))["n_layers"]
        2
    """
    spec = check_convertible(hf)
    n_heads = int(hf.num_attention_heads)
    d_model = int(hf.hidden_size)
    d_head = int(getattr(hf, "head_dim", None) or d_model // n_heads)
    n_layers = int(hf.num_hidden_layers)
    n_kv = getattr(hf, "num_key_value_heads", None)
    if n_kv is not None and n_kv == n_heads and not spec.always_grouped_kv:
        n_kv = None  # TL then uses plain multi-head attention, as it does for Llama
    fields: dict[str, Any] = {
        "d_model": d_model,
        "d_head": d_head,
        "n_heads": n_heads,
        "n_key_value_heads": None if n_kv is None else int(n_kv),
        "d_mlp": int(getattr(hf, spec.mlp_attr, None) or 4 * d_model),
        "n_layers": n_layers,
        "n_ctx": int(hf.max_position_embeddings),
        "d_vocab": int(hf.vocab_size),
        "act_fn": _activation(hf, spec),
        "eps": float(getattr(hf, spec.eps_attr) if spec.eps_attr else spec.default_eps),
        "normalization_type": spec.normalization,
        "final_rms": spec.normalization == "RMS",
        "gated_mlp": spec.gated_mlp,
        "default_prepend_bos": spec.default_prepend_bos,
        "original_architecture": spec.causal_lm,
        "model_name": _model_name(hf, spec),
        "tokenizer_name": None,  # never let TL fetch a tokenizer from the hub
        "init_weights": False,  # weights come from the checkpoint
        "positional_embedding_type": "standard",
    }
    if spec.rotary:
        fields.update(_rotary_fields(hf, d_head))
    fields.update(_local_attention_fields(hf, n_layers))
    fields.update(spec.extra_cfg(hf))
    return fields


def build_tl_config(
    hf: Any, device: str | torch.device | None, dtype: torch.dtype
) -> HookedTransformerConfig:
    """The ``HookedTransformerConfig`` matching HF config ``hf`` on ``device`` in ``dtype``."""
    fields = tl_config_dict(hf)
    fields["device"] = None if device is None else str(device)
    fields["dtype"] = dtype
    return HookedTransformerConfig.from_dict(fields)
