"""Convert the weights of a Hugging Face model into a TransformerLens state dict."""

from __future__ import annotations

from typing import Any

import torch
from transformer_lens.utilities.activation_functions import softcap_enabled
from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

from steerlens._tl import HookedTransformer, HookedTransformerConfig
from steerlens.adapter.registry import ArchSpec


@torch.no_grad()
def convert_weights(hf_model: Any, spec: ArchSpec, cfg: HookedTransformerConfig) -> dict[str, torch.Tensor]:
    """TL state dict for ``hf_model`` using the family's TransformerLens converter.

    Tensors come back in ``cfg.dtype``; they never share storage with ``hf_model``
    once loaded, because ``load_state_dict`` copies into the TL parameters.
    """
    state_dict = spec.convert(hf_model, cfg)
    return {key: value.to(cfg.dtype) if value.is_floating_point() else value for key, value in state_dict.items()}


def load_weights(model: HookedTransformer, state_dict: dict[str, torch.Tensor], process_weights: bool) -> None:
    """Load ``state_dict`` into ``model``, optionally folding/centring like ``from_pretrained``.

    Keys the model does not have are dropped first: some TL converters emit placeholders
    (e.g. Phi-3 writes LayerNorm biases an RMSNorm model has no use for), and weight
    processing would otherwise try to fold them.
    """
    expected = set(model.state_dict())
    state_dict = {key: value for key, value in state_dict.items() if key in expected}
    if "pos_embed.W_pos" in expected and "pos_embed.W_pos" not in state_dict:
        # ALiBi models still get a (never used) learned position table; zero it rather
        # than leave it uninitialised and have TL warn that it is missing.
        state_dict["pos_embed.W_pos"] = torch.zeros_like(model.pos_embed.W_pos)
    # Softcapped logits are not shift-invariant, so the unembedding must not be centred.
    center_unembed = process_weights and not softcap_enabled(model.cfg.output_logits_soft_cap)
    # Folding and centring assume each norm sits on a sublayer's input; post-norm
    # families (OLMo 2 / 3) normalise outputs, so from_pretrained skips both for them.
    pre_norm = model.cfg.original_architecture not in POST_NORM_ARCHITECTURES
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=process_weights and pre_norm,
        center_writing_weights=process_weights and pre_norm,
        center_unembed=center_unembed,
        fold_value_biases=process_weights,
        refactor_factored_attn_matrices=False,
    )
