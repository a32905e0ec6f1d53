"""Plots of sweeps and logit comparisons (needs the ``plot`` extra: ``pip install 'steerlens[plot]'``).

Every function returns a ``matplotlib.figure.Figure`` built without pyplot (no
global state, nothing shown); display it in a notebook by ending a cell with it,
or save it with ``fig.savefig("sweep.png")``.

Sweep plots mark degenerate cells (the metric's tokens keep under 10% of their
unsteered probability, see :func:`~steerlens.evaluation.metrics.degenerate`), so a
ratio that looks perfect on a broken model cannot be read as a win.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd

from steerlens.errors import InvalidArgumentError
from steerlens.evaluation.metrics import DEGENERATE_FRACTION

_KEYS = ("layer", "multiplier")
_NOT_METRICS = {"layer", "multiplier", "prompt_index", "n_prompts"}
DEGENERATE_LABEL = f"degenerate: metric tokens < {DEGENERATE_FRACTION:.0%} of unsteered mass"
"""The legend entry of the marks on degenerate cells."""


def _figure(**kwargs: Any) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("steerlens plots need matplotlib; install it with pip install 'steerlens[plot]'.") from error
    return Figure(**kwargs)


def _metric_column(frame: pd.DataFrame, value: str | None) -> str:
    """The column to plot: ``value``, else the sweep's metric, else the only metric-like column."""
    value = value or frame.attrs.get("metric")
    if value is None:
        numeric = [
            c for c in frame.select_dtypes("number").columns if c not in _NOT_METRICS and not str(c).endswith("_std")
        ]
        if len(numeric) != 1:
            raise InvalidArgumentError(f"cannot tell which column to plot among {numeric}; pass value=...")
        value = numeric[0]
    missing = [c for c in (*_KEYS, value) if c not in frame.columns]
    if missing:
        raise InvalidArgumentError(
            f"the frame has no column(s) {missing}; pass a sweep_layers DataFrame (columns {list(frame.columns)})."
        )
    return value


def _grid(frame: pd.DataFrame, value: str) -> pd.DataFrame:
    """layer × multiplier table of ``value``, averaged over prompts if the frame is per prompt."""
    return frame.groupby(list(_KEYS))[value].mean().unstack("multiplier").sort_index().sort_index(axis=1)


def _degenerate_grid(frame: pd.DataFrame, grid: pd.DataFrame) -> pd.DataFrame | None:
    """layer × multiplier flags aligned with ``grid`` (None when the frame carries no damage).

    From the mean masses over prompts when the frame has them (as ``sweep_layers``
    flags its cells, so a per-prompt frame marks the cells its mean table would),
    else from a ``degenerate`` column (any row of the cell).
    """
    if {"target_mass", "target_mass_unsteered"} <= set(frame.columns):
        flags = _grid(frame, "target_mass") < DEGENERATE_FRACTION * _grid(frame, "target_mass_unsteered")
    elif "degenerate" in frame.columns:
        flags = frame.groupby(list(_KEYS))["degenerate"].any().unstack("multiplier")
    else:
        return None
    return flags.reindex(index=grid.index, columns=grid.columns).fillna(False).astype(bool)


def _fmt(x: float) -> str:
    return f"{x:g}"


def plot_sweep_heatmap(
    frame: pd.DataFrame, value: str | None = None, *, title: str | None = None, annotate: bool | None = None
) -> Any:
    """Heatmap of a sweep metric: layers down, multipliers across, one cell each.

    A metric with both signs gets a diverging colour map centred on zero.
    ``annotate`` writes the values in the cells (default: when there are at most 120).
    Degenerate cells (a frame with ``target_mass`` columns or a ``degenerate`` flag,
    as ``sweep_layers`` gives for token metrics) are hatched with an ✕ pattern and
    named in a legend below the map: their value describes a broken model.

    Example:
        >>> fig = plot_sweep_heatmap(sweep_layers(model, vec, prompts))
        >>> fig.savefig("kl_heatmap.png")
    """
    value = _metric_column(frame, value)
    grid = _grid(frame, value)
    data = grid.to_numpy(dtype=float)
    fig = _figure(figsize=(1.1 + 0.9 * data.shape[1], 1.2 + 0.42 * data.shape[0]), layout="constrained")
    ax = fig.add_subplot()
    lo, hi = np.nanmin(data), np.nanmax(data)
    if lo < 0 < hi:
        bound = max(-lo, hi)
        image = ax.imshow(data, aspect="auto", cmap="RdBu_r", vmin=-bound, vmax=bound)
    else:
        image = ax.imshow(data, aspect="auto", cmap="viridis")
    ax.set_xticks(range(data.shape[1]), [_fmt(m) for m in grid.columns])
    ax.set_yticks(range(data.shape[0]), [str(layer) for layer in grid.index])
    ax.set_xlabel("multiplier")
    ax.set_ylabel("layer")
    ax.set_title(title or f"{value} by layer and multiplier")
    fig.colorbar(image, ax=ax, label=value)
    if annotate if annotate is not None else data.size <= 120:
        mid = (lo + hi) / 2
        for (i, j), x in np.ndenumerate(data):
            dark = abs(x) > 0.6 * max(abs(lo), abs(hi)) if lo < 0 < hi else x < mid
            ax.text(j, i, f"{x:.2g}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
    _mark_degenerate_cells(fig, ax, _degenerate_grid(frame, grid))
    return fig


def _mark_degenerate_cells(fig: Any, ax: Any, flags: pd.DataFrame | None) -> None:
    """Hatch each flagged cell (patches with gid ``"degenerate"``) and say what the hatching means."""
    if flags is None or not flags.to_numpy().any():
        return
    from matplotlib.patches import Patch, Rectangle

    style = {"fill": False, "hatch": "xx", "edgecolor": "black", "linewidth": 1.2}
    for (i, j), flagged in np.ndenumerate(flags.to_numpy()):
        if flagged:
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, gid="degenerate", **style))
    fig.legend(handles=[Patch(label=DEGENERATE_LABEL, **style)], loc="outside lower center", fontsize="small")


def plot_metric_vs_multiplier(
    frame: pd.DataFrame,
    value: str | None = None,
    *,
    layers: Iterable[int] | None = None,
    show_std: bool = False,
    title: str | None = None,
) -> Any:
    """One line per layer: the sweep metric against the multiplier.

    ``show_std`` shades ± one standard deviation over prompts (aggregated frames
    with a ``<metric>_std`` column). Degenerate cells (see :func:`plot_sweep_heatmap`)
    get a red ✕ on their point, named in the legend: their value describes a broken model.

    Example:
        >>> fig = plot_metric_vs_multiplier(df, layers=[2, 4, 6])
    """
    value = _metric_column(frame, value)
    grid = _grid(frame, value)
    wanted = list(grid.index) if layers is None else list(layers)
    absent = [layer for layer in wanted if layer not in grid.index]
    if absent:
        raise InvalidArgumentError(f"layers {absent} are not in the sweep; it has {list(grid.index)}.")
    std = _grid(frame, f"{value}_std") if show_std and f"{value}_std" in frame.columns else None
    fig = _figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    colours = _colours(len(wanted))
    x = grid.columns.to_numpy(dtype=float)
    flags = _degenerate_grid(frame, grid)
    flagged: list[tuple[float, float]] = []
    for colour, layer in zip(colours, wanted):
        y = grid.loc[layer].to_numpy(dtype=float)
        ax.plot(x, y, marker="o", color=colour, label=str(layer))
        if std is not None:
            s = std.loc[layer].to_numpy(dtype=float)
            ax.fill_between(x, y - s, y + s, color=colour, alpha=0.15)
        if flags is not None:
            flagged += [(a, b) for a, b, bad in zip(x, y, flags.loc[layer].to_numpy()) if bad]
    if flagged:
        xs, ys = zip(*flagged)
        ax.scatter(xs, ys, marker="x", s=90, linewidths=2, color="#d9534f", zorder=4, label=DEGENERATE_LABEL)
        ax.collections[-1].set_gid("degenerate")
    ax.set_xlabel("multiplier")
    ax.set_ylabel(value)
    ax.set_title(title or f"{value} against multiplier")
    ax.axhline(0, color="grey", linewidth=0.6)
    ax.legend(title="layer", ncols=1 + len(wanted) // 9, fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(i / max(n - 1, 1) * 0.9) for i in range(n)]


def plot_top_k_shift(row: pd.Series | pd.DataFrame, *, title: str | None = None) -> Any:
    """Bar chart of next-token probabilities before and after steering, for one compare_logits row.

    Tokens are the union of the two top-k lists; a token outside one list has no bar
    for that side (its probability there is below the k-th).

    Example:
        >>> df = compare_logits(model, vec, ["I think the film"], multipliers=[4])
        >>> fig = plot_top_k_shift(df.iloc[0])
    """
    if isinstance(row, pd.DataFrame):
        if len(row) != 1:
            raise InvalidArgumentError(f"pass one row (e.g. df.iloc[0]), got a frame of {len(row)} rows.")
        row = row.iloc[0]
    try:
        before, after = dict(row["top_k_before"]), dict(row["top_k_after"])
    except KeyError:
        raise InvalidArgumentError("the row has no top_k_before/top_k_after; pass a compare_logits row.") from None
    tokens = list(dict.fromkeys([*after, *before]))
    y = np.arange(len(tokens))
    fig = _figure(figsize=(6.4, 1.4 + 0.38 * len(tokens)), layout="constrained")
    ax = fig.add_subplot()
    height = 0.4
    sides = ((before, -height / 2, "unsteered", "#9e9e9e"), (after, height / 2, "steered", "#d9534f"))
    for probs, offset, label, colour in sides:
        known = [i for i, t in enumerate(tokens) if t in probs]
        ax.barh(y[known] + offset, [probs[tokens[i]] for i in known], height=height, label=label, color=colour)
    ax.set_yticks(y, [repr(t) for t in tokens])
    ax.invert_yaxis()
    ax.set_xlabel("next-token probability")
    ax.set_ylabel("token")
    k = len(row["top_k_after"])
    ax.set_title(title or f"Top-{k} next tokens, layer {row['layer']}, multiplier {_fmt(row['multiplier'])}")
    prompt = str(row.get("prompt", ""))
    if prompt:
        fig.suptitle(repr(prompt if len(prompt) <= 70 else prompt[:67] + "..."), fontsize="small")
    ax.legend()
    return fig


def plot_calibration(table: pd.DataFrame, *, title: str | None = None, log_kl: bool | None = None) -> Any:
    """Effect against damage for every cell of a calibration, one colour per layer.

    The Pareto front (cells no other cell beats on both effect and KL) is joined by a
    line, the KL budget is a dashed vertical line, the chosen cell a star, the
    unsteered effect and any target dotted horizontal lines; degenerate cells (never
    chosen) are crossed out in red. ``log_kl`` puts KL on a
    log scale (default: when it spans more than two decades).

    Example:
        >>> fig = plot_calibration(calibrate(model, vec, prompts, share, references).table)
    """
    x = table.attrs.get("damage", "kl")  # the budgeted damage: KL, or the fluency loss
    missing = [c for c in ("layer", "multiplier", "effect", x, "pareto") if c not in table.columns]
    if missing:
        raise InvalidArgumentError(
            f"the frame has no column(s) {missing}; pass a calibration table (calibrate(...).table)."
        )
    attrs = table.attrs
    fig = _figure(figsize=(6.8, 4.4), layout="constrained")
    ax = fig.add_subplot()
    layers = sorted(table["layer"].unique())
    for colour, layer in zip(_colours(len(layers)), layers):
        rows = table[table["layer"] == layer].sort_values("multiplier")
        ax.plot(rows[x], rows["effect"], marker="o", markersize=4, linewidth=0.8, color=colour, label=f"layer {layer}")
    front = table[table["pareto"]].sort_values(x)
    ax.plot(
        front[x],
        front["effect"],
        color="black",
        linewidth=1.6,
        alpha=0.6,
        drawstyle="steps-post",
        label="Pareto front",
        zorder=1,
    )
    ax.scatter(front[x], front["effect"], s=60, facecolors="none", edgecolors="black", zorder=3)
    if "degenerate" in table.columns and table["degenerate"].any():  # never chosen: a broken model's effect
        bad = table[table["degenerate"].astype(bool)]
        ax.scatter(
            bad[x], bad["effect"], marker="x", s=90, linewidths=2, color="#d9534f", zorder=4, label=DEGENERATE_LABEL
        )
        ax.collections[-1].set_gid("degenerate")
    if attrs.get("max_kl") is not None:
        ax.axvline(attrs["max_kl"], color="#d9534f", linestyle="--", linewidth=1, label=f"budget {attrs['max_kl']:g}")
    if attrs.get("baseline") is not None:
        ax.axhline(attrs["baseline"], color="grey", linestyle=":", linewidth=1, label="unsteered")
    if attrs.get("target") is not None:
        ax.axhline(attrs["target"], color="#5cb85c", linestyle=":", linewidth=1.2, label=f"target {attrs['target']:g}")
    best = attrs.get("best")
    if best is not None:
        row = table[(table["layer"] == best[0]) & (table["multiplier"] == best[1])].iloc[0]
        ax.scatter(
            [row[x]],
            [row["effect"]],
            marker="*",
            s=260,
            color="#f0ad4e",
            edgecolors="black",
            zorder=4,
            label=f"chosen: layer {best[0]}, ×{_fmt(round(best[1], 4))}",
        )
    positive = table[x][table[x] > 0]
    if log_kl if log_kl is not None else (len(positive) and positive.max() / positive.min() > 100):
        ax.set_xscale("log")
    ax.set_xlabel(
        "damage: mean KL(steered ‖ unsteered) on reference prompts (nats)"
        if x == "kl"
        else "damage: increase of the fluency texts' NLL per token (nats)"
    )
    ax.set_ylabel(f"effect: {attrs.get('metric', 'metric')}")
    ax.set_title(title or "Effect against damage, by layer and multiplier")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return fig


def plot_token_projections(
    frame: pd.DataFrame,
    layer: int | None = None,
    *,
    value: str = "projection",
    bound: float | None = None,
    show_bos: bool = False,
    title: str | None = None,
    width: float = 9.0,
) -> Any:
    """Tokens of each prompt written out, each on a background coloured by its projection.

    The static twin of :func:`steerlens.analysis.projections.projections_html`: red
    towards the concept, blue away from it, white at zero; ``bound`` gets full colour
    (default: the largest ``|value|`` shown). Each prompt starts a new line and wraps
    at ``width`` inches. Takes a ``token_projections`` frame.

    Example:
        >>> fig = plot_token_projections(token_projections(model, vec, prompts, layers=[2]))
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.transforms import offset_copy

    from steerlens.analysis.projections import projection_colour, select_layer

    rows, layer = select_layer(frame, layer, value)
    if not show_bos and "is_bos" in rows:
        rows = rows[~rows["is_bos"].astype(bool)]
    if bound is None:
        bound = float(rows[value].abs().max()) if len(rows) else 1.0
    prompts = [tokens for _, tokens in rows.groupby("prompt_index", sort=True)]
    fig = _figure(figsize=(width, 1.0), dpi=100)
    renderer = FigureCanvasAgg(fig).get_renderer()
    ax = fig.add_axes((0, 0, 1, 1))
    ax.axis("off")
    line_height, margin, usable = 17.0, 6.0, width * 72 - 12.0  # points
    placed = []  # (text artist, x, line) laid out in points from the top left
    line = 0
    for tokens in prompts:
        x = margin
        for token, v in zip(tokens["token"], tokens[value]):
            text = str(token).replace("\n", "↵") or " "
            artist = ax.text(
                0,
                0,
                text,
                family="monospace",
                fontsize=9,
                va="center",
                ha="left",
                bbox={
                    "boxstyle": "square,pad=0.12",
                    "linewidth": 0,
                    "facecolor": projection_colour(float(v), bound, css=False),
                },
            )
            advance = artist.get_window_extent(renderer).width * 72 / fig.dpi
            if x + advance > usable and x > margin:
                line, x = line + 1, margin
            placed.append((artist, x, line))
            x += advance + 1.0
        line += 1
    heading = title or f"{value} at layer {layer}: red towards the vector, blue away (full colour at ±{bound:.3g})"
    height = (line + 1.2) * line_height
    fig.set_size_inches(width, height / 72)
    for artist, x, row in placed:
        artist.set_transform(offset_copy(ax.transAxes, fig=fig, x=x, y=-(row + 1.6) * line_height, units="points"))
        artist.set_position((0, 1))
    ax.text(
        0,
        1,
        heading,
        fontsize=10,
        va="center",
        ha="left",
        transform=offset_copy(ax.transAxes, fig=fig, x=margin, y=-0.7 * line_height, units="points"),
    )
    return fig
