"""The diagonal blocks ``H_i = (B_i Σ B_iᵀ) ⊗ (A_iᵀ A_i)`` of the block-diagonal rules: through the layer
factors (``kronecker``), the map Grams (``mapspace``, push-through identity) or the explicit blocks (``dense``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from curvdyn.curvature._mapspace_ops import _delta_s, _right_products
from curvdyn.curvature.spectral import SpectralFunction, _eigh, apply_psd_function, order_after
from curvdyn.network import Weights, outer_products
from curvdyn.task import Task


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


def block_direction_kronecker(ws: Weights, task: Task, f: SpectralFunction, grad: Weights) -> Weights:
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
