"""Deep linear networks: weights, map, loss, gradient, layer products, conserved quantities.

Conventions (DESIGN.md): weights ``ws = (w_1, ..., w_d)`` with ``w_i`` of shape
``(n_i, n_{i-1})``; the map is ``W = w_d ... w_1`` of shape ``(n_d, n_0)``. A task supplies
the target ``W*`` and the input covariance ``Σ``; the loss is ``L = ½ tr(Δ Σ Δᵀ)`` with
``Δ = W − W*`` (paper eq. 1).

Every function here takes a tuple of arrays and returns arrays; none keeps state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np

from curvdyn._precision import input_dtype, require_float64
from curvdyn._validate import check_real, check_widths

if TYPE_CHECKING:  # pragma: no cover
    from curvdyn.task import Task

Weights = tuple[jax.Array, ...]


def as_weights(weights: Sequence, *, check_finite: bool = True, batched: bool = False) -> Weights:
    """Validate a sequence of layer matrices and return it as a tuple of JAX arrays.

    Args:
      weights: ``(w_1, ..., w_d)``, ``w_i`` of shape ``(n_i, n_{i-1})`` (with a leading batch
        axis ``(B, n_i, n_{i-1})`` when ``batched``).
      check_finite: raise on NaN/inf entries (skipped automatically under ``jit``).
      batched: whether every layer carries a leading batch axis of one common size.

    Raises:
      TypeError: ``weights`` is not a non-empty sequence of arrays, or a layer is complex or
        not numeric.
      ValueError: a layer is not a matrix, consecutive layers do not chain
        (``w_{i+1}.shape[1] != w_i.shape[0]``), batch sizes differ, or an entry is not finite.
      curvdyn.Float64DisabledError: float64 (or integer) layers while JAX's 64-bit
        mode is off (float32 layers stay float32).
    """
    if isinstance(weights, (jax.Array, np.ndarray)) or not isinstance(weights, (tuple, list)):
        raise TypeError(
            f"weights must be a tuple or list of layer matrices (w_1, ..., w_d), got {type(weights).__name__}"
        )
    if len(weights) == 0:
        raise ValueError("weights must contain at least one layer (depth d >= 1)")
    ndim = 3 if batched else 2
    out = []
    for i, w in enumerate(weights, start=1):
        w = check_real(w, f"layer w_{i}")
        if input_dtype(w) == np.float64:  # float64 (or integer) input: JAX must not downcast it
            require_float64("weights (float64 input)")
        w = jnp.asarray(w)
        if w.ndim != ndim:
            what = "(B, n_i, n_{i-1})" if batched else "(n_i, n_{i-1})"
            raise ValueError(f"layer w_{i} must have shape {what}, got shape {tuple(w.shape)}")
        if not jnp.issubdtype(w.dtype, jnp.floating):
            w = w.astype(jnp.float64)
        out.append(w)
    for i in range(1, len(out)):
        if out[i].shape[-1] != out[i - 1].shape[-2]:
            raise ValueError(
                f"layers do not chain: w_{i + 1} has shape {tuple(out[i].shape[-2:])} but "
                f"w_{i} has shape {tuple(out[i - 1].shape[-2:])}; need w_{i + 1}.shape[1] == "
                f"w_{i}.shape[0]"
            )
    if batched and len({w.shape[0] for w in out}) != 1:
        raise ValueError(f"batch sizes differ across layers: {[w.shape[0] for w in out]}")
    if check_finite and not any(isinstance(w, jax.core.Tracer) for w in out):
        for i, w in enumerate(out, start=1):
            if not bool(jnp.all(jnp.isfinite(w))):
                raise ValueError(f"layer w_{i} has non-finite entries (NaN or inf)")
    return tuple(out)


def widths_of(ws: Weights) -> tuple[int, ...]:
    """Layer widths ``(n_0, n_1, ..., n_d)`` of a network (batch axes ignored)."""
    return (int(ws[0].shape[-1]),) + tuple(int(w.shape[-2]) for w in ws)


def n_params(ws: Weights) -> int:
    """Number of parameters ``P = Σ_i n_i n_{i-1}``."""
    return sum(int(w.shape[-1] * w.shape[-2]) for w in ws)


def flatten_weights(ws: Weights) -> jax.Array:
    """Concatenate the row-major (C-order) flattenings of ``w_1, ..., w_d``: shape ``(P,)``.

    This is the parameter ordering of the dense ``H₊`` (see :mod:`curvdyn.curvature`).
    """
    return jnp.concatenate([w.reshape(-1) for w in ws])


def unflatten_weights(theta: jax.Array, widths: Sequence[int]) -> Weights:
    """Inverse of :func:`flatten_weights` for widths ``(n_0, ..., n_d)``."""
    widths = check_widths(widths)
    out, start = [], 0
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        out.append(theta[start : start + n_in * n_out].reshape(n_out, n_in))
        start += n_in * n_out
    if start != theta.shape[0]:
        raise ValueError(f"theta has {theta.shape[0]} entries, widths {tuple(widths)} need {start}")
    return tuple(out)


def network_map(ws: Weights) -> jax.Array:
    """The input–output map ``W = w_d ... w_1``, shape ``(n_d, n_0)``."""
    out = ws[0]
    for w in ws[1:]:
        out = w @ out
    return out


def displacement(ws: Weights, task: Task) -> jax.Array:
    """``Δ = W − W*``, shape ``(n_d, n_0)`` (paper eq. 1)."""
    return network_map(ws) - task.target


def loss(ws: Weights, task: Task) -> jax.Array:
    """``L = ½ tr(Δ Σ Δᵀ)`` (paper eq. 1), a scalar.

    For a task built from data this differs from the data loss by ``task.loss_offset``.
    """
    delta = displacement(ws, task)
    if task.identity_cov:
        return 0.5 * jnp.sum(delta * delta)
    return 0.5 * jnp.sum((delta @ task.input_cov) * delta)


def outer_products(ws: Weights) -> tuple[Weights, Weights]:
    """The products around each layer, ``A_i = w_d ... w_{i+1}`` and ``B_i = w_{i-1} ... w_1``.

    Returns:
      ``(A, B)``: tuples of length d; ``A[i-1]`` has shape ``(n_d, n_i)`` (identity for
      ``i = d``), ``B[i-1]`` has shape ``(n_{i-1}, n_0)`` (identity for ``i = 1``). Each is
      built by one sweep, so the cost is that of a few map products.
    """
    d = len(ws)
    dtype = ws[0].dtype
    n_out, n_in = ws[-1].shape[0], ws[0].shape[1]
    bs = [jnp.eye(n_in, dtype=dtype)]
    for w in ws[:-1]:
        bs.append(w @ bs[-1])
    as_ = [jnp.eye(n_out, dtype=dtype)]
    for w in ws[:0:-1]:
        as_.append(as_[-1] @ w)
    as_ = as_[::-1]
    assert len(as_) == d and len(bs) == d
    return tuple(as_), tuple(bs)


def gradient(ws: Weights, task: Task) -> Weights:
    """The loss gradient ``g_i = A_iᵀ Δ Σ B_iᵀ`` for every layer, shaped like ``ws``."""
    a, b = outer_products(ws)
    delta = network_map(ws) - task.target
    delta_cov = delta if task.identity_cov else delta @ task.input_cov
    return tuple(a_i.T @ delta_cov @ b_i.T for a_i, b_i in zip(a, b))


def conserved(ws: Weights) -> tuple[jax.Array, ...]:
    """The quantities ``C_i = w_i w_iᵀ − w_{i+1}ᵀ w_{i+1}``, i = 1..d−1 (paper eq. 4).

    Each ``C_i`` has shape ``(n_i, n_i)`` (plus any leading batch axes). They are constant in
    time under every rule whose velocity is orthogonal to the null space of ``H₊`` (Theorem 1):
    SGD, NGD, fractional NGD and damped NGD; the block-diagonal rules break them.
    """
    return tuple(
        ws[i] @ jnp.swapaxes(ws[i], -1, -2) - jnp.swapaxes(ws[i + 1], -1, -2) @ ws[i + 1] for i in range(len(ws) - 1)
    )


def weights_norm(ws: Weights) -> jax.Array:
    """Euclidean norm of all parameters together, ``sqrt(Σ_i ‖w_i‖_F²)``."""
    return jnp.sqrt(sum(jnp.sum(w * w) for w in ws))
