"""Compare steerlens' aggregators with steering-vectors 0.12.2's on the same activations.

steering-vectors is never a dependency of steerlens: this script installs it in a
separate virtualenv (by default under /tmp), runs its aggregators there on saved
random activations, then runs ours here and prints the cosine of each pair.

    python scripts/check_aggregators_against_steering_vectors.py [--venv DIR] [--min-cosine 0.999]

The virtualenv gets the same torch version as this interpreter (CPU wheels from
the configured package index) and ``steering-vectors==0.12.2`` (which pulls in
``transformers<5`` and scikit-learn). It is reused on later runs. Exits with
status 1 if any cosine is below ``--min-cosine``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _steering_vectors_venv import DEFAULT_VENV, SV_VERSION, ensure_venv  # noqa: E402

from steerlens import logistic_aggregator, mean_aggregator, pca_aggregator

# name -> (our aggregator factory, expression building theirs inside the other venv)
AGGREGATORS = {
    "mean": (mean_aggregator, "sv.mean_aggregator()"),
    "pca": (pca_aggregator, "sv.pca_aggregator()"),
    "logistic": (logistic_aggregator, "sv.logistic_aggregator()"),
    "logistic C=100": (
        lambda: logistic_aggregator(sklearn_kwargs={"C": 100.0, "max_iter": 5000}),
        "sv.logistic_aggregator(sklearn_kwargs={'C': 100.0, 'max_iter': 5000})",
    ),
}

# name -> (seed, n_pairs, d_model, dtype)
DATASETS = {
    "n=1 d=16": (0, 1, 16, "float32"),
    "n=8 d=64": (1, 8, 64, "float32"),
    "n=24 d=64": (2, 24, 64, "float32"),
    "n=64 d=512": (3, 64, 512, "float32"),
    "n=300 d=32": (4, 300, 32, "float32"),
    "n=40 d=128 f64": (5, 40, 128, "float64"),
}

CHILD = """
import sys, warnings
import numpy as np, torch
import steering_vectors as sv
assert sv.__version__ == {version!r}, sv.__version__
warnings.simplefilter("ignore")
data = np.load(sys.argv[1])
out = {{}}
for key in [k[:-4] for k in data.files if k.endswith("/pos")]:
    pos, neg = torch.from_numpy(data[key + "/pos"]), torch.from_numpy(data[key + "/neg"])
    for name, expr in {exprs!r}.items():
        vec = eval(expr)(pos, neg)
        out[key + "|" + name] = vec.detach().cpu().double().numpy()
        out[key + "|" + name + "|dtype"] = np.array(str(vec.dtype))
np.savez(sys.argv[2], **out)
"""


def make_activations(seed: int, n: int, d: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = 3.0 * rng.standard_normal((n, d)) + 2.0
    concept = rng.standard_normal(d)
    pos = base + concept + 0.8 * rng.standard_normal((n, d))
    neg = base - 0.5 * concept + 0.8 * rng.standard_normal((n, d))
    return pos.astype(dtype), neg.astype(dtype)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--min-cosine", type=float, default=0.999)
    args = parser.parse_args()

    python = ensure_venv(args.venv)
    with tempfile.TemporaryDirectory() as tmp:
        acts_file, theirs_file = Path(tmp) / "acts.npz", Path(tmp) / "theirs.npz"
        acts = {name: make_activations(*spec) for name, spec in DATASETS.items()}
        np.savez(
            acts_file, **{f"{k}/pos": p for k, (p, _) in acts.items()}, **{f"{k}/neg": n for k, (_, n) in acts.items()}
        )
        child = CHILD.format(version=SV_VERSION, exprs={k: expr for k, (_, expr) in AGGREGATORS.items()})
        subprocess.run([python, "-c", child, acts_file, theirs_file], check=True)
        theirs = dict(np.load(theirs_file))

    worst = 1.0
    print(
        f"{'activations':<16} {'aggregator':<15} {'cosine':>18} {'max |diff|':>11} {'|ours|':>9} {'|theirs|':>9}  dtype ours/theirs"
    )
    for data_name, (pos, neg) in acts.items():
        for agg_name, (factory, _) in AGGREGATORS.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sklearn's ConvergenceWarning, as in steering-vectors
                ours_t = factory()(torch.from_numpy(pos), torch.from_numpy(neg))
            ours = ours_t.double().numpy()
            ref = theirs[f"{data_name}|{agg_name}"]
            cos = cosine(ours, ref)
            worst = min(worst, cos)
            print(
                f"{data_name:<16} {agg_name:<15} {cos:>18.15f} {np.abs(ours - ref).max():>11.2e} "
                f"{np.linalg.norm(ours):>9.4f} {np.linalg.norm(ref):>9.4f}  "
                f"{str(ours_t.dtype).removeprefix('torch.')}/{str(theirs[f'{data_name}|{agg_name}|dtype']).removeprefix('torch.')}"
            )
    print(f"lowest cosine: {worst:.15f} (threshold {args.min_cosine})")
    return 0 if worst >= args.min_cosine else 1


if __name__ == "__main__":
    sys.exit(main())
