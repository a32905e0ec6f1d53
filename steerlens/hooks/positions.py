"""Which absolute token positions a steering hook touches.

Positions are absolute indices in the full sequence (prompt plus generated
tokens). During generation with a KV cache each forward pass sees only the new
tokens, so the hook is told the number of cached positions (``offset``) and
maps its local columns to absolute positions ``offset .. offset + pos - 1``.
"""

from __future__ import annotations

from typing import Union

import torch
from jaxtyping import Bool
from torch import Tensor

from steerlens.errors import TokenIndexError

TokenIndices = Union[list[int], slice, Tensor, None]
"""Positions to steer: a list of absolute positions, a slice, or a mask tensor (bool or 0/1)."""


def check_token_indices(min_token_index: int, token_indices: TokenIndices) -> TokenIndices:
    """Validate position arguments up front, so a bad value fails before any forward pass."""
    if isinstance(min_token_index, bool) or not isinstance(min_token_index, int) or min_token_index < 0:
        raise TokenIndexError(
            f"min_token_index must be a non-negative int (an absolute position), got {min_token_index!r}."
        )
    if token_indices is None:
        return None
    if isinstance(token_indices, slice):
        for part in ("start", "stop", "step"):
            value = getattr(token_indices, part)
            if value is not None and (not isinstance(value, int) or value < (1 if part == "step" else 0)):
                raise TokenIndexError(
                    f"token_indices slice {part} must be a non-negative int or None (absolute "
                    f"positions), got {value!r}; negative positions are ambiguous during generation."
                )
        return token_indices
    if isinstance(token_indices, Tensor):
        # A tensor is a mask, as in steering-vectors: bool, or 0/1 numbers.
        if token_indices.dtype != torch.bool:
            if not bool(((token_indices == 0) | (token_indices == 1)).all()):
                raise TokenIndexError(
                    "a token_indices tensor is a mask of 0s and 1s (or bools) over positions; got other "
                    "values. To list positions, pass a list of ints: token_indices=[2, 4]."
                )
            token_indices = token_indices == 1
        if token_indices.dim() not in (1, 2):
            raise TokenIndexError(
                "a token_indices mask must be [pos] or [batch, pos], got shape "
                f"{tuple(token_indices.shape)}."
            )
        return token_indices
    if isinstance(token_indices, (list, tuple)):
        for i in token_indices:
            if isinstance(i, bool) or not isinstance(i, int) or i < 0:
                raise TokenIndexError(
                    f"token_indices must hold non-negative int positions, got {i!r}; use absolute "
                    "positions counted from the start of the sequence."
                )
        return list(token_indices)
    raise TokenIndexError(
        f"token_indices must be a list of ints, a slice, a bool mask or None, got {type(token_indices).__name__}."
    )


def position_mask(
    offset: int, length: int, batch: int, min_token_index: int, token_indices: TokenIndices
) -> Bool[Tensor, "batch pos"] | None:
    """Mask of the positions to steer in columns ``offset .. offset+length-1``, or None for all."""
    if min_token_index == 0 and token_indices is None:
        return None
    positions = torch.arange(offset, offset + length)
    mask = positions >= min_token_index
    if token_indices is None:
        return mask.expand(batch, length)
    if isinstance(token_indices, slice):
        start = token_indices.start or 0
        step = token_indices.step or 1
        chosen = (positions >= start) & ((positions - start) % step == 0)
        if token_indices.stop is not None:
            chosen &= positions < token_indices.stop
    elif isinstance(token_indices, Tensor):
        width = token_indices.shape[-1]
        inside = positions < width
        picked = token_indices[..., positions.clamp(max=max(width - 1, 0))] & inside
        if picked.dim() == 2 and picked.shape[0] != batch:
            raise TokenIndexError(
                f"token_indices mask has batch size {picked.shape[0]} but the input has {batch} rows."
            )
        chosen = picked.cpu()
    else:
        chosen = torch.isin(positions, torch.tensor(token_indices, dtype=torch.long))
    return (mask & chosen).expand(batch, length)
