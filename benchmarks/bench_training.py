"""Training overhead: time to train on 64 pairs (batch 8) / time of a plain forward over the same tokens.

Both sides run the same padded batches up to the deepest requested layer, in
the same process, alternating, so the ratio is what steerlens adds on top of
the model's own work (tokenization, hooks, reading the activations).
Target: ratio <= 1.15 for all layers and for layers [0..2].

    python benchmarks/bench_training.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _models import random_model, random_sentences  # noqa: E402

from steerlens import train_steering_vector  # noqa: E402
from steerlens.tokens import pad_batch  # noqa: E402

N_PAIRS, BATCH, REPEATS = 64, 8, 5


def plain_forward(model, pairs, stop_at_layer: int) -> None:
    """The model's own work: the same padded batches, no hooks, no reads."""
    side = model.tokenizer.padding_side
    for start in range(0, len(pairs), BATCH):
        chunk = pairs[start : start + BATCH]
        prompts = [p for p, _ in chunk] + [n for _, n in chunk]
        seqs = [model.to_tokens(p, truncate=False)[0].tolist() for p in prompts]
        batch = pad_batch(seqs, model.tokenizer.pad_token_id, side)
        with torch.no_grad():
            model(batch.tokens, attention_mask=batch.attention_mask, stop_at_layer=stop_at_layer)


def best_times(a, b) -> tuple[float, float]:
    """Fastest of REPEATS runs of each, interleaved so background load hits both sides alike."""
    times_a, times_b = [], []
    for _ in range(REPEATS):
        for fn, times in ((a, times_a), (b, times_b)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return min(times_a), min(times_b)


def main() -> None:
    model = random_model()
    sentences = random_sentences(2 * N_PAIRS, seed=1)
    pairs = list(zip(sentences[:N_PAIRS], sentences[N_PAIRS:]))
    print(f"model: 12 layers, d_model 768, vocab 50257; {N_PAIRS} pairs, batch {BATCH}, "
          f"best of {REPEATS} interleaved, torch threads {torch.get_num_threads()}")
    worst = 0.0
    for label, layers in (("all layers", list(range(12))), ("layers [0..2]", [0, 1, 2])):
        stop = max(layers) + 1
        train = lambda: train_steering_vector(model, None, pairs, layers=layers, batch_size=BATCH)  # noqa: E731
        plain = lambda: plain_forward(model, pairs, stop)  # noqa: E731
        train(), plain()  # warm-up
        t_train, t_plain = best_times(train, plain)
        ratio = t_train / t_plain
        worst = max(worst, ratio)
        print(f"{label:14s} train {t_train * 1000:8.1f} ms   plain forward {t_plain * 1000:8.1f} ms   ratio {ratio:.3f}")
    print(f"worst ratio {worst:.3f} (target <= 1.15): {'OK' if worst <= 1.15 else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
