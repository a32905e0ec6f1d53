"""Aggregators turn per-pair activations into one steering direction per layer.

An aggregator is any callable ``(pos_acts, neg_acts) -> vector`` on tensors of
shape ``[n_pairs, d_model]``. Training streams batches through an
:class:`Accumulator`: the mean aggregator keeps running sums only (memory does
not grow with the number of pairs); any other aggregator collects the rows and
is called once at the end.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import torch
from jaxtyping import Float
from torch import Tensor

from steerlens.errors import AggregatorError

Aggregator = Callable[[Tensor, Tensor], Tensor]


class Accumulator(Protocol):
    """Receives batches of paired activations, then yields the layer's vector."""

    def update(self, pos: Float[Tensor, "batch d_model"], neg: Float[Tensor, "batch d_model"]) -> None: ...

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
        self.dtype = torch.float32

    def update(self, pos: Tensor, neg: Tensor) -> None:
        diff = (pos.double() - neg.double()).sum(dim=0)
        self.total = diff if self.total is None else self.total + diff
        self.count += pos.shape[0]
        self.dtype = _result_dtype(pos.dtype)

    def result(self) -> Tensor:
        if self.total is None:
            raise AggregatorError("no activations were aggregated; pass at least one sample.")
        return (self.total / self.count).to(self.dtype)


class _Collector:
    """Keeps every row, then calls a whole-data aggregator once."""

    def __init__(self, fn: Aggregator) -> None:
        self.fn = fn
        self.pos: list[Tensor] = []
        self.neg: list[Tensor] = []

    def update(self, pos: Tensor, neg: Tensor) -> None:
        self.pos.append(pos)
        self.neg.append(neg)

    def result(self) -> Tensor:
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


def pca_aggregator() -> Aggregator:
    """First principal direction of the pairwise differences, unit norm.

    The differences are taken uncentred (as if each pair also appeared swapped, so
    the mean is zero): the direction is the top right-singular vector of the
    difference matrix. Its sign is chosen to agree with the mean difference.
    """

    def pca(pos: Tensor, neg: Tensor) -> Tensor:
        deltas = (pos - neg).double()
        _, _, vh = torch.linalg.svd(deltas, full_matrices=False)
        direction = vh[0]
        if torch.dot(direction, deltas.mean(dim=0)) < 0:
            direction = -direction
        return (direction / direction.norm()).to(_result_dtype(pos.dtype))

    pca.__qualname__ = "pca_aggregator()"
    return pca


def logistic_aggregator(**sklearn_kwargs: Any) -> Aggregator:
    """Unit-norm weight vector of a logistic regression separating positive from negative.

    Keyword arguments go to ``sklearn.linear_model.LogisticRegression``. Needs the
    ``sklearn`` extra: ``pip install "steerlens[sklearn]"``.
    """
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise AggregatorError(
            "logistic_aggregator needs scikit-learn; install it with pip install 'steerlens[sklearn]'."
        ) from exc

    def logistic(pos: Tensor, neg: Tensor) -> Tensor:
        x = torch.cat([pos, neg]).double().cpu().numpy()
        y = [1] * pos.shape[0] + [0] * neg.shape[0]
        clf = LogisticRegression(**sklearn_kwargs).fit(x, y)
        direction = torch.as_tensor(clf.coef_[0], dtype=torch.float64)
        return (direction / direction.norm()).to(device=pos.device, dtype=_result_dtype(pos.dtype))

    logistic.__qualname__ = f"logistic_aggregator({sklearn_kwargs})"
    return logistic
