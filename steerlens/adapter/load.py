"""Load a ``HookedTransformer`` from a name, a folder or a loaded Hugging Face model."""

from __future__ import annotations

import os
import socket
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from steerlens import tl_speedup
from steerlens._tl import HookedTransformer, get_official_model_name, require_hooked_transformer
from steerlens.adapter._quiet import quiet_transformer_lens
from steerlens.adapter.configs import build_tl_config, tl_config_dict
from steerlens.adapter.gguf import gguf_checkpoint, gguf_origin, gguf_tokenizer, is_gguf
from steerlens.adapter.registry import check_convertible, supported_architectures
from steerlens.adapter.tokenizer import attach_tokenizer
from steerlens.adapter.weights import (
    HOOKED_STATE,
    convert_weights,
    hooked_state_fingerprint,
    load_weights,
    read_hooked_state,
    save_hooked_state,
)
from steerlens.errors import ModelLoadError, SteerlensError, TokenizerError, UnsupportedModelError

ModelSource = Union[str, "os.PathLike[str]", PreTrainedModel]

_REDUCED_PRECISION = (torch.float16, torch.bfloat16)


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` forbid downloads (read per call)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(flag.strip().lower() in ("1", "true", "yes", "on") for flag in flags)


def load_model(
    source: ModelSource,
    tokenizer: PreTrainedTokenizerBase | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    process_weights: bool = False,
    fast_generation: bool = False,
) -> HookedTransformer:
    """Load a model as a TransformerLens ``HookedTransformer``.

    ``source`` may be ``"toy"`` (steerlens' bundled toy model), a TransformerLens
    official model name (loaded by TransformerLens itself), a local checkpoint folder,
    a Hugging Face hub id, or an already loaded ``transformers.PreTrainedModel``.
    Hub access honours ``HF_HUB_OFFLINE=1``.

    With ``process_weights=False`` the weights are converted as they are, so
    ``blocks.{L}.hook_resid_post`` equals the HF output of decoder layer ``L``. With
    ``True`` they are folded and centred like ``HookedTransformer.from_pretrained``
    (same log-probs, different internal activations).

    ``dtype`` defaults to float32 for names and folders, and to the model's own dtype
    (and device) for a ``PreTrainedModel``. ``tokenizer`` defaults to the one saved with
    the checkpoint; the model gets a copy, the object passed in is never modified.
    ``fast_generation=True`` applies :func:`steerlens.tl_speedup.fast_generation` (``generate``
    2.4-5.9x faster on GPT-2-small-sized weights, bit-identical results, but the model becomes a subclass
    of TransformerLens' class); by default the model is TransformerLens' own.

    Example:
        >>> model = load_model("path/to/checkpoint", dtype=torch.bfloat16)
        >>> logits = model("Hello world")
    """
    require_hooked_transformer("steerlens.load_model")
    model = _load_hooked(source, tokenizer, device, dtype, process_weights)
    return tl_speedup.fast_generation(model) if fast_generation else model


def _load_hooked(
    source: ModelSource,
    tokenizer: PreTrainedTokenizerBase | None,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    process_weights: bool,
) -> HookedTransformer:
    """:func:`load_model` without the speed-up: TransformerLens' own model."""
    if isinstance(source, PreTrainedModel):
        return convert_hf_model(source, tokenizer, device, dtype, process_weights)
    if source == "toy":
        from steerlens.toy import load_toy_model

        return load_toy_model(device=device, dtype=dtype)
    if _is_gguf_source(source):
        return _load_gguf_hooked(source, tokenizer, device, dtype, process_weights)
    resolved = _local_source(source)
    if Path(resolved).is_dir():
        return _load_pretrained(resolved, tokenizer, device, dtype, process_weights)
    official = _official_tl_name(resolved)
    _check_hub_reachable(resolved, official)
    if official is not None:
        return _load_tl_official(official, tokenizer, device, dtype, process_weights)
    return _load_pretrained(resolved, tokenizer, device, dtype, process_weights)


def _local_source(source: Any) -> str:
    """A checkpoint folder's path, or a hub id; GGUF files become their de-quantized (cached) folder."""
    if isinstance(source, os.PathLike):
        source = os.fspath(source)
    if not isinstance(source, str):
        raise UnsupportedModelError(
            "source must be 'toy', a model name, a checkpoint folder, a .gguf file or a "
            f"transformers PreTrainedModel, got {type(source).__name__}."
        )
    if is_gguf(source):
        return str(gguf_checkpoint(source))
    path = Path(source).expanduser()
    if path.is_dir():
        return str(path)
    if _looks_like_path(source):
        hint = (
            "it is a file; pass the folder that contains config.json"
            if path.exists()
            else (f"no such folder ({path.absolute()} does not exist)")
        )
        raise ModelLoadError(
            f"cannot load model from {source!r}: {hint}. Pass an existing checkpoint folder "
            "(with config.json and weights), a .gguf file, a Hugging Face hub id, or 'toy'."
        )
    return source


def convert_hf_model(
    hf_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    process_weights: bool = False,
    fast_generation: bool = False,
) -> HookedTransformer:
    """Convert a loaded HF causal LM into a new ``HookedTransformer`` (no caching).

    ``device``/``dtype`` default to those of ``hf_model``. Without ``tokenizer``, the
    one saved next to the checkpoint is used if it can be found locally, else the model
    has no tokenizer. ``fast_generation``: as for :func:`load_model`.

    Example:
        >>> tl_model = convert_hf_model(AutoModelForCausalLM.from_pretrained("ckpt"))
    """
    require_hooked_transformer("steerlens.adapter.convert_hf_model")
    model = _convert(hf_model, tokenizer, device, dtype, process_weights, copy_tokenizer=True)
    return tl_speedup.fast_generation(model) if fast_generation else model


def _convert(
    hf_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    process_weights: bool,
    copy_tokenizer: bool,
) -> HookedTransformer:
    """:func:`convert_hf_model` without the speed-up (in eval mode)."""
    spec = check_convertible(hf_model.config)
    if not any(cls.__name__ == spec.causal_lm for cls in type(hf_model).__mro__):
        raise UnsupportedModelError(
            f"steerlens needs the {spec.causal_lm} model (with its LM head), "
            f"got {type(hf_model).__name__}; load it with AutoModelForCausalLM."
        )
    with _onloaded(hf_model):
        first = next(hf_model.parameters())
        dtype = dtype or first.dtype
        device = device if device is not None else first.device  # offloaded weights are on the CPU here
        # Folding/centring in half precision loses accuracy, so process in float32 first.
        build_dtype = torch.float32 if process_weights and dtype in _REDUCED_PRECISION else dtype
        with quiet_transformer_lens():
            cfg = build_tl_config(hf_model.config, device, build_dtype)
            model = HookedTransformer(cfg, tokenizer=None, move_to_device=True)
            load_weights(model, convert_weights(hf_model, spec, cfg), process_weights)
            if build_dtype != dtype:
                model.to(dtype, print_details=False)
    if tokenizer is None:
        tokenizer, copy_tokenizer = _saved_tokenizer(hf_model), False
    _attach(model, tokenizer, copy_tokenizer)
    return model.eval()


def _attach(model: HookedTransformer, tokenizer: PreTrainedTokenizerBase | None, copy: bool) -> None:
    """Attach ``tokenizer`` (a copy unless the loader owns it) and follow its BOS behaviour."""
    if tokenizer is None:
        return
    attach_tokenizer(model, tokenizer, copy)
    # Follow the tokenizer's own BOS behaviour, as the Hugging Face model does: a chat model whose
    # BOS is its turn marker (SmolLM2's <|im_start|>) must not get one in front of plain text, nor a
    # second one in front of a chat prompt, from TransformerLens' to_tokens and generate.
    model.cfg.default_prepend_bos = model.cfg.tokenizer_prepends_bos


@contextmanager
def _onloaded(hf_model: PreTrainedModel) -> Iterator[None]:
    """Inside: every weight of ``hf_model`` holds numbers, also those accelerate offloaded to disk or CPU.

    A ``device_map`` that offloads keeps such weights on the ``meta`` device and loads
    them (from the offload hooks' weights map) only around each module's forward pass;
    conversion reads all of them, so they are loaded to the CPU here and put back after.
    """
    if not any(param.is_meta for param in hf_model.parameters()):
        yield
        return
    try:
        from accelerate.utils import align_module_device, has_offloaded_params
    except ImportError:
        has_offloaded_params = None  # type: ignore[assignment]
    offloaded = [m for m in hf_model.modules() if has_offloaded_params and has_offloaded_params(m)]
    with ExitStack() as stack:
        for module in offloaded:
            stack.enter_context(align_module_device(module, torch.device("cpu")))
        missing = [name for name, param in hf_model.named_parameters() if param.is_meta]
        if missing:
            raise ModelLoadError(
                f"{type(hf_model).__name__} has weights on the meta device that no offload hook can load "
                f"(e.g. {missing[0]}): the model was created without its weights. Load it with its weights, "
                "e.g. AutoModelForCausalLM.from_pretrained(path) without device_map, or pass the checkpoint "
                "folder to load_model."
            )
        yield


def _looks_like_path(source: str) -> bool:
    """Whether ``source`` is meant as a filesystem path rather than a hub id / model name.

    Also true for what cannot be a hub id (``"runs/tiny/"``, ``"my model"``) and for
    ``"runs/tiny"`` when a local folder ``runs`` exists: a missing checkpoint under it.
    """
    return (
        os.path.isabs(source)
        or source.startswith((".", "~"))
        or "\\" in source
        or source.count("/") > 1
        or Path(source).exists()
        or not _is_hub_id(source)
        or ("/" in source and Path(source.split("/")[0]).is_dir())
    )


def _is_hub_id(source: str) -> bool:
    """Whether ``source`` is spelled like a Hugging Face repo id (``"name"`` or ``"org/name"``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(source)
    except HFValidationError:
        return False
    return True


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host takes a connection (True behind a proxy, which may forward what we cannot reach).

    One TCP connect instead of the hub client's ~25 s of retries when there is no network.
    """
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _check_hub_reachable(source: str, official: str | None) -> None:
    """Fail at once, in one line, for a name that is neither a local folder nor cached, without network."""
    if hub_offline() or _in_hub_cache(official or source) or _hub_reachable():
        return  # offline mode has its own message; cached models load without the network
    raise ModelLoadError(
        f"cannot load {source!r}: there is no local folder {str(Path(source).absolute())!r}, it is not in the "
        "Hugging Face cache, and the hub cannot be reached. Pass an existing checkpoint folder, check the name "
        "and the network, or set HF_HUB_OFFLINE=1 to use only local folders and the cache."
    )


def _official_tl_name(source: str) -> str | None:
    try:
        return get_official_model_name(source)
    except ValueError:
        return None


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def _offline_miss(source: str) -> ModelLoadError:
    return ModelLoadError(
        f"{source!r} is not a local folder and is not in the Hugging Face cache, and "
        "HF_HUB_OFFLINE=1 forbids downloading it. Download it once with network access "
        f"(e.g. `huggingface-cli download {source}`), unset HF_HUB_OFFLINE, or pass the "
        "path of a local checkpoint folder."
    )


def _hub_error(source: str, error: Exception) -> ModelLoadError:
    if hub_offline():
        return _offline_miss(source)
    reason = " ".join(str(error).split())  # the hub's messages span lines; ours is one
    return ModelLoadError(
        f"could not load {source!r}: it is not a local folder and the Hugging Face hub failed ({reason}). "
        "Check the name and your network access, pass the path of a local checkpoint folder, or set "
        "HF_HUB_OFFLINE=1 to use only local folders and the cache."
    )


def _load_pretrained(
    source: str,
    tokenizer: PreTrainedTokenizerBase | None,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    process_weights: bool,
) -> HookedTransformer:
    """Load a local folder or hub id with ``transformers`` and convert it; a tokenizer read here is attached
    without a copy."""
    owned = tokenizer is None
    hf_model, tokenizer = _load_hf(source, tokenizer, dtype, convertible=True)
    device = device if device is not None else _default_device()
    return _convert(hf_model, tokenizer, device, dtype or torch.float32, process_weights, copy_tokenizer=not owned)


def _is_gguf_source(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike)) and is_gguf(source)


# What reading a damaged cache folder raises (safetensors and tokenizers have their own error types,
# subclasses of Exception only): the folder is rebuilt once; steerlens' own errors pass through.
_CACHE_READ_ERRORS = (OSError, ValueError, RuntimeError, KeyError, EOFError)


def _load_gguf_hooked(
    source: str | os.PathLike[str],
    tokenizer: PreTrainedTokenizerBase | None,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    process_weights: bool,
) -> HookedTransformer:
    """A GGUF file as a HookedTransformer, from its cached checkpoint; an unreadable cache is rebuilt once."""
    folder = gguf_checkpoint(source)
    try:
        return _hooked_from_gguf_folder(folder, tokenizer, device, dtype, process_weights)
    except Exception as error:  # noqa: BLE001 - see _CACHE_READ_ERRORS; anything else is re-raised
        if not _is_cache_damage(error):
            raise
    folder = gguf_checkpoint(source, rebuild=True)
    return _hooked_from_gguf_folder(folder, tokenizer, device, dtype, process_weights)


def _is_cache_damage(error: BaseException) -> bool:
    """Whether ``error`` is what reading a damaged file raises (also safetensors' and tokenizers' own errors).

    steerlens' own errors count only when they wrap such an error (a tokenizer or weights file
    that would not read); a refusal of steerlens' own (an unsupported architecture) does not.
    """
    if isinstance(error, SteerlensError):
        return error.__cause__ is not None and _is_cache_damage(error.__cause__)
    return isinstance(error, _CACHE_READ_ERRORS) or type(error).__module__.split(".")[0] in (
        "safetensors",
        "tokenizers",
    )


def _hooked_from_gguf_folder(
    folder: Path,
    tokenizer: PreTrainedTokenizerBase | None,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    process_weights: bool,
) -> HookedTransformer:
    """Read the converted state dict kept in ``folder`` (float32, unprocessed), or convert and keep it.

    Kept: the HookedTransformer is built on the meta device (no memory written twice) and takes
    the kept tensors as its own (``load_state_dict(assign=True)``): the very values a conversion
    gives, buffers included. Other dtypes and ``process_weights=True`` convert as for any folder.
    """
    device = device if device is not None else _default_device()
    if (dtype or torch.float32) != torch.float32 or process_weights:
        return _load_pretrained(str(folder), tokenizer, device, dtype, process_weights)
    hf_config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    check_convertible(hf_config)
    fingerprint = hooked_state_fingerprint(tl_config_dict(hf_config))
    kept = folder / HOOKED_STATE
    state = read_hooked_state(kept, fingerprint)
    model = _assigned(hf_config, state, device) if state is not None else None
    if model is None:
        model = _load_pretrained(str(folder), tokenizer, device, torch.float32, False)
        save_hooked_state(model, kept, fingerprint)
        return model
    owned = tokenizer is None
    if owned:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    _attach(model, tokenizer, copy=not owned)
    return model.eval()


def _assigned(hf_config: Any, state: dict[str, torch.Tensor], device: str | torch.device) -> HookedTransformer | None:
    """A HookedTransformer built on the meta device holding ``state``'s tensors; None if they do not fit it."""
    with quiet_transformer_lens():
        cfg = build_tl_config(hf_config, device, torch.float32)
        with torch.device("meta"):
            model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError:  # a key or shape differs: convert again
        return None
    if any(tensor.is_meta for tensor in [*model.parameters(), *model.buffers()]):
        return None  # a tensor the state dict does not hold (a non-persistent buffer): build it for real
    if torch.device(device) != torch.device("cpu"):
        model.move_model_modules_to_device()
    return model


def _load_hf(
    source: str, tokenizer: PreTrainedTokenizerBase | None, dtype: torch.dtype | None, convertible: bool
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A local folder or hub id as ``(AutoModelForCausalLM, its tokenizer)``, float32 unless ``dtype``.

    ``convertible``: refuse, before the weights are read, an architecture steerlens cannot convert.
    """
    hub_kwargs: dict[str, Any] = {"local_files_only": hub_offline()}
    try:
        hf_config = AutoConfig.from_pretrained(source, **hub_kwargs)
    except ValueError as error:  # config.json names a model_type transformers lacks
        raise UnsupportedModelError(
            f"steerlens cannot adapt {source!r} ({error}). "
            f"Supported architectures: {', '.join(supported_architectures())}."
        ) from error
    except OSError as error:
        raise _hub_error(source, error) from error
    if convertible:
        check_convertible(hf_config)  # refuse before spending time on the weights
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **hub_kwargs)
        except (OSError, ValueError, TypeError) as error:
            raise TokenizerError(
                f"could not load a tokenizer for {source!r} ({error}); pass tokenizer= explicitly."
            ) from error
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(
            source, config=hf_config, dtype=dtype or torch.float32, **hub_kwargs
        )
    except OSError as error:
        raise _hub_error(source, error) from error
    return hf_model.eval(), tokenizer


def load_hf_model(
    source: ModelSource,
    tokenizer: PreTrainedTokenizerBase | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a plain Hugging Face causal LM and its tokenizer, for steering natively (no conversion).

    ``source`` is what :func:`load_model` takes: a checkpoint folder, a hub id, a ``.gguf``
    file or a packaged model's short name such as ``"smollm2-135m-instruct"`` (GGUF files
    are de-quantized once and cached, see :mod:`steerlens.adapter.gguf`), or a loaded
    ``PreTrainedModel`` (returned as it is, with its tokenizer found).

    Example:
        >>> model, tokenizer = load_hf_model("smollm2-135m-instruct")
        >>> vec = train_steering_vector(model, tokenizer, pairs, layers=[15])
    """
    if isinstance(source, PreTrainedModel):
        found = tokenizer if tokenizer is not None else _saved_tokenizer(source)
        if found is None:
            raise TokenizerError(
                f"no tokenizer is saved with this {type(source).__name__}; pass tokenizer=AutoTokenizer.from_pretrained(...)."
            )
        return source, found
    if _is_gguf_source(source):
        hf_model, tokenizer = _load_gguf_hf(source, tokenizer, dtype)
    else:
        folder = _local_source(source)
        if not Path(folder).is_dir():
            _check_hub_reachable(folder, None)
        hf_model, tokenizer = _load_hf(folder, tokenizer, dtype, convertible=False)
    if device is not None:
        hf_model = hf_model.to(device)
    return hf_model, tokenizer


def _load_gguf_hf(
    source: str | os.PathLike[str], tokenizer: PreTrainedTokenizerBase | None, dtype: torch.dtype | None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A GGUF file's cached checkpoint as a Hugging Face model; an unreadable cache is rebuilt once."""
    folder = gguf_checkpoint(source)
    try:
        return _load_hf(str(folder), tokenizer, dtype, convertible=False)
    except Exception as error:  # noqa: BLE001 - only what a damaged file raises is caught
        if not _is_cache_damage(error):
            raise
    return _load_hf(str(gguf_checkpoint(source, rebuild=True)), tokenizer, dtype, convertible=False)


def _load_tl_official(
    name: str,
    tokenizer: PreTrainedTokenizerBase | None,
    device: str | torch.device | None,
    dtype: torch.dtype | None,
    process_weights: bool,
) -> HookedTransformer:
    """Load a TransformerLens official model through TransformerLens itself."""
    if hub_offline() and not _in_hub_cache(name):
        raise _offline_miss(name)
    loader = HookedTransformer.from_pretrained if process_weights else HookedTransformer.from_pretrained_no_processing
    try:
        with quiet_transformer_lens():
            model = loader(name, device=device, dtype=dtype or torch.float32)
    except OSError as error:
        raise _hub_error(name, error) from error
    if tokenizer is not None:
        attach_tokenizer(model, tokenizer)
    return model


def _default_device() -> str:
    from transformer_lens.utilities import get_device

    return str(get_device())


def _saved_tokenizer(hf_model: PreTrainedModel) -> PreTrainedTokenizerBase | None:
    """The tokenizer stored with ``hf_model``'s checkpoint (or its GGUF file), if available without downloading."""
    origin = gguf_origin(hf_model)
    if origin is not None:
        return gguf_tokenizer(origin)
    name = getattr(hf_model, "name_or_path", "") or ""
    if not name:
        return None
    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError):
        return None
