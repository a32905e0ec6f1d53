"""Aggregators: parity with steering-vectors 0.12.2's formulas, signatures, edge cases.

The references below are recomputed by hand from the documented math of
steering-vectors 0.12.2 (numpy / scipy / scikit-learn), never by calling steerlens:

* mean: ``mean_i (pos_i - neg_i)``, not normalised.
* PCA: top principal direction of the uncentred matrix ``[D; -D]`` (``D`` the
  differences ``pos_i - neg_i``), sign ``sign(mean_i(d_i . v))``, unit norm.
* logistic: each pair centred on its midpoint, samples ``+d_i/2`` (label +1) and
  ``-d_i/2`` (label -1), ``LogisticRegression(fit_intercept=False)`` with
  scikit-learn's defaults, coefficients scaled to unit norm.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegression

from steerlens import logistic_aggregator, mean_aggregator, pca_aggregator
from steerlens.errors import AggregatorError
from steerlens.training.aggregators import accumulator_for, call_aggregator


def make_acts(seed: int, n: int, d: int, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Paired activations: a shared per-pair context plus a concept shift and noise."""
    g = torch.Generator().manual_seed(seed)
    base = 3.0 * torch.randn(n, d, generator=g) + 5.0  # large shared offset, different per pair
    concept = torch.randn(d, generator=g)
    pos = base + concept + 0.8 * torch.randn(n, d, generator=g)
    neg = base - 0.5 * concept + 0.8 * torch.randn(n, d, generator=g)
    return pos.to(dtype), neg.to(dtype)


def cosine(a, b) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- references, from the math ------------------------------------------------------------------


def ref_pca(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    deltas = pos.astype(np.float64) - neg.astype(np.float64)
    data = np.concatenate([deltas, -deltas])  # uncentred on purpose: the flip centres it
    evals, evecs = np.linalg.eigh(data.T @ data)  # eigenvectors of the scatter, not an SVD
    vec = evecs[:, np.argmax(evals)]
    return np.sign(np.mean(deltas @ vec)) * vec / np.linalg.norm(vec)


def midpoint_centred(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mid = (pos.astype(np.float64) + neg.astype(np.float64)) / 2
    x = np.concatenate([pos - mid, neg - mid]).astype(np.float32)
    y = np.concatenate([np.ones(len(pos)), -np.ones(len(neg))]).astype(np.float32)
    return x, y


def ref_logistic_sklearn(pos: np.ndarray, neg: np.ndarray, **kwargs) -> np.ndarray:
    x, y = midpoint_centred(pos, neg)
    clf = LogisticRegression(fit_intercept=False, **kwargs).fit(x, y)
    coef = clf.coef_.reshape(-1).astype(np.float64)
    return coef / np.linalg.norm(coef)


def ref_logistic_scipy(pos: np.ndarray, neg: np.ndarray, C: float = 1.0) -> np.ndarray:
    """The L2-penalised, intercept-free logistic loss minimised directly (no scikit-learn)."""
    x, y = midpoint_centred(pos, neg)
    x, y = x.astype(np.float64), y.astype(np.float64)

    def loss(w):
        margins = y * (x @ w)
        value = 0.5 * w @ w + C * np.logaddexp(0.0, -margins).sum()
        grad = w - C * x.T @ (y / (1.0 + np.exp(margins)))
        return value, grad

    res = minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "maxiter": 10000})
    return res.x / np.linalg.norm(res.x)


SHAPES = [(1, 1, 8), (2, 24, 64), (3, 200, 16), (4, 7, 128)]


# --- parity with steering-vectors' formulas ---------------------------------------------------


@pytest.mark.parametrize("seed,n,d", SHAPES)
def test_pca_matches_steering_vectors_formula(seed, n, d):
    pos, neg = make_acts(seed, n, d)
    ours = pca_aggregator()(pos, neg)
    ref = ref_pca(pos.numpy(), neg.numpy())
    assert ours.shape == (d,) and ours.dtype == torch.float32
    assert cosine(ours, ref) >= 0.99999
    assert abs(float(ours.double().norm()) - 1.0) < 1e-6


@pytest.mark.parametrize("seed,n,d", SHAPES)
def test_logistic_matches_steering_vectors_formula_with_defaults(seed, n, d):
    pos, neg = make_acts(seed, n, d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's ConvergenceWarning with max_iter=100, as upstream
        ours = logistic_aggregator()(pos, neg)
        ref = ref_logistic_sklearn(pos.numpy(), neg.numpy())
    assert ours.shape == (d,) and ours.dtype == torch.float32
    assert cosine(ours, ref) >= 0.99999
    assert abs(float(ours.double().norm()) - 1.0) < 1e-6


@pytest.mark.parametrize("seed,n,d", SHAPES)
@pytest.mark.parametrize("C", [1.0, 0.05])
def test_logistic_matches_the_penalised_loss_minimised_by_hand(seed, n, d, C):
    pos, neg = make_acts(seed, n, d)
    ours = logistic_aggregator(sklearn_kwargs={"C": C, "max_iter": 10000, "tol": 1e-10})(pos, neg)
    ref = ref_logistic_scipy(pos.numpy(), neg.numpy(), C=C)
    assert cosine(ours, ref) >= 0.9999


def test_logistic_differs_from_the_old_intercept_fit():
    # The former recipe (raw activations, intercept, 0/1 labels) is not steering-vectors'.
    pos, neg = make_acts(5, 24, 64)
    x = np.concatenate([pos.numpy(), neg.numpy()]).astype(np.float64)
    y = np.r_[np.ones(24), np.zeros(24)]
    old = LogisticRegression(max_iter=5000).fit(x, y).coef_[0]
    ours = logistic_aggregator(max_iter=5000)(pos, neg)
    ref = ref_logistic_sklearn(pos.numpy(), neg.numpy(), max_iter=5000)
    assert cosine(ours, ref) >= 0.99999
    assert cosine(ours, ref) > cosine(old, ref)


@pytest.mark.parametrize("make", [pca_aggregator, logistic_aggregator])
def test_invariant_to_per_pair_context(make):
    # Both recipes only see pos_i - neg_i: adding any vector to both members of a pair changes nothing.
    pos, neg = make_acts(6, 16, 32, torch.float64)
    shift = 10.0 * torch.randn(16, 32, dtype=torch.float64)
    a, b = make()(pos, neg), make()(pos + shift, neg + shift)
    assert cosine(a, b) >= 0.99999


@pytest.mark.parametrize("make", [pca_aggregator, logistic_aggregator, mean_aggregator])
def test_points_from_negative_to_positive(make):
    pos, neg = make_acts(7, 20, 16)
    v = make()(pos, neg)
    assert float(((pos - neg) @ v).mean()) > 0
    flipped = make()(neg, pos)
    assert cosine(v, flipped) <= -0.99999


@pytest.mark.parametrize("make", [pca_aggregator, logistic_aggregator])
def test_single_pair_gives_the_normalised_difference(make):
    pos = torch.tensor([[3.0, -1.0, 2.0, 0.5]])
    neg = torch.tensor([[1.0, 1.0, 2.0, 0.0]])
    v = make()(pos, neg)
    expected = (pos - neg)[0] / (pos - neg)[0].norm()
    torch.testing.assert_close(v, expected, atol=1e-6, rtol=0)


# --- dtypes, devices, shapes ------------------------------------------------------------------


@pytest.mark.parametrize("make", [pca_aggregator, logistic_aggregator, mean_aggregator])
@pytest.mark.parametrize(
    "dtype,expected",
    [
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
    ],
)
def test_result_dtype(make, dtype, expected):
    pos, neg = make_acts(8, 10, 12, dtype)
    v = make()(pos, neg)
    assert v.dtype == expected and v.device == pos.device and v.shape == (12,)


def test_half_precision_inputs_give_the_same_direction():
    pos, neg = make_acts(9, 30, 24, torch.bfloat16)
    for make in (pca_aggregator, logistic_aggregator):
        assert cosine(make()(pos, neg), make()(pos.float(), neg.float())) >= 0.99999


# --- logistic_aggregator signature ------------------------------------------------------------


def test_logistic_accepts_steering_vectors_and_keyword_styles():
    pos, neg = make_acts(10, 12, 20)
    by_dict = logistic_aggregator(sklearn_kwargs={"C": 10.0, "max_iter": 1000})(pos, neg)
    positional = logistic_aggregator({"C": 10.0, "max_iter": 1000})(pos, neg)
    by_kwargs = logistic_aggregator(C=10.0, max_iter=1000)(pos, neg)
    merged = logistic_aggregator({"C": 10.0}, max_iter=1000)(pos, neg)
    for other in (positional, by_kwargs, merged):
        torch.testing.assert_close(other, by_dict, atol=0, rtol=0)
    assert logistic_aggregator(None)(pos, neg).shape == (20,)
    assert cosine(by_dict, ref_logistic_sklearn(pos.numpy(), neg.numpy(), C=10.0, max_iter=1000)) >= 0.99999


def test_logistic_signature_errors():
    with pytest.raises(TypeError, match="both in sklearn_kwargs and as keywords"):
        logistic_aggregator({"C": 1.0}, C=2.0)
    with pytest.raises(TypeError, match="dict of LogisticRegression options"):
        logistic_aggregator(1.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # misspelt option: fails at construction, before any training
        logistic_aggregator(sklearn_kwargs={"Cee": 1.0})


def test_logistic_does_not_keep_a_reference_to_the_callers_dict():
    options = {"C": 10.0}
    agg = logistic_aggregator(sklearn_kwargs=options)
    options["C"] = 1e-6
    assert agg.sklearn_kwargs == {"C": 10.0}  # type: ignore[attr-defined]


def test_reprs_are_readable():
    assert repr(mean_aggregator()) == "mean_aggregator()"
    assert repr(pca_aggregator()) == "pca_aggregator()"
    assert repr(logistic_aggregator(C=2.0)) == "logistic_aggregator(sklearn_kwargs={'C': 2.0})"


# --- edge cases -------------------------------------------------------------------------------


def test_aggregator_error_is_a_value_error():
    assert issubclass(AggregatorError, ValueError)


@pytest.mark.parametrize("make", [pca_aggregator, logistic_aggregator])
def test_all_zero_differences_raise(make):
    acts = torch.randn(5, 8)
    with pytest.raises(AggregatorError, match="all differences are zero"):
        make()(acts, acts.clone())


def test_mean_of_all_zero_differences_is_the_zero_vector_with_a_warning():
    acts = torch.randn(5, 8)
    with pytest.warns(RuntimeWarning, match="mean vector is zero"):
        assert torch.equal(mean_aggregator()(acts, acts.clone()), torch.zeros(8))


@pytest.mark.parametrize("make", [pca_aggregator, logistic_aggregator])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_activations_raise(make, bad):
    pos, neg = make_acts(11, 6, 8)
    neg[2, 3] = bad
    with pytest.raises(AggregatorError, match="NaN or infinite activations"):
        make()(pos, neg)


def test_non_finite_activations_through_the_mean_accumulator_are_caught_by_the_result_check():
    pos, neg = make_acts(11, 6, 8)
    pos[0, 0] = float("nan")
    with pytest.raises(AggregatorError, match="NaN or infinite"):
        call_aggregator(mean_aggregator(), pos, neg)


@pytest.mark.parametrize("make", [pca_aggregator, logistic_aggregator])
def test_bad_shapes_and_no_pairs_raise(make):
    with pytest.raises(AggregatorError, match="same shape"):
        make()(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(AggregatorError, match="same shape"):
        make()(torch.randn(8), torch.randn(8))
    with pytest.raises(AggregatorError, match="no pairs"):
        make()(torch.zeros(0, 8), torch.zeros(0, 8))


def test_pca_raises_when_pairs_cancel_and_the_sign_is_undetermined():
    # Every difference appears with both signs: steering-vectors' sign() is 0 and it returns zeros.
    d = torch.randn(4, 8)
    with pytest.raises(AggregatorError, match="sign .* is undetermined"):
        pca_aggregator()(torch.cat([d, -d]), torch.zeros(8, 8))


def test_pca_warns_when_the_principal_direction_is_not_unique():
    pos = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    with pytest.warns(RuntimeWarning, match="not unique"):
        v = pca_aggregator()(pos, torch.zeros(2, 3))
    assert abs(float(v.norm()) - 1.0) < 1e-6


def test_pca_does_not_warn_on_ordinary_data():
    pos, neg = make_acts(12, 20, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pca_aggregator()(pos, neg)


def test_logistic_overflowing_float32_raises():
    pos = torch.full((2, 4), 1e300, dtype=torch.float64)
    with pytest.raises(AggregatorError, match="overflow float32"):
        logistic_aggregator()(pos, -pos)


# --- streaming --------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [pca_aggregator, logistic_aggregator, mean_aggregator])
def test_accumulator_over_batches_equals_one_call(make):
    pos, neg = make_acts(13, 23, 16)
    agg = make()
    acc = accumulator_for(agg)
    for i in range(0, 23, 5):
        acc.update(pos[i : i + 5], neg[i : i + 5])
    torch.testing.assert_close(acc.result(), agg(pos, neg), atol=1e-6, rtol=0)


@pytest.mark.parametrize("make", [pca_aggregator, logistic_aggregator, mean_aggregator])
def test_empty_accumulator_raises(make):
    with pytest.raises(AggregatorError, match="no activations were aggregated"):
        accumulator_for(make()).result()


def test_mean_streams_in_float64():
    # float32 row sums would lose the small differences on top of a huge offset.
    n, d = 1000, 4
    neg = torch.full((n, d), 1e6, dtype=torch.float32)
    pos = neg + 0.0625
    acc = accumulator_for(mean_aggregator())
    for i in range(0, n, 100):
        acc.update(pos[i : i + 100], neg[i : i + 100])
    torch.testing.assert_close(acc.result(), torch.full((d,), 0.0625), atol=0, rtol=0)
    assert not hasattr(acc, "pos")  # no rows kept


# --- the real library, when it happens to be installed ----------------------------------------


def test_against_installed_steering_vectors():
    sv = pytest.importorskip("steering_vectors")
    if getattr(sv, "__version__", None) != "0.12.2":
        pytest.skip("compares with steering-vectors 0.12.2 only")
    pos, neg = make_acts(14, 24, 64)
    pairs = [
        (pca_aggregator(), sv.pca_aggregator()),
        (logistic_aggregator(), sv.logistic_aggregator()),
        (logistic_aggregator(sklearn_kwargs={"C": 100.0}), sv.logistic_aggregator(sklearn_kwargs={"C": 100.0})),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ours, theirs in pairs:
            assert cosine(ours(pos, neg), theirs(pos, neg)) >= 0.999


@pytest.mark.parametrize("make", [pca_aggregator, logistic_aggregator])
def test_float_noise_differences_raise_instead_of_a_noise_direction(make):
    """Identical prompts read in different batches differ by float noise: no direction, an error."""
    gen = torch.Generator().manual_seed(0)
    acts = 30.0 * torch.randn(6, 8, generator=gen)
    noisy = acts + 3e-6 * torch.randn(6, 8, generator=gen)
    with pytest.raises(AggregatorError, match="zero or negligible: the largest is 1.05e-05"):
        make()(acts, noisy)
    # A small but real contrast (1e-3 of the norm) still has its direction.
    real = acts + 1e-3 * acts.norm(dim=-1, keepdim=True) * torch.tensor([1.0] + [0.0] * 7)
    assert make()(real, acts)[0] > 0.99


def test_mean_of_float_noise_differences_warns():
    gen = torch.Generator().manual_seed(0)
    acts = 30.0 * torch.randn(6, 8, generator=gen)
    with pytest.warns(RuntimeWarning, match="mean vector is zero \\(or negligible"):
        mean_aggregator()(acts, acts + 3e-6 * torch.randn(6, 8, generator=gen))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        mean_aggregator()(acts + 1e-3, acts)


# --- centred PCA (repeng's "pca_diff"), against scikit-learn ------------------------------------


def ref_centred_pca(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """scikit-learn's first component of the differences (PCA centres them), with repeng's sign vote."""
    from sklearn.decomposition import PCA

    pos, neg = pos.astype(np.float64), neg.astype(np.float64)
    vec = PCA(n_components=1).fit(pos - neg).components_[0]
    # repeng: count pairs whose positive projects below / above its negative; flip if more are below.
    below = np.mean(pos @ vec < neg @ vec)
    above = np.mean(pos @ vec > neg @ vec)
    return -vec if below > above else vec


@pytest.mark.parametrize("seed,n,d", [(1, 5, 8), (2, 25, 64), (3, 201, 16), (4, 7, 128)])
def test_centred_pca_equals_sklearn_pca_with_repengs_sign(seed, n, d):
    pos, neg = make_acts(seed, n, d)
    ours = pca_aggregator(center=True)(pos, neg)
    ref = ref_centred_pca(pos.numpy(), neg.numpy())
    assert ours.shape == (d,) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.double().numpy(), ref, atol=1e-5)
    assert abs(float(ours.double().norm()) - 1.0) < 1e-6  # unit norm, as the uncentred one


def test_uncentred_pca_is_repengs_pca_center():
    """repeng's "pca_center" (each pair centred on its midpoint, then sklearn's PCA) is steering-vectors' PCA."""
    from sklearn.decomposition import PCA

    pos, neg = make_acts(5, 30, 16)
    mid = (pos.double() + neg.double()) / 2
    rows = torch.cat([pos.double() - mid, neg.double() - mid]).numpy()
    vec = PCA(n_components=1).fit(rows).components_[0]
    assert abs(cosine(pca_aggregator()(pos, neg), vec)) >= 1 - 1e-9


def test_centred_pca_points_along_the_spread_not_the_mean():
    """A common shift plus varied noise: the centred direction follows the noise, the uncentred the shift."""
    pos, neg = make_acts(6, 40, 32)
    mean = (pos - neg).double().mean(0)
    assert cosine(pca_aggregator()(pos, neg), mean) > 0.9
    assert abs(cosine(pca_aggregator(center=True)(pos, neg), mean)) < 0.5


def test_centred_pca_sign_is_the_vote_of_pairs_not_the_mean():
    """Two pairs shift by +1 along x, one by -5: the vote says +x, the mean projection (-1) would say -x."""
    pos = torch.tensor([[1.0, 0.01], [1.0, -0.01], [-5.0, 0.0]])
    neg = torch.zeros(3, 2)
    torch.testing.assert_close(pca_aggregator(center=True)(pos, neg), torch.tensor([1.0, 0.0]), atol=1e-4, rtol=0)
    # A tied vote (one pair each way) falls back to the mean projection: (1 - 3) / 2 < 0 along +x, so -x.
    tied = torch.tensor([[1.0, 0.0], [-3.0, 0.001]])
    torch.testing.assert_close(
        pca_aggregator(center=True)(tied, torch.zeros(2, 2)), torch.tensor([-1.0, 0.0]), atol=1e-3, rtol=0
    )


def test_centred_pca_refuses_differences_that_do_not_vary():
    with pytest.raises(AggregatorError, match="do not vary"):
        pca_aggregator(center=True)(torch.ones(1, 4), torch.zeros(1, 4))
    base = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0])
    with pytest.raises(AggregatorError, match="do not vary"):
        pca_aggregator(center=True)(base + shift, base)  # every pair differs by the same vector
    assert cosine(pca_aggregator()(base + shift, base), shift) > 0.99999  # uncentred: that vector


def test_center_is_keyword_only_and_checked():
    import inspect

    params = inspect.signature(pca_aggregator).parameters
    assert params["center"].kind is inspect.Parameter.KEYWORD_ONLY and params["center"].default is False
    with pytest.raises(TypeError):
        pca_aggregator(True)  # type: ignore[misc]
    with pytest.raises(AggregatorError, match="True or False"):
        pca_aggregator(center="yes")  # type: ignore[arg-type]
    assert repr(pca_aggregator(center=True)) == "pca_aggregator(center=True)"
