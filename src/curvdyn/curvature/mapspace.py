"""The map-space identity (DESIGN.md): ``f(H₊) g = Ĵᵀ f(K) vec(Δ S)`` with one dense eigendecomposition
of ``K`` (size ``n_d n_0`` whatever the hidden widths): O((n_d n_0)³) time, O((n_d n_0)²) memory.
Power-one rules are refined with the structured residual (:mod:`curvdyn.curvature.refine`)."""

from __future__ import annotations

import jax

from curvdyn.curvature._mapspace_ops import (
    _delta_s,
    _forward,
    _grams,
    _kernel_from_grams,
    _pullback_lam,
    _right_products,
)
from curvdyn.curvature.diagnostics import DirectionInfo, norm_of, rho_map, spectral_info
from curvdyn.curvature.refine import Refined, refine_map
from curvdyn.curvature.spectral import SpectralFunction, _eigh_sym, order_after
from curvdyn.network import Weights, outer_products
from curvdyn.task import Task


def mapspace_apply(kernel: jax.Array, f: SpectralFunction, rhs: jax.Array, *, after=None) -> jax.Array:
    """``f(K)`` applied to an ``n_d × n_0`` matrix (``K`` exactly symmetric, as built here)."""
    evals, evecs = _eigh_sym(order_after(kernel, after))
    return _eigen_solver(evals, evecs, f)(rhs)


def _eigen_solver(evals, evecs, f):
    fv = f(evals, evals[-1])
    return lambda x: (evecs @ (fv * (evecs.T @ x.reshape(-1)))).reshape(x.shape)


def _mapspace_core(a, b, p, q, ds, task, f, after=None) -> tuple[Refined, tuple]:
    """The (refined) solve and the eigendecomposition it used."""
    evals, evecs = _eigh_sym(_kernel_from_grams(order_after(p, after), q))
    solve = _eigen_solver(evals, evecs, f)
    bs = _right_products(b, task)
    out = refine_map(f, ds, lambda lam: _pullback_lam(a, b, lam, task), lambda d: _forward(a, bs, d), solve)
    return out, (evals, evecs, bs)


def _mapspace_from_grams(a, b, p, q, ds, task, f, after=None) -> Weights:
    return _mapspace_core(a, b, p, q, ds, task, f, after)[0].direction


def _mapspace_info_from_grams(a, b, p, q, ds, task, f, after=None) -> tuple[Weights, DirectionInfo]:
    out, (evals, evecs, bs) = _mapspace_core(a, b, p, q, ds, task, f, after)
    coef = evecs.T @ ds.reshape(-1)
    refined = out.residual is not None
    info = spectral_info(
        evals,
        rho_map(a, bs, evecs, ds.shape),
        coef,
        f,
        rhs_norm=norm_of(ds),
        d_norm=norm_of(out.direction),
        res_coef=evecs.T @ out.residual.reshape(-1) if refined else None,
        res_scale=coef if refined else None,
        correction=out.correction,
    )
    return out.direction, info


def mapspace_direction(ws: Weights, task: Task, f: SpectralFunction) -> Weights:
    """``f(H₊) g = Ĵᵀ f(K) vec(Δ S)``: the exact direction from an eigenproblem of size n_d n_0
    (refined with the structured residual for power-one ``f``)."""
    a, b = outer_products(ws)
    p, q = _grams(a, b, task)
    return _mapspace_from_grams(a, b, p, q, _delta_s(ws, task, b), task, f)


def mapspace_direction_info(ws: Weights, task: Task, f: SpectralFunction) -> tuple[Weights, DirectionInfo]:
    """:func:`mapspace_direction` and its :class:`~curvdyn.curvature.diagnostics.DirectionInfo`."""
    a, b = outer_products(ws)
    p, q = _grams(a, b, task)
    return _mapspace_info_from_grams(a, b, p, q, _delta_s(ws, task, b), task, f)
