"""Validation of the optimizers' hyperparameters and inputs (clear ``ValueError``s early)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from curvdyn._validate import check_count, check_nonneg, check_positive, check_q, check_unit_interval
from curvdyn.curvature.precision import DEFAULT_RCOND

REDUCTIONS = ("mean", "sum")


def is_traced(value: Any) -> bool:
    """Whether ``value`` is a JAX tracer (a hyperparameter inside ``jit``, e.g. from
    ``optax.inject_hyperparams``): its value cannot be checked, only its shape."""
    return isinstance(value, jax.core.Tracer)


def _scalar(value: Any, name: str, check) -> Any:
    """A numeric hyperparameter: a Python number or a 0-d array. Concrete values are checked by
    ``check`` and returned as Python numbers; traced ones are returned as they are."""
    if np.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {np.shape(value)}")
    if is_traced(value):
        return value
    return check(value, name)


def nonneg(value: Any, name: str) -> Any:
    """A finite number ≥ 0, possibly an array or traced (:func:`_scalar`)."""
    return _scalar(value, name, check_nonneg)


def positive(value: Any, name: str) -> Any:
    """A finite number > 0, possibly an array or traced."""
    return _scalar(value, name, check_positive)


def q_value(value: Any) -> Any:
    """The root ``q ≥ 1`` (``inf`` allowed), possibly an array or traced."""
    return _scalar(value, "q", lambda v, _name: check_q(v))


def unit_interval(value: Any, name: str) -> Any:
    """A number in ``[0, 1)``, possibly an array or traced."""
    return _scalar(value, name, check_unit_interval)


def cutoff(rcond: Any) -> Any:
    """``rcond``: ``None`` (the default cutoff of the computation's dtype, also what curvdyn's
    ``DEFAULT_RCOND`` means) or a number in ``[0, 1)``, possibly traced (then applied as given)."""
    if rcond is None:
        return None
    rcond = unit_interval(rcond, "rcond")
    return None if not is_traced(rcond) and rcond == DEFAULT_RCOND else rcond


def check_period(value: Any, name: str) -> Any:
    """A positive integer (a Python int or a 0-d integer array; traced ones are returned as they are)."""
    if is_traced(value) and np.ndim(value) == 0 and np.issubdtype(value.dtype, np.integer):
        return value
    if isinstance(value, (jax.Array, np.ndarray)) and value.ndim == 0 and np.issubdtype(value.dtype, np.integer):
        value = int(value)
    if not isinstance(value, bool | int | np.integer):  # a period counts steps: even 2.0 is not one
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return check_count(value, name)


def check_learning_rate(learning_rate: Any) -> Any:
    """A positive finite number (or 0-d array, possibly traced), or an optax schedule (a
    callable), returned unchanged."""
    if callable(learning_rate):
        return learning_rate
    _scalar(learning_rate, "learning_rate", check_positive)
    return learning_rate


def check_reduction(reduction: Any) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def is_concrete(*trees: Any) -> bool:
    """Whether no leaf of the trees is a JAX tracer (then values can be inspected)."""
    return not any(is_traced(leaf) for leaf in jax.tree_util.tree_leaves(trees))


def all_finite(tree: Any) -> jax.Array:
    """A boolean scalar: every floating entry of every leaf of ``tree`` is finite (traceable)."""
    import jax.numpy as jnp

    ok = jnp.asarray(True)
    for leaf in jax.tree_util.tree_leaves(tree):
        try:
            dtype = jnp.result_type(leaf)
        except TypeError:  # not an array (e.g. a function in an equinox module): nothing to check
            continue
        if jnp.issubdtype(dtype, jnp.inexact):
            ok = ok & jnp.all(jnp.isfinite(leaf))
    return ok


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
    structure: Any = jax.tree_util.tree_structure(tree)  # a PyTreeDef (untyped in jaxlib's stubs)
    if structure != jax.tree_util.tree_structure(like):
        return False
    return all(
        np.shape(a) == np.shape(b) for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(like))
    )
