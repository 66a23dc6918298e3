"""The XLA compilation cache that ``curvdyn reproduce``'s workers share (:mod:`curvdyn._workers`).

Each worker meets every experiment's programs at its first seed; with the shared cache only the
first worker compiles a program and the others load it. These tests check that a worker keeps
its compilations in the directory it is given, that a second worker loads them instead of
compiling again and computes the same bits, that a user's own cache directory is kept, and that
the workers take the tasks in the order that lets the cache pay.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from curvdyn import _workers, io, reproduce


def _probe(x: np.ndarray) -> tuple[np.ndarray, str | None]:
    """A compiled computation in the worker, and the worker's cache directory."""
    import jax
    import jax.numpy as jnp

    f = jax.jit(lambda a: jnp.linalg.eigh(a @ a.T + jnp.eye(a.shape[0]))[0] * jnp.sum(jnp.sin(a)))
    return np.asarray(f(x)), jax.config.jax_compilation_cache_dir


def _in_worker(cache_dir: str | None, x: np.ndarray) -> tuple[np.ndarray, str | None]:
    context = multiprocessing.get_context("spawn")
    initargs = (os.getpid(), io.jax_settings(), cache_dir)
    with ProcessPoolExecutor(1, mp_context=context, initializer=_workers.start_worker, initargs=initargs) as pool:
        return pool.submit(_probe, x).result(timeout=120)


def _entries(cache: Path) -> set[str]:
    return {p.name for p in cache.rglob("*") if p.is_file()}


def test_a_second_worker_loads_the_first_ones_compilations_and_gets_the_same_bits(tmp_path, monkeypatch):
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    cache = tmp_path / "xla"
    x = np.random.default_rng(0).normal(size=(7, 7))
    first, where = _in_worker(str(cache), x)
    assert where == str(cache)
    kept = _entries(cache)
    assert kept, "the first worker kept no compilation"
    second, _ = _in_worker(str(cache), x)
    assert _entries(cache) == kept  # loaded, not compiled again
    assert first.dtype == np.float64 and np.array_equal(first, second)
    uncached, where = _in_worker(None, x)
    assert where is None and np.array_equal(first, uncached)


def test_a_users_own_cache_directory_is_kept(tmp_path, monkeypatch):
    user = tmp_path / "users-cache"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(user))
    _, where = _in_worker(str(tmp_path / "ours"), np.eye(3))
    assert where == str(user) and not (tmp_path / "ours").exists()


def test_the_workers_take_every_experiments_first_seed_before_any_further_seed(tmp_path, monkeypatch):
    """Two workers starting the same experiment's first two seeds together would both compile its
    programs; in this order each experiment's first seed fills the shared cache for the rest."""
    plan = {"fig1": [0, 1, 2], "fig3": [0, 1], "relu": [5]}
    firsts = [("fig1", 0), ("fig3", 0), ("relu", 5)]
    assert reproduce._parallel_order(plan) == firsts + [("fig1", 1), ("fig1", 2), ("fig3", 1)]
    submitted: dict[str, list] = {}
    monkeypatch.setattr(reproduce, "_run_parallel", lambda tasks, *a, **k: submitted.setdefault("parallel", tasks))
    monkeypatch.setattr(reproduce, "_run_sequential", lambda tasks, *a, **k: submitted.setdefault("sequential", tasks))
    for jobs in (2, 1):
        reproduce._execute(plan, tmp_path, jobs=jobs, progress=False, on_done=print, formats=("png",), seed_kwargs={})
    assert submitted["parallel"] == reproduce._parallel_order(plan)
    assert submitted["sequential"] == [(name, s) for name, seeds in plan.items() for s in seeds]  # figure order
