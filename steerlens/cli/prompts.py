"""Prompts and pairs as the model sees them on the command line: as written, or in its chat template.

``--chat`` puts each prompt in the model's own chat template as the user's turn, followed by the
template's generation prompt (:func:`steerlens.samples.chat.chat_prompt`), so a vector trained or
evaluated from the command line sees what a chat model sees when it answers. Message lists read
from a ``.jsonl`` prompts file are always rendered with the template. Files are read before the
model loads (their errors come first); the texts are rendered once the tokenizer is known.
"""

from __future__ import annotations

from typing import Any, Sequence

from steerlens.errors import InvalidArgumentError
from steerlens.formats.pairs import Pair, PromptedPair, PromptItem

CHAT_MODEL_EXAMPLE = "smollm2-135m-instruct"


def chat_tokenizer(model: Any, model_name: str, why: str, fix: str = "drop --chat") -> Any:
    """The model's tokenizer when it has a chat template; else one error saying ``why`` it was needed and the fix.

    Example:
        >>> chat_tokenizer(model, "smollm2-135m-instruct", "--chat wraps each prompt in the chat template")
    """
    from steerlens.backends import backend_for

    tokenizer = backend_for(model).tokenizer
    if getattr(tokenizer, "chat_template", None) is None:
        raise InvalidArgumentError(
            f"{why}, but --model {model_name} has no chat template; {fix}, or use a chat model "
            f"(e.g. --model {CHAT_MODEL_EXAMPLE})."
        )
    return tokenizer


def render_prompts(
    model: Any, prompts: Sequence[PromptItem], *, chat: bool, model_name: str, source: str = "the prompts file"
) -> list[str]:
    """Each prompt as the model receives it: a string as written (in a user turn with ``chat``), a message
    list rendered with the chat template; both end in the template's generation prompt.

    Example:
        >>> render_prompts(model, ["Hi", [{"role": "user", "content": "Hi"}]], chat=True, model_name="m")
        ['<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n', ...]
    """
    from steerlens.samples.chat import chat_prompt

    if chat:
        tokenizer = chat_tokenizer(model, model_name, "--chat wraps each prompt in the chat template")
    elif any(not isinstance(p, str) for p in prompts):
        tokenizer = chat_tokenizer(
            model,
            model_name,
            f"{source} holds message lists, which are rendered with the model's chat template",
            fix="write plain prompts (JSON strings, or a .txt file)",
        )
    else:
        return [str(p) for p in prompts]
    rendered = []
    for prompt in prompts:
        if isinstance(prompt, str):
            rendered.append(chat_prompt(tokenizer, prompt) if chat else prompt)
        else:
            rendered.append(chat_prompt(tokenizer, prompt[-1]["content"], history=prompt[:-1]))
    return rendered


def render_pairs(model: Any, pairs: Sequence[PromptedPair], *, chat: bool, model_name: str) -> list[Pair]:
    """The ``(positive, negative)`` texts of each pair. Without ``chat``: ``prompt + text`` as written. With
    ``chat``: a pair with a prompt has it as the user's turn and each text as the assistant's reply after the
    generation prompt; a pair without one has each text as a user turn of its own (read at the end of the
    generation prompt, where the model is about to answer it).

    Example:
        >>> render_pairs(model, [PromptedPair("Gladly!", "No.", "Help me?")], chat=True, model_name="m")
        [('<|im_start|>user\\nHelp me?<|im_end|>\\n<|im_start|>assistant\\nGladly!', '...assistant\\nNo.')]
    """
    from steerlens.samples.chat import chat_prompt

    if not chat:
        return [pair.texts() for pair in pairs]
    tokenizer = chat_tokenizer(model, model_name, "--chat wraps each pair in the chat template")
    out = []
    for pair in pairs:
        if pair.prompt is None:
            out.append((chat_prompt(tokenizer, pair.positive), chat_prompt(tokenizer, pair.negative)))
        else:
            start = chat_prompt(tokenizer, pair.prompt)
            out.append((start + pair.positive, start + pair.negative))
    return out
