"""Prompt tokenization and padding for batched activation reads.

Each prompt is tokenized on its own, by the one policy of :mod:`steerlens.tokens.policy`
(for ordinary text on a HookedTransformer exactly as ``model.to_tokens(prompt)``),
then padded into a batch by us. Knowing every row's real length lets us find the
read position whatever the padding side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence, Union

import torch
from jaxtyping import Int
from torch import Tensor

from steerlens.errors import TokenIndexError, TokenizerError
from steerlens.tokens.policy import PromptInput, describe

PaddingSide = Literal["left", "right"]
ReadIndex = Union[int, Callable[[Any], int]]


@dataclass(frozen=True)
class TokenBatch:
    """A padded batch of prompts plus what is needed to find real tokens in it."""

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    lengths: tuple[int, ...]
    padding_side: PaddingSide

    def position(self, row: int, index: int) -> int:
        """Column in the padded batch of token ``index`` of row ``row`` (index already in range)."""
        pad = self.tokens.shape[1] - self.lengths[row] if self.padding_side == "left" else 0
        return pad + index


def check_tokenizer_fits(model: Any, tokenizer: Any) -> None:
    """Refuse a tokenizer whose vocabulary cannot belong to the model."""
    if tokenizer is None:
        raise TokenizerError(
            "no tokenizer: the model has none attached and none was passed; pass tokenizer=... "
            "or attach one with model.set_tokenizer(tokenizer)."
        )
    vocab = len(tokenizer)
    d_vocab = model.cfg.d_vocab
    if vocab > d_vocab:
        raise TokenizerError(
            f"the tokenizer has {vocab} tokens but the model's vocabulary (d_vocab) is {d_vocab}; "
            "this tokenizer does not belong to this model. Pass the model's own tokenizer."
        )


def pad_token_id(tok: Any) -> int:
    """Id used for padding. Its value never matters (padding is masked), so fall back to 0."""
    for candidate in (getattr(tok, "pad_token_id", None), getattr(tok, "eos_token_id", None)):
        if isinstance(candidate, int):
            return candidate
    return 0


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, padding_side: PaddingSide) -> TokenBatch:
    """Pad token lists into one tensor, with a 1/0 attention mask."""
    width = max(len(s) for s in sequences)
    tokens = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if padding_side == "left" else slice(0, len(seq))
        tokens[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return TokenBatch(tokens, mask, tuple(len(s) for s in sequences), padding_side)


def resolve_read_index(index: ReadIndex, prompt: PromptInput, length: int) -> int:
    """Turn a read index (int, negative from the end, or callable on the prompt) into 0..length-1."""
    value = index(prompt) if callable(index) else index
    if isinstance(value, bool) or not isinstance(value, int):
        raise TokenIndexError(f"read_token_index must be an int or a callable returning an int, got {value!r}.")
    if not -length <= value < length:
        raise TokenIndexError(
            f"read_token_index {value} is outside prompt {describe(prompt)}, which has {length} tokens; "
            f"use an index in -{length}..{length - 1}."
        )
    return value % length
