"""Memory a Hugging Face model keeps after training a vector on it: native hooks against conversion.

Method: each route runs in a fresh subprocess on the same random GPT-2-small-sized
checkpoint (12 layers, d_model 768, vocab 50257, float32, built from a config, no
download). It records the resident memory (``/proc/self/statm``) after building the
model, trains a mean vector on every layer from 64 pairs (batch 8), runs the garbage
collector, and records the resident memory again. What training *keeps* is the
difference, reported as a share of the model's parameter bytes (target: <= 10%).

Routes:
* ``native``: ``train_steering_vector(hf_model, tokenizer, pairs)``: torch hooks on the
  model's own modules (what steerlens does now).
* ``converted``: the model is first converted into a HookedTransformer with
  ``steerlens.adapter.convert_hf_model`` (as steerlens did before the
  native backend), then trained on; shown for the before/after comparison.

glibc's mmap threshold is pinned (``MALLOC_MMAP_THRESHOLD_``) so freed buffers go back
to the OS and RSS reflects live memory; ``--also-default-allocator`` repeats with
glibc's defaults. torch runs with one thread.

    python benchmarks/bench_hf_memory.py [--also-default-allocator]
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
import gc, json, os, sys, warnings
sys.path[:0] = [{here!r}, {root!r}]
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(1)
import transformers as tf
from _models import bench_tokenizer, random_sentences
from steerlens import train_steering_vector

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

route = sys.argv[1]
tokenizer = bench_tokenizer()
torch.manual_seed(0)
model = tf.GPT2LMHeadModel(tf.GPT2Config(n_positions=256)).eval()
param_mib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
sentences = random_sentences(128, seed=1, min_words=15, max_words=40)
pairs = list(zip(sentences[::2], sentences[1::2]))
# Warm-up on two pairs (imports, kernels, one-time allocations) before the baseline.
train_steering_vector(model, tokenizer, pairs[:2], layers=[0])
gc.collect()
before = rss_mib()
target = model
if route == "converted":
    from steerlens.adapter import convert_hf_model
    target = convert_hf_model(model, tokenizer)
vec = train_steering_vector(target, tokenizer if route == "native" else None, pairs, batch_size=8)
del target
gc.collect()
after = rss_mib()
assert len(vec.layers) == 12
print(json.dumps({{"route": route, "param_mib": param_mib, "before": before, "after": after}}))
"""

PINNED = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def measure(route: str, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(here=str(HERE), root=str(ROOT)), route],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(label: str, env: dict[str, str]) -> float:
    """Print both routes; return the native route's kept memory as a share of parameter bytes."""
    print(label)
    shares = {}
    for route in ("native", "converted"):
        r = measure(route, env)
        kept = r["after"] - r["before"]
        shares[route] = kept / r["param_mib"]
        print(
            f"  {route:9s}: parameters {r['param_mib']:6.0f} MiB, RSS {r['before']:6.0f} -> {r['after']:6.0f} MiB, "
            f"kept {kept:+7.1f} MiB = {100 * shares[route]:+6.1f}% of parameter bytes"
        )
    return shares["native"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--also-default-allocator", action="store_true")
    args = parser.parse_args()
    share = compare("allocator with pinned mmap threshold (live memory):", PINNED)
    if args.also_default_allocator:
        compare("glibc default allocator (for comparison):", {})
    ok = share <= 0.10
    print(
        f"result: native training keeps {100 * share:+.1f}% of parameter bytes (target <= 10%): "
        f"{'OK' if ok else 'OVER TARGET'}"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
