"""Target tokens (answer letters, target words, completions) encoded in the context of their prompt.

A token's id depends on what precedes it. A SentencePiece (Metaspace) tokenizer
encodes ``"A"`` alone as ``▁A``, yet after ``"Answer: ("`` the text ``A`` is the
token ``A``; scoring ``▁A`` there reads the probability of a token the model would
never see. So a target is encoded the way it would really follow its prompt: the
ids of ``prompt + target`` past those of ``prompt`` alone. When the two
tokenizations disagree on the prompt's own tokens (the target merges with the
prompt's last token) there is no such id, and :class:`TargetTokenError` says so.

Example:
    >>> single_target_id(llama_tokenizer, "Answer: (", "A") == llama_tokenizer.convert_tokens_to_ids("A")
    True
"""

from __future__ import annotations

from typing import Any

from steerlens.errors import InvalidArgumentError, TargetTokenError
from steerlens.tokens.policy import PromptInput, as_token_ids, describe, text_ids


def context_text(tokenizer: Any, prompt: PromptInput) -> str:
    """The text a target follows: the prompt itself, or the decoded text of pre-tokenized ids.

    Decoded ids are accepted only when they encode back to the same ids (after a
    leading BOS), since a target's ids are read from the text.
    """
    ids = as_token_ids(prompt)
    if ids is None:
        return prompt  # type: ignore[return-value]
    bos = getattr(tokenizer, "bos_token_id", None)
    body = ids[1:] if ids and bos is not None and ids[0] == bos else ids
    text = tokenizer.decode(body)
    if text_ids(tokenizer, text) != body:
        raise TargetTokenError(
            f"prompt {describe(prompt)} is pre-tokenized and its decoded text {text[-40:]!r} does not encode "
            "back to the same ids, so target strings cannot be placed after it; pass the targets as token ids."
        )
    return text


def ids_in_context(tokenizer: Any, prompt: PromptInput, target: str) -> list[int]:
    """The ids ``target`` gets right after ``prompt``: tokens of ``prompt + target`` past the prompt's.

    Raises :class:`TargetTokenError` when ``target`` changes the prompt's own tokens
    (e.g. ``"(A"`` is one token, so ``"A"`` after ``"("`` has no id of its own) or adds none.

    Example:
        >>> llama_tokenizer.convert_ids_to_tokens(ids_in_context(llama_tokenizer, "Answer: (", "A"))
        ['A']
    """
    if not isinstance(target, str) or not target:
        raise InvalidArgumentError(f"a target must be a non-empty string or an int id, got {target!r}.")
    text = context_text(tokenizer, prompt)
    before = text_ids(tokenizer, text)
    after = text_ids(tokenizer, text + target)
    if after[: len(before)] != before:
        shared = next((i for i, (a, b) in enumerate(zip(before, after)) if a != b), min(len(before), len(after)))
        raise TargetTokenError(
            f"target {target!r} merges with the end of prompt {describe(prompt)}: the prompt ends in "
            f"{_pieces(tokenizer, before[shared:])} alone but {_pieces(tokenizer, after[shared:])} with the "
            "target, so the target has no token of its own there. End the prompt where a token ends (e.g. "
            "move a trailing space into the target: 'Answer:' + ' A'), or pass the target as a token id."
        )
    ids = after[len(before) :]
    if not ids:
        raise TargetTokenError(f"target {target!r} adds no token after prompt {describe(prompt)}; give it text.")
    return ids


def single_target_id(tokenizer: Any, prompt: PromptInput, target: str | int) -> int:
    """The one token ``target`` is after ``prompt`` (an int id is returned as it is).

    Raises :class:`TargetTokenError`, naming the target, the prompt and the fix, when
    the target is several tokens there: a next-token probability covers one token.

    Example:
        >>> single_target_id(tokenizer, "I thought the movie was", " good")
        504
    """
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    ids = ids_in_context(tokenizer, prompt, target)  # type: ignore[arg-type]
    if len(ids) != 1:
        raise TargetTokenError(
            f"target {target!r} is {len(ids)} tokens {_pieces(tokenizer, ids)} after prompt {describe(prompt)}, "
            "but a next-token score needs exactly one. Pick a one-token target in that context (check the "
            "leading space: ' good' vs 'good'), pass its token id, or score the whole string with "
            "steerlens.evaluation.continuation.continuation_logprob."
        )
    return ids[0]


def _pieces(tokenizer: Any, ids: list[int]) -> str:
    return str(tokenizer.convert_ids_to_tokens(ids)) if ids else "[]"
