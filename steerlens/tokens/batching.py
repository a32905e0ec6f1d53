"""The one prompt preparation and batcher: prompts in, padded batches (with their real lengths) out.

Every entry point that takes prompts (training, sweeps, comparisons, A/B items,
continuations, calibration, layer report, projections, residual norms, conditions)
goes through :func:`prepare_prompts`: the prompts are checked (strings or token ids,
:func:`~steerlens.tokens.inputs.check_prompt_inputs`), encoded by the model's one
tokenization policy with ``prepend_bos`` (:class:`~steerlens.tokens.policy.TokenPolicy`,
chat-template BOS rule included) and padded on one side; :meth:`PreparedPrompts.batches`
groups them by length through :func:`iter_batches`. So padding, the attention mask and
"where is the last real token" are decided in one place. Rows keep their index in the
caller's list (``PromptBatch.indices``), so callers can restore their order whatever
the grouping.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterator, Protocol, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from steerlens.checks import check_batch_size, check_padding_side
from steerlens.tokens.encoding import PaddingSide, TokenBatch, pad_batch
from steerlens.tokens.inputs import Prompts, check_prompt_inputs
from steerlens.tokens.policy import PromptInput, check_prepend_bos


@dataclass(frozen=True)
class PromptBatch:
    """Padded prompts ``indices`` (positions in the caller's list), on the model's device."""

    indices: list[int]
    tokens: Int[Tensor, "batch pos"]
    attention_mask: Int[Tensor, "batch pos"]
    padded: TokenBatch

    @property
    def last(self) -> Int[Tensor, "batch"]:
        """Column of each row's last real token."""
        cols = [self.padded.position(row, n - 1) for row, n in enumerate(self.padded.lengths)]
        return torch.tensor(cols, device=self.tokens.device)

    def column(self, row: int, index: int) -> int:
        """Column of token ``index`` (0..length-1) of ``row``."""
        return self.padded.position(row, index)


def iter_batches(
    encoded: Sequence[Sequence[int]],
    batch_size: int,
    pad_id: int,
    padding_side: PaddingSide,
    device: torch.device | str,
    longest_first: bool = False,
) -> Iterator[PromptBatch]:
    """Pad ``encoded`` token lists ``batch_size`` at a time.

    With ``longest_first`` the lists are grouped by length (longest first), so
    little compute goes to padding; otherwise they keep the caller's order.

    Example:
        >>> [b.indices for b in iter_batches([[1], [2, 3], [4]], 2, 0, "right", "cpu", longest_first=True)]
        [[1, 0], [2]]
    """
    check_batch_size(batch_size)
    check_padding_side(padding_side)
    order = list(range(len(encoded)))
    if longest_first:
        order.sort(key=lambda i: -len(encoded[i]))
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        padded = pad_batch([encoded[i] for i in indices], pad_id, padding_side)
        yield PromptBatch(indices, padded.tokens.to(device), padded.attention_mask.to(device), padded)


class PromptEncoder(Protocol):
    """What :func:`prepare_prompts` needs of a model (every :class:`~steerlens.backends.Backend` has it)."""

    default_padding_side: str

    @property
    def device(self) -> torch.device: ...

    @property
    def pad_id(self) -> int: ...

    def check_tokenizer(self) -> None: ...

    def encode(self, prompt: PromptInput, prepend_bos: bool | None = None) -> list[int]: ...


@dataclass(frozen=True)
class PreparedPrompts:
    """Checked prompts, their input ids, and how to pad them: ready to batch."""

    prompts: list[PromptInput]
    """The prompts as given (strings, or ids as lists), in the caller's order."""
    encoded: list[list[int]]
    """Each prompt's input ids under the model's tokenization policy."""
    pad_id: int
    padding_side: PaddingSide
    device: torch.device | str

    def __len__(self) -> int:
        return len(self.prompts)

    def with_ids(self, encoded: list[list[int]]) -> "PreparedPrompts":
        """The same prompts with other input ids (e.g. cut after each read token, or extended)."""
        return replace(self, encoded=encoded)

    def batches(self, batch_size: int, *, longest_first: bool = True) -> Iterator[PromptBatch]:
        """Padded batches of ``batch_size`` prompts, grouped by length (longest first) unless told otherwise."""
        return iter_batches(self.encoded, batch_size, self.pad_id, self.padding_side, self.device, longest_first)


def prepare_prompts(
    backend: PromptEncoder,
    prompts: Prompts,
    *,
    prepend_bos: bool | None = None,
    padding_side: PaddingSide | None = None,
) -> PreparedPrompts:
    """Check ``prompts`` (strings or token ids), encode them with ``prepend_bos``, choose the padding side.

    ``prepend_bos`` has TransformerLens' meaning (None: the model's default; see
    :class:`~steerlens.tokens.policy.TokenPolicy`); ``padding_side`` None is the
    model's default. Every error comes before any forward pass.

    Example:
        >>> prepared = prepare_prompts(backend_for(model), ["I think", [50256, 40]], prepend_bos=False)
        >>> [b.indices for b in prepared.batches(8)]
        [[0, 1]]
    """
    prompt_list = check_prompt_inputs(prompts)
    check_prepend_bos(prepend_bos)
    side = check_padding_side(padding_side or backend.default_padding_side)
    backend.check_tokenizer()
    encoded = [backend.encode(prompt, prepend_bos) for prompt in prompt_list]
    return PreparedPrompts(prompt_list, encoded, backend.pad_id, side, backend.device)  # type: ignore[arg-type]
