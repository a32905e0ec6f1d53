"""Prompt tokenization and padding for batched activation reads.

Each prompt is tokenized on its own, exactly as ``model.to_tokens(prompt)`` would
(BOS convention included), then padded into a batch by us. Knowing every row's
real length lets us find the read position whatever the padding side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence, Union

import torch
from jaxtyping import Int
from torch import Tensor

from steerlens.errors import PromptTooLongError, TokenIndexError, TokenizerError

PaddingSide = Literal["left", "right"]
ReadIndex = Union[int, Callable[[str], int]]


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


def encode_prompt(model: Any, tokenizer: Any, prompt: str) -> list[int]:
    """Token ids of ``prompt`` for a HookedTransformer, with its BOS convention, never truncated.

    With the model's own tokenizer this is literally ``model.to_tokens``; another
    tokenizer gets the same convention: a BOS is added when the model expects one
    and the tokenizer does not add it, and removed in the opposite case.
    """
    if tokenizer is None or tokenizer is model.tokenizer:
        ids = _model_tokens(model, prompt)
    else:
        ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
        bos = tokenizer.bos_token_id
        has_bos = bool(ids) and bos is not None and ids[0] == bos
        if model.cfg.default_prepend_bos and not has_bos and bos is not None:
            ids = [bos] + ids
        elif not model.cfg.default_prepend_bos and has_bos:
            ids = ids[1:]
    return check_encoded(ids, prompt, model.cfg.n_ctx)


def encode_exact(tokenizer: Any, prompt: str, n_ctx: int | None) -> list[int]:
    """Token ids exactly as ``tokenizer(prompt)`` gives them (Hugging Face models), never truncated."""
    return check_encoded(list(tokenizer(prompt)["input_ids"]), prompt, n_ctx)


def check_encoded(ids: list[int], prompt: str, n_ctx: int | None) -> list[int]:
    """``ids`` if they are not empty and fit the context window ``n_ctx`` (None: no limit)."""
    if n_ctx is not None and len(ids) > n_ctx:
        raise PromptTooLongError(
            f"prompt {prompt[:60]!r}... has {len(ids)} tokens but the model's context is {n_ctx}; "
            "shorten the prompt."
        )
    if not ids:
        raise TokenIndexError(f"prompt {prompt!r} tokenizes to no tokens; give it some text.")
    return ids


def _model_tokens(model: Any, prompt: str) -> list[int]:
    """``model.to_tokens(prompt)`` as a list, also when the model's tokenizer has no pad token."""
    tok = model.tokenizer
    if tok is None or getattr(tok, "pad_token", None) is not None:
        return model.to_tokens(prompt, truncate=False, move_to_device=False)[0].tolist()
    # to_tokens always asks the tokenizer to pad, which fails without a pad token. One prompt
    # needs no padding, so repeat its BOS convention here instead of mutating the tokenizer.
    cfg = model.cfg
    text = tok.bos_token + prompt if cfg.default_prepend_bos and not cfg.tokenizer_prepends_bos else prompt
    ids = list(tok(text)["input_ids"])
    return ids[1:] if not cfg.default_prepend_bos and cfg.tokenizer_prepends_bos else ids


def pad_token_id(tok: Any) -> int:
    """Id used for padding. Its value never matters (padding is masked), so fall back to 0."""
    for candidate in (getattr(tok, "pad_token_id", None), getattr(tok, "eos_token_id", None)):
        if isinstance(candidate, int):
            return candidate
    return 0


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, padding_side: PaddingSide
) -> TokenBatch:
    """Pad token lists into one tensor, with a 1/0 attention mask."""
    width = max(len(s) for s in sequences)
    tokens = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if padding_side == "left" else slice(0, len(seq))
        tokens[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return TokenBatch(tokens, mask, tuple(len(s) for s in sequences), padding_side)


def resolve_read_index(index: ReadIndex, prompt: str, length: int) -> int:
    """Turn a read index (int, negative from the end, or callable on the prompt) into 0..length-1."""
    value = index(prompt) if callable(index) else index
    if isinstance(value, bool) or not isinstance(value, int):
        raise TokenIndexError(
            f"read_token_index must be an int or a callable returning an int, got {value!r}."
        )
    if not -length <= value < length:
        raise TokenIndexError(
            f"read_token_index {value} is outside prompt {prompt[:60]!r}, which has {length} tokens; "
            f"use an index in -{length}..{length - 1}."
        )
    return value % length
