"""How much of the next-token probability goes to each group of a concept's words.

For prompts whose next word is naturally a word of the concept (see
:func:`steerlens.toy.neutral_prompts`), the *concept mass* of a group is the
summed next-token probability of its words, renormalised over the concept's
groups. For sentiment, the first column is the **positive mass**::

    P(positive words) / (P(positive words) + P(negative words))

at the position after each prompt's last token. Renormalising makes it independent
of how much mass goes to words outside the concept ("very", "really", ...). A word
counts through its first token (every measuring word of the toy model is one token).
Steering hooks active on the model (``model.hooks(...)``, ``vec.apply(...)``) apply.

Example:
    >>> model = load_toy_model()
    >>> positive_mass(model, neutral_prompts("sentiment")).mean()
    tensor(0.49)
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.backends import backend_for
from steerlens.checks import check_batch_size
from steerlens.tokens import Prompts, prepare_prompts
from steerlens.toy.datasets import Concept, concept_words


def first_token_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """The id of the first token of each word (no BOS)."""
    return [tokenizer.encode(w, add_special_tokens=False)[0] for w in words]


@torch.no_grad()
def next_token_probs(
    model: Any,
    prompts: Prompts,
    batch_size: int = 32,
    *,
    tokenizer: Any = None,
    prepend_bos: bool | None = None,
) -> Float[Tensor, "n_prompts d_vocab"]:
    """Next-token probabilities after the last token of each prompt (float32, on CPU, in prompt order).

    Prompts go through the library's one preparation (text or token ids, ``prepend_bos``,
    length-grouped batches), on any model kind.
    """
    backend = backend_for(model, tokenizer)
    out: dict[int, Tensor] = {}
    for batch in prepare_prompts(backend, prompts, prepend_bos=prepend_bos).batches(check_batch_size(batch_size)):
        logits = backend.head(backend.sweep_pass(batch, [], "resid_post").clean)
        for index, row in zip(batch.indices, torch.softmax(logits.float(), dim=-1).cpu()):
            out[index] = row
    return torch.stack([out[i] for i in range(len(out))])


def group_mass(
    model: Any,
    prompts: Prompts,
    groups: dict[str, Sequence[str]],
    *,
    tokenizer: Any = None,
    batch_size: int = 32,
    prepend_bos: bool | None = None,
) -> Float[Tensor, "n_prompts n_groups"]:
    """Next-token probability of each word group, renormalised over the groups (rows sum to 1)."""
    probs = next_token_probs(model, prompts, batch_size, tokenizer=tokenizer, prepend_bos=prepend_bos)
    tok = backend_for(model, tokenizer).tokenizer
    mass = torch.stack([probs[:, first_token_ids(tok, words)].sum(-1) for words in groups.values()], -1)
    return mass / mass.sum(-1, keepdim=True)


def concept_mass(
    model: Any,
    prompts: Prompts,
    concept: Concept,
    *,
    tokenizer: Any = None,
    batch_size: int = 32,
    prepend_bos: bool | None = None,
) -> Float[Tensor, "n_prompts n_groups"]:
    """:func:`group_mass` over the groups of ``concept``, in the order of ``concept_words(concept)``.

    Example:
        >>> concept_mass(model, neutral_prompts("topic"), "topic").mean(0)  # film, food, travel
        tensor([0.33, 0.34, 0.33])
    """
    return group_mass(
        model, prompts, concept_words(concept), tokenizer=tokenizer, batch_size=batch_size, prepend_bos=prepend_bos
    )


def positive_mass(
    model: Any,
    prompts: Prompts,
    *,
    tokenizer: Any = None,
    batch_size: int = 32,
    prepend_bos: bool | None = None,
) -> Float[Tensor, "n_prompts"]:
    """P(positive) / (P(positive) + P(negative)) over the sentiment words, per prompt."""
    return concept_mass(
        model, prompts, "sentiment", tokenizer=tokenizer, batch_size=batch_size, prepend_bos=prepend_bos
    )[:, 0]


def total_variation(p: Tensor, q: Tensor) -> Tensor:
    """Total variation distance ``0.5 * sum |p - q|`` between distributions on the last axis."""
    return 0.5 * (p - q).abs().sum(-1)
