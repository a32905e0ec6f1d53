"""The ``steerlens sweep`` and ``steerlens demo`` subcommands (registered by :mod:`steerlens.cli`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from steerlens.cli.types import float_list, int_list, output_file, output_folder, positive_int, word_list

# The parser is built for every command, `steerlens info` too: nothing here may import torch, so
# defaults that live with the code (sweep_layers', run_demo's multipliers) are applied there.


def add_prepend_bos(parser: argparse.ArgumentParser) -> None:
    """``--prepend-bos`` / ``--no-prepend-bos`` (default: the model's own convention)."""
    parser.add_argument(
        "--prepend-bos",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add a BOS to every prompt, or not (default: the model's convention; a prompt that "
        "starts with the BOS, e.g. from a chat template, never gets a second one)",
    )


def cmd_sweep(args: argparse.Namespace) -> None:
    from steerlens.adapter import load_model
    from steerlens.errors import InvalidArgumentError
    from steerlens.evaluation import prob_share, sweep_layers
    from steerlens.formats.pairs import load_pairs_jsonl, load_prompts_txt
    from steerlens.formats.safe_io import write_atomic

    if (args.positive_words is None) != (args.negative_words is None):
        raise InvalidArgumentError("give both --positive-words and --negative-words, or neither.")
    pairs = load_pairs_jsonl(args.pairs)
    prompts = load_prompts_txt(args.prompts)
    metric: Any = args.metric
    if args.positive_words is not None:
        metric = prob_share(args.positive_words, args.negative_words)
    model = load_model(args.model)
    frame = sweep_layers(
        model,
        pairs,
        prompts,
        layers=args.layers,
        **_given(multipliers=args.multipliers),
        metric=metric,
        batch_size=args.batch_size,
        layer_type=args.layer_type,
        per_prompt=args.per_prompt,
        train_kwargs={"batch_size": args.batch_size, "show_progress": True},
        prepend_bos=args.prepend_bos,
    )
    write_atomic(args.out, frame.to_csv(index=False).encode("utf-8"))
    name = frame.attrs["metric"]
    if not args.per_prompt:
        print(_sweep_table(frame, name))
        if name != "kl":  # the damage beside the effect
            print(f"kl (nats):\n{_sweep_table(frame.drop(columns='degenerate', errors='ignore'), 'kl')}")
    print(f"{name} over {len(prompts)} prompts; wrote {args.out}")


def _sweep_table(frame: Any, value: str) -> str:
    """layer x multiplier table of ``value``; a degenerate cell gets a ``*`` and a footnote says why."""
    cells = frame.assign(
        shown=[
            f"{v:.4f}" + ("*" if bad else "")
            for v, bad in zip(frame[value], frame.get("degenerate", [False] * len(frame)))
        ]
    )
    table = cells.pivot(index="layer", columns="multiplier", values="shown").to_string()
    if "degenerate" in frame and frame["degenerate"].any():
        table += "\n* degenerate: the words keep < 10% of their unsteered probability (a broken model, not a win)"
    return table


def cmd_demo(args: argparse.Namespace) -> None:
    from steerlens.adapter.gguf import is_gguf

    if is_gguf(args.model):  # a real chat model: the chat demo, steered natively
        from steerlens.cli.chat_demo import run_chat_demo

        run_chat_demo(args.model, args.out, max_new_tokens=args.max_new_tokens)
        return
    from steerlens.cli.demo import run_demo

    run_demo(
        args.model,
        args.out,
        layers=args.layers,
        **_given(multipliers=args.multipliers),
        max_new_tokens=args.max_new_tokens,
    )


def _given(**options: Any) -> dict[str, Any]:
    """The options the user gave (not None): the others keep the called function's defaults."""
    return {name: value for name, value in options.items() if value is not None}


def register_sweep(sub: Any) -> None:
    p = sub.add_parser("sweep", help="train per-layer vectors and sweep layers x multipliers on prompts")
    p.add_argument("--model", default="toy", help="'toy', a hub id or a local folder (default: toy)")
    p.add_argument("--pairs", required=True, type=Path, help='JSONL, one {"positive": ..., "negative": ...} a line')
    p.add_argument("--prompts", required=True, type=Path, help="text file, one evaluation prompt a line")
    p.add_argument("--layers", type=int_list, default=None, help="comma-separated layers (default: all)")
    p.add_argument("--layer-type", default="resid_post", help="resid_post (default) or another layer type")
    p.add_argument(
        "--multipliers", type=float_list, default=None, help="comma-separated, e.g. -4,-2,2,4 (default: -4,-2,0,2,4)"
    )
    p.add_argument(
        "--metric",
        default="kl",
        choices=["kl", "argmax_changed"],
        help="next-token metric of steered vs unsteered (default: kl)",
    )
    p.add_argument(
        "--positive-words",
        type=word_list,
        default=None,
        help="comma-separated words; with --negative-words the metric is "
        "P(positive) / (P(positive) + P(negative)) of the next token",
    )
    p.add_argument("--negative-words", type=word_list, default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--per-prompt", action="store_true", help="one CSV row per prompt instead of means")
    p.add_argument("--out", required=True, type=output_file, help="where to write the CSV (checked before training)")
    add_prepend_bos(p)
    p.set_defaults(func=cmd_sweep)


def register_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="the main job: train, sweep and compare steering vectors on a model")
    p.add_argument(
        "--model",
        default="toy",
        help="'toy' (default), a hub id or a local folder (the toy demo), or a chat model's .gguf "
        "file or short name such as smollm2-135m-instruct (the chat demo: sentiment and an "
        "A/B behaviour, steered natively; make demo runs this one)",
    )
    p.add_argument(
        "--out",
        type=output_folder,
        default="steerlens-demo",
        help="output folder, created if missing (default: steerlens-demo; checked before training)",
    )
    p.add_argument("--layers", type=int_list, default=None, help="comma-separated layers (default: all)")
    p.add_argument(
        "--multipliers", type=float_list, default=None, help="comma-separated (default: -8,-4,-2,-1,0,1,2,4,8)"
    )
    p.add_argument("--max-new-tokens", type=positive_int, default=16)
    p.set_defaults(func=cmd_demo)
