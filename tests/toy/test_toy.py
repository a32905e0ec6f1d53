"""The bundled toy model: loading, generation, steering at its best layer, its reproducible training script."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers import ROOT, subprocess_env

from steerlens.toy import (
    BEST_LAYER,
    BEST_MULTIPLIER,
    MODEL_NAME,
    concept_mass,
    load_toy_model,
    load_toy_model_from,
    neutral_prompts,
    positive_mass,
    sentiment_pairs,
    total_variation,
)

DATA = ROOT / "steerlens" / "toy" / "data"


# --- loading -----------------------------------------------------------------


def test_config_is_sane(toy):
    cfg = toy.cfg
    assert cfg.model_name == MODEL_NAME == "steerlens-toy"
    assert 4 <= cfg.n_layers <= 6
    assert cfg.d_vocab == len(toy.tokenizer)
    assert cfg.positional_embedding_type == "standard" and cfg.normalization_type == "LN"
    assert not toy.training
    assert next(toy.parameters()).dtype == torch.float32


def test_package_data_is_small():
    assert sum(f.stat().st_size for f in DATA.iterdir()) <= 10_000_000


def test_tokenizer_round_trips_and_prepends_bos(toy):
    tokens = toy.to_tokens("Let me tell you about the film.")
    assert tokens[0, 0].item() == toy.tokenizer.bos_token_id
    assert toy.to_string(tokens[0, 1:]) == "Let me tell you about the film."
    assert toy.tokenizer.pad_token is not None


def test_generates_in_domain_text(toy):
    text = toy.generate("Let me tell you about the", max_new_tokens=12, do_sample=False, verbose=False)
    assert text.startswith("Let me tell you about the ")
    assert len(text) > len("Let me tell you about the ") + 10


def test_dtype_argument():
    model = load_toy_model(dtype=torch.float16)
    assert next(model.parameters()).dtype == torch.float16


@pytest.mark.slow
def test_loads_offline_in_fresh_process(tmp_path):
    code = (
        "import time; t = time.perf_counter()\n"
        "from steerlens.toy import load_toy_model\n"
        "m = load_toy_model()\n"
        "print(m.to_str_tokens('The film was')[-1])\n"
    )
    env = subprocess_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path), HF_ENDPOINT="http://127.0.0.1:9")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("was")


# --- steering efficacy ------------------------------------------------------------


def test_sentiment_steering_moves_sentiment_not_topic(toy):
    from steerlens import train_steering_vector

    vec = train_steering_vector(toy, None, sentiment_pairs("train"), layers=[BEST_LAYER], batch_size=8)
    sentiment, topic = neutral_prompts("sentiment", "test"), neutral_prompts("topic", "test")
    base_pos = positive_mass(toy, sentiment).mean().item()
    base_topic = concept_mass(toy, topic, "topic")
    for sign in (1, -1):
        with vec.apply(toy, multiplier=sign * BEST_MULTIPLIER):
            pos = positive_mass(toy, sentiment).mean().item()
            shift = total_variation(concept_mass(toy, topic, "topic"), base_topic).mean().item()
        print(f"\nmultiplier {sign * BEST_MULTIPLIER}: positive mass {base_pos:.3f} -> {pos:.3f}, topic TV {shift:.3f}")
        assert (pos >= 0.9) if sign > 0 else (pos <= 0.1)
        assert shift <= 0.05


@pytest.mark.slow
def test_training_script_is_reproducible(tmp_path):
    """Two short runs of scripts/train_toy_model.py with the same seed write identical files."""
    script = ROOT / "scripts" / "train_toy_model.py"
    env = subprocess_env()
    digests = []
    for run in ("a", "b"):
        out = tmp_path / run
        args = [
            sys.executable,
            str(script),
            "--out",
            str(out),
            "--docs",
            "300",
            "--steps",
            "3",
            "--batch",
            "4",
            "--vocab",
            "400",
        ]
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        digests.append({f.name: f.read_bytes() for f in sorted(out.iterdir())})
    assert digests[0].keys() == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert digests[0] == digests[1]
    reloaded = load_toy_model_from(tmp_path / "a")
    assert reloaded.cfg.d_vocab == len(reloaded.tokenizer)
