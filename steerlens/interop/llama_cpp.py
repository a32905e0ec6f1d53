"""llama.cpp control vectors: GGUF files a steerlens vector exports to and imports from.

llama.cpp reads *control vectors* (``--control-vector``, ``--control-vector-scaled``):
GGUF files with ``general.architecture = "controlvector"`` and one float32 tensor
``direction.N`` per layer, added to the output of layer ``N`` (0-based), that is our
``resid_post`` of layer ``N``. llama.cpp never steers the output of layer 0, and silently
skips a ``direction.N`` past the model's last layer.

The file's ``controlvector.model_hint`` is the architecture of the model the vector was
made for, as llama.cpp names it (``"llama"``, ``"gemma3"``; see
:func:`llama_cpp_architecture`). llama.cpp writes it but never reads it; steerlens keeps it
on import as the vector's ``llama_cpp_architecture`` (an architecture, not a model name).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import torch

from steerlens.errors import (
    InvalidArgumentError,
    LayerError,
    ModelMismatchError,
    ModelNameWarning,
    NonFiniteError,
    VectorFileError,
)
from steerlens.formats.safe_io import atomic_output
from steerlens.layers import resolve_layers
from steerlens.vector import FINGERPRINT_KEY, SteeringVector

GGUF_ARCH = "controlvector"
HINT_KEY = "llama_cpp_architecture"
"""The metadata key an imported vector keeps the file's architecture hint under."""

# Hugging Face ``model_type`` (and TransformerLens' lower-cased class stem) -> llama.cpp's architecture name,
# as llama.cpp's converter (convert_hf_to_gguf.py) maps them. Names not listed are the same on both sides.
LLAMA_CPP_ARCHITECTURES = {
    "mistral": "llama",
    "mixtral": "llama",
    "gemma3_text": "gemma3",
    "phi": "phi2",
    "gpt_neox": "gptneox",
    "gpt_bigcode": "starcoder",
    "gptbigcode": "starcoder",
    "qwen2_moe": "qwen2moe",
    "qwen3_moe": "qwen3moe",
    "olmo3": "olmo2",
    "cohere": "command-r",
    "gpt_oss": "gpt-oss",
}


def llama_cpp_architecture(architecture: str | None) -> str | None:
    """llama.cpp's name for a Hugging Face architecture (``model_type``), e.g. ``"gemma3_text"`` -> ``"gemma3"``.

    Example:
        >>> llama_cpp_architecture("gemma3_text"), llama_cpp_architecture("qwen2"), llama_cpp_architecture("mistral")
        ('gemma3', 'qwen2', 'llama')
    """
    if not architecture:
        return None
    name = str(architecture).lower()
    return LLAMA_CPP_ARCHITECTURES.get(name, name)


def _gguf() -> Any:
    try:
        import gguf
    except ImportError as error:
        raise ImportError("GGUF export/import needs the gguf package: pip install 'steerlens[gguf]'.") from error
    return gguf


def _model_facts(model: Any) -> tuple[int, int, str | None]:
    """``(n_layers, d_model, llama.cpp architecture)`` of a model steerlens can steer."""
    from steerlens.backends import backend_for

    backend = backend_for(model)
    return int(backend.n_layers), int(backend.d_model), llama_cpp_architecture(backend.architecture)


def export_gguf(
    vec: SteeringVector,
    path: str | os.PathLike[str],
    model_hint: str | None = None,
    *,
    n_layers: int | None = None,
    model: Any = None,
) -> None:
    """Write ``vec`` as a llama.cpp control vector (``llama-cli --control-vector path``).

    Only ``resid_post`` vectors of layers >= 1 can be expressed: ``direction.N`` is added to
    the output of layer ``N``, as our layer ``N``. The model's layer count comes from
    ``model`` (the model the file is meant for), ``n_layers``, or the vector's metadata (a
    trained vector knows it); when known, layers past the model's end are refused (llama.cpp
    would skip them without a word), and negative keys (from the end) are numbered from the
    start. ``model`` also checks the vector's width against the model's.

    ``model_hint`` is written as the file's ``controlvector.model_hint``: llama.cpp's name of
    the model's architecture (default: from ``model``, else from the vector's metadata, e.g.
    ``"gemma3"`` for a Gemma 3 model). llama.cpp does not read it; it documents the file and
    :func:`import_gguf` compares it with the model a vector is checked against.

    Example:
        >>> export_gguf(vec.select_layers([10, 12]), "happy.gguf")  # llama-cli ... --control-vector happy.gguf
        >>> export_gguf(SteeringVector({-2: direction}, "resid_post"), "x.gguf", model=model)  # direction.28 of 30
    """
    gguf = _gguf()
    import numpy as np

    if vec.layer_type != "resid_post":
        raise InvalidArgumentError(
            f"llama.cpp control vectors act on layer outputs (resid_post), not {vec.layer_type!r}; "
            "train the vector at layer_type='resid_post'."
        )
    arch = None
    if model is not None:
        count, width, arch = _model_facts(model)
        if n_layers is not None and _layer_count(n_layers) != count:
            raise InvalidArgumentError(f"n_layers={n_layers} contradicts the model, which has {count} layers.")
        if width != vec.d_model:
            raise ModelMismatchError(
                f"the vector has d_model {vec.d_model} and the model {width}: it was made for another model."
            )
        n_layers = count
    layers = _gguf_layers(vec, n_layers)
    if 0 in layers:
        raise InvalidArgumentError(
            "llama.cpp never steers the output of layer 0; drop it with vec.select_layers([...])."
        )
    hint = model_hint or arch or _vector_hint(vec)
    with atomic_output(path) as tmp:  # a unique temporary file, then os.replace: never a torn file
        writer = gguf.GGUFWriter(os.fspath(tmp), GGUF_ARCH)
        if hint:
            writer.add_string(f"{GGUF_ARCH}.model_hint", hint)
        writer.add_int32(f"{GGUF_ARCH}.layer_count", len(layers))
        for layer, key in sorted(layers.items()):
            data = vec.layer_activations[key].detach().to("cpu", torch.float32).numpy()
            writer.add_tensor(f"direction.{layer}", np.ascontiguousarray(data))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()


def _vector_hint(vec: SteeringVector) -> str | None:
    """The llama.cpp architecture a vector was made for, from its metadata (an import's hint, or its training)."""
    stored = vec.metadata.get(HINT_KEY)
    if isinstance(stored, str) and stored:
        return stored
    return llama_cpp_architecture(vec.metadata.get("architecture"))


def _known_layer_count(vec: SteeringVector) -> Any:
    """The model's layer count a vector's metadata records (trained vectors do), else None."""
    count = vec.metadata.get("n_layers")
    if count is None and isinstance(vec.metadata.get(FINGERPRINT_KEY), dict):
        count = vec.metadata[FINGERPRINT_KEY].get("n_layers")
    return count


def _gguf_layers(vec: SteeringVector, n_layers: int | None) -> dict[int, int]:
    """File layer (>= 0) -> the vector's key; negative keys resolved, since llama.cpp cannot read ``direction.-1``.

    With a known layer count (given, or from the vector's metadata) every layer must exist in the model:
    llama.cpp skips a ``direction.N`` past the model's end without a word.
    """
    keys = list(vec.layer_activations)
    given = n_layers is not None
    count = n_layers if given else _known_layer_count(vec)
    if count is None:
        if any(key < 0 for key in keys):
            raise InvalidArgumentError(
                f"the vector has negative layer keys {sorted(k for k in keys if k < 0)} (counted from the end of "
                "the model), which a llama.cpp control vector cannot hold; pass n_layers= (the model's layer "
                "count, e.g. export_gguf(vec, path, n_layers=model.cfg.n_layers)) or model= to number them from "
                "the start."
            )
        return {key: key for key in keys}
    count = _layer_count(count)
    past = sorted(k for k in keys if k >= count)
    if past:
        source = "" if given else " (from the vector's metadata; pass model= or n_layers= for another model)"
        raise LayerError(
            f"layers {past} are past the end of the model, which has {count} layers (0-{count - 1}){source}: "
            f"llama.cpp would silently skip direction.{past[0]}. Keep layers below {count} with "
            "vec.select_layers([...])."
        )
    resolved = resolve_layers(keys, count)
    if len(set(resolved)) != len(resolved):
        raise LayerError(
            f"the vector's keys {keys} name the same layer twice in a {count}-layer model; keep one key per layer."
        )
    return dict(zip(resolved, keys))


def _layer_count(value: Any) -> int:
    """``value`` as a positive layer count (from the caller or from a vector's metadata)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"n_layers must be a positive int (the model's layer count), got {value!r}.")
    return value


def _field_value(reader: Any, key: str) -> Any:
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def import_gguf(path: str | os.PathLike[str], *, model: Any = None) -> SteeringVector:
    """Read a llama.cpp control vector as a ``resid_post`` steering vector (no code is executed).

    Quantized or half-precision directions (which llama.cpp itself refuses; it reads float32
    only) are de-quantized with the gguf package's own de-quantizer, value for value. A
    direction that is a matrix, empty, or named twice (``direction.01`` and ``direction.1``)
    is refused. The file's architecture hint is kept as ``metadata["llama_cpp_architecture"]``;
    with ``model``, it is compared with that model's architecture (a ``ModelNameWarning`` when
    they differ) and the layers and width are checked against the model.

    Example:
        >>> vec = import_gguf("happy.gguf")
        >>> vec.layers, vec.metadata["llama_cpp_architecture"]
        ([10, 12], 'llama')
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
    names: dict[int, str] = {}
    for tensor in reader.tensors:
        prefix, _, index = tensor.name.partition(".")
        if prefix != "direction" or not index.isdigit() or int(index) < 1:
            raise VectorFileError(
                f"{name}: unexpected tensor {tensor.name!r}; a control vector holds direction.N, N >= 1."
            )
        layer = int(index)
        if layer in names:
            raise VectorFileError(
                f"{name}: {names[layer]!r} and {tensor.name!r} both name layer {layer}; a control vector holds one "
                "direction per layer. Remove one of them (llama.cpp would add both)."
            )
        names[layer] = tensor.name
        values = _direction_values(gguf, name, tensor)
        if not bool(torch.isfinite(values).all()):
            raise NonFiniteError(f"{name}: {tensor.name} has NaN or inf values; the file is damaged.")
        vectors[layer] = values
    if not vectors:
        raise VectorFileError(f"{name} holds no direction tensors.")
    if len({v.shape[0] for v in vectors.values()}) != 1:
        raise VectorFileError(f"{name}: the direction tensors have different lengths.")
    hint = _field_value(reader, f"{GGUF_ARCH}.model_hint")
    metadata: dict[str, Any] = {HINT_KEY: hint} if isinstance(hint, str) and hint and hint != "unknown" else {}
    metadata["source"] = "gguf"
    vec = SteeringVector(vectors, "resid_post", metadata)
    if model is not None:
        _check_against_model(vec, name, model)
    return vec


_INTEGER_TYPES = ("I8", "I16", "I32", "I64")


def _direction_values(gguf: Any, name: str, tensor: Any) -> torch.Tensor:
    """One direction as float32 values: a vector of at least one value, de-quantized exactly if quantized."""
    import numpy as np

    shape = tuple(int(d) for d in reversed(tensor.shape))  # gguf lists dimensions innermost first
    if int(tensor.n_elements) == 0:
        raise VectorFileError(f"{name}: {tensor.name} is empty (shape {shape}); a direction holds d_model values.")
    if sum(d != 1 for d in shape) > 1:
        raise VectorFileError(
            f"{name}: {tensor.name} has shape {shape}, a matrix; a direction is one vector of d_model values "
            "(llama.cpp refuses it too). Write each layer's direction as a 1-D tensor."
        )
    kind = gguf.GGMLQuantizationType(tensor.tensor_type)
    if kind.name in _INTEGER_TYPES:
        raise VectorFileError(f"{name}: {tensor.name} holds integers ({kind.name}), not a direction's float values.")
    data = np.asarray(tensor.data)
    try:
        values = data.astype(np.float32) if kind.name == "F64" else gguf.quants.dequantize(data, kind)
    except (NotImplementedError, ValueError) as error:
        raise VectorFileError(
            f"{name}: {tensor.name} is stored as {kind.name}, which gguf cannot de-quantize ({error}); "
            "export it as F32, the type llama.cpp reads."
        ) from None
    values = np.asarray(values, dtype=np.float32).reshape(-1)
    if values.size != int(tensor.n_elements):
        raise VectorFileError(
            f"{name}: {tensor.name} de-quantizes to {values.size} values, not the {int(tensor.n_elements)} its "
            "shape names; the file is damaged."
        )
    return torch.from_numpy(values.copy())


def _check_against_model(vec: SteeringVector, name: str, model: Any) -> None:
    """The imported vector fits ``model``: width, layers inside it, and (a warning) the architecture hint."""
    count, width, arch = _model_facts(model)
    if vec.d_model != width:
        raise ModelMismatchError(f"{name} holds directions of {vec.d_model} values; the model's d_model is {width}.")
    past = [layer for layer in vec.layers if layer >= count]
    if past:
        raise LayerError(
            f"{name} steers layers {past}, past the end of the model ({count} layers): llama.cpp would skip them. "
            "It was made for a deeper model."
        )
    hint = vec.metadata.get(HINT_KEY)
    if hint and arch and llama_cpp_architecture(hint) != arch:
        warnings.warn(
            f"{name} was made for a {hint!r} model and the model is a {arch!r} (llama.cpp's architecture names); "
            "the shapes fit, but a direction from one model rarely means the same in another.",
            ModelNameWarning,
            stacklevel=3,
        )
