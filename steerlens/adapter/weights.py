"""Convert the weights of a Hugging Face model into a TransformerLens state dict, and keep one converted.

A converted state dict can be kept beside the checkpoint it came from (:func:`save_hooked_state`,
:func:`read_hooked_state`): a GGUF file's cached checkpoint keeps its HookedTransformer weights
this way, so a second ``load_model`` reads them without Hugging Face's model or the conversion.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
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
    if not process_weights:
        # What load_and_process_state_dict does with every processing step off (its float32
        # round trip returns the same values), in one load_state_dict call instead of one
        # per key: TransformerLens walks every module for each of ~300 keys (4x faster on SmolLM2).
        model.load_state_dict(model.fill_missing_keys(state_dict), strict=False)
        return
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


HOOKED_STATE = "hooked_transformer.safetensors"
"""File name of a converted (unprocessed, float32) HookedTransformer state dict kept beside a checkpoint."""


def hooked_state_fingerprint(config_fields: dict[str, Any]) -> str:
    """What a kept state dict was converted under: the TransformerLens config fields and both libraries' versions.

    A kept state dict whose fingerprint differs (TransformerLens or steerlens upgraded, another
    config) is converted again rather than trusted.
    """
    from steerlens._tl import TL_VERSION
    from steerlens._version import __version__

    fields = {key: value for key, value in config_fields.items() if key != "model_name"}
    text = json.dumps({"tl": TL_VERSION, "steerlens": __version__, "cfg": fields}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def save_hooked_state(model: HookedTransformer, path: Path, fingerprint: str) -> None:
    """Keep ``model``'s state dict (parameters and buffers) at ``path`` as safetensors, written atomically.

    Tensors are saved contiguous and unshared (a tied unembedding is saved twice); values are
    unchanged. A failure to write (read-only or full disk) only costs the next load a conversion.

    Example:
        >>> save_hooked_state(model, folder / HOOKED_STATE, hooked_state_fingerprint(tl_config_dict(hf_config)))
    """
    from safetensors.torch import save_file

    tensors = {
        key: value.detach().clone(memory_format=torch.contiguous_format) for key, value in model.state_dict().items()
    }
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(handle)
        try:
            save_file(tensors, temporary, metadata={"fingerprint": fingerprint})
            os.replace(temporary, path)  # atomic: a reader sees the old file, no file, or the whole new one
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
    except OSError:
        pass


def read_hooked_state(path: Path, fingerprint: str) -> dict[str, torch.Tensor] | None:
    """The state dict kept at ``path`` if it is whole and was converted under ``fingerprint``, else None.

    Example:
        >>> state = read_hooked_state(folder / HOOKED_STATE, fingerprint)
        >>> model.load_state_dict(state, assign=True)
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as kept:
            if (kept.metadata() or {}).get("fingerprint") != fingerprint:
                return None
            return {key: kept.get_tensor(key) for key in kept.keys()}
    except Exception:  # missing, cut short or garbled (safetensors raises its own error types): convert again
        return None
