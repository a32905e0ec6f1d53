"""A faster ``HookedTransformer`` forward and ``generate`` for TransformerLens 3.9, opt-in.

This is a patch to TransformerLens, kept apart from steerlens' backends: nothing in steerlens
needs it, and :func:`steerlens.load_model` / the toy model apply it only when asked
(``fast_generation=True``). It would belong in TransformerLens itself (ARCHITECTURE.md, "What
TransformerLens would need").

Why it is faster. TransformerLens 3.9 keeps weights in its own orientation (``W_U`` is
``[d_model, d_vocab]``, ``W_Q`` is ``[head, d_model, d_head]``, ...) but multiplies with them in
Hugging Face's (``F.linear`` wants ``[out, in]``). So every forward pass rearranges them and calls
``.contiguous()``: ``Unembed`` copies the whole of ``W_U`` (154 MB for GPT-2 small, a transposing
copy slower than the matrix product itself), attention copies ``W_Q``, ``W_K``, ``W_V`` and
``W_O`` of every layer, a gated MLP its three matrices. During generation that happens once per
new token. :func:`fast_generation` keeps the rearranged copies in a cache that lives for one
``generate`` (or ``generate_stream``) call, or one steerlens call (:func:`kept_layouts`), and
gives each block a leaner forward that runs the same arithmetic without TransformerLens'
repeated per-layer work (``LeanBlock``).

Measured with ``benchmarks/bench_generation.py --threads 1`` (a random GPT-2-small checkpoint,
greedy, 32 new tokens, interleaved rounds; two runs on a shared machine, load average 0.4-2.2 on
2 cores; plain TransformerLens is timed once per run, so its figure is the noisier): ``generate``
with the speed-up was 3.7-5.9x faster than TransformerLens' own for one 18-token prompt (1.62 s
vs 6.08-9.54 s; Hugging Face ``generate`` 1.35 s) and 2.4-3.4x for a left-padded batch of 8
(3.44-3.61 s vs 8.20-12.08 s; Hugging Face 3.11-3.42 s), with identical tokens.
On SmolLM2-135M-Instruct (``load_model`` with and without ``fast_generation=True``, 32 greedy
tokens after a one-sentence prompt, one thread, best of 3 interleaved rounds, load average 5-6.4):
2.9x (5.75 s vs 16.6 s), identical tokens.

What it keeps. Parameters stay as TransformerLens makes them (same objects, shapes, strides,
dtypes, storage: ``state_dict()`` is unchanged and saves with safetensors); nothing is added
as a parameter, buffer or attribute of the model; logits, every hook's values, ``run_with_cache``
and generated tokens are bit-identical; ``deepcopy``, ``pickle`` and ``torch.save`` round-trip.
What it changes, and why it is opt-in: the model, its blocks and its unembedding become
subclasses of TransformerLens' classes (``isinstance`` holds and they print as before, but
``type(model) is HookedTransformer`` is False, and a pickle of the model names this module's
classes, so loading it needs steerlens), and during a call the rearranged weights (most of the
model) exist twice. :func:`restore_tl_forward` undoes it.

A copy is remade when its parameter changed (another tensor assigned, ``.to``, or an in-place
edit: the parameter's ``data_ptr`` and version counter are checked at every use) and dropped
when the call returns. Other forward passes (the user's ``model(...)``, ``run_with_cache``)
make their copies each pass, as TransformerLens does.
"""

from __future__ import annotations

import functools
import operator
import weakref
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Iterator, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

_GENERATION: ContextVar[dict[int, tuple] | None] = ContextVar("steerlens_generation_weights", default=None)
"""The rearranged weights of the ``generate`` call running in this context (None: not in one)."""


def fast_generation(model: Model) -> Model:
    """Make ``model.generate`` (and every forward pass) skip TransformerLens' per-call weight copies and repeats.

    Within one ``generate`` call, each weight TransformerLens rearranges per token is rearranged
    once (GPT-2 small on CPU, one thread: greedy generation 2.4-5.9x faster, within 1.06-1.2x of
    Hugging Face ``generate``), and its blocks run a forward without TransformerLens' repeated
    per-layer work (a third fewer tensor operations per token: ln1 once instead of three times,
    rotary position ids and causal mask once per pass; on a small model such as SmolLM2-135M that
    is about a fifth of the time of a token). Parameters keep TransformerLens' own shapes, strides
    and storage, so the model saves, pickles and trains as TransformerLens' own; logits, every
    hook's values and generated tokens are bit-identical. Costs memory during ``generate``, and
    the model's classes become subclasses of TransformerLens' (see the module docstring). Safe to
    call twice; parameters stay the same objects. Returns ``model``. Opt-in:
    ``steerlens.load_model(..., fast_generation=True)`` and the toy model's loaders call it.

    Example:
        >>> model = fast_generation(HookedTransformer.from_pretrained("gpt2"))
        >>> model.generate("The film was", max_new_tokens=20, do_sample=False)
    """
    from transformer_lens.HookedRootModule import HookedRootModule

    if not isinstance(model, HookedRootModule):
        raise UnsupportedModelError(
            f"fast_generation speeds up a TransformerLens HookedTransformer's generate, got "
            f"{type(model).__name__}. A Hugging Face model needs no such fix; a TransformerBridge "
            "runs its Hugging Face model's own layers."
        )
    _use_lean_modules(model)
    return model


def _plain_dense(param: nn.Parameter | None, ndim: int) -> bool:
    """Whether ``param`` is an ordinary float tensor of ``ndim`` dims whose rearranged copy may be cached."""
    return (
        param is not None
        and type(param) is nn.Parameter
        and param.dim() == ndim
        and param.dtype in _FLOAT_DTYPES
        and param.device.type != "meta"
    )


def laid_out(param: Tensor, permutation: Permutation) -> Tensor:
    """``param.permute(*permutation).contiguous()``: made once per ``generate`` call, else per call as TransformerLens.

    The cached copy is reused only while ``param`` is the same tensor with the same storage
    (``data_ptr``), version counter (in-place edits), dtype and shape.
    """
    view = param.permute(*permutation)
    cache = _GENERATION.get()
    if cache is None or view.is_contiguous() or not _plain_dense(param, len(permutation)):
        return view.contiguous()
    stamp = (param.data_ptr(), _version(param), param.dtype, param.shape, param.device)
    kept = cache.get(id(param))
    if kept is not None and kept[0] is param and kept[1] == stamp:
        return kept[2]
    copy = view.contiguous()
    cache[id(param)] = (param, stamp, copy)
    return copy


@contextmanager
def kept_layouts(cache: dict[int, tuple]) -> Iterator[None]:
    """Forward passes inside read and fill ``cache`` with rearranged weights, as one ``generate`` call does.

    steerlens' backend holds one ``cache`` for the life of one top-level call (a sweep, a
    training read), so its many passes make each copy once instead of once per pass, as
    TransformerLens would. Copies are checked against their parameter at every use (see
    :func:`laid_out`), so edits in between are seen; the memory (one copy of the rearranged
    weights) is freed with ``cache``. Inside a running ``generate`` its own cache is kept.

    Example:
        >>> cache = {}
        >>> with kept_layouts(cache):
        ...     model(tokens)  # rearranged weights made here
        >>> with kept_layouts(cache):
        ...     model(tokens)  # and reused here
    """
    if _GENERATION.get() is not None:
        yield
        return
    token = _GENERATION.set(cache)
    try:
        yield
    finally:
        _GENERATION.reset(token)


def is_fast(model: nn.Module) -> bool:
    """Whether :func:`fast_generation` has been applied: lean blocks, unembedding and ``generate``.

    (They need the TransformerLens version they mirror; with another, nothing is changed and this is True.)
    """
    from transformer_lens.components import TransformerBlock, Unembed

    if not _mirrored_version():
        return True
    plain = (TransformerBlock, Unembed, _hooked_transformer())
    return not any(type(module) in plain for module in model.modules())


def _hooked_transformer() -> type:
    from transformer_lens import HookedTransformer

    return HookedTransformer


# -- a leaner block forward ------------------------------------------------------------
#
# Per generated token TransformerLens 3.9 runs about 140 tensor operations per block where
# Hugging Face's Llama runs about 55: it normalises the block input three times (once each
# for queries, keys and values), adds 0.0 to two of them, recomputes rotary position ids and
# the causal mask in every layer, rotates through a clone and two slice assignments, and
# calls ~25 hook points and einops' rearrange a dozen times. On a small model (SmolLM2-135M)
# that Python and dispatch work is a quarter of the time of a token. LeanBlock.forward runs
# the same arithmetic on the same operands in the same order, so every value (and logits,
# and generated tokens) is bit-identical, with the repeats and the no-ops left out:
#
# - ln1 runs once (its three calls in TransformerLens return the same tensor values), and the
#   ``+ 0.0`` TransformerLens adds to the query and key inputs (for a shortformer embedding
#   there is none of) is left out: it can only turn a -0.0 into 0.0, which no product changes;
# - rotary position ids and the causal-and-padding mask are made once per forward pass and
#   shared by all blocks (they depend only on the attention mask and the cache length);
# - rotation is ``cat(-x2, x1)`` instead of clone + two slice copies (same values);
# - ``where(isnan(p), 0, p)`` is ``nan_to_num(p, nan=0)`` (softmax output has no infinities);
# - weights and biases are read from the module's parameter dict, views made directly.
#
# It runs only where skipping a repeat cannot be observed, else TransformerLens' own forward
# runs: no gradient (generation and evaluation run under no_grad/inference_mode; training
# keeps TransformerLens' exact autograd graph), no hook on ln1 or inside the attention (they
# would fire fewer times, or not at all), no global module hooks, and a configuration whose
# path it mirrors (checked per call: flags such as use_attn_result can change at any time).
# Hooks on the block's residual hook points (hook_resid_pre/mid/post, hook_attn_out,
# hook_mlp_out: where steering sits) fire as before, with the same values; so do hooks on
# ln2 and the MLP (called as modules whenever anything is hooked there).

# TransformerLens versions whose TransformerBlock / attention code LeanBlock mirrors op for op.
_MIRRORED_VERSIONS = ("3.9.",)
# Configuration flags that select another path through TransformerLens' block or attention.
_PLAIN_FLAGS = {
    "use_attn_result": False,
    "use_split_qkv_input": False,
    "use_attn_in": False,
    "use_hook_mlp_in": False,
    "attn_only": False,
    "parallel_attn_mlp": False,
    "use_normalization_before_and_after": False,
    "use_qk_norm": False,
    "clip_qkv": None,
    "use_logn_attn": False,
    "use_dynamic_ntk_rope": False,
    "use_attention_sinks": False,
    "load_in_4bit": False,
    "ungroup_grouped_query_attention": False,
    "attention_dir": "causal",
    "n_devices": 1,
}
_read_flags = operator.attrgetter(*_PLAIN_FLAGS)
_PLAIN_VALUES = tuple(_PLAIN_FLAGS.values())
_PLAIN_POSITIONS = ("rotary", "standard")
_FULL_PRECISION = (torch.float32, torch.float64)  # the norms compute in float32 below these
# Architectures whose attention or block TransformerLens special-cases by name (OLMo's QK-norm
# on whole vectors, post-norm blocks).
_NAMED_PATHS = frozenset({"OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM"})
_ATTENTION_HOOKS = (
    "hook_q",
    "hook_k",
    "hook_v",
    "hook_rot_q",
    "hook_rot_k",
    "hook_attn_scores",
    "hook_pattern",
    "hook_z",
)


@functools.lru_cache(maxsize=None)
def _mirrored_version() -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformer-lens").startswith(_MIRRORED_VERSIONS)
    except PackageNotFoundError:
        return False


@dataclass(frozen=True)
class _Parts:
    """A block's submodules as they were when checked, and those that must be unhooked for the lean path."""

    ln1: nn.Module
    ln2: nn.Module
    attn: nn.Module
    mlp: nn.Module
    grouped: bool
    gated: bool
    quiet: tuple[nn.Module, ...]  # ln1 and its hooks (called once, not three times), the attention's hook points
    mlp_quiet: tuple[nn.Module, ...]  # a gated MLP's hook points: inlined when none is hooked
    norm1: Any  # the inlined forward of ln1 and ln2 (RMSNorm, LayerNorm) or None: called as modules
    norm2: Any
    ln2_quiet: tuple[nn.Module, ...]  # ln2 is inlined when none of these is hooked

    def current(self, block: nn.Module) -> bool:
        modules = block._modules
        return (
            modules.get("ln1") is self.ln1
            and modules.get("ln2") is self.ln2
            and modules.get("attn") is self.attn
            and modules.get("mlp") is self.mlp
        )


def _parts(block: nn.Module) -> _Parts | None:
    """The submodules of ``block`` if the lean forward knows their code, else None."""
    from transformer_lens.components import Attention, GroupedQueryAttention
    from transformer_lens.components.mlps.gated_mlp import GatedMLP

    modules = block._modules
    ln1, ln2, attn, mlp = (modules.get(name) for name in ("ln1", "ln2", "attn", "mlp"))
    if ln1 is None or ln2 is None or mlp is None or type(attn) not in (Attention, GroupedQueryAttention):
        return None
    hooks = [hook for hook in (attn._modules.get(name) for name in _ATTENTION_HOOKS) if hook is not None]
    gated = type(mlp) is GatedMLP
    return _Parts(
        ln1,
        ln2,
        attn,
        mlp,
        grouped=type(attn) is GroupedQueryAttention,
        gated=gated,
        quiet=(*ln1.modules(), *hooks),
        mlp_quiet=tuple(mlp.modules()) if gated else (),
        norm1=_inlined_norm(ln1),
        norm2=_inlined_norm(ln2),
        ln2_quiet=tuple(ln2.modules()),
    )


def _inlined_norm(norm: nn.Module) -> Any:
    from transformer_lens.components import LayerNorm, RMSNorm

    return {RMSNorm: _rms_norm, LayerNorm: _layer_norm}.get(type(norm))


def _normalize(norm: nn.Module, inlined: Any, x: Tensor) -> Tensor:
    """``norm(x)``, inlined when its code is known (its hook points unhooked: the caller checked)."""
    if inlined is None or x.device != norm._parameters["w"].device:
        return norm(x)
    return inlined(norm, x)


def _rms_norm(norm: nn.Module, x: Tensor) -> Tensor:
    """``RMSNorm.forward``."""
    dtype = norm.cfg.dtype
    if dtype not in _FULL_PRECISION:
        x = x.to(torch.float32)
    scale = (x.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()
    return (x / scale).to(dtype) * norm._parameters["w"]


def _layer_norm(norm: nn.Module, x: Tensor) -> Tensor:
    """``LayerNorm.forward``."""
    dtype = norm.cfg.dtype
    if dtype not in _FULL_PRECISION:
        x = x.to(torch.float32)
    x = x - x.mean(-1, keepdim=True)
    scale = (x.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()
    params = norm._parameters
    return (x / scale).to(dtype) * params["w"] + params["b"]


def _hooked(modules: tuple[nn.Module, ...]) -> bool:
    return any(module._forward_hooks or module._forward_pre_hooks for module in modules)


_BLOCK_PARTS: weakref.WeakKeyDictionary[nn.Module, _Parts | None] = weakref.WeakKeyDictionary()
"""Each lean block's parts as last checked, kept here rather than on the block: the model gets no attribute."""


def _lean_parts(block: nn.Module, shortformer_pos_embed: object, attention_mask: Tensor | None) -> _Parts | None:
    """The block's parts if this call may take the lean path, else None (TransformerLens' forward runs)."""
    from torch.nn.modules import module as torch_module

    if shortformer_pos_embed is not None or torch.is_grad_enabled():
        return None
    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return None
    cfg = block.cfg
    if (
        _read_flags(cfg) != _PLAIN_VALUES
        or cfg.positional_embedding_type not in _PLAIN_POSITIONS
        or cfg.original_architecture in _NAMED_PATHS
        or (cfg.attn_scores_soft_cap is not None and cfg.attn_scores_soft_cap > 0)
    ):
        return None
    parts = _BLOCK_PARTS.get(block)
    if parts is None or not parts.current(block):
        parts = _parts(block)
        _BLOCK_PARTS[block] = parts
        if parts is None:
            return None
    attn = parts.attn
    if attn.attn_type != "global" or attn._attention_dir_override not in (None, "causal") or attn._forward_hooks:
        return None
    if attn._forward_pre_hooks:
        return None
    if _hooked(parts.quiet):
        return None
    return parts


class _PassMasks:
    """Rotary position ids and the causal mask of one forward pass, made once for all its blocks.

    TransformerLens makes both in every layer from the same attention mask and cache length,
    so they are the same tensors in every block of a pass. The last ones made are kept, with
    a copy of the mask they came from, and reused while the lengths are the same and the mask
    is too: the same object unmodified since (its version counter), or equal values (on the
    CPU; an inference tensor has no version counter, and comparing there costs no device sync).
    """

    def __init__(self) -> None:
        self.last: tuple = ()

    def get(self, mask: Tensor | None, past: int, width: int, device: torch.device) -> tuple[Tensor | None, Tensor]:
        from transformer_lens.utilities import get_offset_position_ids

        last = self.last
        if last and last[1] == past and last[2] == width and last[3] == device and _same_mask(last[0], last[4], mask):
            return last[5], last[6]
        # As AbstractAttention.apply_causal_mask / _make_causal_mask / apply_rotary make them.
        mask_device = mask.device if mask is not None else device
        query = torch.arange(past, width, device=mask_device)
        keys = torch.arange(width, device=mask_device)
        causal = (keys[None, :] <= query[:, None])[None, None, :, :]
        ids = saved = None
        if mask is not None:
            causal = causal & mask[:, None, None, :].bool()
            ids = get_offset_position_ids(0, mask)
            saved = (mask.clone(), _version(mask))
        self.last = (mask, past, width, device, saved, ids, causal)
        return ids, causal


def _version(tensor: Tensor) -> int | None:
    return None if tensor.is_inference() else tensor._version


def _same_mask(kept: Tensor | None, saved: tuple[Tensor, int | None] | None, mask: Tensor | None) -> bool:
    """Whether ``mask`` holds what the kept mask held when its tables were made."""
    if mask is None or saved is None:
        return mask is None and saved is None
    copy, version = saved
    if kept is mask and version is not None and _version(mask) == version:
        return True
    return (
        mask.device.type == "cpu" and copy.shape == mask.shape and copy.dtype == mask.dtype and torch.equal(copy, mask)
    )


_PASS_MASKS = _PassMasks()


def _project(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """``utilities.attention.simple_attn_linear``: [batch, pos, head, d_head]."""
    heads, d_head = bias.shape
    w = laid_out(weight, _QKV).reshape(heads * d_head, weight.shape[1])
    return F.linear(x, w, bias.reshape(heads * d_head)).reshape(x.shape[0], x.shape[1], heads, d_head)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor, rotary_dim: int, adjacent: bool) -> Tensor:
    """``AbstractAttention.apply_rotary`` with the position tables already looked up."""
    x_rot = x[..., :rotary_dim]
    if adjacent:  # rotate_every_two, GPT-J style: [x0, x1] -> [-x1, x0]
        x_flip = torch.stack((-x_rot[..., 1::2], x_rot[..., ::2]), dim=-1).flatten(-2)
    else:  # GPT-NeoX style: halves
        half = rotary_dim // 2
        x_flip = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
    rotated = x_rot * cos + x_flip * sin
    if rotary_dim == x.shape[-1]:
        return rotated.contiguous()  # TransformerLens cats an empty pass-through part: same values, contiguous
    return torch.cat([rotated, x[..., rotary_dim:]], dim=-1)


def _attention(parts: _Parts, x: Tensor, entry: Any, mask: Tensor | None, width: int) -> Tensor:
    """``AbstractAttention.forward`` for query = key = value input ``x`` (``width``: cached + new positions)."""
    attn = parts.attn
    cfg = attn.cfg
    params = attn._parameters
    q = _project(x, params["W_Q"], params["b_Q"])
    if parts.grouped:
        k = _project(x, params["_W_K"], params["_b_K"])
        v = _project(x, params["_W_V"], params["_b_V"])
    else:
        k = _project(x, params["W_K"], params["b_K"])
        v = _project(x, params["W_V"], params["b_V"])
    past = 0
    if entry is not None:
        past = entry.past_keys.size(1)
        k, v = entry.append(k, v)
    ids, causal = _PASS_MASKS.get(mask, past, width, x.device)
    if cfg.positional_embedding_type == "rotary":
        if ids is None:
            cos = attn.rotary_cos[None, :width, None, :]
            sin = attn.rotary_sin[None, :width, None, :]
        else:
            ids = ids.to(attn.rotary_cos.device)
            cos = attn.rotary_cos[ids, None, :]
            sin = attn.rotary_sin[ids, None, :]
        rotary_dim, adjacent = cfg.rotary_dim, cfg.rotary_adjacent_pairs
        q = _rotate(q, cos[:, past:], sin[:, past:], rotary_dim, adjacent)
        k = _rotate(k, cos, sin, rotary_dim, adjacent)
    if parts.grouped:
        k = torch.repeat_interleave(k, dim=2, repeats=attn.repeat_kv_heads)
        v = torch.repeat_interleave(v, dim=2, repeats=attn.repeat_kv_heads)
    scores = q.permute(0, 2, 1, 3) @ k.permute(0, 2, 3, 1) / attn.attn_scale
    scores = torch.where(causal, scores.to(causal.device), attn.IGNORE.to(causal.device))
    pattern = torch.nan_to_num(F.softmax(scores, dim=-1), nan=0.0)  # rows with no key: 0, as TransformerLens
    pattern = pattern.to(device=v.device, dtype=v.dtype)
    z = (pattern @ v.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
    w_o = params["W_O"]
    w = laid_out(w_o, _OUT).reshape(w_o.shape[2], w_o.shape[0] * w_o.shape[1])
    if z.dtype != w.dtype:
        z = z.to(w.dtype)
    z = z.reshape(z.shape[0], z.shape[1], w.shape[1])
    return F.linear(z, w, params["b_O"])


def _gated_mlp(mlp: nn.Module, x: Tensor) -> Tensor:
    """``GatedMLP.forward`` (no layer-norm activation)."""
    params = mlp._parameters
    pre_act = F.linear(x, laid_out(params["W_gate"], _TRANSPOSE))
    pre_linear = F.linear(x, laid_out(params["W_in"], _TRANSPOSE))
    post_act = (mlp.act_fn(pre_act) * pre_linear) + params["b_in"]
    return F.linear(post_act, laid_out(params["W_out"], _TRANSPOSE), params["b_out"])


def _lean_block_class() -> type:
    """``LeanBlock``: a ``TransformerBlock`` whose forward skips TransformerLens' repeats (made on first use)."""
    cls = globals().get("_LeanBlock")
    if cls is not None:
        return cls
    from transformer_lens.components import TransformerBlock

    class LeanBlock(TransformerBlock):
        """A ``TransformerBlock`` with a bit-identical, leaner forward (see :mod:`steerlens.tl_speedup`)."""

        def _get_name(self) -> str:
            return "TransformerBlock"  # the model prints as before

        def forward(
            self,
            resid_pre: Tensor,
            shortformer_pos_embed: Tensor | None = None,
            past_kv_cache_entry: Any = None,
            attention_mask: Tensor | None = None,
        ) -> Tensor:
            parts = _lean_parts(self, shortformer_pos_embed, attention_mask)
            if parts is not None:
                out = self._lean_forward(parts, resid_pre, past_kv_cache_entry, attention_mask)
                if out is not None:
                    return out
            return super().forward(
                resid_pre,
                shortformer_pos_embed=shortformer_pos_embed,
                past_kv_cache_entry=past_kv_cache_entry,
                attention_mask=attention_mask,
            )

        def _lean_forward(self, parts: _Parts, resid_pre: Tensor, entry: Any, mask: Tensor | None) -> Tensor | None:
            # TransformerBlock.forward for a pre-norm block with one attention input. Checked before
            # any hook fires, so that TransformerLens' forward can take over: a mask that does not
            # cover cached and new positions (it reports or handles it), rotary tables to extend.
            width = resid_pre.shape[1] + (0 if entry is None else entry.past_keys.size(1))
            if mask is not None and mask.shape[-1] != width:
                return None
            attn = parts.attn
            if attn.cfg.positional_embedding_type == "rotary" and (
                attn.cfg.rotary_dim is None or width > attn.rotary_cos.shape[0]
            ):
                return None
            resid_pre = self.hook_resid_pre(resid_pre)
            attn_out = _attention(parts, _normalize(parts.ln1, parts.norm1, resid_pre), entry, mask, width)
            attn_out = self.hook_attn_out(attn_out)
            resid_mid = self.hook_resid_mid(resid_pre + attn_out)
            norm2 = None if _hooked(parts.ln2_quiet) else parts.norm2
            normalized = _normalize(parts.ln2, norm2, resid_mid)
            if parts.gated and not self.cfg.is_layer_norm_activation() and not _hooked(parts.mlp_quiet):
                mlp_out = _gated_mlp(parts.mlp, normalized)
            else:
                mlp_out = parts.mlp(normalized)
            mlp_out = self.hook_mlp_out(mlp_out)
            return self.hook_resid_post(resid_mid + mlp_out)

    LeanBlock.__module__ = __name__
    LeanBlock.__qualname__ = "_LeanBlock"
    globals()["_LeanBlock"] = LeanBlock
    return LeanBlock


def _lean_unembed_class() -> type:
    """``LeanUnembed``: an ``Unembed`` whose forward reads ``W_U``'s rearranged copy from the generation cache."""
    cls = globals().get("_LeanUnembed")
    if cls is not None:
        return cls
    from transformer_lens.components import Unembed

    class LeanUnembed(Unembed):
        """``Unembed.forward`` with ``W_U.T.contiguous()`` made once per ``generate`` call (see :mod:`steerlens.tl_speedup`)."""

        def _get_name(self) -> str:
            return "Unembed"

        def forward(self, residual: Tensor) -> Tensor:
            if _GENERATION.get() is None or torch.is_grad_enabled():
                return super().forward(residual)
            residual = self.hook_in(residual)
            result = F.linear(residual, laid_out(self.W_U, _TRANSPOSE), self.b_U)
            return self.hook_out(result)

    LeanUnembed.__module__ = __name__
    LeanUnembed.__qualname__ = "_LeanUnembed"
    globals()["_LeanUnembed"] = LeanUnembed
    return LeanUnembed


def _lean_transformer_class() -> type:
    """``LeanTransformer``: a ``HookedTransformer`` whose ``generate`` keeps rearranged weights for the call."""
    cls = globals().get("_LeanTransformer")
    if cls is not None:
        return cls
    HookedTransformer = _hooked_transformer()

    class LeanTransformer(HookedTransformer):
        """A ``HookedTransformer`` whose generation lays each weight out once per call (see :mod:`steerlens.tl_speedup`)."""

        def _get_name(self) -> str:
            return "HookedTransformer"

        def generate(self, *args: Any, **kwargs: Any) -> Any:
            token = _GENERATION.set({}) if _GENERATION.get() is None else None
            try:
                return super().generate(*args, **kwargs)
            finally:
                if token is not None:
                    _GENERATION.reset(token)

        def generate_stream(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
            inner = super().generate_stream(*args, **kwargs)
            cache: dict[int, tuple] = {}
            while True:  # the cache is current only while a step runs, never while the caller holds a yield
                token = _GENERATION.set(cache)
                try:
                    item = next(inner)
                except StopIteration as stop:
                    return stop.value
                finally:
                    _GENERATION.reset(token)
                yield item

    LeanTransformer.__module__ = __name__
    LeanTransformer.__qualname__ = "_LeanTransformer"
    globals()["_LeanTransformer"] = LeanTransformer
    return LeanTransformer


_LEAN_CLASSES = {"_LeanBlock": _lean_block_class, "_LeanUnembed": _lean_unembed_class}
_LEAN_CLASSES["_LeanTransformer"] = _lean_transformer_class


def __getattr__(name: str) -> Any:  # lets pickle find the classes made on first use
    if name in _LEAN_CLASSES:
        return _LEAN_CLASSES[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _swaps() -> list[tuple[type, str]]:
    """(TransformerLens class, name of its lean subclass in this module)."""
    from transformer_lens.components import TransformerBlock, Unembed

    return [(TransformerBlock, "_LeanBlock"), (Unembed, "_LeanUnembed"), (_hooked_transformer(), "_LeanTransformer")]


def _use_lean_modules(model: nn.Module) -> None:
    """Give every plain block, unembedding and the model itself their lean subclass (TransformerLens 3.9 only)."""
    if not _mirrored_version():
        return
    swaps = [(plain, _LEAN_CLASSES[name]()) for plain, name in _swaps()]
    for module in model.modules():
        for plain, lean in swaps:
            if type(module) is plain:
                module.__class__ = lean


def restore_tl_forward(model: Model) -> Model:
    """Undo :func:`fast_generation`: every module runs TransformerLens' own code again."""
    for plain, name in _swaps():
        lean = globals().get(name)
        for module in model.modules():
            if lean is not None and type(module) is lean:
                module.__class__ = plain
                _BLOCK_PARTS.pop(module, None)
    return model


__all__ = ["fast_generation", "is_fast", "kept_layouts", "laid_out", "restore_tl_forward"]
