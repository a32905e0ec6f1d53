"""Argument checks shared by every entry point, so one bad value gets one message everywhere."""

from __future__ import annotations

import math
import numbers
from typing import Iterable

import torch

from steerlens.errors import InvalidArgumentError, NonFiniteError, NumberTypeError

PADDING_SIDES = ("left", "right")


def check_batch_size(batch_size: int) -> int:
    """``batch_size`` if it is a positive int."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}.")
    return batch_size


def check_padding_side(side: str) -> str:
    """``side`` if it is ``"left"`` or ``"right"``."""
    if side not in PADDING_SIDES:
        raise InvalidArgumentError(f"padding_side must be 'left' or 'right', got {side!r}.")
    return side


def finite_number(value: object, name: str = "multiplier") -> float:
    """A finite float from a Python, numpy or one-element tensor number.

    A value that is no number at all (a string, a list, a bool) is a :class:`NumberTypeError`
    naming its type; only a real NaN or infinity is a :class:`NonFiniteError`.
    """
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.dtype == torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise NumberTypeError(
            f"{name} must be a number (int, float or a one-element tensor), got {_type_name(value)} {value!r}; "
            f"pass e.g. {name}=2.0" + (f" (float({value!r}) converts the string)." if isinstance(value, str) else ".")
        )
    if not math.isfinite(float(value)):
        raise NonFiniteError(f"{name} must be a finite number, got {value!r}.")
    return float(value)


def _type_name(value: object) -> str:
    """``"a str"``, ``"a list"``, ``"a torch.float32 Tensor of shape (2,)"``: what a caller passed, for messages."""
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} Tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"


def token_id_list(value: object) -> list[int] | None:
    """``value`` as a list of ids when it is one pre-tokenized prompt (a list/tuple of ints, a 1-D integer
    tensor), else None.

    The one test of "is this token ids": prompts, pairs and completions all go through it.

    Example:
        >>> token_id_list(torch.tensor([1, 5])), token_id_list((3,)), token_id_list("Hi")
        ([1, 5], [3], None)
    """
    if isinstance(value, torch.Tensor):
        if value.dim() != 1 or value.dtype.is_floating_point or value.dtype == torch.bool:
            return None
        return [int(i) for i in value.tolist()]
    if isinstance(value, (list, tuple)) and all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        return [int(i) for i in value]
    return None


def check_multipliers(multipliers: float | Iterable[float]) -> list[float]:
    """Finite, distinct multipliers as floats."""
    if isinstance(multipliers, (str, bytes)):
        raise NumberTypeError(
            f"multipliers must be a number or a list of numbers, got {_type_name(multipliers)} {multipliers!r}; "
            "pass e.g. multipliers=[-4, 4]."
        )
    listed = [multipliers] if isinstance(multipliers, (numbers.Real, torch.Tensor)) else list(multipliers)
    if not listed:
        raise InvalidArgumentError("multipliers is empty; pass at least one number.")
    try:
        floats = [finite_number(m, "multipliers") for m in listed]
    except NonFiniteError as error:
        raise InvalidArgumentError(str(error)) from None
    if len(set(floats)) != len(floats):
        raise InvalidArgumentError(f"multipliers must be distinct, got {listed}.")
    return floats
