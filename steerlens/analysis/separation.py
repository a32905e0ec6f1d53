"""How well one number per prompt separates two groups: exact ROC AUC and the best threshold.

Small exact implementations (no scikit-learn needed), shared by the layer report
(projections of held-out positive vs negative prompts) and condition fitting
(condition scores of prompts that should vs should not be steered).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from steerlens.errors import InvalidArgumentError


def _scores(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise InvalidArgumentError(f"no {name} scores; give at least one of each group.")
    if not np.isfinite(array).all():
        raise InvalidArgumentError(f"the {name} scores hold NaN or infinity; they cannot be ranked.")
    return array


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """P(a random positive score > a random negative one), ties counting one half.

    Exactly the area under the ROC curve (the Mann-Whitney U statistic over
    ``len(positive) * len(negative)``), from average ranks: ``O(n log n)``.

    Example:
        >>> roc_auc([3.0, 2.0], [1.0, 2.0])
        0.875
    """
    pos, neg = _scores(positive, "positive"), _scores(negative, "negative")
    both = np.concatenate([pos, neg])
    _, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    # Average 1-based rank of each distinct value: the ranks it spans, averaged.
    upper = np.cumsum(counts)
    average_rank = upper - (counts - 1) / 2.0
    rank_sum = average_rank[inverse[: pos.size]].sum()
    u = rank_sum - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


@dataclass(frozen=True)
class Threshold:
    """The cut ``score > threshold -> positive`` with the best accuracy on the scores it was fitted on."""

    threshold: float
    accuracy: float
    """Fraction of all scores on the right side of the cut."""
    balanced_accuracy: float
    """Mean of the accuracies within each group (what is maximised: groups count equally)."""


def best_threshold(positive: Sequence[float], negative: Sequence[float]) -> Threshold:
    """The threshold that best separates the two groups, midway between neighbouring scores.

    Every cut between two consecutive distinct scores is tried (and one below and one
    above them all); the one with the best balanced accuracy wins, ties going to the
    cut in the widest gap (the most margin on both sides).

    Example:
        >>> best_threshold([3.0, 2.5], [1.0, 0.0]).threshold
        1.75
    """
    pos, neg = _scores(positive, "positive"), _scores(negative, "negative")
    values = np.unique(np.concatenate([pos, neg]))
    span = float(values[-1] - values[0]) or 1.0
    cuts = np.concatenate([[values[0] - span], (values[:-1] + values[1:]) / 2, [values[-1] + span]])
    gaps = np.concatenate([[span], np.diff(values), [span]])
    true_pos = (pos[None, :] > cuts[:, None]).mean(1)
    true_neg = (neg[None, :] <= cuts[:, None]).mean(1)
    balanced = (true_pos + true_neg) / 2
    accuracy = ((pos[None, :] > cuts[:, None]).sum(1) + (neg[None, :] <= cuts[:, None]).sum(1)) / (pos.size + neg.size)
    best = np.lexsort((-gaps, -balanced))[0]  # balanced first, then the widest gap
    return Threshold(float(cuts[best]), float(accuracy[best]), float(balanced[best]))
