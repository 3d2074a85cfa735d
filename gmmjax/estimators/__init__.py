"""scikit-learn compatible estimators: thin facades over the functional core."""

from ._base import BaseMixtureEstimator
from .bayesian_mixture import BayesianGaussianMixture
from .gaussian_mixture import GaussianMixture

__all__ = ["BaseMixtureEstimator", "GaussianMixture"]
__all__ += ["BayesianGaussianMixture"]
