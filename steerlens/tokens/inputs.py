"""Lists of prompts as every entry point accepts them: text, chat-template strings or token ids."""

from __future__ import annotations

from typing import Iterable, Union

from torch import Tensor

from steerlens.errors import InvalidArgumentError
from steerlens.tokens.policy import PromptInput, as_token_ids, check_text

Prompts = Union[PromptInput, Iterable[PromptInput]]
"""One prompt (a string, a list or 1-D tensor of ids) or several."""


def check_prompt_inputs(prompts: Prompts) -> list[str | list[int]]:
    """A non-empty list of prompts, each a non-empty string or a non-empty list of ids.

    One string, one list of ints or one 1-D tensor counts as one prompt; tensors
    become lists.

    Example:
        >>> check_prompt_inputs("Hi"), check_prompt_inputs([1, 2]), check_prompt_inputs(["Hi", torch.tensor([1, 2])])
        (['Hi'], [[1, 2]], ['Hi', [1, 2]])
    """
    if isinstance(prompts, str) or (isinstance(prompts, Tensor) and prompts.dim() == 1):
        listed: list = [prompts]
    elif isinstance(prompts, Tensor):
        raise InvalidArgumentError(
            f"prompts is a tensor of shape {tuple(prompts.shape)}; pass a list of 1-D tensors or id lists "
            "(rows of a padded batch would include their padding)."
        )
    elif isinstance(prompts, (list, tuple)) and prompts and all(_is_int(i) for i in prompts):
        listed = [list(prompts)]
    else:
        listed = list(prompts)
    if not listed:
        raise InvalidArgumentError("no prompts given; pass at least one prompt string.")
    out: list[str | list[int]] = []
    for prompt in listed:
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidArgumentError(f"prompts must be non-empty strings or token-id lists, got {prompt!r}.")
            out.append(check_text(prompt))
            continue
        try:
            ids = as_token_ids(prompt)
        except InvalidArgumentError:
            raise InvalidArgumentError(
                f"prompts must be non-empty strings or token-id lists, got {prompt!r:.80}."
            ) from None
        if not ids:
            raise InvalidArgumentError("a pre-tokenized prompt is empty; give it at least one token id.")
        out.append(ids)  # type: ignore[arg-type]
    return out


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
