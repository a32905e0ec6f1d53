"""Installing steering hooks on a HookedTransformer.

``apply`` is a context manager on top of ``model.hooks(fwd_hooks=...)``; ``patch``
adds the same hooks until ``handle.remove()``. A forward pre-hook on each steered
block reads the KV cache length, so the steering hook knows the absolute
position of every column it sees, also while generating one token at a time.
"""

from __future__ import annotations

import math
import numbers
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.errors import ModelMismatchError, NonFiniteError
from steerlens.layers import hook_name
from steerlens.operators import Operator, addition_operator
from steerlens.positions import TokenIndices, check_token_indices, position_mask


@dataclass(frozen=True)
class SteeringSpec:
    """Everything a hook needs to know to steer one model."""

    vectors: dict[int, Tensor]
    layer_type: str
    multiplier: float
    operator: Operator
    min_token_index: int
    token_indices: TokenIndices


def make_spec(
    vectors: dict[int, Tensor],
    layer_type: str,
    multiplier: float,
    operator: Operator | None,
    min_token_index: int,
    token_indices: TokenIndices,
) -> SteeringSpec:
    """Validate the arguments of ``apply``/``patch``."""
    if isinstance(multiplier, bool) or not isinstance(multiplier, numbers.Real):  # Real: numpy scalars too
        if not (isinstance(multiplier, Tensor) and multiplier.numel() == 1):
            raise NonFiniteError(f"multiplier must be a finite number, got {multiplier!r}.")
        multiplier = multiplier.item()
    if not math.isfinite(multiplier):
        raise NonFiniteError(f"multiplier must be a finite number, got {multiplier!r}.")
    token_indices = check_token_indices(min_token_index, token_indices)
    return SteeringSpec(
        vectors, layer_type, float(multiplier), operator or addition_operator(), min_token_index,
        token_indices,
    )


@dataclass
class SteeringHook:
    """The hook function steerlens puts on one hook point (recognisable by its type)."""

    vector: Tensor
    spec: SteeringSpec
    offset: list[int] = field(default_factory=lambda: [0])
    _cast: dict[tuple[torch.device, torch.dtype], Tensor] = field(default_factory=dict)

    def steer(self, act: Float[Tensor, "batch pos d_model"], offset: int) -> Tensor:
        """Return ``act`` steered at the selected absolute positions (``offset`` = first column's position)."""
        key = (act.device, act.dtype)
        if key not in self._cast:
            self._cast[key] = (self.vector.to(device=act.device, dtype=torch.float32) * self.spec.multiplier).to(act.dtype)
        delta = self.spec.operator(act, self._cast[key])
        mask = position_mask(offset, act.shape[1], act.shape[0], self.spec.min_token_index, self.spec.token_indices)
        if mask is None:
            return act + delta
        return torch.where(mask.to(act.device)[..., None], act + delta, act)

    def __call__(self, act: Tensor, hook: Any = None) -> Tensor:
        return self.steer(act, self.offset[0])


@dataclass
class OffsetTracker:
    """Forward pre-hook on a block: records the absolute position of the first new token."""

    store: list[int]

    def __call__(self, block: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        # The block's cache entry holds the keys of every earlier position: its length
        # is the absolute position of the first token of this forward pass.
        entry = kwargs.get("past_kv_cache_entry")
        self.store[0] = 0 if entry is None else int(entry.past_keys.shape[1])


def check_compatible(vectors: dict[int, Tensor], layer_type: str, model: Any) -> None:
    """Refuse, before any forward pass, a vector that does not fit the model."""
    cfg = model.cfg
    for layer, vec in vectors.items():
        if vec.shape[-1] != cfg.d_model:
            raise ModelMismatchError(
                f"the vector has d_model {vec.shape[-1]} but the model has {cfg.d_model}; "
                "it was trained on another model. Train it on this model."
            )
        if layer >= cfg.n_layers:
            raise ModelMismatchError(
                f"the vector steers layer {layer} but the model has only {cfg.n_layers} layers; "
                "select the layers that exist with vec.select_layers([...])."
            )
        name = hook_name(layer, layer_type)
        if name not in model.hook_dict:
            raise ModelMismatchError(
                f"the model has no hook point {name!r}; it cannot be steered at layer_type "
                f"{layer_type!r}. Train a vector at another layer_type (e.g. 'resid_post')."
            )


def _build(model: Any, spec: SteeringSpec) -> tuple[list[tuple[str, SteeringHook]], Callable[[], list]]:
    check_compatible(spec.vectors, spec.layer_type, model)
    hooks = [(hook_name(layer, spec.layer_type), SteeringHook(vec, spec)) for layer, vec in spec.vectors.items()]

    def install_trackers() -> list:
        return [
            model.blocks[layer].register_forward_pre_hook(OffsetTracker(hook.offset), with_kwargs=True)
            for layer, (_, hook) in zip(spec.vectors, hooks)
        ]

    return hooks, install_trackers


@contextmanager
def apply_to_hooked_transformer(model: Any, spec: SteeringSpec) -> Iterator[Any]:
    """Steer ``model`` inside the ``with`` block; every hook is removed on exit, also on error."""
    hooks, install_trackers = _build(model, spec)
    trackers = install_trackers()
    try:
        with model.hooks(fwd_hooks=hooks):
            yield model
    finally:
        for handle in trackers:
            handle.remove()


class SteeringHandle:
    """Returned by ``patch``: call :meth:`remove` to take the steering off again."""

    def __init__(self, remove: Callable[[], None]) -> None:
        self._remove = remove
        self.removed = False

    def remove(self) -> None:
        """Remove this patch's hooks (idempotent); other hooks on the model stay."""
        if not self.removed:
            self._remove()
            self.removed = True

    def __enter__(self) -> "SteeringHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def patch_hooked_transformer(model: Any, spec: SteeringSpec) -> SteeringHandle:
    """Add steering hooks that stay until ``handle.remove()``."""
    hooks, install_trackers = _build(model, spec)
    trackers = install_trackers()
    for name, hook in hooks:
        model.add_hook(name, hook)

    def remove() -> None:
        for handle in trackers:
            handle.remove()
        for name, hook in hooks:
            # Remove exactly our LensHandle, so hooks added by anyone else stay in place.
            point = model.hook_dict[name]
            for lens in [h for h in point.fwd_hooks if h.user_hook is hook]:
                lens.hook.remove()
                point.fwd_hooks.remove(lens)

    return SteeringHandle(remove)


def steering_hooks_on(model: Any) -> list[str]:
    """Names of hook points that still carry a steerlens hook (empty when the model is clean).

    On a Hugging Face model or a TransformerBridge: the paths of modules that carry one.
    """
    from steerlens.models import is_hooked_transformer, unwrap_bridge

    if not is_hooked_transformer(model):
        from steerlens.adapter.hf_steering import hf_steering_hooks_on

        return hf_steering_hooks_on(unwrap_bridge(model))
    names = [
        name
        for name, point in model.hook_dict.items()
        if any(isinstance(h.user_hook, SteeringHook) for h in point.fwd_hooks)
    ]
    names += [
        f"blocks.{i}"
        for i, block in enumerate(model.blocks)
        if any(isinstance(h, OffsetTracker) for h in block._forward_pre_hooks.values())
    ]
    return names
