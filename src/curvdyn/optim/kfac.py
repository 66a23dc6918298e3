"""Fractional K-FAC: ``G_i^{-1/q} ∇W_i A_i^{-1/q}`` per dense layer, as an optax transformation.

For layer i with K-FAC factors ``G_i`` (output side, Gauss–Newton) and ``A_i`` (input side)
(:func:`curvdyn.optim.kfac_statistics`), the Gauss–Newton diagonal block is approximated by
``H_i ≈ G_i ⊗ A_i`` and the gradient ``V_i = [∇w_i | ∇b_i]`` (shape ``(n_i, m_i)``) is
preconditioned by the q-th root of its (damped) inverse:

    direction_i = s_i · f(G_i ⊗ A_i) V_i,     f(H) = (H + damping)^{-1/q}  or  (H⁺)^{1/q},

computed from the eigendecompositions ``G_i = U diag(γ) Uᵀ`` and ``A_i = W diag(α) Wᵀ`` as
``U [(Uᵀ V_i W) ⊙ F_i] Wᵀ`` with the ``(n_i, m_i)`` weight grid ``F_i``:

* ``damping = 0``: ``F_i[a, b] = (γ_a α_b)^{-1/q}``, and products ``γ_a α_b ≤ rcond ·
  max(γ_a α_b)`` count as zero (weight 0): the pseudo-inverse power of the block, exactly
  curvdyn's block rule ``frac-ngd-d`` (``(A_iᵀA_i)^{+1/q} g_i (B_iΣB_iᵀ)^{+1/q}``).
* ``damping = λ > 0`` and ``damping_mode="factored"`` (default; standard K-FAC): λ is split
  between the factors' eigenvalues, ``F_i[a, b] = (γ_a + λ_G)^{-1/q} (α_b + λ_A)^{-1/q}``, i.e.
  ``(G_i + λ_G I)^{-1/q} V_i (A_i + λ_A I)^{-1/q}``, with ``λ_A λ_G = λ``. With ``pi_adjusted``
  (default) ``λ_A = π √λ``, ``λ_G = √λ / π``, ``π = sqrt((tr A_i / m_i) / (tr G_i / n_i))``
  (Martens & Grosse 2015, sec. 6.3; kfac-jax's ``pi_adjusted_kronecker_factors``); without it
  ``λ_A = λ_G = √λ``.
* ``damping = λ > 0`` and ``damping_mode="kronecker"``: λ is added to the block's eigenvalues,
  ``F_i[a, b] = (γ_a α_b + λ)^{-1/q}``: exactly ``(G_i ⊗ A_i + λ I)^{-1/q} V_i`` (curvdyn's
  ``lm_damping`` on each block; kfac-jax's ``exact_power=True``).

``s_i = d^{-1/q}`` with ``depth_scaling=True`` (the paper's eq. 25 layer factor, d = number of
dense layers), else 1. ``q = 1`` is K-FAC; ``q = 2`` is sqrt-NGD-d; ``q = ∞`` the gradient.

The parameters may be in any layout of :mod:`curvdyn.optim.layouts` (curvdyn's tuple, flax-style
dicts with ``(n_in, n_out)`` kernels, equinox MLPs); the output has the layout of the gradient.
Numeric hyperparameters may be arrays, traced under ``jit`` (``optax.inject_hyperparams``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from curvdyn import curvature as cv
from curvdyn.optim import _checks
from curvdyn.optim.layouts import dense_layers, rebuild_layers
from curvdyn.optim.mlp import KFACStatistics, Params

DAMPING_MODES = ("factored", "kronecker")

Curvature = KFACStatistics | Callable[[], KFACStatistics]
#: A hyperparameter: a Python number or a 0-d array, possibly traced.
Numeric = Any


class FractionalKFACState(NamedTuple):
    """State of :func:`scale_by_fractional_kfac`.

    Attributes:
      count: number of updates applied (int32, saturating); factor/root updates happen when
        ``count % period == 0``. A skipped step (below) does not count.
      ema_weight: total weight of the moving averages, ``Σ_k (1 − decay) decay^k`` over the
        factor updates so far; the factors are ``output_sums[i] / ema_weight`` (bias-corrected,
        so the first update gives the first batch's factors exactly).
      output_sums, input_sums: the weighted moving sums of ``G_i`` and ``A_i``.
      output_bases, input_bases: eigenvectors ``U_i`` of ``G_i`` and ``W_i`` of ``A_i`` at the
        last root update.
      weights: the ``(n_i, m_i)`` grids ``F_i`` (module docstring) at the last root update.
      notfinite_count, last_finite, total_notfinite: skipped steps, as in
        ``optax.apply_if_finite``: consecutive skipped steps, whether the last step was applied,
        and all skipped steps (int32, saturating). A step is skipped — zero update, every other
        field unchanged — when the gradient, the step's statistics or the new roots are not finite.
    """

    count: jax.Array  # type: ignore[assignment]  # optax's name for the step counter (shadows tuple.count)
    ema_weight: jax.Array
    output_sums: tuple[jax.Array, ...]
    input_sums: tuple[jax.Array, ...]
    output_bases: tuple[jax.Array, ...]
    input_bases: tuple[jax.Array, ...]
    weights: tuple[jax.Array, ...]
    notfinite_count: jax.Array
    last_finite: jax.Array
    total_notfinite: jax.Array


def _eigh_psd(m: jax.Array) -> tuple[jax.Array, jax.Array]:
    vals, vecs = jnp.linalg.eigh(0.5 * (m + m.T))
    return jnp.maximum(vals, 0.0), vecs


def _positive(x: Numeric) -> Any:
    """``x > 0``: a Python bool for a concrete number, a traced bool otherwise."""
    return x > 0 if _checks.is_traced(x) else bool(x > 0)


def _weight_grid(
    g_vals: jax.Array,
    a_vals: jax.Array,
    *,
    power: Numeric,
    damping: Numeric,
    damping_mode: str,
    pi_adjusted: bool,
    rcond: Numeric,  # None: the dtype default
) -> jax.Array:
    """The grid ``F[a, b]`` of spectral weights for eigenvalues ``γ_a`` (G) and ``α_b`` (A)."""
    products = g_vals[:, None] * a_vals[None, :]
    top = jnp.max(g_vals) * jnp.max(a_vals)
    if damping_mode == "kronecker":  # (γα + λ)^{-1/q}; the pseudo-inverse power at λ = 0
        return cv.SpectralFunction(power=power, shift=damping, rcond=rcond)(products, top)
    undamped = cv.SpectralFunction(power=power, rcond=rcond)(products, top)
    damped = _positive(damping)
    if damped is False:
        return undamped
    lam = jnp.asarray(damping, dtype=products.dtype)  # a float32 schedule value: its root in the factors' dtype
    root = jnp.sqrt(jnp.where(lam > 0, lam, 1.0))
    pi: Numeric = 1.0
    if pi_adjusted:
        mean_a = jnp.mean(a_vals)  # tr A / m
        mean_g = jnp.mean(g_vals)  # tr G / n
        ok = (mean_a > 0) & (mean_g > 0)  # a zero factor: split evenly (pi = 1)
        pi = jnp.sqrt(jnp.where(ok, mean_a, 1.0) / jnp.where(ok, mean_g, 1.0))
    left = cv.SpectralFunction(power=power, shift=root / pi)(g_vals, jnp.max(g_vals))
    right = cv.SpectralFunction(power=power, shift=root * pi)(a_vals, jnp.max(a_vals))
    factored = left[:, None] * right[None, :]
    return factored if damped is True else jnp.where(damped, factored, undamped)


def _combine(w: jax.Array, b: jax.Array | None) -> jax.Array:
    return w if b is None else jnp.concatenate([w, b[:, None]], axis=1)


def _split(v: jax.Array, has_bias: bool) -> tuple[jax.Array, jax.Array | None]:
    return (v[:, :-1], v[:, -1]) if has_bias else (v, None)


def _check_statistics(stats: Any, layers: Sequence[tuple[jax.Array, jax.Array | None]]) -> KFACStatistics:
    if not isinstance(stats, KFACStatistics):
        raise TypeError(
            "curvature must be a KFACStatistics (from curvdyn.optim.kfac_statistics) or a "
            f"zero-argument callable returning one, got {type(stats).__name__}"
        )
    d = len(layers)
    if len(stats.output_factors) != d or len(stats.input_factors) != d:
        raise ValueError(
            f"curvature has {len(stats.output_factors)}/{len(stats.input_factors)} factors but the "
            f"parameters have {d} dense layers"
        )
    for i, ((w, b), g, a) in enumerate(zip(layers, stats.output_factors, stats.input_factors), start=1):
        n, m = jnp.shape(w)[0], jnp.shape(w)[1] + (b is not None)
        if jnp.shape(g) != (n, n) or jnp.shape(a) != (m, m):
            raise ValueError(
                f"layer {i}: factors must have shapes G ({n}, {n}) and A ({m}, {m})"
                f"{' (bias coordinate included)' if b is not None else ''}, got {jnp.shape(g)} and {jnp.shape(a)}"
            )
    return stats


def _check_options(q, damping, damping_mode, rcond):
    q = _checks.q_value(q)
    damping = _checks.nonneg(damping, "damping")
    if damping_mode not in DAMPING_MODES:
        raise ValueError(f"damping_mode must be one of {DAMPING_MODES}, got {damping_mode!r}")
    return q, damping, damping_mode, _checks.cutoff(rcond)


def _is_inf(q: Numeric) -> Any:
    """Whether ``q = ∞``: a Python bool for a concrete number, a traced bool otherwise."""
    return jnp.isinf(q) if _checks.is_traced(q) else math.isinf(q)


def _roots(stats_g, stats_a, **kw) -> tuple[tuple, tuple, tuple]:
    us, ws, fs = [], [], []
    token = None  # one eigendecomposition at a time (curvdyn.curvature.order_after)
    for g, a in zip(stats_g, stats_a):
        g_vals, u = _eigh_psd(cv.order_after(g, token))
        a_vals, w = _eigh_psd(cv.order_after(a, u))
        token = w
        us.append(u)
        ws.append(w)
        fs.append(_weight_grid(g_vals, a_vals, **kw))
    return tuple(us), tuple(ws), tuple(fs)


def _precondition(grads: Params, layers_g, us, ws, fs, scale: Numeric, q: Numeric) -> Params:
    """``s · U [(Uᵀ V W) ⊙ F] Wᵀ`` per layer, in the layout of ``grads``; the gradient itself
    where ``q = ∞`` (traced ``q``)."""
    pieces = []
    for (gw, gb), u, w, f in zip(layers_g, us, ws, fs):
        v = _combine(gw, gb)
        out = scale * (u @ ((u.T @ v @ w) * f) @ w.T)
        if _checks.is_traced(q):
            out = jnp.where(jnp.isinf(q), v, out)
        pieces.append(_split(out, gb is not None))
    return rebuild_layers(grads, pieces)


def _depth_scale(depth: int, power: Numeric, depth_scaling: bool) -> Numeric:
    """The layer factor ``d^{-1/q}`` (:func:`curvdyn.curvature.block_scale`) when ``depth_scaling``, else 1."""
    return cv.block_scale(depth, power) if depth_scaling else 1.0


def fractional_kfac_direction(
    grads: Params,
    curvature: KFACStatistics,
    *,
    q: float = 2.0,
    damping: float = 0.0,
    damping_mode: str = "factored",
    pi_adjusted: bool = True,
    depth_scaling: bool = False,
    rcond: float | None = None,
) -> Params:
    """One fractional K-FAC direction from one set of factors (no state, no moving average).

    Args:
      grads: the loss gradient, structured like the MLP parameters (any layout of
        :mod:`curvdyn.optim.layouts`); layer i's ``[∇w_i | ∇b_i]`` has shape ``(n_i, m_i)``.
      curvature: :class:`KFACStatistics` ``(G_i, A_i)`` for the same layers.
      q: the root, ``q ≥ 1`` (1 = K-FAC, 2 = sqrt-NGD-d, ``inf`` = the gradient).
      damping, damping_mode, pi_adjusted: see the module docstring.
      depth_scaling: multiply layer i by ``d^{-1/q}`` (paper eq. 25).
      rcond: relative cutoff of the pseudo-inverse power (``damping = 0``); ``None``: the
        default of the computation's dtype (1e-13 in float64, 1e-5 in float32).

    Returns:
      ``s_i · f(G_i ⊗ A_i) [∇w_i | ∇b_i]`` per layer, structured like ``grads``. A descent step
      is ``params − η · direction``. Non-finite input raises outside ``jit`` (the optax
      transformation skips such steps instead).
    """
    q, damping, damping_mode, rcond = _check_options(q, damping, damping_mode, rcond)
    layers_g = dense_layers(grads)
    stats = _check_statistics(curvature, layers_g)
    _checks.check_finite_tree((grads, stats), "grads/curvature")
    if _is_inf(q) is True:
        return grads
    return _direction_jit(grads, stats, q, damping, rcond, damping_mode, bool(pi_adjusted), bool(depth_scaling))


@partial(jax.jit, static_argnums=(5, 6, 7))
def _direction_jit(grads, stats, q, damping, rcond, damping_mode, pi_adjusted, depth_scaling):
    # q, damping and rcond are traced (one compilation serves every value); the rest is static.
    layers_g = dense_layers(grads)
    power = cv.curvature_power(q)
    us, ws, fs = _roots(
        stats.output_factors,
        stats.input_factors,
        power=power,
        damping=damping,
        damping_mode=damping_mode,
        pi_adjusted=pi_adjusted,
        rcond=rcond,
    )
    return _precondition(grads, layers_g, us, ws, fs, _depth_scale(len(layers_g), power, depth_scaling), q)


def _skip_counters(state, ok):
    """``(notfinite_count, last_finite, total_notfinite)`` after a step that was applied iff ``ok``."""
    return (
        jnp.where(ok, jnp.zeros_like(state.notfinite_count), optax.safe_increment(state.notfinite_count)),
        jnp.asarray(ok),
        jnp.where(ok, state.total_notfinite, optax.safe_increment(state.total_notfinite)),
    )


def _select(ok, new, old):
    """``new`` where the step is applied, else ``old`` (leaf by leaf; NaN in ``new`` never leaks)."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, old)


def _on_period(count, period, refresh, keep):
    """``refresh()`` on steps ``count % period == 0``, else ``keep()`` (no ``cond`` for period 1)."""
    if not _checks.is_traced(period) and period == 1:
        return refresh()
    return jax.lax.cond(count % period == 0, refresh, keep)


def scale_by_fractional_kfac(
    *,
    q: float = 2.0,
    damping: float = 1e-3,
    damping_mode: str = "factored",
    pi_adjusted: bool = True,
    decay: float = 0.95,
    factor_update_every: int = 1,
    root_update_every: int = 1,
    depth_scaling: bool = False,
    rcond: float | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Precondition dense-layer gradients by fractional K-FAC (no learning rate, no sign flip).

    ``update(updates, state, params=None, *, curvature, **extra_args)`` needs ``curvature``: a
    :class:`KFACStatistics` of the current batch (:func:`curvdyn.optim.kfac_statistics`) or a
    zero-argument callable returning one; the callable is evaluated only on factor-update
    steps (inside ``lax.cond`` when ``factor_update_every > 1``), so the statistics' backward
    passes are skipped on the other steps.

    Each call, with ``t = state.count``:

    1. if ``t % factor_update_every == 0``: moving averages
       ``S ← decay · S + (1 − decay) · stat``, ``w ← decay · w + (1 − decay)`` for every
       ``G_i``, ``A_i`` (the factors are ``S / w``: bias-corrected; ``decay = 0`` uses the
       current batch's factors only);
    2. if ``t % root_update_every == 0``: eigendecompositions of the factors and the weight
       grids ``F_i`` (module docstring);
    3. output ``s_i · U_i [(U_iᵀ V_i W_i) ⊙ F_i] W_iᵀ`` per layer.

    At ``t = 0`` both updates happen. A step whose gradient, statistics or new roots are not all
    finite is skipped (``optax.apply_if_finite``'s convention): zero update, the state kept as
    it was (the statistics keep their last finite values, ``count`` does not advance) apart from
    the skip counters ``notfinite_count``, ``last_finite``, ``total_notfinite``.

    Args: as in :func:`fractional_kfac_direction`, plus ``decay ∈ [0, 1)``,
    ``factor_update_every``, ``root_update_every`` (positive integers). Numeric options may be
    0-d arrays, traced under ``jit`` (``optax.inject_hyperparams(scale_by_fractional_kfac)``
    schedules ``damping``, ``decay``, ``q``, ...); traced values are not range-checked.

    Raises:
      ValueError: ``q < 1`` or NaN, negative or non-finite ``damping``, ``decay``/``rcond`` outside
        ``[0, 1)``, a non-positive period, an unknown ``damping_mode``; in ``update``: missing
        ``curvature`` or factors whose shapes do not match the layers.
    """
    q, damping, damping_mode, rcond = _check_options(q, damping, damping_mode, rcond)
    decay = _checks.unit_interval(decay, "decay")
    factor_every = _checks.check_period(factor_update_every, "factor_update_every")
    root_every = _checks.check_period(root_update_every, "root_update_every")
    power = cv.curvature_power(q)
    root_kw = dict(power=power, damping=damping, damping_mode=damping_mode, pi_adjusted=pi_adjusted, rcond=rcond)

    def init_fn(params: Params) -> FractionalKFACState:
        layers = dense_layers(params)
        dtype = jnp.result_type(*[w for w, _ in layers])
        sizes = [(jnp.shape(w)[0], jnp.shape(w)[1] + (b is not None)) for w, b in layers]
        return FractionalKFACState(
            count=jnp.zeros([], jnp.int32),
            ema_weight=jnp.zeros([], dtype),
            output_sums=tuple(jnp.zeros((n, n), dtype) for n, _ in sizes),
            input_sums=tuple(jnp.zeros((m, m), dtype) for _, m in sizes),
            output_bases=tuple(jnp.eye(n, dtype=dtype) for n, _ in sizes),
            input_bases=tuple(jnp.eye(m, dtype=dtype) for _, m in sizes),
            weights=tuple(jnp.zeros((n, m), dtype) for n, m in sizes),
            notfinite_count=jnp.zeros([], jnp.int32),
            last_finite=jnp.asarray(True),
            total_notfinite=jnp.zeros([], jnp.int32),
        )

    def update_fn(
        updates: Params,
        state: FractionalKFACState,
        params: Params | None = None,
        *,
        curvature: Curvature | None = None,
        **extra_args: Any,
    ):
        del params, extra_args
        if curvature is None:
            raise ValueError(
                "fractional K-FAC needs the layer statistics: call update(grads, state, params, "
                "curvature=kfac_statistics(model, params, x)) (or pass a zero-argument callable "
                "returning them)"
            )
        layers_g = dense_layers(updates)
        if len(layers_g) != len(state.weights):
            raise ValueError(f"updates have {len(layers_g)} layers but the state was built for {len(state.weights)}")
        grads_ok = _checks.all_finite(updates)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, updates)
        if _is_inf(q) is True:  # the gradient itself: no statistics needed
            out = _select(grads_ok, updates, zeros)
            counters = _skip_counters(state, grads_ok)
            count = jnp.where(grads_ok, optax.safe_increment(state.count), state.count)
            return out, state._replace(
                count=count, notfinite_count=counters[0], last_finite=counters[1], total_notfinite=counters[2]
            )
        if not callable(curvature):
            _check_statistics(curvature, layers_g)
        count = state.count

        def refresh_factors():
            stats = _check_statistics(curvature() if callable(curvature) else curvature, layers_g)
            mix = lambda old, new: decay * old + (1.0 - decay) * new.astype(old.dtype)
            return (
                decay * state.ema_weight + (1.0 - decay),
                tuple(map(mix, state.output_sums, stats.output_factors)),
                tuple(map(mix, state.input_sums, stats.input_factors)),
                _checks.all_finite(stats),
            )

        def keep_factors():
            return state.ema_weight, state.output_sums, state.input_sums, jnp.asarray(True)

        ema_weight, g_sums, a_sums, stats_ok = _on_period(count, factor_every, refresh_factors, keep_factors)

        def refresh_roots():
            norm = jnp.where(ema_weight > 0, ema_weight, 1.0)
            return _roots([g / norm for g in g_sums], [a / norm for a in a_sums], **root_kw)

        def keep_roots():
            return state.output_bases, state.input_bases, state.weights

        us, ws, fs = _on_period(count, root_every, refresh_roots, keep_roots)
        ok = grads_ok & stats_ok & _checks.all_finite((us, ws, fs))

        scale = _depth_scale(len(layers_g), power, depth_scaling)
        out = _select(ok, _precondition(updates, layers_g, us, ws, fs, scale, q), zeros)
        kept = (
            state.ema_weight,
            state.output_sums,
            state.input_sums,
            state.output_bases,
            state.input_bases,
            state.weights,
        )
        fields = _select(ok, (ema_weight, tuple(g_sums), tuple(a_sums), tuple(us), tuple(ws), tuple(fs)), kept)
        notfinite_count, last_finite, total_notfinite = _skip_counters(state, ok)
        new_state = FractionalKFACState(
            count=jnp.where(ok, optax.safe_increment(count), count),
            ema_weight=fields[0],
            output_sums=fields[1],
            input_sums=fields[2],
            output_bases=fields[3],
            input_bases=fields[4],
            weights=fields[5],
            notfinite_count=notfinite_count,
            last_finite=last_finite,
            total_notfinite=total_notfinite,
        )
        return out, new_state

    # optax's stubs type update as TransformUpdateFn; this one takes its extra argument by keyword,
    # which GradientTransformationExtraArgs is for.
    return optax.GradientTransformationExtraArgs(init_fn, update_fn)  # type: ignore[arg-type]


def fractional_kfac(
    learning_rate: optax.ScalarOrSchedule,
    *,
    q: float = 2.0,
    damping: float = 1e-3,
    damping_mode: str = "factored",
    pi_adjusted: bool = True,
    decay: float = 0.95,
    factor_update_every: int = 1,
    root_update_every: int = 1,
    depth_scaling: bool = False,
    rcond: float | None = None,
) -> optax.GradientTransformationExtraArgs:
    """Fractional K-FAC optimizer: :func:`scale_by_fractional_kfac` then ``−learning_rate``.

    ``params ← params − η · direction`` with ``direction_i = s_i f(G_i ⊗ A_i) [∇w_i | ∇b_i]``
    (module docstring). ``learning_rate`` is a float, a 0-d array or an optax schedule; the
    other options are those of :func:`scale_by_fractional_kfac`. Works under
    ``optax.inject_hyperparams`` (e.g. ``inject_hyperparams(fractional_kfac)(learning_rate=
    schedule, damping=schedule)``). Use it like any optax optimizer, passing the statistics::

        opt = fractional_kfac(0.1, q=2.0, damping=1e-3)
        state = opt.init(params)
        grads = jax.grad(loss)(params, x, y)
        updates, state = opt.update(grads, state, params,
                                    curvature=lambda: kfac_statistics(model, params, x))
        params = optax.apply_updates(params, updates)
    """
    _checks.check_learning_rate(learning_rate)
    return optax.chain(
        scale_by_fractional_kfac(
            q=q,
            damping=damping,
            damping_mode=damping_mode,
            pi_adjusted=pi_adjusted,
            decay=decay,
            factor_update_every=factor_update_every,
            root_update_every=root_update_every,
            depth_scaling=depth_scaling,
            rcond=rcond,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
