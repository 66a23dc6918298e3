"""The Gauss–Newton matrix H₊ and exact spectral functions of it, several ways.

``H₊ = Jᵀ (I ⊗ Σ) J`` (paper eq. 3) for the map Jacobian ``J: ẇ ↦ Σ_i A_i ẇ_i B_i``. Every
curvature-corrected rule applies a spectral function ``f`` of ``H₊`` (or of its diagonal
blocks ``H_i = (B_i Σ B_iᵀ) ⊗ (A_iᵀ A_i)``) to the gradient. This module computes
``f(H₊) g`` exactly by

* ``dense``: the explicit ``P × P`` matrix ``H₊`` (one row and column per parameter, in the
  order of :func:`curvdyn.network.flatten_weights`: layer 1 first, each layer row-major) and
  its eigendecomposition — the paper's own method, O(P³) time, O(P²) memory;
* ``mapspace``: the map-space identity (DESIGN.md). With ``S = Σ^{1/2}``,
  ``Ĵ = (I ⊗ S) J`` and the kernel ``K = Ĵ Ĵᵀ``, ``K(Λ) = Σ_i (A_i A_iᵀ) Λ (S B_iᵀ B_i S)``,

      f(H₊) g = Ĵᵀ f(K) vec(Δ S),  i.e.  direction_i = A_iᵀ Λ S B_iᵀ,  Λ = f(K)(Δ S),

  valid for any f with ``f(λ)·λ^{1/2}`` → 0 on the null space (all rules here): the
  eigenproblem has the map's size ``n_d n_0`` whatever the hidden widths. ``K`` is built
  from the Gram matrices ``P_i = A_i A_iᵀ`` and ``Q_i = S B_iᵀ B_i S`` in one fused pass
  (nothing larger than ``K`` is formed, nothing of size ``P``), and eigendecomposed:
  O((n_d n_0)³) time, O((n_d n_0)²) memory, plus O(P · min(n_0, n_d)) for the products;
* ``kronsum``: for d = 2 and Σ = I, ``K = (w_2 w_2ᵀ) ⊕ (w_1ᵀ w_1)`` is a Kronecker sum whose
  eigenpairs come from two small eigendecompositions: O(N³);
* ``balanced``: when all ``P_i`` commute with each other and all ``Q_i`` with each other
  (balanced weights ``w_i w_iᵀ = w_{i+1}ᵀ w_{i+1}`` with Σ = I, aligned weights, d = 1), one
  orthonormal basis ``U`` of ℝ^{n_d} and one ``V`` of ℝ^{n_0`` diagonalize every Gram, so
  ``K`` is diagonal in ``U ⊗ V`` with eigenvalues ``κ_ab = Σ_i (UᵀP_iU)_aa (VᵀQ_iV)_bb``:
  O(d (n_d³ + n_0³)). ``U``, ``V`` are eigenvectors of ``Σ_i P_i``, ``Σ_i Q_i``. The method
  trusts the declaration; :func:`shared_basis_error` measures how far it holds;
* ``balanced-checked``: the ``balanced`` path when its first-order error estimate
  (:func:`shared_basis_error`) is at most ``balance_tol``, else the shape's exact fallback
  (``mapspace`` or ``dense``), decided at run time inside the compiled function;
* ``cg`` (damped rules only, ``f(λ) = gain/(λ + shift)``, shift > 0): conjugate gradients
  on ``(K + shift) Λ = gain · Δ S`` with the matrix-free product
  ``Λ ↦ Σ_i P_i Λ Q_i``; it stops on the guaranteed bound
  ``‖Λ − Λ_k‖ ≤ ‖r_k‖ / shift`` at a user tolerance and reports its iterations
  (:func:`cg_direction`);
* for the diagonal blocks, ``kronecker`` (eigendecompositions of the layer factors
  ``A_iᵀA_i`` and ``B_iΣB_iᵀ``, O(Σ n_i³)), ``mapspace`` (of the Grams ``A_iA_iᵀ``,
  ``S B_iᵀB_i S``; the same nonzero spectra, size n_d and n_0) and ``dense`` (the explicit
  block).

Everything here is traceable (``jax.jit``/``jax.vmap``); the method choice is static
(shapes and dtypes only), except inside ``balanced-checked``, which branches with
``lax.cond`` (a real branch under ``jit``; both sides run under ``vmap``).

Precision: computations run in the dtype of the weights and the task (float64 by default;
see :func:`astype` for float32). The pseudo-inverse cutoff ``rcond`` and the balance tolerance
have dtype-aware defaults (:func:`default_rcond`, :func:`default_balance_tol`).

Vectorization is row-major throughout: ``vec(P Λ Q) = (P ⊗ Qᵀ) vec(Λ)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from curvdyn.network import (
    Weights,
    flatten_weights,
    gradient,
    network_map,
    outer_products,
    unflatten_weights,
    widths_of,
)
from curvdyn.task import Task

#: Default relative eigenvalue cutoff: eigenvalues ``λ ≤ rcond · λ_max`` count as zero. It sits
#: a safe factor above the round-off floor of a float64 symmetric eigensolver
#: (≈ dim · 2.2e-16 · λ_max) for operators up to dimension ~1e4, and below any eigenvalue
#: whose eigenvector float64 can resolve.
DEFAULT_RCOND = 1e-13

#: The float32 counterpart of :data:`DEFAULT_RCOND`. Float32 eigensolvers resolve eigenvalues
#: only down to about ``dim · 1.2e-7 · λ_max``; below ``1e-5 · λ_max`` the eigenpairs of a
#: float32 eigendecomposition are round-off, and inverting them would amplify noise.
DEFAULT_RCOND_F32 = 1e-5

#: Defaults of :func:`default_rcond` by dtype (others: ``500 · eps`` of the dtype).
_RCOND_BY_DTYPE = {np.dtype(np.float64): DEFAULT_RCOND, np.dtype(np.float32): DEFAULT_RCOND_F32}

#: Default ``balance_tol`` of the ``balanced-checked`` path: the largest first-order relative
#: error estimate (:func:`shared_basis_error`) at which the shared-basis eigenvalues are used.
DEFAULT_BALANCE_TOL = 1e-10
DEFAULT_BALANCE_TOL_F32 = 1e-4


def default_rcond(dtype) -> float:
    """The default relative cutoff for computations in ``dtype``.

    ``1e-13`` (:data:`DEFAULT_RCOND`) for float64, ``1e-5`` (:data:`DEFAULT_RCOND_F32`) for
    float32, ``500 · eps`` for other floating types.
    """
    dtype = np.dtype(dtype)
    if dtype in _RCOND_BY_DTYPE:
        return _RCOND_BY_DTYPE[dtype]
    return float(500 * jnp.finfo(dtype).eps)


def effective_rcond(rcond: Optional[float], dtype) -> float:
    """The cutoff actually applied in ``dtype``.

    ``rcond`` values are float64 values by convention: ``None`` or the float64 default
    :data:`DEFAULT_RCOND` (what every rule carries unless the user sets ``rcond``) mean "the
    default for this dtype" (:func:`default_rcond`), so a float32 computation cuts at
    ``1e-5 · λ_max``. Any other value is applied as given, in every dtype.
    """
    if rcond is None or rcond == DEFAULT_RCOND:
        return default_rcond(dtype)
    return float(rcond)


def default_balance_tol(dtype) -> float:
    """Default tolerance of ``balanced-checked``: 1e-10 for float64, 1e-4 for float32."""
    dtype = np.dtype(dtype)
    if dtype == np.dtype(np.float64):
        return DEFAULT_BALANCE_TOL
    if dtype == np.dtype(np.float32):
        return DEFAULT_BALANCE_TOL_F32
    return float(1000 * jnp.finfo(dtype).eps)


def astype(ws, task: Task, dtype) -> tuple[Weights, Task]:
    """Cast weights and task to ``dtype`` (e.g. ``jnp.float32``): how a user asks for float32.

    ``ws32, task32 = curvdyn.astype(ws, task, jnp.float32)``; every direction and simulation
    of ``(ws32, task32)`` then runs in float32 (with the float32 cutoff :data:`DEFAULT_RCOND_F32`
    unless a rule sets ``rcond`` explicitly). Mixing float32 weights with a float64 task
    promotes to float64.
    """
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating type, got {dtype}")
    ws = tuple(jnp.asarray(w, dtype=dtype) for w in ws)
    task = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype=dtype), task)
    return ws, task


@dataclasses.dataclass(frozen=True)
class SpectralFunction:
    """``f(λ) = gain · (λ + shift)^{−power}``, with a pseudo-inverse cutoff when ``shift = 0``.

    With ``shift = 0``, eigenvalues ``λ ≤ rcond · λ_max`` map to 0 (the pseudo-inverse power
    on the range of the operator). ``power = 0`` is the projection on the range. ``rcond`` is
    resolved per dtype by :func:`effective_rcond` (the float64 default becomes
    :data:`DEFAULT_RCOND_F32` in float32).
    """

    power: float
    shift: float = 0.0
    gain: float = 1.0
    rcond: float = DEFAULT_RCOND

    def cutoff(self, dtype) -> float:
        """The relative cutoff applied to eigenvalues of ``dtype``."""
        return effective_rcond(self.rcond, dtype)

    def __call__(self, evals: jax.Array, max_eval: jax.Array) -> jax.Array:
        evals = jnp.maximum(evals, 0.0)
        if self.shift > 0:
            return self.gain * (evals + self.shift) ** (-self.power)
        keep = evals > self.cutoff(evals.dtype) * max_eval
        safe = jnp.where(keep, evals, 1.0)
        return jnp.where(keep, self.gain * safe ** (-self.power), 0.0)


def _eigh(m: jax.Array) -> tuple[jax.Array, jax.Array]:
    # Symmetrize first: products like ĴᵀĴ are symmetric only up to round-off.
    return jnp.linalg.eigh(0.5 * (m + m.T))


def _eigh_sym(m: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``eigh`` of a matrix that is exactly symmetric by construction (no extra copy)."""
    return jnp.linalg.eigh(m, symmetrize_input=False)


def order_after(x, dep):
    """``x``, made to depend on ``dep`` (its value unchanged unless ``dep``'s first entry is NaN).

    This orders eigendecompositions (and SVDs) one after another; every module that runs
    several independent ones in one compiled function goes through it. jaxlib 0.10's CPU LAPACK kernels
    split a *batched* call (any ``eigh`` under ``vmap``, e.g. in a batched ``simulate``) into
    chunks on XLA's intra-op thread pool and block until they finish; when as many independent
    batched ``eigh`` calls run concurrently as the pool has threads, every thread waits and the
    process deadlocks (observed on 2 cores; fixed in later jaxlib). A true data dependency
    (XLA:CPU schedules by data flow; an optimization barrier is not enough) keeps at most one
    in flight. Applied to the small inputs (Grams), it costs a pass over them.
    """
    if dep is None:
        return x
    s = jnp.ravel(dep)[0]
    return jnp.where(jnp.isnan(s), s.astype(x.dtype), x)


def _sym(m: jax.Array) -> jax.Array:
    """Exactly symmetric part of a (batch of) small matrices."""
    return 0.5 * (m + jnp.swapaxes(m, -1, -2))


def apply_psd_function(m: jax.Array, f: SpectralFunction, v: jax.Array) -> jax.Array:
    """``f(M) v`` for a symmetric PSD matrix ``M`` (n × n) and ``v`` of shape (n,) or (n, k)."""
    evals, evecs = _eigh(m)
    fv = f(evals, jnp.max(evals))
    return evecs @ (fv[:, None] * (evecs.T @ v)) if v.ndim == 2 else evecs @ (fv * (evecs.T @ v))


def _delta_s(ws: Weights, task: Task, b: Optional[Weights] = None) -> jax.Array:
    """``Δ S``; with the products ``B_i`` at hand the map is ``w_d B_d`` (the same association
    as :func:`~curvdyn.network.network_map`, without recomputing the chain of products)."""
    wmap = network_map(ws) if b is None else ws[-1] @ b[-1]
    delta = wmap - task.target
    return delta if task.identity_cov else delta @ task.sqrt_cov


def _pullback(a: Weights, b: Weights, lam_s: jax.Array) -> Weights:
    """``{A_iᵀ (Λ S) B_iᵀ}_i``, i.e. ``Ĵᵀ vec(Λ)``, given ``Λ S``."""
    return tuple(a_i.T @ lam_s @ b_i.T for a_i, b_i in zip(a, b))


def _pullback_lam(a: Weights, b: Weights, lam: jax.Array, task: Task) -> Weights:
    return _pullback(a, b, lam if task.identity_cov else lam @ task.sqrt_cov)


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
    # Exactly symmetric (cheap, n_d² and n_0² entries): then K is exactly symmetric too and
    # its eigendecomposition needs no symmetrizing copy of K.
    p = jnp.stack([a_i @ a_i.T for a_i in a])
    q = jnp.stack([bs_i.T @ bs_i for bs_i in _right_products(b, task)])
    return _sym(p), _sym(q)


def _kernel_from_grams(p: jax.Array, q: jax.Array) -> jax.Array:
    """``K[(a, b), (c, e)] = Σ_i P_i[a, c] Q_i[b, e]``: one fused broadcast-and-add pass.

    No intermediate is larger than ``K`` (each term is a broadcast that the compiler fuses
    into the sum), so the peak memory is ``K`` itself.
    """
    n_out, n_in = p.shape[1], q.shape[1]
    kernel = p[0][:, None, :, None] * q[0][None, :, None, :]
    for i in range(1, p.shape[0]):
        kernel = kernel + p[i][:, None, :, None] * q[i][None, :, None, :]
    return kernel.reshape(n_out * n_in, n_out * n_in)


def mapspace_grams(ws: Weights, task: Task) -> tuple[jax.Array, jax.Array]:
    """The Gram matrices ``P_i = A_i A_iᵀ`` (d, n_d, n_d) and ``Q_i = S B_iᵀ B_i S`` (d, n_0, n_0)."""
    return _grams(*outer_products(ws), task)


def mapspace_kernel(ws: Weights, task: Task) -> jax.Array:
    """The map-space kernel ``K = Σ_i P_i ⊗ Q_i = Ĵ Ĵᵀ``, shape ``(n_d n_0, n_d n_0)``."""
    return _kernel_from_grams(*mapspace_grams(ws, task))


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


# ---------------------------------------------------------------------------------------
# shared eigenbasis (balanced or aligned weights)
# ---------------------------------------------------------------------------------------


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
    u, v, kappa = basis.u, basis.v, basis.kappa
    fk = f(kappa, jnp.max(kappa))
    lam = u @ ((u.T @ ds @ v) * fk) @ v.T
    return _pullback_lam(a, b, lam, task)


def shared_basis(ws: Weights, task: Task) -> SharedBasis:
    """The shared-eigenbasis description of ``K`` at these weights (see :class:`SharedBasis`)."""
    return _shared_basis(*mapspace_grams(ws, task))


def shared_basis_error(ws: Weights, task: Task, f: Optional[SpectralFunction] = None) -> jax.Array:
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
    """
    a, b = outer_products(ws)
    p, q = _grams(a, b, task)
    return _balanced_from_basis(a, b, _shared_basis(p, q), _delta_s(ws, task, b), task, f)


def checked_direction(
    ws: Weights,
    task: Task,
    f: SpectralFunction,
    fallback: str = "mapspace",
    balance_tol: Optional[float] = None,
) -> Weights:
    """The ``balanced`` direction when its error estimate is ≤ ``balance_tol``, else ``fallback``.

    The test and the branch run inside the compiled function (``lax.cond``): the estimate
    costs O(d (n_d³ + n_0³)), negligible next to either path. ``fallback`` is ``"mapspace"``,
    ``"dense"`` or ``"kronsum"``; ``balance_tol`` defaults to :func:`default_balance_tol` of the dtype.
    """
    a, b = outer_products(ws)
    p, q = _grams(a, b, task)
    ds = _delta_s(ws, task, b)
    basis = _shared_basis(p, q)
    tol = default_balance_tol(ds.dtype) if balance_tol is None else float(balance_tol)
    ok = _basis_error(basis, f) <= tol

    def use_balanced(_):
        return _balanced_from_basis(a, b, basis, ds, task, f)

    def use_fallback(_):
        # (ordered after the basis: under vmap both branches run, see order_after)
        if fallback == "mapspace":
            return _mapspace_from_grams(a, b, p, q, ds, task, f, after=basis.v)
        if fallback == "dense":
            w_after = tuple(order_after(w, basis.v) for w in ws)
            return dense_direction(w_after, task, f, gradient(w_after, task))
        if fallback == "kronsum":
            return kronsum_direction(ws, task, f, after=basis.v)
        raise ValueError(f"unknown fallback {fallback!r}")

    return jax.lax.cond(ok, use_balanced, use_fallback, None)


# ---------------------------------------------------------------------------------------
# matrix-free conjugate gradients for damped rules (f(λ) = gain / (λ + shift), shift > 0)
# ---------------------------------------------------------------------------------------


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


def _kernel_matvec(p: jax.Array, q: jax.Array, x: jax.Array) -> jax.Array:
    """``K(X) = Σ_i P_i X Q_i`` without forming K: O(d (n_d² n_0 + n_d n_0²))."""
    return jnp.einsum("iab,bc,icd->ad", p, x, q)


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


def _two_sided_chain(left, right, x, f, after=None):
    """``f(L ⊗ R)`` applied to X, and the last eigenvector matrix (to order the next call)."""
    l_vals, l_vecs = _eigh(order_after(left, after))
    r_vals, r_vecs = _eigh(order_after(right, l_vecs))
    l_vals, r_vals = jnp.maximum(l_vals, 0.0), jnp.maximum(r_vals, 0.0)
    fv = f(l_vals[:, None] * r_vals[None, :], jnp.max(l_vals) * jnp.max(r_vals))
    return l_vecs @ ((l_vecs.T @ x @ r_vecs) * fv) @ r_vecs.T, r_vecs


def _two_sided(left: jax.Array, right: jax.Array, x: jax.Array, f: SpectralFunction) -> jax.Array:
    """``f(L ⊗ R)`` applied to X as ``ẇ ↦ L ẇ R``: ``U_L [(U_Lᵀ X U_R) ⊙ f(l_a r_b)] U_Rᵀ``."""
    return _two_sided_chain(left, right, x, f)[0]


def block_direction_kronecker(
    ws: Weights, task: Task, f: SpectralFunction, grad: Weights
) -> Weights:
    """``f(H_i) g_i`` for every layer from eigendecompositions of the layer factors."""
    out, token = [], None
    for (left, right), g_i in zip(layer_factors(ws, task), grad):
        o, token = _two_sided_chain(left, right, g_i, f, token)
        out.append(o)
    return tuple(out)


def block_direction_mapspace(ws: Weights, task: Task, f: SpectralFunction) -> Weights:
    """``f(H_i) g_i = A_iᵀ M_i S B_iᵀ`` with ``M_i = f(P_i ⊗ Q_i)(Δ S)``, i = 1..d.

    Since ``g_i = A_iᵀ (Δ S)(B_i S)ᵀ`` and the factors ``A_iᵀA_i``/``A_iA_iᵀ`` (and
    ``B_iΣB_iᵀ``/``S B_iᵀ B_i S``) share their nonzero spectra, the block's spectral function
    moves onto the Grams of size n_d and n_0 exactly (push-through identity).
    """
    a, b = outer_products(ws)
    bs = _right_products(b, task)
    ds = _delta_s(ws, task, b)
    out, token = [], None
    for a_i, bs_i in zip(a, bs):
        m, token = _two_sided_chain(a_i @ a_i.T, bs_i.T @ bs_i, ds, f, token)
        out.append(a_i.T @ m @ bs_i.T)
    return tuple(out)


def block_direction_dense(ws: Weights, task: Task, f: SpectralFunction, grad: Weights) -> Weights:
    """``f(H_i) g_i`` through each explicit block ``H_i`` (reference, O(Σ (n_i n_{i−1})³))."""
    out, token = [], None
    for i, g_i in enumerate(grad, start=1):
        o = apply_psd_function(order_after(block_matrix(ws, task, i), token), f, g_i.reshape(-1)).reshape(g_i.shape)
        token = o
        out.append(o)
    return tuple(out)


# ---------------------------------------------------------------------------------------
# choosing a method (static: depends on shapes only, so it is resolved before tracing)
# ---------------------------------------------------------------------------------------

#: Exact methods for the full H₊ (``cg`` is exact to its stated tolerance, damped rules only).
FULL_METHODS = ("dense", "mapspace", "kronsum", "balanced", "balanced-checked", "cg")
BLOCK_METHODS = ("dense", "mapspace", "kronecker")


def choose_full_method(widths: tuple[int, ...], identity_cov: bool) -> str:
    """The fastest exact method for the full ``H₊`` at these widths, from shapes alone.

    ``kronsum`` for d = 2 with Σ = I (O(N³)); otherwise the smaller eigenproblem: ``mapspace``
    (size ``n_d n_0``) unless the network has fewer parameters than the map has entries
    (``P < n_d n_0``, a narrow bottleneck), where the dense ``H₊`` is the smaller matrix.
    :meth:`curvdyn.rules.Rule.resolve_method` wraps ``mapspace``/``dense`` in the run-time
    shared-basis check (``balanced-checked``) for ``auto``.
    """
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
    nonzero = evals[evals > effective_rcond(None, evals.dtype) * top]
    return top / float(nonzero[0]) if nonzero.size else math.inf
