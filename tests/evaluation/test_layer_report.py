"""The layer report with steering: each layer's effect and damage at ±strength residual norms, against
``vec.apply`` at the equivalent multiplier and a plain forward pass, on both routes; and the rank it gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import PAIRS, make_model, random_vector
from tiny_hf import make_hf_model, make_tokenizer

from steerlens import SteeringVector, layer_report, logit_diff, prob_share, train_steering_vector
from steerlens.analysis import separation_report
from steerlens.errors import InvalidArgumentError
from steerlens.evaluation.layer_report import _ranked

pytestmark = pytest.mark.filterwarnings("ignore:the metric's tokens hold only")

PROMPTS = ["I love this film", "The food was delicious and", "What a lovely day", "sad"]
POSITIVE, NEGATIVE = [40, 50], [41, 51]


def by_hand(model, vec, layer, multiplier, ids, tokens, start=0):
    """(steered, unsteered) next-token logits of one unpadded prompt: ``vec.apply`` + a plain forward."""
    with torch.no_grad():
        clean = tokens(ids)
        with vec.select_layers([layer]).apply(model, multiplier=multiplier, min_token_index=start):
            steered = tokens(ids)
    return steered, clean


def hand_metric(logits: torch.Tensor, share: bool) -> float:
    logprobs = torch.log_softmax(logits.double(), -1)
    pos, neg = logprobs[POSITIVE].logsumexp(-1), logprobs[NEGATIVE].logsumexp(-1)
    return float(torch.sigmoid(pos - neg)) if share else float(pos - neg)


def hand_kl(steered: torch.Tensor, clean: torch.Tensor) -> float:
    p, q = torch.log_softmax(steered.double(), -1), torch.log_softmax(clean.double(), -1)
    return float((p.exp() * (p - q)).sum())


def hand_mass(logits: torch.Tensor) -> float:
    return float(torch.softmax(logits.double(), -1)[POSITIVE + NEGATIVE].sum())


def check_against_hand(report, vec, model, encoded, norms, forward, strength, share, start=0):
    """Every steering column of ``report`` against the hand computation on each prompt's ids."""
    report = report.set_index("layer")
    for layer in vec.layers:
        row = report.loc[layer]
        multiplier = strength * norms[layer] / float(vec.layer_activations[layer].norm())
        assert row.steer_resid_norm == pytest.approx(norms[layer], rel=1e-5)
        assert row.multiplier == pytest.approx(multiplier, rel=1e-5)
        cells = {
            sign: [by_hand(model, vec, layer, sign * multiplier, ids, forward, start) for ids in encoded]
            for sign in (-1, 1)
        }
        minus = [hand_metric(steered, share) for steered, _ in cells[-1]]
        plus = [hand_metric(steered, share) for steered, _ in cells[1]]
        clean = [hand_metric(c, share) for _, c in cells[1]]
        assert row.metric_minus == pytest.approx(np.mean(minus), abs=1e-5)
        assert row.metric_plus == pytest.approx(np.mean(plus), abs=1e-5)
        assert row.metric_unsteered == pytest.approx(np.mean(clean), abs=1e-5)
        assert row.effect == pytest.approx(np.mean(plus) - np.mean(minus), abs=1e-5)
        assert row.effect_std == pytest.approx(np.std(np.subtract(plus, minus), ddof=1), abs=1e-5)
        kls = {sign: np.mean([hand_kl(s, c) for s, c in cells[sign]]) for sign in (-1, 1)}
        assert row.kl_minus == pytest.approx(kls[-1], abs=1e-5) and row.kl_plus == pytest.approx(kls[1], abs=1e-5)
        assert row.kl == pytest.approx(max(kls.values()), abs=1e-5)
        masses = {sign: np.mean([hand_mass(s) for s, _ in cells[sign]]) for sign in (-1, 1)}
        unsteered_mass = np.mean([hand_mass(c) for _, c in cells[1]])
        assert row.target_mass_minus == pytest.approx(masses[-1], abs=1e-6)
        assert row.target_mass_plus == pytest.approx(masses[1], abs=1e-6)
        assert row.target_mass_unsteered == pytest.approx(unsteered_mass, abs=1e-6)
        assert row.degenerate == (min(masses.values()) < 0.1 * unsteered_mass)


def decoder_outputs(model, encoded, layer):
    """The output of decoder layer ``layer`` on each unpadded prompt, read by a plain torch hook."""
    seen = []
    handle = model.model.layers[layer].register_forward_hook(
        lambda module, args, out: seen.append((out[0] if isinstance(out, tuple) else out)[0].detach())
    )
    try:
        with torch.no_grad():
            for ids in encoded:
                model(torch.tensor([ids]))
    finally:
        handle.remove()
    return seen


@pytest.fixture(scope="module")
def hooked():
    return make_model(seed=3)


@pytest.mark.parametrize("share", [False, True])
def test_hooked_transformer_columns_equal_apply_and_forward(hooked, share):
    vec = train_steering_vector(hooked, None, PAIRS[:6], batch_size=4)
    metric = prob_share(POSITIVE, NEGATIVE) if share else logit_diff(POSITIVE, NEGATIVE)
    report = layer_report(hooked, vec, PAIRS[6:], prompts=PROMPTS, metric=metric, strength=0.5, batch_size=3)
    encoded = [hooked.to_tokens(p)[0].tolist() for p in PROMPTS]
    norms = {}
    for layer in vec.layers:  # every content token of the prompts, the BOS left out
        acts = [
            hooked.run_with_cache(torch.tensor([ids]))[1][f"blocks.{layer}.hook_resid_post"][0, 1:] for ids in encoded
        ]
        norms[layer] = float(torch.cat(acts).norm(dim=-1).mean())
    check_against_hand(report, vec, hooked, encoded, norms, lambda ids: hooked(torch.tensor([ids]))[0, -1], 0.5, share)
    # The separation half is the separation report's, its rank kept as separation_rank.
    separation = separation_report(hooked, vec, PAIRS[6:]).set_index("layer")
    merged = report.set_index("layer")
    for column in ("auc", "accuracy", "pair_accuracy", "separation", "resid_norm", "norm_ratio", "cos_next"):
        pd.testing.assert_series_equal(merged[column], separation[column], check_names=False)
    assert (merged["separation_rank"] == separation["rank"]).all()
    assert report.attrs["metric"] == metric.name and "steering effect" in report.attrs["rank_by"]
    assert "separation only" in separation.attrs["rank_by"]


def test_hugging_face_columns_equal_apply_and_forward():
    model, tokenizer = make_hf_model("qwen2"), make_tokenizer()
    texts = ["the cat sat on the mat", "a big happy dog ran", "red and blue", "the small cat ran fast"]
    pairs = [("the cat sat on the mat", "the dog ran"), ("a big happy dog", "a small sad dog")]
    vec = random_vector(model.config.hidden_size, [0, 1], seed=2)
    report = layer_report(
        model, vec, pairs, tokenizer=tokenizer, prompts=texts, metric=logit_diff(POSITIVE, NEGATIVE), strength=0.3
    )
    encoded = [tokenizer(t)["input_ids"] for t in texts]  # this tokenizer adds no BOS: every token counts
    norms = {layer: float(torch.cat(decoder_outputs(model, encoded, layer)).norm(dim=-1).mean()) for layer in (0, 1)}
    check_against_hand(
        report, vec, model, encoded, norms, lambda ids: model(torch.tensor([ids])).logits[0, -1], 0.3, False
    )


def test_steer_from_a_position_equals_apply_from_there(hooked):
    vec = random_vector(hooked, [1, 2], seed=4)
    report = layer_report(
        hooked, vec, PAIRS[:4], prompts=PROMPTS, metric=logit_diff(POSITIVE, NEGATIVE), strength=0.4, steer_from=2
    )
    encoded = [hooked.to_tokens(p)[0].tolist() for p in PROMPTS]
    norms = {
        layer: float(
            torch.cat(
                [
                    hooked.run_with_cache(torch.tensor([ids]))[1][f"blocks.{layer}.hook_resid_post"][0, 1:]
                    for ids in encoded
                ]
            )
            .norm(dim=-1)
            .mean()
        )
        for layer in (1, 2)
    }
    forward = lambda ids: hooked(torch.tensor([ids]))[0, -1]  # noqa: E731
    check_against_hand(report, vec, hooked, encoded, norms, forward, 0.4, False, start=2)
    everywhere = layer_report(
        hooked, vec, PAIRS[:4], prompts=PROMPTS, metric=logit_diff(POSITIVE, NEGATIVE), strength=0.4
    )
    assert (report.effect - everywhere.effect).abs().max() > 1e-4


def test_rank_follows_effect_within_budget():
    frame = pd.DataFrame(
        {
            "layer": [0, 1, 2, 3, 4, 5],
            "effect": [0.5, 3.0, 0.9, 5.0, 0.7, np.nan],
            "kl": [0.1, 2.0, 0.2, 0.1, 0.3, 0.1],
            "degenerate": [False, False, False, True, False, False],
        }
    )
    ranked = _ranked(frame, budget=1.0).set_index("layer")
    # Within budget by effect (2, 4, 0, then 5 whose effect is unknown), then over budget (1), then degenerate (3).
    assert ranked["rank"].to_dict() == {2: 1, 4: 2, 0: 3, 5: 4, 1: 5, 3: 6}
    assert ranked["within_budget"].to_dict() == {0: True, 1: False, 2: True, 3: False, 4: True, 5: True}


def test_over_budget_layers_rank_after_every_layer_within_it(hooked):
    vec = random_vector(hooked, [0, 1, 2, 3], seed=6)
    metric = logit_diff(POSITIVE, NEGATIVE)
    free = layer_report(hooked, vec, PAIRS[:4], prompts=PROMPTS, metric=metric, strength=1.0, max_kl=100.0)
    assert free["within_budget"].all()
    assert free.sort_values("rank")["effect"].is_monotonic_decreasing
    # A budget that the layer with the largest effect exceeds.
    top = free.loc[free["rank"] == 1].iloc[0]
    budget = float(top.kl) - 1e-6
    assert (free.kl <= budget).any(), "the test needs a layer within the budget"
    tight = layer_report(hooked, vec, PAIRS[:4], prompts=PROMPTS, metric=metric, strength=1.0, max_kl=budget)
    inside, outside = tight[tight.within_budget], tight[~tight.within_budget]
    assert int(top.layer) in outside.layer.tolist()
    assert inside["rank"].max() < outside["rank"].min()
    assert inside.sort_values("rank")["effect"].is_monotonic_decreasing
    assert tight.attrs["best_layer"] == int(inside.loc[inside["rank"] == 1, "layer"].iloc[0])


def test_a_degenerate_layer_is_never_rank_one():
    """Layer 3 pushes one other token up so far that the metric's tokens lose their mass at +strength, while
    the part of its direction along W_U[positive] − W_U[negative] gives it the largest effect."""
    model = make_model(seed=3)
    with torch.no_grad():
        model.unembed.W_U.mul_(3.0)  # a wider logit range than the random init's, so tokens can lose their mass
        unsteered = torch.stack([model(p)[0, -1].softmax(-1) for p in PROMPTS]).mean(0)
    top = unsteered.topk(4).indices.tolist()  # the metric's tokens carry real mass unsteered
    positive, negative = top[:2], top[2:]
    w_u = model.W_U.detach()
    direction = w_u[:, 60] - w_u[:, top].mean(1) + 0.8 * (w_u[:, positive].mean(1) - w_u[:, negative].mean(1))
    g = torch.Generator().manual_seed(3)
    vec = SteeringVector({1: torch.randn(32, generator=g), 2: torch.randn(32, generator=g), 3: direction})
    with pytest.warns(RuntimeWarning, match="1 of 3 layers are degenerate"):
        report = layer_report(
            model, vec, PAIRS[:4], prompts=PROMPTS, metric=logit_diff(positive, negative), strength=1.0, max_kl=1e9
        )
    report = report.set_index("layer")
    assert report["degenerate"].tolist() == [False, False, True]
    assert report.loc[3, "effect"] == report["effect"].max()  # without the flag, layer 3 would be rank 1
    assert report.loc[3, "rank"] == 3 and report.attrs["best_layer"] == report["effect"].iloc[:2].idxmax()
    # By hand: the mass of the metric's tokens at +strength against the unsteered mass.
    forward = lambda ids: model(torch.tensor([ids]))[0, -1]  # noqa: E731
    masses = []
    for prompt in PROMPTS:
        ids = model.to_tokens(prompt)[0].tolist()
        steered, clean = by_hand(model, vec, 3, float(report.loc[3, "multiplier"]), ids, forward)
        probs = [torch.softmax(x.double(), -1)[top].sum().item() for x in (steered, clean)]
        masses.append(probs)
    steered_mass, clean_mass = np.mean(masses, axis=0)
    assert report.loc[3, "target_mass_plus"] == pytest.approx(steered_mass, abs=1e-6)
    assert steered_mass < 0.1 * clean_mass


def test_separation_only_without_prompts_and_bad_arguments(hooked):
    vec = random_vector(hooked, [1, 2], seed=1)
    report = layer_report(hooked, vec, PAIRS[:4])
    pd.testing.assert_frame_equal(report, separation_report(hooked, vec, PAIRS[:4]))
    assert report.attrs["rank_by"].startswith("separation only")
    metric = logit_diff(POSITIVE, NEGATIVE)
    with pytest.raises(InvalidArgumentError, match="metric is missing"):
        layer_report(hooked, vec, PAIRS[:4], prompts=PROMPTS)
    with pytest.raises(InvalidArgumentError, match="prompts is missing"):
        layer_report(hooked, vec, PAIRS[:4], metric=metric)
    with pytest.raises(InvalidArgumentError, match="strength"):
        layer_report(hooked, vec, PAIRS[:4], prompts=PROMPTS, metric=metric, strength=0.0)
    with pytest.raises(InvalidArgumentError, match="max_kl"):
        layer_report(hooked, vec, PAIRS[:4], prompts=PROMPTS, metric=metric, max_kl=-1.0)
