"""The one tokenization policy: text, chat-template strings or token ids to a model's input ids.

Every entry point (training, sweeps, logit comparison, continuation scores,
generation, the CLI) encodes prompts through :class:`TokenPolicy`, so one rule
decides where a BOS goes. ``prepend_bos`` has TransformerLens' meaning:

* ``None``: the model's default. On a HookedTransformer that is
  ``cfg.default_prepend_bos``; on a Hugging Face model, whatever its tokenizer
  adds in front of the text (a Llama tokenizer adds ``<s>``, GPT-2's adds nothing).
* ``True`` / ``False``: add a BOS, or do not.

Whatever the setting, a prompt that already starts with the BOS (the BOS text, as
``tokenizer.apply_chat_template(..., tokenize=False)`` writes it, or the BOS id) is
never given a second one, and a BOS the prompt holds is never removed. Tokens a
tokenizer's post-processor appends *after* the text (an EOS) are dropped: a prompt
is text to be continued, and its last token is where steerlens reads.

Pre-tokenized prompts (lists or 1-D tensors of ids) are the model's input as they
are; only ``prepend_bos=True`` changes them, by adding a missing BOS.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence, Union

from torch import Tensor

from steerlens.checks import token_id_list
from steerlens.errors import InvalidArgumentError, PromptTooLongError, TokenIndexError, TokenizerError

PromptInput = Union[str, Sequence[int], Tensor]
"""A prompt: text (chat-template strings included) or token ids (a list or a 1-D tensor)."""


def as_token_ids(prompt: PromptInput) -> list[int] | None:
    """The ids of a pre-tokenized prompt as a list, or ``None`` when ``prompt`` is text.

    Example:
        >>> as_token_ids(torch.tensor([1, 5, 7])), as_token_ids("Hi")
        ([1, 5, 7], None)
    """
    if isinstance(prompt, str):
        return None
    ids = token_id_list(prompt)
    if ids is not None:
        return ids
    if isinstance(prompt, Tensor):
        raise InvalidArgumentError(
            f"a pre-tokenized prompt must be a 1-D integer tensor, got shape {tuple(prompt.shape)} "
            f"dtype {prompt.dtype}; pass one prompt per tensor (a list of tensors for several)."
        )
    raise InvalidArgumentError(
        f"a prompt must be a string or a list / 1-D tensor of token ids, got {type(prompt).__name__} {prompt!r:.80}."
    )


def describe(prompt: PromptInput) -> str:
    """A short printable form of a prompt, for error messages."""
    if not isinstance(prompt, str):
        ids = [int(i) for i in (prompt.tolist() if isinstance(prompt, Tensor) else prompt)]
        return f"token ids {ids[:12]}{'...' if len(ids) > 12 else ''}"
    return repr(prompt if len(prompt) <= 70 else prompt[:60] + "...")


def check_text(prompt: str) -> str:
    """``prompt`` unchanged if it is valid Unicode text, else :class:`InvalidArgumentError` naming it.

    A lone surrogate (``"\\ud800"``: half of a UTF-16 pair, left by a bad decode or a
    JSON ``\\ud800`` escape) has no UTF-8 form, so no tokenizer can encode it; caught here
    instead of as a tokenizer's ``TypeError`` deep inside a forward pass.

    Example:
        >>> check_text("Hi")
        'Hi'
    """
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidArgumentError(
            f"prompt {describe(prompt)} holds {prompt[error.start]!r} at character {error.start}, a lone surrogate "
            "(half of a UTF-16 pair) that no tokenizer can encode. Fix the text where it was decoded, or drop such "
            "characters with text.encode('utf-8', 'replace').decode('utf-8')."
        ) from None
    return prompt


def check_encoded(ids: list[int], prompt: PromptInput, n_ctx: int | None) -> list[int]:
    """``ids`` if they are not empty and fit the context window ``n_ctx`` (None: no limit)."""
    if n_ctx is not None and len(ids) > n_ctx:
        raise PromptTooLongError(
            f"prompt {describe(prompt)} has {len(ids)} tokens but the model's context is {n_ctx}; shorten the prompt."
        )
    if not ids:
        raise TokenIndexError(f"prompt {describe(prompt)} tokenizes to no tokens; give it some text.")
    return ids


def text_ids(tokenizer: Any, text: str) -> list[int]:
    """Ids of ``text`` with nothing added: no BOS, no EOS, special-token text (``<s>``) kept as its token.

    Example:
        >>> text_ids(llama_tokenizer, "<s>[INST] Hi [/INST]")[0] == llama_tokenizer.bos_token_id
        True
    """
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    bos_text, bos = getattr(tokenizer, "bos_token", None), getattr(tokenizer, "bos_token_id", None)
    # A tokenizer that splits special tokens reads "<s>" as characters; the text still means BOS.
    if bos_text and bos is not None and text.startswith(bos_text) and (not ids or ids[0] != bos):
        ids = [bos] + list(tokenizer(text[len(bos_text) :], add_special_tokens=False)["input_ids"])
    return ids


def tokenizer_prefix(tokenizer: Any, text: str) -> list[int]:
    """The ids the tokenizer itself puts in front of ``text`` (its BOS, if it adds one).

    Found by comparing ``tokenizer(text)`` with the text's own ids, so it holds for
    post-processors (``TemplateProcessing``) and ``add_bos_token`` flags alike.
    """
    full = list(tokenizer(text)["input_ids"])
    body = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    for start in range(len(full) - len(body) + 1):
        if full[start : start + len(body)] == body:
            return full[:start]
    # Special tokens changed the text's own tokens: keep the leading special ones.
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    prefix = []
    for token in full:
        if token not in special:
            break
        prefix.append(token)
    return prefix


@dataclass(frozen=True)
class TokenPolicy:
    """How one model turns prompts into input ids.

    ``default_prepend_bos`` is the model's default: a bool on a HookedTransformer,
    ``None`` on a Hugging Face model (the tokenizer decides). ``n_ctx`` is the
    context window (``None``: no limit).

    Example:
        >>> policy = TokenPolicy.for_hooked_transformer(model)
        >>> policy.encode("The film was") == model.to_tokens("The film was")[0].tolist()
        True
        >>> policy.encode(model.tokenizer.bos_token + "The film was") == policy.encode("The film was")
        True
    """

    tokenizer: Any
    default_prepend_bos: bool | None = None
    n_ctx: int | None = None

    @classmethod
    def for_hooked_transformer(cls, model: Any, tokenizer: Any = None) -> "TokenPolicy":
        """TransformerLens' convention: a BOS iff ``model.cfg.default_prepend_bos``."""
        tok = tokenizer if tokenizer is not None else model.tokenizer
        return cls(tok, bool(model.cfg.default_prepend_bos), int(model.cfg.n_ctx))

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, n_ctx: int | None = None) -> "TokenPolicy":
        """A Hugging Face model's convention: what ``tokenizer`` adds in front of the text."""
        return cls(tokenizer, None, n_ctx)

    @property
    def bos_id(self) -> int | None:
        bos = getattr(self.tokenizer, "bos_token_id", None)
        return bos if isinstance(bos, int) else None

    def starts_with_bos(self, ids: Sequence[int]) -> bool:
        return bool(ids) and self.bos_id is not None and ids[0] == self.bos_id

    def encode(self, prompt: PromptInput, prepend_bos: bool | None = None) -> list[int]:
        """Input ids of ``prompt`` under this policy (see the module docstring), never truncated.

        Raises ``PromptTooLongError`` past the context window, ``TokenIndexError`` when
        nothing is left, ``TokenizerError`` for ``prepend_bos=True`` without a BOS token.
        """
        check_prepend_bos(prepend_bos)
        ids = as_token_ids(prompt)
        if ids is not None:
            prefix = self._bos(explicit=True) if prepend_bos and not self.starts_with_bos(ids) else []
            return check_encoded(prefix + ids, ids, self.n_ctx)
        body = text_ids(self.tokenizer, check_text(prompt))  # type: ignore[arg-type]
        want = self.default_prepend_bos if prepend_bos is None else prepend_bos
        if self.starts_with_bos(body) or want is False:
            prefix = []
        elif want is None:  # a Hugging Face model's default: its tokenizer's own choice
            prefix = tokenizer_prefix(self.tokenizer, prompt)  # type: ignore[arg-type]
        else:
            prefix = self._bos(explicit=prepend_bos is True)
        return check_encoded(prefix + body, prompt, self.n_ctx)

    def _bos(self, explicit: bool) -> list[int]:
        if self.bos_id is not None:
            return [self.bos_id]
        if explicit:
            raise TokenizerError(
                "prepend_bos=True but the tokenizer has no BOS token; pass prepend_bos=False (or None), "
                "or give the tokenizer a bos_token."
            )
        return []  # TransformerLens' default on a tokenizer without BOS: nothing to add


def check_prepend_bos(prepend_bos: object) -> bool | None:
    """``prepend_bos`` if it is ``None``, ``True`` or ``False``."""
    if prepend_bos is not None and not isinstance(prepend_bos, bool):
        raise InvalidArgumentError(f"prepend_bos must be None, True or False, got {prepend_bos!r}.")
    return prepend_bos
