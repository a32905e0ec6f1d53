"""Peak memory of training with the mean aggregator: 10,000 pairs against 100 pairs.

Method: each run is a fresh subprocess (so neither inherits the other's allocations).
It builds the same random model (4 layers, d_model 256), makes its pairs from random
sentences of 6-16 words, records its peak resident memory (``ru_maxrss``), trains a
vector on every layer (batch 64), and records the peak again. The whole-process peak
is what a user sees, so the target is judged on it: 10k-pair peak <= 1.05 x 100-pair
peak. The growth during training (peak after minus peak before) is printed as well;
the 10k run's "before" already includes its 20,000 prompt strings.

The mean aggregator keeps running sums, so the peak must not grow with the number of
pairs. Two allocator settings are measured. ``MALLOC_MMAP_THRESHOLD_=131072`` pins
glibc's mmap threshold so freed activation buffers go back to the OS and the peak
reflects live memory; glibc's default adapts the threshold upwards after frees, and
then the heap's high-water mark can creep with the number of batches (allocator
fragmentation, not live tensors). The target is judged on the pinned setting; the
default is printed beside it with ``--also-default-allocator``.

torch runs with one thread: on a shared, oversubscribed CPU two spinning threads are
many times slower, and the thread count does not change what is allocated.

    python benchmarks/bench_memory.py [--also-default-allocator]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

CHILD = """
import json, resource, sys, time
sys.path[:0] = [{here!r}, {root!r}]
import torch
torch.set_num_threads(1)
from _models import random_model, random_sentences
from steerlens import train_steering_vector

torch.manual_seed(0)
n = int(sys.argv[1])
model = random_model(n_layers=4, d_model=256, d_vocab=4000, n_ctx=128)
sentences = random_sentences(2 * n, seed=1, min_words=6, max_words=16)
pairs = list(zip(sentences[::2], sentences[1::2]))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
vec = train_steering_vector(model, None, pairs, batch_size=64)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert vec.metadata["training"]["n_samples"] == n
print(json.dumps({{"pairs": n, "before_kib": before, "peak_kib": peak, "seconds": seconds}}))
"""

PINNED = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def measure(n_pairs: int, env: dict[str, str]) -> dict:
    """Run one training in a fresh interpreter; ``ru_maxrss`` is in KiB on Linux."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(here=str(HERE), root=str(ROOT)), str(n_pairs)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(label: str, env: dict[str, str]) -> float:
    """Print both peaks and return the ratio of whole-process peaks, 10k over 100."""
    small, large = measure(100, env), measure(10_000, env)
    print(label)
    for r in (small, large):
        print(
            f"  {r['pairs']:6d} pairs: peak RSS {r['peak_kib'] / 1024:7.1f} MiB "
            f"(before training {r['before_kib'] / 1024:7.1f} MiB, growth during training "
            f"{(r['peak_kib'] - r['before_kib']) / 1024:6.1f} MiB), training {r['seconds']:.1f}s"
        )
    ratio = large["peak_kib"] / small["peak_kib"]
    print(f"  peak ratio 10k/100: {ratio:.3f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--also-default-allocator", action="store_true", help="also measure with glibc's default mmap threshold"
    )
    args = parser.parse_args()
    ratio = compare("allocator with pinned mmap threshold (live memory):", PINNED)
    if args.also_default_allocator:
        compare("glibc default allocator (for comparison):", {})
    print(f"result: 10k/100 peak ratio {ratio:.3f} (target <= 1.05): {'OK' if ratio <= 1.05 else 'OVER TARGET'}")
    sys.exit(0 if ratio <= 1.05 else 1)


if __name__ == "__main__":
    main()
