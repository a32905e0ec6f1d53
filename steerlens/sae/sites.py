"""Where a sae-lens SAE reads the model, and its latents as directions in that activation's units.

An SAE trained with sae-lens names its input by a TransformerLens hook
(``cfg.metadata.hook_name``, e.g. ``blocks.6.hook_resid_post``); steerlens names the
same tensor by layer and layer type (``(6, "resid_post")``), which also steers a native
Hugging Face model. A latent's direction is what its decoder adds to that activation
per unit of activation, ``decode(e_i) - decode(0)``: read through the SAE's own
``decode``, so decoder-norm rescaling (TopK's ``rescale_acts_by_decoder_norm``) and
folded input scaling are accounted for, whatever the architecture.

sae-lens is optional (``pip install steerlens[sae]``); it is imported only when an SAE
is loaded or checked.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.errors import InvalidArgumentError, LayerError, MissingDependencyError, ModelMismatchError

_HOOK = re.compile(
    r"^blocks\.(\d+)\.(?:hook_(resid_pre|resid_mid|resid_post|attn_out|mlp_out)|(ln1|ln2)\.hook_normalized)$"
)
_LINEAR_NORMALIZATIONS = ("none",)


def require_sae_lens() -> Any:
    """The ``sae_lens`` module, else a :class:`MissingDependencyError` naming the extra to install.

    Example:
        >>> sae_lens = require_sae_lens()
        >>> sae_lens.SAE
        <class 'sae_lens.saes.sae.SAE'>
    """
    try:
        import sae_lens
    except ImportError as error:
        raise MissingDependencyError(
            "SAE features need sae-lens (6.x); install it with pip install 'steerlens[sae]'."
        ) from error
    return sae_lens


@dataclass(frozen=True)
class SaeSite:
    """The activation an SAE reads: a layer and a steerlens layer type, and its TransformerLens hook name."""

    layer: int
    layer_type: str
    hook_name: str


def site_of_hook(hook_name: str) -> SaeSite:
    """The steerlens site of a TransformerLens hook name.

    Example:
        >>> site_of_hook("blocks.6.hook_resid_post")
        SaeSite(layer=6, layer_type='resid_post', hook_name='blocks.6.hook_resid_post')
    """
    match = _HOOK.match(hook_name or "")
    if match is None:
        raise LayerError(
            f"cannot steer at the SAE's hook {hook_name!r}: steerlens steers blocks.L.hook_resid_pre / "
            "hook_resid_mid / hook_resid_post / hook_attn_out / hook_mlp_out / ln1.hook_normalized / "
            "ln2.hook_normalized. Use an SAE trained on one of those."
        )
    layer, hooked, normalized = match.groups()
    return SaeSite(int(layer), hooked or normalized, hook_name)


def load_sae(sae: Any, device: str | torch.device | None = None) -> Any:
    """``sae`` itself if it is a sae-lens ``SAE``, else the SAE saved in that folder (``sae.save_model``).

    Checks that steerlens can use it (see :func:`check_sae`).

    Example:
        >>> sae = load_sae("checkpoints/sae_blocks.2.hook_resid_post")
    """
    sae_lens = require_sae_lens()
    if isinstance(sae, (str, os.PathLike)):
        if not os.path.isdir(sae):
            raise InvalidArgumentError(
                f"no SAE folder at {os.fspath(sae)!r}; pass an SAE or a folder saved by sae-lens."
            )
        sae = sae_lens.SAE.load_from_disk(os.fspath(sae), device=str(device or "cpu"))
    elif not isinstance(sae, sae_lens.SAE):
        raise InvalidArgumentError(f"expected a sae_lens.SAE or the folder of a saved one, got {type(sae).__name__}.")
    elif device is not None:
        sae = sae.to(device)
    check_sae(sae)
    return sae


def check_sae(sae: Any) -> None:
    """Raise unless ``sae``'s decoder is affine in the latents and reads a whole activation.

    Run-time normalisations (``constant_norm_rescale``, ``layer_norm``) make the decoder
    depend on the input, and ``hook_z`` SAEs read per-head tensors steerlens does not steer.
    """
    cfg = sae.cfg
    if cfg.normalize_activations not in _LINEAR_NORMALIZATIONS:
        raise InvalidArgumentError(
            f"this SAE normalises its input at run time (normalize_activations={cfg.normalize_activations!r}), so a "
            "latent has no fixed direction in the model's units. Fold the scaling into the weights first "
            "(sae.fold_activation_norm_scaling_factor(factor) for 'expected_average_only_in')."
        )
    if getattr(cfg, "reshape_activations", "none") != "none":
        raise LayerError("hook_z SAEs read per-head tensors that steerlens does not steer; use a residual-stream SAE.")


def sae_site(sae: Any, hook_name: str | None = None) -> SaeSite:
    """Where ``sae`` reads the model: its ``cfg.metadata.hook_name`` (or ``hook_name``) as a steerlens site.

    Example:
        >>> sae_site(sae)
        SaeSite(layer=2, layer_type='resid_post', hook_name='blocks.2.hook_resid_post')
    """
    name = hook_name or sae.cfg.metadata.hook_name
    if not name:
        raise InvalidArgumentError(
            "the SAE does not say where it reads the model (no cfg.metadata.hook_name); "
            "pass hook_name='blocks.L.hook_resid_post' (or the hook it was trained on)."
        )
    return site_of_hook(name)


def check_latents(sae: Any, latents: int | Iterable[int]) -> list[int]:
    """``latents`` as a non-empty list of distinct latent ids of ``sae``."""
    items = [latents] if isinstance(latents, int) else list(latents)
    if not items:
        raise InvalidArgumentError("latents is empty; pass a latent id or a list of them.")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < sae.cfg.d_sae:
            raise InvalidArgumentError(f"latent {item!r} is not a latent of this SAE (ids 0..{sae.cfg.d_sae - 1}).")
    if len(set(items)) != len(items):
        raise InvalidArgumentError(f"latents {items} lists a latent twice.")
    return [int(item) for item in items]


@torch.no_grad()
def latent_directions(sae: Any, latents: int | Iterable[int] | None = None) -> Float[Tensor, "n_latents d_in"]:
    """What each latent adds to the activation per unit of activation, in the model's units (float32, CPU).

    ``decode(e_i) - decode(0)``: the decoder row, scaled as the SAE's own decoder scales it.
    ``latents`` None: every latent, in id order.

    Example:
        >>> latent_directions(sae, [3, 7]).shape
        torch.Size([2, 128])
    """
    check_sae(sae)
    ids = list(range(sae.cfg.d_sae)) if latents is None else check_latents(sae, latents)
    device = sae.W_dec.device
    dtype = sae.W_dec.dtype
    base = sae.decode(torch.zeros(1, sae.cfg.d_sae, device=device, dtype=dtype))
    rows = []
    for start in range(0, len(ids), 4096):
        chunk = torch.tensor(ids[start : start + 4096], device=device)
        ones = torch.zeros(len(chunk), sae.cfg.d_sae, device=device, dtype=dtype)
        ones[torch.arange(len(chunk), device=device), chunk] = 1.0
        rows.append((sae.decode(ones) - base).float().cpu())
    directions = torch.cat(rows)
    # One probe at twice the activation: a decoder that is not affine in the latents has no direction.
    twice = torch.zeros(1, sae.cfg.d_sae, device=device, dtype=dtype)
    twice[0, ids[0]] = 2.0
    doubled = (sae.decode(twice) - base).float().cpu()[0]
    if not torch.allclose(doubled, 2 * directions[0], rtol=1e-3, atol=1e-5 * float(directions[0].norm()) + 1e-8):
        raise InvalidArgumentError("this SAE's decoder is not affine in its latents; latents have no fixed direction.")
    return directions


def encode(sae: Any, activation: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
    """The SAE's latent activations of ``activation`` (any leading shape), in the SAE's dtype and device."""
    if activation.shape[-1] != sae.cfg.d_in:
        raise ModelMismatchError(
            f"the SAE reads activations of size {sae.cfg.d_in}, the model's are {activation.shape[-1]}; "
            "it was trained on another model or site."
        )
    return sae.encode(activation.to(device=sae.W_dec.device, dtype=sae.W_dec.dtype))
