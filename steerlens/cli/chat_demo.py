"""The main job on a real chat model (``make demo``): SmolLM2-135M-Instruct, steered natively.

Loads the model from its GGUF file (de-quantized once, cached), then, with the bundled
chat data (:mod:`steerlens.samples.bundled`):

1. trains a sentiment vector from chat contrast pairs, prints its layer report and a
   layer × multiplier table of the positive share of the next judgement word on held-out
   neutral chat prompts, and steered vs unsteered generations;
2. trains a behaviour vector from A/B items in the model's chat template (CAA) and prints
   P(matching answer) on held-out items, unsteered and steered at -1/+1 typical residual
   norms from the assistant's turn on;
3. writes both vectors (safetensors and a llama.cpp control vector), the sweep CSV and a heatmap.

Example:
    >>> result = run_chat_demo(out="demo-out")
    >>> result.files["sweep"]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from steerlens.analysis import relative_vector
from steerlens.cli.demo import write_heatmap
from steerlens.evaluation import ab_behavior_probability, layer_report, prob_share, sweep_layers
from steerlens.evaluation.generation import steered_and_unsteered
from steerlens.samples import caa_items, caa_pairs
from steerlens.samples.bundled import ab_items, chat_contrast_pairs, neutral_chat_prompts
from steerlens.training import train_steering_vector
from steerlens.vector import SteeringVector

REAL_MODEL = "smollm2-135m-instruct"
SENTIMENT_LAYERS: tuple[int, ...] = (6, 9, 12, 15, 18)
SWEEP_LAYERS: tuple[int, ...] = (9, 12, 15)
BEHAVIOUR_LAYERS: tuple[int, ...] = (9, 12)
MULTIPLIERS: tuple[float, ...] = (-1.0, 0.0, 1.0)
JUDGEMENT = "Honestly, it was"
"""Written after each neutral chat prompt, so the next word is a judgement."""
POSITIVE = [" good", " great", " wonderful", " lovely", " amazing", " fantastic", " nice"]
NEGATIVE = [" bad", " terrible", " awful", " horrible", " boring", " sad", " disappointing"]


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
    report = layer_report(model, sentiment, chat_contrast_pairs("sentiment", "test", tokenizer=tok)[:16], tokenizer=tok)
    echo("layer report on held-out pairs (AUC 1 = every positive reply projects above every negative one)")
    echo(
        report[["layer", "auc", "pair_accuracy", "vector_norm", "resid_norm", "rank"]].to_string(
            index=False, float_format=lambda x: f"{x:.3f}"
        )
    )
    chats = neutral_chat_prompts(tok)
    prompts = [chat + JUDGEMENT for chat in chats[:n_eval]]
    share = prob_share(POSITIVE, NEGATIVE)
    sweep = sweep_layers(
        model, sentiment, prompts, layers=list(SWEEP_LAYERS), multipliers=list(MULTIPLIERS), metric=share, tokenizer=tok
    )
    echo(
        f"\npositive share of the next judgement word after {JUDGEMENT!r}, mean over {len(prompts)} held-out "
        "neutral chat prompts\n(rows: steered layer, columns: multiplier; 0 = unsteered)"
    )
    echo(
        sweep.pivot(index="layer", columns="multiplier", values=share.name).to_string(float_format=lambda x: f"{x:.3f}")
    )
    best = int(report.attrs["best_layer"])
    echo(f"\ngenerations at layer {best} (greedy), unsteered vs steered ±1")
    for chat in chats[n_eval : n_eval + 2]:
        echo(f"\n  prompt:    {chat.splitlines()[-2].replace(tok.eos_token or '', '')!r}")
        plain = None
        for m in (1.0, -1.0):
            steered, plain = steered_and_unsteered(
                model, sentiment.select_layers([best]), chat, m, max_new_tokens, tokenizer=tok
            )
            echo(f"  steered {m:+g}: {steered!r}")
        echo(f"  unsteered: {plain!r}")

    # 2. A behaviour from A/B items in the chat template, steered from the assistant's turn (CAA).
    train_items = ab_items(behaviour, "train")[:n_train]
    echo(f"\ntraining a '{behaviour}' vector on {len(train_items)} A/B items (CAA pairs in the chat template)")
    behaviour_vec = train_steering_vector(
        model, tok, caa_pairs(tok, train_items), layers=list(BEHAVIOUR_LAYERS), batch_size=16
    )
    test_items = caa_items(tok, ab_items(behaviour, "test")[:16])
    relative = relative_vector(model, behaviour_vec, chats[:8], tokenizer=tok)
    ab = ab_behavior_probability(
        model, relative, test_items, multipliers=[-1.0, 1.0], tokenizer=tok, steer_from="answer"
    )
    table = ab.groupby(["layer", "multiplier"]).p_matching_steered.mean().unstack("multiplier")
    table.insert(0, "unsteered", ab.groupby("layer").p_matching_unsteered.mean())
    echo(
        f"P(matching answer) on {len(test_items)} held-out items, steered from the assistant's turn at ±1 "
        "typical residual norm"
    )
    echo(table.to_string(float_format=lambda x: f"{x:.3f}"))

    files = _write(out, sentiment.select_layers([best]), behaviour_vec, sweep, share.name)
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
    sweep.to_csv(files["sweep"], index=False)
    try:
        from steerlens.interop import export_gguf

        files["control_vector"] = out / "sentiment_control_vector.gguf"
        export_gguf(sentiment, files["control_vector"])  # llama-cli --control-vector ...
    except ImportError:
        files.pop("control_vector", None)
    heatmap = write_heatmap(out, sweep, value)
    return files if heatmap is None else {**files, "heatmap": heatmap}
