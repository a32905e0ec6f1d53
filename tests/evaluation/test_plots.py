"""Plots return figures with the expected cells, lines, bars and labels."""

from __future__ import annotations

import sys

import matplotlib
import pandas as pd
import pytest

matplotlib.use("Agg")

from helpers import random_vector  # noqa: E402

from steerlens import (
    compare_logits,  # noqa: E402
    logit_diff,  # noqa: E402
    sweep_layers,  # noqa: E402
)
from steerlens.errors import InvalidArgumentError  # noqa: E402
from steerlens.evaluation import plot_metric_vs_multiplier, plot_sweep_heatmap, plot_top_k_shift  # noqa: E402

PROMPTS = ["I love this film", "The food was"]
MULTS = [-2.0, 0.0, 1.0, 3.0]


@pytest.fixture(scope="module")
def vec(model):
    return random_vector(model, range(4))


@pytest.fixture(scope="module")
def sweep(model, vec):
    return sweep_layers(model, vec, PROMPTS, multipliers=MULTS)


def test_heatmap_has_one_cell_per_layer_and_multiplier(sweep):
    fig = plot_sweep_heatmap(sweep)
    ax = fig.axes[0]
    assert ax.images[0].get_array().shape == (4, 4)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("multiplier", "layer")
    assert ax.get_title() == "kl by layer and multiplier"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["-2", "0", "1", "3"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "2", "3"]
    assert len(ax.texts) == 16
    assert fig.axes[1].get_ylabel() == "kl"  # colour bar
    assert ax.images[0].get_array()[2, 3] == pytest.approx(sweep.query("layer == 2 and multiplier == 3").kl.item())


def test_signed_metric_uses_centred_diverging_map(model, vec):
    metric = logit_diff(40, 41, relative=True)
    frame = sweep_layers(model, vec, PROMPTS, multipliers=MULTS, metric=metric, per_prompt=True)
    fig = plot_sweep_heatmap(frame, annotate=False)
    image = fig.axes[0].images[0]
    lo, hi = image.get_clim()
    assert lo == -hi and image.get_cmap().name == "RdBu_r"
    assert len(fig.axes[0].texts) == 0
    # per-prompt frames are averaged
    cell = frame.query("layer == 1 and multiplier == -2").delta_logit_diff.mean()
    assert image.get_array()[1, 0] == pytest.approx(cell)


def test_lines_per_layer(sweep):
    fig = plot_metric_vs_multiplier(sweep, layers=[1, 3], show_std=True)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")] == ["1", "3"]
    assert list(ax.get_lines()[0].get_xdata()) == MULTS
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("multiplier", "kl")
    assert ax.get_legend().get_title().get_text() == "layer"
    assert len(ax.collections) == 2  # std bands
    with pytest.raises(InvalidArgumentError, match="not in the sweep"):
        plot_metric_vs_multiplier(sweep, layers=[7])


def test_top_k_shift_bars(model, vec):
    frame = compare_logits(model, vec, PROMPTS[:1], multipliers=[4.0], layers=[1], top_k=5)
    row = frame.iloc[0]
    fig = plot_top_k_shift(frame)
    ax = fig.axes[0]
    tokens = set(t for t, _ in row.top_k_before) | set(t for t, _ in row.top_k_after)
    assert len(ax.get_yticklabels()) == len(tokens)
    assert len(ax.patches) == 10
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["unsteered", "steered"]
    assert ax.get_xlabel() == "next-token probability"
    assert "layer 1, multiplier 4" in ax.get_title()
    with pytest.raises(InvalidArgumentError, match="one row"):
        plot_top_k_shift(pd.concat([frame, frame]))


def test_missing_column_and_missing_matplotlib(sweep, monkeypatch):
    with pytest.raises(InvalidArgumentError, match="no column"):
        plot_sweep_heatmap(sweep, value="nope")
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"steerlens\[plot\]"):
        plot_sweep_heatmap(sweep)
