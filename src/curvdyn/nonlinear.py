"""Exact block-diagonal fractional NGD and the rescaling symmetry of small nonlinear networks.

curvdyn's rules are exact for deep *linear* networks. This module gives the exact curvature
corrections of the paper for any small model whose parameters are a sequence of layers (an
:class:`curvdyn.optim.MLP` with any activation, e.g. ReLU, where K-FAC's Kronecker
factorization is *not* exact), plus the per-unit conserved quantities of the positive
rescaling symmetry of homogeneous (ReLU) networks.

Curvature
---------
With ``J`` (``M × P``) the Jacobian of all ``M`` outputs of the batch with respect to all
``P`` parameters (flattened with :func:`jax.flatten_util.ravel_pytree`), the squared loss
``L = loss_scale · (1/N) Σ_b ½ ‖f(x_b) − y_b‖²`` (``N = B`` for ``"mean"``, 1 for ``"sum"``;
curvdyn's convention, see :mod:`curvdyn.optim.mlp`) has the Gauss–Newton matrix
``H₊ = c JᵀJ`` and gradient ``g = c Jᵀ r`` (``c = loss_scale / N``). Layer ``i`` owns the
columns ``J_i`` of ``J`` (its parameters are contiguous in the flattened vector). Then

* full fractional NGD: ``(H₊⁺)^{1/q} g`` (:func:`curvdyn.optim.fractional_ngd_direction`);
* block-diagonal fractional NGD (:func:`block_fractional_ngd_direction`): layer ``i`` moves
  along ``s_i · (H_i⁺)^{1/q} g_i`` with the *exact* diagonal block ``H_i = c J_iᵀ J_i`` and
  ``s_i = d^{-1/q}`` (``depth_scaling=True``, the paper's eq. 23/25 with ``η_i = η/d`` at
  q = 1). Each block is computed through its output-space kernel ``J_i J_iᵀ`` (a thin SVD of
  ``J_i``), never forming ``H_i``, exactly as the full rule is through ``J Jᵀ``.

For a deep linear network ``H_i`` is a Kronecker product and the undamped block rule equals
:func:`curvdyn.optim.fractional_kfac_direction` with ``damping=0``, ``depth_scaling=True``,
and curvdyn's ``frac-ngd-d`` (with damping they differ: K-FAC damps the factors). For a ReLU (or tanh) network the per-example factors ``J_{s_i,b}`` differ
between examples and ``H_i`` is a sum of Kronecker products: K-FAC is then an approximation,
while this function is exact.

Rescaling symmetry
------------------
In a ReLU network (``relu(c·s) = c·relu(s)`` for ``c > 0``) multiplying the incoming weights
(and bias) of hidden unit ``u`` by ``c`` and its outgoing weights by ``1/c`` leaves the
function unchanged. The tangent of that one-parameter group,
``v_u = (+w_in,u, +b_u, −w_out,u)`` (:func:`rescaling_directions`), lies in the null space
of ``J`` at every point. Along any flow ``θ̇`` the quantity

    c_u = ‖w_in,u‖² + b_u² − ‖w_out,u‖²      (:func:`unit_balances`)

changes as ``ċ_u = 2 ⟨v_u, θ̇⟩``: it is conserved by every flow orthogonal to ``null(J)``,
which includes gradient flow (``g = c Jᵀ r``) and every full fractional NGD flow (its
direction lies in ``range(Jᵀ)``), but not in general the block-diagonal ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from curvdyn import curvature as cv
from curvdyn._validate import check_positive
from curvdyn.optim import _checks
from curvdyn.optim.mlp import dense_layers, rebuild_layers
from curvdyn.optim.ngd import SOLVERS, _direction_from_jacobian, output_jacobian

ModelFn = Callable[[Any, Any], jax.Array]

__all__ = [
    "block_fractional_ngd_direction",
    "block_sizes",
    "gauss_newton_direction",
    "rescaling_directions",
    "unit_balances",
]


def block_sizes(params: Sequence[Any]) -> tuple[int, ...]:
    """The number of parameters of each top-level block (layer) of ``params``, in order.

    The blocks are contiguous in ``ravel_pytree(params)`` in this order.
    """
    if not isinstance(params, (tuple, list)) or len(params) == 0:
        raise TypeError(
            f"params must be a non-empty tuple or list of blocks (one per layer), got {type(params).__name__}"
        )
    return tuple(int(ravel_pytree(block)[0].size) for block in params)


def gauss_newton_direction(
    jac: jax.Array,
    grad: jax.Array,
    *,
    power: Any,
    c: float,
    blocks: Sequence[int] | None = None,
    depth_scaling: bool = True,
    damping: float = 0.0,
    rcond: float = cv.DEFAULT_RCOND,
    solver: str = "svd",
) -> jax.Array:
    """The fractional Gauss–Newton direction from a Jacobian (flat arrays; traceable).

    Args:
      jac: ``J``, shape ``(M, P)``.
      grad: ``g``, shape ``(P,)`` (``c Jᵀ r`` for a loss gradient).
      power: ``1/q`` (may be traced; 0 gives the projection of ``g`` on the range of ``Jᵀ``).
      c: the loss constant, ``H₊ = c JᵀJ``.
      blocks: ``None`` for the full matrix ``(H₊⁺)^{power} g``; otherwise the sizes of
        consecutive column blocks (summing to ``P``), each preconditioned by its own block
        ``(c J_iᵀJ_i)⁺`` to the ``power``.
      depth_scaling: with ``blocks``, multiply every block by ``len(blocks)^{-power}``.
      damping, rcond, solver: as in :func:`curvdyn.optim.fractional_ngd_direction` (the cutoff
        of each block is relative to that block's largest eigenvalue).

    Returns:
      The direction, shape ``(P,)``; a descent step is ``θ − η · direction``.
    """
    if isinstance(c, int | float):  # a traced c is checked by its caller
        check_positive(c, "the loss constant c")
    kw = dict(power=power, damping=damping, rcond=rcond, c=c, solver=solver)
    if blocks is None:
        return _direction_from_jacobian(jac, grad, **kw)
    sizes = tuple(int(n) for n in blocks)
    if any(n < 1 for n in sizes) or sum(sizes) != jac.shape[1] or grad.shape != (jac.shape[1],):
        raise ValueError(
            f"block sizes {sizes} must be positive and add up to the {jac.shape[1]} columns of J and the size of grad"
        )
    scale = cv.block_scale(len(sizes), power) if depth_scaling else 1.0
    out: list[jax.Array] = []
    start = 0
    for n in sizes:
        # one block's decomposition after the other (curvdyn.curvature.order_after)
        block = cv.order_after(jac[:, start : start + n], out[-1] if out else None)
        out.append(_direction_from_jacobian(block, grad[start : start + n], **kw))
        start += n
    return scale * jnp.concatenate(out)


def block_fractional_ngd_direction(
    model_fn: ModelFn,
    params: Sequence[Any],
    inputs: Any,
    grads: Sequence[Any],
    *,
    q: float = 2.0,
    depth_scaling: bool = True,
    damping: float = 0.0,
    rcond: float = cv.DEFAULT_RCOND,
    reduction: str = "mean",
    loss_scale: float = 1.0,
    solver: str = "svd",
) -> Sequence[Any]:
    """Exact block-diagonal fractional NGD: layer i moves along ``s_i (H_i⁺)^{1/q} g_i``.

    ``H_i = c J_iᵀ J_i`` is the exact Gauss–Newton diagonal block of layer ``i`` (the
    top-level entry ``params[i]``, weights and bias together) on the batch ``inputs``;
    ``s_i = d^{-1/q}`` for ``d = len(params)`` when ``depth_scaling`` (the paper's NGD-d at
    q = 1 and √NGD-d at q = 2), else 1. See the module docstring.

    Args:
      model_fn: ``model_fn(params, inputs) → outputs`` with the batch on the first axis; must
        be hashable (a function or a frozen dataclass such as :class:`curvdyn.optim.MLP`).
      params: a tuple or list of blocks (layers), each any pytree.
      inputs: the batch.
      grads: the loss gradient, shaped like ``params``.
      q: the root, ``q ≥ 1`` (``inf``: the gradient, returned unchanged).
      depth_scaling: the layer factor ``d^{-1/q}``.
      damping: Levenberg–Marquardt shift of each block: ``(H_i + λI)^{-1/q} g_i``.
      rcond: relative cutoff of each block's pseudo-inverse power (``damping = 0``).
      reduction, loss_scale: the loss convention that defines ``H₊``.
      solver: ``"svd"`` (default, accurate) or ``"eigh"`` (through ``J_i J_iᵀ``).

    Returns:
      The direction, structured like ``params``.

    Raises:
      TypeError: ``params`` is not a non-empty tuple/list.
      ValueError: bad options or ``grads`` not shaped like ``params``; non-finite values
        (checked outside ``jit``).
    """
    q = _checks.check_q(q)
    damping = _checks.check_nonneg(damping, "damping")
    rcond = _checks.check_unit_interval(rcond, "rcond")
    reduction = _checks.check_reduction(reduction)
    loss_scale = _checks.check_positive(loss_scale, "loss_scale")
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    sizes = block_sizes(params)
    if not _checks.same_shapes(grads, params):
        raise ValueError("grads must have the same structure and shapes as params")
    _checks.check_finite_tree((params, inputs, grads), "params/inputs/grads")
    if math.isinf(q):
        return grads
    return _block_jit(
        model_fn,
        params,
        inputs,
        grads,
        1.0 / q,
        sizes,
        bool(depth_scaling),
        damping,
        rcond,
        reduction,
        loss_scale,
        solver,
    )


@partial(jax.jit, static_argnums=(0, 5, 6, 7, 8, 9, 10, 11))
def _block_jit(
    model_fn, params, inputs, grads, power, sizes, depth_scaling, damping, rcond, reduction, loss_scale, solver
):
    g, _ = ravel_pytree(grads)
    _, unravel = ravel_pytree(params)
    jac, batch = output_jacobian(model_fn, params, inputs)
    c = loss_scale / (batch if reduction == "mean" else 1)
    out = gauss_newton_direction(
        jac, g, power=power, c=c, blocks=sizes, depth_scaling=depth_scaling, damping=damping, rcond=rcond, solver=solver
    )
    return unravel(out.astype(g.dtype))


def _hidden_pairs(params):
    layers = dense_layers(params)
    if len(layers) < 2:
        raise ValueError("a network needs at least two layers (one hidden layer) to have hidden units")
    return layers


def unit_balances(params: Sequence[Any]) -> jax.Array:
    """``c_u = ‖w_in,u‖² + b_u² − ‖w_out,u‖²`` for every hidden unit, shape ``(Σ_{i<d} n_i,)``.

    ``w_in,u`` is row ``u`` of ``w_i`` (and ``b_u`` its bias, if the layer has one), ``w_out,u``
    column ``u`` of ``w_{i+1}``; units are ordered layer by layer. ``params`` are MLP
    parameters (:func:`curvdyn.optim.dense_layers`); a leading batch axis is not supported
    (``jax.vmap`` this function instead).
    """
    layers = _hidden_pairs(params)
    out = []
    for (w, b), (w_next, _) in zip(layers[:-1], layers[1:]):
        c = jnp.sum(w * w, axis=1) - jnp.sum(w_next * w_next, axis=0)
        if b is not None:
            c = c + b * b
        out.append(c)
    return jnp.concatenate(out)


def rescaling_directions(params: Sequence[Any]) -> Sequence[Any]:
    """The tangents ``v_u`` of the per-unit rescaling symmetry, one per hidden unit.

    Returns a pytree shaped like ``params`` with a leading axis of length ``U`` (the number of
    hidden units, layer by layer as in :func:`unit_balances`): entry ``u`` is ``+w_in,u`` (and
    ``+b_u``) in row ``u`` of ``w_i``, ``−w_out,u`` in column ``u`` of ``w_{i+1}``, zero
    elsewhere. For a network whose hidden activation is positively homogeneous (ReLU, leaky
    ReLU, linear) every ``v_u`` is in the null space of the output Jacobian, and
    ``d c_u / dt = 2 ⟨v_u, θ̇⟩``.
    """
    layers = _hidden_pairs(params)
    theta, unravel = ravel_pytree(params)
    rows = []
    for i in range(len(layers) - 1):
        n_i = jnp.shape(layers[i][0])[0]
        for u in range(n_i):
            pieces = []
            for k, (w, b) in enumerate(layers):
                dw = jnp.zeros_like(w)
                db = None if b is None else jnp.zeros_like(b)
                if k == i:
                    dw = dw.at[u, :].set(w[u, :])
                    if b is not None:
                        db = jnp.zeros_like(b).at[u].set(b[u])
                elif k == i + 1:
                    dw = dw.at[:, u].set(-w[:, u])
                pieces.append((dw, db))
            rows.append(ravel_pytree(rebuild_layers(params, pieces))[0])
    flat = jnp.stack(rows) if rows else jnp.zeros((0, theta.size), theta.dtype)
    return jax.vmap(unravel)(flat)
