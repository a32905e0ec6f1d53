"""Aggregators turn per-pair activations into one steering direction per layer.

An aggregator is any callable ``(pos_acts, neg_acts) -> vector`` on tensors of
shape ``[n_pairs, d_model]``. Training streams batches through an
:class:`Accumulator`: the mean aggregator keeps running sums only (memory does
not grow with the number of pairs); any other aggregator collects the rows and
is called once at the end.

``pca_aggregator`` and ``logistic_aggregator`` give the directions of the
``steering-vectors`` library (0.12.2): see their docstrings for the exact recipe.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Callable, Protocol

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.errors import AggregatorError
from steerlens.training import distributed

Aggregator = Callable[[Tensor, Tensor], Tensor]

NEGLIGIBLE = 1e-5
"""Differences up to this fraction of the activations' mean norm are float noise, not a direction.

Identical prompts read in different batches differ by ~1e-7 of the norm in float32; a real
contrast differs by far more than 1e-5 of it.
"""


class Accumulator(Protocol):
    """Receives batches of paired activations, then yields the layer's vector."""

    def update(self, pos: Float[Tensor, "batch d_model"], neg: Float[Tensor, "batch d_model"]) -> None: ...

    def merge_ranks(self) -> None:
        """Combine what every ``torch.distributed`` rank received (called on all ranks)."""
        ...

    def result(self) -> Float[Tensor, "d_model"]: ...


def _result_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision activations give a float32 vector; the hook casts it back when applied.
    return torch.promote_types(dtype, torch.float32)


class MeanAggregator:
    """Mean of (positive - negative) over pairs; streams running sums in float64."""

    def __call__(self, pos: Tensor, neg: Tensor) -> Tensor:
        acc = self.accumulator()
        acc.update(pos, neg)
        return acc.result()

    def accumulator(self) -> Accumulator:
        return _RunningMean()

    def __repr__(self) -> str:
        return "mean_aggregator()"


class _RunningMean:
    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.count = 0
        self.norm_sum = 0.0  # of every activation row, to tell a negligible mean from a real one
        self.dtype = torch.float32

    def update(self, pos: Tensor, neg: Tensor) -> None:
        # sum(pos - neg) = sum(pos) - sum(neg): a batch's rows need not pair up, nor be as many
        # positives as negatives (training batches prompts by length); the counts of pairs
        # add up over all batches.
        diff = pos.double().sum(dim=0) - neg.double().sum(dim=0)
        self.total = diff if self.total is None else self.total + diff
        self.count += pos.shape[0]
        self.norm_sum += float(_row_norms(pos).sum() + _row_norms(neg).sum())
        self.dtype = _result_dtype(pos.dtype)

    def merge_ranks(self) -> None:
        if self.total is None:
            raise AggregatorError("a rank got no pairs; give every rank at least one pair of its shard.")
        # Sums (float64) and counts add up exactly: the mean of the whole set.
        self.total = distributed.all_sum(self.total)
        self.count = int(distributed.all_sum(torch.tensor(self.count)).item())
        self.norm_sum = float(distributed.all_sum(torch.tensor(self.norm_sum, dtype=torch.float64)).item())

    def result(self) -> Tensor:
        if self.total is None:
            raise AggregatorError("no activations were aggregated; pass at least one sample.")
        mean = self.total / self.count
        scale = self.norm_sum / (2 * self.count)
        if float(mean.abs().max()) <= NEGLIGIBLE * scale:
            # A warning, not an error: the zero vector is the mean difference, and steering with it is a no-op.
            warnings.warn(
                "every positive prompt has the same activations as its negative one, so the mean vector is "
                f"zero (or negligible: at most {NEGLIGIBLE:g} x the activations' mean norm {scale:.3g}, float "
                "noise); check that the pairs differ (and read_token_index points at a token that differs).",
                RuntimeWarning,
                stacklevel=3,
            )
        return mean.to(self.dtype)


class _Collector:
    """Keeps every row, then calls a whole-data aggregator once."""

    def __init__(self, fn: Aggregator) -> None:
        self.fn = fn
        self.pos: list[Tensor] = []
        self.neg: list[Tensor] = []

    def update(self, pos: Tensor, neg: Tensor) -> None:
        self.pos.append(pos)
        self.neg.append(neg)

    def merge_ranks(self) -> None:
        if not self.pos:
            raise AggregatorError("a rank got no pairs; give every rank at least one pair of its shard.")
        # The whole set's rows, in rank order, on every rank.
        self.pos = [distributed.all_gather_rows(torch.cat(self.pos))]
        self.neg = [distributed.all_gather_rows(torch.cat(self.neg))]

    def result(self) -> Tensor:
        if not self.pos:
            raise AggregatorError("no activations were aggregated; pass at least one sample.")
        return call_aggregator(self.fn, torch.cat(self.pos), torch.cat(self.neg))


def accumulator_for(aggregator: Aggregator) -> Accumulator:
    """A streaming accumulator when the aggregator offers one, else a collector."""
    make = getattr(aggregator, "accumulator", None)
    return make() if callable(make) else _Collector(aggregator)


def call_aggregator(fn: Aggregator, pos: Tensor, neg: Tensor) -> Tensor:
    """Call a user or built-in aggregator and check what it returns."""
    out = fn(pos, neg)
    if not isinstance(out, Tensor):
        raise AggregatorError(
            f"aggregator {fn!r} returned {type(out).__name__}; it must return a torch.Tensor "
            f"of shape [{pos.shape[-1]}]."
        )
    if out.shape != pos.shape[-1:]:
        raise AggregatorError(
            f"aggregator {fn!r} returned shape {tuple(out.shape)}; expected ({pos.shape[-1]},), "
            "one value per residual dimension."
        )
    if not torch.isfinite(out).all():
        raise AggregatorError(
            f"aggregator {fn!r} returned NaN or infinite values; check its inputs "
            "(e.g. identical positive and negative prompts make PCA/logistic undefined)."
        )
    return out


def mean_aggregator() -> Aggregator:
    """Mean difference of activations: the classic steering vector (default).

    Example:
        >>> agg = mean_aggregator()
        >>> agg(torch.ones(2, 3), torch.zeros(2, 3))
        tensor([1., 1., 1.])
    """
    return MeanAggregator()


def _paired_deltas(name: str, pos: Tensor, neg: Tensor) -> Tensor:
    """Check paired activations and return ``pos - neg`` in float64 (``[n_pairs, d_model]``)."""
    if not isinstance(pos, Tensor) or not isinstance(neg, Tensor):
        raise AggregatorError(
            f"{name} needs two torch.Tensors of shape [n_pairs, d_model]; got "
            f"{type(pos).__name__} and {type(neg).__name__}."
        )
    if pos.ndim != 2 or pos.shape != neg.shape:
        raise AggregatorError(
            f"{name} needs positive and negative activations of the same shape [n_pairs, d_model] "
            f"(row i of each is one contrast pair); got {tuple(pos.shape)} and {tuple(neg.shape)}."
        )
    if pos.shape[0] == 0:
        raise AggregatorError(f"{name} got no pairs; pass at least one (positive, negative) pair.")
    if not (torch.isfinite(pos).all() and torch.isfinite(neg).all()):
        raise AggregatorError(
            f"{name} got NaN or infinite activations; the model produced non-finite values "
            "(check its dtype, try float32, and the prompts)."
        )
    deltas = pos.double() - neg.double()
    largest, scale = float(deltas.abs().max()), _mean_norm(pos, neg)
    if largest <= NEGLIGIBLE * scale:
        raise AggregatorError(
            f"{name}: every positive activation equals its negative (all differences are zero or negligible: "
            f"the largest is {largest:.3g}, at most {NEGLIGIBLE:g} x the activations' mean norm {scale:.3g}, i.e. "
            "float noise), so there is no direction to find; check that the pairs really differ at the read token."
        )
    return deltas


def _mean_norm(pos: Tensor, neg: Tensor) -> float:
    """Mean L2 norm of all positive and negative activation rows (float64)."""
    return float(_row_norms(torch.cat([pos, neg])).mean())


def _row_norms(rows: Tensor) -> Tensor:
    """L2 norm of each row in float64, scaled first so that huge values (1e300) do not overflow."""
    rows = rows.double()
    peak = rows.abs().amax(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
    return peak.squeeze(-1) * (rows / peak).norm(dim=-1)


class PCAAggregator:
    """First principal direction of the pairwise differences, uncentred (steering-vectors) or centred (repeng).

    ``center=False`` (steering-vectors 0.12.2's PCA): steering-vectors stacks the
    differences ``d_i = pos_i - neg_i`` with their negatives ``-d_i`` (so the data is
    centred by construction), takes the top principal direction of that uncentred
    matrix, i.e. the top right-singular vector of the difference matrix ``D``, and
    multiplies it by ``sign(mean_i(d_i . v))``. Here the same direction is computed in
    float64 from ``D`` directly (the singular vectors of ``[D; -D]`` are those of ``D``).
    repeng's ``method="pca_center"`` (each pair centred on its midpoint, rows
    ``+-d_i / 2``) is this same direction.

    ``center=True`` (scikit-learn's PCA of ``D``, repeng's ``method="pca_diff"``, the
    default of repeng's ``ControlVector.train``): the differences are centred on their
    mean first, so the direction is the one along which the pairs' differences *vary*
    most, which need not be the one along which they point on average (with a strong
    common shift and varied noise, the two can be nearly orthogonal). Its sign follows
    repeng's rule: a vote over pairs, keeping the sign under which more pairs have the
    positive example projecting above the negative one (``d_i . v > 0``); a tied vote
    (which repeng leaves at scikit-learn's arbitrary sign) is settled here by
    ``sign(mean_i(d_i . v))``, as steering-vectors does.

    Both return unit norm (as steering-vectors' PCA and repeng's components), so one
    multiplier means the same size for either. Where the peers silently degrade, this
    raises :class:`~steerlens.errors.AggregatorError`: all-zero differences (no
    direction at all), centred differences that are all zero (one pair, or every pair
    differing by the same vector: nothing varies), and a sign that cannot be decided
    (steering-vectors would return a zero vector). When the top two singular values
    tie, the direction is not unique and a ``RuntimeWarning`` says so.
    """

    #: Relative size of ``mean_i(d_i . v)`` (to ``mean_i |d_i . v|``) below which the sign is undetermined.
    sign_tolerance = 1e-9
    #: Relative gap between the top two singular values below which the direction is reported as not unique.
    tie_tolerance = 1e-6

    def __init__(self, center: bool = False) -> None:
        if not isinstance(center, bool):
            raise AggregatorError(f"pca_aggregator(center=...) takes True or False, got {center!r}.")
        self.center = center

    def __call__(self, pos: Tensor, neg: Tensor) -> Tensor:
        deltas = _paired_deltas(repr(self), pos, neg)
        data = deltas - deltas.mean(dim=0) if self.center else deltas
        if self.center and float(data.abs().max()) <= NEGLIGIBLE * _mean_norm(pos, neg):
            raise AggregatorError(
                f"{self!r}: the differences do not vary (got {deltas.shape[0]} pair(s); after subtracting their "
                "mean, every difference is zero or float noise), so centred PCA has no direction. Pass at least "
                "two pairs that differ in different ways, or use pca_aggregator() or mean_aggregator()."
            )
        _, s, vh = torch.linalg.svd(data, full_matrices=False)
        if s.numel() > 1 and float(s[0] - s[1]) <= self.tie_tolerance * float(s[0]):
            warnings.warn(
                f"{self!r}: the top two singular values of the differences are equal "
                f"({float(s[0]):.6g} vs {float(s[1]):.6g}), so the principal direction is not unique; "
                "the vector returned is one of several equally good ones.",
                RuntimeWarning,
                stacklevel=2,
            )
        direction = vh[0]
        projections = deltas @ direction
        if self.center:
            # repeng's vote: pairs whose positive projects above its negative, against those below.
            vote = int((projections > 0).sum()) - int((projections < 0).sum())
            if vote != 0:
                direction = direction if vote > 0 else -direction
                return (direction / direction.norm()).to(device=pos.device, dtype=_result_dtype(pos.dtype))
        mean_projection = float(projections.mean())
        if abs(mean_projection) <= self.sign_tolerance * float(projections.abs().mean()):
            raise AggregatorError(
                f"{self!r}: the mean difference is orthogonal to the principal direction, so its "
                "sign (positive vs negative) is undetermined (steering-vectors would return a zero "
                "vector); the pairs cancel out. Check that every pair lists the positive prompt "
                "first, or use mean_aggregator()."
            )
        if mean_projection < 0:
            direction = -direction
        direction = direction / direction.norm()
        return direction.to(device=pos.device, dtype=_result_dtype(pos.dtype))

    def __repr__(self) -> str:
        return "pca_aggregator(center=True)" if self.center else "pca_aggregator()"


def pca_aggregator(*, center: bool = False) -> Aggregator:
    """First principal direction of the pairwise differences, unit norm.

    ``center=False`` (default, steering-vectors' meaning): the top right-singular
    vector of the matrix of differences ``pos - neg`` taken uncentred
    (steering-vectors appends every difference negated, which centres the data and
    leaves the singular vectors unchanged; repeng's ``"pca_center"`` gives the same
    direction). Its sign makes the mean projection of the differences positive.

    ``center=True``: scikit-learn's ``PCA(n_components=1)`` of the differences, which
    subtracts their mean first (repeng's ``"pca_diff"``, its ``ControlVector.train``
    default). That is the direction along which the differences vary most around
    their mean, not the mean itself: on real models it can point far from the
    uncentred one. Its sign follows repeng's rule: the one under which more pairs
    have the positive example projecting above the negative one (a tie falls back
    to the mean projection). See :class:`PCAAggregator`.

    Both have unit norm, like steering-vectors' PCA (``mean_aggregator`` keeps the
    size of the mean difference instead): choose multipliers on the scale of the
    residual norms. ``center`` is keyword-only: ``pca_aggregator()`` keeps
    steering-vectors' signature.

    Raises :class:`~steerlens.errors.AggregatorError` for non-finite activations,
    all-zero differences, differences that do not vary (``center=True`` with one
    pair, or every pair differing by the same vector), or when the sign is
    undetermined.

    Example:
        >>> pca_aggregator()(torch.tensor([[2.0, 0.0], [3.0, 0.0]]), torch.zeros(2, 2))
        tensor([1., 0.])
        >>> pos = torch.tensor([[3.0, 1.0], [1.0, -1.0]])
        >>> pca_aggregator(center=True)(pos, torch.zeros(2, 2))  # along the spread (1, 1), not the mean (2, 0)
        tensor([0.7071, 0.7071])
    """
    return PCAAggregator(center=center)


def _logistic_regression_class() -> Any:
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise AggregatorError(
            "logistic_aggregator needs scikit-learn; install it with pip install 'steerlens[sklearn]'."
        ) from exc
    return LogisticRegression


class LogisticAggregator:
    """Unit-norm coefficients of steering-vectors 0.12.2's logistic regression.

    Each pair is centred on its own midpoint ``(pos_i + neg_i) / 2``, so the
    samples are ``+d_i / 2`` labelled ``+1`` and ``-d_i / 2`` labelled ``-1``
    (``d_i = pos_i - neg_i``). They are fitted in float32 by
    ``LogisticRegression(fit_intercept=False, **sklearn_kwargs)`` (scikit-learn's
    defaults otherwise: L2 penalty, ``C=1.0``, ``lbfgs``, ``max_iter=100``), and
    the coefficient vector, which points towards the positive class, is scaled to
    unit norm.
    """

    def __init__(self, sklearn_kwargs: dict[str, Any]) -> None:
        self.sklearn_kwargs = dict(sklearn_kwargs)
        self._regression_class = _logistic_regression_class()
        # Build one now so that a misspelt keyword fails here, not after extracting activations.
        self._regression_class(**self._options())

    def _options(self) -> dict[str, Any]:
        return {"fit_intercept": False, **self.sklearn_kwargs}

    def __call__(self, pos: Tensor, neg: Tensor) -> Tensor:
        deltas = _paired_deltas("logistic_aggregator", pos, neg)
        half = (deltas / 2).to(torch.float32)
        if not torch.isfinite(half).all():
            raise AggregatorError(
                "logistic_aggregator: the activation differences overflow float32, the precision "
                "scikit-learn is given; rescale the activations."
            )
        x = torch.cat([half, -half]).cpu().numpy()
        n = deltas.shape[0]
        y = torch.cat([torch.ones(n), -torch.ones(n)]).numpy()
        fitted = self._regression_class(**self._options()).fit(x, y)
        # classes_ is sorted, [-1, 1]: coef_[0] is the weight vector of the positive class.
        coef = torch.as_tensor(fitted.coef_, dtype=torch.float64).reshape(-1)
        norm = coef.norm()
        if not (torch.isfinite(coef).all() and norm > 0):
            raise AggregatorError(
                f"logistic_aggregator: the fitted coefficients are zero or non-finite ({repr(self)}); "
                "the regularisation may be too strong (raise C) or the differences too small."
            )
        return (coef / norm).to(device=pos.device, dtype=_result_dtype(pos.dtype))

    def __repr__(self) -> str:
        return f"logistic_aggregator(sklearn_kwargs={self.sklearn_kwargs!r})"


def logistic_aggregator(sklearn_kwargs: Mapping[str, Any] | None = None, **kwargs: Any) -> Aggregator:
    """Unit-norm weight vector of a logistic regression on the pairs (as in steering-vectors).

    Each pair is centred on its midpoint, giving ``+(pos - neg) / 2`` labelled +1 and
    ``-(pos - neg) / 2`` labelled -1, fitted by
    ``sklearn.linear_model.LogisticRegression(fit_intercept=False, ...)``. The vector
    points from negative to positive.

    Options for ``LogisticRegression`` may be given the steering-vectors way,
    ``logistic_aggregator(sklearn_kwargs={"C": 10.0})``, or as keywords,
    ``logistic_aggregator(C=10.0)``; both at once are merged, and a key given in
    both raises ``TypeError``. ``fit_intercept`` defaults to False but may be
    overridden. Needs the ``sklearn`` extra: ``pip install "steerlens[sklearn]"``.
    """
    if sklearn_kwargs is None:
        options: dict[str, Any] = {}
    elif isinstance(sklearn_kwargs, Mapping):
        options = dict(sklearn_kwargs)
    else:
        raise TypeError(
            "logistic_aggregator(sklearn_kwargs=...) takes a dict of LogisticRegression options, "
            f"got {type(sklearn_kwargs).__name__}."
        )
    both = sorted(set(options) & set(kwargs))
    if both:
        raise TypeError(
            f"logistic_aggregator got {both} both in sklearn_kwargs and as keywords; give each option once."
        )
    options.update(kwargs)
    return LogisticAggregator(options)
