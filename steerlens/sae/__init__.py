"""SAE features and steering vectors, both ways (needs ``pip install 'steerlens[sae]'``: sae-lens 6.x).

* latents → vector: :func:`latent_vector` (decoder directions at the SAE's site, scaled
  so ``multiplier=1`` is the latent at its typical active value);
* latents as an operator: :func:`clamp_operator` / :func:`clamp_latents` (set a latent's
  activation, keep the SAE's reconstruction error);
* vector → latents: :func:`decompose_vector` (top latents by decoder cosine and by
  activation change, with the share of the vector they explain) and :func:`plot_decomposition`.

sae-lens is imported only when an SAE is used; without it those calls raise
:class:`~steerlens.errors.MissingDependencyError`.

Example:
    >>> from steerlens.sae import clamp_latents, decompose_vector, latent_vector
    >>> frame = decompose_vector(vec, sae, model=model, prompts=prompts)
    >>> top = int(frame.iloc[0]["latent"])
    >>> with latent_vector(sae, top, model=model, prompts=prompts).apply(model, multiplier=2.0):
    ...     model.generate("The film was", max_new_tokens=8)
"""

from steerlens.sae.clamp import clamp_latents, clamp_operator
from steerlens.sae.decompose import decompose_vector, explained_share, plot_decomposition, site_direction
from steerlens.sae.latents import latent_activations, latent_vector, site_activations, typical_activations
from steerlens.sae.sites import SaeSite, latent_directions, load_sae, require_sae_lens, sae_site, site_of_hook

__all__ = [
    "SaeSite",
    "clamp_latents",
    "clamp_operator",
    "decompose_vector",
    "explained_share",
    "latent_activations",
    "latent_directions",
    "latent_vector",
    "load_sae",
    "plot_decomposition",
    "require_sae_lens",
    "sae_site",
    "site_activations",
    "site_direction",
    "site_of_hook",
    "typical_activations",
]
