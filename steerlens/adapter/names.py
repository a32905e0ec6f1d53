"""Map TransformerLens hook points to the Hugging Face modules that carry the same tensor.

For every supported architecture and layer type, :func:`hf_site` names the HF module
and says whether its *input* or its *output* equals the TL hook value:

==============  ==============================================  ======
layer_type      HF tensor                                       steer?
==============  ==============================================  ======
``resid_pre``   input of decoder layer L                        yes
``resid_post``  output of decoder layer L                       yes
``attn_out``    output of the attention module (Gemma 2: of     yes
                ``post_attention_layernorm``)
``mlp_out``     output of the MLP (OPT: ``fc2``; Gemma 2: of    yes
                ``post_feedforward_layernorm``)
``resid_mid``   input of the norm in front of the MLP           read only
==============  ==============================================  ======

``resid_mid`` is read-only: HF layers keep their own reference to the residual before
calling that norm, so changing the norm's input does not change the residual stream.
(Adding a vector to ``attn_out`` has the same downstream effect as adding it to
``resid_mid``.) Parallel-residual models (GPT-NeoX/Pythia with
``use_parallel_residual=True``) have no ``resid_mid`` at all, in TL or HF.

Attention modules return tuples; the activation is their first element. OPT runs
its MLP half on flattened ``[batch * pos, d_model]`` rows (``HFSite.flattened``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from steerlens.adapter.registry import ArchSpec, arch_spec
from steerlens.errors import LayerError
from steerlens.layers import LAYER_TYPES, check_layer_type, hook_name, resolve_layers


@dataclass(frozen=True)
class HFSite:
    """Where an HF model carries the tensor of one TL hook point.

    ``path`` is a ``get_submodule`` path from the ``*ForCausalLM`` root; ``io`` says
    whether the module's first input or (first) output is the tensor; ``steerable``
    says whether editing that tensor in a torch hook is the same as editing the TL hook;
    ``flattened`` means the HF tensor is ``[batch * pos, d_model]`` rather than
    ``[batch, pos, d_model]`` (``layer_path`` is the decoder layer, whose input has the
    unflattened shape).
    """

    path: str
    io: Literal["input", "output"]
    steerable: bool
    flattened: bool = False
    layer_path: str = ""


def tl_hook_name(layer: int, layer_type: str) -> str:
    """TransformerLens hook name, e.g. ``tl_hook_name(2, "mlp_out") == "blocks.2.hook_mlp_out"``."""
    return hook_name(layer, layer_type)


def _n_layers(config: Any) -> int:
    return int(config.num_hidden_layers)


def _site_pattern(spec: ArchSpec, config: Any, layer_type: str) -> tuple[str | None, str, bool]:
    """(module path relative to one layer, io, steerable); path None means the layer itself."""
    if layer_type == "resid_pre":
        return None, "input", True
    if layer_type == "resid_post":
        return None, "output", True
    if layer_type == "attn_out":
        return spec.attn_out, "output", True
    if layer_type == "mlp_out":
        return spec.mlp_out, "output", True
    if spec.parallel(config) or spec.resid_mid_input is None:
        raise LayerError(
            f"{spec.name} with a parallel residual has no resid_mid (attention and MLP both "
            "read the layer input); use resid_pre, resid_post, attn_out or mlp_out."
        )
    return spec.resid_mid_input, "input", False


def hf_site(config_or_model: Any, layer: int, layer_type: str) -> HFSite:
    """The HF module (and input/output side) holding TL's ``blocks.{layer}.hook_{layer_type}``.

    Accepts an HF config or model. Negative layers count from the end.

    Example:
        >>> site = hf_site(LlamaConfig(num_hidden_layers=4), 1, "mlp_out")
        >>> site.path, site.io
        ('model.layers.1.mlp', 'output')
    """
    config = getattr(config_or_model, "config", config_or_model)
    spec = arch_spec(config)
    check_layer_type(layer_type)
    (layer,) = resolve_layers(layer, _n_layers(config))
    relative, io, steerable = _site_pattern(spec, config, layer_type)
    layer_path = f"{spec.layers}.{layer}"
    return HFSite(
        path=layer_path + (f".{relative}" if relative else ""),
        io=io,
        steerable=steerable,
        flattened=layer_type in spec.flattened,
        layer_path=layer_path,
    )


def hf_module_path(config_or_model: Any, layer: int, layer_type: str) -> str:
    """Dotted path of the HF module for a TL hook point, e.g. ``"model.layers.3"``.

    Check :func:`hf_site` to know whether the module's input or output is meant.

    Example:
        >>> hf_module_path(GPT2Config(), 0, "attn_out")
        'transformer.h.0.attn'
    """
    return hf_site(config_or_model, layer, layer_type).path


def hf_module(hf_model: nn.Module, layer: int, layer_type: str) -> nn.Module:
    """The ``nn.Module`` of ``hf_model`` to hook for a TL hook point (see :func:`hf_site`).

    Example:
        >>> hf_module(llama, 0, "resid_post") is llama.model.layers[0]
        True
    """
    return hf_model.get_submodule(hf_module_path(hf_model, layer, layer_type))


def describe_architecture(config_or_model: Any) -> str:
    """Human-readable summary of the TL <-> HF mapping for one model.

    Example:
        >>> print(describe_architecture(GPT2Config(n_layer=2)))
        GPT-2 (GPT2LMHeadModel), 2 layers
          resid_pre   input of transformer.h.{L}
        ...
    """
    config = getattr(config_or_model, "config", config_or_model)
    spec = arch_spec(config)
    lines = [f"{spec.name} ({spec.causal_lm}), {_n_layers(config)} layers"]
    for layer_type in LAYER_TYPES:
        try:
            relative, io, steerable = _site_pattern(spec, config, layer_type)
        except LayerError:
            lines.append(f"  {layer_type:<11} (not defined for this model)")
            continue
        path = f"{spec.layers}.{{L}}" + (f".{relative}" if relative else "")
        note = "" if steerable else " (read only)"
        if layer_type in spec.flattened:
            note += " [batch*pos rows]"
        lines.append(f"  {layer_type:<11} {io} of {path}{note}")
    return "\n".join(lines)
