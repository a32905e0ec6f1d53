"""``steerlens info``: what a vector file holds, said the way a person asks about it.

Layers, layer type, per-layer norms, the model it was trained on (name, architecture, shape),
and how it was trained (aggregator, pairs, read token, steerlens version), from the file's metadata;
anything the metadata lacks reads ``unknown``. A steerlens file is read without torch (a look at a
file takes a fraction of a second); a llama.cpp control vector (.gguf) is imported.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

# Metadata keys written by training (steerlens.vector.model_metadata, train_steering_vector) and by
# import_gguf; spelled out here because importing those modules imports torch.
_SHOWN = {"model_name", "architecture", "d_model", "n_layers", "backend", "model_fingerprint"}
_SHOWN |= {"steerlens_version", "training", "llama_cpp_architecture", "source"}
UNKNOWN = "unknown"


@dataclass(frozen=True)
class VectorInfo:
    """What ``info`` prints about one file."""

    path: str
    kind: str
    layer_type: str
    d_model: int
    dtype: str
    norms: dict[int, float]
    metadata: dict[str, Any]


def read_info(path: str) -> VectorInfo:
    """The facts ``info`` prints about a steerlens vector file or a GGUF control vector.

    Example:
        >>> read_info("happy.safetensors").norms
        {2: 3.1416}
    """
    if _is_gguf(path):
        from steerlens.interop import import_gguf

        vec = import_gguf(path)
        dtype = str(next(iter(vec.layer_activations.values())).dtype)
        return VectorInfo(
            path=path,
            kind="llama.cpp control vector (GGUF)",
            layer_type=vec.layer_type,
            d_model=vec.d_model,
            dtype=dtype,
            norms=vec.norms(),
            metadata=vec.metadata,
        )
    from steerlens.formats.vector_file import summarize_vector_file

    summary = summarize_vector_file(path)
    return VectorInfo(
        path=path,
        kind="steerlens vector (safetensors)",
        layer_type=summary.layer_type,
        d_model=summary.d_model,
        dtype=summary.dtype,
        norms=summary.norms,
        metadata=summary.metadata,
    )


def describe(info: VectorInfo) -> list[str]:
    """The lines ``info`` prints: the vector, the model it was trained on, how, then any other metadata.

    Example:
        >>> print("\\n".join(describe(read_info("happy.safetensors"))))
        file:          happy.safetensors
        ...
    """
    meta = info.metadata
    lines = [
        _row("file", info.path),
        _row("format", info.kind),
        _row("layer type", info.layer_type),
        _row("layers", ", ".join(str(layer) for layer in sorted(info.norms))),
        _row("d_model", f"{info.d_model} ({info.dtype.removeprefix('torch.')})"),
        "norms:",
        *(f"  layer {layer:3d}  norm {norm:.4f}" for layer, norm in sorted(info.norms.items())),
        _row("model", _model(meta)),
        _row("architecture", _architecture(meta)),
        _row("trained", _training(meta)),
        _row("steerlens", _text(meta.get("steerlens_version"))),
    ]
    if meta.get("source") == "gguf":  # a control vector holds its directions and an architecture hint only
        lines[-2:] = [_row("trained", "not recorded (a llama.cpp control vector holds only its directions)")]
    others = {key: value for key, value in meta.items() if key not in _SHOWN}
    if others:
        lines.append("other metadata:")
        lines.extend(f"  {key}: {_compact(value)}" for key, value in sorted(others.items()))
    return lines


def cmd_info(args: argparse.Namespace) -> None:
    for line in describe(read_info(str(args.vector))):
        print(line)


def _row(label: str, value: str) -> str:
    return f"{label + ':':<14} {value}"


def _text(value: Any) -> str:
    return UNKNOWN if value is None or value == "" else str(value)


def _model(meta: dict[str, Any]) -> str:
    shape = [f"{meta['n_layers']} layers" if meta.get("n_layers") is not None else None]
    shape.append(f"d_model {meta['d_model']}" if meta.get("d_model") is not None else None)
    shape.append(f"{meta['backend']} backend" if meta.get("backend") else None)
    details = ", ".join(part for part in shape if part)
    name = _text(meta.get("model_name"))
    if meta.get("source") == "gguf" and name == UNKNOWN:
        name = "unknown (a llama.cpp control vector names no model)"
    return f"{name} ({details})" if details else name


def _architecture(meta: dict[str, Any]) -> str:
    if meta.get("architecture"):
        return str(meta["architecture"])
    hint = meta.get("llama_cpp_architecture")
    return f"{hint} (the GGUF file's model hint)" if hint else UNKNOWN


def _training(meta: dict[str, Any]) -> str:
    training = meta.get("training")
    if not isinstance(training, dict):
        return UNKNOWN if training is None else _compact(training)
    parts = []
    if training.get("n_samples") is not None:
        parts.append(f"on {training['n_samples']} pairs")
    if training.get("aggregator") is not None:
        parts.append(f"aggregator {training['aggregator']}")
    if training.get("read_token_index") is not None:
        parts.append(f"read at token {training['read_token_index']}")
    overrides = training.get("per_sample_read_token_index")
    if isinstance(overrides, list):
        moved = sum(1 for o in overrides if o != [None, None])
        parts.append(f"{moved} pairs read at their own tokens")
    if training.get("batch_size") is not None:
        parts.append(f"batch size {training['batch_size']}")
    if training.get("chat_template"):
        parts.append("in the model's chat template (steerlens train --chat)")
    known = {"n_samples", "aggregator", "read_token_index", "per_sample_read_token_index", "batch_size"}
    known.add("chat_template")
    parts.extend(f"{key} {_compact(value)}" for key, value in sorted(training.items()) if key not in known)
    return ", ".join(parts) or UNKNOWN


def _compact(value: Any, limit: int = 80) -> str:
    """A metadata value on one short line: long lists as their length, long text cut with an ellipsis."""
    if isinstance(value, list) and len(value) > 8:
        kind = "numbers" if all(isinstance(x, (int, float)) for x in value) else "items"
        return f"[{len(value)} {kind}]"
    if isinstance(value, dict):
        text = "{" + ", ".join(f"{key}: {_compact(item, 40)}" for key, item in value.items()) + "}"
    else:
        text = str(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_gguf(path: str) -> bool:
    """Whether ``path`` starts with GGUF's magic bytes; anything but a regular file is refused here
    (a FIFO would block, a device would never end), with the error a vector file's load gives."""
    from steerlens.errors import VectorFileError
    from steerlens.formats.safe_io import read_prefix

    return read_prefix(path, 4, lambda problem: VectorFileError(f"{path}: cannot read the file: {problem}")) == b"GGUF"
