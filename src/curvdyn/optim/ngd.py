"""Exact fractional natural gradient ``(H₊⁺)^{1/q} g`` for any small JAX model and mini-batch.

For a model ``f(params, x)`` whose outputs on the batch have ``M = B · n_out`` entries, let
``J`` (``M × P``) be the Jacobian of all outputs with respect to all ``P`` parameters
(flattened with :func:`jax.flatten_util.ravel_pytree`). For the squared loss
``L = loss_scale · (1/N) Σ_b ½ ‖f(x_b) − y_b‖²`` (``N = B`` for ``"mean"``, 1 for ``"sum"``;
:mod:`curvdyn.optim.mlp`) with residuals ``r = f − y`` (flattened),

    H₊ = c JᵀJ,   g = c Jᵀ r,   c = loss_scale / N,

so with the output-space kernel ``K = J Jᵀ`` (``M × M``)

    (H₊⁺)^{1/q} g = c^{1 − 1/q} Jᵀ (K⁺)^{1/q} r.

The nonzero spectrum of ``H₊`` is ``c`` times that of ``K``: the eigenproblem has the size
``M`` of the mini-batch output, not ``P``. With ``K = U diag(κ) Uᵀ`` and the orthonormal basis
``V = Jᵀ U diag(κ^{-1/2})`` of the range of ``H₊`` (``J = U diag(√κ) Vᵀ``, a thin SVD), the
direction is computed from the gradient itself (no targets needed):

    direction = V diag(f(c κ)) Vᵀ g  [+ λ^{-1/q} (g − V Vᵀ g)  when damping λ > 0],

with ``f(h) = h^{-1/q}`` for ``h > rcond · h_max`` and 0 otherwise (the pseudo-inverse power,
``damping = 0``), or ``f(h) = (h + λ)^{-1/q}`` (Levenberg–Marquardt, ``damping = λ > 0``: exactly
``(H₊ + λ I)^{-1/q} g``, including the ``λ^{-1/q}`` action on any part of ``g`` outside the
range of ``Jᵀ``; a loss gradient has none). Both match curvdyn's ``frac-ngd`` (``rcond``,
``lm_damping``).

Solvers: ``"svd"`` (default) takes ``U, √κ, V`` from the thin SVD of ``J``; it never squares the
condition number of ``J``. ``"eigh"`` eigendecomposes ``K = J Jᵀ`` and forms ``V`` from it:
several times faster for wide ``J`` (M ≪ P), but its error grows like ``eps · cond(K)`` instead
of ``eps · cond(J)``, so it suits damped or well-conditioned problems. ``J`` is built with
``jax.jacrev`` (``M`` vector–Jacobian products) or ``jax.jacfwd`` (``P`` Jacobian–vector
products), whichever is fewer, and held in memory (``M · P`` numbers): this is for small
models and mini-batches.

Numeric hyperparameters (``q``, ``damping``, ``rcond``, ``loss_scale``, the learning rate) may be
arrays, traced under ``jit`` (``optax.inject_hyperparams``; pass ``static_args="model_fn"``, since
optax treats every callable argument as a schedule).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from curvdyn import curvature as cv
from curvdyn.optim import _checks

#: A hyperparameter: a Python number or a 0-d array, possibly traced.
Numeric = Any

ModelFn = Callable[[Any, Any], jax.Array]

SOLVERS = ("svd", "eigh")


def _check_options(q, damping, rcond, reduction, loss_scale, solver):
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    return (
        _checks.q_value(q),
        _checks.nonneg(damping, "damping"),
        _checks.cutoff(rcond),
        _checks.check_reduction(reduction),
        _checks.positive(loss_scale, "loss_scale"),
        solver,
    )


def output_jacobian(model_fn: ModelFn, params: Any, inputs: Any) -> tuple[jax.Array, int]:
    """``(J, B)``: ``J`` of shape ``(M, P)`` and the batch size ``B``.

    Rows: the model's outputs flattened row-major (example by example); columns: the
    parameters in :func:`jax.flatten_util.ravel_pytree` order.
    """
    theta, unravel = ravel_pytree(params)
    out = jax.eval_shape(model_fn, params, inputs)
    if len(out.shape) < 1:
        raise ValueError("model_fn(params, inputs) must return an array whose first axis is the batch")

    def flat_outputs(th):
        return jnp.ravel(model_fn(unravel(th), inputs))

    size = math.prod(out.shape)
    jac = jax.jacrev(flat_outputs)(theta) if size <= theta.size else jax.jacfwd(flat_outputs)(theta)
    return jac, out.shape[0]


def _range_basis(jac: jax.Array, solver: str, rcond: float) -> tuple[jax.Array, jax.Array]:
    """``(κ, Vᵀ)``: eigenvalues of ``K = J Jᵀ`` and the matching rows ``v_jᵀ`` of ``J = U √κ Vᵀ``."""
    if solver == "svd":
        _, s, vt = jnp.linalg.svd(jac, full_matrices=False)
        return s * s, vt
    kappa, u = jnp.linalg.eigh(jac @ jac.T)
    kappa = jnp.maximum(kappa, 0.0)
    # Eigenvalues at round-off level have no usable eigenvector: drop them from the basis (the
    # same relative cutoff as the pseudo-inverse power: SpectralFunction of power 0 is 1 on the kept
    # range and 0 below the cutoff).
    keep = cv.SpectralFunction(power=0.0, rcond=rcond)(kappa, jnp.max(kappa)) > 0
    inv_sqrt = jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, kappa, 1.0)), 0.0)
    return jnp.where(keep, kappa, 0.0), (jac.T @ (u * inv_sqrt)).T


def _direction_from_jacobian(jac, g, *, power, damping, rcond, c, solver):
    """``V diag(f(cκ) − f(0)) Vᵀ g + f(0) g`` with ``f = SpectralFunction(power, shift=damping)``:
    ``f(0) = 0`` undamped (the pseudo-inverse power on the range of ``Jᵀ``), ``λ^{-power}`` damped
    (exactly ``(H₊ + λI)^{-power} g``). Every argument but ``solver`` may be traced."""
    kappa, vt = _range_basis(jac, solver, rcond)
    h = c * kappa
    f = cv.SpectralFunction(power=power, shift=damping, rcond=rcond)
    top = jnp.max(h)
    floor = f(jnp.zeros((), h.dtype), top)
    # zero rows of vt (eigh: dropped eigenvalues) contribute nothing to either term
    return vt.T @ ((f(h, top) - floor) * (vt @ g)) + floor * g


def fractional_ngd_direction(
    model_fn: ModelFn,
    params: Any,
    inputs: Any,
    grads: Any,
    *,
    q: float = 2.0,
    damping: float = 0.0,
    rcond: float | None = None,
    reduction: str = "mean",
    loss_scale: float = 1.0,
    solver: str = "svd",
) -> Any:
    """The exact ``(H₊⁺)^{1/q} g`` (or ``(H₊ + λI)^{-1/q} g``) on one mini-batch.

    Args:
      model_fn: ``model_fn(params, inputs) → outputs`` with the batch on the first axis (any
        pytree of parameters; e.g. a :class:`curvdyn.optim.MLP`). It must be hashable (a
        function or a frozen dataclass): it is a static argument of a compiled function.
      params: the parameters (a pytree).
      inputs: the batch, whatever ``model_fn`` takes.
      grads: the loss gradient ``g``, shaped like ``params``.
      q: the root, ``q ≥ 1`` (1 = NGD, 2 = sqrt-NGD, ``inf`` = the gradient).
      damping: Levenberg–Marquardt shift λ ≥ 0 of ``H₊``.
      rcond: relative eigenvalue cutoff of the pseudo-inverse power (``damping = 0``), and
        of the kernel's range for ``solver="eigh"``; ``None``: the default of the dtype (1e-13
        in float64, 1e-5 in float32).
      reduction, loss_scale: the squared-loss convention that defines ``H₊`` (module docstring).
      solver: ``"svd"`` (accurate) or ``"eigh"`` (fast); module docstring.

    Returns:
      The direction, shaped like ``params``; a descent step is ``params − η · direction``.

    Raises:
      ValueError: bad options (``q < 1``, negative or non-finite ``damping``, ...), ``grads``
        not shaped like ``params``, or non-finite values (checked outside ``jit``; the optax
        transformation skips such steps instead).
    """
    q, damping, rcond, reduction, loss_scale, solver = _check_options(q, damping, rcond, reduction, loss_scale, solver)
    if not _checks.same_shapes(grads, params):
        raise ValueError("grads must have the same structure and shapes as params")
    _checks.check_finite_tree((params, inputs, grads), "params/inputs/grads")
    if not _checks.is_traced(q) and math.isinf(q):
        return grads
    return _ngd_jit(model_fn, params, inputs, grads, q, damping, rcond, loss_scale, reduction, solver)


@partial(jax.jit, static_argnums=(0, 8, 9))
def _ngd_jit(model_fn, params, inputs, grads, q, damping, rcond, loss_scale, reduction, solver):
    # q, damping, rcond and loss_scale are traced (one compilation serves every value).
    g, _ = ravel_pytree(grads)
    _, unravel = ravel_pytree(params)
    jac, batch = output_jacobian(model_fn, params, inputs)
    c = loss_scale / (batch if reduction == "mean" else 1)
    out = _direction_from_jacobian(jac, g, power=1.0 / q, damping=damping, rcond=rcond, c=c, solver=solver)
    out = jnp.where(jnp.isinf(q), g, out)
    return unravel(out.astype(g.dtype))


class FractionalNGDState(NamedTuple):
    """State of :func:`scale_by_fractional_ngd`.

    Attributes:
      count: number of updates applied (int32, saturating).
      notfinite_count, last_finite, total_notfinite: skipped steps, as in
        ``optax.apply_if_finite``: a step whose gradient or direction is not finite (a NaN in
        the gradient, the parameters, the batch or the Jacobian) gives a zero update and does
        not count in ``count``.
    """

    count: jax.Array  # type: ignore[assignment]  # optax's name for the step counter (shadows tuple.count)
    notfinite_count: jax.Array
    last_finite: jax.Array
    total_notfinite: jax.Array


def scale_by_fractional_ngd(
    model_fn: ModelFn,
    *,
    q: float = 2.0,
    damping: float = 0.0,
    rcond: float | None = None,
    reduction: str = "mean",
    loss_scale: float = 1.0,
    solver: str = "svd",
) -> optax.GradientTransformationExtraArgs:
    """Exact fractional NGD preconditioning as an optax transformation (no learning rate).

    ``update(updates, state, params, *, inputs, **extra_args)`` returns
    :func:`fractional_ngd_direction` of ``updates`` at ``params`` on the batch ``inputs``
    (both required); a step with a non-finite gradient or direction returns zeros and is counted
    as skipped (:class:`FractionalNGDState`). Numeric options may be 0-d arrays, traced under
    ``jit``.

    Raises:
      ValueError: ``q < 1`` or NaN, negative/non-finite ``damping``, ``rcond`` outside
        ``[0, 1)``, unknown ``reduction``/``solver``, non-positive ``loss_scale``; in
        ``update``: missing ``params`` or ``inputs``, ``updates`` not shaped like ``params``.
    """
    if not callable(model_fn):
        raise TypeError(f"model_fn must be callable as model_fn(params, inputs), got {model_fn!r}")
    q, damping, rcond, reduction, loss_scale, solver = _check_options(q, damping, rcond, reduction, loss_scale, solver)

    def init_fn(params: Any) -> FractionalNGDState:
        del params
        zero = jnp.zeros([], jnp.int32)
        return FractionalNGDState(count=zero, notfinite_count=zero, last_finite=jnp.asarray(True), total_notfinite=zero)

    def update_fn(
        updates: Any,
        state: FractionalNGDState,
        params: Any | None = None,
        *,
        inputs: Any = None,
        **extra_args: Any,
    ) -> tuple[Any, FractionalNGDState]:
        del extra_args
        if params is None or inputs is None:
            raise ValueError(
                "fractional NGD needs the parameters and the batch: call update(grads, state, params, inputs=x)"
            )
        if not _checks.same_shapes(updates, params):
            raise ValueError("updates must have the same structure and shapes as params")
        out = _ngd_jit(model_fn, params, inputs, updates, q, damping, rcond, loss_scale, reduction, solver)
        ok = _checks.all_finite(updates) & _checks.all_finite(out)
        out = jax.tree_util.tree_map(lambda o: jnp.where(ok, o, jnp.zeros_like(o)), out)
        return out, FractionalNGDState(
            count=jnp.where(ok, optax.safe_increment(state.count), state.count),
            notfinite_count=jnp.where(ok, 0, optax.safe_increment(state.notfinite_count)).astype(jnp.int32),
            last_finite=jnp.asarray(ok),
            total_notfinite=jnp.where(ok, state.total_notfinite, optax.safe_increment(state.total_notfinite)),
        )

    # optax's stubs type update as TransformUpdateFn; this one takes its extra argument by keyword,
    # which GradientTransformationExtraArgs is for.
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)  # type: ignore[arg-type]


def fractional_ngd(
    learning_rate: optax.ScalarOrSchedule,
    model_fn: ModelFn,
    *,
    q: float = 2.0,
    damping: float = 0.0,
    rcond: float | None = None,
    reduction: str = "mean",
    loss_scale: float = 1.0,
    solver: str = "svd",
) -> optax.GradientTransformationExtraArgs:
    """Exact fractional NGD optimizer: :func:`scale_by_fractional_ngd` then ``−learning_rate``.

    The options are those of :func:`scale_by_fractional_ngd`. Usage::

        opt = fractional_ngd(0.5, model, q=2.0)
        updates, state = opt.update(grads, state, params, inputs=x)

    With ``optax.inject_hyperparams(fractional_ngd, static_args="model_fn")`` the learning rate,
    ``damping`` and ``q`` can be scheduled.
    """
    _checks.check_learning_rate(learning_rate)
    return optax.chain(
        scale_by_fractional_ngd(
            model_fn, q=q, damping=damping, rcond=rcond, reduction=reduction, loss_scale=loss_scale, solver=solver
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
