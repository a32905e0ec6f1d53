"""Faster ``HookedTransformer.generate``: weights stored in the layout TransformerLens' forward reads.

TransformerLens 3.9 keeps weights in its own orientation (``W_U`` is ``[d_model, d_vocab]``,
``W_Q`` is ``[head, d_model, d_head]``, ...) but multiplies with them in Hugging Face's
(``F.linear`` wants ``[out, in]``). So every forward pass rearranges them and calls
``.contiguous()``: ``Unembed`` copies the whole of ``W_U`` (154 MB for GPT-2 small, a
transposing copy slower than the matrix product itself), attention copies ``W_Q``,
``W_K``, ``W_V`` and ``W_O`` of every layer, a gated MLP its three matrices. During
generation that happens once per new token.

:func:`fast_generation` stores each of these parameters so that the rearranged view
TransformerLens asks for is already contiguous: same values, same shape, only the strides
change. ``.contiguous()`` and the ``reshape`` after a permutation then return views, and
``F.linear`` receives a tensor with the very values, shape and memory layout it received
before, so logits and generated tokens are bit-identical; only the copies are gone.

Visible side effects: ``param.is_contiguous()`` is False for the relaid parameters, so
``param.view(...)`` fails (use ``reshape``) and ``safetensors.torch.save_file`` refuses
them (save ``{k: v.contiguous() for k, v in model.state_dict().items()}``). Moving or
casting the model (``.to``, ``.half()``) keeps the layout; ``load_state_dict`` copies into
the existing parameters and keeps it too. An unembedding tied to the embedding as a
transposed view (``W_U`` sharing ``W_E``'s storage) already has the fast layout and stays tied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, TypeVar

import torch
from torch import nn

from steerlens.errors import UnsupportedModelError

Permutation = tuple[int, ...]
Model = TypeVar("Model", bound=nn.Module)

# Parameter -> the permutation of its dimensions that TransformerLens' forward makes
# contiguous before multiplying (see the ``.contiguous()`` / einops ``rearrange`` calls in
# components/unembed.py, components/abstract_attention.py, utilities/attention.py and
# components/mlps/gated_mlp.py).
_TRANSPOSE: Permutation = (1, 0)
_QKV: Permutation = (0, 2, 1)  # "head d_model d_head -> (head d_head) d_model"
_OUT: Permutation = (2, 0, 1)  # "head d_head d_model -> d_model (head d_head)"
_AS_IS: Permutation = (0, 1, 2)
_ATTENTION = {"W_Q": _QKV, "W_K": _QKV, "W_V": _QKV, "_W_K": _QKV, "_W_V": _QKV}
_GATED_MLP = {"W_gate": _TRANSPOSE, "W_in": _TRANSPOSE, "W_out": _TRANSPOSE}
_UNEMBED = {"W_U": _TRANSPOSE}

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def fast_generation(model: Model) -> Model:
    """Make ``model.generate`` (and every forward pass) skip TransformerLens' per-call weight copies.

    Stores the unembedding, attention and gated-MLP weights of a ``HookedTransformer``
    in the memory layout its forward pass multiplies with, so no weight is copied per
    generated token (GPT-2 small on CPU, one thread: greedy generation 2.3-5x faster,
    within about 1.1x of Hugging Face ``generate``). Values and shapes are unchanged and logits and
    generated tokens are bit-identical; only strides change (see the module docstring for
    what that means for ``view`` and ``safetensors``). Call it after folding or centring
    weights (``process_weights_``): those reduce over weights, and a re-strided weight
    may round differently there. Safe to call twice; parameters stay the same objects,
    so optimisers and hooks keep working. Returns ``model``. ``steerlens.load_model``
    and the toy model already call it.

    Example:
        >>> model = fast_generation(HookedTransformer.from_pretrained("gpt2"))
        >>> model.generate("The film was", max_new_tokens=20, do_sample=False)
    """
    from transformer_lens.HookedRootModule import HookedRootModule

    if not isinstance(model, HookedRootModule):
        raise UnsupportedModelError(
            f"fast_generation re-lays the weights of a TransformerLens HookedTransformer, got "
            f"{type(model).__name__}. A Hugging Face model needs no such fix; a TransformerBridge "
            "runs its Hugging Face model's own layers."
        )
    from transformer_lens.components import AbstractAttention  # TransformerLens 3 only, as HookedTransformer

    for module in model.modules():
        for param, permutation in _relayable(module):
            _store_permuted(param, permutation)
        if isinstance(module, AbstractAttention) and _plain_dense(module._parameters.get("W_O"), 3):
            _follow_attn_result(module)
    return model


def _relayable(module: nn.Module) -> Iterator[tuple[nn.Parameter, Permutation]]:
    """The parameters of ``module`` that TransformerLens rearranges per call, with the permutation."""
    from transformer_lens.components import AbstractAttention, GatedMLP, Unembed

    if isinstance(module, Unembed):
        layouts = _UNEMBED
    elif isinstance(module, AbstractAttention) and not getattr(module.cfg, "load_in_4bit", False):
        layouts = _ATTENTION
    elif type(module) is GatedMLP:  # not its 4-bit variant, whose weights are packed
        layouts = _GATED_MLP
    else:
        return
    for name, permutation in layouts.items():
        param = module._parameters.get(name)
        if _plain_dense(param, len(permutation)):
            yield param, permutation


def _plain_dense(param: nn.Parameter | None, ndim: int) -> bool:
    """Whether ``param`` is an ordinary float tensor of ``ndim`` dims we may re-stride."""
    return (
        param is not None
        and type(param) is nn.Parameter
        and param.dim() == ndim
        and param.dtype in _FLOAT_DTYPES
        and param.device.type != "meta"
    )


def _store_permuted(param: nn.Parameter, permutation: Permutation) -> None:
    """Re-stride ``param`` in place so that ``param.permute(*permutation)`` is contiguous."""
    if param.permute(*permutation).is_contiguous():
        return  # already laid out (a second call, or a weight that always was)
    inverse = tuple(permutation.index(dim) for dim in range(len(permutation)))
    # A normal tensor even when called under inference mode (the model may be trained
    # later); assigning .data keeps the Parameter object and anything that refers to it.
    with torch.inference_mode(False), torch.no_grad():
        param.data = param.data.permute(*permutation).contiguous().permute(*inverse)


@dataclass
class OutputLayout:
    """Forward pre-hook on an attention module: keeps ``W_O`` in the layout its current path reads.

    The default path multiplies with ``W_O`` rearranged to ``[d_model, head*d_head]``
    (fast layout: no copy). With ``cfg.use_attn_result`` TransformerLens instead sums
    ``z * W_O`` over ``d_head``, and the order of that sum follows ``W_O``'s strides, so
    there ``W_O`` must be stored as TransformerLens made it to give the same bits. The
    flag can change at any time (``model.set_use_attn_result``), hence a check per call
    (a few microseconds; a re-layout only when the flag changed).
    """

    def __call__(self, module: nn.Module, args: tuple) -> None:
        _store_permuted(module.W_O, _AS_IS if module.cfg.use_attn_result else _OUT)


def _follow_attn_result(attention: nn.Module) -> None:
    """Lay out ``attention.W_O`` for the current flags and keep it so (one :class:`OutputLayout` per module)."""
    if not any(isinstance(hook, OutputLayout) for hook in attention._forward_pre_hooks.values()):
        attention.register_forward_pre_hook(OutputLayout())
    OutputLayout()(attention, ())


def is_fast(model: nn.Module) -> bool:
    """Whether every weight :func:`fast_generation` handles is already in its fast layout."""
    from transformer_lens.components import AbstractAttention

    hooked = all(
        any(isinstance(hook, OutputLayout) for hook in module._forward_pre_hooks.values())
        for module in model.modules()
        if isinstance(module, AbstractAttention) and _plain_dense(module._parameters.get("W_O"), 3)
    )
    return hooked and all(
        param.permute(*permutation).is_contiguous()
        for module in model.modules()
        for param, permutation in _relayable(module)
    )


__all__ = ["fast_generation", "is_fast"]
