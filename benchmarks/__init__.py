"""gmmjax benchmark suite: gmmjax vs scikit-learn (and peers) on identical work.

Run it with ``python -m benchmarks [--quick]``. Cases come from plugin modules
``benchmarks/cases_*.py``, each defining::

    from benchmarks import Case, Run, Skip

    def cases(quick: bool) -> list[Case]:
        def setup():                      # untimed, once per case: data, initial parameters...
            return make_data(...)
        def gmmjax_impl(payload) -> Run:  # prepare (untimed); Run.fn() is the timed call
            return Run(lambda: gmmjax.fit(...), result=lambda r: {"loglik": r.lower_bound})
        def sklearn_impl(payload) -> Run:
            return Run(lambda: GaussianMixture(...).fit(x),
                       result=lambda g: {"loglik": g.lower_bound_}, jax=False)
        return [Case(name="my-case-N1000", group="mygroup", params={"N": 1000, ...},
                     setup=setup, impls={"gmmjax": gmmjax_impl, "sklearn": sklearn_impl},
                     n_iter=10, flops=None)]

A factory (or ``setup``) raises ``Skip("why")`` to skip itself; a plugin that fails to import
or raises is skipped with a note and the rest of the suite runs. Helpers for identical work
(shared data and initial parameters, sklearn / gmmjax / peer runners) are in
:mod:`benchmarks.peers`; the timing rules are in :mod:`benchmarks.harness`.

The package imports the harness (and so JAX and NumPy) lazily: ``python -m benchmarks`` first
restarts itself without the OpenBLAS kernel overrides
(:func:`benchmarks.machine.reexec_with_fair_blas`), which only works before NumPy is loaded.
"""

__all__ = ["Case", "Run", "Settings", "Skip", "measure", "run_case"]


def __getattr__(name):
    if name in __all__:
        from . import harness
        return getattr(harness, name)
    raise AttributeError(f"module 'benchmarks' has no attribute {name!r}")
