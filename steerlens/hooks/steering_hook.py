"""The hook function that steers one activation, the same on every kind of model.

A backend (:mod:`steerlens.backends`) decides *where* a :class:`SteeringHook` runs
(a TransformerLens hook point, a torch hook on a Hugging Face module) and tells it,
before every forward pass, where that pass's columns sit in each row's sequence
(:class:`~steerlens.hooks.positions.PassPositions`: KV-cache length, position ids,
attention mask); the hook decides *what* changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.checks import finite_number
from steerlens.hooks.operators import Operator, addition_operator
from steerlens.hooks.positions import PassPositions, TokenIndices, check_token_indices, position_mask


@dataclass(frozen=True)
class SteeringSpec:
    """Everything a backend needs to steer one model: per-layer vectors and how to apply them."""

    vectors: dict[int, Tensor]
    layer_type: str
    multiplier: float
    operator: Operator
    min_token_index: int | Tensor
    """An absolute position, or one per row of the batch (the measuring functions' ``steer_from``)."""
    token_indices: TokenIndices


def make_spec(
    vectors: dict[int, Tensor],
    layer_type: str,
    multiplier: float,
    operator: Operator | None,
    min_token_index: int | Tensor,
    token_indices: TokenIndices,
) -> SteeringSpec:
    """Validate the arguments of ``apply``/``patch`` before any hook is installed."""
    token_indices = check_token_indices(min_token_index, token_indices)
    return SteeringSpec(
        vectors,
        layer_type,
        finite_number(multiplier),
        operator or addition_operator(),
        min_token_index,
        token_indices,
    )


@dataclass(repr=False)
class SteeringHook:
    """Steers one activation (recognisable by its type, so leftover hooks can be found).

    The vector is read at every call, never cached: in-place edits of the vector take
    effect inside a ``with`` block, gradients reach a ``requires_grad`` vector on every
    backward pass, and no tensor made under ``torch.inference_mode()`` is kept.
    """

    vector: Tensor
    spec: SteeringSpec
    positions: PassPositions = field(default_factory=PassPositions)

    def steer(self, act: Float[Tensor, "batch pos d_model"], positions: PassPositions) -> Tensor:
        """Return ``act`` steered at the selected positions (``positions``: where this pass's columns sit)."""
        # Scale in float32, then cast: the same rounding on every device and dtype.
        scaled = (self.vector.to(device=act.device, dtype=torch.float32) * self.spec.multiplier).to(act.dtype)
        delta = self.spec.operator(act, scaled)
        mask = position_mask(positions, act.shape[0], act.shape[1], self.spec.min_token_index, self.spec.token_indices)
        if mask is None:
            return act + delta
        return torch.where(mask.to(act.device)[..., None], act + delta, act)

    def __call__(self, act: Tensor, hook: Any = None) -> Tensor:
        return self.steer(act, self.positions)

    def __repr__(self) -> str:
        # TransformerLens formats a hook's repr when adding it: keep that cheap (no tensor printing).
        return f"SteeringHook(d_model={self.vector.shape[-1]}, multiplier={self.spec.multiplier})"


class SteeringPatchHandle:
    """Returned by ``patch_activations``: call :meth:`remove` (or leave its ``with`` block) to take the steering off.

    ``model_hooks`` holds the torch ``RemovableHandle`` of every hook the patch installed,
    as steering-vectors' field of that name (removing them all takes the patch off).
    ``SteeringPatchHandle(model_hooks)`` builds one from handles, as in steering-vectors.
    """

    def __init__(self, remove: Callable[[], None] | Sequence[Any] = (), model_hooks: Sequence[Any] = ()) -> None:
        if not callable(remove):  # steering-vectors' form: SteeringPatchHandle(model_hooks)
            remove, model_hooks = None, remove  # type: ignore[assignment]
        self.model_hooks: list[Any] = list(model_hooks)
        self._remove = remove
        self.removed = False

    def remove(self) -> None:
        """Remove this patch's hooks (idempotent); other hooks on the model stay."""
        if self.removed:
            return
        if self._remove is not None:
            self._remove()
        else:
            for hook in self.model_hooks:
                hook.remove()
        self.removed = True

    def __enter__(self) -> "SteeringPatchHandle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()
