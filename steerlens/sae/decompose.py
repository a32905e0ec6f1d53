"""Reading a steering vector in an SAE's features: which latents it points along, and which it moves.

Two views of one vector at an SAE's site:

* **geometry**: the cosine between the vector and each latent's direction
  (:func:`~steerlens.sae.sites.latent_directions`), and the share of the vector's
  squared norm a set of latent directions explains (its projection onto their span);
* **effect**: how much each latent's mean activation changes on some prompts when the
  vector is applied (the activations read with the steering in place).

:func:`decompose_vector` puts both in a ``pandas.DataFrame``; :func:`plot_decomposition`
draws it (matplotlib, the ``plot`` extra).

Example:
    >>> frame = decompose_vector(vec, sae, model=model, prompts=neutral_prompts("sentiment"))
    >>> frame.head(3)[["latent", "cosine", "activation_change", "cumulative_share"]]
"""

from __future__ import annotations

from typing import Any, Iterable

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.errors import InvalidArgumentError, LayerError, ModelMismatchError
from steerlens.sae.latents import latent_activations
from steerlens.sae.sites import check_latents, latent_directions, load_sae, sae_site
from steerlens.tokens.inputs import Prompts
from steerlens.vector import SteeringVector

COLUMNS = ("latent", "cosine", "activation_change", "explained_share", "cumulative_share", "found_by")


def site_direction(vec: SteeringVector, sae: Any, n_layers: int | None = None) -> Float[Tensor, "d_in"]:
    """``vec``'s direction at ``sae``'s site (float32, CPU); a :class:`LayerError` if it has none there."""
    site = sae_site(sae)
    if vec.layer_type != site.layer_type:
        raise LayerError(
            f"the vector steers {vec.layer_type}, the SAE reads {site.hook_name}; decompose a vector "
            f"trained at layer_type={site.layer_type!r}."
        )
    layers = {(layer + n_layers if layer < 0 and n_layers else layer): v for layer, v in vec.layer_activations.items()}
    if site.layer not in layers:
        raise LayerError(
            f"the vector has no direction at layer {site.layer}, where the SAE reads "
            f"({site.hook_name}); it has layers {sorted(layers)}."
        )
    direction = layers[site.layer].detach().float().cpu()
    if direction.shape[0] != sae.cfg.d_in:
        raise ModelMismatchError(f"the vector has d_model {direction.shape[0]}, the SAE reads {sae.cfg.d_in}.")
    return direction


def explained_share(direction: Float[Tensor, "d_in"], sae: Any, latents: int | Iterable[int]) -> float:
    """The share of ``|direction|²`` in the span of ``latents``' directions (0..1): ``|P v|² / |v|²``.

    One latent: its squared cosine with ``direction``. Used to compare a vector's top
    latents with a random set of the same size.

    Example:
        >>> explained_share(vec.layer_activations[2], sae, [17, 40, 3])
        0.61
    """
    sae = load_sae(sae)
    basis = latent_directions(sae, check_latents(sae, latents)).double()
    target = direction.detach().double().cpu()
    norm_sq = float(target @ target)
    if norm_sq == 0:
        raise InvalidArgumentError("the vector is zero at this site; it has no direction to explain.")
    coeffs = torch.linalg.lstsq(basis.T, target[:, None]).solution
    projected = (basis.T @ coeffs)[:, 0]
    return float(projected @ projected) / norm_sq


def decompose_vector(
    vec: SteeringVector,
    sae: Any,
    *,
    model: Any = None,
    prompts: Prompts | None = None,
    multiplier: float = 1.0,
    top_k: int = 10,
    tokenizer: Any = None,
    batch_size: int = 16,
) -> pd.DataFrame:
    """``vec`` in ``sae``'s latents: the ``top_k`` by decoder cosine and the ``top_k`` it moves most on ``prompts``.

    One row per latent (the union of both lists), ordered by ``|cosine|``, largest first:

    * ``latent``: the latent id;
    * ``cosine``: cosine between ``vec``'s direction at the SAE's site and the latent's direction;
    * ``activation_change``: mean change of the latent's activation over the real tokens of
      ``prompts`` when ``vec`` is applied at ``multiplier`` (NaN without ``model``/``prompts``);
    * ``explained_share``: ``cosine²``, the share of ``|vec|²`` along this latent alone;
    * ``cumulative_share``: the share of ``|vec|²`` in the span of this and every row above
      (:func:`explained_share`);
    * ``found_by``: ``"cosine"``, ``"activation"`` or ``"both"``.

    The vector must have a direction at the SAE's layer and layer type; all of its layers
    are applied when measuring activations.

    Example:
        >>> frame = decompose_vector(vec, sae, model=model, prompts=neutral_prompts("sentiment"), top_k=5)
        >>> frame.iloc[0]["latent"], round(frame.iloc[0]["cosine"], 2)
        (17, 0.64)
    """
    sae = load_sae(sae)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InvalidArgumentError(f"top_k must be a positive int, got {top_k!r}.")
    n_layers = None
    if model is not None:
        from steerlens.backends import backend_for

        n_layers = backend_for(model, tokenizer).n_layers
    direction = site_direction(vec, sae, n_layers)
    if float(direction.norm()) == 0:
        raise InvalidArgumentError("the vector is zero at the SAE's site; there is nothing to decompose.")
    directions = latent_directions(sae)
    cosines = (directions @ direction) / (directions.norm(dim=-1).clamp_min(1e-12) * direction.norm())
    k = min(top_k, sae.cfg.d_sae)
    by_cosine = cosines.abs().topk(k).indices.tolist()
    change = torch.full((sae.cfg.d_sae,), float("nan"))
    by_activation: list[int] = []
    if (model is None) != (prompts is None):
        raise InvalidArgumentError("pass both model= and prompts= to measure activation changes, or neither.")
    if model is not None:
        clean = latent_activations(model, sae, prompts, tokenizer=tokenizer, batch_size=batch_size)
        steered = latent_activations(
            model,
            sae,
            prompts,
            tokenizer=tokenizer,
            batch_size=batch_size,
            steering=vec.apply(model, multiplier=multiplier),
        )
        change = (steered - clean).mean(0)
        by_activation = change.abs().topk(k).indices.tolist()
    latents = sorted(set(by_cosine) | set(by_activation), key=lambda i: -abs(float(cosines[i])))
    cumulative = [explained_share(direction, sae, latents[: i + 1]) for i in range(len(latents))]
    found = {
        i: "both" if i in by_cosine and i in by_activation else "cosine" if i in by_cosine else "activation"
        for i in latents
    }
    frame = pd.DataFrame(
        {
            "latent": latents,
            "cosine": [float(cosines[i]) for i in latents],
            "activation_change": [float(change[i]) for i in latents],
            "explained_share": [float(cosines[i]) ** 2 for i in latents],
            "cumulative_share": cumulative,
            "found_by": [found[i] for i in latents],
        },
        columns=list(COLUMNS),
    )
    frame.attrs.update({"hook_name": sae_site(sae).hook_name, "multiplier": float(multiplier)})
    return frame


def plot_decomposition(frame: pd.DataFrame, *, top: int = 15) -> Any:
    """Bars of each latent's cosine and activation change (the first ``top`` rows); a matplotlib ``Figure``.

    Needs matplotlib (``pip install 'steerlens[plot]'``); imported only here.

    Example:
        >>> fig = plot_decomposition(decompose_vector(vec, sae, model=model, prompts=prompts))
        >>> fig.savefig("decomposition.png")
    """
    missing = [c for c in ("latent", "cosine", "activation_change") if c not in frame.columns]
    if missing:
        raise InvalidArgumentError(f"not a decompose_vector frame: columns {missing} are missing.")
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        from steerlens.errors import MissingDependencyError

        raise MissingDependencyError("plots need matplotlib; install it with pip install 'steerlens[plot]'.") from error
    rows = frame.head(top)
    labels = [str(int(latent)) for latent in rows["latent"]]
    has_change = bool(rows["activation_change"].notna().any())
    fig = Figure(figsize=(max(6.0, 0.45 * len(rows) + 2), 5.5 if has_change else 3.2))
    axes = fig.subplots(2 if has_change else 1, 1, sharex=True, squeeze=False)[:, 0]
    axes[0].bar(labels, rows["cosine"], color=["tab:blue" if c >= 0 else "tab:red" for c in rows["cosine"]])
    axes[0].set_ylabel("cosine with vector")
    axes[0].axhline(0, color="black", linewidth=0.6)
    if has_change:
        change = rows["activation_change"].fillna(0.0)
        axes[1].bar(labels, change, color=["tab:green" if c >= 0 else "tab:purple" for c in change])
        axes[1].set_ylabel("mean activation change")
        axes[1].axhline(0, color="black", linewidth=0.6)
    axes[-1].set_xlabel("latent")
    hook = frame.attrs.get("hook_name")
    fig.suptitle(f"vector in SAE latents{f' at {hook}' if hook else ''}")
    fig.tight_layout()
    return fig
