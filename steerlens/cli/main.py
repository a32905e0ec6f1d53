"""The ``steerlens`` command line: train, sweep, generate, info and the demo.

Every subcommand has ``--help``. Bad arguments and bad files print one line
(``steerlens: error: ...``) and exit with status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from steerlens.cli.info import cmd_info
from steerlens.cli.types import int_list, output_file, positive_int
from steerlens.errors import SteerlensError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _load(source: str) -> Any:
    from steerlens.adapter import load_model

    return load_model(source)


def cmd_train(args: argparse.Namespace) -> None:
    from steerlens.cli.prompts import render_pairs
    from steerlens.formats.pairs import read_pairs_jsonl
    from steerlens.training import train_steering_vector

    pair_lines = read_pairs_jsonl(args.pairs)
    model = _load(args.model)
    pairs = render_pairs(model, pair_lines, chat=args.chat, model_name=args.model)
    vec = train_steering_vector(
        model,
        None,
        pairs,
        layers=args.layers,
        layer_type=args.layer_type,
        batch_size=args.batch_size,
        show_progress=True,
        prepend_bos=args.prepend_bos,
    )
    if args.chat:  # how the texts were rendered is part of how the vector was trained (`steerlens info` shows it)
        vec.metadata.setdefault("training", {})["chat_template"] = True
    vec.save(args.out)
    chat = " (in the chat template)" if args.chat else ""
    print(f"trained on {len(pairs)} pairs{chat}; layers {vec.layers}; wrote {args.out}")


def cmd_generate(args: argparse.Namespace) -> None:
    from steerlens.cli.demo import check_generation_room
    from steerlens.cli.prompts import render_prompts
    from steerlens.evaluation.generation import steered_and_unsteered
    from steerlens.vector import SteeringVector

    vec = SteeringVector.load(args.vector)
    model = _load(args.model)
    (prompt,) = render_prompts(model, [args.prompt], chat=args.chat, model_name=args.model)
    check_generation_room(model, [prompt], args.max_new_tokens, args.prepend_bos)
    steered, unsteered = steered_and_unsteered(
        model,
        vec,
        prompt,
        multiplier=args.multiplier,
        max_new_tokens=args.max_new_tokens,
        prepend_bos=args.prepend_bos,
    )
    print(f"prompt:     {prompt!r}")
    print(f"unsteered:  {unsteered!r}")
    print(f"steered x{args.multiplier:g}: {steered!r}")


def build_parser(extra: Sequence[Callable[[Any], None]] = ()) -> argparse.ArgumentParser:
    from steerlens.cli.commands import (
        BATCH_SIZE_HELP,
        LAYER_TYPE_HELP,
        PAIRS_HELP,
        add_chat_option,
        add_model_option,
        add_prepend_bos,
    )

    parser = _Parser(prog="steerlens", description="Train and apply steering vectors.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a steering vector from a JSONL file of pairs")
    add_model_option(p)
    p.add_argument("--pairs", required=True, type=Path, help=PAIRS_HELP)
    add_chat_option(p, "put the pairs in the model's own chat template, as --pairs says")
    p.add_argument("--layers", type=int_list, default=None, help="comma-separated layers, e.g. 2,3 (default: all)")
    p.add_argument("--layer-type", default="resid_post", help=LAYER_TYPE_HELP)
    p.add_argument("--batch-size", type=positive_int, default=8, help=BATCH_SIZE_HELP)
    p.add_argument(
        "--out",
        required=True,
        type=output_file,
        help="where to write the vector (.safetensors; checked before training)",
    )
    add_prepend_bos(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="generate steered and unsteered text side by side")
    add_model_option(p)
    p.add_argument("--vector", required=True, type=Path, help="the steering vector (.safetensors, from train)")
    p.add_argument(
        "--multiplier", type=float, default=4.0, help="multiple of the vector added at its layers (default: 4)"
    )
    p.add_argument("--prompt", required=True, help="the text the model continues (with --chat: the user's message)")
    add_chat_option(
        p, "put --prompt in the model's own chat template as the user's turn, followed by the generation prompt"
    )
    p.add_argument("--max-new-tokens", type=positive_int, default=20, help="tokens generated, greedily (default: 20)")
    add_prepend_bos(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("info", help="show a vector file's layers, norms, model and training")
    p.add_argument("vector", type=Path, help="a steerlens vector (.safetensors) or a llama.cpp control vector (.gguf)")
    p.set_defaults(func=cmd_info)

    for register in extra:
        register(sub)
    return parser


# Options whose value is a number list that may start with "-" ("--multipliers -4,4").
_LIST_OPTIONS = ("--multipliers", "--layers")
_NUMBER_LIST = re.compile(r"-[0-9.][0-9eE.+\-]*(,\s*[-+]?[0-9.][0-9eE.+\-]*)*,?")


def join_negative_lists(argv: Sequence[str]) -> list[str]:
    """Glue ``--multipliers -4,-2`` into ``--multipliers=-4,-2``, which argparse would take for an option."""
    out: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        if args[i] in _LIST_OPTIONS and i + 1 < len(args) and _NUMBER_LIST.fullmatch(args[i + 1]):
            out.append(f"{args[i]}={args[i + 1]}")
            i += 2
        else:
            out.append(args[i])
            i += 1
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(_extra_commands())
    try:
        args = parser.parse_args(join_negative_lists(sys.argv[1:] if argv is None else argv))
    except SystemExit as exit_:  # --help (0) or a usage error (2), already printed
        return int(exit_.code or 0)
    try:
        args.func(args)
    except (SteerlensError, OSError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"steerlens: error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return 0


def _extra_commands() -> list[Callable[[Any], None]]:
    """Subcommands defined in their own modules (sweep, demo)."""
    from steerlens.cli.commands import register_demo, register_sweep

    return [register_sweep, register_demo]


if __name__ == "__main__":
    sys.exit(main())
