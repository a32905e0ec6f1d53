"""Which token positions a steering hook touches.

Positions are absolute indices in each row's own sequence (prompt plus generated
tokens), counted from the row's first real token: a left-padded row has the positions
its prompt has alone. ``token_indices`` choose real tokens only: a padding column (on
either side) is never steered by them, whatever position it would inherit. During generation with a KV cache each forward pass sees only
the new tokens; :class:`PassPositions`, filled in by the backend before every pass,
says where its columns sit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from steerlens.errors import TokenIndexError

TokenIndices = Union[list[int], slice, Tensor, None]
"""Positions to steer: a list of absolute positions, a slice, or a mask tensor (bool or 0/1)."""


def check_token_indices(min_token_index: int | Tensor, token_indices: TokenIndices) -> TokenIndices:
    """Validate position arguments up front, so a bad value fails before any forward pass.

    ``min_token_index`` is an int, or (inside steerlens' measuring functions) a 1-D
    integer tensor with one start per row of the batch.
    """
    if isinstance(min_token_index, Tensor):
        if min_token_index.dim() != 1 or min_token_index.dtype.is_floating_point or (min_token_index < 0).any():
            raise TokenIndexError("a per-row min_token_index must be a 1-D tensor of non-negative ints.")
    elif isinstance(min_token_index, bool) or not isinstance(min_token_index, int) or min_token_index < 0:
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
                f"a token_indices mask must be [pos] or [batch, pos], got shape {tuple(token_indices.shape)}."
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


@dataclass
class PassPositions:
    """Where the columns of one forward pass sit in each row's own sequence.

    A backend's pre-hook fills it in before every pass from what the model is called
    with, never from keyword names of a library's internals: ``past`` (tokens already in
    the KV cache), ``position_ids`` (as the model was given them) and ``attention_mask``
    (1 = real token; ``[batch, past + width]`` during cached generation, or just this pass's columns).

    Positions count from each row's first real token, so on a left-padded batch a row's
    positions are the ones the same prompt has alone; padding columns get -1 (from the
    mask) or whatever the caller's ``position_ids`` say, which never matters: no real
    token attends to them.
    """

    past: int = 0
    position_ids: Tensor | None = None
    attention_mask: Tensor | None = None

    def update(self, other: "PassPositions") -> None:
        """Take ``other``'s values in place (hooks holding this object see the new pass)."""
        self.past, self.position_ids, self.attention_mask = other.past, other.position_ids, other.attention_mask

    def rows(self, batch: int, width: int) -> Int[Tensor, "batch width"]:
        """The absolute position of every column of a ``[batch, width]`` pass, per row."""
        ids = self.position_ids
        if isinstance(ids, Tensor) and ids.dim() == 2 and ids.shape[-1] == width and ids.shape[0] in (1, batch):
            return ids.long().expand(batch, width)
        mask = self.attention_mask
        if isinstance(mask, Tensor) and mask.dim() == 2 and mask.shape[0] == batch:
            if mask.shape[-1] > width:  # the whole sequence's mask, cached tokens included
                return (mask.long().cumsum(-1) - 1)[:, -width:]
            if mask.shape[-1] == width:  # this pass's columns only, after `past` real tokens
                return mask.long().cumsum(-1) - 1 + self.past
        return torch.arange(self.past, self.past + width).expand(batch, width)

    def real(self, batch: int, width: int) -> Bool[Tensor, "batch width"] | None:
        """Which columns of the pass hold real tokens (None: no 2-D mask was given, all of them)."""
        mask = self.attention_mask
        if isinstance(mask, Tensor) and mask.dim() == 2 and mask.shape[0] == batch and mask.shape[-1] >= width:
            return mask[:, -width:].bool()
        return None

    def starts_sequence(self, batch: int, width: int) -> bool:
        """True on a pass that begins new sequences (a prompt), false on a KV-cache step."""
        if self.past:
            return False
        return bool(self.rows(batch, width)[:, 0].min() <= 0)


def position_mask(
    positions: PassPositions, batch: int, width: int, min_token_index: int | Tensor, token_indices: TokenIndices
) -> Bool[Tensor, "batch pos"] | None:
    """Mask of the ``[batch, width]`` columns of one pass to steer, or None for all of them."""
    per_row = isinstance(min_token_index, Tensor)
    if not per_row and min_token_index == 0 and token_indices is None:
        return None
    rows = positions.rows(batch, width).cpu()
    if per_row:
        if min_token_index.shape[0] != batch:
            raise TokenIndexError(f"{min_token_index.shape[0]} per-row starts for a batch of {batch} rows.")
        mask = rows >= min_token_index.cpu()[:, None]
    else:
        mask = rows >= min_token_index
    if token_indices is None:
        return mask
    if isinstance(token_indices, slice):
        start = token_indices.start or 0
        step = token_indices.step or 1
        chosen = (rows >= start) & ((rows - start) % step == 0)
        if token_indices.stop is not None:
            chosen &= rows < token_indices.stop
    elif isinstance(token_indices, Tensor):
        chosen = _mask_at(token_indices.cpu(), rows)
    else:
        chosen = torch.isin(rows, torch.tensor(token_indices, dtype=torch.long))
    # A padding column shares a real token's position (right padding repeats the last one):
    # chosen positions are real tokens only, on either padding side, as steering-vectors' masks.
    real = positions.real(batch, width)
    if real is not None:
        chosen &= real.cpu()
    return mask & chosen


def _mask_at(picked: Bool[Tensor, "*batch n"], rows: Int[Tensor, "batch width"]) -> Bool[Tensor, "batch width"]:
    """A position mask looked up at each row's positions (padding columns, position < 0: False)."""
    batch, width = rows.shape
    if picked.dim() == 2 and picked.shape[0] != batch:
        raise TokenIndexError(f"token_indices mask has batch size {picked.shape[0]} but the input has {batch} rows.")
    real = rows >= 0
    furthest = int(rows[real].max()) if real.any() else -1
    if furthest >= picked.shape[-1]:
        raise TokenIndexError(
            f"the token_indices mask covers {picked.shape[-1]} positions but the model runs position {furthest}; "
            "make the mask as wide as the longest sequence (prompt plus generated tokens), or pass "
            "positions as a list or slice, which need no width."
        )
    picked = picked.expand(batch, picked.shape[-1])
    return picked.gather(1, rows.clamp(min=0)) & real
