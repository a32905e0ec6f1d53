"""llama.cpp control vectors: GGUF files a steerlens vector exports to and imports from.

llama.cpp reads *control vectors* (``--control-vector``, ``--control-vector-scaled``):
GGUF files with ``general.architecture = "controlvector"`` and one float32 tensor
``direction.N`` per layer, added to the output of layer ``N`` (0-based), that is our
``resid_post`` of layer ``N``. llama.cpp never steers the output of layer 0.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from steerlens.errors import InvalidArgumentError, NonFiniteError, VectorFileError
from steerlens.formats.safe_io import atomic_output
from steerlens.layers import resolve_layers
from steerlens.vector import SteeringVector

GGUF_ARCH = "controlvector"


def _gguf() -> Any:
    try:
        import gguf
    except ImportError as error:
        raise ImportError("GGUF export/import needs the gguf package: pip install 'steerlens[gguf]'.") from error
    return gguf


def export_gguf(
    vec: SteeringVector,
    path: str | os.PathLike[str],
    model_hint: str | None = None,
    *,
    n_layers: int | None = None,
) -> None:
    """Write ``vec`` as a llama.cpp control vector (``llama-cli --control-vector path``).

    ``model_hint`` (default: the architecture the vector was trained on, e.g. ``"llama"``,
    else its ``model_name``) is what llama.cpp checks against the model's architecture. Only ``resid_post`` vectors of layers >= 1 can be expressed: ``direction.N``
    is added to the output of layer ``N``, as our layer ``N``. Negative layer keys (from
    the end) are resolved with ``n_layers``, the model's layer count (default: the
    ``n_layers`` the vector was trained with, from its metadata).

    Example:
        >>> export_gguf(vec.select_layers([10, 12]), "happy.gguf", model_hint="llama")
        >>> export_gguf(SteeringVector({-2: direction}, "resid_post"), "x.gguf", n_layers=24)  # direction.22
    """
    gguf = _gguf()
    import numpy as np

    if vec.layer_type != "resid_post":
        raise InvalidArgumentError(
            f"llama.cpp control vectors act on layer outputs (resid_post), not {vec.layer_type!r}; "
            "train the vector at layer_type='resid_post'."
        )
    layers = _gguf_layers(vec, n_layers)
    if 0 in layers:
        raise InvalidArgumentError(
            "llama.cpp never steers the output of layer 0; drop it with vec.select_layers([...])."
        )
    # llama.cpp compares the hint with the model's architecture ("llama"), not with a file or folder name.
    hint = model_hint or str(vec.metadata.get("architecture") or vec.metadata.get("model_name") or "unknown")
    with atomic_output(path) as tmp:  # a unique temporary file, then os.replace: never a torn file
        writer = gguf.GGUFWriter(os.fspath(tmp), GGUF_ARCH)
        writer.add_string(f"{GGUF_ARCH}.model_hint", hint)
        writer.add_int32(f"{GGUF_ARCH}.layer_count", len(layers))
        for layer, key in sorted(layers.items()):
            data = vec.layer_activations[key].detach().to("cpu", torch.float32).numpy()
            writer.add_tensor(f"direction.{layer}", np.ascontiguousarray(data))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()


def _gguf_layers(vec: SteeringVector, n_layers: int | None) -> dict[int, int]:
    """File layer (>= 0) -> the vector's key; negative keys resolved, since llama.cpp cannot read ``direction.-1``."""
    keys = list(vec.layer_activations)
    if all(key >= 0 for key in keys):
        if n_layers is not None:
            resolve_layers(keys, _layer_count(n_layers))  # out of range for the named model: an error here
        return {key: key for key in keys}
    count = n_layers if n_layers is not None else vec.metadata.get("n_layers")
    if count is None:
        raise InvalidArgumentError(
            f"the vector has negative layer keys {sorted(k for k in keys if k < 0)} (counted from the end of the "
            "model), which a llama.cpp control vector cannot hold; pass n_layers= (the model's layer count, e.g. "
            "export_gguf(vec, path, n_layers=model.cfg.n_layers)) to number them from the start."
        )
    resolved = resolve_layers(keys, _layer_count(count))
    return dict(zip(resolved, keys))


def _layer_count(value: Any) -> int:
    """``value`` as a positive layer count (from the caller or from a vector's metadata)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"n_layers must be a positive int (the model's layer count), got {value!r}.")
    return value


def _field_value(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def import_gguf(path: str | os.PathLike[str]) -> SteeringVector:
    """Read a llama.cpp control vector as a ``resid_post`` steering vector (no code is executed).

    Example:
        >>> vec = import_gguf("happy.gguf")
        >>> vec.layers
        [10, 12]
    """
    gguf = _gguf()
    name = os.fspath(path)
    try:
        reader = gguf.GGUFReader(name)
    except Exception as error:  # the gguf package raises many kinds on a damaged file
        raise VectorFileError(f"{name} is not a readable GGUF file ({type(error).__name__}: {error}).") from error
    arch = _field_value(reader, "general.architecture")
    if arch != GGUF_ARCH:
        raise VectorFileError(f"{name} is a GGUF file for {arch!r}, not a control vector ({GGUF_ARCH!r}).")
    vectors: dict[int, torch.Tensor] = {}
    for tensor in reader.tensors:
        prefix, _, index = tensor.name.partition(".")
        if prefix != "direction" or not index.isdigit() or int(index) < 1:
            raise VectorFileError(
                f"{name}: unexpected tensor {tensor.name!r}; a control vector holds direction.N, N >= 1."
            )
        values = torch.from_numpy(tensor.data.astype("float32").reshape(-1).copy())
        if not bool(torch.isfinite(values).all()):
            raise NonFiniteError(f"{name}: {tensor.name} has NaN or inf values; the file is damaged.")
        vectors[int(index)] = values
    if not vectors:
        raise VectorFileError(f"{name} holds no direction tensors.")
    if len({v.shape[0] for v in vectors.values()}) != 1:
        raise VectorFileError(f"{name}: the direction tensors have different lengths.")
    hint = _field_value(reader, f"{GGUF_ARCH}.model_hint")
    metadata = {"model_name": str(hint)} if hint else {}
    metadata["source"] = "gguf"
    return SteeringVector(vectors, "resid_post", metadata)
