"""The main job on a real chat model (``make demo``): SmolLM2-135M-Instruct, steered natively.

Loads the model from its GGUF file (de-quantized once, cached), then, with the bundled
chat data (:mod:`steerlens.samples.bundled`):

1. trains a sentiment vector from chat contrast pairs, prints its layer report and a
   layer × strength table of the positive share of the next judgement word on held-out
   neutral chat prompts, with the damage beside it (the judgement words' total mass, the
   KL of the next-token distribution, degenerate cells starred), and steered vs
   unsteered generations at the best undamaged cell;
2. trains a behaviour vector from A/B items in the model's chat template (CAA) and prints
   P(matching answer) on held-out items, unsteered and steered at ±0.25 typical residual
   norms from the assistant's turn on, with the letters' mass and the KL, and says plainly
   when the vector does not move the behaviour;
3. writes both vectors (safetensors and a llama.cpp control vector), the sweep CSV and a heatmap.

Strengths are in typical residual norms at the steered layer (:func:`~steerlens.analysis.relative_vector`):
on this model ≥ 0.5 collapses most layers, so the demo stays at 0.1-0.25.

Example:
    >>> result = run_chat_demo(out="demo-out")
    >>> result.files["sweep"]
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from steerlens.analysis import relative_vector
from steerlens.cli.demo import damage_tables, write_heatmap
from steerlens.evaluation import ab_behavior_probability, layer_report, prob_share, sweep_layers
from steerlens.evaluation.generation import steered_and_unsteered
from steerlens.formats.safe_io import write_atomic
from steerlens.samples import caa_items, caa_pairs
from steerlens.samples.bundled import ab_items, chat_contrast_pairs, neutral_chat_prompts
from steerlens.training import train_steering_vector
from steerlens.vector import SteeringVector

REAL_MODEL = "smollm2-135m-instruct"
SENTIMENT_LAYERS: tuple[int, ...] = (6, 9, 12, 15, 18)
SWEEP_LAYERS: tuple[int, ...] = (9, 12, 15)
"""How many layers the sweep takes: the layer report's best-ranked ones (this many)."""
REPORT_STRENGTH = 0.2
"""The layer report steers each layer at ± this many typical residual norms."""
BEHAVIOUR_LAYERS: tuple[int, ...] = (9, 12)
MULTIPLIERS: tuple[float, ...] = (-0.2, -0.1, 0.0, 0.1, 0.2)
"""Strengths of the sentiment sweep, in typical residual norms at the steered layer."""
BEHAVIOUR_STRENGTH = 0.25
"""The A/B table steers at ± this many typical residual norms."""
MAX_KL = 1.0
"""The generations use the cell with the widest swing whose KL stays within this (nats) and that is not degenerate."""
JUDGEMENT = "Honestly, it felt really"
"""Written after each neutral chat prompt, so the next word is a judgement: after it the twenty words below
hold about a quarter of SmolLM2's next-token probability (after "Honestly, it was" they held 0.2%: the model
says " a" next, and a share of them described almost nothing)."""
POSITIVE = [
    " good",
    " great",
    " wonderful",
    " lovely",
    " amazing",
    " fantastic",
    " nice",
    " cool",
    " fun",
    " beautiful",
]
NEGATIVE = [
    " bad",
    " terrible",
    " awful",
    " horrible",
    " boring",
    " sad",
    " disappointing",
    " dull",
    " ugly",
    " annoying",
]


@dataclass
class ChatDemoResult:
    """What the demo computed: both vectors, the sweep and the A/B table, and the files written."""

    sentiment: SteeringVector
    behaviour: SteeringVector
    sweep: pd.DataFrame
    ab: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


def run_chat_demo(
    model_source: Any = REAL_MODEL,
    out: str | Path = "steerlens-demo",
    behaviour: str = "sycophancy",
    n_train: int = 48,
    n_eval: int = 12,
    max_new_tokens: int = 20,
    echo: Callable[[str], None] = print,
) -> ChatDemoResult:
    """Train, report, sweep, measure and generate on a chat model; print with ``echo``; write to ``out``."""
    from steerlens.adapter import load_hf_model

    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, tok = load_hf_model(model_source)
    echo(
        f"model: {model.config.model_type} ({model.config.num_hidden_layers} layers, d_model "
        f"{model.config.hidden_size}), steered natively; loaded in {time.perf_counter() - start:.1f}s"
    )

    # 1. Sentiment: contrast pairs of assistant replies, measured on neutral chat prompts.
    pairs = chat_contrast_pairs("sentiment", "train", tokenizer=tok)[:n_train]
    echo(f"\ntraining a sentiment vector on {len(pairs)} chat contrast pairs at layers {list(SENTIMENT_LAYERS)}")
    sentiment = train_steering_vector(model, tok, pairs, layers=list(SENTIMENT_LAYERS), batch_size=16)
    chats = neutral_chat_prompts(tok)
    prompts = [chat + JUDGEMENT for chat in chats[:n_eval]]
    share = prob_share(POSITIVE, NEGATIVE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the report shows the mass and the flags
        report = layer_report(
            model,
            sentiment,
            chat_contrast_pairs("sentiment", "test", tokenizer=tok)[:16],
            tokenizer=tok,
            prompts=prompts,
            metric=share,
            strength=REPORT_STRENGTH,
        )
    echo(
        f"layer report: each layer steered alone at ±{REPORT_STRENGTH:g} typical residual norms on the evaluation "
        "prompts;\nrank 1 = the largest effect (share at + minus share at -) within the KL budget and not degenerate; "
        "auc = separation of held-out pairs"
    )
    echo(
        report[["layer", "rank", "effect", "kl", "degenerate", "auc", "separation_rank"]].to_string(
            index=False, float_format=lambda x: f"{x:.3f}"
        )
    )
    sweep_layers_ranked = sorted(report.sort_values("rank").layer.head(len(SWEEP_LAYERS)).astype(int))
    # Strengths in typical residual norms at each layer, measured on prompts the sweep does not use.
    relative = relative_vector(model, sentiment, chats[n_eval + 2 : n_eval + 10], tokenizer=tok)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the tables below show what the warning would say
        sweep = sweep_layers(
            model,
            relative,
            prompts,
            layers=sweep_layers_ranked,
            multipliers=list(MULTIPLIERS),
            metric=share,
            tokenizer=tok,
        )
    echo(
        f"\npositive share of the next judgement word after {JUDGEMENT!r}, mean over {len(prompts)} held-out "
        "neutral chat prompts\n(rows: steered layer; columns: strength in typical residual norms; 0 = unsteered)"
    )
    echo(damage_tables(sweep, share.name, f"the {len(POSITIVE) + len(NEGATIVE)} judgement words"))
    layer, strength = best_undamaged_cell(sweep, share.name, MAX_KL)
    echo(f"\ngenerations at layer {layer}, ±{strength:g} residual norms (greedy), unsteered vs steered")
    for chat in chats[n_eval : n_eval + 2]:
        echo(f"\n  prompt:    {chat.splitlines()[-2].replace(tok.eos_token or '', '')!r}")
        plain = None
        for m in (strength, -strength):
            steered, plain = steered_and_unsteered(
                model, relative.select_layers([layer]), chat, m, max_new_tokens, tokenizer=tok
            )
            echo(f"  steered {m:+g}: {steered!r}")
        echo(f"  unsteered:  {plain!r}")

    # 2. A behaviour from A/B items in the chat template, steered from the assistant's turn (CAA).
    train_items = ab_items(behaviour, "train")[:n_train]
    echo(f"\ntraining a '{behaviour}' vector on {len(train_items)} A/B items (CAA pairs in the chat template)")
    behaviour_vec = train_steering_vector(
        model, tok, caa_pairs(tok, train_items), layers=list(BEHAVIOUR_LAYERS), batch_size=16
    )
    test_items = caa_items(tok, ab_items(behaviour, "test")[:16])
    relative_behaviour = relative_vector(model, behaviour_vec, chats[:8], tokenizer=tok)
    strengths = [-BEHAVIOUR_STRENGTH, BEHAVIOUR_STRENGTH]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the table shows the mass and the flag
        ab = ab_behavior_probability(
            model, relative_behaviour, test_items, multipliers=strengths, tokenizer=tok, steer_from="answer"
        )
    echo(
        f"P(matching answer) on {len(test_items)} held-out items, steered from the assistant's turn at "
        f"±{BEHAVIOUR_STRENGTH:g} typical residual norms; ab_mass = P(A) + P(B), what P(matching) is a share of"
    )
    echo(behaviour_table(ab))

    files = _write(out, sentiment.select_layers([layer]), behaviour_vec, sweep, share.name)
    seconds = time.perf_counter() - start
    echo("\nwrote " + ", ".join(str(p) for p in files.values()) + f"\ndone in {seconds:.1f}s")
    return ChatDemoResult(sentiment, behaviour_vec, sweep, ab, files, seconds)


def _write(
    out: Path, sentiment: SteeringVector, behaviour: SteeringVector, sweep: pd.DataFrame, value: str
) -> dict[str, Path]:
    files = {
        "sentiment": out / "sentiment_vector.safetensors",
        "behaviour": out / "behaviour_vector.safetensors",
        "sweep": out / "sweep.csv",
    }
    sentiment.save(files["sentiment"])
    behaviour.save(files["behaviour"])
    write_atomic(files["sweep"], sweep.to_csv(index=False).encode("utf-8"))
    try:
        from steerlens.interop import export_gguf

        files["control_vector"] = out / "sentiment_control_vector.gguf"
        export_gguf(sentiment, files["control_vector"])  # llama-cli --control-vector ...
    except ImportError:
        files.pop("control_vector", None)
    heatmap = write_heatmap(out, sweep, value)
    return files if heatmap is None else {**files, "heatmap": heatmap}


def best_undamaged_cell(sweep: pd.DataFrame, value: str, max_kl: float) -> tuple[int, float]:
    """The layer and strength with the widest swing value(+m) - value(-m) among cells that are not degenerate
    and whose KL (both signs) stays within ``max_kl``; the smallest strength if none qualifies."""
    cells = sweep.set_index(["layer", "multiplier"])
    best: tuple[float, int, float] | None = None
    for layer in sorted(set(sweep.layer)):
        for m in sorted(x for x in set(sweep.multiplier) if x > 0 and -x in set(sweep.multiplier)):
            up, down = cells.loc[(layer, m)], cells.loc[(layer, -m)]
            if up.degenerate or down.degenerate or max(up.kl, down.kl) > max_kl:
                continue
            swing = float(up[value] - down[value])
            if best is None or swing > best[0]:
                best = (swing, int(layer), float(m))
    if best is None:
        return int(sweep.layer.iloc[0]), float(min(x for x in sweep.multiplier if x > 0))
    return best[1], best[2]


def behaviour_table(ab: pd.DataFrame) -> str:
    """P(matching) per layer and strength with the letters' mass and the KL, and a verdict on the effect."""
    by = ab.groupby(["layer", "multiplier"])
    table = by[["p_matching_steered", "ab_mass_steered", "kl"]].mean().unstack("multiplier")
    table.insert(0, ("p_matching_steered", "unsteered"), ab.groupby("layer").p_matching_unsteered.mean())
    table.insert(1, ("ab_mass_steered", "unsteered"), ab.groupby("layer").ab_mass_unsteered.mean())
    table = table.sort_index(axis=1, level=0, sort_remaining=False)
    lines = [table.to_string(float_format=lambda x: f"{x:.3f}")]
    low, high = sorted(set(ab.multiplier))[0], sorted(set(ab.multiplier))[-1]
    for layer, rows in ab.groupby("layer"):
        p = rows.groupby("multiplier").p_matching_steered.mean()
        base = float(rows.p_matching_unsteered.mean())
        effect = float(p[high] - p[low])
        if effect < 0.05 or not p[low] <= base <= p[high]:
            verdict = (
                f"does not steer this behaviour here (P(matching) {p[low]:.3f} / {base:.3f} / {p[high]:.3f} at "
                f"{low:+g} / 0 / {high:+g}): read no effect into it"
            )
        else:
            verdict = f"moves P(matching) by {effect:+.3f} between {low:+g} and {high:+g}"
        lines.append(f"layer {layer}: {verdict}")
    return "\n".join(lines)
