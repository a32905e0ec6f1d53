"""Saving and loading steering vectors: safetensors tensors plus versioned JSON metadata.

Loading never executes code: the header is parsed as JSON and checked against a
schema before safetensors reads any tensor, and every tensor is checked for
shape and finiteness. Nothing is unpickled.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from steerlens.errors import InvalidArgumentError, VectorFileError
from steerlens.layers import LAYER_TYPES

FORMAT_NAME = "steerlens.steering_vector"
SCHEMA_VERSION = 1
DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB: far above any real vector, far below a surprise
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}

if TYPE_CHECKING:  # torch is imported where tensors are made: `steerlens info` reads files without it
    from torch import Tensor


def tensor_key(layer: int) -> str:
    return f"layer.{layer}"


def encode_vector_file(layer_activations: dict[int, Tensor], layer_type: str, metadata: dict[str, Any]) -> bytes:
    """Bytes of a steerlens vector file."""
    d_model = next(iter(layer_activations.values())).shape[-1]
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
    path = Path(path)
    if not path.parent.is_dir():
        raise VectorFileError(
            f"cannot save {str(path)!r}: the folder {str(path.parent)!r} does not exist; create it first "
            "(Path(folder).mkdir(parents=True)) or choose another path."
        )
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written vector behind
    except OSError as error:
        tmp.unlink(missing_ok=True)
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


def _read_checked(path: str | os.PathLike, max_bytes: int) -> tuple[Path, bytes, dict[str, Any], dict[str, Any]]:
    """The file's bytes, its steerlens header and tensor entries, validated (no tensor read yet)."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise _fail(path, f"cannot read the file ({exc.strerror}); check the path.") from None
    if size > max_bytes:
        raise _fail(path, f"file is {size} bytes, over the limit of {max_bytes}; pass max_bytes=... if it is trusted.")
    try:
        data = path.read_bytes()
    except OSError as exc:  # e.g. a directory, or a permission error
        raise _fail(path, f"cannot read the file ({exc.strerror}); check the path.") from None
    header, entries = _read_header(path, data)
    _check_header(path, header, entries)
    return path, data, header, entries


def load_vector_file(
    path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[dict[int, Tensor], str, dict[str, Any]]:
    """Read and validate a vector file: ``(layer_activations, layer_type, metadata)``."""
    import torch
    from safetensors.torch import load as load_safetensors_bytes

    path, data, header, _ = _read_checked(path, max_bytes)
    try:
        tensors = load_safetensors_bytes(data)
    except Exception as exc:  # safetensors raises its own error types on corrupt data
        raise _fail(path, f"tensor data is corrupted ({exc}); re-save the vector.") from None
    vectors = {layer: tensors[tensor_key(layer)] for layer in header["layers"]}
    for layer, vec in vectors.items():
        if not torch.isfinite(vec).all():
            raise _fail(path, f"the vector for layer {layer} contains NaN or inf; the file is unusable.")
    return vectors, header["layer_type"], dict(header.get("metadata", {}))


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
    path, data, header, entries = _read_checked(path, max_bytes)
    start = 8 + struct.unpack("<Q", data[:8])[0]
    norms, dtypes = {}, set()
    for layer in header["layers"]:
        info = entries[tensor_key(layer)]
        begin, end = info.get("data_offsets", [0, -1])
        raw = data[start + begin : start + end]
        dtype = _NUMPY_DTYPES[info["dtype"]]
        if len(raw) != header["d_model"] * np.dtype(dtype).itemsize:
            raise _fail(path, f"tensor data of layer {layer} is corrupted (wrong size); re-save the vector.")
        values = np.frombuffer(raw, dtype=dtype)
        if info["dtype"] == "BF16":  # bfloat16 is the top half of a float32
            values = (values.astype(np.uint32) << 16).view(np.float32)
        values = values.astype(np.float64)
        if not np.isfinite(values).all():
            raise _fail(path, f"the vector for layer {layer} contains NaN or inf; the file is unusable.")
        norms[layer] = float(np.sqrt((values * values).sum()))
        dtypes.add(_TORCH_NAMES[info["dtype"]])
    return VectorFileSummary(
        header["layer_type"], header["d_model"], "/".join(sorted(dtypes)), norms, dict(header.get("metadata", {}))
    )
