"""Hostile files and concurrent writers: every loader refuses all but regular files without hanging or
over-reading, and every writer replaces its file atomically from a unique temporary name."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import subprocess_env

from steerlens import SteeringVector
from steerlens.errors import PairsFileError, VectorFileError
from steerlens.formats.pairs import load_pairs_jsonl, save_pairs_jsonl

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and /dev/zero are POSIX")

# Runs every loader on each path and prints one JSON line per (path, loader) as soon as it returns, so a
# hang shows which call hung. Run in a child with a memory cap and a timeout: today's /dev/zero read
# grows until memory runs out and a FIFO blocks forever; neither may take the test run down with it.
HOSTILE_SCRIPT = r"""
import contextlib, io, json, resource, sys
resource.setrlimit(resource.RLIMIT_DATA, (3 << 30, 3 << 30))
from steerlens import SteeringVector
from steerlens.cli import main
from steerlens.formats.pairs import load_pairs_jsonl, load_prompts_txt
from steerlens.formats.vector_file import summarize_vector_file

LOADERS = {"SteeringVector.load": SteeringVector.load, "summarize_vector_file": summarize_vector_file,
           "load_pairs_jsonl": load_pairs_jsonl, "load_prompts_txt": load_prompts_txt}
for path in sys.argv[1:]:
    for name, load in LOADERS.items():
        try:
            load(path)
            outcome = ["loaded", ""]
        except BaseException as error:
            outcome = [type(error).__name__, str(error)[:300]]
        print(json.dumps([path, name, *outcome]), flush=True)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["info", path])
    print(json.dumps([path, "steerlens info", str(code), err.getvalue()]), flush=True)
"""

EXPECTED_ERRORS = {
    "SteeringVector.load": "VectorFileError",
    "summarize_vector_file": "VectorFileError",
    "load_pairs_jsonl": "PairsFileError",
    "load_prompts_txt": "PromptsFileError",
}


@pytest.mark.slow
def test_devices_fifos_and_folders_are_refused_quickly(tmp_path):
    """A symlink to /dev/zero (size 0, endless), a FIFO (blocks on open), a symlink to it, and a folder: each
    loader and `steerlens info` refuse each one with its own error class naming what it is, in seconds."""
    zero = tmp_path / "zero.safetensors"
    zero.symlink_to("/dev/zero")
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    fifo_link = tmp_path / "pipe-link.safetensors"
    fifo_link.symlink_to(fifo)
    folder = tmp_path / "folder.safetensors"
    folder.mkdir()
    kinds = {zero: "a character device", fifo: "a FIFO", fifo_link: "a FIFO", folder: "a folder"}
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", HOSTILE_SCRIPT, *map(str, kinds)],
            capture_output=True,
            text=True,
            env=subprocess_env(OMP_NUM_THREADS="1"),
            timeout=180,
        )
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"a loader hung; finished calls: {error.stdout!r}")
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == len(kinds) * 5
    for path, loader, outcome, message in rows:
        kind = kinds[Path(path)]
        if loader == "steerlens info":
            assert outcome == "2" and len(message.strip().splitlines()) == 1, (path, message)
            assert message.startswith("steerlens: error: ") and f"{kind}" in message and "not a regular file" in message
        else:
            assert outcome == EXPECTED_ERRORS[loader], (path, loader, outcome, message)
            assert kind in message and "not a regular file" in message and path in message
    print(f"\n{len(rows)} refusals in {seconds:.1f}s (a child process that imports torch; busy machine)")


def test_a_fifo_swapped_in_after_the_path_check_is_caught_on_the_descriptor(tmp_path, monkeypatch):
    """The path check can race with a swap; the descriptor is checked too (fstat), and it was opened
    non-blocking, so even a FIFO that passed the path check neither blocks nor is read."""
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    regular = tmp_path / "regular"
    regular.write_bytes(b"x")
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda path, *a, **k: real_stat(regular if Path(path) == fifo else path, *a, **k))
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            SteeringVector.load(fifo)
        except BaseException as error:  # recorded for the main thread
            outcome.append(error)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive(), "opening the FIFO blocked"
    assert len(outcome) == 1 and isinstance(outcome[0], VectorFileError)
    assert "a FIFO (named pipe), not a regular file" in str(outcome[0])


def test_a_symlink_to_a_regular_file_still_loads(tmp_path):
    vec = SteeringVector({1: torch.randn(8)}, metadata={"k": 1})
    vec.save(tmp_path / "real.safetensors")
    (tmp_path / "link.safetensors").symlink_to(tmp_path / "real.safetensors")
    save_pairs_jsonl([("good", "bad")], tmp_path / "real.jsonl")
    (tmp_path / "link.jsonl").symlink_to("real.jsonl")  # relative, resolved from the link's folder
    loaded = SteeringVector.load(tmp_path / "link.safetensors")
    assert torch.equal(loaded.layer_activations[1], vec.layer_activations[1]) and loaded.metadata == {"k": 1}
    assert load_pairs_jsonl(tmp_path / "link.jsonl") == [("good", "bad")]


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_a_file_larger_than_its_reported_size_is_not_read_past_the_limit():
    """/proc files report size 0 but hold more: the limit applies to what is read, not to what stat says."""
    assert os.stat("/proc/self/status").st_size == 0 and len(Path("/proc/self/status").read_bytes()) > 64
    with pytest.raises(VectorFileError, match="more than 64 bytes, over the limit of 64"):
        SteeringVector.load("/proc/self/status", max_bytes=64)
    with pytest.raises(PairsFileError, match="over the limit of 64"):
        load_pairs_jsonl("/proc/self/status", max_bytes=64)
    reads: list[int] = []
    real_read = os.read

    def counting_read(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        reads.append(len(data))
        return data

    from steerlens.formats import safe_io

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "read", counting_read)
        with pytest.raises(VectorFileError):
            safe_io.read_regular_file("/proc/self/status", 64, VectorFileError)
    assert sum(reads) == 65  # limit + 1, never more


# -- atomic writes ---------------------------------------------------------------------------

WRITER_SCRIPT = r"""
import os, sys, time
from pathlib import Path
from steerlens.formats.vector_file import save_vector_file  # what SteeringVector.save calls with its bytes

source, target, go, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
data = Path(source).read_bytes()
Path(source + ".ready").touch()
while not os.path.exists(go):
    time.sleep(0.001)
for _ in range(count):
    save_vector_file(target, data)
"""


def test_concurrent_writers_never_tear_the_file_and_never_fail(tmp_path):
    """Four processes save four different vectors to one path 150 times each while this process loads it in a
    loop: every save succeeds, every load returns exactly one writer's vector, and no temporary file is left."""
    writers, saves = 4, 150
    vectors = {}
    for k in range(writers):
        generator = torch.Generator().manual_seed(k)
        width = 2048 + 512 * k  # different sizes: a torn file cannot pass for a whole one
        vectors[k] = SteeringVector(
            {k: torch.randn(width, generator=generator), -1: torch.randn(width, generator=generator)},
            "resid_post",
            {"writer": k},
        )
        vectors[k].save(tmp_path / f"source{k}.safetensors")
    target, go = tmp_path / "shared" / "vector.safetensors", tmp_path / "go"
    target.parent.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER_SCRIPT, str(tmp_path / f"source{k}.safetensors"), str(target), str(go)]
            + [str(saves)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        for k in range(writers)
    ]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"source{k}.safetensors.ready").exists() for k in range(writers)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), "a writer did not start"
            time.sleep(0.01)
        go.touch()
        reads, seen = 0, set()
        while any(p.poll() is None for p in procs) or reads == 0:
            if not target.exists():
                continue
            loaded = SteeringVector.load(target)  # a torn or corrupt file raises VectorFileError here
            k = loaded.metadata["writer"]
            assert loaded.layers == vectors[k].layers
            for layer in loaded.layers:
                assert torch.equal(loaded.layer_activations[layer], vectors[k].layer_activations[layer])
            reads += 1
            seen.add(k)
    finally:
        results = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, results):
        assert proc.returncode == 0, err[-1500:]
    assert os.listdir(target.parent) == ["vector.safetensors"]
    print(f"\n{reads} whole reads during {writers * saves} concurrent saves; saw writers {sorted(seen)}")
    assert reads >= 20 and len(seen) >= 2


def _spy_on_replace(monkeypatch) -> list[tuple[Path, Path]]:
    calls: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        calls.append((Path(src), Path(dst)))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def assert_replaced_atomically(calls: list[tuple[Path, Path]], target: Path) -> None:
    """``target`` was put in place by one os.replace from a unique temporary file in its folder, now gone."""
    sources = [src for src, dst in calls if dst == target]
    assert len(sources) == 1, calls
    assert sources[0].parent == target.parent and sources[0].name != target.name + ".tmp"
    assert not sources[0].exists() and target.is_file()
    assert sorted(p.name for p in target.parent.iterdir() if p.name.endswith(".tmp")) == []


def _tiny_llama_export(path: Path) -> None:
    from tiny_hf import make_hf_model

    from steerlens.interop import export_lm_eval

    model = make_hf_model("llama")
    export_lm_eval(SteeringVector({1: torch.randn(model.config.hidden_size)}), path, model=model)


def _heatmap(path: Path) -> None:
    from steerlens.cli.demo import write_heatmap

    frame = pd.DataFrame({"layer": [0, 0, 1, 1], "multiplier": [-1.0, 1.0, -1.0, 1.0], "v": [0.1, 0.2, 0.3, 0.4]})
    assert write_heatmap(path.parent, frame, "v") == path


WRITERS = {
    "vector.safetensors": lambda path: SteeringVector({1: torch.ones(8)}).save(path),
    "pairs.jsonl": lambda path: save_pairs_jsonl([("good", "bad")], path),
    "control.gguf": lambda path: __import__("steerlens.interop", fromlist=["x"]).export_gguf(
        SteeringVector({1: torch.ones(8)}, "resid_post"), path, model_hint="llama"
    ),
    "steer.pt": _tiny_llama_export,
    "sweep_heatmap.png": _heatmap,
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_writer_replaces_its_file_from_a_unique_temporary_name(name, tmp_path, monkeypatch):
    target = tmp_path / name
    target.write_bytes(b"old")
    calls = _spy_on_replace(monkeypatch)
    WRITERS[name](target)
    assert_replaced_atomically(calls, target)
    assert target.read_bytes() != b"old"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    from steerlens.formats import safe_io

    target = tmp_path / "v.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="mid-write"):
        with safe_io.atomic_output(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("mid-write")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["v.bin"]


def test_new_files_get_the_usual_permissions_and_devices_are_never_replaced(tmp_path):
    """mkstemp makes 0600 files; a saved file gets what open() would give. A FIFO (or /dev/null, for root)
    at the destination is refused, not replaced by a regular file."""
    from steerlens.formats import safe_io

    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    safe_io.write_atomic(tmp_path / "atomic", b"data")
    assert stat.S_IMODE(os.stat(tmp_path / "atomic").st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="a FIFO"):
        safe_io.write_atomic(fifo, b"data")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    with pytest.raises(VectorFileError, match="a FIFO"):
        SteeringVector({0: torch.ones(2)}).save(fifo)
    assert sorted(os.listdir(tmp_path)) == ["atomic", "pipe", "plain"]
