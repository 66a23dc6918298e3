"""Shared test setup: float64 everywhere, and the independent reference importable as ``reference``."""

import gc
import os
import sys

import jax
import pytest

jax.config.update("jax_enable_x64", True)

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(autouse=True, scope="module")
def _fresh_compilation_caches():
    """Drop every compiled program after each test module.

    A whole-suite run otherwise keeps thousands of executables (every shape, rule and method the
    modules compile) alive in one process; that memory is what a later module's compile then
    works in (a full run crashed inside XLA's compiler at ~75 %, each module alone passes).
    """
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def quick_reproduce(tmp_path_factory, request):
    """The session's one ``curvdyn reproduce --quick --check`` run (:mod:`quick_runs`): ``{"out",
    "code", "wall"}``. test_reproduce checks the run itself, the experiment tests read its files.

    Under pytest-xdist the workers share one run: the first to take the lock makes it in the
    session's common temporary directory, the others wait for the lock and read its files.
    """
    import quick_runs

    if not hasattr(request.config, "workerinput"):  # not a pytest-xdist worker
        return quick_runs.reproduce_once(tmp_path_factory.mktemp("reproduce-quick"))
    return quick_runs.reproduce_shared(tmp_path_factory.getbasetemp().parent / "reproduce-quick")
