"""Matrix-free conjugate gradients for the damped rules (``f(λ) = gain / (λ + shift)``, shift > 0)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from curvdyn.curvature._mapspace_ops import _delta_s, _grams, _kernel_matvec, _pullback_lam
from curvdyn.curvature.spectral import SpectralFunction
from curvdyn.network import Weights, outer_products
from curvdyn.task import Task


class CGInfo(NamedTuple):
    """What :func:`cg_direction` did: ``iterations`` taken; ``error_bound``, a guaranteed bound
    on the relative error of the returned direction (``‖d − d_exact‖ / ‖d‖``, from the final
    explicitly recomputed residual, see :func:`cg_solve`); ``converged`` (``error_bound ≤ tol``)."""

    iterations: jax.Array
    error_bound: jax.Array
    converged: jax.Array


#: Defaults of the ``cg`` method.
DEFAULT_CG_TOL = 1e-10
DEFAULT_CG_MAXITER = 2000


def cg_solve(p, q, rhs, shift: float, *, tol: float, maxiter: int):
    """Solve ``(K + shift I) X = rhs`` by CG from ``X_0 = 0``, stopping on an error bound.

    With ``A = K + shift I ⪰ shift I`` and ``E = X − X_k``: ``‖Ĵᵀ E‖² = Eᵀ K E ≤ ‖E‖_A² =
    rᵀ A⁻¹ r ≤ ‖r_k‖² / shift``. So ``‖r_k‖ / (√shift · ‖Ĵᵀ X_k‖)`` bounds the relative error of
    the parameter-space direction ``Ĵᵀ X``; CG stops once it is ≤ ``tol``. Inside the loop
    ``‖Ĵᵀ X_k‖² = X_kᵀ K X_k = X_kᵀ rhs − shift ‖X_k‖²`` (Galerkin: ``X_k ⊥ r_k``); the final bound
    is recomputed from an explicit residual and an explicit ``K X``.
    """
    dtype = rhs.dtype
    tiny = jnp.finfo(dtype).tiny

    def kx(x):
        return _kernel_matvec(p, q, x)

    def vdot(x, y):
        return jnp.sum(x * y)

    def cond(state):
        x, _, _, rr, k = state
        jx2 = jnp.maximum(vdot(x, rhs) - shift * vdot(x, x), 0.0)
        return (k < maxiter) & (jnp.sqrt(rr) > tol * jnp.sqrt(shift * jx2))

    def body(state):
        x, r, d, rr, k = state
        ad = kx(d) + shift * d
        alpha = rr / vdot(d, ad)
        x = x + alpha * d
        r = r - alpha * ad
        rr_new = vdot(r, r)
        d = r + (rr_new / rr) * d
        return x, r, d, rr_new, k + 1

    x0 = jnp.zeros_like(rhs)
    state = (x0, rhs, rhs, vdot(rhs, rhs), jnp.asarray(0))
    x, _, _, _, k = jax.lax.while_loop(cond, body, state)
    kxx = kx(x)
    true_r = rhs - kxx - shift * x
    jx = jnp.sqrt(jnp.maximum(vdot(x, kxx), 0.0))
    bound = jnp.sqrt(vdot(true_r, true_r)) / (jnp.sqrt(shift) * jnp.maximum(jx, tiny))
    return x, CGInfo(k, bound, bound <= tol)


def cg_direction(
    ws: Weights,
    task: Task,
    f: SpectralFunction,
    *,
    tol: float = DEFAULT_CG_TOL,
    maxiter: int = DEFAULT_CG_MAXITER,
) -> tuple[Weights, CGInfo]:
    """Damped direction ``gain · Ĵᵀ (K + shift)⁻¹ vec(Δ S)`` by matrix-free CG, with its info.

    Only for ``f(λ) = gain (λ + shift)^{−1}`` with ``shift > 0`` (``damped-ngd`` with ε > 0,
    ``ngd`` with ``lm_damping`` > 0). Each iteration costs one ``Λ ↦ Σ_i P_i Λ Q_i``; the
    iteration count grows like ``sqrt(λ_max(K)/shift)``.
    """
    if not (f.shift > 0 and f.power == 1.0):
        raise ValueError("the cg method needs a damped rule: f(λ) = gain/(λ + shift) with shift > 0")
    a, b = outer_products(ws)
    p, q = _grams(a, b, task)
    ds = _delta_s(ws, task, b)
    lam, info = cg_solve(p, q, ds, f.shift, tol=tol, maxiter=maxiter)
    return _pullback_lam(a, b, f.gain * lam, task), info
