"""Steering vectors from SAE latents: scale, effect, and use like any other vector."""

from __future__ import annotations

import pytest
import torch

from steerlens import SteeringVector, sweep_layers
from steerlens.sae import latent_vector, typical_activations
from steerlens.toy import neutral_prompts, positive_mass

PROMPTS = neutral_prompts("sentiment")


@torch.no_grad()
def hand_typical(model, sae, latent):
    """Mean activation where active, over every non-BOS token, with a TransformerLens cache."""
    values = []
    for prompt in PROMPTS[:12]:
        _, cache = model.run_with_cache(prompt, names_filter=["blocks.2.hook_resid_post"])
        acts = sae.encode(cache["blocks.2.hook_resid_post"][0, 1:])[:, latent]
        values.append(acts[acts > 0])
    return torch.cat(values).mean()


def test_vector_is_typical_activation_times_decoder_row(toy_model, toy_sae, top_latent):
    latent, _ = top_latent
    vec = latent_vector(toy_sae, latent, model=toy_model, prompts=PROMPTS[:12])
    typical = hand_typical(toy_model, toy_sae, latent)
    assert vec.layer_type == "resid_post" and vec.layers == [2]
    row = toy_sae.W_dec.detach()[latent]
    if toy_sae.cfg.rescale_acts_by_decoder_norm:
        row = row / row.norm()
    torch.testing.assert_close(vec.layer_activations[2], typical * row)
    meta = vec.metadata["sae"]
    assert meta["latents"] == [latent] and meta["hook_name"] == "blocks.2.hook_resid_post"
    assert meta["activations"] == pytest.approx([float(typical)])
    assert vec.metadata["n_layers"] == 4  # the model's metadata, for GGUF export


def test_several_latents_sum_with_given_activations(toy_sae):
    vec = latent_vector(toy_sae, [3, 9], activations=[2.0, -1.5])
    rows = toy_sae.W_dec.detach()
    if toy_sae.cfg.rescale_acts_by_decoder_norm:
        rows = rows / rows.norm(dim=-1, keepdim=True)
    expected = 2.0 * rows[3] - 1.5 * rows[9]
    torch.testing.assert_close(vec.layer_activations[2], expected)


def test_silent_latent_has_no_typical_activation(toy_model, toy_sae):
    acts = toy_sae.encode(
        toy_model.run_with_cache(PROMPTS[0], names_filter=["blocks.2.hook_resid_post"])[1]["blocks.2.hook_resid_post"][
            0, 1:
        ]
    )
    silent = int((acts > 0).sum(0).argmin())
    if (acts[:, silent] > 0).any():
        pytest.skip("every latent fires on the first prompt")
    from steerlens.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="never fire"):
        typical_activations(toy_model, toy_sae, silent, PROMPTS[:1])


def test_top_latent_alone_moves_positive_share(toy_model, toy_sae, top_latent):
    latent, cosine = top_latent
    vec = latent_vector(toy_sae, latent, model=toy_model, prompts=PROMPTS)
    base = positive_mass(toy_model, PROMPTS).mean().item()
    shares = {}
    for multiplier in (2.0, 4.0):
        with vec.apply(toy_model, multiplier=multiplier):
            shares[multiplier] = positive_mass(toy_model, PROMPTS).mean().item()
    print(f"\npositive share {base:.3f} -> x2 {shares[2.0]:.3f}, x4 {shares[4.0]:.3f} (latent {latent})")
    sign = 1.0 if cosine > 0 else -1.0
    assert sign * (shares[2.0] - base) > 0.03
    assert sign * (shares[4.0] - shares[2.0]) > 0.03  # more of the latent, more of the effect


def test_works_like_any_vector(toy_model, toy_sae, top_latent, tmp_path):
    latent, cosine = top_latent
    vec = latent_vector(toy_sae, latent, model=toy_model, prompts=PROMPTS)
    vec.save(tmp_path / "latent.safetensors")
    loaded = SteeringVector.load(tmp_path / "latent.safetensors")
    assert loaded.metadata["sae"] == vec.metadata["sae"]
    torch.testing.assert_close(loaded.layer_activations[2], vec.layer_activations[2])
    frame = sweep_layers(toy_model, loaded, PROMPTS[:16], multipliers=[0.0, 4.0], metric="kl")
    kl = frame.set_index("multiplier")["kl"]
    assert kl[0.0] == pytest.approx(0.0, abs=1e-6) and kl[4.0] > 1e-3
    pytest.importorskip("gguf")
    from steerlens.interop import export_gguf, import_gguf

    export_gguf(vec, tmp_path / "latent.gguf")
    back = import_gguf(tmp_path / "latent.gguf")
    torch.testing.assert_close(back.layer_activations[2], vec.layer_activations[2])
