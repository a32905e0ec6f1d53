"""Build a ``HookedTransformerConfig`` from a Hugging Face config.

TransformerLens' own config builder only accepts its official model names (it refuses
local folders and unknown hub ids), so steerlens derives the TL config from the HF
config itself, reading the per-family facts from :mod:`steerlens.adapter.registry`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformer_lens.utilities.activation_functions import SUPPORTED_ACTIVATIONS

from steerlens._tl import HookedTransformerConfig
from steerlens.adapter.registry import ArchSpec, check_convertible
from steerlens.backends.protocol import checkpoint_name
from steerlens.errors import UnsupportedModelError

# HF activation names that TransformerLens spells differently.
_ACTIVATION_ALIASES = {"swish": "silu", "gelu_python": "gelu"}

# RoPE variants HF and TL compute identically on every layer. Others (linear, dynamic,
# longrope, ...) are refused rather than converted into a silently different model.
_SUPPORTED_ROPE_TYPES = ("default", "llama3", "yarn")

# Context length for models without learned or rotary positions (ALiBi has no limit).
_DEFAULT_N_CTX = 2048

# HF ``layer_types`` entries -> TL ``attn_types``.
_LAYER_KINDS = {"sliding_attention": "local", "full_attention": "global"}


def _flat_rope(hf: Any, params: dict[str, Any] | None) -> dict[str, Any]:
    """One RoPE setting as a flat dict, filled in from transformers 4.x fields if missing."""
    merged: dict[str, Any] = {}
    legacy = getattr(hf, "rope_scaling", None)
    if isinstance(legacy, dict) and not any(isinstance(v, dict) for v in legacy.values()):
        merged.update(legacy)
    merged.update(params or {})
    if "rope_theta" not in merged:
        merged["rope_theta"] = getattr(hf, "rope_theta", None) or getattr(hf, "rotary_emb_base", 10000.0)
    if "partial_rotary_factor" not in merged:
        merged["partial_rotary_factor"] = getattr(hf, "partial_rotary_factor", getattr(hf, "rotary_pct", 1.0))
    merged["rope_type"] = merged.get("rope_type") or merged.get("type") or "default"
    return merged


def _rope_by_kind(hf: Any) -> dict[str, dict[str, Any]]:
    """RoPE settings of global and of local (sliding-window) layers.

    transformers 5 keeps per-layer-type settings (Gemma 3, OLMo 3) as
    ``{"full_attention": {...}, "sliding_attention": {...}}``; others have one setting.
    """
    params = getattr(hf, "rope_parameters", None)
    if isinstance(params, dict) and params and all(isinstance(v, dict) for v in params.values()):
        unknown = set(params) - set(_LAYER_KINDS)
        if unknown:
            raise UnsupportedModelError(
                f"steerlens cannot adapt RoPE settings for layer types {sorted(unknown)}; "
                f"it knows {', '.join(_LAYER_KINDS)}."
            )
        full = params.get("full_attention") or params.get("sliding_attention")
        sliding = params.get("sliding_attention") or full
        return {"global": _flat_rope(hf, full), "local": _flat_rope(hf, sliding)}
    flat = _flat_rope(hf, params)
    return {"global": flat, "local": flat}


def _yarn_fields(hf: Any, rope: dict[str, Any]) -> dict[str, Any]:
    """TL's YaRN fields, with HF's defaults for whatever the config leaves out."""
    original = int(rope.get("original_max_position_embeddings") or hf.max_position_embeddings)
    factor = float(rope.get("factor") or hf.max_position_embeddings / original)
    attention_factor = rope.get("attention_factor")
    if attention_factor is None:

        def mscale(scale: float, weight: float = 1.0) -> float:
            return 1.0 if scale <= 1 else 0.1 * weight * math.log(scale) + 1.0

        if rope.get("mscale") and rope.get("mscale_all_dim"):
            scaled, all_dim = rope["mscale"], rope["mscale_all_dim"]
            attention_factor = mscale(factor, scaled) / mscale(factor, all_dim)
        else:
            attention_factor = mscale(factor)
    # HF reads ``truncate`` from the top level of rope_parameters, even when per layer type.
    top_level = getattr(hf, "rope_parameters", None) or {}
    return {
        "use_yarn_rope": True,
        "yarn_factor": factor,
        "yarn_attention_factor": float(attention_factor),
        "yarn_beta_fast": float(rope.get("beta_fast") or 32.0),
        "yarn_beta_slow": float(rope.get("beta_slow") or 1.0),
        "yarn_original_max_position_embeddings": original,
        "yarn_truncate": bool(top_level.get("truncate", True)),
    }


def _llama3_fields(hf: Any, rope: dict[str, Any]) -> dict[str, Any]:
    return {
        "use_NTK_by_parts_rope": True,
        "NTK_by_parts_factor": float(rope["factor"]),
        "NTK_by_parts_low_freq_factor": float(rope.get("low_freq_factor", 1.0)),
        "NTK_by_parts_high_freq_factor": float(rope.get("high_freq_factor", 4.0)),
        "NTK_original_ctx_len": int(rope.get("original_max_position_embeddings", hf.max_position_embeddings)),
    }


def _scaling_fields(hf: Any, rope: dict[str, Any]) -> dict[str, Any]:
    """Fields for a RoPE setting used on every layer."""
    rope_type = rope["rope_type"]
    if rope_type not in _SUPPORTED_ROPE_TYPES:
        raise UnsupportedModelError(
            f"steerlens cannot adapt RoPE scaling type {rope_type!r}; supported: {', '.join(_SUPPORTED_ROPE_TYPES)}."
        )
    if rope_type == "llama3":
        return _llama3_fields(hf, rope)
    if rope_type == "yarn":
        return _yarn_fields(hf, rope)
    return {}


def _mixed_rope_fields(hf: Any, full: dict[str, Any], sliding: dict[str, Any]) -> dict[str, Any]:
    """Fields when global and sliding-window layers use different RoPE settings.

    TL can give local layers their own base (``rotary_base_local``) and restrict YaRN
    or linear scaling to global layers; anything else is refused.
    """
    if sliding["rope_type"] != "default" or full["partial_rotary_factor"] != sliding["partial_rotary_factor"]:
        raise UnsupportedModelError(
            "steerlens cannot adapt scaled or partial RoPE that differs on sliding-window "
            "layers; TransformerLens only varies the RoPE base there."
        )
    fields: dict[str, Any] = {"rotary_base_local": float(sliding["rope_theta"])}
    if full["rope_type"] == "yarn":
        fields.update(_yarn_fields(hf, full), yarn_global_attn_only=True)
    elif full["rope_type"] == "linear":
        # TL applies rotary_scaling_factor to global layers only (Gemma 3's long-context setup).
        fields["rotary_scaling_factor"] = float(full["factor"])
    elif full["rope_type"] != "default":
        raise UnsupportedModelError(
            f"steerlens cannot adapt RoPE type {full['rope_type']!r} on global layers only; "
            "TransformerLens supports yarn or linear there."
        )
    return fields


def _hf_layer_kinds(hf: Any) -> set[str]:
    """Which of local/global the HF layers are, as far as RoPE is concerned."""
    layer_types = getattr(hf, "layer_types", None)
    if layer_types:
        return {_LAYER_KINDS.get(kind, "global") for kind in layer_types}
    return {"local"} if getattr(hf, "sliding_window", None) else {"global"}


def _rotary_fields(hf: Any, d_head: int, attn_types: list[str] | None) -> dict[str, Any]:
    """Rotary fields; ``attn_types`` (TL's local/global per layer) decides which settings apply."""
    rope = _rope_by_kind(hf)
    kinds = _hf_layer_kinds(hf)
    if kinds == {"global", "local"} and set(attn_types or ()) != kinds and (rope["global"] != rope["local"]):
        # TL picks the RoPE of a layer by its attention type, which needs a window.
        raise UnsupportedModelError(
            "steerlens cannot adapt per-layer-type RoPE settings without a sliding window (sliding_window is unset)."
        )
    main = rope["global"] if "global" in kinds else rope["local"]
    fields: dict[str, Any] = {
        "positional_embedding_type": "rotary",
        "rotary_base": float(main["rope_theta"]),
        # HF truncates (int) the rotary width; round() would differ for odd widths.
        "rotary_dim": int(d_head * float(main["partial_rotary_factor"] or 1.0)),
        "rotary_adjacent_pairs": False,  # rotate_half; GPT-J overrides this
    }
    if kinds == {"global", "local"} and rope["global"] != rope["local"]:
        fields.update(_mixed_rope_fields(hf, rope["global"], rope["local"]))
    else:
        fields.update(_scaling_fields(hf, main))
    return fields


def _local_attention_fields(hf: Any, n_layers: int) -> dict[str, Any]:
    window = getattr(hf, "sliding_window", None)
    if not window:
        return {}
    layer_types = getattr(hf, "layer_types", None)
    if layer_types:
        attn_types = [_LAYER_KINDS.get(kind, "global") for kind in layer_types]
    else:  # Mistral / Phi-3 style: one window for every layer
        attn_types = ["local"] * n_layers
    if "local" not in attn_types:
        return {}
    return {"use_local_attn": True, "window_size": int(window), "attn_types": attn_types}


def _activation(hf: Any, spec: ArchSpec) -> str:
    name = getattr(hf, spec.act_attr, None) if spec.act_attr else spec.default_act
    name = _ACTIVATION_ALIASES.get(name, name)
    if name not in SUPPORTED_ACTIVATIONS:
        raise UnsupportedModelError(
            f"steerlens cannot adapt activation function {name!r}; "
            f"TransformerLens supports {', '.join(sorted(SUPPORTED_ACTIVATIONS))}."
        )
    return name


def _model_name(hf: Any, spec: ArchSpec) -> str:
    """Last component of the checkpoint's name or path, else the model type."""
    return checkpoint_name(getattr(hf, "_name_or_path", "") or spec.model_type) or spec.model_type


def _mlp_width(hf: Any, spec: ArchSpec, d_model: int) -> int:
    width = getattr(hf, spec.mlp_attr, None) if spec.mlp_attr else None
    return int(width or 4 * d_model)


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
        "d_mlp": _mlp_width(hf, spec, d_model),
        "n_layers": n_layers,
        "n_ctx": int(getattr(hf, "max_position_embeddings", None) or _DEFAULT_N_CTX),
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
        "positional_embedding_type": spec.positions,
    }
    fields.update(_local_attention_fields(hf, n_layers))
    if spec.positions == "rotary":
        fields.update(_rotary_fields(hf, d_head, fields.get("attn_types")))
    fields.update(spec.extra_cfg(hf))
    return fields


def build_tl_config(hf: Any, device: str | torch.device | None, dtype: torch.dtype) -> HookedTransformerConfig:
    """The ``HookedTransformerConfig`` matching HF config ``hf`` on ``device`` in ``dtype``."""
    fields = tl_config_dict(hf)
    fields["device"] = None if device is None else str(device)
    fields["dtype"] = dtype
    return HookedTransformerConfig.from_dict(fields)
