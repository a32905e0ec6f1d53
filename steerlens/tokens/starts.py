"""Where steering starts in each prompt: everywhere, from a position, or from the answer on (CAA).

Contrastive activation addition steers the model's answer, not the question: the
vector is added from the assistant's turn on. ``steer_from`` says where, per prompt:

* ``None``: from position 0 (every token);
* an ``int``: from that absolute position in every prompt;
* a sequence of ints: one position per prompt;
* ``"answer"``: from the first token after the last assistant-turn header of the
  tokenizer's chat template (``<|im_start|>assistant\\n``), found by rendering the
  template with and without ``add_generation_prompt`` (the last token when the prompt
  ends with the header: the one that predicts the answer);
* ``"last"``: from each prompt's last token (the one whose next-token prediction is read).

Positions count from each row's first real token, as every steering position does.
"""

from __future__ import annotations

from typing import Any, Sequence, Union

from steerlens.errors import InvalidArgumentError, TokenizerError
from steerlens.tokens.policy import describe, text_ids

SteerFrom = Union[None, int, Sequence[int], str]
"""``None``, an int, one int per prompt, ``"answer"`` or ``"last"`` (see the module docstring)."""


def steer_starts(tokenizer: Any, encoded: Sequence[Sequence[int]], steer_from: SteerFrom) -> list[int] | None:
    """The position each prompt's steering starts at (None: position 0 everywhere, nothing to mask).

    Example:
        >>> steer_starts(tok, [tok("<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n")["input_ids"]],
        ...              "answer")
        [9]
    """
    if steer_from is None:
        return None
    if isinstance(steer_from, str):
        if steer_from == "last":
            return [len(ids) - 1 for ids in encoded]
        if steer_from == "answer":
            header = assistant_header(tokenizer)
            return [_after_last(ids, header) for ids in encoded]
        raise InvalidArgumentError(
            f"steer_from={steer_from!r} is not known; use None, an int, one int per prompt, 'answer' or 'last'."
        )
    if isinstance(steer_from, bool) or not isinstance(steer_from, (int, Sequence)):
        raise InvalidArgumentError(
            f"steer_from must be None, an int, a sequence of ints, 'answer' or 'last', got {type(steer_from).__name__}."
        )
    starts = [steer_from] * len(encoded) if isinstance(steer_from, int) else list(steer_from)
    if len(starts) != len(encoded):
        raise InvalidArgumentError(f"steer_from has {len(starts)} positions but there are {len(encoded)} prompts.")
    for start in starts:
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise InvalidArgumentError(f"steer_from positions must be non-negative ints, got {start!r}.")
    return starts


def assistant_header(tokenizer: Any) -> list[int]:
    """The token ids the chat template writes to open the assistant's turn (``add_generation_prompt``)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise TokenizerError(
            "steer_from='answer' needs a tokenizer with a chat template (to find where the assistant's turn "
            "starts); pass steer_from='last' or the positions themselves."
        )
    messages = [{"role": "user", "content": "x"}]
    with_header = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    without = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    if not with_header.startswith(without) or with_header == without:
        raise TokenizerError(
            "this chat template writes no separate assistant header, so steer_from='answer' cannot find the "
            "answer; pass steer_from='last' or the positions themselves."
        )
    return text_ids(tokenizer, with_header[len(without) :])


def _after_last(ids: Sequence[int], header: list[int]) -> int:
    """The position right after the last occurrence of ``header`` in ``ids``."""
    for start in range(len(ids) - len(header), -1, -1):
        if list(ids[start : start + len(header)]) == header:
            return min(start + len(header), len(ids) - 1)
    raise InvalidArgumentError(
        f"prompt {describe(list(ids))} has no assistant header {header} (the chat template's "
        "add_generation_prompt); render prompts with chat_prompt(...) or caa_items(...), or pass "
        "steer_from='last' or the positions themselves."
    )
