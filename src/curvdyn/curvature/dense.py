"""The dense reference: the explicit ``P × P`` Gauss–Newton matrix ``H₊ = Ĵᵀ Ĵ`` (paper eq. 3) and its
eigendecomposition — the paper's own method, O(P³) time, O(P²) memory.

Parameter order: that of :func:`curvdyn.network.flatten_weights` (layer 1 first, each layer
row-major). Power-one directions are refined with the structured residual
(:mod:`curvdyn.curvature.refine`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from curvdyn.curvature._mapspace_ops import _delta_s, _forward, _pullback_lam, _right_products
from curvdyn.curvature.diagnostics import DirectionInfo, norm_of, residual_in_basis, spectral_info, unit_coef
from curvdyn.curvature.refine import Refined, over_lambda, refine_from_eigenbasis
from curvdyn.curvature.spectral import SpectralFunction, _eigh, apply_psd_function
from curvdyn.network import Weights, flatten_weights, outer_products, unflatten_weights, widths_of
from curvdyn.task import Task


def jacobian_matrix(ws: Weights, task: Task) -> jax.Array:
    """``Ĵ = (I ⊗ S) J`` as a matrix of shape ``(n_d n_0, P)``.

    Column block i is ``A_i ⊗ (B_i S)ᵀ``: ``vec(A_i ẇ_i B_i S) = (A_i ⊗ (B_i S)ᵀ) vec(ẇ_i)``.
    """
    a, b = outer_products(ws)
    s = task.sqrt_cov
    return jnp.concatenate([jnp.kron(a_i, (b_i @ s).T) for a_i, b_i in zip(a, b)], axis=1)


def hessian_plus(ws: Weights, task: Task) -> jax.Array:
    """The dense Gauss–Newton matrix ``H₊ = Ĵᵀ Ĵ``, shape ``(P, P)`` (paper eq. 3).

    Parameter order: :func:`curvdyn.network.flatten_weights` (layer 1 first, row-major).
    """
    jac = jacobian_matrix(ws, task)
    return jac.T @ jac


def dense_apply(ws: Weights, task: Task, f: SpectralFunction, vector: Weights) -> Weights:
    """``f(H₊) v`` through the explicit ``H₊`` and its eigendecomposition (O(P³)), unrefined."""
    out = apply_psd_function(hessian_plus(ws, task), f, flatten_weights(vector))
    return unflatten_weights(out, widths_of(ws))


def _dense_core(ws: Weights, task: Task, f: SpectralFunction, grad: Weights) -> tuple[Refined, tuple]:
    evals, evecs = _eigh(hessian_plus(ws, task))
    fv = f(evals, jnp.max(evals))
    widths = widths_of(ws)

    def spectral(values):
        return lambda v: unflatten_weights(evecs @ (values * (evecs.T @ flatten_weights(v))), widths)

    a, b = outer_products(ws)
    bs = _right_products(b, task)
    ds = _delta_s(ws, task, b)
    out = refine_from_eigenbasis(
        f,
        ds,
        grad,
        lambda r: _pullback_lam(a, b, r, task),
        lambda d: _forward(a, bs, d),
        spectral(fv),
        spectral(over_lambda(fv, evals)),
    )
    return out, (evals, evecs, ds, a, b)


def dense_direction(ws: Weights, task: Task, f: SpectralFunction, grad: Weights) -> Weights:
    """``f(H₊) g`` for the gradient ``g`` (:func:`curvdyn.network.gradient`) by the dense method.

    Power-one ``f`` is refined with the structured residual, which is computed from ``ΔS``:
    ``grad`` must be the gradient at ``ws``.
    """
    return _dense_core(ws, task, f, grad)[0].direction


def dense_direction_info(ws: Weights, task: Task, f: SpectralFunction, grad: Weights) -> tuple[Weights, DirectionInfo]:
    """:func:`dense_direction` and its :class:`~curvdyn.curvature.diagnostics.DirectionInfo`
    (eigenvalues of ``H₊``, measured through ``Ĵ`` as ``‖Ĵ v_k‖²``)."""
    out, (evals, evecs, ds, a, b) = _dense_core(ws, task, f, grad)
    jv = jacobian_matrix(ws, task) @ evecs
    rho = jnp.sum(jv * jv, axis=0)
    t = evecs.T @ flatten_weights(grad)
    res_coef, res_scale = residual_in_basis(
        out,
        lambda r: evecs.T @ flatten_weights(r),
        lambda r: evecs.T @ flatten_weights(_pullback_lam(a, b, r, task)),
        rho,
        t,
    )
    info = spectral_info(
        evals,
        rho,
        unit_coef(t, rho),
        f,
        rhs_norm=norm_of(ds),
        d_norm=norm_of(out.direction),
        res_coef=res_coef,
        res_scale=res_scale,
        correction=out.correction,
        param_basis=True,
    )
    return out.direction, info
