"""Training overhead on a HookedTransformer: time to train / time of a plain forward over the same tokens.

64 pairs (batch 8) on a GPT-2-small-shaped random HookedTransformer. The baselines
run up to the deepest requested layer, in the same process, alternating:
  unpadded  the model's own work on the real tokens only: prompts grouped by exact
            token count, at most 2 x batch = 16 rows a forward, no padding, no mask;
  padded    right-padded batches of 16 rows in the caller's order of pairs (what a
            trainer that keeps the pairs' order computes).
Target: train / unpadded <= 1.15 for all layers and for layers [0..2] (issue 12);
steerlens cuts each prompt after its read token and batches prompts by length, so
it can come in under 1. ``bench_training_vs_steering_vectors.py`` measures the HF
route against steering-vectors 0.12.2.

    python benchmarks/bench_training.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _batches import padded_batches, unpadded_batches  # noqa: E402
from _models import random_model, random_sentences  # noqa: E402

from steerlens import train_steering_vector  # noqa: E402

N_PAIRS, BATCH, REPEATS = 64, 8, 5
TARGET = 1.15


@torch.no_grad()
def forward(model, batches: list, stop_at_layer: int) -> None:
    for batch in batches:
        tokens, mask = batch if isinstance(batch, tuple) else (batch, None)
        model(tokens, attention_mask=mask, stop_at_layer=stop_at_layer)


def best_times(contenders: dict) -> dict[str, float]:
    """Fastest of REPEATS runs of each (after one warm-up), interleaved so background load hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for fn in contenders.values():
        fn()
    for _ in range(REPEATS):
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def main() -> None:
    model = random_model()
    sentences = random_sentences(2 * N_PAIRS, seed=1)
    pairs = list(zip(sentences[:N_PAIRS], sentences[N_PAIRS:]))
    # Row order of pairs: positive 0, negative 0, positive 1, ... (tokenized before any clock starts).
    seqs = [model.to_tokens(text, truncate=False)[0].tolist() for pair in pairs for text in pair]
    unpadded = unpadded_batches(seqs, 2 * BATCH)
    padded = padded_batches(seqs, 2 * BATCH, model.tokenizer.pad_token_id, model.tokenizer.padding_side)
    print(
        f"model: 12 layers, d_model 768, vocab 50257; {N_PAIRS} pairs, batch {BATCH}, "
        f"best of {REPEATS} interleaved, torch threads {torch.get_num_threads()}; {sum(map(len, seqs))} real tokens, "
        f"'unpadded' = {len(unpadded)} batches, 'padded' = {sum(t.numel() for t, _ in padded)} tokens"
    )
    worst = 0.0
    for label, layers in (("all layers", list(range(12))), ("layers [0..2]", [0, 1, 2])):
        stop = max(layers) + 1
        contenders = {
            "train": lambda: train_steering_vector(model, None, pairs, layers=layers, batch_size=BATCH),
            "unpadded": lambda: forward(model, unpadded, stop),
            "padded": lambda: forward(model, padded, stop),
        }
        best = best_times(contenders)
        ratio = best["train"] / best["unpadded"]
        worst = max(worst, ratio)
        print(
            f"{label:14s} "
            + "   ".join(f"{name} {t * 1000:8.1f} ms" for name, t in best.items())
            + f"   train / unpadded {ratio:.3f}, train / padded {best['train'] / best['padded']:.3f}"
        )
    print(f"worst train / unpadded {worst:.3f} (target <= {TARGET}): {'OK' if worst <= TARGET else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
