"""Clamping SAE latents: the operator against hand-written hooks, on both routes, and its effect."""

from __future__ import annotations

import pytest
import torch

from steerlens.backends import steering_hooks_on
from steerlens.sae import clamp_latents, clamp_operator, decompose_vector, latent_vector, typical_activations
from steerlens.toy import neutral_prompts, positive_mass

PROMPTS = neutral_prompts("sentiment")
HOOK = "blocks.2.hook_resid_post"


def by_hand(sae, values):
    """encode -> replace -> add the decode difference, written out with the SAE's weights (a TopK SAE)."""
    ids = torch.tensor(list(values))
    vals = torch.tensor(list(values.values()))
    norms = sae.W_dec.norm(dim=-1) if sae.cfg.rescale_acts_by_decoder_norm else torch.ones(sae.cfg.d_sae)

    def hook(act, hook=None):
        pre = ((act - sae.b_dec) @ sae.W_enc + sae.b_enc) * norms
        top = pre.topk(sae.cfg.k, dim=-1)
        z = torch.zeros_like(pre).scatter(-1, top.indices, top.values.relu())
        clamped = z.clone()
        clamped[..., ids] = vals
        return act + ((clamped - z) / norms) @ sae.W_dec

    return hook


@pytest.fixture(scope="module")
def positive_latent(toy_model, toy_sae, sentiment):
    """The sentiment vector's top latent with a positive cosine, and its typical activation."""
    frame = decompose_vector(sentiment, toy_sae, top_k=5)
    latent = int(frame[frame.cosine > 0].iloc[0].latent)
    return latent, float(typical_activations(toy_model, toy_sae, latent, PROMPTS)[0])


@torch.no_grad()
def test_clamp_equals_hand_written_hook(toy_model, toy_sae, positive_latent):
    latent, typical = positive_latent
    values = {latent: 3 * typical, 0: 0.0}
    tokens = toy_model.to_tokens(PROMPTS[:8], padding_side="right")
    with toy_model.hooks(fwd_hooks=[(HOOK, by_hand(toy_sae, values))]):
        expected = toy_model(tokens)
    with clamp_latents(toy_model, toy_sae, values):
        steered = toy_model(tokens)
    plain = toy_model(tokens)
    torch.testing.assert_close(steered, expected, atol=1e-4, rtol=1e-4)
    assert (steered - plain).abs().max() > 0.1 and steering_hooks_on(toy_model) == []


@torch.no_grad()
def test_clamp_keeps_reconstruction_error_and_positions(toy_model, toy_sae, positive_latent):
    latent, typical = positive_latent
    _, cache = toy_model.run_with_cache(PROMPTS[0], names_filter=[HOOK])
    act = cache[HOOK]
    delta = clamp_operator(toy_sae, {latent: 5 * typical})(act, torch.zeros(128))
    z = toy_sae.encode(act)
    target = z.clone()
    target[..., latent] = 5 * typical
    # The steered activation is the clamped reconstruction plus the untouched reconstruction error.
    torch.testing.assert_close(act + delta, toy_sae.decode(target) + (act - toy_sae.decode(z)), atol=1e-4, rtol=0)
    assert (z[..., latent] != 5 * typical).all() and delta.norm(dim=-1).min() > 0
    recorded = []
    with (
        clamp_latents(toy_model, toy_sae, {latent: 5 * typical}, min_token_index=3),
        toy_model.hooks(fwd_hooks=[(HOOK, lambda a, hook: recorded.append(a.clone()))]),
    ):
        toy_model(PROMPTS[0])
    torch.testing.assert_close(recorded[0][:, :3], act[:, :3])  # positions before min_token_index untouched
    torch.testing.assert_close(recorded[0][:, 3:], act[:, 3:] + delta[:, 3:])


def test_clamping_the_sentiment_latent_high_raises_positive_share(toy_model, toy_sae, positive_latent):
    latent, typical = positive_latent
    base = positive_mass(toy_model, PROMPTS).mean().item()
    shares = []
    for factor in (2.0, 4.0):
        with clamp_latents(toy_model, toy_sae, {latent: factor * typical}):
            shares.append(positive_mass(toy_model, PROMPTS).mean().item())
    with clamp_latents(toy_model, toy_sae, {latent: 0.0}):
        off = positive_mass(toy_model, PROMPTS).mean().item()
    print(
        f"\nclamp latent {latent}: positive share {base:.3f} -> 2x {shares[0]:.3f}, 4x {shares[1]:.3f}, off {off:.3f}"
    )
    assert shares[0] > base + 0.03 and shares[1] > shares[0] + 0.03
    assert off < shares[0]


@torch.no_grad()
def test_hf_and_hooked_transformer_routes_agree(tiny_pair, tiny_sae):
    from tiny_hf import INPUT_IDS

    hf, tl, tokenizer = tiny_pair
    acts = torch.stack(
        [
            tiny_sae.encode(
                tl.run_with_cache(INPUT_IDS, names_filter=["blocks.1.hook_resid_post"])[1]["blocks.1.hook_resid_post"]
            )
        ]
    ).flatten(0, -2)
    latent = int((acts > 0).sum(0).argmax())  # the latent that fires most often on these inputs
    vec = latent_vector(tiny_sae, latent, model=tl, prompts=INPUT_IDS.tolist())
    vec_hf = latent_vector(tiny_sae, latent, model=hf, prompts=INPUT_IDS.tolist(), tokenizer=tokenizer)
    torch.testing.assert_close(vec_hf.layer_activations[1], vec.layer_activations[1], atol=1e-4, rtol=1e-4)
    plain = hf(INPUT_IDS).logits
    for steer in (lambda m: vec.apply(m, multiplier=3.0), lambda m: clamp_latents(m, tiny_sae, {latent: 4.0})):
        with steer(hf):
            on_hf = hf(INPUT_IDS).logits
        with steer(tl):
            on_tl = tl(INPUT_IDS)
        torch.testing.assert_close(on_hf, on_tl, atol=1e-4, rtol=1e-4)
        assert (on_hf - plain).abs().max() > 0.05
    hand = by_hand(tiny_sae, {latent: 4.0})
    with tl.hooks(fwd_hooks=[("blocks.1.hook_resid_post", hand)]):
        expected = tl(INPUT_IDS)
    with clamp_latents(hf, tiny_sae, {latent: 4.0}):
        torch.testing.assert_close(hf(INPUT_IDS).logits, expected, atol=1e-4, rtol=1e-4)
