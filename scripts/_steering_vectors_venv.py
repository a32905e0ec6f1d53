"""steering-vectors 0.12.2 in its own virtualenv (it needs ``transformers<5``), for side-by-side checks.

Shared by ``scripts/check_*_against_steering_vectors.py`` and
``benchmarks/bench_training_vs_steering_vectors.py``: the venv is built once (CPU torch of this
interpreter's version first, so pip keeps it, then steering-vectors) and reused while it imports.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SV_VERSION = "0.12.2"
DEFAULT_VENV = Path(tempfile.gettempdir()) / f"steerlens-sv-{SV_VERSION}"


def ensure_venv(venv: Path = DEFAULT_VENV) -> Path:
    """The venv's python, building the venv first if it lacks steering-vectors==SV_VERSION."""
    python = venv / "bin" / "python"
    check = f"import steering_vectors as sv, transformers; assert sv.__version__ == {SV_VERSION!r}"
    if python.exists() and subprocess.run([python, "-c", check], capture_output=True).returncode == 0:
        print(f"steering-vectors venv: {venv} (reused)")
        return python
    torch_version = torch.__version__.split("+")[0]
    print(f"building {venv}: torch=={torch_version} (CPU), then steering-vectors=={SV_VERSION} ...", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"torch=={torch_version}"], check=True)  # CPU build first, so pip keeps it
    subprocess.run([*pip, f"steering-vectors=={SV_VERSION}", "transformers<5"], check=True)
    print(f"steering-vectors venv built in {time.perf_counter() - start:.0f} s")
    return python
