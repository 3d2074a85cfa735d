"""The ``gmmjax`` command.

    gmmjax fit DATA [-k 1-10] [--covariance-type full,diag] [--criterion bic] [--out model.npz]
    gmmjax score MODEL DATA [--per-sample] [--out scores.npy]
    gmmjax outliers MODEL DATA [--contamination 0.04 | --threshold LOGDENS] [--out labels.npy]
    gmmjax bench [--quick] [any option of python -m benchmarks]

DATA is a .npy array or a numeric .csv file (comma-separated, UTF-8 with or without a byte-order
mark; line 1 is a header when none of its cells is a number, or as ``--header``/``--no-header``
say); a 1-D array is one feature. Data are centred in float64 before the (default float32)
computation, so a large offset is not rounded away. A model file is :mod:`gmmjax.io`'s ``.npz`` (plain arrays, no pickle:
loading never executes code), so ``gmmjax.io.load("model.npz")`` reads what ``fit`` wrote and
``score``/``outliers`` accept a saved ``GaussianMixture``. User mistakes print one line ``gmmjax: error: ...`` on stderr and exit with
status 2; nothing is a traceback.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

EXIT_USAGE = 2


class CliError(Exception):
    """A user mistake: printed as one line on stderr, exit status 2."""


# ----------------------------------------------------------------------------- input / output

def load_data(path: str, header: bool | None = None, missing: bool = False) -> np.ndarray:
    """(n_samples, n_features) float64 array from a .npy or .csv file (1-D -> one feature);
    ``header`` as :func:`_load_csv`; ``missing``: NaN entries (and, in a CSV, empty/nan/NA
    cells) are missing values instead of an error."""
    p = Path(path)
    if not p.exists():
        raise CliError(f"data file not found: {path}")
    if p.is_dir():
        raise CliError(f"data path is a directory, not a file: {path}")
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except ValueError as e:
            raise CliError(f"{path}: not a numeric .npy array ({e})") from None
        except OSError as e:
            raise CliError(f"{path}: cannot read ({e})") from None
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) \
                or np.iscomplexobj(arr):
            raise CliError(f"{path}: expected a real numeric array; got dtype {arr.dtype}")
    elif suffix in (".csv", ".txt"):
        arr = _load_csv(p, header, missing)
    else:
        raise CliError(f"{path}: unsupported file type {suffix or '(none)'!r}; give a .npy or "
                       ".csv file")
    arr = np.asarray(arr, np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise CliError(f"{path}: expected a 2-D array (n_samples, n_features); got shape "
                       f"{arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise CliError(f"{path}: no data (shape {arr.shape})")
    bad = ~np.isfinite(arr) & ~(missing & np.isnan(arr))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise CliError(f"{path}: {int(bad.sum())} missing or non-finite value(s), first at row "
                       f"{row + 1}, column {col + 1}; remove or impute them first")
    return arr


MISSING_CELLS = ("", "nan", "na")   # with --missing marginalize (case-insensitive)


def _load_csv(p: Path, header: bool | None = None, missing: bool = False) -> np.ndarray:
    """Rows of a comma-separated file. ``header``: True skips line 1, False reads it as data,
    None (auto) skips it only when none of its cells is a number (a numeric header such as
    ``2020,2021`` needs ``--header``). A UTF-8 byte-order mark is ignored. ``missing``: cells
    in MISSING_CELLS read as NaN."""
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"{p}: cannot read as text ({e})") from None
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines())
             if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise CliError(f"{p}: the CSV file is empty")
    first = [c.strip() for c in lines[0][1].split(",")]
    if header or (header is None and not any(_is_float(c) for c in first)):
        lines = lines[1:]
    rows, width = [], None
    for lineno, line in lines:
        cells = [c.strip() for c in line.split(",")]
        if missing:
            cells = ["nan" if c.lower() in MISSING_CELLS else c for c in cells]
        try:
            values = [float(c) for c in cells]
        except ValueError:
            bad = next(c for c in cells if not _is_float(c))
            hint = ("; if it is a header row, pass --header" if lineno == lines[0][0]
                    and header is None else "")
            raise CliError(f"{p}: non-numeric value {bad!r} on line {lineno}{hint}") from None
        if width is None:
            width = len(values)
        elif len(values) != width:
            raise CliError(f"{p}: line {lineno} has {len(values)} columns, expected {width}")
        rows.append(values)
    if not rows:
        raise CliError(f"{p}: no numeric rows in the CSV file")
    return np.array(rows, np.float64)


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def check_writable(path: str, suffixes: tuple[str, ...], suffix_hint: str) -> Path:
    """``--out`` checked before any work: its suffix, an existing writable directory, not itself
    a directory."""
    p = Path(path)
    if p.suffix not in suffixes:
        raise CliError(f"--out {path}: {suffix_hint}")
    parent = p.parent
    if not parent.exists():
        raise CliError(f"--out {path}: directory {parent} does not exist")
    if not parent.is_dir():
        raise CliError(f"--out {path}: {parent} is not a directory")
    if p.is_dir():
        raise CliError(f"--out {path}: is a directory; give a file name")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise CliError(f"--out {path}: not writable (permission denied)")
    return p


def centred(X: np.ndarray, dtype, name: str, shift=None) -> tuple[np.ndarray, np.ndarray]:
    """(shift (D,) float64, X − shift as ``dtype``); shift defaults to X's mean. The data are
    centred in float64 BEFORE they are narrowed, so an offset (e.g. 1e8, where float32 steps are
    8) cannot round them away. Refuses data whose spread ``dtype`` cannot square without
    overflow."""
    shift = np.nanmean(X, axis=0) if shift is None else shift   # NaN: missing values
    xc = X - shift
    spread = float(np.nanmax(np.abs(xc)))
    limit = float(np.sqrt(np.finfo(dtype).max)) / 1e2
    if spread > limit:
        hint = "pass --float64 or rescale" if dtype == np.float32 else "rescale"
        raise CliError(f"{name}: values lie up to {spread:.3g} from their mean, beyond what "
                       f"{np.dtype(dtype).name} computes safely (about {limit:.0e}); {hint} the "
                       "data")
    return shift, xc.astype(dtype)


def check_reg_covar(reg_covar: float, dtype) -> None:
    if not reg_covar <= float(np.finfo(dtype).max):
        hint = "pass --float64 or a smaller value" if dtype == np.float32 else "a smaller value"
        raise CliError(f"--reg-covar {reg_covar:g} exceeds the {np.dtype(dtype).name} range "
                       f"(max {np.finfo(dtype).max:.3g}); {hint}")


def save_model(path: str, params) -> None:
    """Write a MixtureParams with :func:`gmmjax.io.save` (.npz of plain arrays; no pickle)."""
    from . import io
    p = check_writable(path, (".npz",), "the model file name must end in .npz")
    try:
        io.save(params, str(p))
    except OSError as e:
        raise CliError(f"cannot write {path}: {e}") from None


def load_model(path: str):
    """The MixtureParams in a file of :func:`gmmjax.io.save` (a saved ``GaussianMixture`` too);
    read with ``allow_pickle=False``."""
    from . import io

    p = Path(path)
    if not p.exists():
        raise CliError(f"model file not found: {path}")
    if p.is_dir():
        raise CliError(f"model path is a directory, not a file: {path}")
    hint = "write one with `gmmjax fit DATA --out MODEL.npz` or gmmjax.io.save"
    try:
        with open(p, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"
    except OSError as e:
        raise CliError(f"cannot read {path}: {e}") from None
    if not is_zip:
        raise CliError(f"{path}: not a gmmjax model file (not an .npz archive); {hint}")
    try:
        obj = io.load(str(p))
    except (ValueError, OSError) as e:     # io.load says why in one ValueError
        msg = " ".join(str(e).split())
        raise CliError(f"{path}: not a usable gmmjax model file ({msg}); {hint}") from None
    params = obj if isinstance(obj, io.MixtureParams) else getattr(obj, "params_", None)
    if not isinstance(params, io.MixtureParams):
        raise CliError(f"{path}: holds a {type(obj).__name__}, not a Gaussian mixture; {hint}")
    if np.ndim(params.weights) != 1 or np.ndim(params.means) != 2:
        raise CliError(f"{path}: the file holds a batch of mixtures; the command needs one")
    return params


ARRAY_SUFFIXES = (".npy", ".csv", ".txt")


def check_array_out(path: str | None) -> None:
    if path:
        check_writable(path, ARRAY_SUFFIXES, "give a .npy or .csv file name")


def write_array(path: str, values: np.ndarray, header: str) -> None:
    p = check_writable(path, ARRAY_SUFFIXES, "give a .npy or .csv file name")
    try:
        if p.suffix == ".npy":
            np.save(p, values, allow_pickle=False)
        else:
            fmt = "%d" if np.issubdtype(values.dtype, np.integer) else "%.10g"
            np.savetxt(p, values, fmt=fmt, delimiter=",", header=header, comments="")
    except OSError as e:
        raise CliError(f"cannot write {path}: {e}") from None


# ----------------------------------------------------------------------------- argument parsing

def parse_components(text: str) -> list[int]:
    """'1-10', '3', '2,4,8' or '1-3,6' -> sorted distinct integers >= 1."""
    ks: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                lo, hi = int(lo), int(hi)
                if lo > hi:
                    raise CliError(f"-k {text}: empty range {lo}-{hi} (the first number must be "
                                   "<= the second)")
                ks.extend(range(lo, hi + 1))
            else:
                ks.append(int(part))
        except ValueError:
            raise CliError(f"-k {text}: expected a number of components such as 3, a range "
                           "such as 1-10, or a list such as 2,4,8") from None
    if any(k < 1 for k in ks):
        raise CliError(f"-k {text}: numbers of components must be >= 1")
    if max(ks) > 1000:
        raise CliError(f"-k {text}: at most 1000 components")
    return sorted(set(ks))


def parse_covariance_types(text: str) -> list[str]:
    from .covariance import COVARIANCE_TYPES
    types = [t.strip() for t in str(text).split(",") if t.strip()]
    if text.strip() == "all":
        return list(COVARIANCE_TYPES)
    bad = [t for t in types if t not in COVARIANCE_TYPES]
    if bad or not types:
        raise CliError(f"--covariance-type {text}: unknown type {', '.join(bad) or '(none)'}; "
                       f"choose from {','.join(COVARIANCE_TYPES)} or 'all'")
    return list(dict.fromkeys(types))


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, exit 2 (argparse prints the usage too; keep it short)
        raise CliError(message)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="gmmjax", description="Gaussian mixture models in JAX from the command "
                 "line: fit with BIC/AIC model selection, score, flag outliers, benchmark.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    f = sub.add_parser("fit", help="fit mixtures over K and covariance types; keep the best",
                       description="Fit a Gaussian mixture for every (covariance type, K), print "
                       "the BIC/AIC table, and write the best model.")
    f.add_argument("data", metavar="DATA", help="a .npy or .csv file (rows = samples)")
    f.add_argument("-k", "--n-components", default="1-10", metavar="K",
                   help="numbers of components: 3, 1-10, or 2,4,8 (default 1-10)")
    f.add_argument("--covariance-type", default="full", metavar="TYPES",
                   help="comma-separated list of full, tied, diag, spherical, or 'all' "
                        "(default full)")
    f.add_argument("--criterion", default="bic", choices=("bic", "aic"))
    f.add_argument("--n-init", type=int, default=1, help="restarts per fit (default 1)")
    f.add_argument("--init", default="kmeans",
                   help="kmeans, k-means++, random or random_from_data (default kmeans)")
    f.add_argument("--max-iter", type=int, default=100)
    f.add_argument("--tol", type=float, default=1e-3)
    f.add_argument("--reg-covar", type=float, default=1e-6)
    f.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    f.add_argument("--float64", action="store_true",
                   help="compute in float64 (default float32, the fast path)")
    f.add_argument("--out", "-o", metavar="MODEL.npz", help="write the best model here")
    f.add_argument("--missing", default="error", choices=("error", "marginalize"),
                   help="marginalize: NaN, NA or an empty cell is a missing value (EM uses each "
                   "row's observed entries); default: an error")
    f.add_argument("--quiet", "-q", action="store_true", help="no progress output")

    s = sub.add_parser("score", help="log-likelihood of data under a model",
                       description="Print the mean log-likelihood per sample (sklearn's score) "
                       "and the total; optionally each sample's log density.")
    s.add_argument("model", metavar="MODEL", help="a .npz written by `gmmjax fit --out`")
    s.add_argument("data", metavar="DATA", help="a .npy or .csv file")
    s.add_argument("--per-sample", action="store_true",
                   help="print every sample's log density (one per line)")
    s.add_argument("--out", "-o", metavar="FILE", help="write per-sample log densities (.npy/.csv)")
    s.add_argument("--float64", action="store_true", help="compute in float64")
    s.add_argument("--missing", default="error", choices=("error", "marginalize"),
                   help="marginalize: NaN, NA or an empty cell is a missing value (EM uses each "
                   "row's observed entries); default: an error")

    o = sub.add_parser("outliers", help="flag the lowest-density rows of DATA",
                       description="Rows of DATA whose log density under MODEL is below the "
                       "contamination percentile of DATA's log densities (or below --threshold).")
    o.add_argument("model", metavar="MODEL")
    o.add_argument("data", metavar="DATA")
    g = o.add_mutually_exclusive_group()
    g.add_argument("--contamination", type=float, default=None,
                   help="fraction of DATA's rows to flag, in (0, 0.5] (default 0.05): the "
                   "threshold is that percentile of DATA's own log densities, not the training data's")
    g.add_argument("--threshold", type=float, default=None,
                   help="flag rows with log density below this value instead")
    o.add_argument("--out", "-o", metavar="FILE",
                   help="write +1 (inlier) / -1 (outlier) labels per row (.npy/.csv)")
    o.add_argument("--max-rows", type=int, default=20,
                   help="list at most this many flagged rows (default 20)")
    o.add_argument("--float64", action="store_true", help="compute in float64")

    for command in (f, s, o):
        command.add_argument("--header", action=argparse.BooleanOptionalAction, default=None,
                             help="a .csv DATA file's first line is (--header) or is not "
                                  "(--no-header) a header; default: a header only when none "
                                  "of its cells is a number")
    b = sub.add_parser("bench", help="run the benchmark suite (python -m benchmarks)",
                       add_help=False,   # --help goes to the suite, which lists its options
                       description="Run the benchmark suite of a source checkout; other options "
                       "are passed on to `python -m benchmarks` (see its --help).")
    b.add_argument("--quick", action="store_true", help="the representative subset")
    return ap


# ----------------------------------------------------------------------------- commands

class Progress:
    """A one-line text progress bar on stderr (a plain line per step when not a terminal)."""

    def __init__(self, total: int, enabled: bool = True, width: int = 24):
        self.total, self.enabled, self.width = total, enabled, width
        self.done, self.t0 = 0, time.perf_counter()
        self.tty = sys.stderr.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        if not self.enabled:
            return
        filled = round(self.width * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (self.width - filled)
        msg = (f"[{bar}] {self.done}/{self.total} {label} "
               f"({time.perf_counter() - self.t0:.1f} s)")
        if self.tty:
            end = "\n" if self.done == self.total else ""
            print("\r" + msg, end=end, file=sys.stderr, flush=True)
        else:
            print(msg, file=sys.stderr, flush=True)

    def note(self, label: str) -> None:
        if self.enabled:
            print(label, file=sys.stderr, flush=True)


def _dtype_scope(float64: bool):
    import jax
    from .estimators._base import x64_scope
    del jax
    return x64_scope(np.float64 if float64 else np.float32)


def cmd_fit(args) -> int:
    ks = parse_components(args.n_components)
    types = parse_covariance_types(args.covariance_type)
    for name, value, low in (("--n-init", args.n_init, 1), ("--max-iter", args.max_iter, 1)):
        if value < low:
            raise CliError(f"{name} must be >= {low}; got {value}")
    if not args.tol >= 0:
        raise CliError(f"--tol must be >= 0; got {args.tol}")
    if not args.reg_covar > 0:
        raise CliError(f"--reg-covar must be > 0; got {args.reg_covar}")
    from .init import INIT_METHODS
    if args.init not in INIT_METHODS:
        raise CliError(f"--init {args.init}: choose from {', '.join(INIT_METHODS)}")
    marginalize = args.missing == "marginalize"
    X = load_data(args.data, args.header, marginalize)
    n, d = X.shape
    if n < max(ks):
        raise CliError(f"{args.data} has {n} rows: too few for K={max(ks)} components (need at "
                       f"least one row per component)")
    if args.out:
        check_writable(args.out, (".npz",), "the model file name must end in .npz")
    dtype = np.float64 if args.float64 else np.float32
    check_reg_covar(args.reg_covar, dtype)
    shift, x = centred(X, dtype, args.data)

    import jax
    from .selection import select_model

    progress = Progress(len(types), enabled=not args.quiet)
    progress.note(f"gmmjax fit: {n} samples x {d} features, K in {_ks_text(ks)}, "
                  f"covariance {','.join(types)}, n_init={args.n_init} "
                  f"({len(ks) * len(types) * args.n_init} EM runs, one compiled program per "
                  f"covariance type)")
    results = []
    with _dtype_scope(args.float64):
        key = jax.random.key(args.seed)
        for ct in types:
            sweep = _select_with_missing if marginalize else select_model
            try:
                res = sweep(key, x, ks, (ct,), args.criterion, n_init=args.n_init,
                            init=args.init, max_iter=args.max_iter, tol=args.tol,
                            reg_covar=args.reg_covar, return_estimator=False)
            except RuntimeError as e:   # every fit of this type failed
                progress.step(f"{ct}: failed")
                results.append((ct, None, str(e)))
                continue
            progress.step(ct)
            results.append((ct, res, None))
    ok = [(ct, r) for ct, r, _ in results if r is not None]
    if not ok:
        raise CliError("every fit failed (ill-defined covariances); try a larger --reg-covar, "
                       "fewer components, or standardised data")
    crit = args.criterion
    best = min(((float(np.min(getattr(r, crit))), ct, r) for ct, r in ok), key=lambda t: t[0])
    best_val, best_ct, best_res = best
    best_k = best_res.best_n_components
    _print_table(results, ks, crit, best_ct, best_k)
    print(f"\nbest by {crit.upper()}: covariance_type={best_ct}, n_components={best_k} "
          f"({crit.upper()} {best_val:.6g})")
    if args.out:
        params = jax.device_get(best_res.params)
        save_model(args.out, params.replace(means=np.asarray(params.means, np.float64) + shift))
        print(f"wrote {args.out}")
    return 0


def _select_with_missing(key, x, ks, types, criterion, *, return_estimator, **options):
    """The K sweep of ``select_model`` for data with NaN entries (which select_model does not
    take yet): one ``gmmjax.fit(missing="marginalize")`` per K; criteria from the observed-data
    log-likelihood, with the same fields as a SelectionResult."""
    import math
    from types import SimpleNamespace
    from .fit import fit
    from .em import Status
    from .selection import n_parameters
    (ct,) = types
    fits = [fit(key, x, k, covariance_type=ct, missing="marginalize", **options) for k in ks]
    ok = [int(f.status) not in (Status.ILL_DEFINED_COVARIANCE, Status.NONFINITE) for f in fits]
    if not any(ok):
        raise RuntimeError("every fit failed (ill-defined covariances)")
    n = x.shape[0]
    loglik = np.array([[float(f.lower_bound) * n for f in fits]])
    n_par = np.array([[n_parameters(f.params) for f in fits]])
    bic = np.where(ok, -2 * loglik + n_par * math.log(n), np.inf)
    aic = np.where(ok, -2 * loglik + 2 * n_par, np.inf)
    best = int(np.argmin(bic if criterion == "bic" else aic))
    return SimpleNamespace(bic=bic, aic=aic, log_likelihood=loglik, n_parameters=n_par,
                           n_iter=np.array([[int(f.n_iter) for f in fits]]),
                           converged=np.array([[bool(f.converged) for f in fits]]),
                           n_components=tuple(ks), best_n_components=ks[best],
                           params=fits[best].params)


def _ks_text(ks):
    if len(ks) > 2 and ks == list(range(ks[0], ks[-1] + 1)):
        return f"{ks[0]}..{ks[-1]}"
    return ",".join(map(str, ks))


def _print_table(results, ks, crit, best_ct, best_k):
    head = f"{'covariance':>10} {'K':>4} {'BIC':>14} {'AIC':>14} {'log-lik':>14} " \
           f"{'params':>7} {'iter':>5} {'conv':>5}"
    print(head)
    print("-" * len(head))
    for ct, r, err in results:
        if r is None:
            print(f"{ct:>10}  failed: {err}")
            continue
        for j, k in enumerate(r.n_components):
            mark = "  <- best" if (ct == best_ct and k == best_k) else ""
            print(f"{ct:>10} {k:>4} {r.bic[0, j]:>14.6g} {r.aic[0, j]:>14.6g} "
                  f"{r.log_likelihood[0, j]:>14.6g} {int(r.n_parameters[0, j]):>7} "
                  f"{int(r.n_iter[0, j]):>5} {'yes' if r.converged[0, j] else 'no':>5}{mark}")


def _scores(params, X, float64: bool, missing: str = "error") -> np.ndarray:
    if X.shape[1] != params.means.shape[1]:
        raise CliError(f"DATA has {X.shape[1]} column(s) but the model was fitted on "
                       f"{params.means.shape[1]} feature(s)")
    from .density import log_prob
    dtype = np.float64 if float64 else np.float32
    means = np.asarray(params.means, np.float64)
    centre, x = centred(X, dtype, "DATA", means.mean(axis=0))   # both in float64, then narrowed
    with _dtype_scope(float64):
        cast = type(params)(*(np.asarray(a, dtype) for a in
                              (params.weights, means - centre, params.covariances,
                               params.precisions_cholesky)), params.covariance_type)
        return np.asarray(log_prob(cast, x, missing=missing), np.float64)


def cmd_score(args) -> int:
    check_array_out(args.out)
    params = load_model(args.model)
    X = load_data(args.data, args.header, args.missing == "marginalize")
    scores = _scores(params, X, args.float64, args.missing)
    print(f"samples: {len(scores)}")
    print(f"mean log-likelihood: {np.mean(scores):.8g}")
    print(f"total log-likelihood: {np.sum(scores):.8g}")
    if args.per_sample:
        for s in scores:
            print(f"{s:.8g}")
    if args.out:
        write_array(args.out, scores, "log_density")
        print(f"wrote {args.out}")
    return 0


def cmd_outliers(args) -> int:
    if args.max_rows < 0:
        raise CliError(f"--max-rows must be >= 0; got {args.max_rows}")
    contamination = 0.05 if args.contamination is None else args.contamination
    if args.threshold is None and not 0.0 < contamination <= 0.5:
        raise CliError(f"--contamination must be in (0, 0.5]; got {contamination}")
    if args.threshold is not None and not np.isfinite(args.threshold):
        raise CliError(f"--threshold must be a finite log density; got {args.threshold}")
    check_array_out(args.out)
    params = load_model(args.model)
    X = load_data(args.data, args.header)
    scores = _scores(params, X, args.float64)
    if args.threshold is not None:
        offset, rule = float(args.threshold), "threshold"
    else:
        offset = float(np.percentile(scores, 100.0 * contamination))
        rule = f"contamination {contamination:g}"
    flagged = np.flatnonzero(scores < offset)
    order = flagged[np.argsort(scores[flagged])]
    print(f"{len(flagged)} of {len(scores)} rows flagged as outliers ({rule}; log-density "
          f"threshold {offset:.6g})")
    if len(order) and args.max_rows:
        print(f"{'row':>8} {'log_density':>14}")
        for i in order[:args.max_rows]:
            print(f"{i:>8} {scores[i]:>14.6g}")
        if len(order) > args.max_rows:
            print(f"... and {len(order) - args.max_rows} more (see --out)")
    if args.out:
        labels = np.where(scores < offset, -1, 1).astype(np.int64)
        write_array(args.out, labels, "label")
        print(f"wrote {args.out}")
    return 0


def cmd_bench(args, rest) -> int:
    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "__main__.py").exists():
        raise CliError("gmmjax bench needs the benchmarks/ folder of a source checkout "
                       f"(looked in {root}); clone the repository and pip install -e '.[bench]'")
    argv = [sys.executable, "-m", "benchmarks"] + (["--quick"] if args.quick else []) + rest
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + [p for p in
                                                       [env.get("PYTHONPATH")] if p])
    return subprocess.call(argv, cwd=root, env=env)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        if argv and argv[0] == "bench":
            args, rest = parser.parse_known_args(argv)
        else:
            args, rest = parser.parse_args(argv), []
        if args.command is None:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        if args.command == "bench":
            code = cmd_bench(args, rest)
        else:
            code = {"fit": cmd_fit, "score": cmd_score, "outliers": cmd_outliers}[
                args.command](args)
    except CliError as e:
        print(f"gmmjax: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("gmmjax: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as e:   # a remaining input problem, said in one line
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"gmmjax: error: {msg}", file=sys.stderr)
        return EXIT_USAGE
    return code


def _entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    _entry()
