"""GGUF model files: a whole file loads as its model and is cached; a damaged one is refused in one line.

Every file is written by the test with the ``gguf`` package (a tiny float32 Llama as llama.cpp's
converter lays it out, see ``tests/tiny_gguf.py``) and then damaged as a failed download, a
wrong path or a careless hand would: each must raise one :class:`GGUFFileError` naming the
file and the problem, through the Python API and through the command line (one line, exit 2).
A writer killed while it caches the de-quantized checkpoint leaves a staging folder behind:
the next load removes it, and never a folder a live process is writing.
"""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_vector, subprocess_env
from tiny_gguf import tiny_llama, write_llama_gguf

from steerlens import load_hf_model, load_model
from steerlens.adapter import gguf as gguf_cache
from steerlens.cli.main import main
from steerlens.errors import GGUFFileError, ModelLoadError

gguf = pytest.importorskip("gguf")

IDS = torch.tensor([[1, 5, 9, 12, 4, 20, 7]])


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache folder per test (the user's own is never touched)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(gguf_cache.CACHE_ENV, str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return folder


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("gguf_model")
    model = tiny_llama()
    return write_llama_gguf(model, folder / "tiny-llama.gguf"), model


def test_a_gguf_model_loads_as_the_model_it_was_written_from(model_file):
    path, original = model_file
    loaded, tokenizer = load_hf_model(path)
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, original(IDS).logits, atol=1e-5, rtol=0)
    assert tokenizer.convert_ids_to_tokens([31, 32]) == ["ab", "Ġa"]
    (cached,) = (Path(os.environ[gguf_cache.CACHE_ENV]) / "gguf").iterdir()
    assert (cached / "config.json").is_file()


# -- damaged files ---------------------------------------------------------------------------


def _header(data: bytes, **fields: int) -> bytes:
    """``data`` with its GGUF header's version / tensor count / metadata count replaced."""
    magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", data)
    values = {"version": version, "n_tensors": n_tensors, "n_kv": n_kv, **fields}
    return struct.pack("<4sIQQ", magic, values["version"], values["n_tensors"], values["n_kv"]) + data[24:]


def _control_vector(path: Path) -> None:
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", "llama")
    writer.add_tensor("direction.1", np.ones(32, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _first_key_length(data: bytes, length: int) -> bytes:
    """The first metadata key's length (the uint64 after the 24-byte header) set to ``length``."""
    return data[:24] + struct.pack("<Q", length) + data[32:]


# name -> (make the file from a whole model file's bytes, a phrase the message must hold)
DAMAGED = {
    "empty": (lambda data, path: path.write_bytes(b""), "is empty"),
    "wrong magic": (lambda data, path: path.write_bytes(b"GGML" + data[4:]), "not a GGUF file"),
    "a safetensors file": (
        lambda data, path: path.write_bytes(struct.pack("<Q", 2) + b"{}"),
        "safetensors",
    ),
    "shorter than a header": (lambda data, path: path.write_bytes(data[:10]), "truncated"),
    "truncated in its tensor data": (lambda data, path: path.write_bytes(data[: len(data) // 2]), "truncated"),
    "truncated in its metadata": (lambda data, path: path.write_bytes(data[:200]), "damaged or truncated"),
    "absurd tensor count": (lambda data, path: path.write_bytes(_header(data, n_tensors=2**40)), "claims"),
    "absurd metadata count": (lambda data, path: path.write_bytes(_header(data, n_kv=2**60)), "claims"),
    "absurd string length": (lambda data, path: path.write_bytes(_first_key_length(data, 2**62)), "runs past"),
    "unknown version": (lambda data, path: path.write_bytes(_header(data, version=9)), "version 9"),
    "no tensors": (lambda data, path: path.write_bytes(_header(data, n_tensors=0)), "no tensors"),
    "a control vector": (lambda data, path: _control_vector(path), "control vector, not a model"),
}


@pytest.fixture(params=sorted(DAMAGED))
def damaged(request, model_file, tmp_path) -> tuple[Path, str]:
    make, phrase = DAMAGED[request.param]
    path = tmp_path / "bad.gguf"
    make(model_file[0].read_bytes(), path)
    return path, phrase


@pytest.mark.parametrize("loader", [load_hf_model, load_model], ids=["load_hf_model", "load_model"])
def test_a_damaged_gguf_file_is_one_clear_error(damaged, loader):
    path, phrase = damaged
    with pytest.raises(GGUFFileError) as caught:
        loader(path)
    message = str(caught.value)
    assert str(path) in message and phrase in message and "\n" not in message
    assert isinstance(caught.value, ModelLoadError) and isinstance(caught.value, ValueError)
    assert not (Path(os.environ[gguf_cache.CACHE_ENV]) / "gguf").exists() or not any(
        (Path(os.environ[gguf_cache.CACHE_ENV]) / "gguf").iterdir()
    )  # nothing cached, no staging folder left


def test_a_damaged_gguf_file_is_one_line_on_the_command_line(damaged, tmp_path, capsys):
    path, phrase = damaged
    vector = tmp_path / "v.safetensors"
    random_vector(32, (1,), metadata={"model_name": "x"}).save(vector)
    code = main(["generate", "--model", str(path), "--vector", str(vector), "--prompt", "a b", "--max-new-tokens", "2"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("steerlens: error: ") and phrase in err and str(path) in err


def test_a_file_transformers_cannot_map_is_refused_naming_it(tmp_path):
    """A whole GGUF file of an architecture transformers does not read: its own error, wrapped in one line."""
    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), "no-such-arch")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(GGUFFileError, match=re.escape(str(path)) + ".*transformers cannot read"):
        load_hf_model(path)


# -- staging folders left by killed writers --------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import steerlens.adapter.gguf as g

    original = g._dequantize

    def dequantize_then_hang(path, dtype):
        result = original(path, dtype)
        for staging in (g.cache_root() / "gguf").glob(".*"):  # half a checkpoint written, as when killed mid-save
            (staging / "model.safetensors").write_bytes(b"x" * 4096)
        print("staging", flush=True)
        time.sleep(120)
        return result

    g._dequantize = dequantize_then_hang
    g.gguf_checkpoint(sys.argv[1])
    """
)


@pytest.mark.slow
def test_a_killed_writers_staging_folder_is_removed_by_the_next_load(model_file, cache):
    path, original = model_file
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=subprocess_env()
    )
    try:
        assert writer.stdout is not None
        assert "staging" in iter(lambda: writer.stdout.readline().strip() or "EOF", "EOF")  # type: ignore[union-attr]
    finally:
        writer.send_signal(signal.SIGKILL)  # no finally block of the writer runs
        writer.wait()
    (leaked,) = (cache / "gguf").iterdir()
    assert leaked.name.startswith(".") and (leaked / "model.safetensors").is_file()
    # A live writer's folder (this process's) is never touched, nor anything that is not a staging folder.
    live = gguf_cache.cache_root() / "gguf" / _live_name(leaked.name)
    live.mkdir()
    loaded, _ = load_hf_model(path)
    assert not leaked.exists() and live.is_dir()
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS).logits, original(IDS).logits, atol=1e-5, rtol=0)


def _live_name(leaked: str) -> str:
    """The leaked folder's name with this process's pid in place of the killed writer's."""
    return re.sub(r"\.([0-9]+)\.([^.]+)$", f".{os.getpid()}.live", leaked)


def test_stale_staging_rules(tmp_path):
    """Same host: by process; another host (a shared network cache): by age (a day); unnamed (older releases): an hour."""
    host = gguf_cache._host()  # this machine's name and pid namespace
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = {
        "dead": f".m-0123456789abcdef-float32.staging.{host}.{dead.pid}.a1",
        "live": f".m-0123456789abcdef-float32.staging.{host}.{os.getpid()}.a2",
        "foreign fresh": ".m-0123456789abcdef-float32.staging.elsewhere.12.a3",
        "foreign old": ".m-0123456789abcdef-float32.staging.elsewhere.13.a4",
        "legacy fresh": ".m-0123456789abcdef-float32-abcd_123",
        "legacy old": ".m-0123456789abcdef-float32-wxyz_456",
        "hidden other": ".git",
        "cache": "m-0123456789abcdef-float32",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
    old = time.time() - 2 * 24 * 3600
    for key in ("foreign old", "legacy old", "hidden other"):
        os.utime(tmp_path / names[key], (old, old))
    removed = gguf_cache.clean_stale_staging(tmp_path)
    assert sorted(p.name for p in removed) == sorted(names[k] for k in ("dead", "foreign old", "legacy old"))
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {names[k] for k in ("live", "foreign fresh", "legacy fresh", "hidden other", "cache")}
