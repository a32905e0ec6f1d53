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


# -- degenerate cells are marked, so they cannot be read as wins ------------------------------------

LABEL = "degenerate: metric tokens < 10% of unsteered mass"


def damaged_frame(per_prompt: bool = False) -> pd.DataFrame:
    """A sweep-shaped table whose masses make exactly cells (layer 0, x3) and (layer 2, x-2) degenerate.

    Per prompt, prompt 1 of (layer 1, x1) loses its mass too, but the cell's mean keeps 0.5 of it
    (as sweep_layers flags cells, by their mean masses)."""
    kept = {(0, 3.0): 0.01, (2, -2.0): 0.05, (1, 1.0): 0.5}  # fraction of the unsteered mass kept
    rows = []
    for layer in (0, 1, 2):
        for m in (-2.0, 1.0, 3.0):
            fraction = kept.get((layer, m), 0.9)
            per = [fraction, fraction] if (layer, m) != (1, 1.0) else [0.95, 0.05]
            for index, f in enumerate(per):
                rows.append(
                    {
                        "layer": layer,
                        "multiplier": m,
                        "prompt_index": index,
                        "prob_share": 0.5 + 0.1 * layer + 0.01 * m,
                        "kl": 1.0 - f,
                        "target_mass": 0.4 * f,
                        "target_mass_unsteered": 0.4,
                        "degenerate": f < 0.1,
                    }
                )
    frame = pd.DataFrame(rows)
    if not per_prompt:
        frame = frame.groupby(["layer", "multiplier"], as_index=False).mean(numeric_only=True)
        frame["degenerate"] = frame.target_mass < 0.1 * frame.target_mass_unsteered
        frame = frame.drop(columns="prompt_index")
    frame.attrs["metric"] = "prob_share"
    return frame


def hatched_cells(fig) -> set[tuple[float, float]]:
    """(layer row, multiplier column) of every degenerate mark on the heatmap."""
    ax = fig.axes[0]
    marks = [p for p in ax.patches if p.get_gid() == "degenerate"]
    assert all(p.get_hatch() for p in marks)
    return {(p.get_y() + 0.5, p.get_x() + 0.5) for p in marks}


@pytest.mark.parametrize("per_prompt", [False, True])
def test_heatmap_hatches_exactly_the_degenerate_cells(per_prompt):
    fig = plot_sweep_heatmap(damaged_frame(per_prompt))
    assert hatched_cells(fig) == {(0, 2), (2, 0)}  # (layer 0, x3) and (layer 2, x-2), rows and columns in order
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [LABEL]


def test_a_frame_without_damage_gets_no_marks(sweep):
    fig = plot_sweep_heatmap(sweep)
    assert hatched_cells(fig) == set() and fig.legends == []
    frame = damaged_frame().drop(columns=["target_mass", "target_mass_unsteered"])  # only the flag: still marked
    assert hatched_cells(plot_sweep_heatmap(frame)) == {(0, 2), (2, 0)}


def test_lines_cross_out_the_degenerate_points():
    frame = damaged_frame()
    fig = plot_metric_vs_multiplier(frame)
    ax = fig.axes[0]
    (marks,) = [c for c in ax.collections if c.get_gid() == "degenerate"]
    flagged = frame[frame.degenerate]
    assert sorted(map(tuple, marks.get_offsets().tolist())) == sorted(zip(flagged.multiplier, flagged.prob_share))
    assert LABEL in [t.get_text() for t in ax.get_legend().get_texts()]
    clean = plot_metric_vs_multiplier(
        damaged_frame().drop(columns=["target_mass", "target_mass_unsteered", "degenerate"])
    )
    assert [c for c in clean.axes[0].collections if c.get_gid() == "degenerate"] == []


def test_a_real_sweep_with_a_broken_cell_is_marked():
    """A sweep that breaks the model (a sharp tiny Llama pushed 50 residual norms) marks the cells it flags."""
    import torch
    from tiny_hf import make_hf_model
    from tiny_hf import make_tokenizer as make_word_tokenizer

    from steerlens import SteeringVector, prob_share

    model, tok = make_hf_model("llama"), make_word_tokenizer()
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)
    direction = torch.randn(32, generator=torch.Generator().manual_seed(0))
    vec = SteeringVector({0: direction / direction.norm() * 6.0, 1: direction / direction.norm() * 6.0})
    metric = prob_share([" happy", " cat", " mat", " big"], [" ran", " sad", " small"])
    with pytest.warns(RuntimeWarning, match="degenerate"):
        frame = sweep_layers(
            model, vec, ["the cat sat on", "the big red"], multipliers=[0.05, 50.0], metric=metric, tokenizer=tok
        )
    expected = {
        (i, j)
        for i, layer in enumerate((0, 1))
        for j, m in enumerate((0.05, 50.0))
        if frame.set_index(["layer", "multiplier"]).degenerate[layer, m]
    }
    assert expected and hatched_cells(plot_sweep_heatmap(frame)) == expected


def test_calibration_plot_crosses_out_exactly_the_degenerate_cells():
    """A hand-built calibration table: the red crosses sit on the flagged rows and nowhere else."""
    from steerlens.evaluation import plot_calibration

    table = pd.DataFrame(
        {
            "layer": [1, 1, 2, 2],
            "multiplier": [0.1, 0.5, 0.1, 0.5],
            "effect": [0.6, 0.99, 0.7, 0.98],
            "kl": [0.05, 0.9, 0.08, 1.2],
            "pareto": [True, False, True, False],
            "degenerate": [False, True, False, True],
        }
    )
    table.attrs.update({"max_kl": 0.5, "baseline": 0.5, "damage": "kl"})
    ax = plot_calibration(table).axes[0]
    (marks,) = [c for c in ax.collections if c.get_gid() == "degenerate"]
    assert sorted(map(tuple, marks.get_offsets().tolist())) == [(0.9, 0.99), (1.2, 0.98)]
    clean = plot_calibration(table.assign(degenerate=False)).axes[0]
    assert not [c for c in clean.collections if c.get_gid() == "degenerate"]
