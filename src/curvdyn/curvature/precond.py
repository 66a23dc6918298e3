"""The Kronecker-sum preconditioner of the map-space kernel and the spectral certificates built on it.

With ``S = Σ^{1/2} = E diag(s) Eᵀ`` invertible, ``C = E diag(1/s)`` whitens the input side: in the
coordinates ``Λ = Λ̃ Cᵀ`` the shifted kernel ``K + σ`` becomes

    K̃ + σ (I ⊗ G),   K̃ = Σ_i P_i ⊗ Q̃_i,   Q̃_i = (B_i E)ᵀ (B_i E),   G = CᵀC = diag(1/s²)

(``Q̃_1 = I``, ``P_d = I``; for Σ = I nothing changes: E = I, s = 1). Its first and last terms plus
the shift form the generalized Kronecker sum

    M̃_σ = P_1 ⊗ I + I ⊗ (Q̃_d + σ G) ⪯ K̃ + σ G,

which two eigendecompositions ``P_1 = U diag(α) Uᵀ``, ``Q̃_d + σG = V_σ diag(γ_σ) V_σᵀ``
diagonalize exactly: in the *frame* ``X̂ = Uᵀ Λ̃ V_σ`` the operator is

    X̂ ↦ m_σ ⊙ X̂ + Σ_{1<i<d} P̂_i X̂ Q̂_i,   m_σ[a, b] = α_a + γ_σ,b,   P̂_i = UᵀP_iU, Q̂_i = V_σᵀQ̃_iV_σ,

and ``M̃_σ`` is the diagonal ``m_σ``: preconditioning is free and an iteration costs the
``2(d − 2)`` products of the middle terms (d = 1, 2: ``M̃ = K̃`` exactly). For Σ = I the frame does
not depend on σ (``γ_σ = γ_0 + σ``); otherwise each shift has its own ``V_σ`` (one small
eigendecomposition). ``M̃_σ ⪯ K̃ + σG`` is what makes every error bound of the solver a bound:
``eᵀ(K+σ)e = r̃ᵀ(K̃+σG)⁻¹r̃ ≤ r̃ᵀ M̃_σ⁻¹ r̃`` for the error ``e`` and residual ``r̃`` of a solve.

Measured against the alternatives (benchmarks/README.md, "preconditioners"): CG iterations to
1e-9 in the K-norm, d = 4, N = 32, Xavier weights: none > 3000, this Kronecker sum 58, the
diagonal of K̃ in its frame ("Jacobi in the frame") 65, the balanced shared basis (eigenvectors
of Σ_i P_i, Σ_i Q_i) 314, a trace-weighted Kronecker-sum fit of all terms ≈ 500; on
well-conditioned weights the shared basis is slightly ahead (12 against 19).

Spectral certificates (pseudo-inverse rules, shift 0), all from quantities computed here:

* ``λ_max(K) ≤ λ_hi``, the smaller of ``s_max² (α_max + γ_max + Σ_{1<i<d} ‖P_i‖ ‖Q̃_i‖)`` (Weyl;
  norms bounded by ``(tr X⁸)^{1/8}``) and the block-norm bound :func:`block_norm_bound`;
  ``λ_max(K) ≥ s_min² (α_max + γ_max)`` (as ``K̃ ⪰ M̃_0``).
* The *null set* ``Z``: frame coordinates whose diagonal entry ``κ̃_ab`` of ``K̃`` is below
  ``τ_lo / (s_max² n_d n_0)`` (``τ_lo = rcond · s_min²(α_max + γ_max)``, a lower bound of the
  cutoff). The trace bound ``‖K̃_ZZ‖ ≤ η̃ = Σ_Z κ̃`` puts ``dim Z`` eigenvalues of ``K`` at or
  below ``s_max² η̃ ≤ τ_lo`` (Courant–Fischer): they are under the cutoff and count as zero, as
  on the eigh path; the solver works on the complement ``W`` (bottlenecks, exact null spaces).
* On ``W``, ``K̃ ⪰ M̃_0`` gives ``λ_min(K̃_W) ≥ min_W m_0``. When that is not enough to clear the
  cutoff, :func:`schur_lower_bounds` certifies larger lower bounds of the ``ℓ + 1`` lowest
  eigenvalues from the ``ℓ ≤ SCHUR_MAX`` lowest pairs of ``M̃_0`` (Haynsworth inertia of a Schur
  complement, ``ℓ`` solves with the complement block).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from curvdyn.curvature.spectral import _eigh_sym, _sym, order_after

#: Most low coordinates ``ℓ`` of ``M̃_0`` the Schur certificate handles (``ℓ`` extra solves, run
#: vectorized, and ``ℓ × ℓ`` eigenvalue problems on the μ grid). Measured on the widened Fig. 3
#: trajectory (benchmarks/README.md, "The Fig. 3 experiment widened"): 2 left 12 of 16 directions
#: uncertified at N = 32, 8 left 3, 16 none (the Kronecker-sum bound is far below K on ~10
#: coordinates there); at N = 64 a cap of 16 left the directions of t ≈ 0.18–0.47 uncertified
#: (21–25 coordinates below ``SCHUR_GAP`` times the cutoff), 32 — the ``sqrt(n_d n_0) / 2`` there —
#: certifies them at the same cost (0.22–0.30 s against 0.24–0.28 s per cold direction); Xavier
#: d = 4 up to N = 128 needs one, an exact interior zero mode one.
SCHUR_MAX = 32
#: A coordinate is "low" for the Schur certificate when ``m_0 < SCHUR_GAP · τ̃`` (``τ̃`` the cutoff
#: in whitened units); the complement then sits at least this factor above the cutoff.
SCHUR_GAP = 100.0


class Whitening(NamedTuple):
    """``S = E diag(s) Eᵀ``; ``None`` fields mean Σ = I (no whitening)."""

    e: jax.Array | None  # (n_0, n_0)
    s: jax.Array | None  # (n_0,) ascending
    s_min: jax.Array
    s_max: jax.Array


class Frame(NamedTuple):
    """The eigenbasis of ``M̃_σ`` for one shift σ (see the module docstring)."""

    u: jax.Array  # (n_d, n_d)
    v: jax.Array  # (n_0, n_0)
    m: jax.Array  # (n_d, n_0), eigenvalues of M̃_σ
    ph: jax.Array  # (d−2, n_d, n_d) middle P̂_i
    qh: jax.Array  # (d−2, n_0, n_0) middle Q̂_i


def whitening(task, dtype) -> Whitening:
    """The whitening of the input side (``None`` fields for Σ = I)."""
    one = jnp.asarray(1.0, dtype)
    if task.identity_cov:
        return Whitening(None, None, one, one)
    s, e = _eigh_sym(_sym(jnp.asarray(task.sqrt_cov, dtype)))
    s = jnp.maximum(s, 0.0)
    return Whitening(e, s, s[0], s[-1])


def whitened_right(b, wh: Whitening):
    """``B̃_i = B_i E`` (``B_i`` for Σ = I)."""
    return b if wh.e is None else tuple(b_i @ wh.e for b_i in b)


def shift_metric(wh: Whitening, dtype):
    """The diagonal of ``G = CᵀC = diag(1/s²)`` (``None`` for Σ = I, where G = I)."""
    if wh.s is None:
        return None
    tiny = jnp.finfo(dtype).tiny
    return 1.0 / jnp.maximum(wh.s, tiny) ** 2


def _end_right(qt):
    """``Q̃_d`` for d ≥ 2, 0 for d = 1 (where the single term ``P_1 ⊗ Q̃_1`` is all of ``K̃``)."""
    return qt[-1] if qt.shape[0] >= 2 else jnp.zeros_like(qt[0])


def left_basis(p, after=None):
    """``α, U`` of ``P_1`` (eigenvalues clipped at 0: the Gram is PSD up to round-off)."""
    alpha, u = _eigh_sym(order_after(p[0], after))
    return jnp.maximum(alpha, 0.0), u


def frame(p, qt, alpha, u, sigma, g, *, after=None) -> Frame:
    """The frame of ``M̃_σ``: ``V_σ, γ_σ`` of ``Q̃_d + σG``, the rotated middle Grams."""
    right = _end_right(qt)
    if g is None:
        right = right + sigma * jnp.eye(right.shape[0], dtype=right.dtype)
    else:
        right = right + sigma * jnp.diag(g)
    gamma, v = _eigh_sym(order_after(_sym(right), after))
    ph = jnp.einsum("ax,iab,by->ixy", u, p[1:-1], u)
    qh = jnp.einsum("ax,iab,by->ixy", v, qt[1:-1], v)
    m = alpha[:, None] + jnp.maximum(gamma, 0.0)[None, :]
    return Frame(u, v, m, _sym(ph), _sym(qh))


def shifted(fr: Frame, sigma) -> Frame:
    """Σ = I: the frame does not depend on the shift, ``m_σ = m_0 + σ``."""
    return fr._replace(m=fr.m + sigma)


def apply_frame(fr: Frame, x: jax.Array) -> jax.Array:
    """``(K̃ + σG)`` in the frame: ``m ⊙ X + Σ_mid P̂_i X Q̂_i`` (x: (n_d, n_0))."""
    out = fr.m * x
    if fr.ph.shape[0]:
        out = out + jnp.einsum("iab,bc,icd->ad", fr.ph, x, fr.qh)
    return out


def kernel_diagonal(fr: Frame) -> jax.Array:
    """The diagonal ``κ̃`` of the operator in the frame: ``m + Σ_mid diag(P̂_i) diag(Q̂_i)ᵀ``."""
    kd = fr.m
    if fr.ph.shape[0]:
        kd = kd + jnp.einsum("ia,ib->ab", jnp.diagonal(fr.ph, axis1=1, axis2=2), jnp.diagonal(fr.qh, axis1=1, axis2=2))
    return kd


def psd_norm_bound(x):
    """``(tr X⁸)^{1/8} ≥ λ_max(X)`` for symmetric PSD ``X`` (batched): two products, within a
    factor ``rank^{1/8}`` of the norm (Frobenius, the k = 2 case, is within ``rank^{1/2}``)."""
    x2 = x @ x
    x4 = x2 @ x2
    scale = jnp.maximum(jnp.max(jnp.abs(x4), axis=(-2, -1)), jnp.finfo(x.dtype).tiny)
    return scale**0.25 * jnp.sum((x4 / scale[..., None, None]) ** 2, axis=(-2, -1)) ** 0.125


def pair_row_norms(fr: Frame) -> jax.Array:
    """``(n_d, n_0)``: the norm of the middle terms' row at each frame coordinate,
    ``sqrt(Σ_i ‖P̂_i[a,:]‖² ‖Q̂_i[b,:]‖²)`` — how strongly that coordinate couples to the others."""
    if not fr.ph.shape[0]:
        return jnp.zeros(fr.m.shape, fr.m.dtype)
    rp = jnp.sum(fr.ph**2, axis=2)
    rq = jnp.sum(fr.qh**2, axis=2)
    return jnp.sqrt(jnp.einsum("ia,ib->ab", rp, rq))


def null_rows_norm(fr: Frame, zmask) -> jax.Array:
    """A bound of the Frobenius norm of the rows of the operator at the coordinates ``zmask``
    (the coupling of the null set to the rest): the diagonal ``m`` part has none, each middle
    term ``P̂_i ⊗ Q̂_i`` contributes ``sqrt(Σ_{(a,b)∈Z} ‖P̂_i[a,:]‖² ‖Q̂_i[b,:]‖²)``."""
    if not fr.ph.shape[0]:
        return jnp.asarray(0.0, fr.m.dtype)
    rp = jnp.sum(fr.ph**2, axis=2)  # (d−2, n_d)
    rq = jnp.sum(fr.qh**2, axis=2)  # (d−2, n_0)
    per = jnp.einsum("ia,ib,ab->i", rp, rq, zmask.astype(fr.m.dtype))
    return jnp.sum(jnp.sqrt(per))


def spectrum_bounds(p, qt, alpha, gamma0, wh: Whitening):
    """``(λ_hi, λ_max_lo)``: a certified upper bound of ``λ_max(K)`` (Weyl: ``M̃_0``'s top
    eigenvalue plus the middle terms' norms, times ``s_max²``) and a lower bound of it."""
    mid = jnp.sum(psd_norm_bound(p[1:-1]) * psd_norm_bound(qt[1:-1])) if p.shape[0] > 2 else 0.0
    top = alpha[-1] + jnp.max(gamma0)
    return wh.s_max**2 * (top + mid), wh.s_min**2 * top


def _pair_norms_upper(products, scales):
    """Upper bounds of ``‖X_k‖₂`` for the exact matrices whose computed values are ``products``
    (a list of matrices, formed as products with factors of Frobenius norms ``scales``): one
    batched SVD of the products zero-padded to a common shape (padding leaves the singular values
    alone; one call compiles once, where ``d²`` separate ones would compile ``d²`` times), plus the
    products' and the SVD's round-off."""
    rows = max(x.shape[0] for x in products)
    cols = max(x.shape[1] for x in products)
    stack = jnp.stack([jnp.pad(x, ((0, rows - x.shape[0]), (0, cols - x.shape[1]))) for x in products])
    u = jnp.finfo(stack.dtype).eps
    top = jnp.linalg.svd(stack, compute_uv=False)[:, 0]
    return top + 8.0 * max(rows, cols) * u * jnp.stack(scales)


def block_norm_bound(a, bt, wh: Whitening):
    """A certified upper bound of ``λ_max(K)``: the spectral radius of the ``d × d`` matrix
    ``N_ij = ‖A_iᵀ A_j‖ ‖B̂_j B̂_iᵀ‖``, ``B̂_i = B_i S`` (``= B̃_i diag(s) Eᵀ``).

    ``K = Ĵ Ĵᵀ`` has the nonzero eigenvalues of the parameter Gram ``ĴᵀĴ``, whose ``(i, j)`` block
    is ``X ↦ A_iᵀ A_j X B̂_j B̂_iᵀ`` of norm ``N_ij``; for a unit ``x = (x_1, …, x_d)``,
    ``xᵀ ĴᵀĴ x ≤ Σ_ij N_ij ‖x_i‖ ‖x_j‖ ≤ ρ(N)``. It is tight when the blocks' top singular
    vectors align, as they do once the modes have grown: within 6e-7 of ``λ_max`` along the
    widened Fig. 3 trajectory (N = 32), where the Weyl bound of :func:`spectrum_bounds` is 8–14 %
    above it — enough to leave an eigenvalue at 1.1 · ``rcond · λ_max`` neither cut nor kept.
    """
    d = len(a)
    bs = bt if wh.s is None else tuple(b_i * wh.s[None, :] for b_i in bt)
    fa = [jnp.sqrt(jnp.sum(x * x)) for x in a]
    fb = [jnp.sqrt(jnp.sum(x * x)) for x in bs]
    pairs = [(i, j) for i in range(d) for j in range(i, d)]
    na = _pair_norms_upper([a[i].T @ a[j] for i, j in pairs], [fa[i] * fa[j] for i, j in pairs])
    nb = _pair_norms_upper([bs[j] @ bs[i].T for i, j in pairs], [fb[i] * fb[j] for i, j in pairs])
    rows, cols = (np.array(x) for x in zip(*pairs))
    n = jnp.zeros((d, d), na.dtype).at[rows, cols].set(na * nb).at[cols, rows].set(na * nb)
    u = jnp.finfo(n.dtype).eps
    return jnp.linalg.eigvalsh(n)[-1] * (1.0 + 8.0 * d * u)


def schur_lower_bounds(k_ll, g_upper, theta, mu_lo, mu_must):
    """Certified lower bounds ``(μ_1, …, μ_ℓ)`` of the ``ℓ`` smallest eigenvalues of ``K`` (``ℓ`` the
    size of ``k_ll``, at most ``SCHUR_MAX``): for each ``j`` the largest grid point ``μ ∈ [mu_lo, θ)``
    at which the ``ℓ × ℓ`` matrix ``S(μ) = K_LL − μ I − θ/(θ − μ) · G_upper`` has at most ``j − 1``
    negative eigenvalues.

    With ``K_RR ⪰ θ I`` and ``G_upper ⪰ K_LR K_RR⁻¹ K_RL``: ``(K_RR − μ)⁻¹ ⪯ θ/(θ−μ) K_RR⁻¹`` for
    ``0 ≤ μ < θ``, so ``S(μ)`` lies below the Schur complement ``K_LL − μ − K_LR (K_RR − μ)⁻¹ K_RL``,
    and by Haynsworth's inertia additivity (``K_RR − μ ≻ 0``) the number of eigenvalues of ``K``
    below ``μ`` is at most the number of negative eigenvalues of ``S(μ)`` (Weyl). The negative
    eigenvalues are counted from ``eigvalsh`` with a round-off margin (an eigenvalue within
    ``8 ℓ u ‖S(μ)‖`` of zero counts as negative), on a grid tested at once — no loop to compile:
    64 geometric points plus ``mu_lo`` and ``mu_must`` (the value the caller needs), then 16
    points between each bound and the next grid point; each bound is within a factor
    ``(θ/mu_lo)^{1/1024}`` of the grid-free one. ``mu_lo`` where nothing holds. Rows and columns
    of unused slots carry a diagonal above ``θ`` and no coupling: they add no negative eigenvalue.
    """
    dtype = k_ll.dtype
    ell = k_ll.shape[0]
    u = jnp.finfo(dtype).eps
    tiny = jnp.finfo(dtype).tiny
    eye = jnp.eye(ell, dtype=dtype)
    finite = jnp.isfinite(theta)
    top = jnp.max(jnp.diagonal(k_ll))
    theta_c = jnp.where(finite, theta, 2.0 * top + 1.0)  # no complement: the Schur complement is K_LL
    hi = jnp.where(finite, theta_c * (1.0 - 1e-12), theta_c)
    mu_lo = jnp.minimum(mu_lo, hi)
    lo = jnp.maximum(mu_lo, hi * 1e-30 + tiny)

    def negatives(mu):
        """Number of (possibly) negative eigenvalues of ``S(μ)`` at each point of ``mu`` (any shape)."""
        factor = jnp.where(finite, theta_c / jnp.maximum(theta_c - mu, 1e-12 * theta_c), 1.0)
        s = k_ll - mu[..., None, None] * eye - factor[..., None, None] * g_upper
        ev = jnp.linalg.eigvalsh(s)
        margin = 8.0 * ell * u * jnp.max(jnp.abs(ev), axis=-1, keepdims=True)
        return jnp.sum(ev <= margin, axis=-1)

    grid = jnp.exp(jnp.linspace(jnp.log(lo), jnp.log(hi), 64))
    grid = jnp.concatenate([jnp.stack([mu_lo, jnp.minimum(mu_must, hi)]), grid[:-1]])
    neg = negatives(grid)
    allowed = jnp.arange(ell)  # bound j (0-based) tolerates j negative eigenvalues
    ok = neg[None, :] <= allowed[:, None]  # (ℓ, grid)
    coarse = jnp.max(jnp.where(ok, grid[None, :], mu_lo), axis=1)
    # refine between each bound and the next grid point above it
    above = jnp.where(grid[None, :] > coarse[:, None], grid[None, :], hi)
    nxt = jnp.min(above, axis=1)
    frac = jnp.linspace(0.0, 1.0, 18)[1:-1]
    fine = jnp.exp(jnp.log(jnp.maximum(coarse, tiny))[:, None] * (1.0 - frac) + jnp.log(nxt)[:, None] * frac)
    fine = jnp.minimum(fine, hi)
    fine_ok = negatives(fine) <= allowed[:, None]
    bounds = jnp.maximum(coarse, jnp.max(jnp.where(fine_ok, fine, mu_lo), axis=1))
    return jax.lax.cummax(bounds)
