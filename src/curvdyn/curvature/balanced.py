"""The shared eigenbasis of the Grams (balanced or aligned weights, d = 1): ``K`` diagonal in ``U ⊗ V``,
O(d (n_d³ + n_0³)); and ``balanced-checked``, which verifies the basis at run time and falls back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from curvdyn.curvature._mapspace_ops import _delta_s, _grams, mapspace_grams
from curvdyn.curvature.dense import dense_direction, dense_direction_info
from curvdyn.curvature.diagnostics import DirectionInfo
from curvdyn.curvature.kronsum import _grid_core, _grid_info, kronsum_direction, kronsum_direction_info
from curvdyn.curvature.mapspace import _mapspace_from_grams, _mapspace_info_from_grams
from curvdyn.curvature.precision import default_balance_tol
from curvdyn.curvature.spectral import SpectralFunction, _eigh_sym, order_after
from curvdyn.network import Weights, gradient, outer_products
from curvdyn.task import Task


class SharedBasis(NamedTuple):
    """The shared-eigenbasis description of ``K`` and how well it holds.

    Attributes:
      u: ``(n_d, n_d)`` orthonormal eigenvectors of ``Σ_i P_i``.
      v: ``(n_0, n_0)`` orthonormal eigenvectors of ``Σ_i Q_i``.
      kappa: ``(n_d, n_0)``: ``κ_ab = Σ_i (UᵀP_iU)_aa (VᵀQ_iV)_bb``, the diagonal of ``K`` in
        the basis ``U ⊗ V`` (its eigenvalues when the basis is shared).
      off_norm: an upper bound on the Frobenius norm of the off-diagonal part of ``K`` in that
        basis (0 exactly when the basis is shared).
    """

    u: jax.Array
    v: jax.Array
    kappa: jax.Array
    off_norm: jax.Array


def _offdiag(m: jax.Array) -> jax.Array:
    return m * (1.0 - jnp.eye(m.shape[-1], dtype=m.dtype))


def _shared_basis(p: jax.Array, q: jax.Array) -> SharedBasis:
    # A positive combination of commuting Grams resolves their joint eigenspaces whenever
    # they are functions of one matrix (balanced weights: P_i = (W Wᵀ)^{(d−i)/d}): the sum is
    # then a strictly increasing function of it. Anything else shows up in off_norm.
    _, u = _eigh_sym(jnp.sum(p, axis=0))
    _, v = _eigh_sym(order_after(jnp.sum(q, axis=0), u))
    pt = jnp.einsum("ax,iab,by->ixy", u, p, u)
    qt = jnp.einsum("ax,iab,by->ixy", v, q, v)
    pd = jnp.diagonal(pt, axis1=1, axis2=2)
    qd = jnp.diagonal(qt, axis1=1, axis2=2)
    kappa = jnp.einsum("ia,ib->ab", pd, qd)
    # K − diag in the basis is Σ_i (D_i ⊗ O'_i + O_i ⊗ D'_i + O_i ⊗ O'_i); bound its norm term
    # by term (no cancellation, so the bound is reliable at round-off level).
    npd = jnp.linalg.norm(pd, axis=1)
    nqd = jnp.linalg.norm(qd, axis=1)
    npo = jnp.sqrt(jnp.sum(_offdiag(pt) ** 2, axis=(1, 2)))
    nqo = jnp.sqrt(jnp.sum(_offdiag(qt) ** 2, axis=(1, 2)))
    off = jnp.sum(npd * nqo + npo * nqd + npo * nqo)
    return SharedBasis(u, v, kappa, off)


def _basis_error(basis: SharedBasis, f: SpectralFunction) -> jax.Array:
    """First-order relative error of ``f(K)`` computed from the shared basis.

    Dropping the off-diagonal part ``E`` of ``K`` changes ``f(K)`` by about
    ``max|f'| ‖E‖`` on the spectrum ``f`` keeps (Daleckii–Krein), relative to ``|f|`` there:
    ``power · ‖E‖ / λ_floor ≤ ‖E‖ / λ_floor`` with ``λ_floor`` the smallest eigenvalue kept
    (above the cutoff) plus the shift. We report ``‖E‖_F / λ_floor``.
    """
    kappa = jnp.maximum(basis.kappa, 0.0)
    top = jnp.max(kappa)
    if f.shift > 0:
        floor = jnp.min(kappa) + f.shift
    else:
        keep = kappa > f.cutoff(kappa.dtype) * top
        floor = jnp.min(jnp.where(keep, kappa, jnp.inf))
    off = basis.off_norm
    finite = jnp.isfinite(floor) & (floor > 0)
    est = off / jnp.where(finite, floor, 1.0)
    return jnp.where(finite, est, jnp.where(off == 0, 0.0, jnp.inf))


def _balanced_from_basis(a, b, basis: SharedBasis, ds, task, f) -> Weights:
    return _grid_core(a, b, ds, task, f, basis.u, basis.v, basis.kappa)[0].direction


def _balanced_info_from_basis(a, b, basis: SharedBasis, ds, task, f) -> tuple[Weights, DirectionInfo]:
    out, bs = _grid_core(a, b, ds, task, f, basis.u, basis.v, basis.kappa)
    return out.direction, _grid_info(a, bs, ds, f, basis.u, basis.v, basis.kappa, out)


def shared_basis(ws: Weights, task: Task) -> SharedBasis:
    """The shared-eigenbasis description of ``K`` at these weights (see :class:`SharedBasis`)."""
    return _shared_basis(*mapspace_grams(ws, task))


def shared_basis_error(ws: Weights, task: Task, f: SpectralFunction | None = None) -> jax.Array:
    """First-order relative error of the ``balanced`` path at these weights (a scalar).

    ``‖E‖_F / λ_floor``: ``E`` is the part of ``K`` that is off-diagonal in the basis
    ``U ⊗ V`` (bounded term by term), ``λ_floor`` the smallest eigenvalue ``f`` keeps plus
    its shift (default ``f``: the pseudo-inverse). Round-off level (≲ 1e-14 · cond) for
    balanced weights with Σ = I, aligned weights and d = 1; of order one for generic weights.
    """
    f = SpectralFunction(power=1.0) if f is None else f
    return _basis_error(shared_basis(ws, task), f)


def balanced_direction(ws: Weights, task: Task, f: SpectralFunction) -> Weights:
    """``f(H₊) g`` assuming the Grams share an eigenbasis (balanced/aligned weights).

    ``Λ = U [(Uᵀ (Δ S) V) ⊙ f(κ)] Vᵀ``, ``direction_i = A_iᵀ Λ S B_iᵀ``: O(d (n_d³ + n_0³)).
    Exact when :func:`shared_basis_error` is at round-off level; otherwise it silently
    drops the off-diagonal part of ``K`` (use ``balanced-checked`` or ``auto`` to be safe).
    Power-one ``f`` is refined with the structured residual (which sees the true ``K``).
    """
    a, b = outer_products(ws)
    p, q = _grams(a, b, task)
    return _balanced_from_basis(a, b, _shared_basis(p, q), _delta_s(ws, task, b), task, f)


def balanced_direction_info(ws: Weights, task: Task, f: SpectralFunction) -> tuple[Weights, DirectionInfo]:
    """:func:`balanced_direction` and its :class:`~curvdyn.curvature.diagnostics.DirectionInfo`."""
    a, b = outer_products(ws)
    p, q = _grams(a, b, task)
    return _balanced_info_from_basis(a, b, _shared_basis(p, q), _delta_s(ws, task, b), task, f)


def checked_direction(
    ws: Weights,
    task: Task,
    f: SpectralFunction,
    fallback: str = "mapspace",
    balance_tol: float | None = None,
) -> Weights:
    """The ``balanced`` direction when its error estimate is ≤ ``balance_tol``, else ``fallback``.

    The test and the branch run inside the compiled function (``lax.cond``): the estimate
    costs O(d (n_d³ + n_0³)), negligible next to either path. ``fallback`` is ``"mapspace"``,
    ``"dense"`` or ``"kronsum"``; ``balance_tol`` defaults to :func:`default_balance_tol` of the dtype.
    """
    return _checked(ws, task, f, fallback, balance_tol, with_info=False)


def checked_direction_info(
    ws: Weights,
    task: Task,
    f: SpectralFunction,
    fallback: str = "mapspace",
    balance_tol: float | None = None,
) -> tuple[Weights, DirectionInfo]:
    """:func:`checked_direction` and the :class:`~curvdyn.curvature.diagnostics.DirectionInfo` of
    the branch that ran."""
    return _checked(ws, task, f, fallback, balance_tol, with_info=True)


def _checked(ws, task, f, fallback, balance_tol, *, with_info: bool):
    a, b = outer_products(ws)
    p, q = _grams(a, b, task)
    ds = _delta_s(ws, task, b)
    basis = _shared_basis(p, q)
    tol = default_balance_tol(ds.dtype) if balance_tol is None else float(balance_tol)
    ok = _basis_error(basis, f) <= tol

    def use_balanced(_):
        if with_info:
            return _balanced_info_from_basis(a, b, basis, ds, task, f)
        return _balanced_from_basis(a, b, basis, ds, task, f)

    def use_fallback(_):
        run: Callable[..., Any]
        # (ordered after the basis: under vmap both branches run, see order_after)
        if fallback == "mapspace":
            run = _mapspace_info_from_grams if with_info else _mapspace_from_grams
            return run(a, b, p, q, ds, task, f, after=basis.v)
        if fallback == "dense":
            w_after = tuple(order_after(w, basis.v) for w in ws)
            run = dense_direction_info if with_info else dense_direction
            return run(w_after, task, f, gradient(w_after, task))
        if fallback == "kronsum":
            run = kronsum_direction_info if with_info else kronsum_direction
            return run(ws, task, f, after=basis.v)
        raise ValueError(f"unknown fallback {fallback!r}")

    return jax.lax.cond(ok, use_balanced, use_fallback, None)
