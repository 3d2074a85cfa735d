"""scikit-learn's estimator checks (``parametrize_with_checks``) on gmmjax.GaussianMixture.

Small max_iter / n_init as sklearn's own test does (``GaussianMixture(n_init=2, max_iter=5)``), so
the many shapes the checks use stay cheap to compile.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from gmmjax import GaussianMixture


@parametrize_with_checks([GaussianMixture(n_init=2, max_iter=5)])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
