"""Initial weights: small random, Xavier·α, balanced, and aligned with a target (footnote 2), and
the one Haar-random orthogonal sampler (:func:`haar_orthogonal`).

Every initializer takes the widths ``(n_0, n_1, ..., n_d)`` and returns a tuple
``(w_1, ..., w_d)`` with ``w_i`` of shape ``(n_i, n_{i-1})``, deterministic in the ``jax.random``
key. ``dtype=None`` is float64 (which needs JAX's 64-bit mode, see :mod:`curvdyn`);
``dtype=jnp.float32`` draws and returns float32 weights (other numbers than float64 draws).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from curvdyn._precision import resolve_dtype
from curvdyn._validate import check_positive, check_real, check_widths
from curvdyn.network import Weights


def init_random(key: jax.Array, widths: Sequence[int], scale: float = 0.05, *, dtype=None) -> Weights:
    """Gaussian layers each rescaled so its largest singular value equals ``scale``.

    The paper's section 4 initializes "weight matrices to have maximum singular value of
    0.05"; that is ``init_random(key, (16,)*5, 0.05)``.
    """
    widths = check_widths(widths)
    scale = check_positive(scale, "scale")
    dtype = resolve_dtype(dtype=dtype, what="init_random")
    keys = jax.random.split(key, len(widths) - 1)
    ws = []
    for k, n_in, n_out in zip(keys, widths[:-1], widths[1:]):
        w = jax.random.normal(k, (n_out, n_in), dtype=dtype)
        ws.append(w * (scale / jnp.linalg.norm(w, ord=2)))
    return tuple(ws)


def init_xavier(key: jax.Array, widths: Sequence[int], alpha: float = 1.0, *, dtype=None) -> Weights:
    """Xavier (Glorot) normal layers scaled by ``alpha``: ``w_i ~ α·N(0, 2/(n_i + n_{i-1}))``.

    This is the random-weights setting of the scaling-law figure (S.I.3, Fig. S.I.1).
    """
    widths = check_widths(widths)
    alpha = check_positive(alpha, "alpha")
    dtype = resolve_dtype(dtype=dtype, what="init_xavier")
    keys = jax.random.split(key, len(widths) - 1)
    return tuple(
        alpha * jnp.sqrt(2.0 / (n_in + n_out)) * jax.random.normal(k, (n_out, n_in), dtype=dtype)
        for k, n_in, n_out in zip(keys, widths[:-1], widths[1:])
    )


def haar_orthogonal(key: jax.Array, n: int, k: int | None = None, *, dtype=None) -> np.ndarray:
    """The first ``k`` columns (all ``n`` by default) of a Haar-random orthogonal ``n × n`` matrix.

    The one sampler of curvdyn: :func:`jax.random.orthogonal` (QR of an ``n × n`` Gaussian matrix
    with the sign correction ``Q diag(sign(diag R))`` that makes ``Q`` Haar-distributed;
    Mezzadri 2007), drawn in ``dtype`` (``None``: float64, which needs JAX's 64-bit mode) and
    returned as a float64 NumPy array. The first ``k`` columns of a Haar matrix are Haar-random
    orthonormal columns (``n × k``).
    """
    dtype = resolve_dtype(dtype=dtype, what="haar_orthogonal")
    q = np.asarray(jax.random.orthogonal(key, int(n), dtype=dtype), dtype=np.float64)
    return q if k is None else q[:, : int(k)]


def init_balanced(
    key: jax.Array, widths: Sequence[int], scale: float | Sequence[float] = 0.05, *, dtype=None
) -> Weights:
    """Balanced weights: ``w_i w_iᵀ = w_{i+1}ᵀ w_{i+1}`` for every i.

    Built as ``w_i = U_i D U_{i-1}ᵀ`` with Haar-random orthonormal ``U_i`` (``n_i × r``,
    ``r = min(widths)``) and one diagonal ``D`` shared by all layers, so every layer has the
    same singular values and the map has singular values ``D^d``.

    Args:
      scale: a number (all ``r`` per-layer singular values equal to it) or a sequence of
        ``r`` positive per-mode values.
    """
    widths = check_widths(widths)
    r = min(widths)
    vals = np.asarray(check_real(scale, "scale"), dtype=np.float64)
    if vals.ndim > 1 or vals.size not in (1, r) or not np.all(np.isfinite(vals)) or np.any(vals <= 0):
        raise ValueError(f"scale must be a positive number or {r} positive numbers, got {scale}")
    vals = np.broadcast_to(vals, (r,)).copy()
    dtype = resolve_dtype(dtype=dtype, what="init_balanced")
    keys = jax.random.split(key, len(widths))
    us = [haar_orthogonal(k, n, r, dtype=dtype) for k, n in zip(keys, widths)]
    return tuple(jnp.asarray((us[i + 1] * vals) @ us[i].T, dtype=dtype) for i in range(len(widths) - 1))


def init_aligned(
    target,
    widths: Sequence[int],
    mode_values,
    *,
    key: jax.Array | None = None,
    dtype=None,
) -> Weights:
    """Weights aligned with the singular vectors of ``target`` (paper footnote 2).

    With ``W* = L* D* R*ᵀ``: ``R_1 = R*``, ``L_d = L*`` and ``R_{i+1} = L_i``, i.e.
    ``w_i = U_i diag(σ_i) U_{i-1}ᵀ`` with ``U_0 = R*``, ``U_d = L*`` and orthonormal hidden
    bases ``U_i`` (``n_i × r``; Haar-random when ``key`` is given, else the first ``r``
    coordinate axes). Mode ``k`` of layer ``i`` then has singular value ``mode_values[i-1, k]``
    and the map's mode k has ``σ̄_k = Π_i mode_values[i-1, k]`` along ``W*``'s k-th pair.

    Args:
      target: ``W*``, shape ``(n_d, n_0)``.
      widths: ``(n_0, ..., n_d)`` with ``n_0, n_d`` matching ``target``.
      mode_values: shape ``(d, r)`` per-layer mode values, or ``(r,)`` for all layers alike;
        ``r ≤ min(widths)`` and ``r ≤ min(target.shape)``. Modes of ``W*`` beyond ``r`` get
        zero (inactive modes stay frozen, paper footnote 3). Values may be negative or zero.
      dtype: of the weights; ``None`` follows ``target`` (float32 for a float32 target, else
        float64). The construction runs in float64 (NumPy) either way.
    """
    widths = check_widths(widths)
    target = check_real(target, "target")
    dtype = resolve_dtype(target, dtype=dtype, what="init_aligned")
    target = np.asarray(target, dtype=np.float64)
    if target.ndim != 2 or not np.all(np.isfinite(target)):
        raise ValueError(f"target must be a finite matrix, got shape {target.shape}")
    if target.shape != (widths[-1], widths[0]):
        raise ValueError(f"target has shape {target.shape} but widths give a map of shape ({widths[-1]}, {widths[0]})")
    d = len(widths) - 1
    vals = np.asarray(check_real(mode_values, "mode_values"), dtype=np.float64)
    if vals.ndim == 1:
        vals = np.broadcast_to(vals, (d, vals.shape[0]))
    if vals.ndim != 2 or vals.shape[0] != d:
        raise ValueError(f"mode_values must have shape (d, r) = ({d}, r) or (r,), got {vals.shape}")
    if not np.all(np.isfinite(vals)):
        raise ValueError("mode_values has non-finite entries")
    r = vals.shape[1]
    if r > min(widths) or r > min(target.shape):
        raise ValueError(f"{r} modes do not fit: need r <= min(widths) = {min(widths)} and <= min(target.shape)")
    left, _, right_t = np.linalg.svd(target)
    us = [right_t.T[:, :r]]
    hidden_keys = jax.random.split(key, d) if key is not None else None
    for i in range(1, d):
        if hidden_keys is None:
            us.append(np.eye(widths[i])[:, :r])
        else:
            us.append(haar_orthogonal(hidden_keys[i], widths[i], r, dtype=dtype))
    us.append(left[:, :r])
    return tuple(jnp.asarray((us[i + 1] * vals[i]) @ us[i].T, dtype=dtype) for i in range(d))
