"""Metrics on next-token logits, steered against unsteered.

A metric is any callable ``(steered, unsteered) -> values`` taking two
``[batch, d_vocab]`` logit tensors (read at each prompt's last real token) and
returning one float per prompt. Presets by name: ``"kl"`` (the default of
:func:`steerlens.sweep.sweep_layers`) and ``"argmax_changed"``. Token metrics
(:func:`logit_diff`, :func:`prob_mass`) are built by factories; when they name
tokens by string they are bound to the model's tokenizer by the function that
uses them, each string encoded *in the context of each prompt* (the token that
really follows the prompt, see :mod:`steerlens.tokens.targets`), or explicitly with
``.bind(tokenizer, context=prompt)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence, Union

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.errors import InvalidArgumentError
from steerlens.tokens import PromptInput, single_target_id

Logits = Float[Tensor, "batch d_vocab"]
MetricFn = Callable[[Tensor, Tensor], Tensor]
Token = Union[str, int]
TokenGroup = Union[Token, Sequence[Token]]


def kl_divergence(steered: Logits, unsteered: Logits) -> Float[Tensor, "batch"]:
    """KL(steered ‖ unsteered) of the next-token distributions, in nats, per prompt.

    Example:
        >>> kl_divergence(torch.zeros(1, 3), torch.zeros(1, 3))
        tensor([0.])
    """
    log_p = torch.log_softmax(steered.float(), dim=-1)
    log_q = torch.log_softmax(unsteered.float(), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).clamp_min(0.0)


def argmax_changed(steered: Logits, unsteered: Logits) -> Float[Tensor, "batch"]:
    """1.0 where the most likely next token differs, else 0.0 (its mean is a rate)."""
    return (steered.argmax(-1) != unsteered.argmax(-1)).float()


PRESETS: dict[str, MetricFn] = {"kl": kl_divergence, "argmax_changed": argmax_changed}

DEGENERATE_FRACTION: float = 0.1
"""A cell is ``degenerate`` when its metric's tokens keep less than this fraction of their unsteered
probability: a ratio such as :func:`prob_share` can look perfect there while the model has stopped
predicting any of the tokens it is taken of."""
LOW_MASS: float = 0.01
"""Below this unsteered probability, the metric's tokens are not what the model says next at all, and a
ratio of them describes little of what steering does: the measuring verbs warn."""


def token_ids(tokenizer: Any, group: TokenGroup, context: PromptInput | None = None) -> list[int]:
    """Token ids of a token or token group (duplicates dropped).

    With ``context`` (the prompt the tokens follow), each string is the one token it
    is right after that prompt, and a string that is several tokens there raises
    :class:`~steerlens.errors.TargetTokenError`; this is what every steerlens function
    that knows its prompts does. Without it a string is encoded on its own and stands
    for its first token, with a warning when it has several (on SentencePiece
    tokenizers that token can differ from the one after a prompt: ``"A"`` is ``▁A``).

    Example:
        >>> token_ids(model.tokenizer, [" love", " hate"], context="I think I")
        [302, 417]
    """
    items = [group] if isinstance(group, (str, int)) else list(group)
    if not items:
        raise InvalidArgumentError("a token group is empty; give at least one token string or id.")
    ids = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise InvalidArgumentError(f"tokens must be strings or int ids, got {item!r}.")
        if isinstance(item, int):
            ids.append(item)
            continue
        if tokenizer is None:
            raise InvalidArgumentError(f"token {item!r} is a string but there is no tokenizer to encode it.")
        if context is not None:
            ids.append(single_target_id(tokenizer, context, item))
            continue
        encoded = tokenizer.encode(item, add_special_tokens=False)
        if not encoded:
            raise InvalidArgumentError(f"token string {item!r} encodes to no tokens.")
        if len(encoded) > 1:
            warnings.warn(
                f"{item!r} is {len(encoded)} tokens; only its first token {tokenizer.decode(encoded[:1])!r} is used.",
                stacklevel=3,
            )
        ids.append(int(encoded[0]))
    return list(dict.fromkeys(ids))  # a token counts once in a group


def group_logprob(logprobs: Float[Tensor, "batch d_vocab"], ids: Sequence[int]) -> Float[Tensor, "batch"]:
    """log P(group) = log of the summed probability of the group's tokens."""
    return torch.logsumexp(logprobs[:, list(ids)], dim=-1)


@dataclass(frozen=True)
class TokenMetric:
    """A metric on the probability of token groups; see :func:`logit_diff`, :func:`prob_mass`."""

    name: str
    groups: tuple[TokenGroup, ...]
    score: Callable[[Tensor, list[list[int]]], Tensor]
    relative: bool = False
    ids: tuple[tuple[int, ...], ...] | None = None

    def __post_init__(self) -> None:
        if self.ids is None and all(_only_ids(g) for g in self.groups):
            object.__setattr__(self, "ids", tuple(tuple(token_ids(None, g)) for g in self.groups))

    def bind(self, tokenizer: Any, context: PromptInput | None = None) -> "TokenMetric":
        """The same metric with its token strings encoded by ``tokenizer``, after prompt ``context``.

        See :func:`token_ids`; sweeps bind once per prompt, with ``context`` set.
        """
        if self.ids is not None:
            return self
        return replace(self, ids=tuple(tuple(token_ids(tokenizer, g, context)) for g in self.groups))

    def __call__(self, steered: Logits, unsteered: Logits) -> Float[Tensor, "batch"]:
        if self.ids is None:
            raise InvalidArgumentError(
                f"metric {self.name!r} names tokens by string; bind it first with "
                ".bind(model.tokenizer, context=prompt) (sweep_layers does this for you)."
            )
        groups = [list(g) for g in self.ids]
        value = self.score(torch.log_softmax(steered.float(), dim=-1), groups)
        if self.relative:
            value = value - self.score(torch.log_softmax(unsteered.float(), dim=-1), groups)
        return value


def _only_ids(group: TokenGroup) -> bool:
    items = [group] if isinstance(group, (str, int)) else list(group)
    return all(isinstance(i, int) and not isinstance(i, bool) for i in items)


def _diff_score(logprobs: Tensor, groups: list[list[int]]) -> Tensor:
    return group_logprob(logprobs, groups[0]) - group_logprob(logprobs, groups[1])


def _mass_score(logprobs: Tensor, groups: list[list[int]]) -> Tensor:
    return group_logprob(logprobs, groups[0]).exp()


def _share_score(logprobs: Tensor, groups: list[list[int]]) -> Tensor:
    return torch.sigmoid(_diff_score(logprobs, groups))


def logit_diff(positive: TokenGroup, negative: TokenGroup, relative: bool = False) -> TokenMetric:
    """log P(positive) − log P(negative) of the steered model, per prompt.

    For single tokens this is the logit difference; for groups it is the log-odds of
    the two groups' summed probabilities. ``relative=True`` subtracts the same
    quantity of the unsteered model (named ``"delta_logit_diff"``).

    Example:
        >>> sweep_layers(model, vec, prompts, metric=logit_diff(" good", [" bad", " awful"]))
    """
    return TokenMetric("delta_logit_diff" if relative else "logit_diff", (positive, negative), _diff_score, relative)


def prob_mass(tokens: TokenGroup, relative: bool = False) -> TokenMetric:
    """Summed next-token probability of ``tokens`` under the steered model, per prompt.

    ``relative=True`` gives the change from the unsteered model (``"delta_prob_mass"``).

    Example:
        >>> sweep_layers(model, vec, prompts, metric=prob_mass([" love", " great"]))
    """
    return TokenMetric("delta_prob_mass" if relative else "prob_mass", (tokens,), _mass_score, relative)


def prob_share(positive: TokenGroup, negative: TokenGroup, relative: bool = False) -> TokenMetric:
    """P(positive) / (P(positive) + P(negative)) of the steered model, per prompt.

    The share of the two groups' mass that goes to ``positive``: 0.5 means undecided,
    whatever mass goes to other tokens. ``relative=True`` gives the change from the
    unsteered model (``"delta_prob_share"``).

    Example:
        >>> sweep_layers(model, vec, prompts, metric=prob_share([" good", " great"], [" bad", " awful"]))
    """
    return TokenMetric("delta_prob_share" if relative else "prob_share", (positive, negative), _share_score, relative)


def resolve_metric(metric: str | MetricFn) -> tuple[str, MetricFn]:
    """``(column name, callable)`` for a preset name, a :class:`TokenMetric` or any callable.

    A token metric naming strings is returned unbound: its consumers bind it in the
    context of each prompt with :func:`bind_per_prompt` (never out of context).
    """
    if isinstance(metric, str):
        if metric not in PRESETS:
            raise InvalidArgumentError(
                f"unknown metric {metric!r}; use one of {sorted(PRESETS)}, logit_diff(...), "
                "prob_mass(...) or a callable (steered_logits, unsteered_logits) -> per-prompt tensor."
            )
        return metric, PRESETS[metric]
    if isinstance(metric, TokenMetric):
        return metric.name, metric
    if not callable(metric):
        raise InvalidArgumentError(f"metric must be a name or a callable, got {type(metric).__name__}.")
    name = getattr(metric, "name", None) or getattr(metric, "__name__", None)
    return (name if isinstance(name, str) and name.isidentifier() else "metric"), metric


def bind_per_prompt(fn: MetricFn, tokenizer: Any, prompts: Sequence[PromptInput]) -> list[MetricFn] | None:
    """``fn`` bound after each prompt (token strings encoded in context), or None if it names no strings.

    Binding every prompt up front raises a bad target before any forward pass.

    Example:
        >>> bound = bind_per_prompt(prob_mass("A"), llama_tokenizer, ["Answer: ("])
        >>> bound[0].ids == ((llama_tokenizer.convert_tokens_to_ids("A"),),)   # not "▁A"
        True
    """
    if not isinstance(fn, TokenMetric) or fn.ids is not None:
        return None
    return [fn.bind(tokenizer, context=prompt) for prompt in prompts]


def metric_token_ids(fn: MetricFn, bound: Sequence[MetricFn] | None, prompt_index: int) -> list[int] | None:
    """Every token a token metric reads after prompt ``prompt_index`` (all groups), or None for other metrics."""
    metric = bound[prompt_index] if bound is not None else fn
    if not isinstance(metric, TokenMetric) or metric.ids is None:
        return None
    return list(dict.fromkeys(i for group in metric.ids for i in group))


def target_mass(
    fn: MetricFn, bound: Sequence[MetricFn] | None, logits: Logits, prompt_indices: Sequence[int]
) -> Float[Tensor, "batch"] | None:
    """The total next-token probability of the tokens a token metric reads, per row (None for other metrics).

    This is the mass a ratio metric (:func:`prob_share`, P(matching) over two letters) is taken of:
    printed beside the ratio, it shows when the ratio describes a model that no longer says any of them.

    Example:
        >>> share = prob_share([" good"], [" bad"]).bind(model.tokenizer)
        >>> target_mass(share, None, logits, [0])          # P(" good") + P(" bad")
    """
    ids = [metric_token_ids(fn, bound, index) for index in prompt_indices]
    if any(row is None for row in ids):
        return None
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.stack([probs[row, row_ids].sum() for row, row_ids in enumerate(ids)]).double().cpu()  # type: ignore[index]


def degenerate(mass_steered: Tensor | float, mass_unsteered: Tensor | float) -> Tensor:
    """True where the steered mass fell below :data:`DEGENERATE_FRACTION` of the unsteered mass."""
    return torch.as_tensor(mass_steered) < DEGENERATE_FRACTION * torch.as_tensor(mass_unsteered)


def damage_warning(
    n_degenerate: int,
    n_cells: int,
    unsteered_mass: float | None,
    what: str = "cells",
    tokens: str = "the metric's tokens",
) -> str | None:
    """The one warning the measuring verbs give about damage (None when there is nothing to say).

    ``tokens`` names what the mass is of (``"the answer letters"`` for A/B items).
    """
    parts = []
    if n_degenerate:
        parts.append(
            f"{n_degenerate} of {n_cells} {what} are degenerate: {tokens} keep less than "
            f"{DEGENERATE_FRACTION:g} of their unsteered probability there, so the metric describes a broken "
            "model (see the `degenerate` column and the mass beside it; try smaller multipliers)"
        )
    if unsteered_mass is not None and unsteered_mass < LOW_MASS:
        parts.append(
            f"{tokens} hold only {unsteered_mass:.2%} of the next-token probability unsteered: a ratio or "
            "change of them says little about what the model says next (choose prompts after which those tokens "
            "are likely)"
        )
    return "; ".join(parts) + "." if parts else None


def metric_rows(
    fn: MetricFn, bound: Sequence[MetricFn] | None, steered: Logits, unsteered: Logits, prompt_indices: Sequence[int]
) -> Tensor:
    """``fn`` on rows of logits; with ``bound`` (from :func:`bind_per_prompt`) each row uses its prompt's ids.

    Rows whose prompts share ids are scored in one call.
    """
    if bound is None:
        return torch.as_tensor(fn(steered, unsteered))
    out = torch.empty(steered.shape[0], device=steered.device)
    groups: dict[Any, list[int]] = {}
    for row, index in enumerate(prompt_indices):
        groups.setdefault(bound[index].ids, []).append(row)  # type: ignore[attr-defined]
    for rows in groups.values():
        pick = torch.tensor(rows, device=steered.device)
        values = torch.as_tensor(bound[prompt_indices[rows[0]]](steered[pick], unsteered[pick]))
        out[pick] = values.reshape(-1).to(out)
    return out


def metric_values(
    name: str,
    fn: MetricFn,
    bound: Sequence[MetricFn] | None,
    steered: Logits,
    unsteered: Logits,
    prompt_indices: Sequence[int],
) -> Float[Tensor, "batch"]:
    """:func:`metric_rows` detached on the CPU in float64, checked to be one value per row.

    Every consumer of a metric (sweeps, calibration) reads it through here, so token
    strings are always bound in the context of each prompt (:func:`bind_per_prompt`).
    A metric that returns NaN for some prompts gets a :class:`RuntimeWarning` naming it and
    how many values (not an error: a custom metric may be undefined on some prompts, and
    the prompts it did measure are still worth having; a table's means leave the NaNs out).
    """
    values = torch.as_tensor(metric_rows(fn, bound, steered, unsteered, prompt_indices)).detach().reshape(-1)
    if values.shape[0] != steered.shape[0]:
        raise InvalidArgumentError(
            f"metric {name!r} returned {values.shape[0]} values for {steered.shape[0]} prompts; "
            "a metric must return one value per prompt."
        )
    values = values.double().cpu()
    n_nan = int(values.isnan().sum())
    if n_nan:
        warnings.warn(
            f"metric {name!r} returned NaN for {n_nan} of {values.shape[0]} prompts; a table's mean leaves them "
            "out (check the metric: a log or ratio of a zero probability, or an empty group?).",
            RuntimeWarning,
            stacklevel=3,
        )
    return values


@dataclass(frozen=True)
class CellReading:
    """One cell's per-prompt effect and its damage, all float64 on the CPU.

    ``kl`` is KL(steered ‖ unsteered) of the next-token distribution where the effect is read
    (the same logits, no extra pass); ``mass`` / ``mass_unsteered`` are the total probability of
    the tokens a token metric reads, steered and unsteered (None for other metrics).
    """

    effect: Float[Tensor, "batch"]
    kl: Float[Tensor, "batch"]
    mass: Float[Tensor, "batch"] | None = None
    mass_unsteered: Float[Tensor, "batch"] | None = None


@dataclass(frozen=True)
class BoundMetric:
    """A metric ready for a set of prompts: its column name, the callable, and its per-prompt binding.

    Built once per call by :func:`bind_metric`; :meth:`read` is the one place a cell's effect and
    damage are computed (sweeps, layer reports, steerability, calibration).
    """

    name: str
    fn: MetricFn
    bound: list[MetricFn] | None

    def values(self, steered: Logits, unsteered: Logits, indices: Sequence[int]) -> Float[Tensor, "batch"]:
        """The metric per row (:func:`metric_values`)."""
        return metric_values(self.name, self.fn, self.bound, steered, unsteered, indices)

    def mass(self, logits: Logits, indices: Sequence[int]) -> Float[Tensor, "batch"] | None:
        """The metric's tokens' total probability per row (:func:`target_mass`)."""
        return target_mass(self.fn, self.bound, logits, indices)

    def read(self, steered: Logits, unsteered: Logits, indices: Sequence[int]) -> CellReading:
        """The effect at ``steered`` against ``unsteered``, with KL and the tokens' mass beside it.

        Example:
            >>> metric = bind_metric(prob_share([" good"], [" bad"]), tok, prompts)
            >>> reading = metric.read(cell.steered, cell.unsteered, cell.indices)
            >>> reading.effect, reading.kl, reading.mass
        """
        mass = self.mass(steered, indices)
        return CellReading(
            self.values(steered, unsteered, indices),
            kl_divergence(steered, unsteered).double().cpu(),
            mass,
            None if mass is None else self.mass(unsteered, indices),
        )


def bind_metric(metric: str | MetricFn, tokenizer: Any, prompts: Sequence[PromptInput]) -> BoundMetric:
    """``metric`` resolved (:func:`resolve_metric`) and bound after each prompt (:func:`bind_per_prompt`)."""
    name, fn = resolve_metric(metric)
    return BoundMetric(name, fn, bind_per_prompt(fn, tokenizer, prompts))
