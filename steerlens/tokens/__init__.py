"""Stage 2, prompts to tokens: the one tokenization policy (BOS, chat templates, ids), targets
in context, padding and the one batcher.

Helpers the stages share (``encoding.pad_batch``, ``policy.check_encoded``, ``policy.describe``) are
imported from their modules; the errors are in :mod:`steerlens.errors`."""

from steerlens.tokens.batching import PreparedPrompts, PromptBatch, PromptEncoder, iter_batches, prepare_prompts
from steerlens.tokens.encoding import (
    PaddingSide,
    ReadIndex,
    TokenBatch,
    check_tokenizer_fits,
    pad_token_id,
    resolve_read_index,
)
from steerlens.tokens.inputs import Prompts, check_prompt_inputs
from steerlens.tokens.policy import (
    PromptInput,
    TokenPolicy,
    as_token_ids,
    check_prepend_bos,
    check_text,
    text_ids,
    tokenizer_prefix,
)
from steerlens.tokens.targets import context_text, ids_in_context, single_target_id

__all__ = [
    "PaddingSide",
    "PreparedPrompts",
    "PromptBatch",
    "PromptEncoder",
    "PromptInput",
    "Prompts",
    "ReadIndex",
    "TokenBatch",
    "TokenPolicy",
    "as_token_ids",
    "check_prepend_bos",
    "check_prompt_inputs",
    "check_text",
    "check_tokenizer_fits",
    "context_text",
    "ids_in_context",
    "iter_batches",
    "pad_token_id",
    "prepare_prompts",
    "resolve_read_index",
    "single_target_id",
    "text_ids",
    "tokenizer_prefix",
]
