"""Single forward passes on a ``fast_generation`` HookedTransformer: steerlens checkouts side by side.

Each checkout (``--tree PATH``, as many as given) runs the same workloads in a fresh child
process (``PYTHONPATH=PATH``, one torch thread), and the children are interleaved round by
round (tree order rotated) so background load on a shared machine hits all alike. Reported:
per workload and tree, the median over rounds of each child's median time, and the median
over rounds of the per-round ratio to the first tree.

Workloads (all on models passed through ``fast_generation``, as ``load_model(..., fast_generation=True)`` does):
  gpt2_sweep    sweep_layers, random GPT-2-small-shaped model, 6 layers x 3 multipliers, 16 prompts
                (bench_sweep.py's setting, smaller; its model has no fast_generation, so it cannot show this)
  gpt2_train    train_steering_vector, same model, 32 pairs, batch 8, all layers (bench_training.py's setting)
  smol_train    train_steering_vector, SmolLM2-135M-Instruct, 16 chat pairs, 3 layers
  smol_sweep    sweep_layers, SmolLM2, 16 chat prompts, 3 layers x 3 multipliers
  smol_compare  compare_logits, SmolLM2, same prompts and cells

    python benchmarks/bench_layout_cache.py --tree /tmp/before --tree . [--rounds 5] [--reps 3]

Measured 2026-12-07 (machine shared, load average ~10 on 2 cores; CPU seconds, one thread, warm-up
then median of 2 reps per child), ratios to c0272ee (weights stored in the layout) in the same round:
                  c0272ee   403a12b (layout cache per generate only)   + backend cache (kept_layouts)
  gpt2_sweep      7.77 s    x0.995                                     x0.908
  gpt2_train      2.78 s    x0.972                                     x0.910
  smol_train      2.06 s    x1.138                                     x1.008
  smol_sweep     11.67 s    x1.085                                     x0.954
  smol_compare   11.62 s    x1.089                                     x0.931
(round 1 of 3; later rounds in the report of the tlperf branch.)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GROUPS = {"gpt2": ("gpt2_sweep", "gpt2_train"), "smol": ("smol_train", "smol_sweep", "smol_compare")}


def _timed(fn, reps: int) -> float:
    """Median CPU time of the process (one torch thread: on a loaded machine wall time mostly measures the queue)."""
    fn()  # warm-up
    times = []
    for _ in range(reps):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def child(group: str, reps: int) -> None:
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(HERE))
    import steerlens
    from steerlens import SteeringVector, compare_logits, sweep_layers, train_steering_vector

    try:
        from steerlens.tl_speedup import fast_generation
    except ImportError:  # a checkout from before the module left backends/
        from steerlens.backends.hooked_layout import fast_generation

    out = {}
    if group == "gpt2":
        from _models import random_model, random_sentences

        model = fast_generation(random_model())
        sentences = random_sentences(2 * 32 + 16, seed=1)
        pairs = list(zip(sentences[:32], sentences[32:64]))
        prompts = sentences[64:]
        gen = torch.Generator().manual_seed(0)
        vec = SteeringVector({layer: torch.randn(768, generator=gen) for layer in range(0, 12, 2)}, "resid_post")
        out["gpt2_sweep"] = _timed(lambda: sweep_layers(model, vec, prompts, multipliers=(-1, 0.5, 1)), reps)
        out["gpt2_train"] = _timed(lambda: train_steering_vector(model, None, pairs, batch_size=8), reps)
    else:
        from steerlens.samples import chat_contrast_pairs, neutral_chat_prompts

        model = steerlens.load_model("smollm2-135m-instruct")
        model = fast_generation(model[0] if isinstance(model, tuple) else model)
        tok = model.tokenizer
        layers = [6, 12, 18]
        pairs = chat_contrast_pairs("sentiment", "train", tokenizer=tok)[:16]
        out["smol_train"] = _timed(lambda: train_steering_vector(model, tok, pairs, layers=layers, batch_size=16), reps)
        vec = train_steering_vector(model, tok, pairs, layers=layers, batch_size=16)
        chats = neutral_chat_prompts(tok)
        prompts = [chats[i % len(chats)] + "Honestly, it was" for i in range(16)]
        mults = (0.1, 0.2, 0.3)
        out["smol_sweep"] = _timed(lambda: sweep_layers(model, vec, prompts, multipliers=mults), reps)
        out["smol_compare"] = _timed(lambda: compare_logits(model, vec, prompts, multipliers=mults), reps)
    print("RESULT " + json.dumps(out), flush=True)


def run_child(tree: str, group: str, reps: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=tree, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--child", group, "--reps", str(reps)]
    proc = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{tree} {group} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", action="append", default=[])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--groups", default="gpt2,smol")
    parser.add_argument("--child")
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.reps)
    trees = [str(Path(t).resolve()) for t in args.tree]
    times: dict[tuple[str, str], list[float]] = {}
    ratios: dict[tuple[str, str], list[float]] = {}
    for rnd in range(args.rounds):
        order = trees[rnd % len(trees) :] + trees[: rnd % len(trees)]
        for group in args.groups.split(","):
            got = {tree: run_child(tree, group, args.reps) for tree in order}
            for task, tree in itertools.product(GROUPS[group], trees):
                times.setdefault((task, tree), []).append(got[tree][task])
                ratios.setdefault((task, tree), []).append(got[tree][task] / got[trees[0]][task])
            print(f"round {rnd + 1} {group}: {json.dumps(got)}", file=sys.stderr, flush=True)
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    print(f"{args.rounds} interleaved rounds, median of {args.reps} reps per child, 1 torch thread, CPU seconds")
    print(f"{'workload':14s}" + "".join(f"{Path(t).name:>22s}" for t in trees))
    for group in args.groups.split(","):
        for task in GROUPS[group]:
            cells = [
                f"{statistics.median(times[task, t]):8.3f}s x{statistics.median(ratios[task, t]):5.3f}" for t in trees
            ]
            print(f"{task:14s}" + "".join(f"{c:>22s}" for c in cells))


if __name__ == "__main__":
    main()
