"""Where a chat model's reply ends: its EOS and the end-of-turn token its own chat template writes.

A chat model ends its turn with the token its template puts after an assistant message.
That is often the tokenizer's EOS (SmolLM2's ``<|im_end|>``, Llama-2's ``</s>``) but not
always: Gemma's ``<end_of_turn>`` and Phi-3's ``<|end|>`` are not their tokenizer's EOS.
A Hugging Face model's generation config usually lists both; TransformerLens'
``generate`` stops at the tokenizer's EOS only unless given ``eos_token_id=[...]``, so a
generation there runs past the end of the turn into text the template never meant as
the reply. :func:`end_of_turn_ids` reads the end-of-turn token from the template itself.
"""

from __future__ import annotations

from typing import Any

_MARK = "Hello"
"""The assistant message rendered to find what the template writes after a reply."""


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """The ids that end a reply: the tokenizer's EOS, then the template's end-of-turn token if it differs.

    The end-of-turn token is the special token the tokenizer's chat template writes
    right after an assistant message (whitespace between them skipped). A tokenizer
    without a template, a template that fails on a plain user/assistant exchange, or
    one that ends a turn with ordinary text gives the EOS alone (or ``[]`` with no EOS).

    Example:
        >>> end_of_turn_ids(gemma_tokenizer)  # [<eos>, <end_of_turn>]
        [1, 107]
    """
    ids = [] if getattr(tokenizer, "eos_token_id", None) is None else [int(tokenizer.eos_token_id)]
    turn = _template_turn_end(tokenizer)
    if turn is not None and turn not in ids:
        ids.append(turn)
    return ids


def _template_turn_end(tokenizer: Any) -> int | None:
    """The special token the chat template writes after an assistant message, if any."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _MARK}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # templates raise whatever they like (jinja errors, ValueError) on exchanges they refuse
        return None
    if not isinstance(text, str) or _MARK not in text:
        return None
    tail = text[text.rindex(_MARK) + len(_MARK) :].lstrip()
    if not tail:
        return None
    first = tokenizer(tail, add_special_tokens=False)["input_ids"][:1]
    return first[0] if first and first[0] in _special_ids(tokenizer) else None


def _special_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's special tokens: the named ones and added tokens marked special."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    for token_id, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            special.add(int(token_id))
    return special


__all__ = ["end_of_turn_ids"]
