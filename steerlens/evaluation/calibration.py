"""Pick a layer and a strength under a damage budget: the effect you want against the KL you pay.

:func:`calibrate` sweeps layer × multiplier with the fast sweep
(:func:`~steerlens.evaluation.sweep.iter_steered_logits`) twice: on ``prompts``, where
``metric`` measures the wanted effect, and on ``reference_prompts``, where the
damage is the KL divergence of the steered from the unsteered next-token
distribution (text the steering should leave alone). The best cell is the
strongest effect whose mean KL stays within ``max_kl``; with a ``target`` effect,
the cheapest cell that reaches it, its multiplier refined by bisection. Every cell
is kept in a table with its Pareto-front membership, and
:meth:`Calibration.plot` draws effect against damage.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Literal

import numpy as np
import pandas as pd
import torch

from steerlens.analysis.norms import relative_vector, residual_norms
from steerlens.analysis.prompt_activations import vector_layers
from steerlens.backends import backend_for
from steerlens.checks import check_multipliers, finite_number
from steerlens.errors import InvalidArgumentError
from steerlens.evaluation.comparison import ItemLike, as_ab_items, letter_pair, letter_probability
from steerlens.evaluation.continuation import continuation_logprob
from steerlens.evaluation.metrics import MetricFn, bind_per_prompt, kl_divergence, metric_values, resolve_metric
from steerlens.evaluation.sweep import iter_steered_logits
from steerlens.hooks import Operator
from steerlens.tokens import PaddingSide, Prompts, check_prepend_bos, check_prompt_inputs, prepare_prompts
from steerlens.tokens.starts import SteerFrom
from steerlens.vector import SteeringVector

Direction = Literal["increase", "decrease"]
Damage = Literal["kl", "fluency"]
DEFAULT_MULTIPLIERS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Absolute multipliers tried by default (negated when the metric should decrease)."""
DEFAULT_RELATIVE_MULTIPLIERS: tuple[float, ...] = (0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
"""Multipliers in residual-norm units tried by default with ``relative=True``."""


@dataclass(frozen=True)
class CalibrationCell:
    """One layer × multiplier of a calibration, as measured."""

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


@dataclass
class Calibration:
    """The outcome of :func:`calibrate`: the chosen cell, every cell measured, and how to use them."""

    best: CalibrationCell | None
    """The strongest effect within the budget (with a target: the cheapest cell reaching it); None if no
    cell is within the budget."""
    table: pd.DataFrame
    """One row per cell measured (grid and bisection), with ``within_budget`` and ``pareto`` columns."""
    vector: SteeringVector
    """The vector swept: ``relative_vector(...)`` of the original with ``relative=True``, else the original."""
    metric: str
    max_kl: float
    direction: Direction
    baseline: float
    """The metric's mean over ``prompts`` without steering."""
    target: float | None = None
    target_reached: bool | None = None

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
        """Effect against damage for every cell, the Pareto front and the budget marked (a matplotlib Figure)."""
        from steerlens.evaluation.plots import plot_calibration

        return plot_calibration(self.table, **kwargs)

    def _best(self) -> CalibrationCell:
        if self.best is None:
            raise InvalidArgumentError(
                f"no cell kept the KL within max_kl={self.max_kl:g}; raise max_kl or try smaller multipliers "
                "(see .table for what each cell cost)."
            )
        return self.best


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
    norm_prompts: Prompts | None = None,
    bisect_steps: int = 8,
    tokenizer: Any = None,
    operator: Operator | None = None,
    batch_size: int = 32,
    show_progress: bool = False,
    steer_from: SteerFrom = None,
    fluency_texts: Prompts | None = None,
    damage: Damage = "kl",
    padding_side: PaddingSide | None = None,
    prepend_bos: bool | None = None,
) -> Calibration:
    """Sweep ``layers`` × ``multipliers`` and choose the cell with the most effect under a KL budget.

    * effect: ``metric(steered, unsteered)`` (a name, a token metric such as
      :func:`~steerlens.evaluation.metrics.prob_share`, or any callable) at the last
      token of each of ``prompts``, averaged;
    * damage: KL(steered ‖ unsteered) of the next-token distribution, averaged over
      ``reference_prompts`` (text whose continuation steering should not change);
    * budget: a cell is admissible when its damage is at most ``max_kl`` nats.

    ``direction`` says whether the metric should go up or down. Without ``target``
    the best cell is the admissible one with the largest (smallest) effect; with
    ``target``, the admissible cell reaching it with the least damage, whose
    multiplier is then bisected ``bisect_steps`` times between it and the next weaker
    cell of its layer, to reach the target with as little strength as possible.

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
    backend = backend_for(model, tokenizer)
    backend.check_tokenizer()
    check_prepend_bos(prepend_bos)
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
    if isinstance(bisect_steps, bool) or not isinstance(bisect_steps, int) or bisect_steps < 0:
        raise InvalidArgumentError(f"bisect_steps must be a non-negative int, got {bisect_steps!r}.")
    goal = None if target is None else finite_number(target, "target")
    bound = None
    if items is not None:
        name, fn = "p_matching", None
        letter_ids = [letter_pair(backend.tokenizer, item.prompt, ("A", "B")) for item in items]
        choices = [0 if item.matching == "A" else 1 for item in items]
    else:
        name, fn = resolve_metric(metric)  # type: ignore[arg-type]
        bound = bind_per_prompt(fn, backend.tokenizer, prompt_list)  # token strings in each prompt's context
        letter_ids, choices = [], []
    directions = vector_layers(backend, vector, layers)
    layer_list = list(directions)
    if multipliers is None:
        defaults = DEFAULT_RELATIVE_MULTIPLIERS if relative else DEFAULT_MULTIPLIERS
        multipliers = [m if direction == "increase" else -m for m in defaults]
    mults = check_multipliers(multipliers)
    original = SteeringVector(directions, vector.layer_type, dict(vector.metadata))
    tokens = {"padding_side": padding_side, "prepend_bos": prepend_bos}
    norms = residual_norms(
        backend,
        norm_prompts if norm_prompts is not None else reference_list,
        layer_list,
        layer_type=vector.layer_type,
        batch_size=batch_size,
        **tokens,
    )
    swept = relative_vector(backend, original, norms=norms) if relative else original
    run = _Runner(
        backend,
        swept,
        original,
        norms,
        prompt_list,
        reference_list,
        fn,
        name,
        operator,
        batch_size,
        show_progress,
        steer_from,
        texts,
        "nll_increase" if damage == "fluency" else "kl",
        letter_ids,
        choices,
        bound,
        tokens,
    )
    table = run.cells(layer_list, mults)
    table["source"] = "grid"
    baseline = run.baseline
    sign = 1.0 if direction == "increase" else -1.0
    best = _choose(table, budget, sign, goal, run.damage)
    reached: bool | None = None
    if goal is not None and best is not None:
        reached = sign * (best["effect"] - goal) >= 0
        if reached and bisect_steps:
            extra = _bisect(run, table, best, goal, sign, budget, bisect_steps)
            table = pd.concat([table, extra], ignore_index=True)
            best = _choose(table, budget, sign, goal, run.damage)
    table["within_budget"] = table[run.damage] <= budget
    table["pareto"] = _pareto(table["effect"].to_numpy() * sign, table[run.damage].to_numpy())
    table = table.sort_values(["layer", "multiplier"], ignore_index=True)
    table.attrs.update(
        {
            "metric": name,
            "max_kl": budget,
            "direction": direction,
            "baseline": baseline,
            "target": goal,
            "damage": run.damage,
            "relative": relative,
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
        baseline=baseline,
        target=goal,
        target_reached=reached,
    )


@dataclass
class _Runner:
    """Measures cells: effect on the prompts and KL on the references, one fast sweep each."""

    backend: Any
    swept: SteeringVector
    original: SteeringVector
    norms: dict[int, float]
    prompts: list[Any]
    references: list[Any]
    fn: MetricFn
    name: str
    operator: Operator | None
    batch_size: int
    show_progress: bool
    steer_from: SteerFrom = None
    texts: list[Any] | None = None
    damage: str = "kl"
    """The column the budget applies to: ``"kl"`` or ``"nll_increase"``."""
    letter_ids: list[list[int]] = field(default_factory=list)
    choices: list[int] = field(default_factory=list)
    bound: list[MetricFn] | None = None
    """``fn`` bound after each of ``prompts`` (token strings in context), or None if it names no strings."""
    tokens: dict[str, Any] = field(default_factory=dict)
    """``padding_side`` and ``prepend_bos``, for every pass."""
    baseline: float = math.nan

    def _values(self, fn: MetricFn | None, cell: Any, unsteered: bool = False, bound: Any = None) -> torch.Tensor:
        if fn is not None:
            steered = cell.unsteered if unsteered else cell.steered
            return metric_values(self.name, fn, bound, steered, cell.unsteered, cell.indices)
        logits = cell.unsteered if unsteered else cell.steered  # A/B items: P(matching letter), normalised
        return torch.tensor(
            [
                letter_probability(logits[row], self.letter_ids[index], self.choices[index])[0]
                for row, index in enumerate(cell.indices)
            ],
            dtype=torch.float64,
        )

    def _sweep(
        self, prompts: list[Any], fn: MetricFn | None, layers: list[int], mults: list[float], bound: Any = None
    ) -> dict:
        """``{(layer, multiplier): per-prompt values}`` and, once, the unsteered values of ``fn``."""
        values: dict[tuple[int, float], list[torch.Tensor]] = {}
        clean: list[torch.Tensor] = []
        seen: set[tuple[int, ...]] = set()
        for cell in iter_steered_logits(
            self.backend,
            self.swept,
            prompts,
            layers,
            mults,
            batch_size=self.batch_size,
            operator=self.operator,
            show_progress=self.show_progress,
            steer_from=self.steer_from,
            **self.tokens,
        ):
            values.setdefault((cell.layer, cell.multiplier), []).append(self._values(fn, cell, bound=bound))
            key = tuple(cell.indices)
            if key not in seen:
                seen.add(key)
                clean.append(self._values(fn, cell, unsteered=True, bound=bound))
        out = {key: torch.cat(parts) for key, parts in values.items()}
        out["clean"] = torch.cat(clean)
        return out

    def _fluency(self, layers: list[int], mults: list[float]) -> dict[tuple[int, float], float]:
        """Mean increase of the texts' negative log-likelihood per token under steering, per cell."""
        encoded = prepare_prompts(self.backend, self.texts or [], **self.tokens).encoded
        if any(len(ids) < 2 for ids in encoded):
            raise InvalidArgumentError("each fluency text needs at least two tokens (the first one is the context).")
        frame = continuation_logprob(
            self.backend,
            self.swept,
            [ids[:1] for ids in encoded],
            [ids[1:] for ids in encoded],
            mults,
            layers,
            batch_size=self.batch_size,
            operator=self.operator,
            padding_side=self.tokens.get("padding_side"),
        )
        frame["increase"] = (frame["logprob_unsteered"] - frame["logprob_steered"]) / frame["n_tokens"]
        return {
            (int(layer), float(m)): float(v)
            for (layer, m), v in frame.groupby(["layer", "multiplier"])["increase"].mean().items()
        }

    def cells(self, layers: list[int], mults: list[float]) -> pd.DataFrame:
        effects = self._sweep(self.prompts, self.fn, layers, mults, self.bound)
        damages = self._sweep(self.references, kl_divergence, layers, mults)
        fluency = self._fluency(layers, mults) if self.texts is not None else None
        self.baseline = float(effects.pop("clean").mean())
        damages.pop("clean")
        rows = []
        for layer in layers:
            vec_norm = float(self.swept.layer_activations[layer].float().norm())
            original_norm = float(self.original.layer_activations[layer].float().norm())
            for m in mults:
                effect, kl = effects[(layer, m)], damages[(layer, m)]
                rows.append(
                    {
                        "layer": layer,
                        "multiplier": m,
                        "absolute_multiplier": m * vec_norm / original_norm if original_norm > 0 else math.nan,
                        "relative_strength": abs(m) * vec_norm / self.norms[layer]
                        if self.norms[layer] > 0
                        else math.nan,
                        "effect": float(effect.mean()),
                        "effect_std": float(effect.std()) if effect.numel() > 1 else 0.0,
                        "kl": float(kl.mean()),
                        "kl_max": float(kl.max()),
                    }
                )
                if fluency is not None:
                    increase = fluency[(layer, float(m))]
                    rows[-1].update({"nll_increase": increase, "perplexity_ratio": math.exp(increase)})
        return pd.DataFrame(rows)


def _choose(
    table: pd.DataFrame, budget: float, sign: float, goal: float | None, damage: str = "kl"
) -> pd.Series | None:
    """The best admissible row (see :func:`calibrate`), or None when no row is within the budget."""
    ok = table[table[damage] <= budget]
    if ok.empty:
        return None
    score = ok["effect"] * sign
    if goal is not None:
        reaching = ok[score >= goal * sign]
        if not reaching.empty:  # the cheapest cell that does the job
            return reaching.sort_values([damage, "relative_strength"], kind="stable").iloc[0]
    ranked = ok.assign(_score=score).sort_values(["_score", damage], ascending=[False, True], kind="stable")
    return ranked.iloc[0].drop("_score")


def _bisect(
    run: _Runner, table: pd.DataFrame, best: pd.Series, goal: float, sign: float, budget: float, steps: int
) -> pd.DataFrame:
    """Refine the multiplier of ``best``'s layer between the weaker neighbour and ``best`` to just reach ``goal``."""
    layer, high = int(best["layer"]), float(best["multiplier"])
    same = table[(table["layer"] == layer) & (np.sign(table["multiplier"]) == np.sign(high))]
    weaker = same[same["multiplier"].abs() < abs(high)]
    low = float(weaker.loc[weaker["multiplier"].abs().idxmax(), "multiplier"]) if len(weaker) else 0.0
    rows = []
    for _ in range(steps):
        middle = (low + high) / 2
        if middle in (low, high):
            break
        row = run.cells([layer], [middle]).iloc[0]
        rows.append(row)
        if sign * (row["effect"] - goal) >= 0 and row[run.damage] <= budget:
            high = middle
        else:
            low = middle
    extra = pd.DataFrame(rows, columns=table.columns.drop("source", errors="ignore")).reset_index(drop=True)
    extra["layer"] = extra["layer"].astype(int)
    extra["source"] = "bisect"
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
    )
