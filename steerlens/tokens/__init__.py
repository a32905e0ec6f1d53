"""Stage 2, prompts to tokens: each model's BOS convention, padding and the one batcher."""

from steerlens.tokens.batching import PromptBatch, iter_batches
from steerlens.tokens.encoding import (
    PaddingSide,
    ReadIndex,
    TokenBatch,
    check_tokenizer_fits,
    check_encoded,
    encode_exact,
    encode_prompt,
    pad_batch,
    pad_token_id,
    resolve_read_index,
)

__all__ = [
    "PaddingSide",
    "PromptBatch",
    "ReadIndex",
    "TokenBatch",
    "check_tokenizer_fits",
    "check_encoded",
    "encode_exact",
    "encode_prompt",
    "iter_batches",
    "pad_batch",
    "pad_token_id",
    "resolve_read_index",
]
