"""Outlier / novelty detection: the percentile rule, masks and labels, the refit-on-inliers recipe,
``GaussianMixtureOutlierDetector`` against sklearn's GaussianMixture + np.percentile, misuse errors,
and scikit-learn's estimator checks (outlier checks included)."""

import math

import jax
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

import gmmjax
from gmmjax import (GaussianMixture, GaussianMixtureOutlierDetector, contamination_threshold,
                    fit_outlier_detector, inlier_labels, outlier_mask)

from conftest import initial_state

# Fully specified initial parameters: our EM and sklearn's then run the same iterations.
WEIGHTS, MEANS, PRECISIONS = initial_state("full")
INIT = dict(n_components=2, weights_init=WEIGHTS, means_init=MEANS, precisions_init=PRECISIONS)


# ------------------------------------------------------------------ functional helpers

@pytest.mark.parametrize("contamination", [0.01, 0.1, 0.25, 0.5])
@pytest.mark.parametrize("n", [7, 120, 301])
def test_percentile_rule_flags_expected_count(x64, contamination, n):
    scores = np.random.default_rng(n).normal(size=n)          # no ties
    offset = contamination_threshold(scores, contamination)
    assert float(offset) == pytest.approx(np.percentile(scores, 100 * contamination), rel=1e-12)
    mask = np.asarray(outlier_mask(scores, offset))
    assert mask.sum() == math.ceil(contamination * (n - 1))
    # the flagged rows are the lowest scores
    assert scores[mask].max(initial=-np.inf) < scores[~mask].min()
    labels = np.asarray(inlier_labels(scores, offset))
    np.testing.assert_array_equal(labels, np.where(mask, -1, 1))


def test_score_equal_to_offset_is_inlier():
    scores = np.array([0.0, 1.0, 2.0])
    assert np.asarray(inlier_labels(scores, 1.0)).tolist() == [-1, 1, 1]
    assert np.asarray(outlier_mask(scores, 1.0)).tolist() == [True, False, False]


def test_weighted_threshold_equals_repeated_rows(x64):
    rng = np.random.default_rng(3)
    threshold = jax.jit(contamination_threshold)     # one shape, one compile
    for _ in range(20):
        scores, w = rng.normal(size=40), rng.integers(0, 4, size=40)
        w[rng.integers(0, 40, size=int(rng.integers(0, 38)))] = 0   # varying effective n
        if w.sum() == 0:
            continue
        c = float(rng.uniform(0.01, 0.5))
        got = float(threshold(scores, c, w))
        assert got == pytest.approx(np.percentile(np.repeat(scores, w), 100 * c), abs=1e-12)


def test_threshold_under_jit(x64):
    scores = np.random.default_rng(0).normal(size=50)
    jitted = jax.jit(contamination_threshold)(scores, 0.2)
    assert float(jitted) == pytest.approx(np.percentile(scores, 20), rel=1e-12)


@pytest.mark.parametrize("bad", [0.0, -0.1, 0.51, 1.0, "auto", True, None])
def test_bad_contamination(bad):
    with pytest.raises(ValueError, match="contamination"):
        contamination_threshold(np.arange(5.0), bad)
    with pytest.raises(InvalidParameterError):
        GaussianMixtureOutlierDetector(contamination=bad).fit(np.arange(4.0)[:, None])


def test_fit_outlier_detector_recipe(x64, blobs):
    key = jax.random.key(0)
    init = gmmjax.from_precisions(WEIGHTS, MEANS, PRECISIONS)   # (the estimator tests' program)
    out = fit_outlier_detector(key, blobs, 2, contamination=0.1, refit_on_inliers=True,
                               init=init)
    res, offset, scores = out                        # unpacks as a 3-tuple
    assert out._fields == ("fit_result", "offset", "scores")
    assert out.fit_result is res and out.offset is offset and out.scores is scores
    assert out.params is res.params
    np.testing.assert_array_equal(np.asarray(out.labels),
                                  np.where(np.asarray(scores) < float(offset), -1, 1))
    # the same recipe by hand
    first = gmmjax.fit(key, blobs, 2, init=init)
    s0 = gmmjax.log_prob(first.params, blobs)
    keep = np.asarray(s0) >= float(np.percentile(np.asarray(s0), 10))
    second = gmmjax.fit(key, blobs, 2, sample_weight=keep.astype(float), init=init)
    s1 = np.asarray(gmmjax.log_prob(second.params, blobs))
    np.testing.assert_allclose(np.asarray(res.params.means), np.asarray(second.params.means),
                               rtol=1e-10)
    np.testing.assert_allclose(np.asarray(scores), s1, rtol=1e-10)
    assert float(offset) == pytest.approx(np.percentile(s1, 10), rel=1e-12)
    _, off_abs, _ = fit_outlier_detector(key, blobs, 2, threshold=-7.5, init=init)
    assert float(off_abs) == -7.5
    with pytest.raises(ValueError, match="threshold"):
        fit_outlier_detector(key, blobs, 2, threshold=np.nan, init=init)


# ------------------------------------------------------------------ the estimator

@pytest.mark.parametrize("contamination", [0.05, 0.2])
def test_detector_matches_sklearn_threshold(blobs, contamination):
    det = GaussianMixtureOutlierDetector(contamination=contamination, novelty=True, **INIT)
    det.fit(blobs)
    ref = SkGaussianMixture(**INIT).fit(blobs)
    ref_scores = ref.score_samples(blobs)
    np.testing.assert_allclose(det.training_scores_, ref_scores, rtol=1e-8)
    assert det.offset_ == pytest.approx(np.percentile(ref_scores, 100 * contamination), rel=1e-8)
    new = blobs[:17] + 0.3
    np.testing.assert_allclose(det.score_samples(new), ref.score_samples(new), rtol=1e-8)
    np.testing.assert_allclose(det.decision_function(new), det.score_samples(new) - det.offset_)
    np.testing.assert_array_equal(det.predict(new),
                                  np.where(ref.score_samples(new) >= det.offset_, 1, -1))
    assert det.n_iter_ == ref.n_iter_ and isinstance(det.mixture_, GaussianMixture)


def test_fit_predict_flags_exact_fraction(blobs):
    labels = GaussianMixtureOutlierDetector(contamination=0.1, **INIT).fit_predict(blobs)
    assert labels.dtype.kind == "i" and set(np.unique(labels)) == {-1, 1}
    assert np.sum(labels == -1) == math.ceil(0.1 * (len(blobs) - 1))


def test_absolute_threshold(blobs):
    det = GaussianMixtureOutlierDetector(threshold=-6.0, novelty=True, **INIT).fit(blobs)
    assert det.offset_ == -6.0
    np.testing.assert_array_equal(det.labels_, np.where(det.training_scores_ >= -6.0, 1, -1))


def test_refit_on_inliers_is_the_recipe(blobs):
    det = GaussianMixtureOutlierDetector(contamination=0.1, refit_on_inliers=True, novelty=True,
                                         **INIT).fit(blobs)
    first = GaussianMixture(**INIT).fit(blobs)
    s0 = first.score_samples(blobs)
    keep = (s0 >= np.percentile(s0, 10)).astype(float)
    second = GaussianMixture(**INIT).fit(blobs, sample_weight=keep)
    np.testing.assert_allclose(det.mixture_.means_, second.means_, rtol=1e-10)
    s1 = second.score_samples(blobs)
    assert det.offset_ == pytest.approx(np.percentile(s1, 10), rel=1e-10)
    # refitting on the inliers tightens the model around the bulk: the inliers score higher
    assert np.mean(s1[keep > 0]) > np.mean(s0[keep > 0])


def test_novelty_misuse_errors(blobs):
    outlier = GaussianMixtureOutlierDetector(**INIT).fit(blobs)
    for method in ("predict", "decision_function", "score_samples"):
        assert not hasattr(outlier, method)
        with pytest.raises(AttributeError) as err:
            getattr(outlier, method)(blobs)
        assert f"{method} is not available when novelty=False" in str(err.value.__cause__)
    novelty = GaussianMixtureOutlierDetector(novelty=True, **INIT)
    assert not hasattr(novelty, "fit_predict")
    with pytest.raises(AttributeError) as err:
        novelty.fit_predict(blobs)
    assert "fit_predict is not available when novelty=True" in str(err.value.__cause__)


def test_detector_bad_inputs(blobs):
    det = GaussianMixtureOutlierDetector(novelty=True, **INIT).fit(blobs)
    with pytest.raises(ValueError, match="features"):
        det.predict(blobs[:, :2])
    with pytest.raises(InvalidParameterError):
        GaussianMixtureOutlierDetector(novelty="yes").fit(blobs)
    with pytest.raises(InvalidParameterError):
        GaussianMixtureOutlierDetector(threshold="low").fit(blobs)
    with pytest.raises(ValueError, match="inliers"):
        GaussianMixtureOutlierDetector(threshold=1e6, refit_on_inliers=True, **INIT).fit(blobs)


@parametrize_with_checks([GaussianMixtureOutlierDetector(n_init=2, max_iter=5),
                          GaussianMixtureOutlierDetector(n_init=2, max_iter=5, novelty=True)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


@pytest.mark.parametrize("refit, weighted", [(False, False), (True, False), (True, True)])
def test_functional_detector_compiles_only_the_fit_and_evaluation(refit, weighted, caplog):
    """NumPy rows, scores, offsets and refit weights stay on the host: fit_outlier_detector
    compiles the fit and evaluation programs and no eager XLA op (the percentile, the refit
    weights); the offset is NumPy's percentile of the returned scores and the results are jax
    arrays."""
    import logging
    rng = np.random.default_rng(3 + refit + weighted)
    x = rng.normal(size=(877 + 3 * refit + weighted, 2)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, len(x)).astype(np.float32) if weighted else None
    key = jax.block_until_ready(jax.random.key(4))
    with caplog.at_level(logging.WARNING), jax.log_compiles(True):
        res = gmmjax.fit_outlier_detector(key, x, 2, contamination=0.05, max_iter=10,
                                          refit_on_inliers=refit, sample_weight=w)
    compiled = {r.getMessage().split()[1] for r in caplog.records
                if r.getMessage().startswith("Compiling ")}
    assert compiled <= {"jit(_fit_program)", "jit(evaluate)"}, compiled
    assert isinstance(res.offset, jax.Array) and isinstance(res.scores, jax.Array)
    scores = np.asarray(res.scores)
    np.testing.assert_allclose(scores, np.asarray(gmmjax.log_prob(res.params, x)), rtol=1e-6)
    expected = (np.percentile(scores, 5.0) if w is None
                else float(contamination_threshold(jax.numpy.asarray(scores), 0.05, w)))
    np.testing.assert_allclose(float(res.offset), expected, rtol=1e-5)
    assert np.asarray(res.labels).tolist() == np.where(scores < float(res.offset), -1, 1).tolist()
