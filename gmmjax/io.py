"""Save and load mixtures as ``.npz`` files — plain arrays only, never pickle.

``save(obj, file)`` writes a fitted :class:`gmmjax.GaussianMixture` or a
:class:`gmmjax.MixtureParams`; ``load(file)`` gives the same kind of object back. Files are read with ``allow_pickle=False``, so
loading never executes code: every entry is a numeric or fixed-width string array, and the
estimator's constructor parameters are a JSON document (arrays such as ``means_init`` are separate
entries). A ``RandomState`` ``random_state`` cannot be stored as data; it is saved as None with a
warning.
"""

from __future__ import annotations

import json
import numbers
import warnings

import numpy as np

from .params import MixtureParams

__all__ = ["save", "load", "FORMAT", "FORMAT_VERSION"]

FORMAT = "gmmjax.mixture"
FORMAT_VERSION = 1
_PARAM_FIELDS = ("weights", "means", "covariances", "precisions_cholesky")
_ARRAY_PREFIX = "param_array__"


def _estimator_class():
    from .estimators.gaussian_mixture import GaussianMixture
    return GaussianMixture


def _split_constructor_params(est) -> tuple[dict, dict]:
    """(JSON-able parameters, array parameters) of an estimator's get_params()."""
    plain, arrays = {}, {}
    for name, value in est.get_params(deep=False).items():
        if value is None or isinstance(value, (str, bool)):
            plain[name] = value
        elif isinstance(value, numbers.Integral):
            plain[name] = int(value)
        elif isinstance(value, numbers.Real):
            plain[name] = float(value)
        elif isinstance(value, np.random.RandomState):
            warnings.warn(f"random_state is a RandomState instance, which cannot be saved as "
                          f"data; it is stored as None.", UserWarning, stacklevel=3)
            plain[name] = None
        else:
            arr = np.asarray(value)
            if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)):
                raise TypeError(f"Cannot save parameter {name}={value!r} without pickle.")
            arrays[_ARRAY_PREFIX + name] = arr
    return plain, arrays


def save(obj, file) -> None:
    """Write a fitted ``GaussianMixture`` or a ``MixtureParams`` to ``file`` (path or binary file
    object) as an uncompressed ``.npz`` (numpy adds the ``.npz`` suffix to a path without one)."""
    est_cls = _estimator_class()
    entries: dict[str, np.ndarray] = {"__format__": np.array(FORMAT),
                                      "__version__": np.array(FORMAT_VERSION)}
    if isinstance(obj, MixtureParams):
        params, kind = obj, "MixtureParams"
        if np.ndim(obj.weights) != 1:
            raise ValueError("save() stores one set of parameters; got weights of shape "
                             f"{np.shape(obj.weights)} (a batch?).")
    elif type(obj) is est_cls:
        from sklearn.utils.validation import check_is_fitted
        check_is_fitted(obj)
        params, kind = obj.params_, "GaussianMixture"
        plain, arrays = _split_constructor_params(obj)
        entries["estimator_params"] = np.array(json.dumps(plain, sort_keys=True))
        entries.update(arrays)
        entries["converged_"] = np.array(bool(obj.converged_))
        entries["n_iter_"] = np.array(int(obj.n_iter_))
        entries["lower_bound_"] = np.array(obj.lower_bound_, dtype=np.asarray(obj.means_).dtype)
        entries["lower_bounds_"] = np.asarray(obj.lower_bounds_,
                                              dtype=np.asarray(obj.means_).dtype)
        entries["n_features_in_"] = np.array(int(obj.n_features_in_))
        if hasattr(obj, "feature_names_in_"):
            entries["feature_names_in_"] = np.asarray(obj.feature_names_in_, dtype=str)
    else:
        raise TypeError("save() takes a fitted gmmjax.GaussianMixture or a gmmjax.MixtureParams; "
                        f"got {type(obj).__name__}.")
    entries["kind"] = np.array(kind)
    entries["covariance_type"] = np.array(params.covariance_type)
    for field in _PARAM_FIELDS:
        entries[field] = np.asarray(getattr(params, field))
    np.savez(file, **entries)


def _get(data, key: str):
    if key not in data.files:
        raise ValueError(f"Not a gmmjax mixture file: the entry {key!r} is missing.")
    return data[key]


def load(file):
    """Read a file written by :func:`save`. -> ``GaussianMixture`` (fitted) or ``MixtureParams``.

    Uses ``numpy.load(..., allow_pickle=False)``: object arrays are refused, nothing is executed.
    """
    with np.load(file, allow_pickle=False) as data:
        fmt = str(_get(data, "__format__"))
        if fmt != FORMAT:
            raise ValueError(f"Not a gmmjax mixture file (format {fmt!r}).")
        version = int(_get(data, "__version__"))
        if version > FORMAT_VERSION:
            raise ValueError(f"File format version {version} is newer than this gmmjax "
                             f"supports ({FORMAT_VERSION}); upgrade gmmjax.")
        kind = str(_get(data, "kind"))
        params = MixtureParams(*(np.array(_get(data, f)) for f in _PARAM_FIELDS),
                               covariance_type=str(_get(data, "covariance_type")))
        from .validation import check_params
        check_params(params)
        if kind == "MixtureParams":
            return params
        if kind != "GaussianMixture":
            raise ValueError(f"Unknown object kind {kind!r} in the file.")
        kwargs = json.loads(str(_get(data, "estimator_params")))
        for key in data.files:
            if key.startswith(_ARRAY_PREFIX):
                kwargs[key[len(_ARRAY_PREFIX):]] = np.array(data[key])
        kwargs.pop("n_components", None)
        kwargs.pop("covariance_type", None)
        est = _estimator_class().from_params(params, **kwargs)
        est.converged_ = bool(_get(data, "converged_"))
        est.n_iter_ = int(_get(data, "n_iter_"))
        lower_bound = np.array(_get(data, "lower_bound_"))[()]
        est.lower_bound_ = -np.inf if np.isneginf(lower_bound) else lower_bound
        est.lower_bounds_ = list(np.array(_get(data, "lower_bounds_")))
        est.n_features_in_ = int(_get(data, "n_features_in_"))
        if "feature_names_in_" in data.files:
            est.feature_names_in_ = np.array(data["feature_names_in_"]).astype(object)
        return est
