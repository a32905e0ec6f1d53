"""steerlens vs steering-vectors 0.12.2 on native Hugging Face models, for every layer type.

For each tiny architecture both libraries handle and each of steering-vectors' layer types
(decoder_block, self_attn, mlp, input_layernorm, post_attention_layernorm), both sides call

    train_steering_vector(model, tokenizer, pairs, layers=[0, 1], layer_type=X, read_token_index=-1)

on the SAME weights and the same token ids, then steer a held-out prompt with the vector
(``vec.apply(model, multiplier=1.0)``); the script compares the vectors and the steered logits.

steering-vectors needs ``transformers<5``, so it runs in its own virtualenv (built once, then
reused: ``--venv``, default ``/tmp/steerlens-sv-0.12.2``, the one
``benchmarks/bench_training_vs_steering_vectors.py`` and
``scripts/check_aggregators_against_steering_vectors.py`` use). Both sides run
``scripts/_layer_types_worker.py`` (steerlens' side in this interpreter, under transformers 5):

1. weights: each tiny model is built here from its config (``_layer_types_worker.SPECS``:
   2 layers, d_model 32, config values that mean the same under transformers 4 and 5, eager
   attention, float32), every weight moved well away from its init value, and its state dict
   saved (safetensors). Each side rebuilds the model from its own config class and loads that
   state dict strictly (MoE expert weights unstacked and GPT-NeoX's ``embed_out`` renamed for
   transformers 4).
2. comparability: both sides' plain logits on the held-out prompt must agree to
   ``--plain-tol`` (1e-5), and both tokenizers must give the same ids; otherwise the
   architecture is reported as "not comparable" (with the reason) and not judged.
3. cells: max |Δvector| over layers 0 and 1 (and relative to steering-vectors' largest
   component), max |Δsteered logits| (and relative to steering-vectors' steering effect,
   max |steered - plain|). A cell is ``ok`` if |Δvector| <= ``--vec-tol`` (1e-5) and
   |Δlogits| <= ``--logits-tol`` (1e-4). If steering-vectors raises (e.g. it guesses no
   module for that layer type: OPT's ``mlp``, Phi's ``post_attention_layernorm``), the cell is
   ``n/a`` (not judged; except Mixtral's ``mlp``, which transformers 4 calls ``block_sparse_moe``:
   steering-vectors is given that template, see ``TRANSFORMERS4_LAYER_CONFIG``); if only steerlens raises, the cell fails. A side whose hooks outlive
   ``apply`` (plain logits differ afterwards) fails too.

    python scripts/check_layer_types_against_steering_vectors.py [--arch gemma2,falcon] \\
        [--layer-type mlp,input_layernorm] [--venv DIR] [--threads 1] [--dtype float32|float64]

Exits with status 1 if any judged cell fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _layer_types_worker as worker  # noqa: E402
from _steering_vectors_venv import DEFAULT_VENV, ensure_venv  # noqa: E402

WORKER = Path(worker.__file__).resolve()


def _pick(value: str, known: tuple[str, ...] | list[str], what: str) -> list[str]:
    chosen = [v.strip() for v in value.split(",") if v.strip()] if value else list(known)
    unknown = [v for v in chosen if v not in known]
    if unknown:
        raise SystemExit(f"unknown {what} {unknown}; known: {', '.join(known)}")
    return chosen


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.1e}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="", help=f"comma-separated subset of: {', '.join(worker.SPECS)}")
    parser.add_argument("--layer-type", default="", help=f"comma-separated subset of: {', '.join(worker.LAYER_TYPES)}")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per side (default 1)")
    parser.add_argument("--plain-tol", type=float, default=1e-5)
    parser.add_argument("--vec-tol", type=float, default=1e-5)
    parser.add_argument("--logits-tol", type=float, default=1e-4)
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "float64"],
        help="run both models in this dtype (weights are float32 either way)",
    )
    parser.add_argument("--traceback", action="store_true", help="print each side's tracebacks (stderr)")
    args = parser.parse_args()
    archs = _pick(args.arch, list(worker.SPECS), "architecture")
    layer_types = _pick(args.layer_type, worker.LAYER_TYPES, "layer type")

    t0 = time.perf_counter()
    python = ensure_venv(args.venv)
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="steerlens-layer-types-") as tmp:
        folder = Path(tmp)
        build_errors = worker.build_weights(archs, folder)
        built = [a for a in archs if a not in build_errors]
        # steering-vectors in its venv, concurrently with steerlens here (one thread each).
        theirs_file = folder / "sv.npz"
        cmd = [
            str(python),
            str(WORKER),
            "--lib",
            "steering_vectors",
            "--weights",
            str(folder),
            "--out",
            str(theirs_file),
            "--arch",
            ",".join(built),
            "--layer-type",
            ",".join(layer_types),
            "--threads",
            str(args.threads),
            "--dtype",
            args.dtype,
        ] + (["--traceback"] if args.traceback else [])
        t_sv = time.perf_counter()
        proc = subprocess.Popen(cmd) if built else None
        t_ours = time.perf_counter()
        try:
            ours, ours_info = worker.run_side("steerlens", folder, built, layer_types, args.traceback, args.dtype)
        finally:
            if proc is not None and sys.exc_info()[0] is not None:  # do not leave it writing into tmp
                proc.kill()
                proc.wait()
        t_ours = time.perf_counter() - t_ours
        if proc is not None and proc.wait() != 0:
            print(f"the steering-vectors side failed (exit code {proc.returncode})", file=sys.stderr)
            return 2
        t_sv = time.perf_counter() - t_sv
        theirs = dict(np.load(theirs_file)) if built else {}
        theirs_info = json.loads(theirs_file.with_suffix(".json").read_text()) if built else {}

    print(f"steerlens:        {ours_info['lib']}, transformers {ours_info['transformers']}, torch {ours_info['torch']}")
    print(
        f"steering-vectors: {theirs_info.get('lib')}, transformers {theirs_info.get('transformers')}, "
        f"torch {theirs_info.get('torch')}"
    )
    ids_agree = ours_info["ids"] == theirs_info.get("ids")
    print(
        f"token ids: {'identical' if ids_agree else 'DIFFER'} on both sides "
        f"({len(worker.PAIRS)} pairs of {sorted({len(i) for p in ours_info['ids']['pairs'] for i in p})} tokens, "
        f"held-out prompt of {len(ours_info['ids']['held_out'])}); {args.dtype}, layers {worker.LAYERS}, batch_size 1, "
        f"mean aggregator, multiplier 1.0"
    )
    print(
        f"ok: |Δvector| <= {args.vec_tol:g} and |Δlogits| <= {args.logits_tol:g}; comparable: "
        f"|Δplain logits| <= {args.plain_tol:g}.  rel: vector diff / max|sv vector|, "
        "logits diff / max|sv steered - plain|\n"
    )

    header = f"{'architecture':<20} {'layer type':<25} {'|Δvec|':>8} {'rel':>8} {'|Δlogits|':>9} {'rel':>8}  status"
    print(header)
    print("-" * len(header))
    failures, summary, plain_diffs = [], {}, {}
    counts = {"ok": 0, "FAIL": 0, "n/a": 0, "not comparable": 0}
    for arch in archs:
        summary[arch] = {}
        reason = None
        if arch in build_errors:
            reason = f"build failed: {build_errors[arch]}"
        elif f"{arch}|load_error" in ours_info or f"{arch}|load_error" in theirs_info:
            reason = "load failed: " + "; ".join(
                f"{side}: {info[f'{arch}|load_error']}"
                for side, info in (("steerlens", ours_info), ("sv", theirs_info))
                if f"{arch}|load_error" in info
            )
        elif not ids_agree:
            reason = "token ids differ"
        else:
            d_plain = float(np.abs(ours[f"{arch}|plain"] - theirs[f"{arch}|plain"]).max())
            plain_diffs[arch] = d_plain
            if d_plain > args.plain_tol:
                reason = f"plain logits differ by {d_plain:.1e}"
        if reason is not None:
            print(f"{arch:<20} {'(all)':<25} {'':>8} {'':>8} {'':>9} {'':>8}  not comparable: {reason}")
            for lt in layer_types:
                summary[arch][lt] = "-"
            counts["not comparable"] += len(layer_types)
            continue
        for lt in layer_types:
            cell = f"{arch}|{lt}"
            sv_err = theirs_info.get(f"{cell}|train_error") or theirs_info.get(f"{cell}|apply_error")
            our_err = ours_info.get(f"{cell}|train_error") or ours_info.get(f"{cell}|apply_error")
            d_vec = rel_vec = d_log = rel_log = None
            if f"{cell}|vec" in ours and f"{cell}|vec" in theirs:
                diff = np.abs(ours[f"{cell}|vec"] - theirs[f"{cell}|vec"])
                d_vec = float(diff.max())
                rel_vec = d_vec / max(float(np.abs(theirs[f"{cell}|vec"]).max()), 1e-30)
            if f"{cell}|steered" in ours and f"{cell}|steered" in theirs:
                d_log = float(np.abs(ours[f"{cell}|steered"] - theirs[f"{cell}|steered"]).max())
                effect = float(np.abs(theirs[f"{cell}|steered"] - theirs[f"{arch}|plain"]).max())
                rel_log = d_log / max(effect, 1e-30)
            if sv_err:
                status, key = "n/a: steering-vectors raised " + sv_err, "n/a"
                if not our_err:
                    status += "  (steerlens trains and steers)"
                else:
                    status += f"  | steerlens raised {our_err}"
            elif our_err:
                status, key = f"FAIL: steerlens raised {our_err}", "FAIL"
            else:
                problems = []
                if d_vec is None or d_vec > args.vec_tol:
                    problems.append(f"vector {_fmt(d_vec)}")
                if d_log is None or d_log > args.logits_tol:
                    problems.append(f"logits {_fmt(d_log)}")
                for side, info in (("steerlens", ours_info), ("steering-vectors", theirs_info)):
                    if f"{cell}|leak" in info:
                        problems.append(f"{side} leaves the model changed after apply ({info[f'{cell}|leak']:.1e})")
                status, key = ("ok", "ok") if not problems else ("FAIL: " + ", ".join(problems), "FAIL")
            if f"{cell}|layer_config" in theirs_info:
                status += f"  (steering-vectors given layer_config {lt}={theirs_info[f'{cell}|layer_config']!r})"
            counts[key] += 1
            summary[arch][lt] = key
            if key == "FAIL":
                failures.append(cell)
            print(
                f"{arch:<20} {lt:<25} {_fmt(d_vec):>8} {_fmt(rel_vec):>8} {_fmt(d_log):>9} {_fmt(rel_log):>8}  {status}"
            )

    short = {
        "decoder_block": "block",
        "self_attn": "attn",
        "mlp": "mlp",
        "input_layernorm": "in_ln",
        "post_attention_layernorm": "post_ln",
    }
    print("\n" + f"{'':<20}" + "".join(f"{short[lt]:>8}" for lt in layer_types) + f"{'|Δplain|':>10}")
    for arch in archs:
        print(
            f"{arch:<20}"
            + "".join(f"{summary[arch][lt]:>8}" for lt in layer_types)
            + f"{_fmt(plain_diffs.get(arch)):>10}"
        )
    comparable = [a for a in archs if any(v != "-" for v in summary[a].values())]
    print(
        f"\n{len(comparable)}/{len(archs)} architectures comparable; cells: "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
    )
    print(
        f"time: steerlens side {t_ours:.0f} s, steering-vectors side {t_sv:.0f} s (concurrently), "
        f"total {time.perf_counter() - t0:.0f} s"
    )
    if failures:
        print(f"FAILED cells: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
