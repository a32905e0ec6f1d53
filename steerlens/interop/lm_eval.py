"""Steering vectors for EleutherAI's lm-evaluation-harness (its ``steered`` model).

lm-eval's ``steered`` model (``lm_eval/models/hf_steered.py``, lm-eval >= 0.4.8) is its
Hugging Face model (``hf``) plus forward hooks read from a ``.pt`` file::

    {hookpoint: {"steering_vector": Tensor[d_model], "steering_coefficient": float,
                 "action": "add", "bias": None, "head_index": None}, ...}

``hookpoint`` is a module name as ``model.base_model.named_modules()`` lists it, i.e.
relative to the base model (``layers.3`` on a Llama, ``h.3`` on GPT-2), and ``"add"``
adds ``steering_coefficient * steering_vector`` to that module's output (the first
element of a tuple output) at **every position of every forward pass**: the prompt
(context) and the continuation in log-likelihood requests, every padding position, and
each generated token. That is exactly steerlens' default, ``vec.apply(model,
multiplier=m)`` (``min_token_index=0``, no ``token_indices``); lm-eval has no position
option, so a vector meant to steer from a position on cannot be written.

steerlens' layer types map to hookpoints as follows (sites found by
:func:`steerlens.backends.hf_layout.hf_layout`):

===================  ==============================================================
``resid_post`` L     output of decoder layer L (``layers.L``)
``resid_pre`` L      output of decoder layer L - 1, which is layer L's input (L >= 1);
                     layer 0's input is no module's output, so it cannot be written
``attn_out``,        output of the module that carries them on this model
``mlp_out``,         (``layers.L.self_attn``, ``layers.L.mlp``, a sandwich model's
``ln1``, ``ln2``,    post-sublayer norm, ``layers.L.input_layernorm``, ...)
``module:<name>``
``resid_mid``        not written: it is a module's input, which lm-eval cannot edit
===================  ==============================================================

The multiplier is folded into the stored vector in float32 and ``steering_coefficient``
is 1.0: lm-eval casts the vector to the model's dtype before scaling it, so storing the
raw vector would round twice on a bf16/fp16 model, where steerlens scales in float32
and rounds once. The file holds only tensors, strings, floats and None, so it loads with
``torch.load(path, weights_only=True)`` too.

Example:
    >>> export_lm_eval(vec, "happy.pt", 4.0, model=hf_model)
    {'layers.12': {'steering_vector': tensor([...]), 'steering_coefficient': 1.0, 'action': 'add', ...}}
    $ lm_eval --model steered --model_args pretrained=HuggingFaceTB/SmolLM2-135M-Instruct,steer_path=happy.pt \\
          --tasks hellaswag
"""

from __future__ import annotations

import io
import os
from typing import Any

import torch
from torch import Tensor, nn

from steerlens.backends import backend_for
from steerlens.errors import InvalidArgumentError, UnsupportedModelError
from steerlens.formats.safe_io import write_atomic
from steerlens.hooks import TokenIndices

LM_EVAL_INSTALL = "pip install 'steerlens[lm-eval]'"
SUFFIXES = (".pt", ".pth")
"""The only steer_path endings lm-eval's steered model reads as a tensor file (``.csv`` means SAE features)."""
SUPPORTED = ("resid_post", "resid_pre (layers >= 1)", "attn_out", "mlp_out", "ln1", "ln2", "module:<name>")


def export_lm_eval(
    vector: Any,
    path: str | os.PathLike[str],
    multiplier: float = 1.0,
    *,
    model: Any,
    min_token_index: int = 0,
    token_indices: TokenIndices = None,
    verify: bool = True,
) -> dict[str, dict[str, Any]]:
    """Write ``vector`` (a :class:`~steerlens.SteeringVector`) as lm-eval's ``steered`` model file for ``model``.

    Returns what was written: ``{hookpoint: entry}``.

    lm-eval then steers as ``vector.apply(model, multiplier=multiplier)`` does: the same
    tensors, at every position (prompt included). ``model`` is the Hugging Face model
    (or a ``TransformerBridge`` around one) that lm-eval will load from its
    ``pretrained=`` argument, as ``AutoModelForCausalLM.from_pretrained`` loads it: the
    hookpoints are its module names. ``path`` must end in ``.pt`` or ``.pth`` (what lm-eval
    reads). ``min_token_index`` / ``token_indices`` exist to say clearly that lm-eval
    cannot steer from a position on: anything but the default is an error.

    With ``verify`` (the default), one forward pass of two tokens checks on ``model`` that
    each hookpoint's output is a ``[..., d_model]`` tensor (or a tuple starting with one),
    which lm-eval's hook needs, and that each ``resid_pre`` hookpoint's output is the next
    layer's input; it is skipped for weights on the ``meta`` device.

    Raises :class:`InvalidArgumentError` for layer types or positions lm-eval cannot
    express, :class:`UnsupportedModelError` for a model that is not a Hugging Face one,
    and :class:`ModelMismatchError` when the vector does not fit ``model``.

    Example:
        >>> hf_model, tokenizer = steerlens.load_hf_model("smollm2-135m-instruct")
        >>> export_lm_eval(vec, "happy.pt", 4.0, model=hf_model)
        >>> # lm_eval --model steered --model_args pretrained=<folder>,steer_path=happy.pt --tasks ...
    """
    name = os.fspath(path)
    if not name.endswith(SUFFIXES):
        raise InvalidArgumentError(
            f"lm-eval's steered model reads a steering file only when its name ends in .pt or .pth, got {name!r}; "
            "name it e.g. 'steer.pt'."
        )
    if (
        not isinstance(min_token_index, int)
        or isinstance(min_token_index, bool)
        or min_token_index != 0
        or token_indices is not None
    ):
        raise InvalidArgumentError(
            "lm-eval's steered model adds the vector at every position of every forward pass (the prompt "
            "included); it has no option to steer from a position on or at chosen positions. Export with the "
            "default min_token_index=0 and token_indices=None, or steer with steerlens itself "
            "(vec.apply(model, min_token_index=...))."
        )
    backend = backend_for(model)
    if not backend.hooks_modules:
        raise UnsupportedModelError(
            f"lm-eval's steered model runs Hugging Face checkpoints, so its hookpoints are module names of one; "
            f"got a {type(model).__name__}. Pass the Hugging Face model (e.g. steerlens.load_hf_model(...)[0]) "
            "that lm-eval's pretrained= argument loads."
        )
    if vector.layer_type == "resid_mid":
        raise InvalidArgumentError(
            "lm-eval's steered model edits module outputs, and resid_mid is a module's input on a Hugging Face "
            f"model, so it cannot be written; lm-eval can express {', '.join(SUPPORTED)}."
        )
    # Validates the multiplier, resolves negative layers, warns about another model (as apply does).
    spec = vector._spec(backend, None, multiplier, 0, None)
    sites = backend.check_vector(spec.vectors, spec.layer_type)  # d_model, layer range, layer type on this model
    hf_model: nn.Module = backend.model
    layout = backend.module_layout
    paths: dict[int, str] = {}
    for layer, site in sites.items():
        if spec.layer_type == "resid_pre":
            if layer == 0:
                raise InvalidArgumentError(
                    "resid_pre of layer 0 is the embedding output, which enters decoder layer 0 as an input; "
                    "lm-eval's steered model edits module outputs only, so it cannot be written. Drop layer 0 "
                    f"(vec.select_layers([...])); lm-eval can express {', '.join(SUPPORTED)}."
                )
            if layout is None:
                raise UnsupportedModelError(
                    f"resid_pre of layer {layer} is the output of decoder layer {layer - 1}, but steerlens cannot "
                    f"find this {type(hf_model).__name__}'s decoder layers (only a layer_config names them); "
                    "export a resid_post vector instead."
                )
            paths[layer] = f"{layout.layers_path}.{layer - 1}"  # its output is layer L's input
        elif site.io != "output":
            raise InvalidArgumentError(
                f"{spec.layer_type} of layer {layer} is the input of {site.path}; lm-eval's steered model edits "
                f"module outputs only. It can express {', '.join(SUPPORTED)}."
            )
        else:
            paths[layer] = site.path
    hookpoints = _relative_to_base_model(hf_model, paths)
    if verify:
        _verify(hf_model, paths, spec.layer_type, backend.d_model, layout.layers_path if layout is not None else "")
    config = {
        hookpoints[layer]: {
            # The multiplier applied in float32, as steerlens' hook does before casting to the model's dtype.
            "steering_vector": (spec.vectors[layer].detach().to("cpu", torch.float32) * spec.multiplier).contiguous(),
            "steering_coefficient": 1.0,
            "action": "add",
            "bias": None,
            "head_index": None,
        }
        for layer in sorted(paths)
    }
    buffer = io.BytesIO()
    torch.save(config, buffer)
    write_atomic(name, buffer.getvalue())  # a unique temporary file, then os.replace: never a torn file
    return config


def _relative_to_base_model(model: nn.Module, paths: dict[int, str]) -> dict[int, str]:
    """Each module path as lm-eval resolves it: a name in ``model.base_model.named_modules()``."""
    base = getattr(model, "base_model", model)
    names = {id(module): name for name, module in model.named_modules()}
    prefix = names.get(id(base))
    if prefix is None:
        raise UnsupportedModelError(
            f"{type(model).__name__}.base_model is not one of its modules; lm-eval names hookpoints relative to it."
        )
    listed = dict(base.named_modules())
    out: dict[int, str] = {}
    for layer, path in paths.items():
        relative = path if not prefix else path[len(prefix) + 1 :] if path.startswith(prefix + ".") else None
        if relative is None or listed.get(relative) is not model.get_submodule(path):
            raise UnsupportedModelError(
                f"{path} is not under {type(model).__name__}'s base model ({prefix or 'the model itself'}), so "
                "lm-eval's steered model, which hooks model.base_model's modules, cannot reach it."
            )
        out[layer] = relative
    return out


def _verify(model: nn.Module, paths: dict[int, str], layer_type: str, d_model: int, layers_path: str) -> None:
    """One short forward pass: every hookpoint gives lm-eval a ``[..., d_model]`` tensor; resid_pre is the next input."""
    if any(p.device.type == "meta" for p in model.parameters()):
        return
    outputs: dict[str, Any] = {}
    inputs: dict[str, Any] = {}
    handles = []

    def keep_output(name: str) -> Any:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            outputs.setdefault(name, output)

        return hook

    def keep_input(name: str) -> Any:
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            inputs.setdefault(name, args[0] if args else kwargs.get("hidden_states"))

        return hook

    try:
        for layer, path in paths.items():
            handles.append(model.get_submodule(path).register_forward_hook(keep_output(path)))
            if layer_type == "resid_pre":
                nxt = f"{layers_path}.{layer}"
                handles.append(model.get_submodule(nxt).register_forward_pre_hook(keep_input(nxt), with_kwargs=True))
        embedding = model.get_input_embeddings()
        ids = torch.tensor([[0, min(1, embedding.num_embeddings - 1)]], device=embedding.weight.device)
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    for layer, path in paths.items():
        output = outputs.get(path)
        first = output[0] if isinstance(output, tuple) else output
        if not isinstance(first, Tensor) or first.shape[-1] != d_model:
            kind = (
                "no output (it did not run)"
                if path not in outputs
                else (f"a {type(output).__name__}" if not isinstance(first, Tensor) else f"shape {tuple(first.shape)}")
            )
            raise UnsupportedModelError(
                f"lm-eval's steered model adds the vector to the output of {path} (the first element if it is a "
                f"tuple), but on {type(model).__name__} that is {kind}, not a [..., {d_model}] tensor; it cannot "
                "steer there."
            )
        if layer_type == "resid_pre":
            nxt = inputs.get(f"{layers_path}.{layer}")
            if not isinstance(nxt, Tensor) or not (
                nxt is first or (nxt.shape == first.shape and torch.equal(nxt.to(first.device), first))
            ):
                raise UnsupportedModelError(
                    f"on {type(model).__name__} the input of decoder layer {layer} is not the output of layer "
                    f"{layer - 1} (something runs between them), so resid_pre of layer {layer} has no module output "
                    "lm-eval could steer; export a resid_post vector instead."
                )


def lm_eval_steered_model(pretrained: Any, steer_path: str | os.PathLike[str], **kwargs: Any) -> Any:
    """lm-eval's ``SteeredModel`` (an ``HFLM``) for ``pretrained`` steered by a file from :func:`export_lm_eval`.

    ``kwargs`` go to lm-eval's ``HFLM`` (``device``, ``batch_size``, ``dtype``, ...). Needs
    lm-eval: ``pip install 'steerlens[lm-eval]'``.

    Example:
        >>> lm = lm_eval_steered_model("path/to/checkpoint", "happy.pt", device="cpu", batch_size=8)
        >>> lm_eval.simple_evaluate(model=lm, tasks=["hellaswag"])
    """
    try:
        from lm_eval.models.hf_steered import SteeredModel
    except ImportError as error:
        raise ImportError(
            f"lm-eval's steered model needs the lm-eval package (>= 0.4.8): {LM_EVAL_INSTALL}."
        ) from error
    if isinstance(pretrained, os.PathLike):
        pretrained = os.fspath(pretrained)
    return SteeredModel(pretrained=pretrained, steer_path=os.fspath(steer_path), **kwargs)


__all__ = ["LM_EVAL_INSTALL", "lm_eval_steered_model", "export_lm_eval"]
