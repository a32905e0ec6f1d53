"""Per-layer probes against hand computations: activations from run_with_cache, directions by numpy / sklearn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import PAIRS, make_model
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from steerlens.analysis.probes import lda_direction, probe_report
from steerlens.errors import InvalidArgumentError

TRAIN, HELD_OUT = PAIRS[:7], PAIRS[7:]


@pytest.fixture(scope="module")
def model():
    return make_model(n_layers=3, seed=4)


def last_token_acts(model, texts, layer):
    """Residual after block ``layer`` at each prompt's last token, one prompt at a time (no padding)."""
    name = f"blocks.{layer}.hook_resid_post"
    rows = []
    for text in texts:
        _, cache = model.run_with_cache(model.to_tokens(text), names_filter=name)
        rows.append(cache[name][0, -1].double().numpy())
    return np.stack(rows)


def test_lda_direction_is_sklearns():
    gen = np.random.default_rng(0)
    pos = gen.normal(size=(20, 6)) + 1.0
    neg = gen.normal(size=(20, 6)) * np.linspace(0.5, 2, 6)
    for shrinkage in (0.0, 0.3, 1.0):
        lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage)
        lda.fit(np.concatenate([neg, pos]), np.r_[np.zeros(20), np.ones(20)])
        np.testing.assert_allclose(lda_direction(pos, neg, shrinkage), lda.coef_[0], rtol=1e-8, atol=1e-10)


def test_probe_report_equals_hand_probes(model):
    df = probe_report(model, TRAIN, HELD_OUT, layers=[1, 2])
    assert list(df[["layer", "method"]].itertuples(index=False, name=None)) == [
        (layer, method) for layer in (1, 2) for method in ("mean_diff", "lda", "logistic")
    ]
    for layer in (1, 2):
        tp, tn = (last_token_acts(model, [p[i] for p in TRAIN], layer) for i in (0, 1))
        hp, hn = (last_token_acts(model, [p[i] for p in HELD_OUT], layer) for i in (0, 1))
        mean_diff = tp.mean(0) - tn.mean(0)
        clf = LogisticRegression(max_iter=1000).fit(np.concatenate([tp, tn]), np.r_[np.ones(7), np.zeros(7)])
        directions = {"mean_diff": mean_diff, "lda": lda_direction(tp, tn, 0.1), "logistic": clf.coef_[0]}
        for method, w in directions.items():
            row = df[(df["layer"] == layer) & (df["method"] == method)].iloc[0]
            s_pos, s_neg = hp @ w, hn @ w
            labels = np.r_[np.ones(len(s_pos)), np.zeros(len(s_neg))]
            assert math.isclose(row["auc"], roc_auc_score(labels, np.r_[s_pos, s_neg]), abs_tol=1e-9)
            assert math.isclose(row["train_auc"], roc_auc_score(np.r_[np.ones(7), np.zeros(7)], np.r_[tp @ w, tn @ w]))
            pooled = math.sqrt((s_pos.var() + s_neg.var()) / 2)
            assert math.isclose(row["separation"], (s_pos.mean() - s_neg.mean()) / pooled, rel_tol=1e-4)
            held = ((s_pos > row["threshold"]).sum() + (s_neg <= row["threshold"]).sum()) / len(labels)
            assert math.isclose(row["accuracy"], held)
            cos = w @ mean_diff / (np.linalg.norm(w) * np.linalg.norm(mean_diff))
            assert math.isclose(row["cos_mean_diff"], cos, rel_tol=1e-4, abs_tol=1e-6)
    best = df.sort_values(["auc", "separation"], ascending=False).iloc[0]
    assert df.attrs["best"] == (best["layer"], best["method"])


def test_probe_report_checks_its_options(model):
    with pytest.raises(InvalidArgumentError, match="methods must be some of"):
        probe_report(model, TRAIN, HELD_OUT, methods=["pca"])
    with pytest.raises(InvalidArgumentError, match="lda_shrinkage"):
        probe_report(model, TRAIN, HELD_OUT, lda_shrinkage=2.0)
    with pytest.raises(TypeError):
        probe_report(model, TRAIN, HELD_OUT, logistic_kwargs={"not_an_option": 1})
    df = probe_report(model, TRAIN, HELD_OUT, layers=-1, methods="lda")
    assert list(df["layer"]) == [2] and list(df["method"]) == ["lda"]
