"""Per-layer linear probes: which layer linearly separates a concept, by three classic probes.

:func:`layer_report` judges *one given vector* on held-out pairs. A probe report fits
its own direction per layer on training pairs, by three methods of increasing
flexibility, and scores each on held-out pairs (steerkit's ``Probe.fit_all``):

* ``mean_diff``: the difference of the class means ``mu+ - mu-`` (the direction
  ``mean_aggregator`` trains, up to the pairing);
* ``lda``: Fisher's linear discriminant ``(Sigma + shrinkage) ^ -1 (mu+ - mu-)``, the
  mean difference corrected for the within-class covariance, shrunk towards a scaled
  identity because a model's width usually exceeds the number of prompts;
* ``logistic``: scikit-learn's L2 logistic regression on the activations (needs the
  ``sklearn`` extra).

A probe that separates held-out pairs well at a layer says the concept is linearly
readable there; a steering vector trained at that layer is a good candidate, and a
large gap between LDA / logistic and the mean difference says the concept is there
but mixed with high-variance directions that a plain mean-difference vector also
pushes on. These are separate columns from :func:`layer_report` because each method
fits its own direction; the measures are the same (:func:`roc_auc`, the pooled-sd gap).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from typing_extensions import Unpack

from steerlens.analysis.layer_report import _separation
from steerlens.analysis.separation import best_threshold, roc_auc
from steerlens.errors import InvalidArgumentError
from steerlens.samples import SampleLike
from steerlens.settings import PROMPT_READING, SettingsKeywords, open_run
from steerlens.tokens import ReadIndex
from steerlens.training.activations import in_caller_order, iter_activation_batches, pair_reading

METHODS = ("mean_diff", "lda", "logistic")
COLUMNS = ["layer", "method", "auc", "accuracy", "threshold", "separation", "train_auc", "cos_mean_diff"]


def probe_report(
    model: Any,
    training_samples: Iterable[SampleLike],
    held_out_samples: Iterable[SampleLike],
    *,
    layers: int | Iterable[int] | None = None,
    layer_type: str = "resid_post",
    methods: Sequence[str] = METHODS,
    lda_shrinkage: float = 0.1,
    logistic_kwargs: Mapping[str, Any] | None = None,
    read_token_index: ReadIndex = -1,
    **settings: Unpack[SettingsKeywords],
) -> pd.DataFrame:
    """Fit linear probes per layer on ``training_samples``, score them on ``held_out_samples``.

    Every prompt of both sets is read at ``read_token_index`` (or the samples' own read
    indices) as training reads it, at ``layers`` (None: every layer) of ``layer_type``.
    Per layer and method (``methods``, any of ``"mean_diff"``, ``"lda"``,
    ``"logistic"``), a direction ``w`` is fitted on the training positives (class 1)
    and negatives (class 0), and every prompt is scored ``x . w``. Columns:

    * ``auc``: ROC AUC of the held-out scores, positives against negatives;
    * ``threshold``, ``accuracy``: the cut with the best balanced accuracy on the
      *training* scores, and its accuracy on the held-out ones (no peeking);
    * ``separation``: held-out (mean positive − mean negative) / pooled sd, the effect size;
    * ``train_auc``: the AUC on the training prompts (far above ``auc``: overfitting);
    * ``cos_mean_diff``: cosine of the direction with the mean difference.

    ``lda_shrinkage`` (0..1) blends the pooled within-class covariance with
    ``trace / d_model`` times the identity, as scikit-learn's
    ``LinearDiscriminantAnalysis(solver="lsqr", shrinkage=...)``; ``logistic_kwargs``
    go to ``sklearn.linear_model.LogisticRegression`` (default ``max_iter=1000``).
    ``df.attrs["best"]`` is the ``(layer, method)`` with the highest held-out AUC.
    ``settings``: :class:`~steerlens.settings.Settings` fields by name (``tokenizer``,
    ``batch_size`` (default 32), ``padding_side``, ``prepend_bos``) or ``settings=``, see
    :mod:`steerlens.settings`; both sets are read with them.

    Example:
        >>> df = probe_report(model, sentiment_pairs("train"), sentiment_pairs("test"), layers=[4, 8, 12])
        >>> df.pivot(index="layer", columns="method", values="auc")
    """
    chosen = _check_methods(methods)
    shrinkage = float(lda_shrinkage)
    if not 0.0 <= shrinkage <= 1.0:
        raise InvalidArgumentError(f"lda_shrinkage must be between 0 and 1, got {lda_shrinkage!r}.")
    options = {"max_iter": 1000, **dict(logistic_kwargs or {})}
    logistic = _logistic_class() if "logistic" in chosen else None
    if logistic is not None:
        logistic(**options)  # a misspelt option fails before any forward pass
    run = open_run(model, settings, "probe_report", PROMPT_READING, batch_size=32)
    # Both sets checked before any forward pass, then read as training reads pairs.
    train_set, test_set = (
        pair_reading(run, samples, layers, layer_type, read_token_index)
        for samples in (training_samples, held_out_samples)
    )
    train_pos, train_neg = in_caller_order(iter_activation_batches(train_set, "Reading training pairs"))
    test_pos, test_neg = in_caller_order(iter_activation_batches(test_set, "Reading held-out pairs"))
    records = []
    for layer in sorted(train_pos):
        tp, tn = _rows(train_pos[layer]), _rows(train_neg[layer])
        hp, hn = _rows(test_pos[layer]), _rows(test_neg[layer])
        mean_diff = tp.mean(0) - tn.mean(0)
        for method in chosen:
            if method == "mean_diff":
                w = mean_diff
            elif method == "lda":
                w = lda_direction(tp, tn, shrinkage)
            else:
                w = _logistic_direction(logistic, options, tp, tn)
            cut = best_threshold(tp @ w, tn @ w)
            pos_scores, neg_scores = hp @ w, hn @ w
            correct = (pos_scores > cut.threshold).sum() + (neg_scores <= cut.threshold).sum()
            records.append(
                {
                    "layer": layer,
                    "method": method,
                    "auc": roc_auc(pos_scores, neg_scores),
                    "accuracy": float(correct / (len(pos_scores) + len(neg_scores))),
                    "threshold": cut.threshold,
                    "separation": _separation(pos_scores, neg_scores),
                    "train_auc": roc_auc(tp @ w, tn @ w),
                    "cos_mean_diff": _cosine(w, mean_diff),
                }
            )
    frame = pd.DataFrame(records, columns=COLUMNS)
    best = frame.sort_values(["auc", "separation"], ascending=False, kind="stable").iloc[0]
    frame.attrs["best"] = (int(best["layer"]), str(best["method"]))
    frame.attrs["layer_type"] = layer_type
    return frame


def lda_direction(pos: np.ndarray, neg: np.ndarray, shrinkage: float = 0.1) -> np.ndarray:
    """Fisher's direction ``Sigma_s^-1 (mu+ - mu-)`` with a shrunk pooled within-class covariance.

    ``Sigma`` is the mean of the two classes' (biased) covariances and
    ``Sigma_s = (1 - shrinkage) Sigma + shrinkage * trace(Sigma) / d * I``: with equal
    class sizes, the direction of scikit-learn's ``LinearDiscriminantAnalysis(solver="lsqr",
    shrinkage=shrinkage)``. Solved by least squares, so a singular ``Sigma_s``
    (``shrinkage=0`` with fewer prompts than dimensions) gives the minimum-norm solution.

    Example:
        >>> lda_direction(np.array([[2.0, 0.0], [2.0, 1.0]]), np.array([[0.0, 0.0], [0.0, 1.0]]))
        array([160.,   0.])
    """
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    centred = [pos - pos.mean(0), neg - neg.mean(0)]
    sigma = sum(c.T @ c / len(c) for c in centred) / 2
    d = sigma.shape[0]
    shrunk = (1 - shrinkage) * sigma + shrinkage * np.trace(sigma) / d * np.eye(d)
    return np.linalg.lstsq(shrunk, pos.mean(0) - neg.mean(0), rcond=None)[0]


def _check_methods(methods: Sequence[str]) -> list[str]:
    listed = [methods] if isinstance(methods, str) else list(methods)
    unknown = [m for m in listed if m not in METHODS]
    if unknown or not listed:
        raise InvalidArgumentError(
            f"methods must be some of {list(METHODS)}, got {listed!r}; e.g. methods=['mean_diff', 'lda']."
        )
    return list(dict.fromkeys(listed))


def _rows(acts: torch.Tensor) -> np.ndarray:
    return acts.double().cpu().numpy()


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / denominator if denominator > 0 else math.nan


def _logistic_class() -> Any:
    try:
        from sklearn.linear_model import LogisticRegression
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise InvalidArgumentError(
            "the logistic probe needs scikit-learn; install it with pip install 'steerlens[sklearn]', or pass "
            "methods=['mean_diff', 'lda']."
        ) from exc
    return LogisticRegression


def _logistic_direction(cls: Any, options: dict[str, Any], pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    x = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    return np.asarray(cls(**options).fit(x, y).coef_, dtype=np.float64).reshape(-1)
