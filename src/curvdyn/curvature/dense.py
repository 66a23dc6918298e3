"""The dense reference: the explicit ``P × P`` Gauss–Newton matrix ``H₊ = Ĵᵀ Ĵ`` (paper eq. 3) and its
eigendecomposition — the paper's own method, O(P³) time, O(P²) memory.

Parameter order: that of :func:`curvdyn.network.flatten_weights` (layer 1 first, each layer
row-major).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from curvdyn.curvature.spectral import SpectralFunction, apply_psd_function
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
    """``f(H₊) v`` through the explicit ``H₊`` and its eigendecomposition (O(P³))."""
    out = apply_psd_function(hessian_plus(ws, task), f, flatten_weights(vector))
    return unflatten_weights(out, widths_of(ws))


def dense_direction(ws: Weights, task: Task, f: SpectralFunction, grad: Weights) -> Weights:
    """``f(H₊) g`` for the gradient ``g`` by the dense method."""
    return dense_apply(ws, task, f, grad)
