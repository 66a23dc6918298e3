"""Map-space building blocks shared by the full-curvature methods: ``Δ S``, the Gram matrices
``P_i = A_i A_iᵀ``, ``Q_i = S B_iᵀ B_i S``, the kernel ``K = Σ_i P_i ⊗ Q_i`` (formed or applied), and
the pull-back ``Λ ↦ {A_iᵀ Λ S B_iᵀ}_i`` (``Ĵᵀ``)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from curvdyn.curvature.spectral import _sym
from curvdyn.network import Weights, network_map, outer_products
from curvdyn.task import Task


def _delta_s(ws: Weights, task: Task, b: Weights | None = None) -> jax.Array:
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


def _kernel_matvec(p: jax.Array, q: jax.Array, x: jax.Array) -> jax.Array:
    """``K(X) = Σ_i P_i X Q_i`` without forming K: O(d (n_d² n_0 + n_d n_0²))."""
    return jnp.einsum("iab,bc,icd->ad", p, x, q)


def _forward(a: Weights, bs: Weights, d: Weights) -> jax.Array:
    """``Ĵ d = Σ_i A_i d_i (B_i S)`` (n_d × n_0) from the products ``A_i`` and ``B_i S``
    (:func:`_right_products`), never through ``K``.

    Its rounding error is ``~eps ‖Ĵ‖ ‖d‖``, which is what makes the structured residual
    ``ΔS − Ĵ d`` of :mod:`curvdyn.curvature.refine` accurate where ``ΔS − K Λ`` is not.
    """
    return functools.reduce(jnp.add, (a_i @ d_i @ bs_i for a_i, d_i, bs_i in zip(a, d, bs)))
