"""The separation half of the layer report: separation of held-out pairs per layer, against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_hf import make_hf_model, make_tokenizer

from steerlens import train_steering_vector
from steerlens.analysis import separation_report
from steerlens.toy import sentiment_pairs


def brute_auc(pos, neg) -> float:
    """Every (positive, negative) comparison, ties one half."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


@pytest.fixture(scope="module")
def sentiment(toy):
    return train_steering_vector(toy, None, sentiment_pairs("train"), batch_size=32)  # every layer


def test_toy_sentiment_layers_separate_held_out_pairs(toy, sentiment):
    held_out = sentiment_pairs("test")
    report = separation_report(toy, sentiment, held_out)
    assert report.layer.tolist() == [0, 1, 2, 3]
    assert sorted(report["rank"]) == [1, 2, 3, 4]
    best = report.attrs["best_layer"]
    assert report.set_index("layer").loc[best, "auc"] >= 0.95
    # Independently: project the last-token residual of each held-out prompt by hand.
    for layer in (0, best):
        unit = sentiment.layer_activations[layer] / sentiment.layer_activations[layer].norm()
        scores = []
        for pair in held_out:
            _, cache = toy.run_with_cache(list(pair), padding_side="left")  # left: the last column is real
            scores.append((cache[f"blocks.{layer}.hook_resid_post"][:, -1] @ unit).tolist())
        pos, neg = np.array(scores).T
        row = report.set_index("layer").loc[layer]
        assert row.auc == pytest.approx(brute_auc(pos, neg))
        assert row.pair_accuracy == pytest.approx(np.mean(pos > neg))
        cut = row.threshold
        assert row.accuracy == pytest.approx((np.sum(pos > cut) + np.sum(neg <= cut)) / (2 * len(pos)))
    print("\n" + report.round(3).to_string())


def test_toy_norms_and_neighbour_cosines(toy, sentiment):
    held_out = sentiment_pairs("test")[:6]
    report = separation_report(toy, sentiment, held_out).set_index("layer")
    prompts = [p for pair in held_out for p in pair]
    for layer in sentiment.layers:
        norms = torch.cat(
            [
                toy.run_with_cache(p)[1][f"blocks.{layer}.hook_resid_post"][0, 1:].norm(dim=-1)  # BOS left out
                for p in prompts
            ]
        )
        row = report.loc[layer]
        assert row.resid_norm == pytest.approx(float(norms.mean()), rel=1e-5)
        assert row.vector_norm == pytest.approx(sentiment.norms()[layer], rel=1e-6)
        assert row.norm_ratio == pytest.approx(row.vector_norm / row.resid_norm)
    for layer in (0, 1, 2):
        a, b = sentiment.layer_activations[layer].double(), sentiment.layer_activations[layer + 1].double()
        expected = float(a @ b / (a.norm() * b.norm()))
        assert report.loc[layer, "cos_next"] == pytest.approx(expected, abs=1e-6)
        assert report.loc[layer + 1, "cos_prev"] == pytest.approx(expected, abs=1e-6)
    assert math.isnan(report.loc[0, "cos_prev"]) and math.isnan(report.loc[3, "cos_next"])


def test_hugging_face_model_report_matches_its_hidden_states():
    model, tokenizer = make_hf_model("qwen2"), make_tokenizer()
    pairs = [
        ("the cat sat on the mat", "the dog ran"),
        ("a big happy dog", "a small sad dog"),
        ("red and blue", "blue or red"),
        ("the cat ran fast", "the cat sat"),
    ]
    vec = train_steering_vector(model, tokenizer, pairs[:2], batch_size=2)
    report = separation_report(model, vec, pairs, tokenizer=tokenizer, layers=[0]).set_index("layer")
    unit = vec.layer_activations[0] / vec.layer_activations[0].norm()
    scores, norms = [], []
    for pair in pairs:
        row = []
        for text in pair:
            ids = torch.tensor([tokenizer(text)["input_ids"]])
            with torch.no_grad():
                hidden = model(ids, output_hidden_states=True).hidden_states[1][0]
            row.append(float(hidden[-1] @ unit))
            norms.append(hidden.norm(dim=-1))  # this tokenizer adds no BOS: every token counts
        scores.append(row)
    pos, neg = np.array(scores).T
    assert report.loc[0, "auc"] == pytest.approx(brute_auc(pos, neg))
    assert report.loc[0, "resid_norm"] == pytest.approx(float(torch.cat(norms).mean()), rel=1e-5)
