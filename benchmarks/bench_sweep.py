"""Layer sweep speed: ``sweep_layers`` against the naive loop, same cells, same process.

Naive loop: for every layer × multiplier, ``vec.select_layers([L]).apply(model, m)``
and a full forward pass over all prompts (one padded batch), then KL at the last
token. ``sweep_layers`` computes the same table reusing the unsteered prefix.
12 layers × 5 multipliers × 16 prompts on a random GPT-2-small-sized model (12 layers,
d_model 768, vocab 50257), as in bench_training.py. Target: >= 5x.

    python benchmarks/bench_sweep.py [--d-model 768] [--vocab 50257]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _models import random_model, random_sentences  # noqa: E402

from steerlens import (
    SteeringVector,  # noqa: E402
    sweep_layers,
)
from steerlens.evaluation.metrics import kl_divergence  # noqa: E402
from steerlens.evaluation.sweep import DEFAULT_MULTIPLIERS  # noqa: E402
from steerlens.tokens.encoding import pad_batch  # noqa: E402

N_LAYERS, N_PROMPTS, REPEATS = 12, 16, 3


def naive_sweep(model, vec: SteeringVector, prompts: list[str]) -> dict[tuple[int, float], float]:
    """Mean KL per cell: apply + full forward for every layer × multiplier."""
    seqs = [model.to_tokens(p, truncate=False)[0].tolist() for p in prompts]
    batch = pad_batch(seqs, model.tokenizer.pad_token_id, "right")
    rows = torch.arange(len(prompts))
    last = torch.tensor(batch.lengths) - 1
    out = {}
    with torch.no_grad():
        clean = model(batch.tokens, attention_mask=batch.attention_mask)[rows, last]
        for layer in vec.layers:
            single = vec.select_layers([layer])
            for m in DEFAULT_MULTIPLIERS:
                with single.apply(model, multiplier=m):
                    steered = model(batch.tokens, attention_mask=batch.attention_mask)[rows, last]
                out[layer, m] = float(kl_divergence(steered, clean).mean())
    return out


def best_times(a, b) -> tuple[float, float, object, object]:
    """Fastest of REPEATS runs of each, interleaved so background load hits both sides alike."""
    times: tuple[list[float], list[float]] = ([], [])
    results: list[object] = [None, None]
    for _ in range(REPEATS):
        for i, fn in enumerate((a, b)):
            start = time.perf_counter()
            results[i] = fn()
            times[i].append(time.perf_counter() - start)
    return min(times[0]), min(times[1]), results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=50257)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = random_model(n_layers=N_LAYERS, d_model=args.d_model, d_vocab=args.vocab, n_ctx=128)
    prompts = random_sentences(N_PROMPTS, seed=2, min_words=10, max_words=30)
    vec = SteeringVector({layer: 4 * torch.randn(args.d_model) for layer in range(N_LAYERS)})
    lengths = [model.to_tokens(p).shape[1] for p in prompts]
    print(
        f"model: {N_LAYERS} layers, d_model {args.d_model}, vocab {args.vocab}; {N_PROMPTS} prompts of "
        f"{min(lengths)}-{max(lengths)} tokens; multipliers {DEFAULT_MULTIPLIERS}; best of {REPEATS}, "
        f"torch threads {torch.get_num_threads()}"
    )
    naive = lambda: naive_sweep(model, vec, prompts)  # noqa: E731
    fast = lambda: sweep_layers(model, vec, prompts)  # noqa: E731  (default batch size, as users call it)
    naive(), fast()  # warm-up
    t_naive, t_fast, expected, frame = best_times(naive, fast)
    worst = max(abs(r.kl - expected[r.layer, r.multiplier]) for r in frame.itertuples())
    ratio = t_naive / t_fast
    print(f"naive loop   {t_naive * 1000:8.1f} ms  ({len(expected)} cells)")
    print(f"sweep_layers {t_fast * 1000:8.1f} ms")
    print(
        f"speed-up {ratio:.2f}x (target >= 5x): {'OK' if ratio >= 5 else 'UNDER TARGET'}; "
        f"max |KL difference| {worst:.2e}"
    )


if __name__ == "__main__":
    main()
