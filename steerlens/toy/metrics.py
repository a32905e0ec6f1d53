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
from typing_extensions import Unpack

from steerlens.settings import PROMPT_READING, Run, SettingsKeywords, folded, open_run
from steerlens.tokens import Prompts
from steerlens.toy.datasets import Concept, concept_words

BATCH_SIZE = 32
"""Prompts per forward pass unless a call says otherwise."""


def first_token_ids(tokenizer: Any, words: Sequence[str]) -> list[int]:
    """The id of the first token of each word (no BOS)."""
    return [tokenizer.encode(w, add_special_tokens=False)[0] for w in words]


def next_token_probs(
    model: Any,
    prompts: Prompts,
    batch_size: int = BATCH_SIZE,
    **settings: Unpack[SettingsKeywords],
) -> Float[Tensor, "n_prompts d_vocab"]:
    """Next-token probabilities after the last token of each prompt (float32, on CPU, in prompt order).

    Prompts go through the library's one preparation (text or token ids, ``prepend_bos``,
    length-grouped batches), on any model kind. ``settings``: :class:`~steerlens.settings.Settings`
    fields by name (``tokenizer``, ``padding_side``, ``prepend_bos``) or ``settings=``, see
    :mod:`steerlens.settings`; ``batch_size`` other than 32 wins over ``settings=``'s, at 32 it takes its.

    Example:
        >>> next_token_probs(load_toy_model(), ["The film was"]).shape
        torch.Size([1, 1000])
    """
    keywords = folded(settings, {"batch_size": BATCH_SIZE}, batch_size=batch_size)
    run = open_run(model, keywords, "next_token_probs", PROMPT_READING, batch_size=BATCH_SIZE)
    return probs_on(run, prompts)


@torch.no_grad()
def probs_on(run: Run, prompts: Prompts) -> Float[Tensor, "n_prompts d_vocab"]:
    """:func:`next_token_probs` on ``run``'s model, prompts read and batched as its settings say."""
    backend = run.backend
    out: dict[int, Tensor] = {}
    for batch in run.prepare(prompts).batches(run.batch_size):
        logits = backend.head(backend.sweep_pass(batch, [], "resid_post").clean)
        for index, row in zip(batch.indices, torch.softmax(logits.float(), dim=-1).cpu()):
            out[index] = row
    return torch.stack([out[i] for i in range(len(out))])


def group_mass(
    model: Any,
    prompts: Prompts,
    groups: dict[str, Sequence[str]],
    **settings: Unpack[SettingsKeywords],
) -> Float[Tensor, "n_prompts n_groups"]:
    """Next-token probability of each word group, renormalised over the groups (rows sum to 1).

    ``settings``: :class:`~steerlens.settings.Settings` fields by name (``tokenizer``,
    ``batch_size`` (default 32), ``padding_side``, ``prepend_bos``) or ``settings=``, see
    :mod:`steerlens.settings`.

    Example:
        >>> group_mass(model, ["The film was"], {"good": ["good"], "bad": ["bad"]}).sum(-1)
        tensor([1.])
    """
    run = open_run(model, settings, "group_mass", PROMPT_READING, batch_size=BATCH_SIZE)
    return group_mass_on(run, prompts, groups)


def group_mass_on(run: Run, prompts: Prompts, groups: dict[str, Sequence[str]]) -> Float[Tensor, "n_prompts n_groups"]:
    """:func:`group_mass` on ``run``'s model."""
    probs = probs_on(run, prompts)
    tok = run.backend.tokenizer
    mass = torch.stack([probs[:, first_token_ids(tok, words)].sum(-1) for words in groups.values()], -1)
    return mass / mass.sum(-1, keepdim=True)


def concept_mass(
    model: Any,
    prompts: Prompts,
    concept: Concept,
    **settings: Unpack[SettingsKeywords],
) -> Float[Tensor, "n_prompts n_groups"]:
    """:func:`group_mass` over the groups of ``concept``, in the order of ``concept_words(concept)``.

    ``settings`` as in :func:`group_mass`.

    Example:
        >>> concept_mass(model, neutral_prompts("topic"), "topic").mean(0)  # film, food, travel
        tensor([0.33, 0.34, 0.33])
    """
    run = open_run(model, settings, "concept_mass", PROMPT_READING, batch_size=BATCH_SIZE)
    return group_mass_on(run, prompts, concept_words(concept))


def positive_mass(
    model: Any,
    prompts: Prompts,
    **settings: Unpack[SettingsKeywords],
) -> Float[Tensor, "n_prompts"]:
    """P(positive) / (P(positive) + P(negative)) over the sentiment words, per prompt.

    ``settings`` as in :func:`group_mass`.

    Example:
        >>> positive_mass(load_toy_model(), neutral_prompts("sentiment")).mean()
        tensor(0.49)
    """
    run = open_run(model, settings, "positive_mass", PROMPT_READING, batch_size=BATCH_SIZE)
    return group_mass_on(run, prompts, concept_words("sentiment"))[:, 0]


def total_variation(p: Tensor, q: Tensor) -> Tensor:
    """Total variation distance ``0.5 * sum |p - q|`` between distributions on the last axis."""
    return 0.5 * (p - q).abs().sum(-1)
