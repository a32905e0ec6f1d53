"""Registry of the Hugging Face architectures steerlens can turn into ``HookedTransformer``s.

One :class:`ArchSpec` per architecture holds every per-family fact the adapter needs:
where the config keeps its sizes, which TransformerLens weight converter to use, and
which HF modules carry the activations that TransformerLens exposes as hooks. The other
adapter modules read this table instead of branching on architecture names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from transformer_lens.pretrained.weight_conversions import (
    convert_gemma_weights,
    convert_gpt2_weights,
    convert_llama_weights,
    convert_mistral_weights,
    convert_neox_weights,
    convert_opt_weights,
    convert_phi3_weights,
    convert_qwen2_weights,
)

from steerlens.errors import UnsupportedModelError

Converter = Callable[[Any, Any], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class ArchSpec:
    """Facts about one HF causal-LM architecture.

    Module paths are dotted ``get_submodule`` paths: ``layers`` from the
    ``*ForCausalLM`` root, the others relative to one decoder layer.
    """

    model_type: str
    """``config.model_type``, the registry key (e.g. ``"llama"``)."""
    name: str
    """Human-readable family name used in messages."""
    causal_lm: str
    """Name of the HF ``*ForCausalLM`` class."""
    convert: Converter
    """TransformerLens function turning the HF model into a TL state dict."""
    layers: str
    """``nn.ModuleList`` of decoder layers."""
    attn_out: str
    """Module whose output is exactly TL's ``hook_attn_out``."""
    mlp_out: str
    """Module whose output is exactly TL's ``hook_mlp_out``."""
    resid_mid_input: str | None
    """Norm whose input is exactly TL's ``hook_resid_mid`` (None: no such point)."""
    normalization: str
    """TL ``normalization_type``: ``"LN"`` or ``"RMS"``."""
    rotary: bool
    """Rotary (True) or learned absolute (False) position embeddings."""
    gated_mlp: bool
    act_attr: str
    """Config attribute naming the MLP activation."""
    eps_attr: str | None
    """Config attribute holding the norm epsilon (None: fixed at ``default_eps``)."""
    mlp_attr: str
    """Config attribute holding the MLP width (None value means ``4 * d_model``)."""
    default_prepend_bos: bool = True
    """TransformerLens' choice for this family."""
    always_grouped_kv: bool = False
    """The TL converter writes GQA keys (``_W_K``) even when kv heads == heads."""
    default_eps: float = 1e-5
    extra_cfg: Callable[[Any], dict[str, Any]] = field(default=lambda hf: {})
    """Family-specific ``HookedTransformerConfig`` fields."""
    refuse: Callable[[Any], str | None] = field(default=lambda hf: None)
    """Returns why this particular config cannot be converted, or None if it can."""
    parallel: Callable[[Any], bool] = field(default=lambda hf: False)
    """Whether attention and MLP both read the layer input (no resid_mid)."""
    flattened: frozenset[str] = frozenset()
    """Layer types whose HF tensor is ``[batch * pos, d_model]``, not ``[batch, pos, d_model]``."""


def _gpt2_cfg(hf: Any) -> dict[str, Any]:
    return {
        "use_attn_scale": bool(getattr(hf, "scale_attn_weights", True)),
        "scale_attn_by_inverse_layer_idx": bool(hf.scale_attn_by_inverse_layer_idx),
    }


def _gemma2_cfg(hf: Any) -> dict[str, Any]:
    softcap = {
        "attn_scores_soft_cap": hf.attn_logit_softcapping,
        "output_logits_soft_cap": hf.final_logit_softcapping,
    }
    return {
        "use_normalization_before_and_after": True,
        "attn_scale": float(hf.query_pre_attn_scalar) ** 0.5,
        # None means "no cap" in HF; TL spells that -1.0.
        **{key: float(value) if value else -1.0 for key, value in softcap.items()},
    }


def _neox_refuse(hf: Any) -> str | None:
    if not getattr(hf, "attention_bias", True):
        return "GPT-NeoX without attention biases (attention_bias=False)"
    return None


def _llama_refuse(hf: Any) -> str | None:
    if getattr(hf, "attention_bias", False) or getattr(hf, "mlp_bias", False):
        return "Llama with attention_bias/mlp_bias=True (TransformerLens drops these biases)"
    return None


def _gpt2_refuse(hf: Any) -> str | None:
    if getattr(hf, "add_cross_attention", False):
        return "GPT-2 with cross-attention"
    return None


def _opt_refuse(hf: Any) -> str | None:
    if not hf.do_layer_norm_before:
        return "OPT with post-layer-norm (do_layer_norm_before=False, e.g. opt-350m)"
    if getattr(hf, "word_embed_proj_dim", hf.hidden_size) != hf.hidden_size:
        return "OPT with word_embed_proj_dim != hidden_size (projected embeddings)"
    if getattr(hf, "_remove_final_layer_norm", False):
        return "OPT without a final layer norm"
    if not getattr(hf, "enable_bias", True) or not getattr(
        hf, "layer_norm_elementwise_affine", True
    ):
        return "OPT without biases or without affine layer norms"
    return None


_LLAMA_LIKE = dict(
    layers="model.layers",
    attn_out="self_attn",
    mlp_out="mlp",
    resid_mid_input="post_attention_layernorm",
    normalization="RMS",
    rotary=True,
    gated_mlp=True,
    act_attr="hidden_act",
    eps_attr="rms_norm_eps",
    mlp_attr="intermediate_size",
)

_SPECS: tuple[ArchSpec, ...] = (
    ArchSpec(
        model_type="gpt2",
        name="GPT-2",
        causal_lm="GPT2LMHeadModel",
        convert=convert_gpt2_weights,
        layers="transformer.h",
        attn_out="attn",
        mlp_out="mlp",
        resid_mid_input="ln_2",
        normalization="LN",
        rotary=False,
        gated_mlp=False,
        act_attr="activation_function",
        eps_attr="layer_norm_epsilon",
        mlp_attr="n_inner",
        extra_cfg=_gpt2_cfg,
        refuse=_gpt2_refuse,
    ),
    ArchSpec(
        model_type="gpt_neox",
        name="GPT-NeoX (Pythia)",
        causal_lm="GPTNeoXForCausalLM",
        convert=convert_neox_weights,
        layers="gpt_neox.layers",
        attn_out="attention",
        mlp_out="mlp",
        resid_mid_input="post_attention_layernorm",
        normalization="LN",
        rotary=True,
        gated_mlp=False,
        act_attr="hidden_act",
        eps_attr="layer_norm_eps",
        mlp_attr="intermediate_size",
        default_prepend_bos=False,
        extra_cfg=lambda hf: {"parallel_attn_mlp": bool(hf.use_parallel_residual)},
        refuse=_neox_refuse,
        parallel=lambda hf: bool(hf.use_parallel_residual),
    ),
    ArchSpec(
        model_type="llama",
        name="Llama",
        causal_lm="LlamaForCausalLM",
        convert=convert_llama_weights,
        refuse=_llama_refuse,
        **_LLAMA_LIKE,
    ),
    ArchSpec(
        model_type="mistral",
        name="Mistral",
        causal_lm="MistralForCausalLM",
        convert=convert_mistral_weights,
        always_grouped_kv=True,
        **_LLAMA_LIKE,
    ),
    ArchSpec(
        model_type="qwen2",
        name="Qwen2",
        causal_lm="Qwen2ForCausalLM",
        convert=convert_qwen2_weights,
        always_grouped_kv=True,
        default_prepend_bos=False,
        **_LLAMA_LIKE,
    ),
    ArchSpec(
        model_type="gemma",
        name="Gemma",
        causal_lm="GemmaForCausalLM",
        convert=convert_gemma_weights,
        always_grouped_kv=True,
        **_LLAMA_LIKE,
    ),
    ArchSpec(
        model_type="gemma2",
        name="Gemma 2",
        causal_lm="Gemma2ForCausalLM",
        convert=convert_gemma_weights,
        always_grouped_kv=True,
        extra_cfg=_gemma2_cfg,
        # Gemma 2 normalises each sublayer's output before the residual add, so the
        # norms (not self_attn / mlp) carry what TL hooks as attn_out / mlp_out.
        **{
            **_LLAMA_LIKE,
            "attn_out": "post_attention_layernorm",
            "mlp_out": "post_feedforward_layernorm",
            "resid_mid_input": "pre_feedforward_layernorm",
            "act_attr": "hidden_activation",
        },
    ),
    ArchSpec(
        model_type="phi3",
        name="Phi-3",
        causal_lm="Phi3ForCausalLM",
        convert=convert_phi3_weights,
        **_LLAMA_LIKE,
    ),
    ArchSpec(
        model_type="opt",
        name="OPT",
        causal_lm="OPTForCausalLM",
        convert=convert_opt_weights,
        layers="model.decoder.layers",
        attn_out="self_attn",
        # OPT has no MLP submodule: fc1 -> act -> fc2 live directly on the layer.
        mlp_out="fc2",
        resid_mid_input="final_layer_norm",
        normalization="LN",
        rotary=False,
        gated_mlp=False,
        act_attr="activation_function",
        eps_attr=None,
        mlp_attr="ffn_dim",
        refuse=_opt_refuse,
        # OPT reshapes to (batch * pos) rows before its MLP half.
        flattened=frozenset({"mlp_out", "resid_mid"}),
    ),
)

ARCHITECTURES: Mapping[str, ArchSpec] = {spec.model_type: spec for spec in _SPECS}
"""Supported architectures, keyed by HF ``config.model_type``."""


def supported_architectures() -> list[str]:
    """Names of the supported HF causal-LM classes, e.g. ``["GPT2LMHeadModel", ...]``."""
    return [spec.causal_lm for spec in _SPECS]


def _supported_list() -> str:
    return ", ".join(f"{spec.name} ({spec.causal_lm})" for spec in _SPECS)


def _hf_config(config_or_model: Any) -> Any:
    return getattr(config_or_model, "config", config_or_model)


def arch_spec(config_or_model: Any) -> ArchSpec:
    """Return the :class:`ArchSpec` of an HF config or model, or raise ``UnsupportedModelError``.

    Example:
        >>> arch_spec(transformers.GPT2Config()).name
        'GPT-2'
    """
    config = _hf_config(config_or_model)
    model_type = getattr(config, "model_type", None)
    spec = ARCHITECTURES.get(model_type) if isinstance(model_type, str) else None
    if spec is None:
        label = (getattr(config, "architectures", None) or [model_type or type(config).__name__])[0]
        raise UnsupportedModelError(
            f"steerlens cannot adapt architecture {label!r}. "
            f"Supported architectures: {_supported_list()}."
        )
    return spec


def check_convertible(config: Any) -> ArchSpec:
    """Like :func:`arch_spec`, but also refuse variants of a family TL cannot represent."""
    spec = arch_spec(config)
    if getattr(config, "is_heterogeneous", False):
        reason = "per-layer (heterogeneous) attention geometry"
    else:
        reason = spec.refuse(config)
    if reason is not None:
        raise UnsupportedModelError(
            f"steerlens cannot adapt this {spec.name} checkpoint: {reason} is not supported. "
            f"Supported architectures: {_supported_list()}."
        )
    return spec
