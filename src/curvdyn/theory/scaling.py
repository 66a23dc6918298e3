"""Scaling laws of the update dynamics (S.I.3): exponents, balanced prefactors, measurements."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from curvdyn._precision import require_float64
from curvdyn._validate import check_positive, check_q
from curvdyn.curvature.spectral import curvature_power
from curvdyn.network import as_weights, gradient, loss
from curvdyn.rules import check_compatible
from curvdyn.task import Task
from curvdyn.theory._common import _as_rule, _check_depth


def scaling_exponents(d, q) -> tuple[float, float]:
    """Predicted power laws in the weight scale α (S.I.15–17), for depth d and correction q.

    Returns ``(e_w, e_L)``: ``‖ẇ‖/√L ∝ α^{e_w}``, ``e_w = (d−1)(1−2/q)`` (S.I.16), and
    ``|L̇/L| ∝ α^{e_L}``, ``e_L = (d−1)(2−2/q)`` (S.I.17). SGD (q = ∞): ``(d−1, 2(d−1))``;
    sqrt-NGD (q = 2 — the S.I. text's "q = 1/2" is a typo): ``(0, d−1)``; NGD: ``(−(d−1), 0)``.
    The block rules share them (Fig. S.I.1).
    """
    d, q = _check_depth(d), check_q(q)
    inv = curvature_power(q)
    return (d - 1) * (1.0 - 2.0 * inv), (d - 1) * (2.0 - 2.0 * inv)


def balanced_update_rates(rule, d, alpha, *, eta: float = 1.0) -> tuple[float, float]:
    """Exact ``(‖ẇ‖/√L, |L̇/L|)`` for balanced weights with every singular value α.

    Setting: ``w_i = α Q_i`` with orthonormal ``Q_i`` such that ``A_iA_iᵀ = α^{2(d−i)} I`` and
    ``B_iᵀB_i = α^{2(i−1)} I`` (e.g. :func:`curvdyn.init_balanced` with ``n_0 = n_d`` ≤ every
    hidden width), ``Σ = I``. Every map mode then has ``j_i = α^{d−1}`` and the direction
    is ``c_i g_i`` layer by layer with ``c_i = f(dα^{2(d−1)})`` (full rules) or
    ``c_i = s_i f(α^{2(d−1)})`` (block rules); since ``‖g_i‖² = 2L α^{2(d−1)}``,

        ‖ẇ‖/√L = η α^{d−1} (2 Σ_i c_i²)^{1/2},   |L̇/L| = 2 η α^{2(d−1)} Σ_i c_i,

    independent of the target. For q-NGD (and its block version with the default rates):

        ‖ẇ‖/√L = η √2 d^{1/2−1/q} α^{(d−1)(1−2/q)},
        |L̇/L| = 2 η d^{1−1/q} α^{(d−1)(2−2/q)} = 2 η̄ α^{(d−1)(2−2/q)},

    i.e. SGD ``√(2d) α^{d−1}`` and ``2d α^{2(d−1)}``; sqrt-NGD ``√2`` and ``2√d α^{d−1}``;
    NGD ``√2 d^{−1/2} α^{−(d−1)}`` and ``2``.
    """
    rule = _as_rule(rule)
    d = _check_depth(d)
    alpha = check_positive(alpha, "alpha")
    require_float64("curvdyn.theory.balanced_update_rates")
    j2 = alpha ** (2 * (d - 1))
    # every mode sees one eigenvalue κ: j_i² per layer block, ‖j‖² = d j² for the full rules
    kappa = jnp.float64(j2 if rule.block else d * j2)
    factor = float(rule.spectral_function()(kappa, kappa))
    scales = np.asarray(rule.layer_scales(d), dtype=np.float64) if rule.block else np.ones(d)
    c = scales * factor
    speed = eta * math.sqrt(j2) * math.sqrt(2.0 * float(np.sum(c * c)))
    rate = 2.0 * eta * j2 * float(np.sum(c))
    return speed, rate


def measure_update_rates(weights, task: Task, rule, *, eta: float = 1.0, method: str = "auto") -> tuple[float, float]:
    """Measure ``(‖ẇ‖/√L, |L̇/L|)`` of a network under a rule (Fig. S.I.1).

    ``ẇ = −η d`` with ``d = rule.direction(weights, task)``: ``‖ẇ‖/√L = η‖d‖/√L`` and
    ``|L̇/L| = η|⟨g, d⟩|/L`` with the gradient g (``L̇ = ⟨g, ẇ⟩``).
    """
    rule = _as_rule(rule)
    ws = as_weights(weights)
    check_compatible(ws, task)
    speed, rate = _rates_jit(ws, task, rule.direction(ws, task, method=method), eta)
    return float(speed), float(rate)


@jax.jit
def _rates_jit(ws, task, direction, eta):
    g = gradient(ws, task)
    value = loss(ws, task)
    norm = jnp.sqrt(sum(jnp.sum(v * v) for v in direction))
    inner = sum(jnp.sum(a * b) for a, b in zip(g, direction))
    return eta * norm / jnp.sqrt(value), eta * jnp.abs(inner) / value


def scaling_curve(weights, task: Task, rule, scales, *, eta: float = 1.0, method: str = "auto"):
    """``(speeds, rates)``: :func:`measure_update_rates` of ``α·weights`` for each α in ``scales``."""
    ws = as_weights(weights)
    out = [measure_update_rates(tuple(a * w for w in ws), task, rule, eta=eta, method=method) for a in scales]
    return np.array([o[0] for o in out]), np.array([o[1] for o in out])


def measure_scaling_exponents(
    weights, task: Task, rule, *, step: float = 0.05, method: str = "auto"
) -> tuple[float, float]:
    """Local power-law exponents of ``‖ẇ‖/√L`` and ``|L̇/L|`` in the weight scale, at ``weights``.

    The central difference ``[ln Q(e^h w) − ln Q(e^{−h} w)]/(2h)`` with ``h = step``. For the
    balanced weights of :func:`balanced_update_rates` the laws are exact powers and this
    returns :func:`scaling_exponents` to round-off. For other weights the direction factor
    of the map displacement ``Δ = α^d W₀ − W*`` changes with α, which adds a correction of
    relative size ~``α^d ‖W₀‖/‖W*‖`` (small for small weights).
    """
    rule = _as_rule(rule)
    ws = as_weights(weights)
    h = check_positive(step, "step")
    up = measure_update_rates(tuple(math.exp(h) * w for w in ws), task, rule, method=method)
    down = measure_update_rates(tuple(math.exp(-h) * w for w in ws), task, rule, method=method)
    return (math.log(up[0]) - math.log(down[0])) / (2 * h), (math.log(up[1]) - math.log(down[1])) / (2 * h)
