"""The toy demo: its files (vector, sweep, heatmap, written atomically) and its tables and best cell."""

from __future__ import annotations

import pandas as pd
import pytest
from helpers import assert_atomic, spy_on_replace
from tiny_hf import make_hf_model, make_tokenizer

from steerlens import SteeringVector
from steerlens.cli import main
from steerlens.cli.demo import best_cell, check_generation_room, damage_tables
from steerlens.errors import PromptTooLongError
from steerlens.toy import concept_words, neutral_prompts


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_writes_vector_csv_and_heatmap(toy, tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    replaced = spy_on_replace(monkeypatch)
    code, stdout, _ = run(
        ["demo", "--out", out, "--layers", "1,2", "--multipliers", "-4,0,4", "--max-new-tokens", "4"], capsys
    )
    assert code == 0
    vec = SteeringVector.load(out / "sentiment_vector.safetensors")
    assert vec.layers == [1, 2]
    sweep = pd.read_csv(out / "sweep.csv")
    assert len(sweep) == 6 and set(sweep["multiplier"]) == {-4.0, 0.0, 4.0}
    # An unsteered cell is the plain model's positive share.
    words = concept_words("sentiment")
    from steerlens.toy import positive_mass

    base = positive_mass(toy, neutral_prompts("sentiment", "test")).mean().item()
    assert sweep.loc[sweep["multiplier"] == 0, "prob_share"].to_numpy() == pytest.approx([base, base], abs=1e-5)
    assert (out / "sweep_heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "best layer" in stdout and "unsteered:" in stdout and len(words["positive"]) == 8
    for name in ("sentiment_vector.safetensors", "sweep.csv", "sweep_heatmap.png"):
        assert_atomic(replaced, out / name)


def test_generation_room_is_checked_on_a_hf_model_too():
    """The demo's check reads the backend's context length, so it no longer skips models without ``cfg``."""
    from steerlens.cli.demo import check_generation_room

    model = make_hf_model("llama")
    tokenizer = make_tokenizer()
    n_ctx = model.config.max_position_embeddings
    check_generation_room(model, ["a"], 1, tokenizer=tokenizer)
    with pytest.raises(PromptTooLongError, match=f"{n_ctx}-token"):
        check_generation_room(model, ["a"], n_ctx + 1, tokenizer=tokenizer)


def test_generation_room_on_a_hooked_transformer_counts_the_prompts_tokens(toy):
    prompt = "Let me tell you about the film"
    used, n_ctx = toy.to_tokens(prompt).shape[1], toy.cfg.n_ctx
    check_generation_room(toy, [prompt, "a"], n_ctx - used)
    with pytest.raises(PromptTooLongError, match=f"takes {used} of the model's {n_ctx}-token") as info:
        check_generation_room(toy, ["a", prompt], n_ctx - used + 1)
    assert f"use --max-new-tokens {n_ctx - used} or less" in str(info.value)
    assert "longest prompt" in str(info.value)


def sweep_frame(values: dict[int, dict[float, float]], degenerate: set[tuple[int, float]] = frozenset()):
    rows = [
        {"layer": layer, "multiplier": m, "share": v, "degenerate": (layer, m) in degenerate}
        for layer, by_m in values.items()
        for m, v in by_m.items()
    ]
    return pd.DataFrame(rows)


# Layer 2 swings widest at +-4 (0.9 - 0.1 = 0.8); at +-2 it already swings 0.75 >= 90% of that.
SWEEP = {
    1: {-4.0: 0.3, -2.0: 0.4, 0.0: 0.5, 2.0: 0.6, 4.0: 0.7},
    2: {-4.0: 0.1, -2.0: 0.125, 0.0: 0.5, 2.0: 0.875, 4.0: 0.9},
}


def test_best_cell_is_the_widest_swing_at_the_smallest_strength_reaching_90_percent_of_it():
    assert best_cell(sweep_frame(SWEEP), "share") == (2, 2.0)
    slow = {**SWEEP, 2: {-4.0: 0.1, -2.0: 0.4, 0.0: 0.5, 2.0: 0.6, 4.0: 0.9}}  # +-2 swings 0.2 of 0.8: too little
    assert best_cell(sweep_frame(slow), "share") == (2, 4.0)


def test_best_cell_skips_a_swing_paid_for_by_degenerate_cells():
    assert best_cell(sweep_frame(SWEEP, {(2, 4.0)}), "share") == (1, 4.0)
    everywhere = {(layer, 4.0) for layer in SWEEP}
    assert best_cell(sweep_frame(SWEEP, everywhere), "share") == (1, 2.0)  # nothing usable: the gentlest


def test_damage_tables_star_degenerate_cells_and_count_them():
    sweep = sweep_frame(SWEEP, {(2, 4.0)})
    sweep["target_mass"] = 0.5
    sweep["target_mass_unsteered"] = 0.25
    sweep["kl"] = sweep["multiplier"].abs() / 10
    text = damage_tables(sweep, "share", "the sentiment words")
    assert "0.900*" in text and text.count("*") == 4  # one cell starred in each of the three tables, plus the note
    assert "total probability of the sentiment words (unsteered 0.250)" in text
    assert "(1 cells)" in text and "0.400 " in text  # the KL of a +-4 cell
    clean = damage_tables(sweep_frame(SWEEP).assign(target_mass=0.5, target_mass_unsteered=0.25, kl=0.0), "share", "w")
    assert "*" not in clean and "no cell is degenerate" in clean
