"""gmmjax: Gaussian mixture models in JAX.

Functional core (pure; works under jit and vmap; log_prob, the EM steps and sample also under
grad, the fits not: see README), scale-out helpers, and scikit-learn
compatible estimators. ``gmmjax.plot`` (matplotlib) and ``gmmjax.io`` are imported explicitly.
"""

import importlib

from .interpreter import collector_paused, install_exit_freeze

# ``fit`` is both a submodule and the function: bind the function now, so a later import of the
# submodule cannot shadow it. Everything else loads on first use (scikit-learn only with an
# estimator, optax only with fit_sgd/fit_online): ``import gmmjax`` stays cheap. Heavy imports
# (JAX here, scikit-learn with the estimators) run with the cyclic collector paused, and the
# collector skips the survivors at exit (see gmmjax.interpreter).
with collector_paused():
    from .fit import fit
install_exit_freeze()

_LAZY = {
    "covariance": ["COVARIANCE_TYPES", "get_covariance_model"],
    "density": ["impute", "log_prob", "predict", "predict_log_proba", "predict_proba", "sample"],
    "em": ["FitResult", "Status", "e_step", "em_step", "m_step"],
    "init": ["INIT_METHODS", "initialize", "kmeans", "kmeans_plusplus"],
    "params": ["MixtureParams", "from_covariances", "from_precisions", "from_precisions_cholesky"],
    "bayesian": ["BayesianFitResult", "BayesianParams", "BayesianPriors", "fit_bayesian"],
    "selection": ["SelectionResult", "aic", "bic", "n_parameters", "select_model"],
    "outliers": ["contamination_threshold", "fit_outlier_detector", "inlier_labels",
                 "outlier_mask"],
    "kde": ["kde_bandwidth", "kde_log_prob", "kde_sample"],
    "many": ["fit_many", "pad_datasets"],
    "streaming": ["array_chunks", "fit_stream"],
    "online": ["OnlineResult", "OnlineState", "fit_online", "online_init", "online_step",
               "stepwise_schedule"],
    "sgd": ["ConjugatePrior", "SGDResult", "SGDState", "fit_sgd", "log_prior", "sgd_init",
            "sgd_objective", "sgd_step", "weak_prior"],
    "unconstrained": ["UnconstrainedParams", "from_unconstrained", "to_unconstrained"],
    "estimators": ["BayesianGaussianMixture", "GaussianMixture"],
    "estimators.imputer": ["GaussianMixtureImputer"],
    "estimators.kernel_density": ["KernelDensity"],
    "estimators.outlier_detector": ["GaussianMixtureOutlierDetector"],
}
_WHERE = {name: module for module, names in _LAZY.items() for name in names}
_SUBMODULES = {"distributed"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        with collector_paused():
            return importlib.import_module(f".{name}", __name__)
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    with collector_paused():
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value   # later lookups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


__version__ = "0.1.0"

__all__ = [
    # functional core
    "COVARIANCE_TYPES", "INIT_METHODS", "FitResult", "MixtureParams", "Status", "aic", "bic",
    "e_step", "em_step", "fit", "from_covariances", "from_precisions", "from_precisions_cholesky",
    "get_covariance_model", "initialize", "kmeans", "kmeans_plusplus", "log_prob", "m_step",
    "n_parameters", "predict", "predict_log_proba", "predict_proba", "sample", "impute",
    # variational
    "BayesianFitResult", "BayesianParams", "BayesianPriors", "fit_bayesian",
    # workflows
    "SelectionResult", "select_model", "contamination_threshold", "fit_outlier_detector",
    "inlier_labels", "outlier_mask", "kde_bandwidth", "kde_log_prob", "kde_sample",
    # scale-out
    "array_chunks", "distributed", "fit_many", "fit_stream", "pad_datasets",
    # research use
    "ConjugatePrior", "OnlineResult", "OnlineState", "SGDResult", "SGDState", "UnconstrainedParams",
    "fit_online", "fit_sgd", "from_unconstrained", "log_prior", "online_init", "online_step",
    "sgd_init", "sgd_objective", "sgd_step", "stepwise_schedule", "to_unconstrained", "weak_prior",
    # estimators
    "BayesianGaussianMixture", "GaussianMixture", "GaussianMixtureImputer",
    "GaussianMixtureOutlierDetector",
    "KernelDensity",
]
