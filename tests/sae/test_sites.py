"""Where an SAE reads the model, its latents' directions, and the missing-extra error."""

from __future__ import annotations

import sys

import pytest
import torch

from steerlens.errors import InvalidArgumentError, LayerError, MissingDependencyError
from steerlens.sae import latent_directions, load_sae, sae_site, site_of_hook


@pytest.mark.parametrize(
    ("hook", "layer", "layer_type"),
    [
        ("blocks.2.hook_resid_post", 2, "resid_post"),
        ("blocks.0.hook_resid_pre", 0, "resid_pre"),
        ("blocks.11.hook_resid_mid", 11, "resid_mid"),
        ("blocks.3.hook_mlp_out", 3, "mlp_out"),
        ("blocks.1.hook_attn_out", 1, "attn_out"),
        ("blocks.4.ln2.hook_normalized", 4, "ln2"),
    ],
)
def test_hook_names_map_to_steerlens_sites(hook, layer, layer_type):
    from steerlens.layers import hook_name

    site = site_of_hook(hook)
    assert (site.layer, site.layer_type) == (layer, layer_type)
    assert hook_name(site.layer, site.layer_type) == hook  # the inverse of steerlens' own naming


@pytest.mark.parametrize("hook", ["blocks.2.attn.hook_z", "hook_embed", "blocks.2.hook_resid_postx"])
def test_unsteerable_hooks_are_refused(hook):
    with pytest.raises(LayerError, match="cannot steer"):
        site_of_hook(hook)


def test_directions_are_decoder_rows_in_the_models_units(toy_sae):
    # The trainer folded its input scaling into the weights; decode(e_i) - decode(0) is row i of W_dec,
    # divided by its norm where the TopK SAE rescales activations by decoder norms.
    assert toy_sae.cfg.normalize_activations == "none"
    rows = toy_sae.W_dec.detach()[[5, 93, 7]]
    if toy_sae.cfg.rescale_acts_by_decoder_norm:
        rows = rows / rows.norm(dim=-1, keepdim=True)
    torch.testing.assert_close(latent_directions(toy_sae, [5, 93, 7]), rows)


def test_directions_follow_decoder_norm_rescaling():
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(0)
    sae = TopKSAE(TopKSAEConfig(d_in=8, d_sae=6, k=2, rescale_acts_by_decoder_norm=True))
    with torch.no_grad():
        sae.W_dec.mul_(torch.arange(1, 7, dtype=torch.float32)[:, None])
    expected = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=-1, keepdim=True)
    torch.testing.assert_close(latent_directions(sae), expected)


def test_saved_folder_loads_with_its_site(toy_sae, tmp_path):
    toy_sae.save_model(tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae")
    assert sae_site(loaded) == sae_site(toy_sae)
    torch.testing.assert_close(loaded.W_dec, toy_sae.W_dec)
    with pytest.raises(InvalidArgumentError, match="no SAE folder"):
        load_sae(tmp_path / "missing")


def test_run_time_normalisation_is_refused():
    from sae_lens import StandardSAE, StandardSAEConfig

    sae = StandardSAE(StandardSAEConfig(d_in=8, d_sae=4, normalize_activations="layer_norm"))
    sae.cfg.metadata.hook_name = "blocks.0.hook_resid_post"
    with pytest.raises(InvalidArgumentError, match="normalises its input"):
        latent_directions(sae)


def test_missing_sae_lens_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sae_lens", None)  # import sae_lens now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'steerlens\[sae\]'") as info:
        load_sae("/nonexistent")
    assert isinstance(info.value, ImportError)
