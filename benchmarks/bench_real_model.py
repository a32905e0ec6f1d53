"""Speed on a real model: SmolLM2-135M-Instruct (30 layers, 49k vocabulary), ratios measured in one run.

    python benchmarks/bench_real_model.py [--threads 2] [--prompts 32] [--layers 10] [--new-tokens 50]

* sweep: ``sweep_layers`` over layers × 7 multipliers on chat prompts (HF route) against the naive loop
  (``vec.apply`` + a full forward per cell, logits at every position as a user would write it) and
  against 70 plain forwards of the same batch (targets: ≥ 5× faster than naive, ≤ 2× the plain forwards);
* the same sweep in CAA's setting (``steer_from="answer"``: each prompt steered from its assistant turn on),
  against the naive loop steering the same positions (a ``[batch, pos]`` ``token_indices`` mask) and the
  same plain forwards: only the columns from the answer on are recomputed per cell (KV cache of the rest);
* generation: steered ``generate`` of ``--new-tokens`` greedy tokens on the HookedTransformer of the same
  weights against HF ``generate`` (target ≤ 1.3×).

Run it on a quiet machine; it prints each timing and the ratios.
"""

from __future__ import annotations

import argparse
import time

import torch


def timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--new-tokens", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import steerlens
    from steerlens import sweep_layers, train_steering_vector
    from steerlens.samples import chat_contrast_pairs, neutral_chat_prompts

    model, tok = steerlens.load_hf_model("smollm2-135m-instruct")
    layers = list(range(3, 3 + 2 * args.layers, 2))[: args.layers]
    mults = [-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0]
    vec = train_steering_vector(
        model, tok, chat_contrast_pairs("sentiment", "train", tokenizer=tok)[:32], layers=layers, batch_size=16
    )
    chats = neutral_chat_prompts(tok)
    prompts = [chats[i % len(chats)] + "Honestly, it was" for i in range(args.prompts)]
    batch = tok(prompts, return_tensors="pt", padding=True)
    cells = len(layers) * len(mults)
    print(
        f"SmolLM2-135M-Instruct, {args.threads} threads, {len(prompts)} chat prompts "
        f"(up to {batch.input_ids.shape[1]} tokens), {len(layers)} layers x {len(mults)} multipliers"
    )

    def sweep() -> None:
        sweep_layers(model, vec, prompts, multipliers=mults, metric="kl", tokenizer=tok, batch_size=len(prompts) * 7)

    def naive() -> None:
        with torch.no_grad():
            for layer in layers:
                for m in mults:
                    with vec.select_layers([layer]).apply(model, multiplier=m):
                        model(**batch).logits

    def plain() -> None:
        with torch.no_grad():
            for _ in range(cells):
                model(**batch).logits

    sweep()  # warm-up
    t_sweep, t_naive, t_plain = timed(sweep), timed(naive), timed(plain)
    print(f"sweep {t_sweep:.1f} s, naive loop {t_naive:.1f} s, {cells} plain forwards {t_plain:.1f} s")
    print(
        f"  naive / sweep = {t_naive / t_sweep:.2f}x (target >= 5); sweep / plain = {t_sweep / t_plain:.2f} "
        "(target <= 2)"
    )

    from steerlens.tokens.starts import steer_starts

    starts = steer_starts(tok, [tok(p).input_ids for p in prompts], "answer")
    mask = torch.arange(batch.input_ids.shape[1])[None, :] >= torch.tensor(starts)[:, None]

    def sweep_answer() -> None:
        sweep_layers(
            model,
            vec,
            prompts,
            multipliers=mults,
            metric="kl",
            tokenizer=tok,
            batch_size=len(prompts) * 7,
            steer_from="answer",
        )

    def naive_answer() -> None:
        with torch.no_grad():
            for layer in layers:
                for m in mults:
                    with vec.select_layers([layer]).apply(model, multiplier=m, token_indices=mask):
                        model(**batch).logits

    sweep_answer()  # warm-up
    t_sweep_a, t_naive_a = timed(sweep_answer), timed(naive_answer)
    print(
        f"steer_from='answer' (steering starts at token {min(starts)}..{max(starts)}): sweep {t_sweep_a:.1f} s, "
        f"naive loop {t_naive_a:.1f} s"
    )
    print(
        f"  naive / sweep = {t_naive_a / t_sweep_a:.2f}x (target >= 5); sweep / plain = {t_sweep_a / t_plain:.2f} "
        "(target <= 2)"
    )

    tl = steerlens.load_model("smollm2-135m-instruct", fast_generation=True)
    one = vec.select_layers([layers[len(layers) // 2]])
    ids = tok(chats[0], return_tensors="pt").input_ids

    def hf_generate() -> None:
        model.generate(ids, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)

    def tl_generate() -> None:
        with one.apply(tl, multiplier=1.0):
            tl.generate(ids, max_new_tokens=args.new_tokens, do_sample=False, verbose=False, stop_at_eos=False)

    hf_generate(), tl_generate()  # warm-up
    t_hf, t_tl = timed(hf_generate, 3), timed(tl_generate, 3)
    print(
        f"generate {args.new_tokens} tokens: HF {t_hf:.2f} s, steered HookedTransformer {t_tl:.2f} s, "
        f"ratio {t_tl / t_hf:.2f}x (target <= 1.3)"
    )


if __name__ == "__main__":
    main()
