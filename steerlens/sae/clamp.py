"""Clamping SAE latents: set a latent's activation to a value, keep everything the SAE does not explain.

At the SAE's site each activation ``x`` is encoded, the chosen latents are set to their
values, and the *difference* of the two decodings is added back::

    z = encode(x);  z' = z with z'[i] = value_i;  x' = x + decode(z') - decode(z)

so the SAE's reconstruction error ``x - decode(z)`` stays in the residual (replacing
``x`` by ``decode(z')`` would also delete everything the SAE misses). It is an ordinary
steerlens operator, so it runs wherever vectors run: on HookedTransformers and native
Hugging Face models, with ``min_token_index``/``token_indices``, during ``generate``.

Example:
    >>> with clamp_latents(model, sae, {17: 8.0}):
    ...     model.generate("The film was", max_new_tokens=8)
"""

from __future__ import annotations

import math
import numbers
from contextlib import contextmanager
from typing import Any, Iterator, Mapping

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.backends.layer_config import ModelLayerConfig
from steerlens.errors import InvalidArgumentError
from steerlens.hooks.operators import Operator
from steerlens.hooks.positions import TokenIndices
from steerlens.sae.sites import check_latents, encode, load_sae, sae_site
from steerlens.vector import SteeringVector


def _check_values(sae: Any, values: Mapping[int, float]) -> tuple[list[int], list[float]]:
    if not isinstance(values, Mapping):
        raise InvalidArgumentError(f"values must map latent ids to activations, e.g. {{17: 8.0}}; got {values!r}.")
    ids = check_latents(sae, list(values))
    out = []
    for latent in ids:
        value = values[latent]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise InvalidArgumentError(f"latent {latent}: the clamp value must be a finite number, got {value!r}.")
        out.append(float(value))
    return ids, out


def clamp_operator(sae: Any, values: Mapping[int, float]) -> Operator:
    """An operator that sets latents of ``sae`` to fixed activations, keeping the SAE's reconstruction error.

    ``values`` maps latent ids to the activation they are clamped to (0 turns a latent
    off). The operator ignores the vector it is applied with and its multiplier: the
    vector only says where it runs, which must be the SAE's site (use
    :func:`clamp_latents`, which builds that vector). Computed in the SAE's dtype,
    returned in the activation's.

    Example:
        >>> site = latent_vector(sae, 17, activations=1.0)
        >>> with site.apply(model, operator=clamp_operator(sae, {17: 8.0})):
        ...     logits = model("The film was")
    """
    sae = load_sae(sae)
    ids, vals = _check_values(sae, values)
    index = torch.tensor(ids)
    clamped = torch.tensor(vals)

    def clamp(activation: Float[Tensor, "... d_in"], vector: Float[Tensor, "d_in"]) -> Tensor:
        latents = encode(sae, activation)
        target = latents.clone()
        target[..., index.to(latents.device)] = clamped.to(latents)
        delta = sae.decode(target) - sae.decode(latents)
        return delta.to(device=activation.device, dtype=activation.dtype)

    return clamp


@contextmanager
def clamp_latents(
    model: Any,
    sae: Any,
    values: Mapping[int, float],
    *,
    layer_config: ModelLayerConfig | None = None,
    min_token_index: int = 0,
    token_indices: TokenIndices = None,
) -> Iterator[Any]:
    """Inside the ``with`` block, ``sae``'s latents in ``values`` are clamped to those activations.

    Runs :func:`clamp_operator` at the SAE's site through ``SteeringVector.apply`` (so
    positions and models work as for any vector); the hooks are gone on exit.

    Example:
        >>> with clamp_latents(model, sae, {17: 8.0}, min_token_index=3):
        ...     logits = model("The film was really")
    """
    sae = load_sae(sae)
    site = sae_site(sae)
    carrier = SteeringVector({site.layer: torch.zeros(sae.cfg.d_in)}, site.layer_type)  # type: ignore[arg-type]
    with carrier.apply(
        model,
        layer_config=layer_config,
        operator=clamp_operator(sae, values),
        min_token_index=min_token_index,
        token_indices=token_indices,
    ):
        yield model
