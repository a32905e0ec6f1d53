"""ROC AUC and the best threshold between two groups of scores, against brute force and hand computations."""

from __future__ import annotations

import numpy as np
import pytest

from steerlens.analysis import best_threshold, roc_auc
from steerlens.errors import InvalidArgumentError


def brute_auc(pos, neg) -> float:
    """Every (positive, negative) comparison, ties one half."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def test_roc_auc_is_exact_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(50):
        pos = rng.integers(0, 6, rng.integers(1, 12))
        neg = rng.integers(0, 6, rng.integers(1, 12))
        assert roc_auc(pos, neg) == pytest.approx(brute_auc(pos, neg), abs=1e-12)
    assert roc_auc([1.0], [1.0]) == 0.5
    assert roc_auc([2.0, 3.0], [0.0, 1.0]) == 1.0 and roc_auc([0.0], [1.0]) == 0.0


def test_best_threshold_by_hand():
    cut = best_threshold([3.0, 2.5, 0.5], [1.0, 0.0, -1.0])
    # Cuts at 0.25 (every positive above, 1.0 wrongly above too) and at 1.75 (0.5 wrongly below)
    # both get 5/6 right; 1.75 sits in the wider gap (1.0 to 2.5) and wins.
    assert cut.accuracy == pytest.approx(5 / 6) and cut.threshold == pytest.approx(1.75)
    assert best_threshold([1.0, 2.0], [-2.0, -1.0]).threshold == 0.0  # midway in the gap, accuracy 1
    with pytest.raises(InvalidArgumentError):
        roc_auc([], [1.0])
    with pytest.raises(InvalidArgumentError):
        best_threshold([float("nan")], [1.0])
