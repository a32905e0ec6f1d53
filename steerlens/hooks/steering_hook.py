"""The hook function that steers one activation, the same on every kind of model.

A backend (:mod:`steerlens.backends`) decides *where* a :class:`SteeringHook` runs
(a TransformerLens hook point, a torch hook on a Hugging Face module) and tells it,
before every forward pass, where that pass's columns sit in each row's sequence
(:class:`~steerlens.hooks.positions.PassPositions`: KV-cache length, position ids,
attention mask); the hook decides *what* changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.checks import finite_number
from steerlens.errors import InvalidArgumentError, NonFiniteError, OperatorError
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
    """Validate the arguments of ``apply``/``patch`` before any hook is installed.

    Every route that steers (``apply``, ``patch``, sweeps, conditional steering) builds its
    spec here, so these checks hold everywhere: positions, a callable operator, vectors that
    hold numbers (not on the ``meta`` device), and a steering that stays finite in float32.

    Example:
        >>> spec = make_spec({3: torch.randn(64)}, "resid_post", 2.0, None, 0, None)
    """
    token_indices = check_token_indices(min_token_index, token_indices)
    if operator is not None and not callable(operator):
        raise OperatorError(
            f"operator must be a callable (activation, vector) -> delta, got {operator!r} "
            f"({type(operator).__name__}); pass e.g. operator=addition_operator(), or a multiplier=... for strength."
        )
    multiplier = finite_number(multiplier)
    for layer, vec in vectors.items():
        check_steering_finite(layer, vec, multiplier)
    return SteeringSpec(
        vectors, layer_type, multiplier, operator or addition_operator(), min_token_index, token_indices
    )


def check_steering_finite(layer: int, vector: Tensor, multiplier: float) -> None:
    """Raise unless ``multiplier * vector`` (as the hook computes it, in float32) and its norm are finite.

    A finite multiplier such as ``1e300``, or a vector whose entries are finite but whose
    float32 norm is not, turns every steered activation into inf and the logits into NaN
    (empty generations, no error): refused here, before any forward pass.
    """
    if vector.is_meta:
        raise InvalidArgumentError(
            f"layer {layer}: the vector is on the 'meta' device and holds no numbers (made from a model "
            "loaded without weights); train or load it on a model with real weights."
        )
    scaled = vector.detach().to(torch.float32) * multiplier
    norm = torch.linalg.vector_norm(scaled)
    if bool(torch.isfinite(norm)):  # a NaN or inf entry makes the norm non-finite too
        return
    own = float(torch.linalg.vector_norm(vector.detach().double()))
    raise NonFiniteError(
        f"multiplier {multiplier:g} times layer {layer}'s vector (norm {own:.4g}) overflows float32: every "
        "steered activation would be inf and the logits NaN. Use a multiplier whose product with the norm is "
        f"far below 1e19 (the square of the steered activation must stay finite), e.g. multiplier={_safe(own)}."
    )


def _safe(norm: float) -> str:
    """A multiplier that keeps ``multiplier * norm`` at 100 (a typical residual norm), as text."""
    if not math.isfinite(norm) or norm == 0:
        return "1.0 on a rescaled vector (vec * (1 / vec.norm()))"
    return f"{100.0 / norm:.3g}"


def check_delta(operator: Operator, delta: Any, act: Tensor) -> None:
    """Raise unless ``delta`` is a tensor that adds to ``act`` without changing its shape.

    ``act``'s own shape, or one that broadcasts to it with ``d_model`` last (``[d_model]``,
    as steering-vectors' operators return, or ``[batch, 1, d_model]``). Anything else would
    be broadcast silently into another shape, or fail deep in the forward pass.
    """
    shape = getattr(delta, "shape", None)
    if isinstance(delta, Tensor) and delta.dim() >= 1 and shape[-1] == act.shape[-1]:
        try:
            if torch.broadcast_shapes(shape, act.shape) == act.shape:
                return
        except RuntimeError:
            pass
    name = getattr(operator, "__qualname__", None) or type(operator).__name__
    got = f"shape {list(shape)}" if isinstance(delta, Tensor) else f"a {type(delta).__name__}"
    raise OperatorError(
        f"operator {name} returned {got} for an activation of shape {list(act.shape)}; an operator must "
        f"return a delta of the activation's shape (or [{act.shape[-1]}], the same for every position)."
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
        if act.dtype == torch.float16 and not bool(torch.isfinite(scaled).all()):  # float16 overflows at 65504
            raise NonFiniteError(
                f"multiplier {self.spec.multiplier:g} times the vector (norm {float(self.vector.double().norm()):.4g}) "
                "overflows this float16 model's activations (largest value 65504); use a smaller multiplier."
            )
        delta = self.spec.operator(act, scaled)
        check_delta(self.spec.operator, delta, act)
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
