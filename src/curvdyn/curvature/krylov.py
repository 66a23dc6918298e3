"""Matrix-free exact directions for every full-curvature rule: preconditioned CG on the map-space
kernel, fractional powers by rational approximation, a checked error in parameter space, warm starts.

The direction is ``Ĵᵀ f(K) vec(ΔS)`` (DESIGN.md, the map-space identity) with
``f(λ) = gain · (λ + s)^{−α}``, α = 1/q ∈ (0, 1], ``s ≥ 0`` (LM damping or the damping of
damped-ngd). This module never forms ``K``: it applies ``K + σ`` in the eigenbasis of its
Kronecker-sum lower bound (:mod:`curvdyn.curvature.precond`), where the preconditioner is a
diagonal, and it solves

* α = 1 (``ngd``, ``damped-ngd``, LM-damped NGD): one preconditioned CG solve of ``(K + s) Λ = ΔS``;
* α < 1 (``sqrt-ngd``, ``frac-ngd``, with or without LM damping): ``(λ + s)^{−α}`` by a rational
  approximation ``Σ_j W_j / (λ + s + σ_j) (+ a polynomial)`` on ``[λ_lo + s, λ_hi + s]``
  (:mod:`curvdyn.curvature.rational`): one preconditioned CG solve per pole, each with the
  exactly shifted preconditioner ``M̃_{s+σ_j}``, from the largest shift down, each started from
  the last step's solution for that pole (warm start) or from the previous pole's (continuation).

Why this (development measurements of the first implementation, not re-run by a benchmark
script; the reproduced numbers are in benchmarks/README.md, "Matrix-free exact directions"):

* CG on ``K`` rather than LSQR/Craig on ``Ĵ``: the preconditioner lives in map space, and PCG
  with it is preconditioned Craig; the accuracy that Craig buys (conditioning of ``J``, not of
  ``J²``) is recovered by **refinement with the structured residual** ``r = ΔS − Ĵ d − σ Λ``
  computed from the parameter-space direction ``d`` (accumulated as ``d += Ĵᵀ δ``), never from
  ``K Λ``: plain PCG (residual recurrences in ``K``) stalls at ``≈ u cond(K)`` (1.9e-8 at N = 64,
  d = 4, Xavier, cond(K) = 2.9e10), refined PCG reaches 5e-11 against an extended-precision
  solve — where the eigh path was at 8.6e-8 before its own refinement
  (:mod:`curvdyn.curvature.refine`; refined, it is at ~1e-13 for the power-one rules).
* Rational approximation with shifted solves rather than Lanczos for ``f(K) b``: Lanczos needs
  ``O(sqrt(cond K))`` products (thousands here) and cannot use the preconditioner; each shifted
  system takes the exactly shifted Kronecker-sum preconditioner, and the large shifts converge
  in a handful of iterations. Recycling earlier solutions (Galerkin on the previous poles'
  solutions) saved 25 %, continuation 8 %; the warm start along a trajectory saves most.

**The error estimate.** Each solve's error ``e`` in parameter space obeys
``‖Ĵᵀ e‖² ≤ eᵀ(K + σ)e = r̃ᵀ(K̃ + σG)⁻¹ r̃ ≤ r̃ᵀ M̃'⁻¹ r̃`` with ``M̃' ⪯ K̃ + σG`` the (floored)
preconditioner, evaluated from the explicit structured residual. The reported relative error
estimate of the direction ``D`` is

    (δ_rat (‖D‖ + E) + E) / ‖D‖ + floor + coupling,   E = Σ_j W_j ‖Ĵᵀ e_j‖ bound,

``δ_rat`` the verified uniform relative error of the rational approximation on an interval that
holds the spectrum (certified below), ``floor`` the round-off of forming ``D`` from map-space
solutions (``≈ u ‖Ĵ‖ Σ_j W_j ‖Λ_j‖ / ‖D‖``: it lies in the null space of ``Ĵ``, where no residual
sees it; it is the ``u cond(J)`` conditioning of the least-squares problem that any method
has), and ``coupling`` the first-order effect of treating the null set ``Z`` as exactly null
(``sqrt(η̃ λ_hi)/λ_lo``, zero for exactly null directions up to round-off). Each solve stops
when its share of ``tol`` is met; the shares use a lower bound of ``‖D‖`` (the partial sums of
the positively correlated pole contributions), so the final estimate meets ``tol`` whenever the
solves converge.

**The cutoff zone** (pseudo-inverse rules: eigenvalues ``λ ≤ rcond · λ_max`` count as zero). The
matrix-free path applies ``f`` exactly on a *certified* interval and cuts only the null set
``Z`` (coordinates where ``K`` is provably below the cutoff; ``Ĵᵀ`` annihilates exact null
directions anyway, and ``Z`` is projected out of the right-hand side so that round-off there
is not amplified). It returns its answer only when every other eigenvalue is certified to lie
above ``rcond · λ_hi ≥ rcond · λ_max``: then both paths apply the same function. ``λ_hi`` is the
smaller of two certified bounds (:mod:`curvdyn.curvature.precond`): Weyl's on the Kronecker sum
and the block-norm bound, which is within 1e-6 of ``λ_max`` once the modes have grown (Weyl's is
8–14 % above it there, and an eigenvalue at 1.03–1.12 · ``rcond · λ_max`` then could not be told
from the cutoff: the widened Fig. 3 run fell back to eigh at such points). The certificate
is the lower bound ``K̃ ⪰ M̃_0`` on the complement ``W`` of ``Z``, and where that is too weak
(Xavier weights from N ≈ 64 on; small random weights once the modes grow, where several
coordinates of ``M̃_0`` lie far below ``K``) a Schur-complement certificate on the ``ℓ`` lowest
coordinates of ``M̃_0`` (``ℓ = sqrt(n_d n_0) / 2`` within ``[4, SCHUR_MAX = 32]``, :func:`schur_size`;
:func:`curvdyn.curvature.precond.schur_lower_bounds`, lower bounds of ``λ_1 … λ_{ℓ+1}`` from the inertia of an ``ℓ × ℓ`` matrix on a grid; the ``ℓ``
solves with the complement block run vectorized and are refined with the structured residual
``(Ĵ d)_R``, ``d = Ĵᵀ(e_l − y_l)`` in parameter space).

**Deflation.** The candidates ``[v_j; −K_RR⁻¹ K_RL v_j]`` (``v_j`` the eigenvectors of the
approximate ``ℓ × ℓ`` Schur complement), orthonormalized (``G``-orthonormal for Σ ≠ I: ``K``'s
eigenvectors are those of the pencil ``(K̃, G)``), are cut when ``K`` provably has
``k ≤ DEFL_MAX = 4`` eigenvalues in the zone and no more: ``tr(Q_kᵀ K Q_k) = ‖Ĵᵀ Q_k‖_F² ≤
rcond · λ_max_lo`` (Courant–Fischer: ``k`` eigenvalues at or below it; ``λ_max_lo`` from a few
power steps; ``Ĵᵀ q`` evaluated in parameter space, with its round-off) and the
certified ``λ_{k+1} > rcond · λ_hi``; at most one ``k`` satisfies both. The direction then solves
with ``K + γ Q_k Q_kᵀ`` (``γ = λ_hi / 2``) on the right-hand side with ``Q_k Q_kᵀ b`` removed, as the
eigh path cuts the eigenvectors, with the preconditioner ``M̃ + t γ Q_k Q_kᵀ`` (Woodbury; still
``⪯`` the operator, and without it CG stalls on the deflated directions). With ``V_1`` the span of
``K``'s ``k`` lowest eigenvectors and ``s`` a bound of ``sin Θ(Q_k, V_1)`` — the smaller of
``‖Ĵᵀ Q_k‖_F / sqrt(β)`` (``K ⪰ β`` off ``V_1``) and Davis–Kahan ``‖K Q_k − Q_k H_k‖_F / (β − tr H_k)``,
``β`` the certified ``λ_{k+1}`` — the deflated operator's spectrum lies in
``[β (1 − s² γ/(γ − β)), λ_hi (1 + s²) + τ]`` (for a unit ``x`` with ``p = ‖Q_k x‖``:
``xᵀ K x + γ p² ≥ β (1 − (p + s)²) + γ p²``, minimal at ``p = β s / (γ − β)``), the interval the
rational approximation covers; the first-order effect of the angle on the direction,
``s (1 + ‖b_cut‖ max φ / ‖D‖)``, is added to the estimate. That bound cannot fall below
``≈ u ‖K‖ / β`` in float64 (the residual's round-off), far above the tolerance when ``β`` is
``1e-12 λ_max`` (measured: 5e-5 … 6e-3 along the widened Fig. 3 trajectory, while the answer
agrees with the eigh path to 6e-10 … 9e-8): such directions are *converged* but not *certified*
(``error_estimate > tol``) and are kept with a warning, as the round-off floor is. Eigenvalues
that may lie in the zone otherwise — neither side proven — make the direction *uncertified*;
callers then fall back to the eigh path with a warning (an eigenvalue at ``rcond · λ_max``
itself). Damped rules (``s > 0``) have no cutoff and need no certificate.

Everything is traceable (``jax.jit``, ``jax.vmap``): loops are ``lax.while_loop``/``lax.scan``,
the pole tables are host constants selected by index, the eigendecompositions are chained with
:func:`~curvdyn.curvature.spectral.order_after`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from curvdyn.curvature import precond as pc
from curvdyn.curvature._mapspace_ops import _pullback
from curvdyn.curvature.diagnostics import DirectionInfo, bound_info
from curvdyn.curvature.mapspace import mapspace_direction, mapspace_direction_info
from curvdyn.curvature.rational import rational_table, scaled_terms, select_tier
from curvdyn.curvature.spectral import SpectralFunction, _sym, order_after
from curvdyn.network import Weights, outer_products
from curvdyn.task import Task

#: Default relative error tolerance of the direction (parameter space), by dtype.
DEFAULT_KRYLOV_TOL = 1e-10
DEFAULT_KRYLOV_TOL_F32 = 1e-4
#: Default cap on the CG iterations of one solve.
DEFAULT_KRYLOV_MAXITER = 3000
#: Largest map size ``n_d n_0`` for which compiled loops (``simulate``) carry the eigh fallback
#: in the program (its ``K`` is 128 MiB here); beyond it an uncertified direction is used and
#: counted, and ``simulate`` warns.
IN_GRAPH_FALLBACK_MAX_MAP = 4096
#: Refinement passes with the structured residual per solve.
_MAX_REFINE = 3
#: Share of the tolerance for the solves (the rest: rational error, round-off floor).
_SOLVE_SHARE = 0.3
#: The rational approximation's target error, as a fraction of the tolerance.
_RATIONAL_SHARE = 0.2
#: Safety factor of the round-off floor estimate (the spread of two association orders of the
#: pull-back; tests/test_krylov.py checks the estimate against extended precision).
_FLOOR_C = 8.0
#: Weight of M̃ in the floored preconditioner t M̃ + (1 − t) λ_lo (when the Schur bound is used).
_FLOOR_T = 0.9
#: Most eigenvectors deflated (static: every CG iteration applies them, deflated or not; at
#: N = 32 on the widened Fig. 3 trajectory 16 slots cost 1.3–1.6× the time of one, 4 about 1.2×,
#: and at most 2 were needed). More eigenvalues in the zone make the direction uncertified.
DEFL_MAX = 4


def default_krylov_tol(dtype) -> float:
    """1e-10 for float64, 1e-4 for float32 (relative, parameter space)."""
    return DEFAULT_KRYLOV_TOL_F32 if jnp.dtype(dtype) == jnp.float32 else DEFAULT_KRYLOV_TOL


class KrylovInfo(NamedTuple):
    """What one matrix-free direction did.

    Attributes:
      iterations: CG iterations over all solves (poles, refinements, certificate).
      error_estimate: the relative error estimate of the direction in parameter space (see the
        module docstring); ``inf`` when uncertified.
      certified: ``error_estimate ≤ tol`` (the tolerance is met).
      converged: every solve met its share of the tolerance or stopped at its round-off floor,
        and the spectrum is certified to avoid the cutoff zone; False means the answer must not
        be used (callers fall back to the eigh path).
      cutoff_certified: the spectrum outside the null set is certified above ``rcond · λ_hi``
        (always True for damped rules).
      lam_lo, lam_hi: the certified interval of the spectrum of ``K`` used (outside the null set).
      null_dim: size of the null set ``Z`` (coordinates treated as exactly null).
      poles: shifted solves used (1 for α = 1).
      floor: the round-off floor part of the estimate.
      fallback: the eigh path produced the returned direction.
    """

    iterations: jax.Array
    error_estimate: jax.Array
    certified: jax.Array
    converged: jax.Array
    cutoff_certified: jax.Array
    lam_lo: jax.Array
    lam_hi: jax.Array
    null_dim: jax.Array
    poles: jax.Array
    floor: jax.Array
    fallback: jax.Array


class KrylovState(NamedTuple):
    """Warm-start state: the last solution of every pole slot, in whitened map coordinates
    ``Λ̃`` (shape ``(slots, n_d, n_0)``), and whether it holds one."""

    lam: jax.Array
    valid: jax.Array


def krylov_slots(f: SpectralFunction, tol: float) -> int:
    """Number of pole slots of the warm-start state for ``f`` at tolerance ``tol`` (static)."""
    if f.power >= 1.0:
        return 1
    return int(rational_table(f.power, _RATIONAL_SHARE * tol).poles.shape[1])


def krylov_init_state(ws: Weights, task: Task, f: SpectralFunction, tol: float | None = None) -> KrylovState:
    """An empty warm-start state (cold start) for these shapes."""
    dtype = ws[0].dtype
    tol = default_krylov_tol(dtype) if tol is None else float(tol)
    n_out, n_in = ws[-1].shape[-2], ws[0].shape[-1]
    return KrylovState(jnp.zeros((krylov_slots(f, tol), n_out, n_in), dtype), jnp.asarray(False))


# ---------------------------------------------------------------------------------------
# preconditioned CG in a frame
# ---------------------------------------------------------------------------------------


def _dot(x, y):
    return jnp.sum(x * y)


def _pcg(op, prec_inv, rhs, x0, target_sq, maxiter):
    """PCG for ``op(x) = rhs`` with the preconditioner ``prec_inv``: a diagonal (0 on masked
    entries) or a function applying the inverse preconditioner.

    Stops once ``rᵀ M⁻¹ r ≤ target_sq(x, r)`` on the recursive residual (the caller checks the
    explicit one). Returns ``(x, iterations, rz)``.
    """
    apply_prec = prec_inv if callable(prec_inv) else (lambda r: prec_inv * r)
    r0 = rhs - op(x0)
    z0 = apply_prec(r0)
    rz0 = _dot(r0, z0)

    def cond(st):
        x, r, _, rz, k = st
        return (k < maxiter) & (rz > target_sq(x, r)) & (rz > 0)

    def body(st):
        x, r, p, rz, k = st
        ap = op(p)
        pap = _dot(p, ap)
        alpha = jnp.where(pap > 0, rz / jnp.where(pap > 0, pap, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        z = apply_prec(r)
        rz_new = _dot(r, z)
        beta = jnp.where(rz > 0, rz_new / jnp.where(rz > 0, rz, 1.0), 0.0)
        return x, r, z + beta * p, rz_new, k + 1

    x, _, _, rz, k = jax.lax.while_loop(cond, body, (x0, r0, z0, rz0, jnp.asarray(0)))
    return x, k, rz


# ---------------------------------------------------------------------------------------
# the problem at one point
# ---------------------------------------------------------------------------------------


class _Problem(NamedTuple):
    a: tuple
    bt: tuple  # whitened right products B̃_i = B_i E
    p: jax.Array  # (d, n_d, n_d)
    qt: jax.Array  # (d, n_0, n_0) whitened Q̃_i
    rhs: jax.Array  # b̃ = ΔE (whitened ΔS)
    g: jax.Array | None  # shift metric diag(1/s²), None for Σ = I
    wh: pc.Whitening
    alpha: jax.Array
    u: jax.Array
    f0: pc.Frame  # frame at σ = 0
    lam_hi: jax.Array
    lam_max_lo: jax.Array
    layer_scale: jax.Array  # sqrt(Σ_i ‖A_i‖² ‖B̃_i‖²) ≥ ‖Ĵ̃‖ (bounded): round-off scale of products with Ĵ


def _setup(ws: Weights, task: Task) -> _Problem:
    dtype = ws[0].dtype
    a, b = outer_products(ws)
    wh = pc.whitening(task, dtype)
    bt = pc.whitened_right(b, wh)
    p = _sym(jnp.stack([a_i @ a_i.T for a_i in a]))
    qt = _sym(jnp.stack([b_i.T @ b_i for b_i in bt]))
    delta = ws[-1] @ b[-1] - task.target
    rhs = delta if wh.e is None else delta @ wh.e
    g = pc.shift_metric(wh, dtype)
    alpha, u = pc.left_basis(p, after=wh.e)
    f0 = pc.frame(p, qt, alpha, u, jnp.asarray(0.0, dtype), g, after=u)
    gamma0 = f0.m[0] - alpha[0]
    lam_hi, lam_max_lo = pc.spectrum_bounds(p, qt, alpha, gamma0, wh)
    lam_hi = jnp.minimum(lam_hi, pc.block_norm_bound(a, bt, wh))
    scale = jnp.sqrt(jnp.sum(pc.psd_norm_bound(p) * pc.psd_norm_bound(qt)))
    prob = _Problem(a, bt, p, qt, rhs, g, wh, alpha, u, f0, lam_hi, lam_max_lo, scale)
    return prob._replace(lam_max_lo=jnp.maximum(lam_max_lo, _top_rayleigh(prob)))


#: Power iterations for the lower bound of λ_max(K) (it sets the cutoff's lower end).
_POWER_STEPS = 8


def _top_rayleigh(prob: _Problem):
    """A lower bound of ``λ_max(K)``: the Rayleigh quotient ``‖Ĵᵀ Λ‖² / ‖Λ‖²`` (``= x̃ᵀK̃x̃ / x̃ᵀGx̃``)
    after a few power steps from the frame coordinate of the largest diagonal of ``K̃`` (already
    ``≥ α_max + γ_max``), evaluated in parameter space and lowered by its round-off. It narrows
    the band ``(rcond · λ_max_lo, rcond · λ_hi]`` where an eigenvalue can be proven neither cut
    nor kept (the Kronecker-sum lower bound alone is a factor ~2 below λ_max on small weights)."""
    f0 = prob.f0
    kd = pc.kernel_diagonal(f0)
    x = (kd >= jnp.max(kd)).astype(kd.dtype)
    x = x / jnp.sqrt(_dot(x, x))

    def step(_, x):
        y = pc.apply_frame(f0, x)
        return y / jnp.maximum(jnp.sqrt(_dot(y, y)), jnp.finfo(kd.dtype).tiny)

    x = jax.lax.fori_loop(0, _POWER_STEPS, step, x)
    lam_t = f0.u @ x @ f0.v.T
    num = _tree_norm(_pull(prob, lam_t)) ** 2
    den = _dot(_metric(prob, lam_t), lam_t)
    return num / jnp.maximum(den, jnp.finfo(kd.dtype).tiny) * (1.0 - 1e3 * jnp.finfo(kd.dtype).eps)


def _pull(prob: _Problem, lam_t):
    """``Ĵᵀ Λ`` for ``Λ = Λ̃ Cᵀ``: ``{A_iᵀ Λ̃ B̃_iᵀ}``."""
    return _pullback(prob.a, prob.bt, lam_t)


def _fwd(prob: _Problem, d):
    """``Ĵ d C`` in whitened coordinates: ``Σ_i A_i d_i B̃_i``."""
    out = prob.a[0] @ d[0] @ prob.bt[0]
    for a_i, d_i, b_i in zip(prob.a[1:], d[1:], prob.bt[1:]):
        out = out + a_i @ d_i @ b_i
    return out


def _metric(prob: _Problem, lam_t):
    """``Λ̃ G`` (the shift's metric in whitened coordinates)."""
    return lam_t if prob.g is None else lam_t * prob.g[None, :]


def _tree_norm(d):
    return jnp.sqrt(sum(jnp.sum(x * x) for x in d))


def _tree_axpy(a, x, y):
    return tuple(a * xi + yi for xi, yi in zip(x, y))


# ---------------------------------------------------------------------------------------
# spectral certificates
# ---------------------------------------------------------------------------------------


class _Spectrum(NamedTuple):
    zmask: jax.Array  # (n_d, n_0) bool: exact null set Z in the σ = 0 frame
    null_dim: jax.Array  # dim Z + number of deflated eigenvectors
    coupling: jax.Array  # bound of ‖K̃_{Z,·}‖_F (whitened): the rows of the exact null set
    lam_lo_t: jax.Array  # certified lower bound of the kept spectrum (whitened: of K̃ + deflation)
    lam_lo: jax.Array  # certified lower bound of the kept spectrum of K (+ deflation), original units
    lam_hi: jax.Array  # certified upper bound of the (deflated) operator's spectrum (original units)
    improved: jax.Array  # the Schur bound raised lam_lo_t above min_W m_0
    cutoff_ok: jax.Array
    iterations: jax.Array
    defl: jax.Array  # (DEFL_MAX, n_d, n_0) deflation vectors Q̃ in the σ = 0 frame, G-orthonormal (zero when unused)
    defl_g: jax.Array  # (DEFL_MAX, n_d, n_0) G Q̃ (= Q̃ for Σ = I)
    defl_gamma: jax.Array  # the shift γ of the deflated operator K + γ Q Qᵀ (K̃ + γ (GQ̃)(GQ̃)ᵀ)
    defl_angle: jax.Array  # bound of sin of the angle between their span and K's eigenvectors there


def schur_size(n_map: int) -> int:
    """Number ``ℓ`` of low coordinates of the Schur certificate (static): ``sqrt(n_map) / 2``
    within ``[4, SCHUR_MAX]`` (so its ``ℓ × ℓ`` grid problems and ``ℓ`` map-sized vectors stay far
    below the size of ``K``), and less than ``n_map`` (one coordinate stays in the complement)."""
    return max(0, min(pc.SCHUR_MAX, max(4, math.isqrt(n_map) // 2), n_map - 1))


def _spectrum(prob: _Problem, f: SpectralFunction, maxiter: int) -> _Spectrum:
    dtype = prob.rhs.dtype
    f0 = prob.f0
    n_map = f0.m.size
    u = jnp.finfo(dtype).eps
    tiny = jnp.finfo(dtype).tiny
    ell = schur_size(n_map)
    s2min, s2max = prob.wh.s_min**2, prob.wh.s_max**2
    lam_hi_t = prob.lam_hi / s2max
    n_vec = min(DEFL_MAX, max(ell, 1))
    no_defl = jnp.zeros((n_vec,) + f0.m.shape, dtype)
    zero_d = jnp.asarray(0.0, dtype)
    zero = jnp.asarray(0, jnp.int32)
    if f.shift > 0:
        # damped rules: no cutoff; the whole spectrum [0, λ_hi] is approximated
        lo = jnp.maximum(jnp.min(f0.m), 0.0)
        false = jnp.zeros(f0.m.shape, bool)
        return _Spectrum(
            false,
            zero,
            zero_d,
            lo,
            s2min * lo,
            prob.lam_hi,
            jnp.asarray(False),
            jnp.asarray(True),
            zero,
            no_defl,
            no_defl,
            zero_d,
            zero_d,
        )
    rcond = f.cutoff(dtype)
    tau_lo = rcond * prob.lam_max_lo
    tau_hi = rcond * prob.lam_hi
    kd = pc.kernel_diagonal(f0)
    # the exact null set: a diagonal under the cutoff and a coupling to the rest at round-off
    # level (bottlenecks, exact null spaces); near-null coordinates with a real coupling are left
    # to the Schur step, which deflates K's eigenvectors there
    rows = pc.pair_row_norms(f0)
    zmask = (kd <= tau_lo / (s2max * n_map)) & (rows <= 1e3 * u * lam_hi_t)
    coupling = pc.null_rows_norm(f0, zmask)
    m_w = jnp.where(zmask, jnp.inf, f0.m)
    lo_m = jnp.min(m_w)
    tau_t = tau_hi / s2min  # the cutoff in whitened units
    clear = tau_t * (1.0 + 1e3 * u)  # a bound above this clears the cutoff's upper end
    need = lo_m <= clear
    if ell == 0:
        zd = jnp.sum(zmask)
        return _Spectrum(
            zmask,
            zd,
            coupling,
            lo_m,
            s2min * lo_m,
            prob.lam_hi,
            jnp.asarray(False),
            ~need,
            zero,
            no_defl,
            no_defl,
            zero_d,
            zero_d,
        )
    # --- Schur complement on the ℓ lowest coordinates L of W --------------------------------
    neg_low, idx = jax.lax.top_k(-m_w.reshape(-1), ell + 1)
    low = -neg_low  # ascending
    theta_l = pc.SCHUR_GAP * tau_t
    active = (low[:ell] < theta_l) & need
    enough = low[ell] >= theta_l  # the complement sits above the gap
    ncol = f0.m.shape[1]
    r_idx, c_idx = idx[:ell] // ncol, idx[:ell] % ncol
    theta = jnp.minimum(jnp.min(jnp.where(active, jnp.inf, low[:ell])), low[ell])
    lmask = jnp.zeros(f0.m.shape, bool).at[r_idx, c_idx].set(active)
    rmask = ~(zmask | lmask)
    prec_r = jnp.where(rmask, 1.0 / jnp.where(rmask, f0.m, 1.0), 0.0)

    def op_r(x):
        return jnp.where(rmask, pc.apply_frame(f0, jnp.where(rmask, x, 0.0)), 0.0)

    both = active[:, None] & active[None, :]
    k_ll = jnp.diag(jnp.where(active, f0.m[r_idx, c_idx], 0.0))
    if f0.ph.shape[0]:
        sub_p = f0.ph[:, r_idx][:, :, r_idx]
        sub_q = f0.qh[:, c_idx][:, :, c_idx]
        k_ll = k_ll + jnp.where(both, jnp.einsum("iab,iab->ab", sub_p, sub_q), 0.0)
    units = jnp.zeros((ell,) + f0.m.shape, dtype).at[jnp.arange(ell), r_idx, c_idx].set(active.astype(dtype))

    def to_map(x):
        return f0.u @ x @ f0.v.T

    # round-off level of ‖Ĵᵀ e‖ for an error e of unit size: the solves stop there
    floor_sq = (4.0 * u * prob.layer_scale) ** 2

    def solve_one(e_l, on):
        """``y ≈ K_RR⁻¹ K_RL e_l``, refined with the structured residual ``(Ĵ d)_R``,
        ``d = Ĵᵀ(e_l − y)`` accumulated in parameter space (so the candidate ``e_l − y`` is a null
        vector of ``Ĵᵀ`` up to round-off where ``K`` has one: the deflation needs that)."""
        c = jnp.where(rmask, pc.apply_frame(f0, e_l), 0.0)
        mx = jnp.where(on, maxiter, 0)

        def structured(d):
            r = jnp.where(rmask, f0.u.T @ _fwd(prob, d) @ f0.v, 0.0)
            return r, jnp.maximum(_dot(r, prec_r * r), 0.0)

        d0 = _pull(prob, to_map(e_l))
        r0, e0 = structured(d0)

        def cond(st):
            _y, _d, _r, e2, _k, n, prev = st
            return on & (n <= _MAX_REFINE) & (e2 > floor_sq) & (e2 < 0.25 * prev)

        def body(st):
            y, d, r, e2, k, n, _ = st
            # each pass: 1e-12 of its start in rᵀM̃⁻¹r (reachable before the recursive residual
            # stalls), at least the round-off level
            target = lambda x, rr: jnp.maximum(1e-12 * e2, floor_sq)
            delta, kk, _ = _pcg(op_r, prec_r, r, jnp.zeros_like(r), target, mx)
            y = y + delta
            d = tuple(di - ci for di, ci in zip(d, _pull(prob, to_map(delta))))
            r2, e2_new = structured(d)
            return y, d, r2, e2_new, k + kk, n + 1, e2

        st = (jnp.zeros_like(c), d0, r0, e0, jnp.asarray(0), jnp.asarray(0), jnp.asarray(jnp.inf, dtype))
        y, _, r, err2, k, _, _ = jax.lax.while_loop(cond, body, st)
        return c, y, jnp.maximum(_dot(y, c - r), 0.0), err2, k

    # all slots in one vectorized loop; inactive ones (all, when M̃_0 already clears the cutoff)
    # take no iteration
    cs, ys, energy, err2, ks = jax.vmap(solve_one)(units, active)
    gk = _sym(jnp.einsum("lab,kab->lk", cs, ys))
    # G − gk = Cᵀ K_RR⁻¹ R (R the explicit residuals): |entry lk| ≤ sqrt(G_ll) sqrt(r_kᵀ M̃⁻¹ r_k),
    # sqrt(G_ll) ≤ sqrt(y_lᵀ K y_l) + sqrt(r_lᵀ M̃⁻¹ r_l); plus the round-off of the ℓ × ℓ entries
    g_diag = (jnp.sqrt(energy) + jnp.sqrt(err2)) ** 2
    delta_f = jnp.sqrt(jnp.sum(g_diag) * jnp.sum(err2))
    delta_f = delta_f + 4.0 * u * n_map * (jnp.max(jnp.abs(k_ll)) + jnp.max(g_diag))
    big = 2.0 * jnp.where(jnp.isfinite(theta), theta, jnp.max(f0.m) + lam_hi_t + 1.0)
    k_ll_pad = k_ll + jnp.diag(jnp.where(active, 0.0, big))
    g_up = jnp.where(both, gk, 0.0) + delta_f * jnp.eye(ell, dtype=dtype)
    # certified lower bounds of λ_1 … λ_ℓ (inertia of the ℓ × ℓ Schur complement on a grid), and
    # of λ_{ℓ+1} (at most ℓ eigenvalues of K_W lie below θ)
    bounds = pc.schur_lower_bounds(k_ll_pad, g_up, theta, jnp.maximum(lo_m, 0.0), clear)
    usable = need & enough & jnp.any(active)
    n_active = jnp.sum(active)
    beyond = jnp.where(jnp.isfinite(theta), theta * (1.0 - 1e-12), lam_hi_t)
    lam_next = jnp.where(usable, jnp.maximum(jnp.concatenate([bounds, beyond[None]]), lo_m), lo_m)  # (ℓ+1,)
    # --- deflation: eigenvectors of K whose eigenvalues are certainly under the cutoff ----------
    # In whitened coordinates K's eigenvectors are those of the pencil (K̃, G): Λ = Λ̃ Cᵀ has
    # ‖Λ‖² = Λ̃ᵀ G Λ̃ and ‖Ĵᵀ Λ‖² = Λ̃ᵀ K̃ Λ̃, and K + γ Q Qᵀ (Q orthonormal) becomes
    # K̃ + γ (G Q̃)(G Q̃)ᵀ with Q̃ G-orthonormal. In the frame, Λ̃ ↦ Λ̃ G is X̂ ↦ X̂ Vᵀ diag(g) V.
    if prob.g is None:
        g_half = g_half_inv = None
    else:
        g_half = f0.v.T @ (jnp.sqrt(prob.g)[:, None] * f0.v)
        g_half_inv = f0.v.T @ (f0.v / jnp.sqrt(prob.g)[:, None])

    def right(x, mat):
        return x if mat is None else x @ mat

    # candidates from the eigenvectors v_j of the approximate Schur complement K_LL − G: the
    # vectors [v_j; −K_RR⁻¹ K_RL v_j] (K̃ applied to them is [(K_LL − G) v_j; 0]); unused slots
    # sit above every active eigenvalue, so the first n_active are the active ones
    s0 = jnp.where(both, k_ll - gk, 0.0)
    s0 = s0 + jnp.diag(jnp.where(active, 0.0, 2.0 * jnp.sum(jnp.abs(s0)) + 1.0))
    _, v = jnp.linalg.eigh(s0)
    # (the first DEFL_MAX of them: the deflation takes at most that many)
    cand = right(jnp.einsum("lj,lab->jab", v[:, :n_vec], units - ys), g_half).reshape(n_vec, -1)
    q, _ = jnp.linalg.qr(cand.T)  # (n_map, k): span of the first k columns = span of z_1 … z_k
    q = right(q.T.reshape((n_vec,) + f0.m.shape), g_half_inv)  # G-orthonormal
    q = jnp.where(zmask[None], 0.0, q)
    gq = right(right(q, g_half), g_half)  # G Q̃
    # Ĵᵀ q_j in parameter space (accurate to round-off: ‖Ĵᵀ q‖² is not formed from K products),
    # with its round-off estimated from two association orders of the pull-back
    jq = jax.vmap(lambda x: _pull(prob, to_map(x)))(q)
    jq_alt = jax.vmap(lambda x: tuple(a_i.T @ (to_map(x) @ b_i.T) for a_i, b_i in zip(prob.a, prob.bt)))(q)
    jq_norm = jnp.sqrt(sum(jnp.sum(x * x, axis=(1, 2)) for x in jq))
    jq_err = _FLOOR_C * jnp.sqrt(sum(jnp.sum((x - y) ** 2, axis=(1, 2)) for x, y in zip(jq, jq_alt)))
    jq_err = jq_err + 4.0 * u * (jq_norm + prob.layer_scale)
    # for each prefix k (k vectors): tr(Q_kᵀ K Q_k) = ‖Ĵᵀ Q_k‖_F² ≥ λ_max(Q_kᵀ K Q_k) ≥ λ_k(K)
    # (Courant–Fischer: then K has k eigenvalues at or below it)
    trace = jnp.cumsum((jq_norm + jq_err) ** 2)
    # k vectors deflate when K has k eigenvalues in the zone (under the cutoff's lower end) and
    # λ_{k+1} is certified above its upper end; at most one k ∈ {0, …, ℓ} can satisfy both
    in_zone = (trace <= tau_lo) & usable & (jnp.arange(1, n_vec + 1) <= n_active)
    cleared = lam_next[: n_vec + 1] > clear  # λ_{k+1}(K̃) certified above the cutoff, k = 0 … DEFL_MAX
    fits = jnp.concatenate([jnp.asarray([True]), in_zone]) & cleared
    n_defl = jnp.argmax(fits).astype(jnp.int32)  # 0 when none fits (then cutoff_ok is False)
    cutoff_ok = jnp.any(fits)
    beta = s2min * lam_next[n_defl]  # λ_{k+1}(K) ≥ s_min² λ_{k+1}(K̃) (Ostrowski)
    # sin Θ(span Q_k, K's k lowest eigenvectors V_1), two bounds: ‖Q_1 Q_k‖_F² ≤ ‖Ĵᵀ Q_k‖_F² / β
    # (K ⪰ β off V_1), and Davis–Kahan ‖R_k‖_F / (β − λ_max(H_k))
    pad = jnp.zeros((1,), dtype)
    t_k = jnp.concatenate([pad, trace])[n_defl]
    # ‖K Q_k − Q_k H_k‖_F for the chosen k (original units: the covector K̃Q̃ − GQ̃H times G^{-1/2}),
    # plus the round-off of the products with K (≈ u ‖K‖ per vector)
    sel = jnp.arange(n_vec) < n_defl
    kq = jax.vmap(lambda x: pc.apply_frame(f0, x))(jnp.where(sel[:, None, None], q, 0.0))
    h = _sym(jnp.einsum("jab,kab->jk", q, kq))
    res = right(kq - jnp.einsum("ij,iab->jab", jnp.where(sel[:, None] & sel[None, :], h, 0.0), gq), g_half_inv)
    res = jnp.where(sel[:, None, None], res, 0.0)
    r_k = jnp.sqrt(jnp.sum(res * res)) + 4.0 * u * prob.lam_hi * jnp.sqrt(n_defl.astype(dtype))
    sin_w = jnp.sqrt(t_k / jnp.maximum(beta, tiny))
    sin_dk = r_k / jnp.maximum(beta - t_k, tiny)
    sin_t = jnp.where(n_defl > 0, jnp.minimum(sin_w, sin_dk), 0.0)
    # the spectrum of K + γ Q_k Q_kᵀ: ≥ β (1 − sin² γ/(γ − β)), ≤ λ_hi (1 + sin²) + τ (γ = λ_hi/2;
    # see the module docstring); in whitened units K̃ + γ (GQ̃)(GQ̃)ᵀ ⪰ that / s_max²
    gamma = 0.5 * prob.lam_hi
    kept_k = beta * (1.0 - sin_t**2 * gamma / jnp.maximum(gamma - beta, tiny))
    lam_kept_k = jnp.where(n_defl > 0, jnp.maximum(kept_k, 0.0), s2min * lam_next[0])
    lam_kept = jnp.where(n_defl > 0, lam_kept_k / s2max, lam_next[0])
    # (the lower bound holds for γ > β; with sin Θ < 1/2 and γ > 2β it is at least β/2; the cutoff
    # itself is about K's eigenvalues: λ_{k+1}(K) ≥ β cleared it)
    valid = (n_defl == 0) | ((sin_t < 0.5) & (gamma > 2.0 * beta))
    cutoff_ok = cutoff_ok & valid
    lam_hi = jnp.where(n_defl > 0, prob.lam_hi * (1.0 + sin_t**2) + tau_lo, prob.lam_hi)
    defl = jnp.where(sel[:, None, None], q, 0.0)
    defl_g = jnp.where(sel[:, None, None], gq, 0.0)
    improved = lam_kept > lo_m
    return _Spectrum(
        zmask,
        jnp.sum(zmask) + n_defl,
        coupling,
        lam_kept,
        lam_kept_k,
        lam_hi,
        improved,
        cutoff_ok,
        jnp.sum(ks),
        defl,
        defl_g,
        gamma,
        sin_t,
    )


# ---------------------------------------------------------------------------------------
# one shifted solve, refined with the structured residual
# ---------------------------------------------------------------------------------------


def _deflated_prec(inv_diag, defl, weight):
    """``r ↦ (D + w Q Qᵀ)⁻¹ r`` (Woodbury; ``D = 1/inv_diag``, ``Q`` = ``defl``, the rows ``G q_j``
    or zero), and the round-off allowance of ``rᵀ (D + w Q Qᵀ)⁻¹ r`` relative to ``rᵀ D⁻¹ r``.

    With ``D ⪯ K̃ + σG`` and ``w ≤ γ`` the deflated preconditioner stays a lower bound of the
    deflated operator ``K̃ + σG + γ Q Qᵀ``, so the error bounds hold; without the ``w Q Qᵀ`` term
    the preconditioner would put the deflated directions (where ``D`` is tiny and the operator
    is ``≈ γ``) at a condition number of ``γ / D``, and CG would stall.
    """
    if defl is None:
        return (lambda r: inv_diag * r), 0.0
    w = inv_diag[None] * defl
    used = jnp.einsum("jab,jab->j", defl, defl) > 0.0
    core = _sym(jnp.einsum("jab,kab->jk", defl, w))
    core = core + jnp.diag(jnp.where(used, 1.0 / weight, 1.0))
    core_inv = jnp.linalg.inv(core)

    def apply(r):
        return inv_diag * r - jnp.einsum("jab,j->ab", w, core_inv @ jnp.einsum("jab,ab->j", w, r))

    return apply, 8.0 * defl.shape[0] * jnp.finfo(inv_diag.dtype).eps


def _solve(prob: _Problem, fr: pc.Frame, sigma, prec_inv, x0_hat, target_fn, maxiter, defl=None, gamma=0.0, weight=0.0):
    """Solve ``(K̃ + σG + γ Σ_j z_j z_jᵀ) Λ̃ = b̃`` in frame ``fr`` (``z_j`` = ``defl``, deflated
    eigenvectors, ``None``: none); refine with the structured residual. The preconditioner is
    the diagonal ``1/prec_inv`` plus ``weight · Σ_j z_j z_jᵀ`` (``weight ≤ γ``).

    ``target_fn(d_norm)`` gives the absolute target of ``‖Ĵᵀ e‖`` from the current direction norm.
    Returns ``(x_hat, d, bound, iterations, ok)`` with ``d = Ĵᵀ Λ`` accumulated in parameter
    space, ``bound`` the certified bound of ``‖Ĵᵀ e‖`` from the explicit structured residual, and
    ``ok`` whether the target (or the round-off floor of the bound) was reached.
    """
    dtype = prob.rhs.dtype
    u = jnp.finfo(dtype).eps

    def deflation(x):
        if defl is None:
            return 0.0
        return gamma * jnp.einsum("j,jab->ab", jnp.einsum("jab,ab->j", defl, x), defl)

    def op(x):
        return pc.apply_frame(fr, x) + deflation(x)

    prec, slack = _deflated_prec(prec_inv, defl, weight)

    def structured(x, d):
        lam_t = fr.u @ x @ fr.v.T
        r_t = prob.rhs - _fwd(prob, d) - sigma * _metric(prob, lam_t)
        r_hat = fr.u.T @ r_t @ fr.v - deflation(x)
        # (the Woodbury form cancels: its round-off, relative to the undeflated value, is added)
        bound = jnp.sqrt(jnp.maximum(_dot(r_hat, prec(r_hat)), 0.0) + slack * _dot(r_hat, prec_inv * r_hat))
        # round-off level of the residual: the bound cannot certify below it
        noise = (
            4.0
            * u
            * (
                jnp.sqrt(_dot(prob.rhs, prob.rhs))
                + prob.layer_scale * _tree_norm(d)
                + sigma * jnp.sqrt(_dot(_metric(prob, lam_t), _metric(prob, lam_t)))
            )
        )
        noise = noise * jnp.sqrt(jnp.mean(prec_inv))
        return r_hat, bound, noise

    # every pass solves for the correction of the explicit structured residual (pass 0 from the
    # start x0 — zero, or the warm start — so the first solve is one of the passes)
    d = _pull(prob, fr.u @ x0_hat @ fr.v.T)
    r_hat, bound, noise = structured(x0_hat, d)

    def rcond(st):
        _x, d, _r_hat, bound, noise, _its, n, prev = st
        t = target_fn(_tree_norm(d) - bound)
        return (n <= _MAX_REFINE) & (bound > t) & (bound > 30.0 * noise) & (bound < 0.5 * prev)

    def rbody(st):
        x, d, r_hat, bound, _noise, its, n, _ = st
        base = _tree_norm(d)

        def target_sq(y, r):
            # ‖Ĵᵀδ‖² = δᵀ(K̃)δ = δᵀ(r̂ − r) − σ δᵀGδ (recursive); the direction's norm is at
            # least |‖d‖ − ‖Ĵᵀδ‖|
            gy = y if prob.g is None else fr.u.T @ (fr.u @ y @ fr.v.T * prob.g[None, :]) @ fr.v
            e = jnp.sqrt(jnp.maximum(_dot(y, r_hat - r) - sigma * _dot(y, gy), 0.0))
            return (0.7 * target_fn(jnp.abs(base - e))) ** 2

        delta, k, _ = _pcg(op, prec, r_hat, jnp.zeros_like(x), target_sq, maxiter)
        x = x + delta
        d = tuple(di + ci for di, ci in zip(d, _pull(prob, fr.u @ delta @ fr.v.T)))
        r_hat2, bound2, noise2 = structured(x, d)
        return x, d, r_hat2, bound2, noise2, its + k, n + 1, bound

    st = (x0_hat, d, r_hat, bound, noise, jnp.asarray(0), jnp.asarray(0), jnp.asarray(jnp.inf, dtype))
    x, d, r_hat, bound, noise, its, _, _ = jax.lax.while_loop(rcond, rbody, st)
    t = target_fn(_tree_norm(d) - bound)
    ok = (bound <= t) | (bound <= 30.0 * noise)
    return x, d, bound, its, ok


# ---------------------------------------------------------------------------------------
# the direction
# ---------------------------------------------------------------------------------------


def _prec_inv(m, sp: _Spectrum, sigma, g_min, frame_is_base):
    """The floored diagonal preconditioner ``1/(t m + (1−t)(λ̃_lo + σ g_min))`` (``t = 1`` without
    the Schur bound; ``K̃ + σG ⪰`` both terms), 0 on the null set in the base frame."""
    floor = sp.lam_lo_t + sigma * g_min
    t = jnp.where(sp.improved, _FLOOR_T, 1.0)
    mm = t * m + (1.0 - t) * floor
    mm = jnp.maximum(mm, jnp.finfo(m.dtype).tiny)
    inv = 1.0 / mm
    if frame_is_base:
        inv = jnp.where(sp.zmask, 0.0, inv)
    return inv


def _krylov(ws: Weights, task: Task, f: SpectralFunction, tol: float, maxiter: int, state: KrylovState | None):
    prob = _setup(ws, task)
    dtype = prob.rhs.dtype
    u = jnp.finfo(dtype).eps
    sp = _spectrum(prob, f, maxiter)
    s = jnp.asarray(f.shift, dtype)
    identity = prob.g is None
    g_min = 1.0 / prob.wh.s_max**2
    lam_lo = sp.lam_lo
    lam_hi = sp.lam_hi
    # project the null set out of the right-hand side (exact null directions: annihilated by Ĵᵀ)
    # and the deflated eigenvectors (cut, as the eigh path cuts them: b − Q Qᵀ b, in whitened
    # coordinates b̃ − G Q̃ Q̃ᵀ b̃)
    f0 = prob.f0
    if f.shift == 0:
        rhs_hat0 = f0.u.T @ prob.rhs @ f0.v
        kept = jnp.where(sp.zmask, 0.0, rhs_hat0) if identity else rhs_hat0
        coef = jnp.einsum("jab,ab->j", sp.defl, kept)
        kept = kept - jnp.einsum("j,jab->ab", coef, sp.defl_g)
        rhs_w = f0.u @ kept @ f0.v.T
        b_zz = jnp.maximum(_dot(rhs_hat0, rhs_hat0) - _dot(jnp.where(sp.zmask, 0.0, rhs_hat0), rhs_hat0), 0.0)
        b_z = jnp.sqrt((b_zz if identity else 0.0) + _dot(coef, coef))
        prob = prob._replace(rhs=rhs_w)
    else:
        b_z = jnp.asarray(0.0, dtype)
    # deflation (pseudo-inverse rules): K + γ Q Qᵀ moves the cut eigenvalues to ≈ γ
    use_defl = f.shift == 0

    def defl_in(fr):
        """The deflation vectors G Q̃ in the frame ``fr`` (``None``: no deflation)."""
        if not use_defl:
            return None
        return sp.defl_g if identity else sp.defl_g @ (f0.v.T @ fr.v)

    gamma = sp.defl_gamma
    # the deflated preconditioner's weight: the floored diagonal is t M̃ + (1 − t) λ̃_lo, and
    # t (M̃ + γ (GQ̃)(GQ̃)ᵀ) ⪯ t (K̃ + γ (GQ̃)(GQ̃)ᵀ)
    defl_weight = gamma * jnp.where(sp.improved, _FLOOR_T, 1.0)
    slots = krylov_slots(f, tol)
    if state is None:
        state = KrylovState(jnp.zeros((slots,) + prob.rhs.shape, dtype), jnp.asarray(False))

    def frame_for(sigma, after, static_zero=False):
        if identity:
            return pc.shifted(f0, sigma), True
        if static_zero:  # σ = 0: the base frame, where the null set is a set of coordinates
            return f0, True
        return pc.frame(prob.p, prob.qt, prob.alpha, prob.u, sigma, prob.g, after=after), False

    if f.power >= 1.0:
        # ---- α = 1: one solve of (K + s) Λ = b -------------------------------------------
        fr, base = frame_for(s, f0.v, static_zero=f.shift == 0)
        pinv = _prec_inv(fr.m, sp, s, g_min, base and f.shift == 0 and identity)
        x0 = jnp.where(state.valid, fr.u.T @ state.lam[0] @ fr.v, 0.0)
        target_fn = lambda dn: _SOLVE_SHARE * tol * jnp.maximum(dn, 0.0) / (1.0 + tol)
        x, d, bound, its, ok = _solve(prob, fr, s, pinv, x0, target_fn, maxiter, defl_in(fr), gamma, defl_weight)
        lam_t = fr.u @ x @ fr.v.T
        new_state = KrylovState(lam_t[None], jnp.asarray(True))
        dnorm = _tree_norm(d)
        solve_err = bound
        map_mass = jnp.sqrt(_dot(lam_t, lam_t))
        rat_err = jnp.asarray(0.0, dtype)
        n_poles = jnp.asarray(1)
        all_ok = ok
        direction = d
    else:
        # ---- α < 1: rational approximation, one shifted solve per pole --------------------
        table = rational_table(f.power, _RATIONAL_SHARE * tol)
        x_lo = lam_lo + s
        x_hi = lam_hi + s
        kappa = x_hi / jnp.maximum(x_lo, jnp.finfo(dtype).tiny)
        tier = select_tier(table, kappa)
        poles, weights, poly, count, rat_err = scaled_terms(table, tier, x_hi, dtype)
        shifts = s + poles  # (λ + s + x_hi t_j)⁻¹: a shift of K by s + x_hi t_j
        tier_ok = jnp.asarray(table.kappas, dtype)[tier] >= kappa
        rat_err = jnp.where(tier_ok, rat_err, jnp.inf)
        # a lower bound of ‖D‖: exact for α = 1/2, Σ = I, s = 0 (‖b_W‖); else from ‖g‖² = bᵀKb
        lam_b = _metric_inv(prob, prob.rhs)
        gnorm2 = _energy(prob, f0, lam_b)
        ends = jnp.stack([lam_lo, lam_hi])
        phi = jnp.min(ends * (ends + s) ** (-2.0 * f.power))
        d_lo = jnp.sqrt(jnp.maximum(phi * gnorm2 / lam_hi, 0.0))
        if f.power == 0.5 and identity and f.shift == 0:
            d_lo = jnp.maximum(d_lo, jnp.sqrt(_dot(prob.rhs, prob.rhs)))
        d_lo = d_lo * (1.0 - jnp.minimum(rat_err, 0.5))
        n_active = count.astype(dtype)

        def pole(carry):
            j, x_prev, d_acc, lam_acc, err_acc, its_acc, ok_acc, lam_store, mass = carry
            sigma = shifts[j]
            w = weights[j]
            fr, base = frame_for(sigma, x_prev)
            pinv = _prec_inv(fr.m, sp, sigma, g_min, base and f.shift == 0 and identity)
            lam_prev = lam_store[j]
            cold = fr.u.T @ x_prev @ fr.v
            warm = fr.u.T @ lam_prev @ fr.v
            x0 = jnp.where(state.valid, warm, cold)
            d_now = jnp.maximum(d_lo, _tree_norm(d_acc) - err_acc)
            target_fn = lambda dn: _SOLVE_SHARE * tol * d_now / (n_active * w) / (1.0 + tol)
            x, d, bound, its, ok = _solve(
                prob, fr, sigma, pinv, x0, target_fn, maxiter, defl_in(fr), gamma, defl_weight
            )
            lam_t = fr.u @ x @ fr.v.T
            d_acc = _tree_axpy(w, d, d_acc)
            return (
                j - 1,
                lam_t,
                d_acc,
                lam_acc + w * lam_t,
                err_acc + w * bound,
                its_acc + its,
                ok_acc & ok,
                lam_store.at[j].set(lam_t),
                mass + w * jnp.sqrt(_dot(lam_t, lam_t)),
            )

        zero_d = tuple(jnp.zeros_like(x) for x in _pull(prob, jnp.zeros_like(prob.rhs)))
        carry0 = (
            count - 1,
            jnp.zeros_like(prob.rhs),
            zero_d,
            jnp.zeros_like(prob.rhs),
            jnp.asarray(0.0, dtype),
            jnp.asarray(0),
            jnp.asarray(True),
            state.lam,
            jnp.asarray(0.0, dtype),
        )
        _, _, d_acc, lam_acc, solve_err, its, all_ok, lam_store, map_mass = jax.lax.while_loop(
            lambda c: c[0] >= 0, pole, carry0
        )
        # the polynomial part Σ_k C_k (K + s)^k b (trapezoid tables), in whitened coordinates
        if np.any(table.poly):
            term = _metric_inv(prob, prob.rhs)
            lam_poly = poly[0] * term
            for k in range(1, poly.shape[0]):
                term = _apply_k(prob, f0, term) + s * term
                lam_poly = lam_poly + poly[k] * term
            d_acc = tuple(a + b for a, b in zip(d_acc, _pull(prob, lam_poly)))
            lam_acc = lam_acc + lam_poly
            map_mass = map_mass + jnp.sqrt(_dot(lam_poly, lam_poly))
        new_state = KrylovState(lam_store, jnp.asarray(True))
        direction = d_acc
        dnorm = _tree_norm(d_acc)
        n_poles = count
        all_ok = all_ok & tier_ok
    gain = jnp.asarray(f.gain, dtype)
    direction = tuple(gain * x for x in direction)
    tiny = jnp.finfo(dtype).tiny
    dsafe = jnp.maximum(dnorm, tiny)
    # round-off of forming D from map-space solutions, estimated from the difference of the two
    # association orders of the pull-back of the combined solution, scaled to the pole sum
    lam_all = lam_t if f.power >= 1.0 else lam_acc
    alt = tuple(a_i.T @ (lam_all @ b_i.T) for a_i, b_i in zip(prob.a, prob.bt))
    ref = _pull(prob, lam_all)
    spread = _tree_norm(tuple(x - y for x, y in zip(alt, ref)))
    mass_ratio = map_mass / jnp.maximum(jnp.sqrt(_dot(lam_all, lam_all)), tiny)
    floor = _FLOOR_C * (spread + u * _tree_norm(ref)) * mass_ratio / dsafe
    # first-order effect of treating Z as exactly null: ‖K_ZW‖ / λ_lo (in original units)
    s2max_c = prob.wh.s_max**2
    phi_max = jnp.maximum(lam_lo ** (0.5 - f.power), lam_hi ** (0.5 - f.power)) if f.shift == 0 else 0.0
    coupling = sp.coupling * s2max_c / jnp.maximum(lam_lo, tiny) * (1.0 + b_z * phi_max / dsafe)
    coupling = jnp.where(jnp.sum(sp.zmask) > 0, coupling, 0.0)
    # the deflated directions are K's eigenvectors to within the angle bound: first-order effect
    coupling = coupling + sp.defl_angle * (1.0 + b_z * phi_max / dsafe)
    estimate = (rat_err * (dnorm + solve_err) + solve_err) / dsafe + floor + coupling
    # whitening changes the metric: with Σ ≠ I the pseudo-inverse on a singular K (a null set)
    # is not the whitened one, and a (nearly) singular Σ cannot be whitened — both fall back
    metric_ok = jnp.asarray(True)
    if not identity:
        metric_ok = (jnp.sum(sp.zmask) == 0) & (prob.wh.s_min > 1e-6 * prob.wh.s_max)
    converged = all_ok & sp.cutoff_ok & metric_ok & jnp.isfinite(estimate)
    estimate = jnp.where(converged, estimate, jnp.inf)
    info = KrylovInfo(
        iterations=its + sp.iterations,
        error_estimate=estimate,
        certified=estimate <= tol,
        converged=converged,
        cutoff_certified=sp.cutoff_ok,
        lam_lo=lam_lo,
        lam_hi=lam_hi,
        null_dim=sp.null_dim,
        poles=n_poles,
        floor=floor,
        fallback=jnp.asarray(False),
    )
    return direction, info, new_state


def _metric_inv(prob: _Problem, x):
    """``X G⁻¹`` (whitened coordinates of the map ``b`` whose whitened right-hand side is ``X``)."""
    return x if prob.g is None else x / prob.g[None, :]


def _apply_k(prob: _Problem, f0: pc.Frame, lam_t):
    """``K`` (original operator) in whitened coordinates: ``Λ̃ ↦ K̃(Λ̃) G⁻¹``."""
    kx = f0.u @ pc.apply_frame(f0, f0.u.T @ lam_t @ f0.v) @ f0.v.T
    return _metric_inv(prob, kx)


def _energy(prob: _Problem, f0: pc.Frame, lam_t):
    """``‖Ĵᵀ Λ‖² = Λ̃ᵀ K̃ Λ̃``."""
    x = f0.u.T @ lam_t @ f0.v
    return jnp.maximum(_dot(x, pc.apply_frame(f0, x)), 0.0)


def _gradient_only(ws, task, f, state):
    from curvdyn.network import gradient

    dtype = ws[0].dtype
    zero, one = jnp.asarray(0.0, dtype), jnp.asarray(True)
    info = KrylovInfo(jnp.asarray(0), zero, one, one, one, zero, zero, jnp.asarray(0), jnp.asarray(0), zero, ~one)
    return tuple(f.gain * g for g in gradient(ws, task)), info, state


def _with_fallback(ws, task, f, direction, info: KrylovInfo, dinfo: DirectionInfo | None = None):
    """Replace an unconverged direction (and, given, its :class:`DirectionInfo`) by the eigh
    path's, inside the compiled function.

    Written as a while loop that runs at most once so that, under ``vmap``, the eigh path runs
    only when some member needs it (a ``lax.cond`` would run both sides for every member).
    """

    def body(st):
        ws_after = tuple(order_after(w, info.error_estimate) for w in ws)
        if dinfo is None:
            return jnp.asarray(False), tuple(mapspace_direction(ws_after, task, f)), None
        out, eigh_info = mapspace_direction_info(ws_after, task, f)
        return jnp.asarray(False), tuple(out), eigh_info

    need = ~info.converged
    _, out, dinfo = jax.lax.while_loop(lambda st: st[0], body, (need, tuple(direction), dinfo))
    return out, info._replace(fallback=need), dinfo


def as_direction_info(info: KrylovInfo, f: SpectralFunction) -> DirectionInfo:
    """The :class:`~curvdyn.curvature.DirectionInfo` of a matrix-free direction: its error
    estimate (``inf`` when uncertified), ``n_cut`` the coordinates it cut (null set and deflated
    eigenvectors), ``cond`` the certified bound ``(λ_hi + s)/(λ_lo + s)`` of the kept spectrum's
    condition number; the cut eigenvalues are not measured (``largest_cut``, ``cut_effect`` 0:
    only eigenvalues proven under the cutoff are cut) and there is no eigen-residual (NaN)."""
    dtype = info.error_estimate.dtype
    s = jnp.asarray(f.shift, dtype)
    cond = (info.lam_hi + s) / jnp.maximum(info.lam_lo + s, jnp.finfo(dtype).tiny)
    base = bound_info(info.error_estimate)
    return base._replace(n_cut=info.null_dim.astype(base.n_cut.dtype), cond=cond.astype(dtype))


def krylov_direction(
    ws: Weights,
    task: Task,
    f: SpectralFunction,
    *,
    tol: float | None = None,
    maxiter: int = DEFAULT_KRYLOV_MAXITER,
    state: KrylovState | None = None,
    fallback: bool = False,
):
    """The exact direction ``gain · Ĵᵀ (K + s)^{−α} vec(ΔS)`` (pseudo-inverse power for s = 0),
    matrix-free, with its :class:`KrylovInfo`.

    Args:
      ws, task: the network and the task.
      f: the rule's :class:`~curvdyn.curvature.SpectralFunction` (``power`` = α ∈ (0, 1]).
      tol: relative error tolerance in parameter space (default :func:`default_krylov_tol`).
      maxiter: cap on the CG iterations of each solve.
      state: warm-start state (:func:`krylov_init_state`); with it, the new state is returned too.
      fallback: compute the eigh (map-space) direction in place of an unconverged one, inside
        the compiled function (``info.fallback`` says when). Off by default: the caller can then
        fall back outside (no eigendecomposition of ``K`` in the compiled program).

    Returns:
      ``(direction, info)``, or ``(direction, info, new_state)`` when ``state`` is given.
    """
    if not 0.0 <= f.power <= 1.0:
        raise ValueError(f"the krylov method needs 0 <= power <= 1 (q >= 1), got power {f.power}")
    tol = default_krylov_tol(ws[0].dtype) if tol is None else float(tol)
    if not 0.0 < tol < 0.1:
        raise ValueError(f"krylov tolerance must be in (0, 0.1), got {tol}")
    if f.power == 0.0:  # (K + s)^0 = 1: the gradient (q = ∞ with LM damping)
        direction, info, new_state = _gradient_only(ws, task, f, state)
    else:
        direction, info, new_state = _krylov(ws, task, f, tol, int(maxiter), state)
    if fallback:
        direction, info, _ = _with_fallback(ws, task, f, direction, info)
    if state is None:
        return direction, info
    return direction, info, new_state


def krylov_direction_info(
    ws: Weights,
    task: Task,
    f: SpectralFunction,
    *,
    tol: float | None = None,
    maxiter: int = DEFAULT_KRYLOV_MAXITER,
    state: KrylovState | None = None,
    fallback: bool = False,
):
    """:func:`krylov_direction` with the :class:`~curvdyn.curvature.DirectionInfo` of the path
    that produced the direction (:func:`as_direction_info`; the eigh path's own diagnostics for
    a member that fell back in the program).

    Returns:
      ``(direction, direction_info, info)``, or ``(direction, direction_info, info, new_state)``
      when ``state`` is given.
    """
    got = krylov_direction(ws, task, f, tol=tol, maxiter=maxiter, state=state, fallback=False)
    direction, info = got[0], got[1]
    dinfo = as_direction_info(info, f)
    if fallback:
        direction, info, dinfo = _with_fallback(ws, task, f, direction, info, dinfo)
    if state is None:
        return direction, dinfo, info
    return direction, dinfo, info, got[2]


__all__ = [
    "DEFAULT_KRYLOV_MAXITER",
    "DEFAULT_KRYLOV_TOL",
    "DEFAULT_KRYLOV_TOL_F32",
    "IN_GRAPH_FALLBACK_MAX_MAP",
    "KrylovInfo",
    "KrylovState",
    "as_direction_info",
    "default_krylov_tol",
    "krylov_direction",
    "krylov_direction_info",
    "krylov_init_state",
    "krylov_slots",
]
