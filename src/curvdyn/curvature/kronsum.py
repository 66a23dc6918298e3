"""d = 2, Σ = I: the map-space kernel is a Kronecker sum, diagonalized by two small eigendecompositions."""

from __future__ import annotations

from curvdyn.curvature.spectral import SpectralFunction, _eigh_sym, _sym, order_after
from curvdyn.network import Weights
from curvdyn.task import Task


def kronsum_direction(ws: Weights, task: Task, f: SpectralFunction, *, after=None) -> Weights:
    """d = 2, Σ = I: ``K(Λ) = (w_2 w_2ᵀ) Λ + Λ (w_1ᵀ w_1)`` is a Kronecker sum.

    With ``w_2 w_2ᵀ = U diag(α) Uᵀ`` and ``w_1ᵀ w_1 = V diag(β) Vᵀ``, K has eigenvalues
    ``α_a + β_b`` with eigenvectors ``u_a v_bᵀ``, so ``f(K)(X) = U [(Uᵀ X V) ⊙ f(α_a + β_b)] Vᵀ``:
    O(n³) instead of O(n⁶).
    """
    if len(ws) != 2 or not task.identity_cov:
        raise ValueError("the kronsum method needs depth d = 2 and an identity input covariance")
    w1, w2 = ws
    alpha, u = _eigh_sym(order_after(_sym(w2 @ w2.T), after))
    beta, v = _eigh_sym(order_after(_sym(w1.T @ w1), u))
    evals = alpha[:, None] + beta[None, :]
    fv = f(evals, alpha[-1] + beta[-1])
    delta = w2 @ w1 - task.target
    lam = u @ ((u.T @ delta @ v) * fv) @ v.T
    return (w2.T @ lam, lam @ w1.T)
