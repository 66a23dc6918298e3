"""d = 2, Σ = I: the map-space kernel is a Kronecker sum, diagonalized by two small eigendecompositions.

Also the product-basis solve shared with the ``balanced`` path: ``K`` diagonal in ``U ⊗ V``, so
``f(K)(X) = U [(Uᵀ X V) ⊙ f(κ)] Vᵀ``, refined for power-one ``f`` with the structured residual.
"""

from __future__ import annotations

import jax.numpy as jnp

from curvdyn.curvature._mapspace_ops import _delta_s, _forward, _pullback_lam, _right_products
from curvdyn.curvature.diagnostics import DirectionInfo, norm_of, rho_grid, spectral_info
from curvdyn.curvature.refine import Refined, refine_map
from curvdyn.curvature.spectral import SpectralFunction, _eigh_sym, _sym, order_after
from curvdyn.network import Weights, outer_products
from curvdyn.task import Task


def _grid_core(a, b, ds, task, f: SpectralFunction, u, v, kappa) -> tuple[Refined, Weights]:
    """``Λ = f(K) ΔS`` with ``K = Σ_ab κ_ab (u_a v_bᵀ)(u_a v_bᵀ)ᵀ``, refined; and the products ``B_i S``."""
    fk = f(kappa, jnp.max(kappa))

    def solve(x):
        return u @ ((u.T @ x @ v) * fk) @ v.T

    bs = _right_products(b, task)
    out = refine_map(f, ds, lambda lam: _pullback_lam(a, b, lam, task), lambda d: _forward(a, bs, d), solve)
    return out, bs


def _grid_info(a, bs, ds, f: SpectralFunction, u, v, kappa, out: Refined) -> DirectionInfo:
    """The :class:`DirectionInfo` of a product-basis direction (:func:`_grid_core`)."""
    coef = u.T @ ds @ v
    refined = out.residual is not None
    return spectral_info(
        kappa.ravel(),
        rho_grid(a, bs, u, v).ravel(),
        coef.ravel(),
        f,
        rhs_norm=norm_of(ds),
        d_norm=norm_of(out.direction),
        res_coef=(u.T @ out.residual @ v).ravel() if refined else None,
        res_scale=coef.ravel() if refined else None,
        correction=out.correction,
    )


def _kronsum_basis(ws: Weights, task: Task, after=None):
    if len(ws) != 2 or not task.identity_cov:
        raise ValueError("the kronsum method needs depth d = 2 and an identity input covariance")
    w1, w2 = ws
    alpha, u = _eigh_sym(order_after(_sym(w2 @ w2.T), after))
    beta, v = _eigh_sym(order_after(_sym(w1.T @ w1), u))
    return u, v, alpha[:, None] + beta[None, :]


def kronsum_direction(ws: Weights, task: Task, f: SpectralFunction, *, after=None) -> Weights:
    """d = 2, Σ = I: ``K(Λ) = (w_2 w_2ᵀ) Λ + Λ (w_1ᵀ w_1)`` is a Kronecker sum.

    With ``w_2 w_2ᵀ = U diag(α) Uᵀ`` and ``w_1ᵀ w_1 = V diag(β) Vᵀ``, K has eigenvalues
    ``α_a + β_b`` with eigenvectors ``u_a v_bᵀ``, so ``f(K)(X) = U [(Uᵀ X V) ⊙ f(α_a + β_b)] Vᵀ``:
    O(n³) instead of O(n⁶). Power-one ``f`` is refined with the structured residual.
    """
    u, v, kappa = _kronsum_basis(ws, task, after)
    a, b = outer_products(ws)
    return _grid_core(a, b, _delta_s(ws, task, b), task, f, u, v, kappa)[0].direction


def kronsum_direction_info(
    ws: Weights, task: Task, f: SpectralFunction, *, after=None
) -> tuple[Weights, DirectionInfo]:
    """:func:`kronsum_direction` and its :class:`~curvdyn.curvature.diagnostics.DirectionInfo`."""
    u, v, kappa = _kronsum_basis(ws, task, after)
    a, b = outer_products(ws)
    ds = _delta_s(ws, task, b)
    out, bs = _grid_core(a, b, ds, task, f, u, v, kappa)
    return out.direction, _grid_info(a, bs, ds, f, u, v, kappa, out)
