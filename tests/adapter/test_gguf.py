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


# -- the cache: both routes, several architectures, a large vocabulary, damage -----------------

ARCHITECTURES = ["llama", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3"]
TEXTS = ["ab a", "a b\nab", "zz ab", ""]


@pytest.fixture(scope="module")
def arch_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tiny_gguf import tiny_model, write_gguf

    folder = tmp_path_factory.mktemp("gguf_archs")
    return {name: write_gguf(tiny_model(name), folder / f"tiny-{name}.gguf") for name in ARCHITECTURES}


def _direct(path: Path) -> tuple[torch.nn.Module, object]:
    """transformers' own read of the GGUF file, no steerlens cache: the reference."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


class _Counter:
    """Wraps a function and counts its calls."""

    def __init__(self, function):
        self.function, self.calls = function, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.function(*args, **kwargs)


@pytest.fixture
def dequantize_calls(monkeypatch: pytest.MonkeyPatch) -> _Counter:
    counter = _Counter(gguf_cache._dequantize)
    monkeypatch.setattr(gguf_cache, "_dequantize", counter)
    return counter


def _logits(model, ids=IDS) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    return getattr(out, "logits", out)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_loads_from_the_cache_as_transformers_reads_the_file(
    arch, arch_files, dequantize_calls, monkeypatch
):
    """First and second loads on both routes equal transformers' own read; the second never touches the GGUF file."""
    from steerlens.adapter import load as load_module

    path = arch_files[arch]
    direct, direct_tokenizer = _direct(path)
    first_hf, first_tokenizer = load_hf_model(path)
    first_tl = load_model(path)
    assert dequantize_calls.calls == 1
    # Second loads: no de-quantization, no GGUF reading, and the HookedTransformer not converted again.
    readers, conversions = _Counter(gguf.GGUFReader), _Counter(load_module._convert)
    monkeypatch.setattr(gguf, "GGUFReader", readers)
    monkeypatch.setattr(load_module, "_convert", conversions)
    second_hf, second_tokenizer = load_hf_model(path)
    second_tl = load_model(path)
    assert (dequantize_calls.calls, readers.calls, conversions.calls) == (1, 0, 0)
    reference = _logits(direct)
    for model in (first_hf, second_hf):
        assert torch.equal(_logits(model), reference)
    assert torch.equal(_logits(second_tl), _logits(first_tl))
    # Today's conversion of the same weights (no kept state dict), bit for bit; and close to the HF model.
    assert torch.equal(_logits(second_tl), _logits(load_module.convert_hf_model(direct, direct_tokenizer)))
    torch.testing.assert_close(_logits(second_tl), reference, atol=1e-4, rtol=0)
    for text in TEXTS:
        expected = direct_tokenizer(text)["input_ids"]
        assert first_tokenizer(text)["input_ids"] == expected == second_tokenizer(text)["input_ids"]
        assert second_tl.tokenizer(text)["input_ids"] == expected


def test_a_large_vocabulary_is_read_once_on_the_first_load_and_never_after(tmp_path, dequantize_calls, monkeypatch):
    """52k tokens and merges: one quick metadata read for the first load, none for the second; same encodings."""
    from tiny_gguf import big_vocabulary, tiny_model, write_gguf
    from transformers import AutoTokenizer

    from steerlens.adapter import _gguf_fast

    tokens, merges = big_vocabulary(52_000)
    original = tiny_model("llama", vocab=len(tokens))
    path = write_gguf(original, tmp_path / "big.gguf", tokens, merges)
    direct_tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=path.name)  # transformers, no cache
    reads = _Counter(_gguf_fast.fast_reader)
    monkeypatch.setattr(_gguf_fast, "fast_reader", reads)
    first, first_tokenizer = load_hf_model(path)
    assert reads.calls == 1  # transformers asks for a reader three times (tokenizer, config, weights)
    readers = _Counter(gguf.GGUFReader)
    monkeypatch.setattr(gguf, "GGUFReader", readers)
    second, second_tokenizer = load_hf_model(path)
    assert (dequantize_calls.calls, readers.calls, reads.calls) == (1, 0, 1)
    assert torch.equal(_logits(second), _logits(first))
    torch.testing.assert_close(_logits(first), _logits(original), atol=1e-5, rtol=0)
    texts = ["abcd efgh", "zyxw vu\nqp", "hello world abab"]
    for text in texts:
        expected = direct_tokenizer(text)["input_ids"]
        assert first_tokenizer(text)["input_ids"] == expected == second_tokenizer(text)["input_ids"]
    assert len(second_tokenizer) == len(direct_tokenizer) >= 52_000


def _cached_folder(cache: Path) -> Path:
    (folder,) = [entry for entry in (cache / "gguf").iterdir() if not entry.name.startswith(".")]
    return folder


@pytest.mark.parametrize(
    "damage",
    ["weights cut short", "weights garbled", "tokenizer garbled", "config deleted", "manifest garbled"],
)
def test_a_damaged_cache_folder_is_rebuilt(damage, model_file, cache, dequantize_calls):
    path, original = model_file
    expected = _logits(load_hf_model(path)[0])
    folder = _cached_folder(cache)
    weights, tokenizer_file = folder / "model.safetensors", folder / "tokenizer.json"
    if damage == "weights cut short":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "weights garbled":  # same size: only reading it finds out
        weights.write_bytes(b"\xff" * weights.stat().st_size)
    elif damage == "tokenizer garbled":
        tokenizer_file.write_bytes(b"{" * tokenizer_file.stat().st_size)
    elif damage == "config deleted":
        (folder / "config.json").unlink()
    else:
        (folder / gguf_cache.MANIFEST).write_text("{not json")
    assert dequantize_calls.calls == 1
    loaded, tokenizer = load_hf_model(path)
    assert dequantize_calls.calls == 2  # rebuilt, once
    assert torch.equal(_logits(loaded), expected)
    assert tokenizer.convert_ids_to_tokens([31, 32]) == ["ab", "Ġa"]
    assert gguf_cache.cache_is_complete(_cached_folder(cache))
    hooked = load_model(path)  # the HookedTransformer route reads the rebuilt folder too
    torch.testing.assert_close(_logits(hooked), _logits(original), atol=1e-5, rtol=0)


def test_a_damaged_cache_is_rebuilt_on_the_hooked_route_too(model_file, cache, dequantize_calls):
    path, original = model_file
    first = _logits(load_model(path))
    weights = _cached_folder(cache) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    assert torch.equal(_logits(load_model(path)), first)
    assert dequantize_calls.calls == 2


def test_a_garbled_kept_state_dict_is_converted_again_without_de_quantizing(model_file, cache, dequantize_calls):
    from steerlens.adapter.weights import HOOKED_STATE

    path, _ = model_file
    first = _logits(load_model(path))
    kept = _cached_folder(cache) / HOOKED_STATE
    assert kept.is_file()
    kept.write_bytes(b"\x00" * kept.stat().st_size)
    assert torch.equal(_logits(load_model(path)), first)
    assert dequantize_calls.calls == 1 and kept.stat().st_size > 0
    assert torch.equal(_logits(load_model(path)), first)  # the rewritten one reads


def test_a_folder_from_before_manifests_is_adopted_when_whole(model_file, cache, dequantize_calls):
    path, _ = model_file
    expected = _logits(load_hf_model(path)[0])
    folder = _cached_folder(cache)
    (folder / gguf_cache.MANIFEST).unlink()
    assert torch.equal(_logits(load_hf_model(path)[0]), expected)
    assert dequantize_calls.calls == 1 and (folder / gguf_cache.MANIFEST).is_file()


def test_a_rewritten_file_is_hashed_again(tmp_path, dequantize_calls):
    """The remembered hash is keyed by size and modification time: a new file under the old name gets a new folder."""
    path = write_llama_gguf(tiny_llama(seed=1), tmp_path / "m.gguf")
    load_hf_model(path)
    other = tiny_llama(seed=2)
    write_llama_gguf(other, path)
    loaded, _ = load_hf_model(path)
    assert dequantize_calls.calls == 2
    torch.testing.assert_close(_logits(loaded), _logits(other), atol=1e-5, rtol=0)
