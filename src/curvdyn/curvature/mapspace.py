"""The map-space identity (DESIGN.md): ``f(H₊) g = Ĵᵀ f(K) vec(Δ S)`` with one dense eigendecomposition
of ``K`` (size ``n_d n_0`` whatever the hidden widths): O((n_d n_0)³) time, O((n_d n_0)²) memory."""

from __future__ import annotations

import jax

from curvdyn.curvature._mapspace_ops import _delta_s, _grams, _kernel_from_grams, _pullback_lam
from curvdyn.curvature.spectral import SpectralFunction, _eigh_sym, order_after
from curvdyn.network import Weights, outer_products
from curvdyn.task import Task


def mapspace_apply(kernel: jax.Array, f: SpectralFunction, rhs: jax.Array, *, after=None) -> jax.Array:
    """``f(K)`` applied to an ``n_d × n_0`` matrix (``K`` exactly symmetric, as built here)."""
    evals, evecs = _eigh_sym(order_after(kernel, after))
    fv = f(evals, evals[-1])
    return (evecs @ (fv * (evecs.T @ rhs.reshape(-1)))).reshape(rhs.shape)


def _mapspace_from_grams(a, b, p, q, ds, task, f, after=None) -> Weights:
    lam = mapspace_apply(_kernel_from_grams(order_after(p, after), q), f, ds)
    return _pullback_lam(a, b, lam, task)


def mapspace_direction(ws: Weights, task: Task, f: SpectralFunction) -> Weights:
    """``f(H₊) g = Ĵᵀ f(K) vec(Δ S)``: the exact direction from an eigenproblem of size n_d n_0."""
    a, b = outer_products(ws)
    p, q = _grams(a, b, task)
    return _mapspace_from_grams(a, b, p, q, _delta_s(ws, task, b), task, f)
