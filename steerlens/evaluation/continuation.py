"""Log-probability of a whole (multi-token) completion after each prompt, steered against unsteered.

Next-token metrics score one token; a behaviour often shows in a phrase (``" I
cannot help with that"``). :func:`continuation_logprob` scores the completion as a
sequence: ``log P(c_1 .. c_n | prompt) = Σ_t log P(c_t | prompt, c_<t)``, with the
completion encoded in the context of its prompt (the ids that really follow it, see
:mod:`steerlens.tokens.targets`).

Each completion token is scored as the next token of its prefix, and every prefix of
every item goes through one batched sweep (:func:`~steerlens.evaluation.sweep.steered_cells`),
so layers, groups of layers (``"joint"``), operators, padding and both model kinds
work as they do in sweeps. In a causal model the logits at a position depend only
on the positions before it, so this equals scoring the full sequence in one pass
with steering at every position.

Damage beside the effect: ``kl`` is the mean, over the completion's positions, of
KL(steered ‖ unsteered) of the next-token distribution, read from the same logits.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence, Union

import pandas as pd
import torch
from typing_extensions import Unpack

from steerlens.checks import check_multipliers, token_id_list
from steerlens.errors import InvalidArgumentError
from steerlens.evaluation.metrics import kl_divergence
from steerlens.evaluation.sweep import steered_cells
from steerlens.settings import READING, SettingsKeywords, open_run
from steerlens.tokens import PromptInput, Prompts, as_token_ids, ids_in_context
from steerlens.vector import Layers, SteeringVector

Completions = Union[PromptInput, Sequence[PromptInput]]
"""One completion for every prompt, or one per prompt; strings or token ids."""

_USES: frozenset[str] = READING | {"operator"}
"""The settings :func:`continuation_logprob` reads: steering at every position, so no ``steer_from``."""


def continuation_logprob(
    model: Any,
    vector: SteeringVector,
    prompts: Prompts,
    completions: Completions,
    multipliers: float | Iterable[float] = (1.0,),
    layers: Layers = None,
    **settings: Unpack[SettingsKeywords],
) -> pd.DataFrame:
    """``log P(completion | prompt)`` of each prompt × layer (or group) × multiplier, steered and unsteered.

    ``completions`` is one string for every prompt or one per prompt (strings or
    token ids, ids used as they are). ``layers`` as in
    :func:`~steerlens.evaluation.sweep.sweep_layers`: each layer alone, ``"joint"``,
    or groups like ``[[2, 3], 4]``.

    ``settings``: :class:`~steerlens.settings.Settings` fields by name (``tokenizer``,
    ``batch_size`` (default 32), ``padding_side``, ``prepend_bos``, ``operator``,
    ``show_progress``) or ``settings=``, see :mod:`steerlens.settings`. Prompts are
    strings (chat templates too) or ids, encoded with ``prepend_bos`` (None: the model's
    default; see :class:`~steerlens.tokens.TokenPolicy`). Steering is at every position
    (a shared value's ``steer_from`` is not used). ``show_progress`` (default None): a bar
    of cells with the time left, shown once the call has run a few seconds.

    Columns: ``prompt_index, prompt, completion, n_tokens, layer, multiplier,
    logprob_unsteered, logprob_steered, delta_logprob`` (natural log, summed over the
    completion's tokens; divide by ``n_tokens`` for a per-token mean), and ``kl``: the
    damage beside the effect, the mean over the completion's positions of
    KL(steered ‖ unsteered) of the next-token distribution (nats; the same logits, no
    extra pass). A large ``delta_logprob`` with a large ``kl`` is a model pushed off
    everything, not towards the completion.

    Example:
        >>> df = continuation_logprob(model, vec, ["The film was"], " great fun", multipliers=[-2, 2])
        >>> df[["multiplier", "logprob_unsteered", "logprob_steered", "delta_logprob"]]
    """
    run = open_run(model, settings, "continuation_logprob", _USES, batch_size=32)
    prepared = run.prepare(prompts)
    prompt_list = prepared.prompts
    completion_list = _completions(completions, len(prompt_list))
    mults = check_multipliers(multipliers)
    tok = run.backend.tokenizer
    targets = [
        ids if (ids := as_token_ids(c)) is not None else ids_in_context(tok, p, c)  # type: ignore[arg-type]
        for p, c in zip(prompt_list, completion_list)
    ]
    # Every prefix prompt + c_<t (shared prefixes once) and the token that follows it.
    prefixes: dict[tuple[int, ...], int] = {}
    scored: list[tuple[int, int, int]] = []  # (item, prefix index, next token)
    for item, (ids, target) in enumerate(zip(prepared.encoded, targets)):
        for t, token in enumerate(target):
            prefix = tuple(ids + target[:t])
            scored.append((item, prefixes.setdefault(prefix, len(prefixes)), token))
    prefix_list = [list(prefix) for prefix in prefixes]
    by_prefix: dict[int, list[tuple[int, int]]] = {}
    for item, prefix, token in scored:
        by_prefix.setdefault(prefix, []).append((item, token))

    sums: dict[tuple[int, Any, float], list[float]] = {}  # (unsteered, steered, summed KL)
    order: dict[Any, int] = {}
    # The prefixes are ids the run's policy has encoded already (prepend_bos has done its work).
    prefix_run = run.with_settings(prepend_bos=None, steer_from=None)
    for cell in steered_cells(prefix_run, vector, prefix_list, layers, mults):
        order.setdefault(cell.layer, len(order))
        steered = torch.log_softmax(cell.steered.float(), -1)
        unsteered = torch.log_softmax(cell.unsteered.float(), -1)
        kl = kl_divergence(cell.steered, cell.unsteered).tolist()
        for row, prefix in enumerate(cell.indices):
            for item, token in by_prefix[prefix]:
                acc = sums.setdefault((item, cell.layer, cell.multiplier), [0.0, 0.0, 0.0])
                acc[0] += float(unsteered[row, token])
                acc[1] += float(steered[row, token])
                acc[2] += kl[row]
    rows = [
        {
            "prompt_index": item,
            "prompt": prompt_list[item],
            "completion": completion_list[item],
            "n_tokens": len(targets[item]),
            "layer": layer,
            "multiplier": m,
            "logprob_unsteered": un,
            "logprob_steered": st,
            "delta_logprob": st - un,
            "kl": kl / len(targets[item]),
        }
        for (item, layer, m), (un, st, kl) in sorted(
            sums.items(), key=lambda kv: (kv[0][0], order[kv[0][1]], mults.index(kv[0][2]))
        )
    ]
    return pd.DataFrame(rows)


def _completions(completions: Completions, n_prompts: int) -> list[PromptInput]:
    """One completion per prompt: a single string (or id list) is repeated."""
    if isinstance(completions, str) or token_id_list(completions) is not None:
        listed = [completions] * n_prompts
    else:
        listed = list(completions)  # type: ignore[arg-type]
    if len(listed) != n_prompts:
        raise InvalidArgumentError(
            f"got {len(listed)} completions for {n_prompts} prompts; pass one completion per prompt, or one string "
            "for all of them."
        )
    for completion in listed:
        if isinstance(completion, str):
            if not completion:
                raise InvalidArgumentError("a completion is empty; give each completion some text.")
        elif not token_id_list(completion):
            raise InvalidArgumentError(
                f"a completion must be a non-empty string or list of token ids, got {completion!r:.80}."
            )
    return listed
