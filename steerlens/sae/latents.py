"""Steering vectors made of SAE latents: decoder directions at the SAE's site, scaled to how the latent fires.

A latent's *typical activation* is its mean activation over the tokens where it is
active (> 0) on some prompts. :func:`latent_vector` stores ``typical activation ×
direction`` per latent (summed over the latents), so ``multiplier=1`` adds each latent
at its typical active value and ``multiplier=4`` at four times that. The result is an
ordinary :class:`~steerlens.SteeringVector` (apply, sweeps, calibration, save, GGUF).

Example:
    >>> from steerlens.sae import latent_vector
    >>> vec = latent_vector(sae, 17, model=model, prompts=neutral_prompts("sentiment"))
    >>> with vec.apply(model, multiplier=2.0):
    ...     model.generate("The film was", max_new_tokens=8)
"""

from __future__ import annotations

import numbers
from contextlib import nullcontext
from typing import Any, Iterable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from typing_extensions import Unpack

from steerlens.analysis.prompt_activations import content_rows, iter_prompt_activations
from steerlens.errors import InvalidArgumentError, ModelMismatchError
from steerlens.sae.sites import SaeSite, check_latents, encode, latent_directions, load_sae, sae_site, site_of_hook
from steerlens.settings import PROMPT_READING, Run, SettingsKeywords, open_run
from steerlens.tokens.inputs import Prompts
from steerlens.vector import SteeringVector, model_metadata

SAE_KEY = "sae"
"""Metadata key under which a latent vector records its SAE, latents and their typical activations."""


def as_site(site: Any) -> SaeSite:
    """``site`` as an :class:`SaeSite`: itself, the site of a hook name, or the site of an SAE (or its folder)."""
    if isinstance(site, SaeSite):
        return site
    if isinstance(site, str) and site.startswith("blocks."):
        return site_of_hook(site)
    return sae_site(load_sae(site))


def site_activations(
    model: Any,
    site: Any,
    prompts: Prompts,
    *,
    steering: Any = None,
    **settings: Unpack[SettingsKeywords],
) -> Float[Tensor, "n_tokens d_in"]:
    """The model's activations at a site, one row per real token of ``prompts`` (float32, CPU).

    ``site``: an SAE (its site), an :class:`~steerlens.sae.sites.SaeSite`, or a hook name
    such as ``"blocks.2.hook_resid_post"``.
    Padding and a leading BOS token are left out (BOS activations are outliers most SAEs
    do not model). ``steering`` is a context manager (e.g. ``vec.apply(model)``) entered
    around the forward passes; the rows are then the steered activations. Works on a
    HookedTransformer and a native Hugging Face model (pass its ``tokenizer``).
    ``settings``: :class:`~steerlens.settings.Settings` fields by name (``tokenizer``,
    ``batch_size`` (default 16), ``padding_side``, ``prepend_bos`` (None: the model's default))
    or ``settings=``, see :mod:`steerlens.settings`.

    Example:
        >>> site_activations(model, "blocks.2.hook_resid_post", ["The film was", "I think"]).shape
        torch.Size([7, 128])
    """
    site = as_site(site)
    run = open_run(model, settings, "site_activations", PROMPT_READING, batch_size=16)
    return site_rows(run, site, prompts, steering)


@torch.no_grad()
def site_rows(run: Run, site: SaeSite, prompts: Prompts, steering: Any = None) -> Float[Tensor, "n_tokens d_in"]:
    """:func:`site_activations` on ``run``'s model, prompts read and batched as its settings say."""
    backend = run.backend
    if site.layer >= backend.n_layers:
        raise ModelMismatchError(f"the SAE reads layer {site.layer}, the model has {backend.n_layers} layers.")
    prepared = run.prepare(prompts)
    with steering if steering is not None else nullcontext():
        rows = [
            item.acts[site.layer][content_rows(item)].cpu()
            for item in iter_prompt_activations(backend, prepared, [site.layer], site.layer_type, run.batch_size)
        ]
    return torch.cat(rows)


def latent_activations(
    model: Any,
    sae: Any,
    prompts: Prompts,
    *,
    steering: Any = None,
    **settings: Unpack[SettingsKeywords],
) -> Float[Tensor, "n_tokens d_sae"]:
    """The SAE's latent activations on every real token of ``prompts`` (see :func:`site_activations`).

    ``steering`` and ``settings`` (``tokenizer``, ``batch_size`` (default 16), ``padding_side``,
    ``prepend_bos``, or ``settings=``) as in :func:`site_activations`.

    Example:
        >>> latent_activations(model, sae, ["The film was"]).shape
        torch.Size([3, 512])
    """
    sae = load_sae(sae)
    run = open_run(model, settings, "latent_activations", PROMPT_READING, batch_size=16)
    return latent_rows(run, sae, prompts, steering)


@torch.no_grad()
def latent_rows(run: Run, sae: Any, prompts: Prompts, steering: Any = None) -> Float[Tensor, "n_tokens d_sae"]:
    """:func:`latent_activations` of a loaded ``sae`` on ``run``'s model."""
    acts = site_rows(run, sae_site(sae), prompts, steering)
    return torch.cat([encode(sae, chunk).float().cpu() for chunk in acts.split(4096)])


@torch.no_grad()
def typical_activations(
    model: Any,
    sae: Any,
    latents: int | Iterable[int],
    prompts: Prompts,
    **settings: Unpack[SettingsKeywords],
) -> Float[Tensor, "n_latents"]:
    """Each latent's mean activation over the tokens of ``prompts`` where it is active (> 0).

    A latent that never fires on the prompts has no typical value: an
    :class:`~steerlens.errors.InvalidArgumentError` names it (use prompts where it fires,
    or give the activation yourself). ``settings`` (``tokenizer``, ``batch_size`` (default 16),
    ``padding_side``, ``prepend_bos``, or ``settings=``) as in :func:`site_activations`.

    Example:
        >>> typical_activations(model, sae, [17, 40], neutral_prompts("sentiment"))
        tensor([3.1, 0.8])
    """
    sae = load_sae(sae)
    ids = check_latents(sae, latents)
    run = open_run(model, settings, "typical_activations", PROMPT_READING, batch_size=16)
    acts = latent_rows(run, sae, prompts)[:, ids]
    active = acts > 0
    silent = [latent for latent, fires in zip(ids, active.any(0).tolist()) if not fires]
    if silent:
        raise InvalidArgumentError(
            f"latents {silent} never fire on these {acts.shape[0]} tokens, so they have no typical activation; "
            "measure on prompts where they fire, or pass activations=... yourself."
        )
    return (acts * active).sum(0) / active.sum(0)


def latent_vector(
    sae: Any,
    latents: int | Iterable[int],
    *,
    model: Any = None,
    prompts: Prompts | None = None,
    activations: float | Sequence[float] | None = None,
    tokenizer: Any = None,
) -> SteeringVector:
    """A steering vector adding ``latents`` at their typical activation, at ``sae``'s site.

    ``sae``: a sae-lens ``SAE`` or the folder of a saved one. Each latent contributes
    ``activation × direction`` (:func:`~steerlens.sae.sites.latent_directions`, the
    model's units), where ``activation`` is measured on ``prompts`` through ``model``
    (:func:`typical_activations`) or given as ``activations`` (one number, or one per
    latent). So ``multiplier=1`` means "these latents at their typical active value".
    The metadata records the hook, latents and activations under ``"sae"`` (plus the
    model's name, layer count and fingerprint when ``model`` is given).

    Example:
        >>> vec = latent_vector(sae, [17, 40], model=model, prompts=neutral_prompts("sentiment"))
        >>> vec.metadata["sae"]["activations"]
        [3.1, 0.8]
        >>> with vec.apply(model, multiplier=2.0):
        ...     logits = model("The film was")
    """
    sae = load_sae(sae)
    ids = check_latents(sae, latents)
    site = sae_site(sae)
    if activations is not None:
        values = [activations] * len(ids) if isinstance(activations, numbers.Real) else list(activations)
        if len(values) != len(ids) or not all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) and torch.isfinite(torch.tensor(float(v)))
            for v in values
        ):
            raise InvalidArgumentError(
                f"activations must be one finite number or one per latent ({len(ids)}), got {activations!r}."
            )
        scale = torch.tensor([float(v) for v in values])
    elif model is not None and prompts is not None:
        scale = typical_activations(model, sae, ids, prompts, tokenizer=tokenizer)
    else:
        raise InvalidArgumentError(
            "give model= and prompts= to measure the latents' typical activation, or activations=... to set it."
        )
    direction = (scale[:, None] * latent_directions(sae, ids)).sum(0)
    metadata: dict[str, Any] = model_metadata(model) if model is not None else {}
    metadata[SAE_KEY] = {
        "hook_name": site.hook_name,
        "latents": ids,
        "activations": [float(v) for v in scale],
        "d_sae": int(sae.cfg.d_sae),
        "architecture": str(sae.cfg.architecture()),
    }
    return SteeringVector({site.layer: direction}, site.layer_type, metadata)  # type: ignore[arg-type]
