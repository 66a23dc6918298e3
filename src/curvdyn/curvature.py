"""The Gauss–Newton matrix H₊ and exact spectral functions of it, several ways.

``H₊ = Jᵀ (I ⊗ Σ) J`` (paper eq. 3) for the map Jacobian ``J: ẇ ↦ Σ_i A_i ẇ_i B_i``. Every
curvature-corrected rule applies a spectral function ``f`` of ``H₊`` (or of its diagonal
blocks ``H_i = (B_i Σ B_iᵀ) ⊗ (A_iᵀ A_i)``) to the gradient. This module computes
``f(H₊) g`` exactly by

* ``dense``: the explicit ``P × P`` matrix ``H₊`` (one row and column per parameter, in the
  order of :func:`curvdyn.network.flatten_weights`: layer 1 first, each layer row-major) and
  its eigendecomposition — the paper's own method, O(P³);
* ``mapspace``: the map-space identity (DESIGN.md). With ``S = Σ^{1/2}``,
  ``Ĵ = (I ⊗ S) J`` and the kernel ``K = Ĵ Ĵᵀ``, ``K(Λ) = Σ_i (A_i A_iᵀ) Λ (S B_iᵀ B_i S)``,

      f(H₊) g = Ĵᵀ f(K) vec(Δ S),  i.e.  direction_i = A_iᵀ Λ S B_iᵀ,  Λ = f(K)(Δ S),

  valid for any f with ``f(λ)·λ^{1/2}`` → 0 on the null space (all rules here): the
  eigenproblem has the map's size ``n_d n_0`` whatever the hidden widths;
* ``kronsum``: for d = 2 and Σ = I, ``K = (w_2 w_2ᵀ) ⊕ (w_1ᵀ w_1)`` is a Kronecker sum whose
  eigenpairs come from two small eigendecompositions;
* for the diagonal blocks, ``kronecker`` (eigendecompositions of the layer factors
  ``A_iᵀA_i`` and ``B_iΣB_iᵀ``), ``mapspace`` (of the Grams ``A_iA_iᵀ``, ``S B_iᵀB_i S``; the
  same nonzero spectra, size n_d and n_0) and ``dense`` (the explicit block).

Vectorization is row-major throughout: ``vec(P Λ Q) = (P ⊗ Qᵀ) vec(Λ)``.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from curvdyn.network import Weights, flatten_weights, network_map, outer_products, unflatten_weights, widths_of
from curvdyn.task import Task

#: Default relative eigenvalue cutoff: eigenvalues ``λ ≤ rcond · λ_max`` count as zero. It sits
#: a safe factor above the round-off floor of a float64 symmetric eigensolver
#: (≈ dim · 2.2e-16 · λ_max) for operators up to dimension ~1e4, and below any eigenvalue
#: whose eigenvector float64 can resolve.
DEFAULT_RCOND = 1e-13


@dataclasses.dataclass(frozen=True)
class SpectralFunction:
    """``f(λ) = gain · (λ + shift)^{−power}``, with a pseudo-inverse cutoff when ``shift = 0``.

    With ``shift = 0``, eigenvalues ``λ ≤ rcond · λ_max`` map to 0 (the pseudo-inverse power
    on the range of the operator). ``power = 0`` is the projection on the range.
    """

    power: float
    shift: float = 0.0
    gain: float = 1.0
    rcond: float = DEFAULT_RCOND

    def __call__(self, evals: jax.Array, max_eval: jax.Array) -> jax.Array:
        evals = jnp.maximum(evals, 0.0)
        if self.shift > 0:
            return self.gain * (evals + self.shift) ** (-self.power)
        keep = evals > self.rcond * max_eval
        safe = jnp.where(keep, evals, 1.0)
        return jnp.where(keep, self.gain * safe ** (-self.power), 0.0)


def _eigh(m: jax.Array) -> tuple[jax.Array, jax.Array]:
    # Symmetrize first: products like ĴᵀĴ are symmetric only up to round-off.
    return jnp.linalg.eigh(0.5 * (m + m.T))


def apply_psd_function(m: jax.Array, f: SpectralFunction, v: jax.Array) -> jax.Array:
    """``f(M) v`` for a symmetric PSD matrix ``M`` (n × n) and ``v`` of shape (n,) or (n, k)."""
    evals, evecs = _eigh(m)
    fv = f(evals, jnp.max(evals))
    return evecs @ (fv[:, None] * (evecs.T @ v)) if v.ndim == 2 else evecs @ (fv * (evecs.T @ v))


def _delta_s(ws: Weights, task: Task) -> jax.Array:
    delta = network_map(ws) - task.target
    return delta if task.identity_cov else delta @ task.sqrt_cov


def _pullback(a: Weights, b: Weights, lam_s: jax.Array) -> Weights:
    """``{A_iᵀ (Λ S) B_iᵀ}_i``, i.e. ``Ĵᵀ vec(Λ)``, given ``Λ S``."""
    return tuple(a_i.T @ lam_s @ b_i.T for a_i, b_i in zip(a, b))


# ---------------------------------------------------------------------------------------
# dense full H₊ (reference; the paper's method)
# ---------------------------------------------------------------------------------------


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
    """``f(H₊) v`` through the explicit ``H₊`` and its eigendecomposition (O(P³))."""
    out = apply_psd_function(hessian_plus(ws, task), f, flatten_weights(vector))
    return unflatten_weights(out, widths_of(ws))


def dense_direction(ws: Weights, task: Task, f: SpectralFunction, grad: Weights) -> Weights:
    """``f(H₊) g`` for the gradient ``g`` by the dense method."""
    return dense_apply(ws, task, f, grad)


# ---------------------------------------------------------------------------------------
# map-space identity
# ---------------------------------------------------------------------------------------


def _right_products(b: Weights, task: Task) -> Weights:
    """``B_i S`` for every layer."""
    return b if task.identity_cov else tuple(b_i @ task.sqrt_cov for b_i in b)


def _grams(a: Weights, b: Weights, task: Task) -> tuple[jax.Array, jax.Array]:
    p = jnp.stack([a_i @ a_i.T for a_i in a])
    q = jnp.stack([bs_i.T @ bs_i for bs_i in _right_products(b, task)])
    return p, q


def _kernel_from_grams(p: jax.Array, q: jax.Array) -> jax.Array:
    # One contraction: no intermediate is larger than K itself.
    n_out, n_in = p.shape[1], q.shape[1]
    return jnp.einsum("iac,ibe->abce", p, q).reshape(n_out * n_in, n_out * n_in)


def mapspace_grams(ws: Weights, task: Task) -> tuple[jax.Array, jax.Array]:
    """The Gram matrices ``P_i = A_i A_iᵀ`` (d, n_d, n_d) and ``Q_i = S B_iᵀ B_i S`` (d, n_0, n_0)."""
    return _grams(*outer_products(ws), task)


def mapspace_kernel(ws: Weights, task: Task) -> jax.Array:
    """The map-space kernel ``K = Σ_i P_i ⊗ Q_i = Ĵ Ĵᵀ``, shape ``(n_d n_0, n_d n_0)``."""
    return _kernel_from_grams(*mapspace_grams(ws, task))


def mapspace_direction(ws: Weights, task: Task, f: SpectralFunction) -> Weights:
    """``f(H₊) g = Ĵᵀ f(K) vec(Δ S)``: the exact direction from an eigenproblem of size n_d n_0."""
    a, b = outer_products(ws)
    p, q = _grams(a, b, task)
    n_out, n_in = p.shape[1], q.shape[1]
    kernel = _kernel_from_grams(p, q)
    lam = apply_psd_function(kernel, f, _delta_s(ws, task).reshape(-1)).reshape(n_out, n_in)
    lam_s = lam if task.identity_cov else lam @ task.sqrt_cov
    return _pullback(a, b, lam_s)


def kronsum_direction(ws: Weights, task: Task, f: SpectralFunction) -> Weights:
    """d = 2, Σ = I: ``K(Λ) = (w_2 w_2ᵀ) Λ + Λ (w_1ᵀ w_1)`` is a Kronecker sum.

    With ``w_2 w_2ᵀ = U diag(α) Uᵀ`` and ``w_1ᵀ w_1 = V diag(β) Vᵀ``, K has eigenvalues
    ``α_a + β_b`` with eigenvectors ``u_a v_bᵀ``, so ``f(K)(X) = U [(Uᵀ X V) ⊙ f(α_a + β_b)] Vᵀ``:
    O(n³) instead of O(n⁶).
    """
    if len(ws) != 2 or not task.identity_cov:
        raise ValueError("the kronsum method needs depth d = 2 and an identity input covariance")
    w1, w2 = ws
    alpha, u = _eigh(w2 @ w2.T)
    beta, v = _eigh(w1.T @ w1)
    evals = alpha[:, None] + beta[None, :]
    fv = f(evals, jnp.max(alpha) + jnp.max(beta))
    delta = w2 @ w1 - task.target
    lam = u @ ((u.T @ delta @ v) * fv) @ v.T
    return (w2.T @ lam, lam @ w1.T)


# ---------------------------------------------------------------------------------------
# diagonal blocks H_i = (B_i Σ B_iᵀ) ⊗ (A_iᵀ A_i)
# ---------------------------------------------------------------------------------------


def layer_factors(ws: Weights, task: Task) -> tuple[tuple[jax.Array, jax.Array], ...]:
    """The Kronecker factors of each diagonal block: ``(A_iᵀ A_i, B_i Σ B_iᵀ)``, i = 1..d.

    ``H_i ẇ_i = (A_iᵀ A_i) ẇ_i (B_i Σ B_iᵀ)``; shapes ``(n_i, n_i)`` and ``(n_{i-1}, n_{i-1})``.
    """
    a, b = outer_products(ws)
    cov = task.input_cov
    return tuple((a_i.T @ a_i, b_i @ cov @ b_i.T) for a_i, b_i in zip(a, b))


def block_matrix(ws: Weights, task: Task, layer: int) -> jax.Array:
    """The explicit diagonal block ``H_i`` (``layer = i``, 1-based), shape ``(n_i n_{i−1})²``."""
    left, right = layer_factors(ws, task)[layer - 1]
    return jnp.kron(left, right)


def _two_sided(left: jax.Array, right: jax.Array, x: jax.Array, f: SpectralFunction) -> jax.Array:
    """``f(L ⊗ R)`` applied to X as ``ẇ ↦ L ẇ R``: ``U_L [(U_Lᵀ X U_R) ⊙ f(l_a r_b)] U_Rᵀ``."""
    l_vals, l_vecs = _eigh(left)
    r_vals, r_vecs = _eigh(right)
    l_vals, r_vals = jnp.maximum(l_vals, 0.0), jnp.maximum(r_vals, 0.0)
    fv = f(l_vals[:, None] * r_vals[None, :], jnp.max(l_vals) * jnp.max(r_vals))
    return l_vecs @ ((l_vecs.T @ x @ r_vecs) * fv) @ r_vecs.T


def block_direction_kronecker(
    ws: Weights, task: Task, f: SpectralFunction, grad: Weights
) -> Weights:
    """``f(H_i) g_i`` for every layer from eigendecompositions of the layer factors."""
    return tuple(
        _two_sided(left, right, g_i, f) for (left, right), g_i in zip(layer_factors(ws, task), grad)
    )


def block_direction_mapspace(ws: Weights, task: Task, f: SpectralFunction) -> Weights:
    """``f(H_i) g_i = A_iᵀ M_i S B_iᵀ`` with ``M_i = f(P_i ⊗ Q_i)(Δ S)``, i = 1..d.

    Since ``g_i = A_iᵀ (Δ S)(B_i S)ᵀ`` and the factors ``A_iᵀA_i``/``A_iA_iᵀ`` (and
    ``B_iΣB_iᵀ``/``S B_iᵀ B_i S``) share their nonzero spectra, the block's spectral function
    moves onto the Grams of size n_d and n_0 exactly (push-through identity).
    """
    a, b = outer_products(ws)
    bs = _right_products(b, task)
    ds = _delta_s(ws, task)
    out = []
    for a_i, bs_i in zip(a, bs):
        m = _two_sided(a_i @ a_i.T, bs_i.T @ bs_i, ds, f)
        out.append(a_i.T @ m @ bs_i.T)
    return tuple(out)


def block_direction_dense(ws: Weights, task: Task, f: SpectralFunction, grad: Weights) -> Weights:
    """``f(H_i) g_i`` through each explicit block ``H_i`` (reference, O(Σ (n_i n_{i−1})³))."""
    out = []
    for i, g_i in enumerate(grad, start=1):
        out.append(apply_psd_function(block_matrix(ws, task, i), f, g_i.reshape(-1)).reshape(g_i.shape))
    return tuple(out)


# ---------------------------------------------------------------------------------------
# choosing a method (static: depends on shapes only, so it is resolved before tracing)
# ---------------------------------------------------------------------------------------

FULL_METHODS = ("dense", "mapspace", "kronsum")
BLOCK_METHODS = ("dense", "mapspace", "kronecker")


def choose_full_method(widths: tuple[int, ...], identity_cov: bool) -> str:
    """The fastest exact method for the full ``H₊`` at these widths (used by ``auto``)."""
    d = len(widths) - 1
    n_map = widths[0] * widths[-1]
    n_par = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    if d == 2 and identity_cov:
        return "kronsum"
    return "mapspace" if n_map <= n_par else "dense"


def choose_block_method(widths: tuple[int, ...]) -> str:
    """The cheaper of the layer-factor and map-Gram block methods (cubic eigen cost)."""
    d = len(widths) - 1
    layer_cost = sum(a**3 + b**3 for a, b in zip(widths[:-1], widths[1:]))
    map_cost = d * (widths[0] ** 3 + widths[-1] ** 3)
    return "mapspace" if map_cost < layer_cost else "kronecker"


def condition_number(ws: Weights, task: Task) -> float:
    """``λ_max / λ_min`` over the nonzero spectrum of ``K`` (= that of ``H₊``), a diagnostic."""
    evals = jnp.linalg.eigvalsh(mapspace_kernel(ws, task))
    top = float(evals[-1])
    nonzero = evals[evals > DEFAULT_RCOND * top]
    return top / float(nonzero[0]) if nonzero.size else math.inf
