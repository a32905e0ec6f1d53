"""The main job (``make demo``): train a sentiment vector, sweep it, show what it does.

Runs on the bundled toy model by default (or any source :func:`load_model`
accepts), uses the toy sentiment pairs and neutral prompts of
:mod:`steerlens.toy.datasets`, and measures the *positive share*
P(positive words) / (P(positive words) + P(negative words)) of the next token.
Writes the vector, the sweep table and a heatmap to an output folder.

Example:
    >>> result = run_demo(out="demo-out")
    >>> result.best_layer, result.files
"""

from __future__ import annotations

import io
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from steerlens.errors import PromptTooLongError
from steerlens.evaluation import compare_logits, prob_share, sweep_layers
from steerlens.evaluation.generation import steered_and_unsteered
from steerlens.formats.safe_io import write_atomic
from steerlens.toy.datasets import concept_words, neutral_prompts, sentiment_pairs
from steerlens.training import train_steering_vector
from steerlens.vector import SteeringVector

DEMO_MULTIPLIERS: tuple[float, ...] = (-8.0, -4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0, 8.0)
GENERATION_PROMPTS: tuple[str, ...] = (
    "Let me tell you about the film. I thought the movie was",
    "Last week we went out for dinner. Honestly, it was",
    "I want to write about the trip. In short, it was",
)


@dataclass
class DemoResult:
    """What the demo computed: the vector, the sweep, the chosen cell and the files written."""

    vector: SteeringVector
    sweep: pd.DataFrame
    best_layer: int
    best_multiplier: float
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def check_generation_room(
    model: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    prepend_bos: bool | None = None,
    tokenizer: Any = None,
) -> None:
    """Raise ``PromptTooLongError`` unless every prompt plus ``max_new_tokens`` fits the model's context.

    Checked before any work, since generating past a HookedTransformer's ``n_ctx`` ends in an
    ``IndexError`` deep in its position embedding (the backend's ``context_length``).
    """
    from steerlens.backends import backend_for

    backend = backend_for(model, tokenizer)
    n_ctx = backend.context_length
    if n_ctx is None:
        return
    used = max(len(backend.encode(prompt, prepend_bos)) for prompt in prompts)
    if used + max_new_tokens > n_ctx:
        fix = f"use --max-new-tokens {n_ctx - used} or less" if used < n_ctx else "use a shorter prompt"
        raise PromptTooLongError(
            f"--max-new-tokens {max_new_tokens} does not fit: the {'prompt' if len(prompts) == 1 else 'longest prompt'} "
            f"takes {used} of the model's {n_ctx}-token "
            f"context, leaving {n_ctx - used}; {fix}."
        )


def best_cell(sweep: pd.DataFrame, value: str) -> tuple[int, float]:
    """The layer with the widest swing of ``value`` between the largest ± multipliers, and that multiplier.

    The multiplier is the smallest positive one whose swing is at least 90% of the
    layer's largest swing, so the demo does not overshoot.
    """
    grid = sweep.pivot(index="layer", columns="multiplier", values=value)
    positive = [m for m in grid.columns if m > 0 and -m in grid.columns]
    if not positive:
        return int(grid.index[0]), float(max(grid.columns))
    swing = pd.DataFrame({m: grid[m] - grid[-m] for m in positive})
    if "degenerate" in sweep:  # a swing the model pays for by no longer saying the words is not a win
        flags = sweep.pivot(index="layer", columns="multiplier", values="degenerate").astype(bool)
        swing = swing.where(pd.DataFrame({m: ~(flags[m] | flags[-m]) for m in positive}))
    if swing[max(positive)].isna().all():
        return int(grid.index[0]), float(min(positive))
    layer = int(swing[max(positive)].idxmax())
    row = swing.loc[layer]
    enough = [m for m in positive if row[m] >= 0.9 * row.max()] if row.max() > 0 else []
    multiplier = min(enough) if enough else max(positive)
    return layer, float(multiplier)


def run_demo(
    model_source: Any = "toy",
    out: str | Path = "steerlens-demo",
    layers: Sequence[int] | None = None,
    multipliers: Sequence[float] = DEMO_MULTIPLIERS,
    max_new_tokens: int = 16,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """Train, sweep, compare and generate; print a report with ``echo``; write the artefacts to ``out``.

    ``model_source`` is a name or path :func:`load_model` loads, or a model already loaded (of any kind
    steerlens steers), used as it is.

    Example:
        >>> run_demo("toy", out="demo-out", multipliers=[-4, 0, 4])
    """
    from steerlens.adapter import load_model
    from steerlens.backends import backend_for

    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(model_source) if isinstance(model_source, (str, os.PathLike)) else model_source
    backend = backend_for(model)
    name = backend.model_name or str(model_source)
    echo(f"model: {name} ({backend.n_layers} layers, d_model {backend.d_model})")
    check_generation_room(model, GENERATION_PROMPTS, max_new_tokens)

    pairs = sentiment_pairs("train")
    prompts = neutral_prompts("sentiment", "test")
    words = concept_words("sentiment")
    echo(f"training a sentiment vector on {len(pairs)} contrast pairs, e.g. {pairs[0]}")
    vector = train_steering_vector(
        model, None, pairs, layers=layers, batch_size=16, show_progress=True, tqdm_desc="Training"
    )

    metric = prob_share(words["positive"], words["negative"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the tables below show the mass and the flags
        sweep = sweep_layers(model, vector, prompts, multipliers=multipliers, metric=metric)
    echo(f"\npositive share of the next sentiment word, mean over {len(prompts)} held-out prompts")
    echo("(rows: steered layer, columns: multiplier; 0 = unsteered)")
    echo(damage_tables(sweep, metric.name, f"the {sum(len(w) for w in words.values())} sentiment words"))
    layer, mult = best_cell(sweep, metric.name)
    echo(f"\nbest layer {layer}, multiplier ±{mult:g}")

    comparison = compare_logits(
        model,
        vector.select_layers([layer]),
        prompts[:4],
        multipliers=(-mult, mult),
        target_tokens=words,
        top_k=3,
    )
    echo("\nnext-token probabilities, unsteered vs steered")
    echo(_comparison_table(comparison))

    echo("\ngenerations (greedy), unsteered vs steered")
    for prompt in GENERATION_PROMPTS:
        echo(f"\n  prompt:      {prompt!r}")
        plain = None
        for m in (mult, -mult):
            steered, plain = steered_and_unsteered(model, vector.select_layers([layer]), prompt, m, max_new_tokens)
            echo(f"  steered {m:+g}: {steered!r}")
        echo(f"  unsteered:   {plain!r}")

    files = _write(out, vector, sweep, metric.name)
    seconds = time.perf_counter() - start
    echo("\nwrote " + ", ".join(str(p) for p in files.values()) + f"\ndone in {seconds:.1f}s")
    return DemoResult(vector, sweep, layer, mult, files, seconds)


def _comparison_table(comparison: pd.DataFrame) -> str:
    rows = []
    for _, r in comparison.iterrows():
        rows.append(
            {
                "prompt": "..." + r["prompt"][-28:],
                "multiplier": f"{r['multiplier']:+g}",
                "P(pos) before": f"{math.exp(r['logprob_before[positive]']):.3f}",
                "P(pos) after": f"{math.exp(r['logprob_after[positive]']):.3f}",
                "P(neg) before": f"{math.exp(r['logprob_before[negative]']):.3f}",
                "P(neg) after": f"{math.exp(r['logprob_after[negative]']):.3f}",
                "KL": f"{r['kl']:.3f}",
                "top before": " ".join(f"{t!r}" for t, _ in r["top_k_before"]),
                "top after": " ".join(f"{t!r}" for t, _ in r["top_k_after"]),
            }
        )
    return pd.DataFrame(rows).to_string(index=False)


def damage_tables(sweep: pd.DataFrame, value: str, words: str) -> str:
    """The effect table with the damage beside it: the metric's tokens' mass and the KL, degenerate cells starred."""

    def table(column: str, fmt: str) -> str:
        grid = sweep.pivot(index="layer", columns="multiplier", values=column)
        flags = sweep.pivot(index="layer", columns="multiplier", values="degenerate")
        cells = grid.apply(
            lambda col: [f"{v:{fmt}}" + ("*" if flags.loc[i, col.name] else " ") for i, v in col.items()]
        )
        return cells.to_string()

    unsteered = float(sweep.loc[sweep.multiplier == 0, "target_mass_unsteered"].mean())
    parts = [
        table(value, ".3f"),
        f"\ntotal probability of {words} (unsteered {unsteered:.3f})",
        table("target_mass", ".3f"),
        "\nKL(steered || unsteered) of the next-token distribution, nats",
        table("kl", ".3f"),
    ]
    flagged = int(sweep["degenerate"].sum())
    parts.append(
        f"\n* degenerate: the words keep < 10% of their unsteered mass ({flagged} cells)"
        if flagged
        else "\nno cell is degenerate (the words keep >= 10% of their unsteered mass everywhere)"
    )
    return "\n".join(parts)


def _write(out: Path, vector: SteeringVector, sweep: pd.DataFrame, value: str) -> dict[str, Path]:
    files = {"vector": out / "sentiment_vector.safetensors", "sweep": out / "sweep.csv"}
    vector.save(files["vector"])
    write_atomic(files["sweep"], sweep.to_csv(index=False).encode("utf-8"))
    heatmap = write_heatmap(out, sweep, value)
    return files if heatmap is None else {**files, "heatmap": heatmap}


def write_heatmap(out: Path, sweep: pd.DataFrame, value: str) -> Path | None:
    """``out/sweep_heatmap.png`` of the positive share by layer and multiplier (None without matplotlib)."""
    try:
        import matplotlib  # noqa: F401  (the plot extra)
    except ImportError:
        return None
    from steerlens.evaluation.plots import plot_sweep_heatmap

    fig = plot_sweep_heatmap(sweep, value, title="positive share by layer and multiplier")
    path = out / "sweep_heatmap.png"
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    write_atomic(path, png.getvalue())
    return path
