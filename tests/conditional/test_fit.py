"""Fitting a condition's threshold: scores, AUC and threshold against run_with_cache and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerlens import fit_condition, train_steering_vector
from steerlens.conditional import Condition, condition_accuracy
from steerlens.errors import InvalidArgumentError
from steerlens.toy import topic_pairs


def topic_texts(split):
    """(food texts, travel and film texts): the held-out halves of topic pairs."""
    food_travel, food_film = topic_pairs(split), topic_pairs(split, "food", "film")
    return [f for f, _ in food_travel], [t for _, t in food_travel] + [t for _, t in food_film]


@pytest.fixture(scope="module")
def topic(toy):
    return train_steering_vector(toy, None, topic_pairs("train"), layers=[1, 3], batch_size=32)  # food - travel


@pytest.fixture(scope="module")
def food(toy, topic):
    steer, other = topic_texts("train")
    return fit_condition(toy, topic, steer, other, layer=1, aggregate="last")


def scores_by_hand(model, direction, prompts, layer, aggregate):
    """Projection on the unit direction of resid_post at ``layer``, at the last token or averaged past BOS."""
    unit = direction / direction.norm()
    out = []
    for prompt in prompts:
        _, cache = model.run_with_cache(prompt, names_filter=f"blocks.{layer}.hook_resid_post")
        projection = cache[f"blocks.{layer}.hook_resid_post"][0] @ unit
        out.append(projection[-1] if aggregate == "last" else projection[1:].mean())
    return torch.stack(out)


def test_fitted_topic_condition_holds_on_held_out_texts(toy, food):
    steer, other = topic_texts("test")
    print(
        f"\nfood condition: fit accuracy {food.accuracy:.3f}, held-out accuracy "
        f"{condition_accuracy(toy, food.condition, steer, other):.3f}, threshold {food.condition.threshold:.3f}"
    )
    assert food.auc == 1.0 and food.condition.above
    assert condition_accuracy(toy, food.condition, steer, other) == 1.0


def test_fit_scores_auc_and_threshold_match_an_independent_computation(toy, topic):
    steer, other = topic_texts("test")
    steer, other = steer[:6], other[:6] + ["The", "I went to the"]
    fitted = fit_condition(toy, topic, steer, other, layer=1)  # aggregate="mean", skip_first
    direction = topic.layer_activations[1]
    hand_steer = scores_by_hand(toy, direction, steer, 1, "mean")
    hand_other = scores_by_hand(toy, direction, other, 1, "mean")
    torch.testing.assert_close(fitted.steer_scores, hand_steer, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fitted.other_scores, hand_other, atol=1e-4, rtol=1e-4)
    pos, neg = hand_steer.numpy(), hand_other.numpy()
    auc = float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())
    assert fitted.auc == pytest.approx(max(auc, 1 - auc), abs=1e-6)
    # No cut anywhere does better than the fitted threshold, and the fitted one scores what it reports.
    cuts = np.concatenate([pos, neg, [pos.min() - 1, neg.min() - 1]])
    best = max((np.sum(pos > c) + np.sum(neg <= c)) / (len(pos) + len(neg)) for c in cuts)
    t = fitted.condition.threshold
    assert fitted.accuracy == pytest.approx(best)
    assert fitted.accuracy == pytest.approx((np.sum(pos > t) + np.sum(neg <= t)) / (len(pos) + len(neg)))
    assert fitted.condition.above and fitted.condition.layer == 1 and fitted.condition.aggregate == "mean"


def test_prompts_to_steer_scoring_lower_give_a_below_condition(toy, topic):
    steer, other = topic_texts("test")
    fitted = fit_condition(toy, topic, other[:8], steer[:8], layer=1, aggregate="last")
    assert not fitted.condition.above and fitted.auc == 1.0
    hand = scores_by_hand(toy, topic.layer_activations[1], other[:8] + steer[:8], 1, "last")
    assert fitted.condition.holds(hand).tolist() == [True] * 8 + [False] * 8
    assert condition_accuracy(toy, fitted.condition, other[:8], steer[:8]) == 1.0


def test_condition_accuracy_counts_both_sides_by_hand(toy, topic):
    steer, other = topic_texts("test")
    steer, other = steer[:5], other[:5]
    direction = topic.layer_activations[1]
    hand_steer = scores_by_hand(toy, direction, steer, 1, "last")
    hand_other = scores_by_hand(toy, direction, other, 1, "last")
    ranked = hand_steer.sort().values
    threshold = float(ranked[1] + ranked[2]) / 2  # 2 of the 5 to-steer prompts under it: wrongly off
    condition = Condition(direction, 1, threshold=threshold, aggregate="last")
    expected = (int((hand_steer > threshold).sum()) + int((hand_other <= threshold).sum())) / 10
    assert expected < 1.0
    assert condition_accuracy(toy, condition, steer, other) == pytest.approx(expected)


def test_negative_layer_counts_from_the_end_and_bad_conditions_are_refused(toy, topic):
    steer, other = topic_texts("test")
    steer, other = steer[:4], other[:4]
    fitted = fit_condition(toy, topic, steer, other, layer=1 - toy.cfg.n_layers)
    assert fitted.condition.layer == 1
    torch.testing.assert_close(fitted.steer_scores, fit_condition(toy, topic, steer, other, layer=1).steer_scores)
    with pytest.raises(InvalidArgumentError, match="Condition or a SteeringVector"):
        fit_condition(toy, "food", steer, other)
    with pytest.raises(InvalidArgumentError, match="reads layer 1"):
        fit_condition(toy, Condition(topic.layer_activations[1], 1), steer, other, layer=3)
