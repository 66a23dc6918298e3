"""Validation of the optimizers' hyperparameters and inputs (clear ``ValueError``s early)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from curvdyn._validate import check_nonneg, check_positive, check_q  # noqa: F401  (re-exported)

REDUCTIONS = ("mean", "sum")


def check_unit_interval(value: Any, name: str) -> float:
    """A number in ``[0, 1)``."""
    value = check_nonneg(value, name)
    if value >= 1:
        raise ValueError(f"{name} must lie in [0, 1), got {value}")
    return value


def check_period(value: Any, name: str) -> int:
    """A positive integer."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_learning_rate(learning_rate: Any) -> Any:
    """A positive finite number, or an optax schedule (a callable), returned unchanged."""
    if callable(learning_rate):
        return learning_rate
    check_positive(learning_rate, "learning_rate")
    return learning_rate


def check_reduction(reduction: Any) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def is_concrete(*trees: Any) -> bool:
    """Whether no leaf of the trees is a JAX tracer (then values can be inspected)."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(trees))


def check_finite_tree(tree: Any, name: str) -> None:
    """Raise ``ValueError`` on NaN/inf entries (skipped under ``jit``, where values are unknown)."""
    if not is_concrete(tree):
        return
    for leaf in jax.tree_util.tree_leaves(tree):
        arr = np.asarray(leaf)  # NumPy: works for concrete arrays even inside a jit trace
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} has non-finite entries (NaN or inf)")


def same_shapes(tree: Any, like: Any) -> bool:
    """Whether ``tree`` has the structure of ``like`` and every leaf the same shape."""
    if jax.tree_util.tree_structure(tree) != jax.tree_util.tree_structure(like):
        return False
    return all(
        np.shape(a) == np.shape(b) for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(like))
    )
