"""How much of the next-token probability goes to each group of a concept's words.

For prompts whose next word is naturally a word of the concept (see
:func:`steerlens.datasets.neutral_prompts`), the *concept mass* of a group is the
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

from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens._tl import HookedTransformer
from steerlens.errors import InvalidArgumentError
from steerlens.toy.datasets import Concept, concept_words


def first_token_ids(model: HookedTransformer, words: Sequence[str]) -> list[int]:
    """The id of the first token of each word (no BOS)."""
    return [model.tokenizer.encode(w, add_special_tokens=False)[0] for w in words]


@torch.no_grad()
def next_token_probs(
    model: HookedTransformer, prompts: Sequence[str], batch_size: int = 32
) -> Float[Tensor, "n_prompts d_vocab"]:
    """Next-token probabilities after the last token of each prompt (float32, on CPU)."""
    if isinstance(prompts, str) or not prompts:
        raise InvalidArgumentError("prompts must be a non-empty list of strings.")
    out = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        lengths = torch.tensor([model.to_tokens(p).shape[1] for p in chunk])
        # Right padding leaves the real tokens untouched under causal attention.
        tokens = model.to_tokens(chunk, padding_side="right")
        logits = model(tokens, return_type="logits")
        last = logits[torch.arange(len(chunk)), lengths.to(logits.device) - 1]
        out.append(torch.softmax(last.float(), dim=-1).cpu())
    return torch.cat(out)


def group_mass(
    model: HookedTransformer, prompts: Sequence[str], groups: dict[str, Sequence[str]]
) -> Float[Tensor, "n_prompts n_groups"]:
    """Next-token probability of each word group, renormalised over the groups (rows sum to 1)."""
    probs = next_token_probs(model, prompts)
    mass = torch.stack([probs[:, first_token_ids(model, words)].sum(-1) for words in groups.values()], -1)
    return mass / mass.sum(-1, keepdim=True)


def concept_mass(
    model: HookedTransformer, prompts: Sequence[str], concept: Concept
) -> Float[Tensor, "n_prompts n_groups"]:
    """:func:`group_mass` over the groups of ``concept``, in the order of ``concept_words(concept)``.

    Example:
        >>> concept_mass(model, neutral_prompts("topic"), "topic").mean(0)  # film, food, travel
        tensor([0.33, 0.34, 0.33])
    """
    return group_mass(model, prompts, concept_words(concept))


def positive_mass(model: HookedTransformer, prompts: Sequence[str]) -> Float[Tensor, "n_prompts"]:
    """P(positive) / (P(positive) + P(negative)) over the sentiment words, per prompt."""
    return concept_mass(model, prompts, "sentiment")[:, 0]


def total_variation(p: Tensor, q: Tensor) -> Tensor:
    """Total variation distance ``0.5 * sum |p - q|`` between distributions on the last axis."""
    return 0.5 * (p - q).abs().sum(-1)
