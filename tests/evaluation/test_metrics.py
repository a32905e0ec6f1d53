"""Next-token metrics (``steerlens/evaluation/metrics.py``) against the same quantities computed by
hand in float64 numpy from the logits: KL, argmax changes, log-odds, masses and shares of token
groups, the damage flag, and token strings bound in a prompt's context."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_tokenizer

from steerlens.errors import InvalidArgumentError, TargetTokenError
from steerlens.evaluation.metrics import (
    DEGENERATE_FRACTION,
    PRESETS,
    argmax_changed,
    bind_per_prompt,
    degenerate,
    kl_divergence,
    logit_diff,
    prob_mass,
    prob_share,
    resolve_metric,
    target_mass,
    token_ids,
)

VOCAB = 11


def logits(seed: int, rows: int = 4) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


def probs(x: torch.Tensor) -> np.ndarray:
    z = x.double().numpy()
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


STEERED, UNSTEERED = logits(0), logits(1)
P, Q = probs(STEERED), probs(UNSTEERED)


def close(value: torch.Tensor, expected: np.ndarray) -> None:
    np.testing.assert_allclose(value.double().numpy(), expected, rtol=1e-5, atol=1e-6)


def test_kl_is_the_sum_of_p_log_p_over_q():
    close(kl_divergence(STEERED, UNSTEERED), (P * np.log(P / Q)).sum(-1))
    close(kl_divergence(STEERED, STEERED), np.zeros(4))
    assert (kl_divergence(STEERED, UNSTEERED) > 0).all()


def test_argmax_changed_by_hand():
    other = STEERED.clone()
    other[1] = UNSTEERED[1]
    expected = [float(np.argmax(a) != np.argmax(b)) for a, b in zip(other.numpy(), STEERED.numpy())]
    assert argmax_changed(other, STEERED).tolist() == expected and sum(expected) <= 1


def test_logit_diff_of_single_tokens_is_the_logit_difference():
    close(logit_diff(3, 7)(STEERED, UNSTEERED), (STEERED[:, 3] - STEERED[:, 7]).double().numpy())


def test_group_metrics_are_sums_of_probabilities():
    pos, neg = [1, 2, 2], [5, 9]  # a token counts once in a group
    p_pos, p_neg = P[:, [1, 2]].sum(-1), P[:, [5, 9]].sum(-1)
    q_pos, q_neg = Q[:, [1, 2]].sum(-1), Q[:, [5, 9]].sum(-1)
    close(logit_diff(pos, neg)(STEERED, UNSTEERED), np.log(p_pos / p_neg))
    close(logit_diff(pos, neg, relative=True)(STEERED, UNSTEERED), np.log(p_pos / p_neg) - np.log(q_pos / q_neg))
    close(prob_mass(pos)(STEERED, UNSTEERED), p_pos)
    close(prob_mass(pos, relative=True)(STEERED, UNSTEERED), p_pos - q_pos)
    close(prob_share(pos, neg)(STEERED, UNSTEERED), p_pos / (p_pos + p_neg))
    close(prob_share(pos, neg, relative=True)(STEERED, UNSTEERED), p_pos / (p_pos + p_neg) - q_pos / (q_pos + q_neg))


def test_target_mass_and_the_degenerate_flag():
    share = prob_share([1, 2], [5])
    close(target_mass(share, None, STEERED, [0, 1, 2, 3]), P[:, [1, 2, 5]].sum(-1))
    assert target_mass(kl_divergence, None, STEERED, [0]) is None  # not a token metric
    low = DEGENERATE_FRACTION * 0.5
    assert degenerate(torch.tensor([low, 0.5]), torch.tensor([1.0, 1.0])).tolist() == [True, False]


def test_presets_and_resolution():
    assert resolve_metric("kl") == ("kl", PRESETS["kl"])
    assert resolve_metric(prob_mass([1]))[0] == "prob_mass"
    assert resolve_metric(prob_share([1], [2], relative=True))[0] == "delta_prob_share"

    def my_metric(steered, unsteered):
        return steered[:, 0]

    assert resolve_metric(my_metric) == ("my_metric", my_metric)
    with pytest.raises(InvalidArgumentError, match="unknown metric 'kll'"):
        resolve_metric("kll")
    with pytest.raises(InvalidArgumentError, match="name or a callable"):
        resolve_metric(3)  # type: ignore[arg-type]


def test_token_strings_are_encoded_by_the_tokenizer():
    tok = make_tokenizer()
    word = "b"
    (first,) = tok.encode(word, add_special_tokens=False)[:1]
    assert token_ids(tok, [word, first, 4]) == [first, 4]
    unbound = prob_mass([word])
    with pytest.raises(InvalidArgumentError, match="bind it first"):
        unbound(STEERED, UNSTEERED)
    (bound,) = bind_per_prompt(unbound, tok, ["a"])
    assert bound.ids == ((tok.encode("ab", add_special_tokens=False)[-1],),)
    assert bind_per_prompt(prob_mass([3]), tok, ["a"]) is None  # ids need no binding


def test_bad_tokens_are_errors():
    tok = make_tokenizer()
    with pytest.raises(InvalidArgumentError, match="empty"):
        token_ids(tok, [])
    with pytest.raises(InvalidArgumentError, match="strings or int ids"):
        token_ids(tok, [True])
    with pytest.raises(InvalidArgumentError, match="no tokenizer"):
        token_ids(None, ["a"])
    with pytest.raises(TargetTokenError):
        token_ids(tok, ["bcd"], context="a")
