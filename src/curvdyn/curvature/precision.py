"""Precision policy of the exact paths: eigenvalue cutoffs and tolerances by dtype, and casting.

Every cutoff and tolerance default lives here; the methods read them through
:func:`default_rcond`, :func:`effective_rcond` and :func:`default_balance_tol`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from curvdyn._validate import check_real
from curvdyn.network import Weights
from curvdyn.task import Task

#: Default relative eigenvalue cutoff: eigenvalues ``λ ≤ rcond · λ_max`` count as zero. It sits
#: a safe factor above the round-off floor of a float64 symmetric eigensolver
#: (≈ dim · 2.2e-16 · λ_max) for operators up to dimension ~1e4, and below any eigenvalue
#: whose eigenvector float64 can resolve.
DEFAULT_RCOND = 1e-13

#: The float32 counterpart of :data:`DEFAULT_RCOND`. Float32 eigensolvers resolve eigenvalues
#: only down to about ``dim · 1.2e-7 · λ_max``; below ``1e-5 · λ_max`` the eigenpairs of a
#: float32 eigendecomposition are round-off, and inverting them would amplify noise.
DEFAULT_RCOND_F32 = 1e-5

#: Defaults of :func:`default_rcond` by dtype (others: ``500 · eps`` of the dtype).
_RCOND_BY_DTYPE = {np.dtype(np.float64): DEFAULT_RCOND, np.dtype(np.float32): DEFAULT_RCOND_F32}

#: Default ``balance_tol`` of the ``balanced-checked`` path: the largest first-order relative
#: error estimate (:func:`shared_basis_error`) at which the shared-basis eigenvalues are used.
DEFAULT_BALANCE_TOL = 1e-10
DEFAULT_BALANCE_TOL_F32 = 1e-4


def default_rcond(dtype) -> float:
    """The default relative cutoff for computations in ``dtype``.

    ``1e-13`` (:data:`DEFAULT_RCOND`) for float64, ``1e-5`` (:data:`DEFAULT_RCOND_F32`) for
    float32, ``500 · eps`` for other floating types.
    """
    dtype = np.dtype(dtype)
    if dtype in _RCOND_BY_DTYPE:
        return _RCOND_BY_DTYPE[dtype]
    return float(500 * jnp.finfo(dtype).eps)


def effective_rcond(rcond: float | None, dtype) -> float:
    """The cutoff actually applied in ``dtype``.

    ``rcond`` values are float64 values by convention: ``None`` or the float64 default
    :data:`DEFAULT_RCOND` (what every rule carries unless the user sets ``rcond``) mean "the
    default for this dtype" (:func:`default_rcond`), so a float32 computation cuts at
    ``1e-5 · λ_max``. Any other value, and a traced one, is applied as given, in every dtype.
    """
    if isinstance(rcond, jax.core.Tracer):
        return rcond
    if rcond is None or rcond == DEFAULT_RCOND:
        return default_rcond(dtype)
    return float(rcond)


def default_balance_tol(dtype) -> float:
    """Default tolerance of ``balanced-checked``: 1e-10 for float64, 1e-4 for float32."""
    dtype = np.dtype(dtype)
    if dtype == np.dtype(np.float64):
        return DEFAULT_BALANCE_TOL
    if dtype == np.dtype(np.float32):
        return DEFAULT_BALANCE_TOL_F32
    return float(1000 * jnp.finfo(dtype).eps)


def astype(ws, task: Task, dtype) -> tuple[Weights, Task]:
    """Cast weights and task to ``dtype`` (e.g. ``jnp.float32``): how a user asks for float32.

    ``ws32, task32 = curvdyn.astype(ws, task, jnp.float32)``; every direction and simulation
    of ``(ws32, task32)`` then runs in float32 (with the float32 cutoff :data:`DEFAULT_RCOND_F32`
    unless a rule sets ``rcond`` explicitly). Mixing float32 weights with a float64 task
    promotes to float64 (:func:`promote`).

    Raises:
      ValueError: ``dtype`` is not a real floating type.
      TypeError: a layer is complex or not numeric.
    """
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a real floating type, got {dtype}")
    ws = tuple(jnp.asarray(check_real(w, f"layer w_{i}"), dtype=dtype) for i, w in enumerate(ws, start=1))
    task = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=dtype), task)
    return ws, task


def common_dtype(ws: Weights, task: Task) -> np.dtype:
    """The dtype a computation on ``(ws, task)`` runs in: ``jnp.result_type`` of the layers and the
    task's arrays (float32 weights with a float64 task: float64)."""
    return np.dtype(jnp.result_type(*ws, task.target, task.input_cov, task.sqrt_cov))


def promote(ws: Weights, task: Task) -> tuple[Weights, Task]:
    """Weights and task in their :func:`common_dtype` (unchanged when they already agree).

    The one place mixed precision is resolved: :meth:`curvdyn.Rule.direction` and
    :func:`curvdyn.simulate` call it on entry, so float32 weights with a float64 task run in
    float64 with the float64 cutoff (and return float64), as ``jnp`` arithmetic would promote them.
    """
    dtype = common_dtype(ws, task)
    leaves = (*ws, task.target, task.input_cov, task.sqrt_cov)
    if all(np.dtype(x.dtype) == dtype for x in leaves):
        return ws, task
    return astype(ws, task, dtype)
