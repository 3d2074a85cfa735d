"""Save and load mixtures as ``.npz`` files — plain arrays only, never pickle.

``save(obj, file)`` writes a :class:`gmmjax.MixtureParams` or a fitted
:class:`gmmjax.GaussianMixture`, :class:`gmmjax.BayesianGaussianMixture`,
:class:`gmmjax.GaussianMixtureOutlierDetector` or :class:`gmmjax.KernelDensity`; ``load(file)``
gives the same kind of object back. Files are read with ``allow_pickle=False``, so loading never
executes code: every entry is a numeric or fixed-width string array, and the estimator's
constructor parameters are a JSON document (arrays such as ``means_init`` are separate entries).
A ``RandomState`` ``random_state`` cannot be stored as data; it is saved as None with a warning.

``load`` checks values as well as shapes (finite numbers, non-negative weights, precision
Cholesky factors with a positive diagonal, positive bandwidth) and refuses a damaged, truncated
or foreign file, a missing, malformed or unknown entry with one clear ``ValueError``.
"""

from __future__ import annotations

import json
import numbers
import warnings
import zipfile
import zlib

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


def _generic_classes() -> dict:
    """Estimators stored by their constructor parameters and public fitted attributes."""
    from .estimators.bayesian_mixture import BayesianGaussianMixture
    from .estimators.kernel_density import KernelDensity
    from .estimators.outlier_detector import GaussianMixtureOutlierDetector
    return {c.__name__: c for c in (BayesianGaussianMixture, GaussianMixtureOutlierDetector,
                                    KernelDensity, _estimator_class())}


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
            warnings.warn("random_state is a RandomState instance, which cannot be saved as "
                          "data; it is stored as None.", UserWarning, stacklevel=3)
            plain[name] = None
        else:
            arr = np.asarray(value)
            if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number)):
                raise TypeError(f"Cannot save parameter {name}={value!r} without pickle.")
            arrays[_ARRAY_PREFIX + name] = arr
    return plain, arrays


def _fitted_entries(est, prefix: str) -> dict[str, np.ndarray]:
    """Entries for an estimator's constructor parameters and public fitted attributes
    (``name_``), each named ``prefix + ...``; a nested estimator (``mixture_``) recursively."""
    from sklearn.base import BaseEstimator
    plain, arrays = _split_constructor_params(est)
    entries = {prefix + "estimator_params": np.array(json.dumps(plain, sort_keys=True))}
    entries.update({prefix + k: v for k, v in arrays.items()})
    spec = {}
    for name, value in vars(est).items():
        if name.startswith("_") or not name.endswith("_"):
            continue
        key = f"{prefix}fitted__{name}"
        if value is None or type(value) in (bool, int, float, str):   # numpy scalars: arrays
            spec[name] = ["scalar", value]
        elif isinstance(value, BaseEstimator):
            spec[name] = ["estimator", type(value).__name__]
            entries.update(_fitted_entries(value, f"{prefix}{name}."))
        elif isinstance(value, tuple):
            spec[name] = ["tuple", len(value)]
            entries.update({f"{key}__{i}": np.asarray(v) for i, v in enumerate(value)})
        else:
            arr = np.asarray(value)
            spec[name] = ["list" if isinstance(value, list) else "array", str(arr.dtype)]
            entries[key] = arr.astype(str) if arr.dtype == object else arr
    entries[prefix + "fitted"] = np.array(json.dumps(spec, sort_keys=True))
    return entries


def save(obj, file) -> None:
    """Write a ``MixtureParams`` or a fitted ``GaussianMixture``, ``BayesianGaussianMixture``,
    ``GaussianMixtureOutlierDetector`` or ``KernelDensity`` to ``file`` (path or binary file
    object) as an uncompressed ``.npz`` (numpy adds the ``.npz`` suffix to a path without one)."""
    est_cls = _estimator_class()
    generic = _generic_classes()
    entries: dict[str, np.ndarray] = {"__format__": np.array(FORMAT),
                                      "__version__": np.array(FORMAT_VERSION)}
    params = None
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
    elif type(obj) in generic.values():
        from sklearn.utils.validation import check_is_fitted
        check_is_fitted(obj)
        kind = type(obj).__name__
        entries.update(_fitted_entries(obj, ""))
    else:
        raise TypeError("save() takes a gmmjax.MixtureParams or a fitted gmmjax "
                        f"GaussianMixture, {', '.join(sorted(set(generic) - {'GaussianMixture'}))}"
                        f"; got {type(obj).__name__}.")
    entries["kind"] = np.array(kind)
    if params is not None:
        entries["covariance_type"] = np.array(params.covariance_type)
        for field in _PARAM_FIELDS:
            entries[field] = np.asarray(getattr(params, field))
    np.savez(file, **entries)


class _Entries:
    """The entries of a loaded file, each read at most once; reports what was never read."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays, self.used = arrays, set()

    def __contains__(self, key):
        return key in self.arrays

    def get(self, key: str) -> np.ndarray:
        if key not in self.arrays:
            raise ValueError(f"Not a gmmjax mixture file: the entry {key!r} is missing.")
        self.used.add(key)
        return self.arrays[key]

    def scalar(self, key: str, kind: str):
        """A 0-d entry of ``kind`` ("str", "int", "bool", "float") as a Python/numpy scalar."""
        a = self.get(key)
        ok = a.ndim == 0 and {"str": "U", "int": "iu", "bool": "b", "float": "fiu"}[kind].find(
            a.dtype.kind) >= 0
        if not ok:
            raise ValueError(f"Damaged gmmjax file: the entry {key!r} must be a single {kind}; "
                             f"got dtype {a.dtype}, shape {a.shape}.")
        return {"str": str, "int": int, "bool": bool, "float": lambda v: v[()]}[kind](a)

    def json(self, key: str) -> dict:
        try:
            value = json.loads(self.scalar(key, "str"))
        except json.JSONDecodeError as e:
            raise ValueError(f"Damaged gmmjax file: the entry {key!r} is not valid JSON "
                             f"({e}).") from None
        if not isinstance(value, dict):
            raise ValueError(f"Damaged gmmjax file: the entry {key!r} must be a JSON object.")
        return value

    def unread(self) -> list[str]:
        return sorted(set(self.arrays) - self.used)


def _read(file) -> dict[str, np.ndarray]:
    """Every entry of an .npz file, or a ValueError that says why it is not one."""
    try:
        data = np.load(file, allow_pickle=False)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise ValueError(f"Not a gmmjax mixture file: cannot read it as an .npz archive "
                         f"({type(e).__name__}: {e}).") from None
    except ValueError as e:
        raise ValueError(f"Not a gmmjax mixture file: {e}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError("Not a gmmjax mixture file: it holds a single array (.npy), not an "
                         ".npz archive of gmmjax.io.save.")
    with data:
        try:
            return {key: data[key] for key in data.files}
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            raise ValueError(f"Damaged gmmjax file: cannot read its entries "
                             f"({type(e).__name__}: {e}).") from None


def _constructor_kwargs(entries: _Entries, prefix: str) -> dict:
    kwargs = entries.json(prefix + "estimator_params")
    array_prefix = prefix + _ARRAY_PREFIX
    for key in list(entries.arrays):
        if key.startswith(array_prefix) and "." not in key[len(array_prefix):]:
            kwargs[key[len(array_prefix):]] = np.array(entries.get(key))
    return kwargs


def _check_finite(name: str, value) -> None:
    a = np.asarray(value)
    if a.dtype.kind not in "fiub":
        raise ValueError(f"Damaged gmmjax file: {name} must be numeric; got dtype {a.dtype}.")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"Damaged gmmjax file: {name} contains NaN or infinity.")


def _load_fitted(entries: _Entries, kind: str, prefix: str):
    """An estimator of ``kind`` from the entries named ``prefix + ...``, values checked."""
    classes = _generic_classes()
    if kind not in classes:
        raise ValueError(f"Unknown object kind {kind!r} in the file.")
    try:
        est = classes[kind](**_constructor_kwargs(entries, prefix))
    except TypeError as e:
        raise ValueError(f"Damaged gmmjax file: bad constructor parameters for {kind} "
                         f"({e}).") from None
    spec = entries.json(prefix + "fitted")
    for name, item in spec.items():
        how = item[0] if isinstance(item, list) and item else None
        key = f"{prefix}fitted__{name}"
        if how == "scalar":
            value = item[1]
        elif how == "estimator":
            value = _load_fitted(entries, item[1], f"{prefix}{name}.")
        elif how == "tuple":
            value = tuple(np.array(entries.get(f"{key}__{i}")) for i in range(int(item[1])))
        elif how in ("array", "list"):
            value = np.array(entries.get(key))
            if item[1] == "object":
                value = value.astype(object)
            elif how == "list":
                value = list(value)
            elif value.ndim == 0:
                value = value[()]
        else:
            raise ValueError(f"Damaged gmmjax file: unreadable description of {name!r}.")
        if name not in ("lower_bound_", "lower_bounds_", "feature_names_in_") \
                and not isinstance(value, (str, type(None))) and not hasattr(value, "get_params"):
            _check_finite(name, value)
        setattr(est, name, value)
    _check_fitted_values(est)
    return est


def _check_fitted_values(est) -> None:
    """Kind-specific value checks of a loaded estimator beyond finiteness."""
    from .validation import check_param_values, check_params
    if hasattr(est, "precisions_cholesky_"):
        params = MixtureParams(*(np.asarray(getattr(est, f + "_")) for f in _PARAM_FIELDS),
                               covariance_type=est.covariance_type)
        check_param_values(check_params(params))
        if params.n_features != est.n_features_in_:
            raise ValueError("Damaged gmmjax file: n_features_in_ does not match the means.")
    if hasattr(est, "X_fit_"):
        from .kde import kde_bandwidth
        from .validation import check_sample_weight, float_dtype
        if np.ndim(est.X_fit_) != 2 or np.shape(est.X_fit_)[1] != est.n_features_in_:
            raise ValueError(f"Damaged gmmjax file: X_fit_ of shape {np.shape(est.X_fit_)}.")
        kde_bandwidth(1, 1, est.bandwidth_)
        if est.sample_weight_ is not None:
            check_sample_weight(est.sample_weight_, np.shape(est.X_fit_)[0],
                                float_dtype(est.X_fit_))


def load(file):
    """Read a file written by :func:`save`. -> the saved ``MixtureParams`` or fitted estimator.

    Uses ``numpy.load(..., allow_pickle=False)``: object arrays are refused, nothing is executed.
    Values are checked; a damaged or foreign file raises one ``ValueError``.
    """
    entries = _Entries(_read(file))
    fmt = entries.scalar("__format__", "str") if "__format__" in entries else None
    if fmt != FORMAT:
        entries.get("__format__")
        raise ValueError(f"Not a gmmjax mixture file (format {fmt!r}).")
    version = entries.scalar("__version__", "int")
    if version > FORMAT_VERSION:
        raise ValueError(f"File format version {version} is newer than this gmmjax "
                         f"supports ({FORMAT_VERSION}); upgrade gmmjax.")
    kind = entries.scalar("kind", "str")
    if kind in ("MixtureParams", "GaussianMixture"):
        obj = _load_mixture(entries, kind)
    else:
        obj = _load_fitted(entries, kind, "")
    unread = entries.unread()
    if unread:
        raise ValueError(f"Damaged gmmjax file: unknown entr{'ies' if len(unread) > 1 else 'y'} "
                         f"{', '.join(map(repr, unread))}.")
    return obj


def _load_mixture(entries: _Entries, kind: str):
    from .validation import check_param_values, check_params
    params = MixtureParams(*(np.array(entries.get(f)) for f in _PARAM_FIELDS),
                           covariance_type=entries.scalar("covariance_type", "str"))
    check_param_values(check_params(params))
    if np.ndim(params.weights) != 1:
        raise ValueError(f"Damaged gmmjax file: weights of shape {np.shape(params.weights)}; "
                         "one set of parameters was expected.")
    if kind == "MixtureParams":
        return params
    kwargs = _constructor_kwargs(entries, "")
    kwargs.pop("n_components", None)
    kwargs.pop("covariance_type", None)
    try:
        est = _estimator_class().from_params(params, **kwargs)
    except TypeError as e:
        raise ValueError(f"Damaged gmmjax file: bad constructor parameters ({e}).") from None
    est.converged_ = entries.scalar("converged_", "bool")
    est.n_iter_ = entries.scalar("n_iter_", "int")
    lower_bound = entries.scalar("lower_bound_", "float")
    est.lower_bound_ = -np.inf if np.isneginf(lower_bound) else lower_bound
    est.lower_bounds_ = list(np.array(entries.get("lower_bounds_")))
    est.n_features_in_ = entries.scalar("n_features_in_", "int")
    if est.n_features_in_ != params.n_features:
        raise ValueError("Damaged gmmjax file: n_features_in_ does not match the means.")
    if "feature_names_in_" in entries:
        est.feature_names_in_ = np.array(entries.get("feature_names_in_")).astype(object)
    return est
