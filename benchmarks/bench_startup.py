"""Start-up: ``import steerlens`` and ``steerlens info FILE``, timed in fresh interpreters.

    python benchmarks/bench_startup.py [--repeats 5] [--source DIR]

Each command runs ``--repeats`` times in a new process (the best time is printed, since
start-up only gets slower from the machine's load), next to ``import torch`` alone for scale,
then the top entries of ``python -X importtime`` for both. ``--source`` measures another
checkout (e.g. a worktree of an older commit) with the same interpreter. Targets (issue 20):
``import steerlens`` <= 3 s and ``steerlens info`` <= 2 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(code: str, source: Path, *flags: str) -> subprocess.CompletedProcess:
    # An editable install puts a finder for steerlens on sys.meta_path, ahead of PYTHONPATH: drop it, so
    # that ``source`` is the steerlens measured.
    prefix = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in "
        f"type(f).__module__.lower()]; sys.path.insert(0, {str(source)!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(source)}
    return subprocess.run(
        [sys.executable, *flags, "-c", prefix + code], env=env, capture_output=True, text=True, check=True
    )


def best_time(code: str, source: Path, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(code, source)
        best = min(best, time.perf_counter() - start)
    return best


def top_imports(code: str, source: Path, n: int = 6) -> list[str]:
    """The slowest top-level imports (cumulative microseconds) of ``code``."""
    rows = []
    for line in run(code, source, "-X", "importtime").stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit() and not parts[2].startswith("  "):
            rows.append((int(parts[1]), parts[2].strip()))
    return [f"{name} {us / 1e6:.2f} s" for us, name in sorted(rows, reverse=True)[:n]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--source", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        vector = Path(folder) / "v.safetensors"
        run(
            f"import torch, steerlens; steerlens.SteeringVector({{0: torch.ones(8)}}).save({str(vector)!r})",
            args.source,
        )
        commands = {
            "import torch": "import torch",
            "import steerlens": "import steerlens",
            "steerlens info FILE": f"from steerlens.cli.main import main; main(['info', {str(vector)!r}])",
        }
        times = {label: best_time(code, args.source, args.repeats) for label, code in commands.items()}
        print(f"source: {args.source}; best of {args.repeats} fresh interpreters each")
        for label, seconds in times.items():
            print(f"  {label:<22} {seconds:6.2f} s")
        print(
            f"targets: import steerlens {times['import steerlens']:.2f} s (<= 3), "
            f"steerlens info {times['steerlens info FILE']:.2f} s (<= 2)"
        )
        for label in ("import steerlens", "steerlens info FILE"):
            print(f"slowest top-level imports of {label}: " + "; ".join(top_imports(commands[label], args.source)))


if __name__ == "__main__":
    main()
