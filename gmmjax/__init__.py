"""gmmjax: Gaussian mixture models in JAX.

Functional core (pure, jit/vmap/grad-friendly) and scikit-learn-compatible estimators.
"""

from .bayesian import BayesianFitResult, BayesianParams, BayesianPriors, fit_bayesian
from .covariance import COVARIANCE_TYPES, get_covariance_model
from .density import log_prob, predict, predict_log_proba, predict_proba, sample
from .em import FitResult, Status, e_step, em_step, m_step
from .estimators import BayesianGaussianMixture, GaussianMixture
from .fit import fit
from .init import INIT_METHODS, initialize, kmeans, kmeans_plusplus
from .params import MixtureParams, from_covariances, from_precisions, from_precisions_cholesky
from .selection import SelectionResult, aic, bic, n_parameters, select_model
from .online import OnlineResult, OnlineState, fit_online, online_init, online_step, stepwise_schedule
from .sgd import (ConjugatePrior, SGDResult, SGDState, fit_sgd, log_prior, sgd_init, sgd_objective,
                  sgd_step, weak_prior)
from .unconstrained import UnconstrainedParams, from_unconstrained, to_unconstrained

__version__ = "0.1.0"

__all__ = [
    "COVARIANCE_TYPES", "INIT_METHODS", "FitResult", "GaussianMixture", "MixtureParams", "Status",
    "aic", "bic",
    "e_step", "em_step", "fit", "from_covariances", "from_precisions", "from_precisions_cholesky",
    "get_covariance_model", "initialize", "kmeans", "kmeans_plusplus", "log_prob", "m_step",
    "n_parameters", "predict", "predict_log_proba", "predict_proba", "sample",
]
__all__ += [
    "ConjugatePrior", "OnlineResult", "OnlineState", "SGDResult", "SGDState", "UnconstrainedParams",
    "fit_online", "fit_sgd", "from_unconstrained", "log_prior", "online_init", "online_step",
    "sgd_init", "sgd_objective", "sgd_step", "stepwise_schedule", "to_unconstrained", "weak_prior",
]
__all__ += ["BayesianFitResult", "BayesianGaussianMixture", "BayesianParams", "BayesianPriors",
            "fit_bayesian"]
from . import distributed  # noqa: E402  (scale-out: meshes, shard_map'd statistics)
from .many import fit_many, pad_datasets  # noqa: E402
from .streaming import array_chunks, fit_stream  # noqa: E402

__all__ += ["array_chunks", "distributed", "fit_many", "fit_stream", "pad_datasets"]
from .estimators.kernel_density import KernelDensity  # noqa: E402
from .estimators.outlier_detector import GaussianMixtureOutlierDetector  # noqa: E402
from .kde import kde_bandwidth, kde_log_prob, kde_sample  # noqa: E402
from .outliers import (contamination_threshold, fit_outlier_detector, inlier_labels,  # noqa: E402
                       outlier_mask)

__all__ += ["GaussianMixtureOutlierDetector", "KernelDensity", "SelectionResult",
            "contamination_threshold", "fit_outlier_detector", "inlier_labels", "kde_bandwidth",
            "kde_log_prob", "kde_sample", "outlier_mask", "select_model"]
