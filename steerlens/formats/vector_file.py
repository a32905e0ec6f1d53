"""Saving and loading steering vectors: safetensors tensors plus versioned JSON metadata.

Loading never executes code: the header is parsed as JSON and checked against a
schema before safetensors reads any tensor, and every tensor is checked for
shape and finiteness. Nothing is unpickled. Only regular files are read, never more
than ``max_bytes``; saving is atomic (:mod:`steerlens.formats.safe_io`).
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from steerlens.errors import InvalidArgumentError, VectorFileError
from steerlens.formats.safe_io import DEFAULT_MAX_BYTES, output_path_problem, read_regular_file, write_atomic
from steerlens.layers import LAYER_TYPES

FORMAT_NAME = "steerlens.steering_vector"
SCHEMA_VERSION = 1
_ITEM_SIZES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8}
_FLOAT_DTYPES = set(_ITEM_SIZES)

if TYPE_CHECKING:  # torch is imported where tensors are made: `steerlens info` reads files without it
    from torch import Tensor


def tensor_key(layer: int) -> str:
    return f"layer.{layer}"


def encode_vector_file(layer_activations: dict[int, Tensor], layer_type: str, metadata: dict[str, Any]) -> bytes:
    """Bytes of a steerlens vector file."""
    d_model = next(iter(layer_activations.values())).shape[-1]
    if d_model == 0:  # a file of width 0 could never be loaded back
        raise InvalidArgumentError(
            "the vector is empty (0 values per layer), so it cannot be saved; a steering vector holds d_model values."
        )
    header = {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "layer_type": layer_type,
        "layers": sorted(layer_activations),
        "d_model": int(d_model),
        "metadata": metadata,
    }
    try:
        text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as error:
        where = _unstorable(metadata)
        raise InvalidArgumentError(
            f"the vector's metadata cannot be stored as JSON: {where or error}. Metadata holds strings, numbers, "
            "booleans, None, lists and dicts with string keys; convert the value (e.g. tensor.tolist(), str(x))."
        ) from None
    from safetensors.torch import save as save_safetensors_bytes

    tensors = {tensor_key(k): v.detach().cpu().contiguous() for k, v in layer_activations.items()}
    return save_safetensors_bytes(tensors, metadata={"steerlens": text})


def _unstorable(value: Any, where: str = "metadata") -> str | None:
    """The first place in ``value`` that JSON cannot hold, e.g. ``"metadata['probe'] is a Tensor"``."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where} has a key {key!r} that is not a string"
            found = _unstorable(item, f"{where}[{key!r}]")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        return next((f for i, item in enumerate(value) if (f := _unstorable(item, f"{where}[{i}]"))), None)
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where} is {value!r}, which JSON cannot hold"
    if value is None or isinstance(value, (str, bool, int, float)):
        return None
    return f"{where} is a {type(value).__name__}"


def save_vector_file(path: str | os.PathLike, data: bytes) -> None:
    """Write a vector file atomically (a unique temporary file in the same folder, then ``os.replace``):
    a crash keeps the old file, and processes saving to one path at once never tear it."""
    path = Path(path)
    problem = output_path_problem(path)
    if problem:
        raise VectorFileError(f"cannot save {str(path)!r}: {problem}")
    try:
        write_atomic(path, data)
    except OSError as error:
        raise VectorFileError(f"cannot save {str(path)!r}: {error.strerror or error}.") from None


def _fail(path: Any, problem: str) -> VectorFileError:
    return VectorFileError(f"{path}: {problem}")


def _read_header(path: Any, data: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    if len(data) < 8:
        raise _fail(path, "file is too short to be a safetensors file (truncated?); re-save the vector.")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise _fail(path, "safetensors header is longer than the file (truncated or not a vector file).")
    try:
        raw = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError covers JSONDecodeError and huge ints
        raise _fail(path, "safetensors header is not valid JSON (corrupted file).") from None
    if not isinstance(raw, dict):
        raise _fail(path, "safetensors header is not a JSON object (corrupted file).")
    meta = raw.get("__metadata__")
    if not isinstance(meta, dict) or not isinstance(meta.get("steerlens"), str):
        raise _fail(path, "no steerlens metadata: this is not a steerlens vector file (save one with vec.save).")
    try:
        header = json.loads(meta["steerlens"])
    except (ValueError, RecursionError):
        raise _fail(path, "steerlens metadata is not valid JSON (corrupted file).") from None
    if not isinstance(header, dict):
        raise _fail(path, "steerlens metadata is not a JSON object (corrupted file).")
    entries = {k: v for k, v in raw.items() if k != "__metadata__"}
    return header, entries


def _check_header(path: Any, header: dict[str, Any], entries: dict[str, Any]) -> None:
    if header.get("format") != FORMAT_NAME:
        raise _fail(path, f"format is {header.get('format')!r}, expected {FORMAT_NAME!r}.")
    version = header.get("schema_version")
    if version != SCHEMA_VERSION:
        raise _fail(
            path,
            f"schema_version {version!r} is not supported (this steerlens reads {SCHEMA_VERSION}); "
            "upgrade steerlens or re-save the vector.",
        )
    if header.get("layer_type") not in LAYER_TYPES:
        raise _fail(path, f"layer_type {header.get('layer_type')!r} is not one of {', '.join(LAYER_TYPES)}.")
    layers = header.get("layers")
    if (
        not isinstance(layers, list)
        or not layers
        or not all(isinstance(x, int) and not isinstance(x, bool) and abs(x) < 1 << 31 for x in layers)
        or len(set(layers)) != len(layers)
    ):
        # Negative layers count from the end of the model the vector is applied to.
        raise _fail(path, "'layers' must be a non-empty list of distinct ints.")
    d_model = header.get("d_model")
    if not isinstance(d_model, int) or isinstance(d_model, bool) or d_model <= 0:
        raise _fail(path, "'d_model' must be a positive int.")
    if not isinstance(header.get("metadata", {}), dict):
        raise _fail(path, "'metadata' must be a JSON object.")
    expected = {tensor_key(layer) for layer in layers}
    if set(entries) != expected:
        raise _fail(path, f"tensors {sorted(entries)} do not match the layers {layers} in the metadata.")
    for key, info in entries.items():
        dtype = info.get("dtype") if isinstance(info, dict) else None
        if not isinstance(dtype, str) or dtype not in _FLOAT_DTYPES or info.get("shape") != [d_model]:
            raise _fail(path, f"tensor {key!r} has shape/dtype {info!r}; expected a float vector of shape [{d_model}].")


@dataclass(frozen=True)
class _CheckedFile:
    """A vector file that passed every check: its steerlens header and each layer's (dtype, raw little-endian bytes)."""

    path: Path
    header: dict[str, Any]
    tensors: dict[int, tuple[str, bytes]]


def _read_checked(path: str | os.PathLike, max_bytes: int) -> _CheckedFile:
    """Read and check a vector file: the one check that both a load and ``steerlens info`` run, so what one
    refuses the other refuses too, with the same error.

    The tensors are parsed by safetensors' own parser (``safetensors.deserialize``, what
    ``safetensors.torch.load`` runs, no torch needed) after our schema and offset checks, and
    every value is checked for NaN and inf.
    """
    from safetensors import deserialize

    path = Path(path)
    data = read_regular_file(path, max_bytes, lambda problem: _fail(path, f"cannot read the file: {problem}"))
    header, entries = _read_header(path, data)
    _check_header(path, header, entries)
    _check_offsets(path, header, entries, len(data) - 8 - struct.unpack("<Q", data[:8])[0])
    try:
        parsed = dict(deserialize(data))
    except Exception as exc:  # safetensors raises its own error types on corrupt data
        raise _fail(path, f"tensor data is corrupted ({exc}); re-save the vector.") from None
    tensors = {}
    for layer in header["layers"]:
        key = tensor_key(layer)
        view = parsed.get(key)
        if view is None or view["dtype"] != entries[key]["dtype"] or list(view["shape"]) != [header["d_model"]]:
            raise _fail(path, f"tensor {key!r} reads back differently from its header entry (corrupted file).")
        if not np.isfinite(_as_float64(view["dtype"], view["data"])).all():
            raise _fail(path, f"the vector for layer {layer} contains NaN or inf; the file is unusable.")
        tensors[layer] = (view["dtype"], bytes(view["data"]))
    return _CheckedFile(path, header, tensors)


def _as_float64(dtype: str, raw: bytes) -> np.ndarray:
    """Little-endian safetensors bytes as float64 values (bfloat16 widened bit for bit)."""
    values = np.frombuffer(raw, dtype=_NUMPY_DTYPES[dtype])
    if dtype == "BF16":  # bfloat16 is the top half of a float32
        values = (values.astype(np.uint32) << 16).view(np.float32)
    with np.errstate(invalid="ignore"):  # NaN stays NaN (and is refused by the caller), without a warning
        return values.astype(np.float64)


def _check_offsets(path: Any, header: dict[str, Any], entries: dict[str, Any], body_size: int) -> None:
    """Each tensor's ``data_offsets`` as safetensors requires them: ``[begin, end]`` ints of the tensor's
    byte size, the tensors back to back from 0 to the end of the file (no gap, no overlap, no header bytes)."""
    spans = []
    for key, info in entries.items():
        offsets = info.get("data_offsets")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in offsets)
        ):
            raise _fail(path, f"tensor {key!r} has data_offsets {offsets!r}; expected [begin, end] (corrupted file).")
        size = header["d_model"] * _ITEM_SIZES[info["dtype"]]
        if offsets[0] < 0 or offsets[1] - offsets[0] != size:
            raise _fail(
                path,
                f"tensor {key!r} has data_offsets {offsets!r}; expected {size} bytes from a non-negative offset "
                "(corrupted file).",
            )
        spans.append((offsets[0], offsets[1], key))
    end = 0
    for begin, stop, key in sorted(spans):
        if begin != end:
            raise _fail(path, f"tensor {key!r} starts at byte {begin}, expected {end}: tensors overlap or leave a gap.")
        end = stop
    if end != body_size:
        raise _fail(path, f"the tensors end at byte {end} but the file holds {body_size} (truncated or corrupted).")


def load_vector_file(
    path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[dict[int, Tensor], str, dict[str, Any]]:
    """Read and validate a vector file: ``(layer_activations, layer_type, metadata)``."""
    import torch

    checked = _read_checked(path, max_bytes)
    vectors = {}
    for layer, (dtype, raw) in checked.tensors.items():
        vec = torch.frombuffer(bytearray(raw), dtype=getattr(torch, _TORCH_NAMES[dtype].removeprefix("torch.")))
        if sys.byteorder == "big":  # safetensors stores little-endian
            vec = vec.view(torch.uint8).view(-1, vec.element_size()).flip(1).reshape(-1).view(vec.dtype)
        vectors[layer] = vec
    return vectors, checked.header["layer_type"], dict(checked.header.get("metadata", {}))


@dataclass(frozen=True)
class VectorFileSummary:
    """What ``steerlens info`` prints about a vector file, read without torch."""

    layer_type: str
    d_model: int
    dtype: str
    """The stored dtype as torch names it (``"torch.float32"``)."""
    norms: dict[int, float]
    metadata: dict[str, Any]


_NUMPY_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": "<u2"}
_TORCH_NAMES = {"F16": "torch.float16", "F32": "torch.float32", "F64": "torch.float64", "BF16": "torch.bfloat16"}


def summarize_vector_file(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES) -> VectorFileSummary:
    """Layer type, width, dtype, per-layer norms and metadata of a vector file, with the checks of a load.

    Reads the tensors with numpy (bfloat16 widened bit for bit to float32), so a look at a
    file costs no torch import; the norms are ``SteeringVector.load(path).norms()`` computed in float64.

    Example:
        >>> summarize_vector_file("happy.safetensors").norms
        {2: 3.1416}
    """
    checked = _read_checked(path, max_bytes)
    header = checked.header
    norms = {layer: float(np.sqrt(np.square(_as_float64(*view)).sum())) for layer, view in checked.tensors.items()}
    dtypes = {_TORCH_NAMES[dtype] for dtype, _ in checked.tensors.values()}
    return VectorFileSummary(
        header["layer_type"], header["d_model"], "/".join(sorted(dtypes)), norms, dict(header.get("metadata", {}))
    )
