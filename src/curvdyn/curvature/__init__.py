"""The Gauss–Newton matrix H₊ and exact spectral functions of it, several ways (one module per method).

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
* ``krylov`` (every full rule, :mod:`curvdyn.curvature.krylov`): matrix-free — conjugate
  gradients on ``K + s`` preconditioned by the exactly invertible (and exactly shiftable)
  Kronecker sum of its first and last terms (:mod:`curvdyn.curvature.precond`), fractional
  powers by a rational approximation with one shifted solve per pole
  (:mod:`curvdyn.curvature.rational`), stopped on a checked relative error estimate in parameter
  space (default 1e-10), with warm starts along a trajectory and a fallback to ``mapspace``
  when the estimate or the pseudo-inverse cutoff cannot be certified
  (:func:`krylov_direction`); O(iterations · d N³), nothing of size ``K``;
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

from curvdyn.curvature._mapspace_ops import mapspace_grams, mapspace_kernel
from curvdyn.curvature.balanced import (
    SharedBasis,
    balanced_direction,
    balanced_direction_info,
    checked_direction,
    checked_direction_info,
    shared_basis,
    shared_basis_error,
)
from curvdyn.curvature.blocks import (
    block_direction_dense,
    block_direction_dense_info,
    block_direction_kronecker,
    block_direction_kronecker_info,
    block_direction_mapspace,
    block_direction_mapspace_info,
    block_matrix,
    layer_factors,
)
from curvdyn.curvature.cg import DEFAULT_CG_MAXITER, DEFAULT_CG_TOL, CGInfo, cg_direction, cg_solve
from curvdyn.curvature.choose import (
    BLOCK_METHODS,
    FULL_METHODS,
    KRYLOV_MIN_MAP,
    choose_block_method,
    choose_full_method,
)
from curvdyn.curvature.dense import dense_apply, dense_direction, dense_direction_info, hessian_plus, jacobian_matrix
from curvdyn.curvature.diagnostics import (
    WARN_TOL,
    DirectionInfo,
    bound_info,
    condition_number,
    describe,
    exact_info,
    summarize,
)
from curvdyn.curvature.kronsum import kronsum_direction, kronsum_direction_info
from curvdyn.curvature.krylov import (
    DEFAULT_KRYLOV_MAXITER,
    DEFAULT_KRYLOV_TOL,
    DEFAULT_KRYLOV_TOL_F32,
    IN_GRAPH_FALLBACK_MAX_MAP,
    KrylovInfo,
    KrylovState,
    default_krylov_tol,
    krylov_direction,
    krylov_direction_info,
    krylov_init_state,
)
from curvdyn.curvature.mapspace import mapspace_apply, mapspace_direction, mapspace_direction_info
from curvdyn.curvature.precision import (
    DEFAULT_BALANCE_TOL,
    DEFAULT_BALANCE_TOL_F32,
    DEFAULT_RCOND,
    DEFAULT_RCOND_F32,
    astype,
    common_dtype,
    default_balance_tol,
    default_rcond,
    effective_rcond,
    promote,
)
from curvdyn.curvature.refine import REFINE_STEPS
from curvdyn.curvature.spectral import (
    SpectralFunction,
    apply_psd_function,
    block_scale,
    curvature_power,
    order_after,
)

__all__ = [
    "BLOCK_METHODS",
    "DEFAULT_BALANCE_TOL",
    "DEFAULT_BALANCE_TOL_F32",
    "DEFAULT_CG_MAXITER",
    "DEFAULT_CG_TOL",
    "DEFAULT_KRYLOV_MAXITER",
    "DEFAULT_KRYLOV_TOL",
    "DEFAULT_KRYLOV_TOL_F32",
    "DEFAULT_RCOND",
    "DEFAULT_RCOND_F32",
    "FULL_METHODS",
    "IN_GRAPH_FALLBACK_MAX_MAP",
    "KRYLOV_MIN_MAP",
    "REFINE_STEPS",
    "WARN_TOL",
    "CGInfo",
    "DirectionInfo",
    "KrylovInfo",
    "KrylovState",
    "SharedBasis",
    "SpectralFunction",
    "apply_psd_function",
    "astype",
    "balanced_direction",
    "balanced_direction_info",
    "block_direction_dense",
    "block_direction_dense_info",
    "block_direction_kronecker",
    "block_direction_kronecker_info",
    "block_direction_mapspace",
    "block_direction_mapspace_info",
    "block_matrix",
    "block_scale",
    "bound_info",
    "cg_direction",
    "cg_solve",
    "checked_direction",
    "checked_direction_info",
    "choose_block_method",
    "choose_full_method",
    "common_dtype",
    "condition_number",
    "curvature_power",
    "default_balance_tol",
    "default_krylov_tol",
    "default_rcond",
    "dense_apply",
    "dense_direction",
    "dense_direction_info",
    "describe",
    "effective_rcond",
    "exact_info",
    "hessian_plus",
    "jacobian_matrix",
    "kronsum_direction",
    "kronsum_direction_info",
    "krylov_direction",
    "krylov_direction_info",
    "krylov_init_state",
    "layer_factors",
    "mapspace_apply",
    "mapspace_direction",
    "mapspace_direction_info",
    "mapspace_grams",
    "mapspace_kernel",
    "order_after",
    "promote",
    "shared_basis",
    "shared_basis_error",
    "summarize",
]
