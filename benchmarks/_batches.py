"""Token batches for the benchmarks' plain-forward baselines (tokenized before any clock starts)."""

from __future__ import annotations

import torch

from steerlens.tokens.encoding import pad_batch


def unpadded_batches(seqs: list[list[int]], rows: int) -> list[torch.Tensor]:
    """Sequences of equal length together, at most ``rows`` a batch: the model's own work, no padding."""
    by_len: dict[int, list[list[int]]] = {}
    for seq in seqs:
        by_len.setdefault(len(seq), []).append(seq)
    return [
        torch.tensor(group[i : i + rows]) for _, group in sorted(by_len.items()) for i in range(0, len(group), rows)
    ]


def padded_batches(
    seqs: list[list[int]], rows: int, pad_id: int, side: str = "right"
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(tokens, attention_mask)`` batches of ``rows`` sequences in the given order, padded to their longest."""
    out = []
    for i in range(0, len(seqs), rows):
        batch = pad_batch(seqs[i : i + rows], pad_id, side)
        out.append((batch.tokens, batch.attention_mask))
    return out
