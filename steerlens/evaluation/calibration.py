"""Pick a layer and a strength under a damage budget: the effect you want against the KL you pay.

:func:`calibrate` measures layer × multiplier cells with the fast sweep
(:func:`~steerlens.evaluation.sweep.iter_steered_logits`): on ``prompts``, where
``metric`` measures the wanted effect (with the damage at that same position beside
it: ``kl_prompts`` and, for ratio metrics, the mass of the metric's tokens), and on
``reference_prompts``, where the damage is the KL divergence of the steered from the
unsteered next-token distribution (text the steering should leave alone). The best
cell is the strongest effect whose mean KL stays within ``max_kl`` and whose metric
tokens keep their probability (never a ``degenerate`` cell); with a ``target``
effect, the cheapest such cell that reaches it, its multiplier refined by bisection.

The search is coarse to fine by default: every layer is screened on a spread quarter
of the prompts (at least four) at three strengths, and the full grid (and bisection)
runs on the few best layers only, on every prompt, so the chosen cell is always
measured on all prompts and all references. ``search="exhaustive"`` runs the full
grid everywhere. Every cell is kept in a table with its Pareto-front membership, and
:meth:`Calibration.plot` draws effect against damage.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Literal, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from typing_extensions import Unpack

from steerlens.analysis.norms import norms_on, rescaled
from steerlens.analysis.prompt_activations import vector_layers
from steerlens.checks import check_multipliers, finite_number
from steerlens.errors import InvalidArgumentError
from steerlens.evaluation.comparison import ItemLike, as_ab_items, letter_pair, letter_probability
from steerlens.evaluation.metrics import BoundMetric, MetricFn, bind_metric, damage_warning, degenerate, kl_divergence
from steerlens.evaluation.progress import progress_bar
from steerlens.evaluation.sweep import LogitsCell, steered_cells
from steerlens.settings import STEERING, Run, SettingsKeywords, open_run
from steerlens.tokens import Prompts, check_prompt_inputs
from steerlens.vector import SteeringVector

Direction = Literal["increase", "decrease"]
Damage = Literal["kl", "fluency"]
SearchKind = Literal["coarse-to-fine", "exhaustive"]
DEFAULT_MULTIPLIERS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Absolute multipliers tried by default (negated when the metric should decrease)."""
DEFAULT_RELATIVE_MULTIPLIERS: tuple[float, ...] = (0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
"""Multipliers in residual-norm units tried by default with ``relative=True``."""
KEEP_LAYERS: int = 3
"""Most layers the coarse stage of ``search="coarse-to-fine"`` keeps for the full grid (``keep_layers``)."""
KEEP_MARGIN: float = 0.25
"""A screened layer is kept only if its coarse gain is at least ``1 - keep_margin`` of the best layer's."""
COARSE_FRACTION: float = 0.25
"""Share of the prompts (and references, and fluency texts) the coarse stage measures on ..."""
COARSE_MIN_PROMPTS: int = 4
"""... and at least this many (all of them when there are fewer)."""


@dataclass(frozen=True)
class CalibrationCell:
    """One layer × multiplier of a calibration, as measured (on every prompt and reference)."""

    layer: int
    multiplier: float
    """For :attr:`Calibration.vector` (in residual-norm units when ``relative=True``)."""
    absolute_multiplier: float
    """The same strength for the original vector: ``with vec.apply(model, multiplier=...)``."""
    effect: float
    """Mean of the metric over ``prompts``."""
    kl: float
    """Mean KL(steered ‖ unsteered) of the next-token distribution over ``reference_prompts``, in nats."""
    relative_strength: float
    """Norm of what is added, in typical residual norms at that layer."""
    kl_prompts: float = math.nan
    """Mean KL(steered ‖ unsteered) where the metric is read, over ``prompts`` (nats)."""
    target_mass: float | None = None
    """Mean total probability of the metric's tokens, steered (None for metrics without tokens)."""
    target_mass_unsteered: float | None = None
    """The same, unsteered."""


@dataclass
class Calibration:
    """The outcome of :func:`calibrate`: the chosen cell, every cell measured, and how to use them."""

    best: CalibrationCell | None
    """The strongest effect within the budget (with a target: the cheapest cell reaching it), never a
    degenerate cell; None if no cell is within the budget."""
    table: pd.DataFrame
    """One row per cell measured (coarse screening, grid and bisection; column ``source``), with
    ``within_budget`` and ``pareto`` columns."""
    vector: SteeringVector
    """The vector swept: ``relative_vector(...)`` of the original with ``relative=True``, else the original."""
    metric: str
    max_kl: float
    direction: Direction
    baseline: float
    """The metric's mean over ``prompts`` without steering."""
    target: float | None = None
    target_reached: bool | None = None
    search: SearchKind = "exhaustive"
    """How the cells were searched (``"coarse-to-fine"`` only when it screened out some layers)."""

    def best_vector(self) -> SteeringVector:
        """:attr:`vector` at the best layer only (apply it with ``multiplier=best.multiplier``)."""
        return self.vector.select_layers(self._best().layer)

    @contextmanager
    def apply(self, model: Any, **kwargs: Any) -> Iterator[Any]:
        """Steer ``model`` with the best cell inside a ``with`` block (other arguments as ``vec.apply``).

        Example:
            >>> with calibrate(model, vec, prompts, share, references).apply(model):
            ...     model.generate("The film was", max_new_tokens=8)
        """
        best = self._best()
        with self.best_vector().apply(model, multiplier=best.multiplier, **kwargs):
            yield model

    def plot(self, **kwargs: Any) -> Any:
        """Effect against damage for every cell measured on all prompts (the coarse screening left out),
        the Pareto front and the budget marked (a matplotlib Figure)."""
        from steerlens.evaluation.plots import plot_calibration

        full = self.table[self.table["source"] != "coarse"]
        full.attrs = dict(self.table.attrs)
        return plot_calibration(full, **kwargs)

    def _best(self) -> CalibrationCell:
        if self.best is None:
            raise InvalidArgumentError(
                f"no cell kept the KL within max_kl={self.max_kl:g} (degenerate cells never count); raise max_kl "
                "or try smaller multipliers (see .table for what each cell cost)."
            )
        return self.best


@dataclass(frozen=True)
class Search:
    """How :func:`calibrate` searches the grid (see ``search`` there); pass one as ``search=`` or its fields by name.

    Example:
        >>> calibrate(model, vec, prompts, share, references, search=Search(keep_layers=2, keep_margin=None))
    """

    method: SearchKind = "coarse-to-fine"
    keep_layers: int = KEEP_LAYERS
    keep_margin: float | None = KEEP_MARGIN
    coarse_multipliers: Iterable[float] | None = None
    bisect_steps: int = 8

    def __post_init__(self) -> None:
        if self.method not in ("coarse-to-fine", "exhaustive"):
            raise InvalidArgumentError(f"search must be 'coarse-to-fine' or 'exhaustive', got {self.method!r}.")
        keep = self.keep_layers
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise InvalidArgumentError(f"keep_layers must be a positive int, got {keep!r}.")
        if self.keep_margin is not None:
            margin = finite_number(self.keep_margin, "keep_margin")
            if not 0 <= margin <= 1:
                raise InvalidArgumentError(f"keep_margin must be between 0 and 1 (or None), got {self.keep_margin!r}.")
        steps = self.bisect_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise InvalidArgumentError(f"bisect_steps must be a non-negative int, got {steps!r}.")


class CalibrationKeywords(SettingsKeywords, total=False):
    """:func:`calibrate`'s keywords beyond its parameters: the settings, the damage measure and the search's knobs."""

    norm_prompts: Prompts | None
    fluency_texts: Prompts | None
    damage: Damage
    bisect_steps: int
    keep_layers: int
    coarse_multipliers: Iterable[float] | None
    keep_margin: float | None


_SEARCH_FIELDS = frozenset({"keep_layers", "keep_margin", "coarse_multipliers", "bisect_steps"})
_OWN_FIELDS = frozenset({"norm_prompts", "fluency_texts", "damage"})


@dataclass(frozen=True)
class _Goal:
    """What counts as best: the wanted direction, the damage budget (and its column) and an optional target."""

    sign: float
    budget: float
    damage: str
    """The column the budget applies to: ``"kl"`` or ``"nll_increase"``."""
    target: float | None = None


def calibrate(
    model: Any,
    vector: SteeringVector,
    prompts: Prompts | Iterable[ItemLike],
    metric: str | MetricFn,
    reference_prompts: Prompts,
    max_kl: float = 0.1,
    layers: int | Iterable[int] | None = None,
    multipliers: Iterable[float] | None = None,
    *,
    direction: Direction = "increase",
    target: float | None = None,
    relative: bool = False,
    search: SearchKind | Search = "coarse-to-fine",
    **options: Unpack[CalibrationKeywords],
) -> Calibration:
    """Sweep ``layers`` × ``multipliers`` and choose the cell with the most effect under a KL budget.

    * effect: ``metric(steered, unsteered)`` (a name, a token metric such as
      :func:`~steerlens.evaluation.metrics.prob_share`, or any callable) at the last
      token of each of ``prompts``, averaged;
    * damage: KL(steered ‖ unsteered) of the next-token distribution, averaged over
      ``reference_prompts`` (text whose continuation steering should not change);
    * budget: a cell is admissible when its damage is at most ``max_kl`` nats and it is
      not ``degenerate``.

    Beside every effect the table carries its damage where it is measured:
    ``kl_prompts``, the KL at the metric's position on ``prompts`` (the same logits, no
    extra pass), and, for a metric read from tokens (``prob_share``, ``logit_diff``,
    ``prob_mass``, ``p_matching`` whose mass is P(A) + P(B)), ``target_mass`` and
    ``target_mass_unsteered``, the total probability of those tokens steered and
    unsteered (mean over prompts). A cell is ``degenerate`` when ``target_mass`` falls
    below :data:`~steerlens.evaluation.metrics.DEGENERATE_FRACTION` of
    ``target_mass_unsteered``: the model no longer says any of the tokens and a ratio of
    them describes a broken model, however good it looks. **A degenerate cell is never
    chosen as best** (nor on the Pareto front), and one warning counts such cells.

    ``direction`` says whether the metric should go up or down. Without ``target``
    the best cell is the admissible one with the largest (smallest) effect; with
    ``target``, the admissible cell reaching it with the least damage, whose
    multiplier is then bisected ``bisect_steps`` times between it and the next weaker
    cell of its layer, to reach the target with as little strength as possible.

    ``search`` is ``"coarse-to-fine"``, ``"exhaustive"`` or a :class:`Search` value holding the knobs below
    (``Search(keep_layers=2)``; each knob may also be given by name). ``search="coarse-to-fine"`` (the default) first screens every layer on a spread
    quarter of the prompts, references and fluency texts (at least four of each) at three
    strengths (``coarse_multipliers``; default: the weakest of ``multipliers`` in the
    wanted direction, the middle one and the strongest, so that a layer still within the
    budget at full strength is judged there), ranks the layers by their best admissible,
    non-degenerate effect there, and runs the full grid and bisection on the best
    layers only, on all prompts and references: at most ``keep_layers`` of them, and only
    those whose coarse gain (best admissible effect minus the unsteered effect on the
    screening prompts, in the wanted direction) is at least ``1 - keep_margin`` of the
    best layer's (``keep_margin=None``: always ``keep_layers``; when no layer gains
    within the budget, the ``keep_layers`` best ranked). The chosen cell is
    always one measured on every prompt and reference. Screening rows stay in the table
    with ``source="coarse"`` (their ``n_prompts`` says how many prompts they saw); with
    ``keep_layers`` or fewer layers nothing is screened. ``search="exhaustive"`` runs
    the full grid on every layer.

    ``relative=True`` sweeps :func:`~steerlens.analysis.norms.relative_vector`
    of ``vector``: multipliers are then in typical residual norms at each layer
    (``0.5`` = half a typical norm), measured on ``norm_prompts`` (default:
    ``reference_prompts``). The table gives every cell's ``absolute_multiplier`` for
    the original vector either way.

    CAA's setting: ``prompts`` may be A/B items (:class:`~steerlens.evaluation.comparison.ABItem`,
    CAA records or ``(prompt, letter)`` pairs, each with its own matching letter) with
    ``metric="p_matching"``, the normalised probability of the matching letter (read in
    the context of each prompt, as :func:`~steerlens.evaluation.comparison.ab_behavior_probability`
    does); ``steer_from="answer"`` steers every prompt, references included, from the
    assistant's turn on (see :mod:`steerlens.tokens.starts`).

    Fluency: with ``fluency_texts`` each cell also gets ``nll_increase``, how much the
    mean negative log-likelihood per token of those texts grows under steering (nats;
    ``perplexity_ratio = exp(nll_increase)``), each text scored from its first token.
    ``damage="fluency"`` budgets that instead of the KL (``max_kl`` is then in nats per token).
    Each text of n tokens costs n - 1 prompts per cell (every prefix is scored as a prompt).

    ``show_progress`` (default None: once the call has run a few seconds) shows one bar
    over every cell of the call (screening, grid and bisection) with the time left.

    Every prompt (``prompts``, references, norm prompts, fluency texts) is a string or
    token ids, encoded with ``prepend_bos`` (None: the model's default; see
    :class:`~steerlens.tokens.TokenPolicy`) and padded on ``padding_side``. A token
    metric's strings are bound in the context of each prompt, as in
    :func:`~steerlens.evaluation.sweep.sweep_layers` (on a SentencePiece tokenizer
    ``prob_mass("A")`` after ``"Answer: ("`` is ``A``, not ``▁A``). Negative layer keys
    and ``layers`` count from the end of the model.

    Example:
        >>> share = prob_share(words["positive"], words["negative"])
        >>> cal = calibrate(model, vec, neutral_prompts("sentiment"), share, neutral_prompts("topic"), max_kl=0.5)
        >>> cal.best, cal.plot()
    """
    plan, extra = _search_plan(search, options)
    run = open_run(model, options, "calibrate", STEERING, batch_size=32)
    run.backend.check_tokenizer()
    norm_prompts, fluency_texts, damage = (
        extra.get("norm_prompts"),
        extra.get("fluency_texts"),
        extra.get("damage", "kl"),
    )
    items = None
    if metric == "p_matching":  # A/B items, each with its own matching letter
        items = as_ab_items(prompts)  # type: ignore[arg-type]
        prompt_list = check_prompt_inputs([item.prompt for item in items])
    else:
        prompt_list = check_prompt_inputs(prompts)  # type: ignore[arg-type]
    reference_list = check_prompt_inputs(reference_prompts)
    texts = None if fluency_texts is None else check_prompt_inputs(fluency_texts)
    if damage not in ("kl", "fluency"):
        raise InvalidArgumentError(f"damage must be 'kl' or 'fluency', got {damage!r}.")
    if damage == "fluency" and texts is None:
        raise InvalidArgumentError("damage='fluency' needs fluency_texts=[...]: the reference texts to score.")
    budget = finite_number(max_kl, "max_kl")
    if budget < 0:
        raise InvalidArgumentError(f"max_kl must be >= 0 nats, got {budget}.")
    if direction not in ("increase", "decrease"):
        raise InvalidArgumentError(f"direction must be 'increase' or 'decrease', got {direction!r}.")
    goal = _Goal(
        sign=1.0 if direction == "increase" else -1.0,
        budget=budget,
        damage="nll_increase" if damage == "fluency" else "kl",
        target=None if target is None else finite_number(target, "target"),
    )
    reader = None if items is not None else bind_metric(metric, run.backend.tokenizer, prompt_list)
    inputs = _inputs(run, items, reader, prompt_list, reference_list, texts)
    directions = vector_layers(run.backend, vector, layers)
    layer_list = list(directions)
    if multipliers is None:
        defaults = DEFAULT_RELATIVE_MULTIPLIERS if relative else DEFAULT_MULTIPLIERS
        multipliers = [m if direction == "increase" else -m for m in defaults]
    mults = check_multipliers(multipliers)
    screen = plan.method == "coarse-to-fine" and len(layer_list) > plan.keep_layers
    coarse_mults = (
        _coarse_multipliers(mults, goal.sign)
        if plan.coarse_multipliers is None
        else check_multipliers(plan.coarse_multipliers)
    )
    original = SteeringVector(directions, vector.layer_type, dict(vector.metadata))
    norms = norms_on(run, norm_prompts if norm_prompts is not None else reference_list, layer_list, vector.layer_type)
    swept = rescaled(run.backend, original, norms) if relative else original
    setup = _Setup(run=run, swept=swept, original=original, norms=norms)
    coarse_inputs = inputs.subset(COARSE_FRACTION, COARSE_MIN_PROMPTS) if screen else None
    fine_layers = plan.keep_layers if screen else len(layer_list)
    total = _n_cells(setup, inputs, fine_layers, len(mults))
    if coarse_inputs is not None:
        total += _n_cells(setup, coarse_inputs, len(layer_list), len(coarse_mults))
    if goal.target is not None:
        total += plan.bisect_steps * _n_cells(setup, inputs, 1, 1)
    bar = progress_bar(total, "Calibrating", run.settings.show_progress)
    try:
        runner = _Runner(setup, bar)
        parts = []
        if coarse_inputs is not None:
            screened = runner.cells(coarse_inputs, layer_list, coarse_mults, "coarse")
            parts.append(screened.table)
            kept = _kept_layers(screened, goal, plan.keep_layers, plan.keep_margin)
            layer_list = [layer for layer in directions if layer in kept]  # the caller's order
            if not bar.disable and len(kept) < plan.keep_layers:  # fewer grid cells than counted
                bar.total -= _n_cells(setup, inputs, plan.keep_layers - len(kept), len(mults))
                bar.refresh()
        measured = runner.cells(inputs, layer_list, mults, "grid")
        table = pd.concat([*parts, measured.table], ignore_index=True)
        best = _choose(table, goal)
        reached: bool | None = None
        if goal.target is not None and best is not None:
            reached = goal.sign * (best["effect"] - goal.target) >= 0
            if reached and plan.bisect_steps:
                refined = _bisect(runner, inputs, table, best, goal, plan.bisect_steps)
                table = pd.concat([table, refined], ignore_index=True)
                best = _choose(table, goal)
        if not bar.disable and bar.n != bar.total:  # bisection stopped early or did not run
            bar.total = bar.n
            bar.refresh()
    finally:
        bar.close()
    full = table["source"] != "coarse"
    table["within_budget"] = table[goal.damage] <= budget
    eligible = full & ~table["degenerate"] if "degenerate" in table else full
    table["pareto"] = False
    table.loc[eligible, "pareto"] = _pareto(
        table.loc[eligible, "effect"].to_numpy() * goal.sign, table.loc[eligible, goal.damage].to_numpy()
    )
    table = table.sort_values(["source", "layer", "multiplier"], key=_source_order, ignore_index=True)
    if "degenerate" in table:
        message = damage_warning(int(table["degenerate"].sum()), len(table), measured.mass_unsteered)
        if message:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
    name = "p_matching" if reader is None else reader.name
    table.attrs.update(
        {
            "metric": name,
            "max_kl": budget,
            "direction": direction,
            "baseline": measured.baseline,
            "target": goal.target,
            "damage": goal.damage,
            "relative": relative,
            "search": "coarse-to-fine" if screen else "exhaustive",
            "best": None if best is None else (int(best["layer"]), float(best["multiplier"])),
        }
    )
    return Calibration(
        best=None if best is None else _cell(best),
        table=table,
        vector=swept,
        metric=name,
        max_kl=budget,
        direction=direction,
        baseline=measured.baseline,
        target=goal.target,
        target_reached=reached,
        search="coarse-to-fine" if screen else "exhaustive",
    )


def _search_plan(search: SearchKind | Search, options: dict[str, Any]) -> tuple[Search, dict[str, Any]]:
    """The :class:`Search` value (``search=`` changed by any of its fields given by name) and calibrate's own
    keywords, each popped from ``options`` (what is left there are the settings)."""
    knobs = {name: options.pop(name) for name in _SEARCH_FIELDS & set(options)}  # type: ignore[misc]
    own = {name: options.pop(name) for name in _OWN_FIELDS & set(options)}  # type: ignore[misc]
    plan = search if isinstance(search, Search) else Search(method=search)
    return (replace(plan, **knobs) if knobs else plan), own


@dataclass(frozen=True)
class _Setup:
    """What every measurement of one :func:`calibrate` call shares (built by keyword)."""

    run: Run
    swept: SteeringVector
    original: SteeringVector
    norms: dict[int, float]


@dataclass(frozen=True)
class _Inputs:
    """The prompts one stage measures on, with what belongs to each prompt."""

    prompts: list[Any]
    references: list[Any]
    texts: list[list[int]] | None = None
    """Fluency texts, encoded (each scored from its first token)."""
    reader: BoundMetric | None = None
    """The metric bound after each of these prompts (token strings in context); None for A/B items."""
    letter_ids: list[list[int]] = field(default_factory=list)
    """A/B items: the two letters' ids after each prompt."""
    choices: list[int] = field(default_factory=list)
    """A/B items: which of the two letters matches (0 or 1)."""

    def subset(self, fraction: float, minimum: int) -> _Inputs:
        """Spread ``fraction`` of the prompts, references and texts (at least ``minimum`` of each)."""
        p = _spread(len(self.prompts), fraction, minimum)
        return _Inputs(
            prompts=[self.prompts[i] for i in p],
            references=[self.references[i] for i in _spread(len(self.references), fraction, minimum)],
            texts=None if self.texts is None else [self.texts[i] for i in _spread(len(self.texts), fraction, minimum)],
            reader=None if self.reader is None else _subset_reader(self.reader, p),
            letter_ids=[self.letter_ids[i] for i in p] if self.letter_ids else [],
            choices=[self.choices[i] for i in p] if self.choices else [],
        )


def _spread(n: int, fraction: float, minimum: int) -> list[int]:
    """``max(minimum, ceil(fraction * n))`` indices (at most ``n``), evenly spread over ``range(n)``."""
    k = min(n, max(minimum, math.ceil(fraction * n)))
    return [i * n // k for i in range(k)]


def _subset_reader(reader: BoundMetric, picked: list[int]) -> BoundMetric:
    """``reader`` for the prompts ``picked`` (their bindings, in that order)."""
    return replace(reader, bound=None if reader.bound is None else [reader.bound[i] for i in picked])


def _inputs(
    run: Run,
    items: list[Any] | None,
    reader: BoundMetric | None,
    prompts: list[Any],
    references: list[Any],
    texts: list[Any] | None,
) -> _Inputs:
    """Everything per prompt, checked (and token strings bound) before any forward pass."""
    encoded = None
    if texts is not None:
        encoded = run.prepare(texts).encoded
        if any(len(ids) < 2 for ids in encoded):
            raise InvalidArgumentError("each fluency text needs at least two tokens (the first one is the context).")
        encoded = [list(ids) for ids in encoded]
    if items is not None:
        tokenizer = run.backend.tokenizer
        return _Inputs(
            prompts=prompts,
            references=references,
            texts=encoded,
            letter_ids=[letter_pair(tokenizer, item.prompt, ("A", "B")) for item in items],
            choices=[0 if item.matching == "A" else 1 for item in items],
        )
    return _Inputs(prompts=prompts, references=references, texts=encoded, reader=reader)


def _prefixes(texts: list[list[int]]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    """Every prefix of every text (shared ones once), and per text its (prefix index, next token) pairs."""
    index: dict[tuple[int, ...], int] = {}
    scored = [
        [(index.setdefault(tuple(ids[: t + 1]), len(index)), ids[t + 1]) for t in range(len(ids) - 1)] for ids in texts
    ]
    return [list(prefix) for prefix in index], scored


def _n_cells(setup: _Setup, inputs: _Inputs, n_layers: int, n_mults: int) -> int:
    """Cells :func:`iter_steered_logits` yields for one stage: batches × layers × multipliers, per prompt set."""
    per_batch = max(1, setup.run.batch_size // n_mults)
    sizes = [len(inputs.prompts), len(inputs.references)]
    if inputs.texts is not None:
        sizes.append(len(_prefixes(inputs.texts)[0]))
    return sum(math.ceil(n / per_batch) for n in sizes) * n_layers * n_mults


def _coarse_multipliers(mults: list[float], sign: float) -> list[float]:
    """Three strengths to screen layers at: the weakest multiplier pointing the wanted way, the middle one and
    the strongest (where the budget bites: a layer that stays within it there can be pushed that far)."""
    wanted = [m for m in mults if m * sign > 0] or [m for m in mults if m != 0] or mults
    if len(wanted) <= 3:
        return wanted
    by_strength = sorted(wanted, key=abs)
    picked = {by_strength[0], by_strength[len(by_strength) // 2], by_strength[-1]}
    return [m for m in wanted if m in picked]


def _rank_layers(coarse: pd.DataFrame, goal: _Goal) -> list[int]:
    """Layers by their best admissible (within budget, not degenerate) effect; layers with none last, least damage first."""
    budget, sign, damage = goal.budget, goal.sign, goal.damage
    scores = []
    for layer, rows in coarse.groupby("layer", sort=False):
        ok = (
            rows[(rows[damage] <= budget) & ~rows["degenerate"]]
            if "degenerate" in rows
            else rows[rows[damage] <= budget]
        )
        if len(ok):
            scores.append(((1, float((ok["effect"] * sign).max())), int(layer)))
        else:
            scores.append(((0, -float(rows[damage].min())), int(layer)))
    return [layer for _, layer in sorted(scores, key=lambda pair: pair[0], reverse=True)]


def _kept_layers(coarse: _Measured, goal: _Goal, keep: int, margin: float | None) -> list[int]:
    """The layers the full grid runs on after screening (see ``keep_margin`` in :func:`calibrate`).

    A layer's gain is its best admissible, non-degenerate coarse effect minus the unsteered
    effect on the screening prompts, times ``sign``; layers are kept in rank order, at most
    ``keep``, while their gain is at least ``(1 - margin)`` times the best gain.
    """
    ranked = _rank_layers(coarse.table, goal)[:keep]
    if margin is None:
        return ranked
    rows, sign = coarse.table, goal.sign
    ok = rows[goal.damage] <= goal.budget
    if "degenerate" in rows:
        ok &= ~rows["degenerate"].astype(bool)
    best_effect = (rows[ok]["effect"] * sign).groupby(rows[ok]["layer"]).max()
    gains = {int(layer): value - coarse.baseline * sign for layer, value in best_effect.items()}
    top = gains.get(ranked[0], math.nan)
    if not top > 0:  # nothing gains within the budget: no signal to narrow on
        return ranked
    return [layer for layer in ranked if gains.get(layer, -math.inf) >= (1 - margin) * top]


class _Measured(NamedTuple):
    table: pd.DataFrame
    baseline: float
    """The metric's mean over the stage's prompts, unsteered."""
    mass_unsteered: float | None
    """The metric tokens' mean probability unsteered (None for metrics without tokens)."""


class _Runner:
    """Measures cells: effect and its damage on the prompts, KL on the references (and fluency), one sweep each."""

    def __init__(self, setup: _Setup, bar: Any) -> None:
        self.setup = setup
        self.bar = bar

    def _sweep(
        self,
        prompts: list[Any],
        layers: list[int],
        mults: list[float],
        measure: Callable[..., dict[str, Tensor]],
        clean_passes: dict[Any, Any] | None = None,
    ) -> tuple[dict[tuple[Any, float], dict[str, Tensor]], dict[str, Tensor]]:
        """Per cell, ``measure(cell, steered)``'s columns over every prompt; and once, the unsteered ones."""
        s = self.setup
        parts: dict[tuple[Any, float], list[dict[str, Tensor]]] = {}
        clean: dict[tuple[int, ...], dict[str, Tensor]] = {}
        for cell in steered_cells(s.run, s.swept, prompts, layers, mults, progress=self.bar, clean_passes=clean_passes):
            parts.setdefault((cell.layer, cell.multiplier), []).append(measure(cell, cell.steered))
            key = tuple(cell.indices)
            if key not in clean:
                clean[key] = measure(cell, cell.unsteered)
        return {key: _joined(values) for key, values in parts.items()}, _joined(list(clean.values()))

    def _effects(self, inputs: _Inputs) -> Callable[[LogitsCell, Tensor], dict[str, Tensor]]:
        """The metric, the KL where it is read and the mass of its tokens, per prompt of a cell."""

        def measure(cell: LogitsCell, logits: Tensor) -> dict[str, Tensor]:
            if inputs.reader is not None:
                reading = inputs.reader.read(logits, cell.unsteered, cell.indices)
                out = {"kl_prompts": reading.kl, "effect": reading.effect}
                if reading.mass is not None:
                    out["target_mass"] = reading.mass
                return out
            out = {"kl_prompts": kl_divergence(logits, cell.unsteered).double().cpu()}
            pairs = [  # A/B items: P(matching letter) normalised over the two letters, and P(A) + P(B)
                letter_probability(logits[row], inputs.letter_ids[index], inputs.choices[index])
                for row, index in enumerate(cell.indices)
            ]
            out["effect"] = torch.tensor([p for p, _ in pairs], dtype=torch.float64)
            out["target_mass"] = torch.tensor([m for _, m in pairs], dtype=torch.float64)
            return out

        return measure

    def _fluency(
        self, texts: list[list[int]], layers: list[int], mults: list[float], clean_passes: dict[Any, Any] | None = None
    ) -> dict[tuple[Any, float], float]:
        """Mean increase of the texts' negative log-likelihood per token under steering, per cell.

        Each prefix of each text is a prompt whose next-token logits score the token after it
        (a causal model's logits at a position see only the positions before it).
        """
        prefixes, scored = _prefixes(texts)
        following: dict[int, list[tuple[int, int]]] = {}  # prefix -> (text, the token after it there)
        for text, pairs in enumerate(scored):
            for prefix, token in pairs:
                following.setdefault(prefix, []).append((text, token))
        s = self.setup
        sums: dict[tuple[Any, float], list[float]] = {}  # per cell and text: log P unsteered - log P steered
        # Fluency texts are ids already, scored from their first token: no steering start, no BOS decision.
        run = s.run.with_settings(steer_from=None, prepend_bos=None)
        for cell in steered_cells(run, s.swept, prefixes, layers, mults, progress=self.bar, clean_passes=clean_passes):
            steered = torch.log_softmax(cell.steered.float(), -1)
            unsteered = torch.log_softmax(cell.unsteered.float(), -1)
            acc = sums.setdefault((cell.layer, cell.multiplier), [0.0] * len(texts))
            for row, prefix in enumerate(cell.indices):
                for text, token in following[prefix]:
                    acc[text] += float(unsteered[row, token]) - float(steered[row, token])
        return {
            key: float(np.mean([total / (len(ids) - 1) for total, ids in zip(acc, texts)])) for key, acc in sums.items()
        }

    def cells(
        self,
        inputs: _Inputs,
        layers: list[int],
        mults: list[float],
        source: str,
        clean_passes: dict[Any, Any] | None = None,
    ) -> _Measured:
        """Every cell's row; ``clean_passes`` (see :func:`iter_steered_logits`) reuses clean passes across calls."""
        s = self.setup
        effects, clean = self._sweep(inputs.prompts, layers, mults, self._effects(inputs), clean_passes)
        damages, _ = self._sweep(
            inputs.references,
            layers,
            mults,
            lambda cell, logits: {"kl": kl_divergence(logits, cell.unsteered).double().cpu()},
            clean_passes,
        )
        fluency = self._fluency(inputs.texts, layers, mults, clean_passes) if inputs.texts is not None else None
        mass_unsteered = float(clean["target_mass"].mean()) if "target_mass" in clean else None
        rows = []
        for layer in layers:
            vec_norm = float(s.swept.layer_activations[layer].float().norm())
            original_norm = float(s.original.layer_activations[layer].float().norm())
            for m in mults:
                values, kl = effects[(layer, m)], damages[(layer, m)]["kl"].double()
                effect = values["effect"]
                row = {
                    "layer": layer,
                    "multiplier": m,
                    "absolute_multiplier": m * vec_norm / original_norm if original_norm > 0 else math.nan,
                    "relative_strength": abs(m) * vec_norm / s.norms[layer] if s.norms[layer] > 0 else math.nan,
                    "effect": float(effect.mean()),
                    "effect_std": float(effect.std()) if effect.numel() > 1 else 0.0,
                    "kl": float(kl.mean()),
                    "kl_max": float(kl.max()),
                    "kl_prompts": float(values["kl_prompts"].mean()),
                }
                if mass_unsteered is not None:
                    mass = float(values["target_mass"].mean())
                    row.update(
                        {
                            "target_mass": mass,
                            "target_mass_unsteered": mass_unsteered,
                            "degenerate": bool(degenerate(mass, mass_unsteered)),
                        }
                    )
                if fluency is not None:
                    increase = fluency[(layer, float(m))]
                    row.update({"nll_increase": increase, "perplexity_ratio": math.exp(increase)})
                row.update({"n_prompts": len(inputs.prompts), "source": source})
                rows.append(row)
        return _Measured(pd.DataFrame(rows), float(clean["effect"].mean()), mass_unsteered)


def _joined(parts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    return {column: torch.cat([part[column] for part in parts]) for column in parts[0]}


def _source_order(column: pd.Series) -> pd.Series:
    """Sort key: coarse screening rows first, then grid and bisection rows together."""
    if column.name == "source":
        return column.map({"coarse": 0}).fillna(1)
    return column


def _choose(table: pd.DataFrame, goal: _Goal) -> pd.Series | None:
    """The best admissible row (see :func:`calibrate`), or None when no row is within the budget.

    Only rows measured on every prompt count (never the coarse screening), and never a degenerate one.
    """
    damage = goal.damage
    ok = table[(table[damage] <= goal.budget) & (table["source"] != "coarse")]
    if "degenerate" in ok:
        ok = ok[~ok["degenerate"].astype(bool)]
    if ok.empty:
        return None
    score = ok["effect"] * goal.sign
    if goal.target is not None:
        reaching = ok[score >= goal.target * goal.sign]
        if not reaching.empty:  # the cheapest cell that does the job
            return reaching.sort_values([damage, "relative_strength"], kind="stable").iloc[0]
    ranked = ok.assign(_score=score).sort_values(["_score", damage], ascending=[False, True], kind="stable")
    return ranked.iloc[0].drop("_score")


def _bisect(
    runner: _Runner, inputs: _Inputs, table: pd.DataFrame, best: pd.Series, goal: _Goal, steps: int
) -> pd.DataFrame:
    """Refine the multiplier of ``best``'s layer between the weaker neighbour and ``best`` to just reach ``goal``."""
    layer, high = int(best["layer"]), float(best["multiplier"])
    grid = table[table["source"] != "coarse"]
    same = grid[(grid["layer"] == layer) & (np.sign(grid["multiplier"]) == np.sign(high))]
    weaker = same[same["multiplier"].abs() < abs(high)]
    low = float(weaker.loc[weaker["multiplier"].abs().idxmax(), "multiplier"]) if len(weaker) else 0.0
    rows = []
    passes: dict[Any, Any] = {}  # one layer, the same batches at every step: the clean passes run once
    for _ in range(steps):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        row = runner.cells(inputs, [layer], [middle], "bisect", passes).table.iloc[0]
        rows.append(row)
        ok = not bool(row.get("degenerate", False))
        if goal.sign * (row["effect"] - goal.target) >= 0 and row[goal.damage] <= goal.budget and ok:
            high = middle
        else:
            low = middle
    extra = pd.DataFrame(rows, columns=table.columns).reset_index(drop=True)
    extra["layer"] = extra["layer"].astype(int)
    return extra


def _pareto(score: np.ndarray, kl: np.ndarray) -> np.ndarray:
    """Rows no other row beats on both axes (effect at least as good and KL at most as high, one strictly)."""
    better_or_equal = (score[None, :] >= score[:, None]) & (kl[None, :] <= kl[:, None])
    strictly = (score[None, :] > score[:, None]) | (kl[None, :] < kl[:, None])
    return ~(better_or_equal & strictly).any(axis=1)


def _cell(row: pd.Series) -> CalibrationCell:
    return CalibrationCell(
        layer=int(row["layer"]),
        multiplier=float(row["multiplier"]),
        absolute_multiplier=float(row["absolute_multiplier"]),
        effect=float(row["effect"]),
        kl=float(row["kl"]),
        relative_strength=float(row["relative_strength"]),
        kl_prompts=float(row["kl_prompts"]),
        target_mass=float(row["target_mass"]) if "target_mass" in row else None,
        target_mass_unsteered=float(row["target_mass_unsteered"]) if "target_mass_unsteered" in row else None,
    )
