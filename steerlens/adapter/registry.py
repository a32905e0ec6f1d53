"""Registry of the Hugging Face architectures steerlens can turn into ``HookedTransformer``s.

One :class:`ArchSpec` per architecture holds every per-family fact the conversion needs:
where the config keeps its sizes and which TransformerLens weight converter to use. The
other adapter modules read this table instead of branching on architecture names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal

import torch

from steerlens._tl import (  # TransformerLens 3's converters (stand-ins on 4)
    convert_apertus_weights,
    convert_bloom_weights,
    convert_coder_weights,
    convert_gemma_weights,
    convert_gpt2_weights,
    convert_gptj_weights,
    convert_llama_weights,
    convert_mistral_weights,
    convert_mixtral_weights,
    convert_neo_weights,
    convert_neox_weights,
    convert_olmo2_weights,
    convert_olmo3_weights,
    convert_olmo_weights,
    convert_olmoe_weights,
    convert_opt_weights,
    convert_phi3_weights,
    convert_phi_weights,
    convert_qwen2_weights,
    convert_qwen3_weights,
)
from steerlens.errors import UnsupportedModelError

Converter = Callable[[Any, Any], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class ArchSpec:
    """Facts about one HF causal-LM architecture that its conversion needs.

    Which module carries which hook point is not listed here: it is found from the
    model's module tree (:mod:`steerlens.backends.hf_layout`), for any architecture.
    """

    model_type: str
    """``config.model_type``, the registry key (e.g. ``"llama"``)."""
    name: str
    """Human-readable family name used in messages."""
    causal_lm: str
    """Name of the HF ``*ForCausalLM`` class."""
    convert: Converter
    """TransformerLens function turning the HF model into a TL state dict."""
    normalization: str
    """TL ``normalization_type``: ``"LN"`` or ``"RMS"``."""
    positions: Literal["rotary", "standard", "alibi"]
    """TL ``positional_embedding_type``: rotary, learned absolute, or ALiBi."""
    gated_mlp: bool
    act_attr: str | None
    """Config attribute naming the MLP activation (None: fixed at ``default_act``)."""
    eps_attr: str | None
    """Config attribute holding the norm epsilon (None: fixed at ``default_eps``)."""
    mlp_attr: str | None
    """Config attribute holding the MLP width (None, or a None value: ``4 * d_model``)."""
    default_prepend_bos: bool = True
    """TransformerLens' choice for this family."""
    always_grouped_kv: bool = False
    """The TL converter writes GQA keys (``_W_K``) even when kv heads == heads."""
    default_eps: float = 1e-5
    default_act: str = "gelu"
    extra_cfg: Callable[[Any], dict[str, Any]] = field(default=lambda hf: {})
    """Family-specific ``HookedTransformerConfig`` fields."""
    refuse: Callable[[Any], str | None] = field(default=lambda hf: None)
    """Returns why this particular config cannot be converted, or None if it can."""


# --- family-specific config fields -------------------------------------------------------


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


def _gemma3_cfg(hf: Any) -> dict[str, Any]:
    """Gemma 2's fields plus per-head RMS norms on queries and keys.

    HF's Gemma 3 keeps ``attn_logit_softcapping`` in its config but never applies it
    (only the final-logit cap is used), so the attention cap stays off here too.
    """
    return {**_gemma2_cfg(hf), "use_qk_norm": True, "attn_scores_soft_cap": -1.0}


def _clip_qkv(hf: Any) -> dict[str, Any]:
    """OLMo / OLMoE clamp Q, K and V after projection when ``clip_qkv`` is set."""
    clip = getattr(hf, "clip_qkv", None)
    return {"clip_qkv": float(clip)} if clip is not None else {}


def _moe_cfg(n_experts_attr: str, renormalize: Callable[[Any], bool]) -> Callable[[Any], dict]:
    """Mixture-of-experts fields; ``renormalize`` says whether top-k weights are rescaled to 1."""

    def fields(hf: Any) -> dict[str, Any]:
        return {
            "num_experts": int(getattr(hf, n_experts_attr)),
            "experts_per_token": int(hf.num_experts_per_tok),
            "norm_topk_prob": bool(renormalize(hf)),
        }

    return fields


def _gptj_cfg(hf: Any) -> dict[str, Any]:
    # GPT-J rotates adjacent pairs (rotate_every_two), unlike the rotate_half families.
    return {
        "parallel_attn_mlp": True,
        "rotary_dim": int(hf.rotary_dim),
        "rotary_adjacent_pairs": True,
    }


def _gpt_neo_cfg(hf: Any) -> dict[str, Any]:
    """GPT-Neo does not scale attention scores and alternates global/local layers."""
    fields: dict[str, Any] = {"use_attn_scale": False}
    kinds = list(hf.attention_layers)
    if "local" in kinds:
        fields.update(use_local_attn=True, window_size=int(hf.window_size), attn_types=kinds)
    return fields


def _bloom_cfg(hf: Any) -> dict[str, Any]:
    # BLOOM normalises the embeddings; its MLP is HF's tanh-approximated gelu.
    return {"post_embedding_ln": True}


# --- variants TransformerLens cannot represent --------------------------------------------


def _neox_refuse(hf: Any) -> str | None:
    if not getattr(hf, "attention_bias", True):
        return "GPT-NeoX without attention biases (attention_bias=False)"
    return None


def _no_bias_refuse(family: str) -> Callable[[Any], str | None]:
    """Refuse ``attention_bias``/``mlp_bias=True``: the TL converter drops these biases."""

    def refuse(hf: Any) -> str | None:
        if getattr(hf, "attention_bias", False) or getattr(hf, "mlp_bias", False):
            return f"{family} with attention_bias/mlp_bias=True (TransformerLens drops these biases)"
        return None

    return refuse


def _full_heads_refuse(family: str) -> Callable[[Any], str | None]:
    """Refuse grouped-query variants of families whose TL converter assumes one K/V per head."""
    no_bias = _no_bias_refuse(family)

    def refuse(hf: Any) -> str | None:
        n_kv = getattr(hf, "num_key_value_heads", None)
        if n_kv is not None and n_kv != hf.num_attention_heads:
            return (
                f"{family} with grouped-query attention (num_key_value_heads={n_kv} != "
                f"num_attention_heads={hf.num_attention_heads}; TransformerLens' converter "
                "expects one key/value head per query head)"
            )
        return no_bias(hf)

    return refuse


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
    if not getattr(hf, "enable_bias", True) or not getattr(hf, "layer_norm_elementwise_affine", True):
        return "OPT without biases or without affine layer norms"
    return None


def _gemma3_refuse(hf: Any) -> str | None:
    if getattr(hf, "use_bidirectional_attention", False):
        return "Gemma 3 with bidirectional attention (use_bidirectional_attention=True)"
    return _no_bias_refuse("Gemma 3")(hf)


def _phi_refuse(hf: Any) -> str | None:
    if getattr(hf, "qk_layernorm", False):
        return "Phi with qk_layernorm=True (TransformerLens only has RMS query/key norms)"
    return _full_heads_refuse("Phi")(hf)


def _gptj_refuse(hf: Any) -> str | None:
    if not getattr(hf, "rotary_dim", None):
        return "GPT-J without rotary_dim (HF then rotates over d_model, not a head)"
    return None


def _bloom_refuse(hf: Any) -> str | None:
    n_heads = int(hf.n_head)
    if n_heads & (n_heads - 1):
        # HF interleaves extra ALiBi slopes for other head counts; TL's are a plain
        # geometric series.
        return f"BLOOM with {n_heads} heads (TransformerLens' ALiBi slopes need a power of two)"
    if getattr(hf, "apply_residual_connection_post_layernorm", False):
        return "BLOOM with apply_residual_connection_post_layernorm=True"
    if getattr(hf, "pretraining_tp", 1) > 1 and getattr(hf, "slow_but_exact", False):
        return "BLOOM with slow_but_exact=True and pretraining_tp > 1 (sliced output projections)"
    return None


def _bigcode_refuse(hf: Any) -> str | None:
    if not getattr(hf, "multi_query", True):
        return "GPTBigCode without multi-query attention (multi_query=False)"
    if getattr(hf, "add_cross_attention", False):
        return "GPTBigCode with cross-attention"
    return None


# --- converter shims -----------------------------------------------------------------------


def _conv1d(weight: torch.Tensor, bias: torch.Tensor) -> SimpleNamespace:
    """An ``nn.Linear``'s parameters in GPT-2 ``Conv1D`` layout (weight ``[in, out]``)."""
    return SimpleNamespace(weight=weight.T, bias=bias)


def _convert_bigcode(hf: Any, cfg: Any) -> dict[str, torch.Tensor]:
    """TL's SantaCoder converter (``coder.py``) applied to a GPTBigCode model.

    ``convert_coder_weights`` reads SantaCoder's remote-code layout: separate ``q_attn``
    and ``kv_attn`` Conv1D weights. GPTBigCode fuses them into one ``nn.Linear``
    ``c_attn`` (queries, then the shared key and value head), so the converter is given
    transposed, split views of the same tensors under SantaCoder's names.
    """
    d_model = cfg.d_model
    blocks = []
    for layer in hf.transformer.h:
        qkv_w, qkv_b = layer.attn.c_attn.weight, layer.attn.c_attn.bias
        attn = SimpleNamespace(
            q_attn=_conv1d(qkv_w[:d_model], qkv_b[:d_model]),
            kv_attn=_conv1d(qkv_w[d_model:], qkv_b[d_model:]),
            c_proj=_conv1d(layer.attn.c_proj.weight, layer.attn.c_proj.bias),
        )
        mlp = SimpleNamespace(
            c_fc=_conv1d(layer.mlp.c_fc.weight, layer.mlp.c_fc.bias),
            c_proj=_conv1d(layer.mlp.c_proj.weight, layer.mlp.c_proj.bias),
        )
        blocks.append(SimpleNamespace(ln_1=layer.ln_1, ln_2=layer.ln_2, attn=attn, mlp=mlp))
    transformer = SimpleNamespace(wte=hf.transformer.wte, wpe=hf.transformer.wpe, h=blocks, ln_f=hf.transformer.ln_f)
    return convert_coder_weights(SimpleNamespace(transformer=transformer, lm_head=hf.lm_head), cfg)


def _convert_apertus(hf: Any, cfg: Any) -> dict[str, torch.Tensor]:
    """TL's Apertus converter, with XIeLU parameters reshaped from HF's ``[1]`` to TL's scalars."""
    state_dict = convert_apertus_weights(hf, cfg)
    return {key: value.reshape(()) if ".mlp.act_fn." in key else value for key, value in state_dict.items()}


# --- the table ------------------------------------------------------------------------------

_LLAMA_LIKE = dict(
    normalization="RMS",
    positions="rotary",
    gated_mlp=True,
    act_attr="hidden_act",
    eps_attr="rms_norm_eps",
    mlp_attr="intermediate_size",
)

_GEMMA_LIKE = {**_LLAMA_LIKE, "act_attr": "hidden_activation"}

# GPT-2-style configs (GPT-Neo, GPTBigCode).
_GPT2_LIKE = dict(
    normalization="LN",
    positions="standard",
    gated_mlp=False,
    act_attr="activation_function",
    eps_attr="layer_norm_epsilon",
)

_SPECS: tuple[ArchSpec, ...] = (
    ArchSpec(
        model_type="gpt2",
        name="GPT-2",
        causal_lm="GPT2LMHeadModel",
        convert=convert_gpt2_weights,
        mlp_attr="n_inner",
        extra_cfg=_gpt2_cfg,
        refuse=_gpt2_refuse,
        **_GPT2_LIKE,
    ),
    ArchSpec(
        model_type="gpt_neox",
        name="GPT-NeoX (Pythia)",
        causal_lm="GPTNeoXForCausalLM",
        convert=convert_neox_weights,
        normalization="LN",
        positions="rotary",
        gated_mlp=False,
        act_attr="hidden_act",
        eps_attr="layer_norm_eps",
        mlp_attr="intermediate_size",
        default_prepend_bos=False,
        extra_cfg=lambda hf: {"parallel_attn_mlp": bool(hf.use_parallel_residual)},
        refuse=_neox_refuse,
    ),
    ArchSpec(
        model_type="llama",
        name="Llama",
        causal_lm="LlamaForCausalLM",
        convert=convert_llama_weights,
        refuse=_no_bias_refuse("Llama"),
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
        **_GEMMA_LIKE,
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
        normalization="LN",
        positions="standard",
        gated_mlp=False,
        act_attr="activation_function",
        eps_attr=None,
        mlp_attr="ffn_dim",
        refuse=_opt_refuse,
    ),
    ArchSpec(
        model_type="qwen3",
        name="Qwen3",
        causal_lm="Qwen3ForCausalLM",
        convert=convert_qwen3_weights,
        default_prepend_bos=False,
        extra_cfg=lambda hf: {"use_qk_norm": True},
        refuse=_no_bias_refuse("Qwen3"),
        **_LLAMA_LIKE,
    ),
    ArchSpec(
        model_type="gemma3_text",
        name="Gemma 3 (text)",
        causal_lm="Gemma3ForCausalLM",
        convert=convert_gemma_weights,
        always_grouped_kv=True,
        extra_cfg=_gemma3_cfg,
        refuse=_gemma3_refuse,
        **_GEMMA_LIKE,
    ),
    ArchSpec(
        model_type="olmo",
        name="OLMo",
        causal_lm="OlmoForCausalLM",
        convert=convert_olmo_weights,
        extra_cfg=_clip_qkv,
        refuse=_full_heads_refuse("OLMo"),
        # OLMo's LayerNorms have no weight or bias and a fixed epsilon.
        **{**_LLAMA_LIKE, "normalization": "LN", "eps_attr": None},
    ),
    ArchSpec(
        model_type="olmo2",
        name="OLMo 2",
        causal_lm="Olmo2ForCausalLM",
        convert=convert_olmo2_weights,
        refuse=_full_heads_refuse("OLMo 2"),
        **_LLAMA_LIKE,
    ),
    ArchSpec(
        model_type="olmo3",
        name="OLMo 3",
        causal_lm="Olmo3ForCausalLM",
        convert=convert_olmo3_weights,
        refuse=_no_bias_refuse("OLMo 3"),
        **_LLAMA_LIKE,
    ),
    ArchSpec(
        model_type="olmoe",
        name="OLMoE",
        causal_lm="OlmoeForCausalLM",
        convert=convert_olmoe_weights,
        always_grouped_kv=True,
        extra_cfg=lambda hf: {
            **_moe_cfg("num_experts", lambda hf: hf.norm_topk_prob)(hf),
            **_clip_qkv(hf),
        },
        refuse=_no_bias_refuse("OLMoE"),
        **_LLAMA_LIKE,
    ),
    ArchSpec(
        model_type="mixtral",
        name="Mixtral",
        causal_lm="MixtralForCausalLM",
        convert=convert_mixtral_weights,
        always_grouped_kv=True,
        # Mixtral's router always rescales the top-k weights to sum to 1.
        extra_cfg=_moe_cfg("num_local_experts", lambda hf: True),
        **_LLAMA_LIKE,
    ),
    ArchSpec(
        model_type="gptj",
        name="GPT-J",
        causal_lm="GPTJForCausalLM",
        convert=convert_gptj_weights,
        normalization="LN",
        positions="rotary",
        gated_mlp=False,
        act_attr="activation_function",
        eps_attr="layer_norm_epsilon",
        mlp_attr="n_inner",
        extra_cfg=_gptj_cfg,
        refuse=_gptj_refuse,
    ),
    ArchSpec(
        model_type="gpt_neo",
        name="GPT-Neo",
        causal_lm="GPTNeoForCausalLM",
        convert=convert_neo_weights,
        mlp_attr="intermediate_size",
        extra_cfg=_gpt_neo_cfg,
        **_GPT2_LIKE,
    ),
    ArchSpec(
        model_type="bloom",
        name="BLOOM",
        causal_lm="BloomForCausalLM",
        convert=convert_bloom_weights,
        normalization="LN",
        positions="alibi",
        gated_mlp=False,
        act_attr=None,
        default_act="gelu_fast",
        eps_attr="layer_norm_epsilon",
        mlp_attr=None,
        default_prepend_bos=False,
        extra_cfg=_bloom_cfg,
        refuse=_bloom_refuse,
    ),
    ArchSpec(
        model_type="phi",
        name="Phi",
        causal_lm="PhiForCausalLM",
        convert=convert_phi_weights,
        normalization="LN",
        positions="rotary",
        gated_mlp=False,
        act_attr="hidden_act",
        eps_attr="layer_norm_eps",
        mlp_attr="intermediate_size",
        default_prepend_bos=False,
        extra_cfg=lambda hf: {"parallel_attn_mlp": True},
        refuse=_phi_refuse,
    ),
    ArchSpec(
        model_type="gpt_bigcode",
        name="GPTBigCode (StarCoder)",
        causal_lm="GPTBigCodeForCausalLM",
        convert=_convert_bigcode,
        mlp_attr="n_inner",
        # One shared key/value head, which the converter repeats for every query head:
        # TL runs it as plain multi-head attention.
        extra_cfg=lambda hf: {
            "use_attn_scale": bool(hf.scale_attn_weights),
            "n_key_value_heads": None,
        },
        refuse=_bigcode_refuse,
        **_GPT2_LIKE,
    ),
    ArchSpec(
        model_type="apertus",
        name="Apertus",
        causal_lm="ApertusForCausalLM",
        convert=_convert_apertus,
        extra_cfg=lambda hf: {"use_qk_norm": True},
        refuse=_no_bias_refuse("Apertus"),
        **{
            **_LLAMA_LIKE,
            "gated_mlp": False,
        },
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
            f"steerlens cannot adapt architecture {label!r}. Supported architectures: {_supported_list()}."
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
