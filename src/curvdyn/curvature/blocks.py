"""The diagonal blocks ``H_i = (B_i Σ B_iᵀ) ⊗ (A_iᵀ A_i)`` of the block-diagonal rules: through the layer
factors (``kronecker``), the map Grams (``mapspace``, push-through identity) or the explicit blocks (``dense``).

Block i is the Gauss–Newton matrix of layer i alone, ``H_i = J_iᵀ J_i`` with
``J_i ẇ_i = A_i ẇ_i B_i S``; power-one directions are refined per block with the structured
residual ``gain · ΔS − A_i d_i B_i S`` (:mod:`curvdyn.curvature.refine`), and every path can
report a :class:`~curvdyn.curvature.diagnostics.DirectionInfo` per block.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from curvdyn.curvature._mapspace_ops import _delta_s, _right_products
from curvdyn.curvature.diagnostics import (
    DirectionInfo,
    norm_of,
    residual_in_basis,
    rho_grid,
    spectral_info,
    stack_infos,
    unit_coef,
)
from curvdyn.curvature.refine import Refined, over_lambda, refine_from_eigenbasis, refine_map
from curvdyn.curvature.spectral import SpectralFunction, _eigh, order_after
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


def _two_sided_eig(left, right, f, after=None):
    """Eigendecompositions of ``L`` and ``R`` and ``f`` on the products ``l_a r_b`` (the spectrum of ``L ⊗ R``)."""
    l_vals, l_vecs = _eigh(order_after(left, after))
    r_vals, r_vecs = _eigh(order_after(right, l_vecs))
    l_vals, r_vals = jnp.maximum(l_vals, 0.0), jnp.maximum(r_vals, 0.0)
    evals = l_vals[:, None] * r_vals[None, :]
    fv = f(evals, jnp.max(l_vals) * jnp.max(r_vals))
    return l_vecs, r_vecs, evals, fv


def _two_sided_chain(left, right, x, f, after=None):
    """``f(L ⊗ R)`` applied to X, and the last eigenvector matrix (to order the next call)."""
    l_vecs, r_vecs, _, fv = _two_sided_eig(left, right, f, after)
    return l_vecs @ ((l_vecs.T @ x @ r_vecs) * fv) @ r_vecs.T, r_vecs


def _two_sided(left: jax.Array, right: jax.Array, x: jax.Array, f: SpectralFunction) -> jax.Array:
    """``f(L ⊗ R)`` applied to X as ``ẇ ↦ L ẇ R``: ``U_L [(U_Lᵀ X U_R) ⊙ f(l_a r_b)] U_Rᵀ``."""
    return _two_sided_chain(left, right, x, f)[0]


def _product_solver(l_vecs, r_vecs, fv):
    return lambda x: l_vecs @ ((l_vecs.T @ x @ r_vecs) * fv) @ r_vecs.T


def _rank_one_rho(left_map, l_vecs, right_map, r_vecs):
    """``‖M_L x_a‖² ‖M_R y_b‖²`` on the product basis ``x_a y_bᵀ``, shape ``(n_x, n_y)``."""
    return jnp.sum((left_map @ l_vecs) ** 2, axis=0)[:, None] * jnp.sum((right_map @ r_vecs) ** 2, axis=0)[None, :]


def _block_param_info(f, evals, rho, t, ds, out: Refined, coef_params, coef_pulled) -> DirectionInfo:
    res_coef, res_scale = residual_in_basis(out, coef_params, coef_pulled, rho.ravel(), t.ravel())
    return spectral_info(
        evals.ravel(),
        rho.ravel(),
        unit_coef(t.ravel(), rho.ravel()),
        f,
        rhs_norm=norm_of(ds),
        d_norm=norm_of(out.direction),
        res_coef=res_coef,
        res_scale=res_scale,
        correction=out.correction,
        param_basis=True,
    )


def _kronecker(ws, task, f, grad, *, with_info: bool):
    a, b = outer_products(ws)
    bs = _right_products(b, task)
    ds = _delta_s(ws, task, b)
    out, infos, token = [], [], None
    for (left, right), g_i, a_i, bs_i in zip(layer_factors(ws, task), grad, a, bs):
        l_vecs, r_vecs, evals, fv = _two_sided_eig(left, right, f, token)
        token = r_vecs
        pull = lambda r, a_i=a_i, bs_i=bs_i: a_i.T @ r @ bs_i.T  # J_iᵀ r
        res = refine_from_eigenbasis(
            f,
            ds,
            g_i,
            pull,
            lambda d, a_i=a_i, bs_i=bs_i: a_i @ d @ bs_i,  # J_i d
            _product_solver(l_vecs, r_vecs, fv),
            _product_solver(l_vecs, r_vecs, over_lambda(fv, evals)),
        )
        out.append(res.direction)
        if with_info:
            rho = _rank_one_rho(a_i, l_vecs, bs_i.T, r_vecs)
            t = l_vecs.T @ g_i @ r_vecs

            def in_basis(x, l_vecs=l_vecs, r_vecs=r_vecs):
                return (l_vecs.T @ x @ r_vecs).ravel()

            infos.append(
                _block_param_info(f, evals, rho, t, ds, res, in_basis, lambda r, pull=pull, ib=in_basis: ib(pull(r)))
            )
    return tuple(out), (stack_infos(infos) if with_info else None)


def block_direction_kronecker(ws: Weights, task: Task, f: SpectralFunction, grad: Weights) -> Weights:
    """``f(H_i) g_i`` for every layer from eigendecompositions of the layer factors."""
    return _kronecker(ws, task, f, grad, with_info=False)[0]


def block_direction_kronecker_info(
    ws: Weights, task: Task, f: SpectralFunction, grad: Weights
) -> tuple[Weights, DirectionInfo]:
    """:func:`block_direction_kronecker` and its per-block :class:`DirectionInfo` (fields of shape ``(d,)``)."""
    return _kronecker(ws, task, f, grad, with_info=True)


def _mapspace_blocks(ws, task, f, *, with_info: bool):
    a, b = outer_products(ws)
    bs = _right_products(b, task)
    ds = _delta_s(ws, task, b)
    out, infos, token = [], [], None
    for a_i, bs_i in zip(a, bs):
        u, v, evals, fv = _two_sided_eig(a_i @ a_i.T, bs_i.T @ bs_i, f, token)
        token = v
        solve = _product_solver(u, v, fv)
        res = refine_map(
            f,
            ds,
            lambda m, a_i=a_i, bs_i=bs_i: a_i.T @ m @ bs_i.T,
            lambda d, a_i=a_i, bs_i=bs_i: a_i @ d @ bs_i,
            solve,
        )
        out.append(res.direction)
        if with_info:
            coef = u.T @ ds @ v
            refined = res.residual is not None
            infos.append(
                spectral_info(
                    evals.ravel(),
                    rho_grid((a_i,), (bs_i,), u, v).ravel(),
                    coef.ravel(),
                    f,
                    rhs_norm=norm_of(ds),
                    d_norm=norm_of(res.direction),
                    res_coef=(u.T @ res.residual @ v).ravel() if refined else None,
                    res_scale=coef.ravel() if refined else None,
                    correction=res.correction,
                )
            )
    return tuple(out), (stack_infos(infos) if with_info else None)


def block_direction_mapspace(ws: Weights, task: Task, f: SpectralFunction) -> Weights:
    """``f(H_i) g_i = A_iᵀ M_i S B_iᵀ`` with ``M_i = f(P_i ⊗ Q_i)(Δ S)``, i = 1..d.

    Since ``g_i = A_iᵀ (Δ S)(B_i S)ᵀ`` and the factors ``A_iᵀA_i``/``A_iA_iᵀ`` (and
    ``B_iΣB_iᵀ``/``S B_iᵀ B_i S``) share their nonzero spectra, the block's spectral function
    moves onto the Grams of size n_d and n_0 exactly (push-through identity).
    """
    return _mapspace_blocks(ws, task, f, with_info=False)[0]


def block_direction_mapspace_info(ws: Weights, task: Task, f: SpectralFunction) -> tuple[Weights, DirectionInfo]:
    """:func:`block_direction_mapspace` and its per-block :class:`DirectionInfo`."""
    return _mapspace_blocks(ws, task, f, with_info=True)


def _dense_blocks(ws, task, f, grad, *, with_info: bool):
    a, b = outer_products(ws)
    bs = _right_products(b, task)
    ds = _delta_s(ws, task, b)
    out, infos, token = [], [], None
    for i, (g_i, a_i, bs_i) in enumerate(zip(grad, a, bs), start=1):
        evals, evecs = _eigh(order_after(block_matrix(ws, task, i), token))
        fv = f(evals, jnp.max(evals))
        shape = g_i.shape

        def spectral(values, evecs=evecs, shape=shape):
            return lambda x: (evecs @ (values * (evecs.T @ x.reshape(-1)))).reshape(shape)

        pull = lambda r, a_i=a_i, bs_i=bs_i: a_i.T @ r @ bs_i.T  # J_iᵀ r
        res = refine_from_eigenbasis(
            f,
            ds,
            g_i,
            pull,
            lambda d, a_i=a_i, bs_i=bs_i: a_i @ d @ bs_i,  # J_i d
            spectral(fv),
            spectral(over_lambda(fv, evals)),
        )
        token = res.direction
        out.append(res.direction)
        if with_info:
            vecs = evecs.T.reshape((-1,) + shape)
            rho = jnp.sum(jnp.einsum("ai,kij,jb->kab", a_i, vecs, bs_i) ** 2, axis=(1, 2))
            t = evecs.T @ g_i.reshape(-1)

            def in_basis(x, evecs=evecs):
                return evecs.T @ x.reshape(-1)

            infos.append(
                _block_param_info(f, evals, rho, t, ds, res, in_basis, lambda r, pull=pull, ib=in_basis: ib(pull(r)))
            )
    return tuple(out), (stack_infos(infos) if with_info else None)


def block_direction_dense(ws: Weights, task: Task, f: SpectralFunction, grad: Weights) -> Weights:
    """``f(H_i) g_i`` through each explicit block ``H_i`` (reference, O(Σ (n_i n_{i−1})³))."""
    return _dense_blocks(ws, task, f, grad, with_info=False)[0]


def block_direction_dense_info(
    ws: Weights, task: Task, f: SpectralFunction, grad: Weights
) -> tuple[Weights, DirectionInfo]:
    """:func:`block_direction_dense` and its per-block :class:`DirectionInfo`."""
    return _dense_blocks(ws, task, f, grad, with_info=True)
