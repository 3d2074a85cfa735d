"""gmmjax: Gaussian mixture models in JAX.

Functional core (pure; works under jit, vmap and grad), scale-out helpers, and scikit-learn
compatible estimators. ``gmmjax.plot`` (matplotlib) and ``gmmjax.io`` are imported explicitly.
"""

from . import distributed
from .bayesian import BayesianFitResult, BayesianParams, BayesianPriors, fit_bayesian
from .covariance import COVARIANCE_TYPES, get_covariance_model
from .density import log_prob, predict, predict_log_proba, predict_proba, sample
from .em import FitResult, Status, e_step, em_step, m_step
from .estimators import BayesianGaussianMixture, GaussianMixture
from .estimators.imputer import GaussianMixtureImputer
from .estimators.kernel_density import KernelDensity
from .estimators.outlier_detector import GaussianMixtureOutlierDetector
from .fit import fit
from .init import INIT_METHODS, initialize, kmeans, kmeans_plusplus
from .kde import kde_bandwidth, kde_log_prob, kde_sample
from .many import fit_many, pad_datasets
from .missing import impute
from .online import (OnlineResult, OnlineState, fit_online, online_init, online_step,
                     stepwise_schedule)
from .outliers import contamination_threshold, fit_outlier_detector, inlier_labels, outlier_mask
from .params import MixtureParams, from_covariances, from_precisions, from_precisions_cholesky
from .selection import SelectionResult, aic, bic, n_parameters, select_model
from .sgd import (ConjugatePrior, SGDResult, SGDState, fit_sgd, log_prior, sgd_init, sgd_objective,
                  sgd_step, weak_prior)
from .streaming import array_chunks, fit_stream
from .unconstrained import UnconstrainedParams, from_unconstrained, to_unconstrained

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
