"""Steered generation speed: Hugging Face ``generate`` against ``HookedTransformer.generate``, same weights.

A random GPT-2-small checkpoint (``transformers.GPT2Config()``: 12 layers, d_model 768,
vocab 50257) is saved to a temp folder and loaded twice with ``steerlens.load_model``
(which stores the weights for fast generation, :func:`steerlens.backends.hooked_layout.fast_generation`);
one copy is put back into TransformerLens' own layout ("before"). Greedy decoding of
NEW_TOKENS tokens (no early stop), for one prompt and for a left-padded batch of 8 prompts
of different lengths. Contenders run interleaved, REPEATS rounds, fastest run kept ("before"
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
from steerlens.backends.hooked_layout import OutputLayout, is_fast, restore_tl_forward  # noqa: E402

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


def tl_layout(model: Any) -> Any:
    """Undo ``fast_generation``: weights contiguous as TransformerLens makes them, no layout hooks, its own forward."""
    restore_tl_forward(model)
    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.contiguous()
    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, OutputLayout):
                del module._forward_pre_hooks[key]
    assert not is_fast(model)
    return model


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


def contenders(hf: Any, before: Any, after: Any, prompts: list[str], new_tokens: int) -> dict[str, Callable[[], Any]]:
    """name -> a call returning the generated token ids (prompt included, [batch, pos])."""
    tokens, mask = prompts_and_mask(after, prompts)
    vec = SteeringVector({STEER_LAYER: torch.randn(after.cfg.d_model, generator=torch.Generator().manual_seed(1))})
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
                pad_token_id=after.tokenizer.pad_token_id,
            )

    def steered() -> torch.Tensor:
        with vec.apply(after, multiplier=MULTIPLIER):
            return after.generate(tl_input, **tl_kwargs)

    return {
        "HF generate": hf_generate,
        "TL before fix": lambda: before.generate(tl_input, **tl_kwargs),
        "TL after fix": lambda: after.generate(tl_input, **tl_kwargs),
        "TL after, steered": steered,
    }


def time_round_robin(calls: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Fastest time of each call over ``repeats`` interleaved rounds ("before" only in the first)."""
    times: dict[str, list[float]] = {name: [] for name in calls}
    outputs: dict[str, Any] = {}
    for round_ in range(repeats):
        for name, call in calls.items():
            if name == "TL before fix" and round_ > 0:
                continue
            start = time.perf_counter()
            outputs[name] = call()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}, outputs


def verdict(ratio: float, target: float) -> str:
    return "OK" if ratio <= target else "OVER TARGET"


def report(title: str, best: dict[str, float], outputs: dict[str, Any]) -> list[str]:
    hf, after, steered = best["HF generate"], best["TL after fix"], best["TL after, steered"]
    lines = [f"\n{title}"]
    lines += [f"  {name:<20s} {seconds:7.2f} s   {seconds / hf:5.2f}x HF" for name, seconds in best.items()]
    same = torch.equal(outputs["TL before fix"], outputs["TL after fix"])
    lines.append(f"  tokens before == after fix: {same}")
    lines.append(
        f"  after fix / HF:       {after / hf:5.2f}x  (target <= {TARGET_VS_HF})  {verdict(after / hf, TARGET_VS_HF)}"
    )
    lines.append(
        f"  steered / HF:         {steered / hf:5.2f}x  (target <= {TARGET_VS_HF})  "
        f"{verdict(steered / hf, TARGET_VS_HF)}"
    )
    lines.append(
        f"  steered / unsteered:  {steered / after:5.2f}x  (target <= {TARGET_STEERING})  "
        f"{verdict(steered / after, TARGET_STEERING)}"
    )
    lines.append(f"  before fix / after:   {best['TL before fix'] / after:5.2f}x faster after the fix")
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
        after = steerlens.load_model(folder)
        before = tl_layout(steerlens.load_model(folder))
    sentences = random_sentences(8, seed=3, min_words=4, max_words=20)
    single = [random_sentences(1, seed=5, min_words=18, max_words=18)[0]]
    print(
        f"random GPT-2 small, greedy, {args.new_tokens} new tokens, torch threads {torch.get_num_threads()}, "
        f"best of {args.repeats} interleaved rounds ('before': 1 round); steering: layer {STEER_LAYER}, "
        f"multiplier {MULTIPLIER}"
    )
    for title, prompts in (("one prompt", single), ("left-padded batch of 8", sentences)):
        tokens, _ = prompts_and_mask(after, prompts)
        for warm_up in contenders(hf, before, after, prompts, 2).values():  # allocator, lazy init: not timed
            warm_up()
        best, outputs = time_round_robin(contenders(hf, before, after, prompts, args.new_tokens), args.repeats)
        print("\n".join(report(f"{title} (prompt tokens {tuple(tokens.shape)})", best, outputs)), flush=True)
    print(f"\ntotal runtime {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
