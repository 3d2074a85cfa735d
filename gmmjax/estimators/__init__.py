"""scikit-learn compatible estimators: thin facades over the functional core."""

from ..compile_cache import start_prefetch

# The programs the previous run of this command used load in the background while scikit-learn
# imports (gmmjax.compile_cache, "prefetch").
start_prefetch()

from ._base import BaseMixtureEstimator
from .bayesian_mixture import BayesianGaussianMixture
from .gaussian_mixture import GaussianMixture

__all__ = ["BaseMixtureEstimator", "GaussianMixture"]
__all__ += ["BayesianGaussianMixture"]
