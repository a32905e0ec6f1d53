"""Steered generation speed: Hugging Face ``generate`` against ``HookedTransformer.generate``, same weights.

A random GPT-2-small checkpoint (``transformers.GPT2Config()``: 12 layers, d_model 768,
vocab 50257) is saved to a temp folder and loaded twice with ``steerlens.load_model``: as
TransformerLens' own model ("TL plain", the default) and with the opt-in speed-up
(``fast_generation=True``, :func:`steerlens.tl_speedup.fast_generation`: "TL fast"). Greedy decoding of
NEW_TOKENS tokens (no early stop), for one prompt and for a left-padded batch of 8 prompts
of different lengths. Contenders run interleaved, REPEATS rounds, fastest run kept ("TL plain"
runs once: it is slow). Targets: HookedTransformer within 1.3x of HF, steering <= 5%.

Threads default to 2, as in issue 12. On a shared machine use ``--threads 1``: two OpenMP
threads wait for each other whenever one is descheduled, which makes timings swing by 10x.
``--threads 0`` keeps torch's default.

    python benchmarks/bench_generation.py [--threads 2] [--new-tokens 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import huggingface_hub
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _models import bench_tokenizer, random_sentences  # noqa: E402

import steerlens  # noqa: E402
from steerlens import SteeringVector  # noqa: E402
from steerlens.tl_speedup import is_fast  # noqa: E402

TARGET_VS_HF, TARGET_STEERING = 1.3, 1.05
STEER_LAYER, MULTIPLIER = 6, 4.0


def build_checkpoint(folder: str) -> Any:
    """A random GPT-2-small HF model and a small BPE tokenizer saved to ``folder``; returns the model."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config()).eval()
    hf.save_pretrained(folder)
    bench_tokenizer().save_pretrained(folder)
    return hf


def prompts_and_mask(model: Any, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded tokens and the attention mask TransformerLens' generate builds for them."""
    from transformer_lens import utils

    tokens = model.to_tokens(prompts, padding_side="left")
    side = model.tokenizer.padding_side
    model.tokenizer.padding_side = "left"
    try:
        mask = utils.get_attention_mask(model.tokenizer, tokens, model.cfg.default_prepend_bos)
    finally:
        model.tokenizer.padding_side = side
    return tokens, mask


def contenders(hf: Any, plain: Any, fast: Any, prompts: list[str], new_tokens: int) -> dict[str, Callable[[], Any]]:
    """name -> a call returning the generated token ids (prompt included, [batch, pos])."""
    tokens, mask = prompts_and_mask(fast, prompts)
    vec = SteeringVector({STEER_LAYER: torch.randn(fast.cfg.d_model, generator=torch.Generator().manual_seed(1))})
    tl_input: Any = prompts if len(prompts) > 1 else tokens  # a list is left-padded by generate itself
    tl_kwargs = dict(max_new_tokens=new_tokens, do_sample=False, stop_at_eos=False, verbose=False, return_type="tokens")

    def hf_generate() -> torch.Tensor:
        with torch.inference_mode():
            return hf.generate(
                tokens,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=fast.tokenizer.pad_token_id,
            )

    def steered() -> torch.Tensor:
        with vec.apply(fast, multiplier=MULTIPLIER):
            return fast.generate(tl_input, **tl_kwargs)

    return {
        "HF generate": hf_generate,
        "TL plain": lambda: plain.generate(tl_input, **tl_kwargs),
        "TL fast": lambda: fast.generate(tl_input, **tl_kwargs),
        "TL fast, steered": steered,
    }


def time_round_robin(calls: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Fastest time of each call over ``repeats`` interleaved rounds ("TL plain" only in the first)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    outputs: dict[str, Any] = {}
    for round_ in range(repeats):
        for name, call in calls.items():
            if name == "TL plain" and round_ > 0:
                continue
            start = time.perf_counter()
            outputs[name] = call()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}, outputs


def verdict(ratio: float, target: float) -> str:
    return "OK" if ratio <= target else "OVER TARGET"


def report(title: str, best: dict[str, float], outputs: dict[str, Any]) -> list[str]:
    hf, fast, steered = best["HF generate"], best["TL fast"], best["TL fast, steered"]
    lines = [f"\n{title}"]
    lines += [f"  {name:<20s} {seconds:7.2f} s   {seconds / hf:5.2f}x HF" for name, seconds in best.items()]
    same = torch.equal(outputs["TL plain"], outputs["TL fast"])
    lines.append(f"  tokens plain == fast: {same}")
    lines.append(
        f"  fast / HF:            {fast / hf:5.2f}x  (target <= {TARGET_VS_HF})  {verdict(fast / hf, TARGET_VS_HF)}"
    )
    lines.append(
        f"  steered / HF:         {steered / hf:5.2f}x  (target <= {TARGET_VS_HF})  "
        f"{verdict(steered / hf, TARGET_VS_HF)}"
    )
    lines.append(
        f"  steered / unsteered:  {steered / fast:5.2f}x  (target <= {TARGET_STEERING})  "
        f"{verdict(steered / fast, TARGET_STEERING)}"
    )
    lines.append(f"  plain / fast:         {best['TL plain'] / fast:5.2f}x faster with tl_speedup")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    transformers.logging.disable_progress_bar()  # no "Loading weights" / "Writing model shards" bars
    huggingface_hub.utils.disable_progress_bars()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="steerlens-bench-gen-") as folder:
        hf = build_checkpoint(folder)
        fast = steerlens.load_model(folder, fast_generation=True)
        plain = steerlens.load_model(folder)
    assert is_fast(fast) and not is_fast(plain)
    sentences = random_sentences(8, seed=3, min_words=4, max_words=20)
    single = [random_sentences(1, seed=5, min_words=18, max_words=18)[0]]
    print(
        f"random GPT-2 small, greedy, {args.new_tokens} new tokens, torch threads {torch.get_num_threads()}, "
        f"best of {args.repeats} interleaved rounds ('TL plain': 1 round); steering: layer {STEER_LAYER}, "
        f"multiplier {MULTIPLIER}"
    )
    for title, prompts in (("one prompt", single), ("left-padded batch of 8", sentences)):
        tokens, _ = prompts_and_mask(fast, prompts)
        for warm_up in contenders(hf, plain, fast, prompts, 2).values():  # allocator, lazy init: not timed
            warm_up()
        best, outputs = time_round_robin(contenders(hf, plain, fast, prompts, args.new_tokens), args.repeats)
        print("\n".join(report(f"{title} (prompt tokens {tuple(tokens.shape)})", best, outputs)), flush=True)
    print(f"\ntotal runtime {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
