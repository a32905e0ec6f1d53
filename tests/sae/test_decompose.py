"""Decomposing a steering vector into SAE latents: cosines, activation changes, explained shares."""

from __future__ import annotations

import pytest
import torch

from steerlens.sae import decompose_vector, explained_share, plot_decomposition
from steerlens.toy import neutral_prompts

PROMPTS = neutral_prompts("sentiment")[:12]
HOOK = "blocks.2.hook_resid_post"


@pytest.fixture(scope="module")
def frame(toy_model, toy_sae, sentiment):
    return decompose_vector(sentiment, toy_sae, model=toy_model, prompts=PROMPTS, multiplier=0.5, top_k=6)


def test_cosines_match_decoder_rows(frame, toy_sae, sentiment):
    v = sentiment.layer_activations[2]
    rows = toy_sae.W_dec.detach()  # cosines do not depend on the rows' norms
    cosines = torch.nn.functional.cosine_similarity(rows, v[None], dim=-1)
    best = cosines.abs().topk(6).indices.tolist()
    assert set(best) <= set(frame.latent)
    got = frame.set_index("latent")["cosine"]
    for latent in frame.latent:
        assert got[latent] == pytest.approx(float(cosines[latent]), abs=1e-5)
    assert list(frame.columns) == [
        "latent",
        "cosine",
        "activation_change",
        "explained_share",
        "cumulative_share",
        "found_by",
    ]
    assert (frame.cosine.abs().diff().dropna() <= 1e-9).all()  # ordered by |cosine|


@torch.no_grad()
def test_activation_changes_match_hand_computation(frame, toy_model, toy_sae, sentiment):
    change = torch.zeros(toy_sae.cfg.d_sae)
    n = 0
    for prompt in PROMPTS:
        _, cache = toy_model.run_with_cache(prompt, names_filter=[HOOK])
        act = cache[HOOK][0, 1:]  # no BOS
        change += (toy_sae.encode(act + 0.5 * sentiment.layer_activations[2]) - toy_sae.encode(act)).sum(0)
        n += act.shape[0]
    change /= n
    got = frame.set_index("latent")["activation_change"]
    for latent in frame.latent:
        assert got[latent] == pytest.approx(float(change[latent]), abs=1e-3)
    moved = set(change.abs().topk(6).indices.tolist())
    assert moved <= set(frame.latent)
    assert set(frame[frame.found_by != "cosine"].latent) == moved


def test_top_latents_explain_more_than_random_ones(frame, toy_sae, sentiment):
    v = sentiment.layer_activations[2]
    k = 6
    top = frame.latent.tolist()[:k]
    share = explained_share(v, toy_sae, top)
    assert share == pytest.approx(frame.cumulative_share.iloc[k - 1])
    generator = torch.Generator().manual_seed(0)
    random_shares = [
        explained_share(v, toy_sae, torch.randperm(toy_sae.cfg.d_sae, generator=generator)[:k].tolist())
        for _ in range(10)
    ]
    print(
        f"\nexplained share of the top {k} latents {share:.3f}; random sets of {k}: "
        f"max {max(random_shares):.3f}, mean {sum(random_shares) / len(random_shares):.3f}"
    )
    assert share >= max(random_shares)
    # One latent: its squared cosine; a set: the projection onto the span, by least squares written out.
    basis = toy_sae.W_dec.detach()[top].double()  # the span does not depend on the rows' norms
    coeffs = torch.linalg.solve(basis @ basis.T, basis @ v.double())
    projected = coeffs @ basis
    assert share == pytest.approx(float(projected @ projected / (v.double() @ v.double())), rel=1e-6)
    assert frame.explained_share.iloc[0] == pytest.approx(frame.cosine.iloc[0] ** 2)


def test_wrong_site_is_refused(toy_sae, sentiment):
    from steerlens.errors import LayerError

    with pytest.raises(LayerError, match="no direction at layer 2"):
        decompose_vector(sentiment.__class__({1: sentiment.layer_activations[2]}, "resid_post"), toy_sae)
    with pytest.raises(LayerError, match="the SAE reads"):
        decompose_vector(sentiment.__class__({2: sentiment.layer_activations[2]}, "mlp_out"), toy_sae)


def test_plot(frame):
    pytest.importorskip("matplotlib")
    fig = plot_decomposition(frame, top=5)
    assert len(fig.axes) == 2 and len(fig.axes[0].patches) == 5
    geometry_only = frame.assign(activation_change=float("nan"))
    assert len(plot_decomposition(geometry_only).axes) == 1
