"""The one prompt batcher: token lists in, padded batches (with their real lengths) out.

Training, sweeps and logit comparison all batch through :func:`iter_batches`, so
padding, the attention mask and "where is the last real token" are decided in
one place. Rows keep their index in the caller's list (``PromptBatch.indices``),
so callers can restore their order whatever the grouping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from steerlens.checks import check_batch_size, check_padding_side
from steerlens.tokens.encoding import PaddingSide, TokenBatch, pad_batch


@dataclass(frozen=True)
class PromptBatch:
    """Padded prompts ``indices`` (positions in the caller's list), on the model's device."""

    indices: list[int]
    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    padded: TokenBatch

    @property
    def last(self) -> Int[Tensor, "batch"]:
        """Column of each row's last real token."""
        cols = [self.padded.position(row, n - 1) for row, n in enumerate(self.padded.lengths)]
        return torch.tensor(cols, device=self.tokens.device)

    def column(self, row: int, index: int) -> int:
        """Column of token ``index`` (0..length-1) of ``row``."""
        return self.padded.position(row, index)


def iter_batches(
    encoded: Sequence[Sequence[int]],
    batch_size: int,
    pad_id: int,
    padding_side: PaddingSide,
    device: torch.device | str,
    longest_first: bool = False,
) -> Iterator[PromptBatch]:
    """Pad ``encoded`` token lists ``batch_size`` at a time.

    With ``longest_first`` the lists are grouped by length (longest first), so
    little compute goes to padding; otherwise they keep the caller's order.

    Example:
        >>> [b.indices for b in iter_batches([[1], [2, 3], [4]], 2, 0, "right", "cpu", longest_first=True)]
        [[1, 0], [2]]
    """
    check_batch_size(batch_size)
    check_padding_side(padding_side)
    order = list(range(len(encoded)))
    if longest_first:
        order.sort(key=lambda i: -len(encoded[i]))
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        padded = pad_batch([encoded[i] for i in indices], pad_id, padding_side)
        yield PromptBatch(indices, padded.tokens.to(device), padded.attention_mask.to(device), padded)
