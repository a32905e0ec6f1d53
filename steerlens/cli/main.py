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
    from steerlens.formats.pairs import load_pairs_jsonl
    from steerlens.training import train_steering_vector

    pairs = load_pairs_jsonl(args.pairs)
    model = _load(args.model)
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
    vec.save(args.out)
    print(f"trained on {len(pairs)} pairs; layers {vec.layers}; wrote {args.out}")


def cmd_generate(args: argparse.Namespace) -> None:
    from steerlens.cli.demo import check_generation_room
    from steerlens.evaluation.generation import steered_and_unsteered
    from steerlens.vector import SteeringVector

    vec = SteeringVector.load(args.vector)
    model = _load(args.model)
    check_generation_room(model, [args.prompt], args.max_new_tokens, args.prepend_bos)
    steered, unsteered = steered_and_unsteered(
        model,
        vec,
        args.prompt,
        multiplier=args.multiplier,
        max_new_tokens=args.max_new_tokens,
        prepend_bos=args.prepend_bos,
    )
    print(f"prompt:     {args.prompt!r}")
    print(f"unsteered:  {unsteered!r}")
    print(f"steered x{args.multiplier:g}: {steered!r}")


def cmd_info(args: argparse.Namespace) -> None:
    if _is_gguf(args.vector):
        from steerlens.interop import import_gguf

        vec = import_gguf(args.vector)
        kind, layer_type, d_model, metadata = (
            "GGUF control vector (llama.cpp)",
            vec.layer_type,
            vec.d_model,
            vec.metadata,
        )
        dtype, norms = str(next(iter(vec.layer_activations.values())).dtype), vec.norms()
    else:  # read without torch: a look at a file takes a fraction of a second
        from steerlens.formats.vector_file import summarize_vector_file

        summary = summarize_vector_file(args.vector)
        kind, layer_type, d_model, metadata = (
            "steerlens vector (safetensors)",
            *(summary.layer_type, summary.d_model, summary.metadata),
        )
        dtype, norms = summary.dtype, summary.norms
    print(f"file:       {args.vector}")
    print(f"format:     {kind}")
    print(f"layer_type: {layer_type}")
    print(f"d_model:    {d_model}")
    print(f"dtype:      {dtype}")
    print("layers and norms:")
    for layer, norm in sorted(norms.items()):
        print(f"  layer {layer:3d}  norm {norm:.4f}")
    for key, value in sorted(metadata.items()):
        print(f"{key}: {value}")


def _is_gguf(path: str) -> bool:
    """Whether ``path`` starts with GGUF's magic bytes; anything but a regular file is refused here
    (a FIFO would block, a device would never end), with the error a vector file's load gives."""
    from steerlens.errors import VectorFileError
    from steerlens.formats.safe_io import read_prefix

    return read_prefix(path, 4, lambda problem: VectorFileError(f"{path}: cannot read the file: {problem}")) == b"GGUF"


def build_parser(extra: Sequence[Callable[[Any], None]] = ()) -> argparse.ArgumentParser:
    from steerlens.cli.commands import add_prepend_bos

    parser = _Parser(prog="steerlens", description="Train and apply steering vectors.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a steering vector from a JSONL file of pairs")
    p.add_argument("--model", default="toy", help="'toy', a hub id or a local folder (default: toy)")
    p.add_argument("--pairs", required=True, type=Path, help='JSONL, one {"positive": ..., "negative": ...} a line')
    p.add_argument("--layers", type=int_list, default=None, help="comma-separated layers, e.g. 2,3 (default: all)")
    p.add_argument(
        "--layer-type", default="resid_post", help="resid_post (default), resid_pre, resid_mid, attn_out, mlp_out"
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--out",
        required=True,
        type=output_file,
        help="where to write the vector (.safetensors; checked before training)",
    )
    add_prepend_bos(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="generate steered and unsteered text side by side")
    p.add_argument("--model", default="toy")
    p.add_argument("--vector", required=True, type=Path)
    p.add_argument("--multiplier", type=float, default=4.0)
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=positive_int, default=20)
    add_prepend_bos(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("info", help="show a vector file's layers, norms and metadata")
    p.add_argument("vector", type=Path)
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
