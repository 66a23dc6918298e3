"""Singular-mode theory, map dynamics, scaling laws and mode projection (paper §3, §4, S.I.).

Everything here is a formula of the paper (equation numbers refer to
``paper/curvature-corrected-learning-dynamics.txt``) made exact and executable; the full-matrix
dynamics (:func:`curvdyn.simulate`) is the ground truth these formulas are tested against.

**One singular mode** (§3.1, §3.3, S.I.2). With weights aligned to the target's singular
vectors (footnote 2, :func:`curvdyn.init_aligned`) every mode k of the map is a product of
scalars ``σ̄ = σ_1 ⋯ σ_d`` (one per layer) that evolve on their own. Notation:
``σ_Δ = σ̄ − σ̄*`` (displacement), ``j_i = ∂σ̄/∂σ_i = Π_{k≠i} σ_k`` (coupling, computed as a
product so that ``σ_i = 0`` is fine), ``‖j‖² = Σ_i j_i²``. At η = 1 the velocities are

=================  =================================================  ==========================
rule               ``σ̇_i``                                            conserved (i, i+1)
=================  =================================================  ==========================
sgd                ``−σ_Δ j_i``                            (eq. 6)    ``σ_i² − σ_{i+1}²`` (7)
ngd / q-NGD        ``−σ_Δ j_i / ‖j‖^{2/q}``          (eqs. 12, 14)    ``σ_i² − σ_{i+1}²``
damped-ngd         ``−(ε+1) σ_Δ j_i / (ε + ‖j‖²)``         (eq. 18)   ``σ_i² − σ_{i+1}²``
ngd-d              ``−σ_Δ / (d j_i)``                      (eq. 24)   ``σ_i / σ_{i+1}``
q-NGD-d            ``−d^{−1/q} σ_Δ sign(j_i)|j_i|^{1−2/q}``  (eq. 25)  ``|σ_i|^{2−2/q} − |σ_{i+1}|^{2−2/q}``
sqrt-ngd-d         ``−σ_Δ sign(j_i) / √d``                 (eq. 26)   ``|σ_i| − |σ_{i+1}|``
=================  =================================================  ==========================

Eq. (18) written with ``a = ε/‖j‖`` equals the damped form in the table (DESIGN.md). A block
rule's factor ``d^{−1/q}`` is ``rule.layer_scales(d)`` (the per-layer rates η_i when given).
Every rule applies a function ``f`` of the curvature eigenvalue the mode sees — ``κ = ‖j‖²``
for the full rules, ``κ_i = j_i²`` for layer i of a block rule — to the gradient ``σ_Δ j_i``:
``σ̇_i = −η s_i f(κ) σ_Δ j_i`` with ``f(κ) = κ^{−1/q}`` (q-NGD; 1 for SGD),
``(ε+1)/(ε+κ)`` (damped) or ``(κ+λ)^{−1/q}`` (Levenberg–Marquardt shift λ). Where ``κ = 0`` the
pseudo-inverse convention of the full-matrix rules gives ``f = 0``. A mode is *inactive*
(footnote 3) when every ``j_i`` vanishes — at least two of its ``σ_i`` are zero, e.g. a mode
cut by a bottleneck — and then it is frozen under every rule. (With exactly one zero factor
the mode has ``σ̄ = 0`` but is still active: ``j_i ≠ 0`` for the zero layer.)

**Map dynamics** (§3.2). ``σ̄̇ = Σ_i σ̇_i j_i`` (eq. 19) gives, for q-NGD,
``σ̄̇ = −η σ_Δ ‖j‖^{2(1−1/q)}`` (eq. 20); for balanced weights (``σ_i = σ̄^{1/d}``)
``σ̄̇ = −η̄ (σ̄ − σ̄*) σ̄^p`` (eq. 21) with stiffness ``p = 2(d−1)(q−1)/(dq)`` and depth-calibrated
rate ``η̄ = η d^{1−1/q}``. :func:`map_solution` solves eq. (21) exactly for every p ≥ 0.

**Scaling laws** (S.I.3): ``‖ẇ‖/√L ∝ α^{(d−1)(1−2/q)}``, ``|L̇/L| ∝ α^{(d−1)(2−2/q)}``.

**Mode projection** (§4, Fig. 3D): the network's input–output correlation ``W Σ`` projected on
the singular vectors of the task's ``Σ_yx = W* Σ`` (= ``Y Xᵀ/P`` for a data task).

``q = math.inf`` means SGD throughout.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Optional, Sequence

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from curvdyn._validate import check_positive, check_q
from curvdyn.network import as_weights, gradient, loss
from curvdyn.rules import Rule, check_compatible, get_rule
from curvdyn.simulate import save_times
from curvdyn.task import Task

__all__ = [
    "coupling",
    "coupling_norm",
    "is_active",
    "mode_velocity",
    "map_velocity",
    "constant_of_motion",
    "ModeTrajectory",
    "simulate_modes",
    "stiffness",
    "depth_calibrated_rate",
    "effective_depth",
    "balanced_map_velocity",
    "map_solution",
    "map_time",
    "half_max_time",
    "scaling_exponents",
    "balanced_update_rates",
    "measure_update_rates",
    "scaling_curve",
    "measure_scaling_exponents",
    "correlation_modes",
    "project_modes",
    "aligned_bases",
    "layer_mode_values",
]


def _as_rule(rule) -> Rule:
    if isinstance(rule, str):
        return get_rule(rule)
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be a Rule (from get_rule) or a rule name, got {type(rule).__name__}")
    return rule


def _check_depth(d) -> int:
    if int(d) != d or d < 1:
        raise ValueError(f"depth d must be a positive integer, got {d}")
    return int(d)


# =======================================================================================
# one singular mode: coupling, velocity, constants of motion
# =======================================================================================


def coupling(sigmas) -> jax.Array:
    """The coupling (Jacobian) ``j_i = ∂σ̄/∂σ_i = Π_{k≠i} σ_k`` (eq. 6, S.I.2).

    Computed from prefix and suffix products — no division — so it is exact when some
    ``σ_i = 0`` (``σ̄/σ_i`` would be 0/0).

    Args:
      sigmas: per-layer mode values ``σ_1..σ_d``, shape ``(..., d)`` (e.g. ``(modes, d)``).

    Returns:
      ``j``, the same shape as ``sigmas``.
    """
    s = jnp.asarray(sigmas, dtype=jnp.result_type(float))
    if s.ndim == 0:
        raise ValueError("sigmas must have a last axis of length d (one value per layer)")
    ones = jnp.ones_like(s[..., :1])
    prefix = jnp.cumprod(jnp.concatenate([ones, s[..., :-1]], axis=-1), axis=-1)
    rev = jnp.flip(s[..., 1:], axis=-1)
    suffix = jnp.flip(jnp.cumprod(jnp.concatenate([ones, rev], axis=-1), axis=-1), axis=-1)
    return prefix * suffix


def coupling_norm(sigmas) -> jax.Array:
    """The coupling strength ``‖j‖ = (Σ_i j_i²)^{1/2}`` (eq. 8), shape ``sigmas.shape[:-1]``."""
    j = coupling(sigmas)
    return jnp.sqrt(jnp.sum(j * j, axis=-1))


def is_active(sigmas) -> jax.Array:
    """Whether each mode is active: some ``j_i ≠ 0`` (footnote 3); shape ``sigmas.shape[:-1]``.

    An inactive mode (at least two zero ``σ_i``) is frozen under every rule.
    """
    return jnp.any(coupling(sigmas) != 0, axis=-1)


def _rule_params(rule: Rule, d: int) -> tuple[np.ndarray, ...]:
    """A rule as numbers ``(gain, shift, power, block, scales)``: ``f(κ) = gain (κ+shift)^{−power}``.

    Numbers rather than a static rule, so one compiled vector field serves every rule.
    """
    if rule.eps is not None:  # damped NGD (eq. 17/18): (ε+1)/(ε+κ); ε = 0 is NGD
        gain, shift, power = rule.eps + 1.0, rule.eps, 1.0
    else:
        gain, shift = 1.0, rule.lm_damping
        power = 0.0 if math.isinf(rule.q) else 1.0 / rule.q
    scales = np.asarray(rule.layer_scales(d), dtype=np.float64) if rule.block else np.ones(d)
    return (
        np.float64(gain),
        np.float64(shift),
        np.float64(power),
        np.float64(1.0 if rule.block else 0.0),
        scales,
    )


def _velocity_core(s, target, gain, shift, power, block, scales, eta):
    """``σ̇_i = −η s_i f(κ_i) σ_Δ j_i`` for ``s`` of shape ``(..., d)``, ``target`` of ``(...)``."""
    j = coupling(s)
    sigma_delta = jnp.prod(s, axis=-1) - target
    norm2 = jnp.sum(j * j, axis=-1, keepdims=True)
    kappa = jnp.where(block > 0, j * j, jnp.broadcast_to(norm2, j.shape))
    base = kappa + shift
    positive = base > 0
    # Pseudo-inverse convention: a zero eigenvalue (κ = 0 without shift) gets f = 0.
    factor = jnp.where(positive, gain * jnp.where(positive, base, 1.0) ** (-power), 0.0)
    return -eta * scales * factor * sigma_delta[..., None] * j


_velocity_jit = jax.jit(_velocity_core)


def _prepare_modes(sigmas, target):
    s = jnp.asarray(sigmas, dtype=jnp.float64)
    if s.ndim == 0:
        raise ValueError("sigmas must have shape (d,) or (..., d)")
    tgt = jnp.broadcast_to(jnp.asarray(target, dtype=jnp.float64), s.shape[:-1])
    return s, tgt


def mode_velocity(rule, sigmas, target, *, eta: float = 1.0) -> jax.Array:
    """The singular-mode velocity ``σ̇`` of a rule (eqs. 6, 12, 14, 18, 24, 25, 26).

    ``σ̇_i = −η s_i f(κ_i) σ_Δ j_i`` with ``σ_Δ = σ̄ − σ̄*``, ``j_i = Π_{k≠i} σ_k`` and

    * sgd: ``f = 1`` → ``−η σ_Δ j_i`` (eq. 6);
    * ngd, sqrt-ngd, frac-ngd: ``f = ‖j‖^{−2/q}`` → ``−η σ_Δ j_i/‖j‖^{2/q}`` (eqs. 12, 14);
    * damped-ngd: ``f = (ε+1)/(ε+‖j‖²)`` (eq. 18 in the DESIGN.md form);
    * ngd-d, sqrt-ngd-d, frac-ngd-d: ``s_i f = s_i |j_i|^{−2/q}`` with ``s_i`` from
      ``rule.layer_scales(d)`` (``d^{−1/q}``) → ``−η d^{−1/q} σ_Δ sign(j_i)|j_i|^{1−2/q}``
      (eq. 25; ``−η σ_Δ/(d j_i)`` for q = 1, eq. 24; ``−η σ_Δ sign(j_i)/√d`` for q = 2, eq. 26);
    * a rule's Levenberg–Marquardt shift λ: ``f = (κ + λ)^{−1/q}``.

    ``κ = 0`` gives ``f = 0`` (pseudo-inverse), so inactive modes are frozen. The rule's
    ``rcond`` is not modelled: in the full matrices it cuts eigenvalues below
    ``rcond·λ_max`` (λ_max over all modes), which matters only for modes whose ``κ`` is
    ~1e-13 of the largest one.

    Args:
      rule: a :class:`~curvdyn.rules.Rule` or a rule name.
      sigmas: per-layer values, shape ``(d,)`` or ``(modes, d)`` (any leading axes).
      target: the target's mode value ``σ̄*``, a number or shape ``sigmas.shape[:-1]``.
      eta: learning rate η.

    Returns:
      ``σ̇``, the shape of ``sigmas``. This equals the full-matrix velocity ``−η·direction``
      of aligned weights projected on the mode (tested to 1e-9).
    """
    rule = _as_rule(rule)
    s, tgt = _prepare_modes(sigmas, target)
    return _velocity_jit(s, tgt, *_rule_params(rule, s.shape[-1]), jnp.float64(eta))


def map_velocity(rule, sigmas, target, *, eta: float = 1.0) -> jax.Array:
    """The mode's map velocity ``σ̄̇ = Σ_i σ̇_i j_i`` (eq. 19), shape ``sigmas.shape[:-1]``.

    For q-NGD this is ``−η σ_Δ ‖j‖^{2(1−1/q)}`` (eq. 20); for balanced weights eq. (21), see
    :func:`balanced_map_velocity`.
    """
    s, _ = _prepare_modes(sigmas, target)
    return jnp.sum(mode_velocity(rule, s, target, eta=eta) * coupling(s), axis=-1)


def constant_of_motion(rule, sigmas) -> jax.Array:
    """The rule's conserved quantities of one mode, for consecutive layers ``(i, i+1)``.

    * sgd, ngd, sqrt-ngd, frac-ngd, damped-ngd (also with an LM shift): the hyperbolic
      ``σ_i² − σ_{i+1}²`` (eq. 7; the mode form of eq. 4);
    * ngd-d: ``σ_i / σ_{i+1}`` (§3.3);
    * frac-ngd-d: ``|σ_i|^{2(1−1/q)} − |σ_{i+1}|^{2(1−1/q)}`` (§3.3; absolute values because
      the exponent is not an even integer), ``|σ_i| − |σ_{i+1}|`` for sqrt-ngd-d, and the
      hyperbolic one at q = ∞.

    With unequal per-layer rates η_i (``layer_rates``) the block forms generalize to
    ``|σ_i|^{2−2/q}/η_i − |σ_{i+1}|^{2−2/q}/η_{i+1}`` and, for q = 1,
    ``ln|σ_i|/η_i − ln|σ_{i+1}|/η_{i+1}`` (rates must be positive).

    Args:
      rule: a rule or rule name.
      sigmas: shape ``(..., d)``.

    Returns:
      shape ``(..., d−1)``.

    Raises:
      ValueError: a block rule with an LM shift (no closed-form constant of motion).
    """
    rule = _as_rule(rule)
    s = jnp.asarray(sigmas, dtype=jnp.float64)
    if s.ndim == 0:
        raise ValueError("sigmas must have shape (d,) or (..., d)")
    d = s.shape[-1]
    if not rule.block:
        sq = s * s
        return sq[..., :-1] - sq[..., 1:]
    if rule.lm_damping:
        raise ValueError("a block rule with Levenberg–Marquardt damping has no closed-form constant of motion")
    rates = np.asarray(rule.layer_scales(d), dtype=np.float64)
    equal = bool(np.all(rates == rates[0]))
    q = rule.q
    if q == 1.0:
        if equal:
            return s[..., :-1] / s[..., 1:]
        phi = jnp.log(jnp.abs(s)) / rates
    else:
        c = 2.0 if math.isinf(q) else 2.0 * (1.0 - 1.0 / q)
        phi = jnp.abs(s) ** c
        if not equal:
            phi = phi / rates
    return phi[..., :-1] - phi[..., 1:]


# =======================================================================================
# integrating many modes at once
# =======================================================================================


@dataclasses.dataclass
class ModeTrajectory:
    """Singular-mode dynamics recorded at the save times.

    Attributes:
      t: times, (T,).
      sigmas: per-layer values ``σ_i(t)``, (T, modes, d) (``(T, d)`` for a single mode given
        as shape ``(d,)``).
      map: ``σ̄(t) = Π_i σ_i``, (T, modes) (or (T,)).
      loss: ``½ Σ_k (σ̄_k − σ̄*_k)²`` (T,) — the full loss of aligned weights with Σ = I when
        every mode of ``W*`` is listed (inactive ones included).
      constants: :func:`constant_of_motion` along the path, (T, modes, d−1) (or (T, d−1));
        ``None`` when the rule has none in closed form.
      targets: ``σ̄*`` per mode.
      status: ``"completed"``, ``"max_steps"`` or ``"failed"``.
      message: what happened, in words.
      n_steps: the solver's accepted + rejected steps.
    """

    t: np.ndarray
    sigmas: np.ndarray
    map: np.ndarray
    loss: np.ndarray
    constants: Optional[np.ndarray]
    targets: np.ndarray
    status: str
    message: str
    n_steps: int


def _solvers() -> dict:
    # The same solver names (and classes) as curvdyn.simulate.
    from curvdyn.simulate import SOLVERS

    return SOLVERS


def _mode_field(t, y, args):
    return _velocity_core(y, *args)


def _make_solver(solver: str, max_steps: int):
    cls = _solvers()[solver]

    def run(y0, args, ts, rtol, atol):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(_mode_field),
            cls(),
            t0=ts[0],
            t1=ts[-1],
            dt0=None,
            y0=y0,
            args=args,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps,
            throw=False,
        )
        return sol.ys, sol.result._value, sol.stats["num_steps"]

    return jax.jit(run)


_SOLVER_CACHE: dict = {}


def simulate_modes(
    rule,
    sigmas0,
    targets,
    t_end: float,
    *,
    eta: float = 1.0,
    n_save: int = 201,
    save_at: Optional[Sequence[float]] = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    solver: str = "tsit5",
    max_steps: int = 100_000,
) -> ModeTrajectory:
    """Integrate the singular-mode ODEs ``σ̇ = mode_velocity(rule, σ, σ̄*)`` of many modes at once.

    The same adaptive solver and options as :func:`curvdyn.simulate` (diffrax, float64,
    PID step control with ``rtol``/``atol``), so an aligned full-matrix run and this reduced
    run are comparable step for step in accuracy. One compiled program serves every rule
    (rule parameters are traced numbers), per solver, ``max_steps`` and array shape.

    Args:
      rule: a rule or rule name.
      sigmas0: initial per-layer values, shape ``(modes, d)`` or ``(d,)``.
      targets: ``σ̄*`` per mode, shape ``(modes,)`` or a number.
      t_end: final time (> 0).
      eta: learning rate η.
      n_save: number of equally spaced save times on ``[0, t_end]`` (ignored with ``save_at``).
      save_at: explicit strictly increasing save times starting at 0; the run ends at the
        last one (as in :func:`curvdyn.simulate`).
      rtol, atol: solver tolerances; solver: ``"tsit5"``, ``"dopri5"``, ``"dopri8"``, ``"bosh3"``.
      max_steps: cap on solver steps; reaching it returns status ``"max_steps"`` with a
        ``RuntimeWarning`` (values after the stop are ``inf``, diffrax's convention).

    Returns:
      a :class:`ModeTrajectory`.
    """
    rule = _as_rule(rule)
    s0 = np.asarray(sigmas0, dtype=np.float64)
    single = s0.ndim == 1
    s0 = np.atleast_2d(s0)
    if s0.ndim != 2 or s0.shape[-1] < 1:
        raise ValueError(f"sigmas0 must have shape (modes, d) or (d,), got {np.shape(sigmas0)}")
    if not np.all(np.isfinite(s0)):
        raise ValueError("sigmas0 has non-finite entries")
    tg = np.broadcast_to(np.asarray(targets, dtype=np.float64), s0.shape[:1]).copy()
    if not np.all(np.isfinite(tg)):
        raise ValueError("targets has non-finite entries")
    t_end = check_positive(t_end, "t_end")
    ts = save_times(t_end, n_save, save_at)
    for name, val in (("rtol", rtol), ("atol", atol), ("eta", eta)):
        check_positive(val, name)
    if solver not in _solvers():
        raise ValueError(f"unknown solver {solver!r}; choose one of {sorted(_solvers())}")
    if int(max_steps) != max_steps or max_steps < 1:
        raise ValueError(f"max_steps must be a positive integer, got {max_steps}")

    key = (solver, int(max_steps))
    if key not in _SOLVER_CACHE:
        _SOLVER_CACHE[key] = _make_solver(solver, int(max_steps))
    args = tuple(jnp.asarray(a) for a in _rule_params(rule, s0.shape[-1]))
    ys, result, n_steps = _SOLVER_CACHE[key](
        jnp.asarray(s0), (jnp.asarray(tg),) + args + (jnp.float64(eta),), jnp.asarray(ts),
        jnp.float64(rtol), jnp.float64(atol),
    )
    ys = np.asarray(ys)
    code = int(result)
    if code == int(diffrax.RESULTS.successful._value):
        status, message = "completed", f"reached t_end = {ts[-1]:.6g}"
    elif code == int(diffrax.RESULTS.max_steps_reached._value):
        status, message = "max_steps", "the ODE solver reached max_steps before t_end (later values are inf)"
    else:
        status, message = "failed", f"the ODE solver failed (diffrax result code {code}); later values are inf"
    if status != "completed":
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    maps = np.prod(ys, axis=-1)
    loss_t = 0.5 * np.sum((maps - tg) ** 2, axis=-1)
    try:
        consts = np.asarray(constant_of_motion(rule, ys))
    except ValueError:
        consts = None
    if single:
        ys, maps = ys[:, 0], maps[:, 0]
        consts = None if consts is None else consts[:, 0]
    return ModeTrajectory(
        t=ts, sigmas=ys, map=maps, loss=loss_t, constants=consts, targets=tg if not single else tg[0:1],
        status=status, message=message, n_steps=int(n_steps),
    )


# =======================================================================================
# map dynamics (§3.2)
# =======================================================================================


def stiffness(d, q) -> float:
    """Stiffness of the balanced map dynamics ``p = 2(d−1)(q−1)/(dq)`` (eq. 21).

    ``q = math.inf`` (SGD) gives ``2(d−1)/d``; q = 1 (NGD) gives 0; q = 2 gives ``1 − 1/d``.
    """
    d, q = _check_depth(d), check_q(q)
    if math.isinf(q):
        return 2.0 * (d - 1) / d
    return 2.0 * (d - 1) * (q - 1) / (d * q)


def depth_calibrated_rate(eta, d, q) -> float:
    """Depth-calibrated learning rate ``η̄ = η d^{1−1/q}`` (eq. 21); ``η d`` for SGD."""
    d, q = _check_depth(d), check_q(q)
    return float(eta) * d ** (1.0 - (0.0 if math.isinf(q) else 1.0 / q))


def effective_depth(d, q) -> float:
    """Effective depth ``d_eff = dq/(d+q−1)`` (eq. 22): the SGD depth with the same stiffness.

    ``→ d`` as ``q → ∞`` (returned exactly for ``q = math.inf``) and ``→ q`` as ``d → ∞``;
    ``stiffness(d, q) == stiffness(effective_depth(d, q), inf)``.
    """
    d, q = _check_depth(d), check_q(q)
    if math.isinf(q):
        return float(d)
    return d * q / (d + q - 1.0)


def balanced_map_velocity(sigma_bar, p, target, *, eta_bar: float = 1.0):
    """Eq. (21): ``σ̄̇ = −η̄ (σ̄ − σ̄*) |σ̄|^p`` (``|σ̄|^p = σ̄^p`` for the paper's σ̄ ≥ 0)."""
    sb = jnp.asarray(sigma_bar, dtype=jnp.float64)
    return -eta_bar * (sb - target) * jnp.abs(sb) ** p


# ---- the exact solution of eq. (21) ---------------------------------------------------
#
# Rescale x = σ̄/σ̄*, τ = η̄ σ̄*^p t: dx/dτ = (1 − x) x^p, so t(σ̄) is the integral
#     τ(x) = ∫_{x0}^{x} dy / ((1 − y) y^p).
# With n = ceil(p), a = n − p ∈ [0, 1) and the identity
#     1/((1−y) y^p) = Σ_{k<n} y^{k−p} + y^a/(1−y),   y^a/(1−y) = 1/(1−y) − (1 − y^a)/(1−y),
# the integral is a sum of powers (exact), a logarithm (exact) and
#     h_a(x) = ∫_0^x (1 − y^a)/(1 − y) dy,
# a bounded integrand summed as a power series: around 0 for x ≤ ½ (ratio ≤ ½) and, with
# h_a(1) = ψ(a+1) + γ (the harmonic number H_a), around 1 for x > ½:
#     h_a(x) = H_a − Σ_{m≥1} e_m (1−x)^m / m,   1 − (1−z)^a = Σ_{m≥1} e_m z^m.
# Both series converge at least like 2^{−m}; 64 terms reach float64 round-off. Nothing is
# integrated numerically, so endpoint singularities (y^{−p} at 0, 1/(1−y) at 1) cost nothing;
# x is carried as its logit s = ln(x/(1−x)) so that x and 1 − x are both exact near 0 and 1.

_N_SERIES = 64


def _softplus(z):
    return np.logaddexp(0.0, z)


def _h_series(a: float, x: np.ndarray, xc: np.ndarray) -> np.ndarray:
    """``h_a(x) = ∫_0^x (1 − y^a)/(1 − y) dy`` for ``x ∈ [0, 1)`` (``xc = 1 − x``), ``a ≥ 0``."""
    out = np.zeros_like(x)
    if a == 0.0:
        return out
    m = np.arange(_N_SERIES, dtype=np.float64)
    low = x <= 0.5
    if np.any(low):
        xl = x[low][:, None]
        with np.errstate(divide="ignore", invalid="ignore", under="ignore"):
            terms = xl ** (m + 1) / (m + 1) - xl ** (m + a + 1) / (m + a + 1)
        out[low] = np.sum(np.where(xl > 0, terms, 0.0), axis=1)
    high = ~low
    if np.any(high):
        k = np.arange(_N_SERIES - 1, dtype=np.float64)
        # e_m = −Π_{k<m} (k − a)/(k + 1), m = 1.._N_SERIES−1
        e = -np.cumprod((k - a) / (k + 1))
        mm = np.arange(1, _N_SERIES, dtype=np.float64)
        zc = xc[high][:, None]
        with np.errstate(under="ignore"):
            tail = np.sum(e * zc**mm / mm, axis=1)
        out[high] = (special.digamma(a + 1.0) + np.euler_gamma) - tail
    return out


class _MapIntegral:
    """``τ(x) = ∫_{x0}^{x} dy/((1−y) y^p)`` for ``x, x0 ∈ [0, 1)``, evaluated from the logit of x.

    ``x0 = 0`` is allowed only for ``p < 1`` (the integral diverges at 0 otherwise).
    """

    def __init__(self, p: float, x0: float):
        self.p = float(p)
        self.x0 = float(x0)
        self.n = max(int(math.ceil(self.p)), 0)
        # a ∈ [0, 1) for p ≥ 0; a = −p > 0 for the p < 0 of the reflected (from-above) problem
        self.a = self.n - self.p
        self.powers = [k - self.p + 1.0 for k in range(self.n)]
        if self.x0 > 0:
            self.ln_x0 = math.log(self.x0)
            self.ln_xc0 = math.log1p(-self.x0)
            self.h0 = float(_h_series(self.a, np.array([self.x0]), np.array([1.0 - self.x0]))[0])
        else:
            if self.p >= 1:
                raise ValueError("the integral from 0 diverges for p >= 1")
            self.ln_x0 = -math.inf
            self.ln_xc0 = 0.0
            self.h0 = 0.0

    def from_logit(self, s: np.ndarray) -> np.ndarray:
        s = np.asarray(s, dtype=np.float64)
        ln_x = -_softplus(-s)
        ln_xc = -_softplus(s)
        with np.errstate(under="ignore"):
            x, xc = np.exp(ln_x), np.exp(ln_xc)
        total = -(ln_xc - self.ln_xc0) - (_h_series(self.a, x, xc) - self.h0)
        for c in self.powers:
            total = total + self._power_diff(c, ln_x)
        return total

    def _power_diff(self, c: float, ln_x: np.ndarray) -> np.ndarray:
        """``∫_{x0}^{x} y^{c−1} dy = (x^c − x0^c)/c`` (``ln(x/x0)`` for c = 0), without cancellation."""
        if self.x0 == 0.0:  # only reached with c > 0
            return np.exp(c * ln_x) / c
        big_l = ln_x - self.ln_x0
        z = c * big_l
        with np.errstate(over="ignore", invalid="ignore"):
            near = np.abs(z) < 1.0
            # (x^c − x0^c)/c = x0^c · L · exprel(cL), exprel(z) = (e^z − 1)/z: exact as c → 0.
            stable = math.exp(c * self.ln_x0) * big_l * special.exprel(np.where(near, z, 0.0))
            direct = (np.exp(c * ln_x) - math.exp(c * self.ln_x0)) / (c if c != 0 else 1.0)
        return np.where(near, stable, direct)

    def derivative_logit(self, s: np.ndarray) -> np.ndarray:
        """``dτ/ds = x^{1−p}`` (``dτ/dx = 1/((1−x)x^p)``, ``dx/ds = x(1−x)``)."""
        return np.exp((1.0 - self.p) * (-_softplus(-np.asarray(s, dtype=np.float64))))

    def invert(self, tau: np.ndarray) -> np.ndarray:
        """The logit s with ``τ(s) = tau`` (tau ≥ 0), by safeguarded Newton on a bracket.

        ``τ`` increases with s, so a bracket [lo, hi] with τ(lo) ≤ tau ≤ τ(hi) always holds the
        root; a Newton step that leaves it is replaced by bisection. Converged when the
        step (or the bracket) is below 1e-15·max(1, |s|), i.e. x to ~1e-15 relative.
        """
        tau = np.atleast_1d(np.asarray(tau, dtype=np.float64))
        ln_half = math.log(0.5)
        if self.x0 > 0:
            lo = np.full(tau.shape, math.log(self.x0) - math.log1p(-self.x0))
            hi = np.maximum(lo, 0.0) + 1.0
        else:
            # From 0 (p < 1, c = 1 − p): y^{−p} ≤ 1/((1−y)y^p) everywhere and ≤ 2y^{−p} on
            # [0, ½], so (cτ/2)^{1/c} ∧ ½ ≤ x ≤ (cτ)^{1/c}; below x ≈ 5e-324 (s = −745) σ̄ is
            # 0 in float64.
            c = 1.0 - self.p
            with np.errstate(divide="ignore"):
                ln_lo = np.minimum(np.log(c * tau / 2.0) / c, ln_half)
                ln_hi = np.log(c * tau) / c
            lo = np.maximum(ln_lo - np.log1p(-np.exp(ln_lo)), -745.0)
            small = ln_hi < ln_half
            hi_small = np.maximum(ln_hi - np.log1p(-np.exp(np.minimum(ln_hi, ln_half))), -744.0)
            hi = np.where(small, hi_small, np.maximum(lo, 0.0) + 1.0)
        for _ in range(200):  # τ grows at least like s/2 for s ≥ 0: this terminates fast
            gap = tau - self.from_logit(hi)
            if not np.any(gap > 0):
                break
            hi = np.where(gap > 0, hi + 2.0 * gap + 1.0, hi)
        s = 0.5 * (lo + hi)
        active = np.nonzero(tau > 0)[0]
        s[tau <= 0] = lo[tau <= 0]
        for _ in range(400):
            if active.size == 0:
                break
            sa, la, ha, ta = s[active], lo[active], hi[active], tau[active]
            f = self.from_logit(sa) - ta
            la = np.where(f <= 0, sa, la)
            ha = np.where(f >= 0, sa, ha)
            new = sa - f / self.derivative_logit(sa)
            bad = ~np.isfinite(new) | (new <= la) | (new >= ha)
            new = np.where(bad, 0.5 * (la + ha), new)
            tol = 1e-15 * np.maximum(1.0, np.abs(sa))
            done = (np.abs(new - sa) <= tol) | (ha - la <= tol) | (f == 0)
            s[active], lo[active], hi[active] = np.where(f == 0, sa, new), la, ha
            active = active[~done]
        return s


def _normalize_problem(p, target, eta_bar, init):
    p = float(p)
    if not (math.isfinite(p) and p >= 0):
        raise ValueError(f"p must be finite and >= 0, got {p}")
    target, eta_bar, init = float(target), float(eta_bar), float(init)
    for name, v in (("target", target), ("init", init)):
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
    if not (math.isfinite(eta_bar) and eta_bar > 0):
        raise ValueError(f"eta_bar must be positive and finite, got {eta_bar}")
    sign = 1.0
    if target < 0 or (target == 0 and init < 0):  # σ̄ → −σ̄ is a symmetry of eq. (21)
        sign, target, init = -1.0, -target, -init
    if init < 0:
        raise ValueError(
            "init and target have opposite signs: the mode would pass through σ̄ = 0, which "
            "eq. (21) for balanced weights does not describe"
        )
    return p, target, eta_bar, init, sign


def _closed_form_p(p: float) -> Optional[float]:
    for c in (0.0, 0.5, 1.0):
        if abs(p - c) <= 1e-14:
            return c
    return None


def map_solution(t, p, target, *, eta_bar: float = 1.0, init: float = 0.0, method: str = "auto") -> np.ndarray:
    """The exact solution ``σ̄(t)`` of eq. (21), ``σ̄̇ = −η̄ (σ̄ − σ̄*) σ̄^p``, ``σ̄(0) = init``.

    Closed forms (§3.2; ``method="closed"`` or ``"auto"`` at these p), for ``0 ≤ σ̄(0) < σ̄*``:

    * p = 0: ``σ̄* + (σ̄(0) − σ̄*) e^{−η̄t}`` (NGD; ``σ̄*(1 − e^{−η̄t})`` from 0);
    * p = ½: ``σ̄* tanh²(η̄√σ̄* t/2 + atanh√(σ̄(0)/σ̄*))`` (``coth`` above σ̄*);
    * p = 1: ``σ̄* / (1 + (σ̄*/σ̄(0) − 1) e^{−η̄σ̄* t})`` (logistic; Saxe et al. 2013).

    Every other p ≥ 0 (``method="general"``, or ``"auto"``) inverts
    ``t(σ̄) = ∫_{σ̄(0)}^{σ̄} dσ / (η̄ (σ̄* − σ) σ^p)`` (:func:`map_time`; exact series, no
    quadrature error) by safeguarded Newton to float64 round-off (relative ~1e-13). From
    ``σ̄(0) = 0`` this is the *nontrivial* solution for p < 1 (σ̄ ≡ 0 also solves eq. 21 there:
    the paper's zero-initial-condition curves are the maximal solution, leaving 0 at t = 0);
    for p ≥ 1 the only solution from 0 is σ̄ ≡ 0 (returned).

    Also: ``σ̄(0) > σ̄*`` (decay from above, solved through ``v = σ̄*/σ̄``), ``σ̄* = 0``
    (``σ̄(0)(1 + pη̄σ̄(0)^p t)^{−1/p}``), and negative ``σ̄*`` with ``σ̄(0) ≤ 0`` (by the symmetry
    σ̄ → −σ̄, ``σ̄^p`` read as ``|σ̄|^p``). ``σ̄(0)`` and ``σ̄*`` of opposite signs raise.

    Args:
      t: times ≥ 0 (any shape).
      p: stiffness (:func:`stiffness`).
      target: ``σ̄*``.
      eta_bar: ``η̄`` (:func:`depth_calibrated_rate`).
      init: ``σ̄(0)``.
      method: ``"auto"``, ``"closed"`` (p ∈ {0, ½, 1} only) or ``"general"``.

    Returns:
      ``σ̄(t)``, a float64 array of the shape of ``t``.
    """
    p, target, eta_bar, init, sign = _normalize_problem(p, target, eta_bar, init)
    t = np.asarray(t, dtype=np.float64)
    if np.any(~np.isfinite(t)) or np.any(t < 0):
        raise ValueError("times must be finite and >= 0")
    if method not in ("auto", "closed", "general"):
        raise ValueError(f"method must be 'auto', 'closed' or 'general', got {method!r}")
    closed = _closed_form_p(p)
    if method == "closed" and closed is None:
        raise ValueError(f"closed forms exist for p = 0, 1/2, 1 only, got p = {p}")
    if target == 0.0:
        out = init * np.exp(-eta_bar * t) if p == 0 else init * (1.0 + p * eta_bar * init**p * t) ** (-1.0 / p)
        return sign * out
    if init == target:
        return sign * np.full(t.shape, target)
    if init == 0.0 and p >= 1:
        return np.zeros(t.shape)
    tau = eta_bar * target**p * t
    x0 = init / target
    if closed is not None and method != "general":
        return sign * target * np.where(tau == 0, x0, _closed_x(closed, tau, x0))
    if x0 < 1:
        s = _MapIntegral(p, x0).invert(tau)
        with np.errstate(under="ignore"):
            x = np.exp(-_softplus(-s))
        x = np.where(tau == 0, x0, x)
        return sign * target * x
    # from above: v = σ̄*/σ̄ obeys dv/dτ = (1 − v) v^{1−p}, v(0) = 1/x0 < 1.
    s = _MapIntegral(1.0 - p, 1.0 / x0).invert(tau)
    v = np.exp(-_softplus(-s))
    out = np.where(tau == 0, init, target / v)
    return sign * out


def _closed_x(p: float, tau: np.ndarray, x0: float) -> np.ndarray:
    """Closed forms of ``dx/dτ = (1−x) x^p``, ``x(0) = x0``, p ∈ {0, ½, 1} (section 3.2)."""
    if p == 0.0:  # 1 − (1 − x0) e^{−τ}, written without cancellation for small τ
        return x0 * np.exp(-tau) - np.expm1(-tau)
    if p == 0.5:
        r0 = math.sqrt(x0)
        if x0 < 1:
            return np.tanh(tau / 2 + math.atanh(r0)) ** 2
        return 1.0 / np.tanh(tau / 2 + math.atanh(1.0 / r0)) ** 2
    if x0 == 0.0:
        return np.zeros_like(tau)
    return 1.0 / (1.0 + (1.0 / x0 - 1.0) * np.exp(-tau))


def map_time(sigma_bar, p, target, *, eta_bar: float = 1.0, init: float = 0.0, method: str = "auto") -> np.ndarray:
    """The time at which eq. (21)'s solution from ``init`` reaches ``sigma_bar``.

    ``t(σ̄) = ∫_{σ̄(0)}^{σ̄} dσ / (η̄ (σ̄* − σ) σ^p)`` — the inverse of :func:`map_solution`.
    Values between ``σ̄(0)`` and ``σ̄*`` give t ≥ 0; values on the far side of ``σ̄(0)`` (for
    σ̄(0) > 0) give the negative time of the same trajectory extended backwards; values not
    on the trajectory (beyond σ̄*, or of the wrong sign) give NaN. From ``σ̄(0) = 0`` with
    p ≥ 1 the time is ∞. Closed forms at p ∈ {0, ½, 1} (``method="auto"``/``"closed"``).
    """
    p, target, eta_bar, init, sign = _normalize_problem(p, target, eta_bar, init)
    if method not in ("auto", "closed", "general"):
        raise ValueError(f"method must be 'auto', 'closed' or 'general', got {method!r}")
    closed = _closed_form_p(p)
    if method == "closed" and closed is None:
        raise ValueError(f"closed forms exist for p = 0, 1/2, 1 only, got p = {p}")
    if target == 0.0:
        raise ValueError("map_time needs a nonzero target")
    sb = sign * np.asarray(sigma_bar, dtype=np.float64)
    x, x0 = sb / target, init / target
    scale = eta_bar * target**p
    out = np.full(x.shape, np.nan)
    if x0 >= 1:
        if x0 == 1:
            return np.where(x == 1, 0.0, np.nan)
        ok = (x > 1) & (x <= x0)
        if np.any(ok):
            v = 1.0 / x[ok]
            out[ok] = _MapIntegral(1.0 - p, 1.0 / x0).from_logit(np.log(v) - np.log1p(-v)) / scale
        return out
    ok = (x > 0) & (x < 1)
    if x0 == 0 and p >= 1:
        out[ok] = np.inf
        out[x == 0] = 0.0
        return out
    out[x == 0] = 0.0 if x0 == 0 else np.nan
    if np.any(ok):
        xo = x[ok]
        if closed is not None and method != "general":
            out[ok] = _closed_tau(closed, xo, x0) / scale
        else:
            out[ok] = _MapIntegral(p, x0).from_logit(np.log(xo) - np.log1p(-xo)) / scale
    return out


def _closed_tau(p: float, x: np.ndarray, x0: float) -> np.ndarray:
    """``τ(x) = ∫_{x0}^{x} dy/((1−y)y^p)`` in closed form for p ∈ {0, ½, 1}."""
    if p == 0.0:
        return np.log1p(-x0) - np.log1p(-x)
    if p == 0.5:
        return 2.0 * (np.arctanh(np.sqrt(x)) - math.atanh(math.sqrt(x0)))
    return (np.log(x) - np.log1p(-x)) - (math.log(x0) - math.log1p(-x0))


def half_max_time(p, target, *, eta_bar: float = 1.0, init: float = 0.0, method: str = "auto") -> float:
    """Time at which eq. (21)'s solution reaches ``σ̄*/2`` (the black circles of Fig. 2).

    From 0: ``ln 2/η̄`` (p = 0), ``2 atanh(2^{−1/2})/(η̄√σ̄*)`` (p = ½); p = 1 gives
    ``ln(σ̄*/σ̄(0) − 1)/(η̄ σ̄*)``; in general it scales as ``σ̄*^{−p}``. Negative when
    ``σ̄(0) > σ̄*/2``, ∞ for p ≥ 1 from 0, NaN when ``σ̄(0) > σ̄*`` (never reached).
    """
    return float(map_time(0.5 * float(target), p, target, eta_bar=eta_bar, init=init, method=method))


# =======================================================================================
# scaling laws (S.I.3)
# =======================================================================================


def scaling_exponents(d, q) -> tuple[float, float]:
    """Predicted power laws in the weight scale α (S.I.15–17), for depth d and correction q.

    Returns ``(e_w, e_L)``: ``‖ẇ‖/√L ∝ α^{e_w}``, ``e_w = (d−1)(1−2/q)`` (S.I.16), and
    ``|L̇/L| ∝ α^{e_L}``, ``e_L = (d−1)(2−2/q)`` (S.I.17). SGD (q = ∞): ``(d−1, 2(d−1))``;
    sqrt-NGD (q = 2 — the S.I. text's "q = 1/2" is a typo): ``(0, d−1)``; NGD: ``(−(d−1), 0)``.
    The block rules share them (Fig. S.I.1).
    """
    d, q = _check_depth(d), check_q(q)
    inv = 0.0 if math.isinf(q) else 1.0 / q
    return (d - 1) * (1.0 - 2.0 * inv), (d - 1) * (2.0 - 2.0 * inv)


def _spectral_factor_np(gain, shift, power, kappa):
    base = kappa + shift
    return gain * base ** (-power) if base > 0 else 0.0


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
    alpha = float(alpha)
    if not (math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be positive and finite, got {alpha}")
    gain, shift, power, block, scales = _rule_params(rule, d)
    j2 = alpha ** (2 * (d - 1))
    if block:
        c = scales * _spectral_factor_np(gain, shift, power, j2)
    else:
        c = np.full(d, _spectral_factor_np(gain, shift, power, d * j2))
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
    h = float(step)
    if not (h > 0 and math.isfinite(h)):
        raise ValueError(f"step must be positive, got {step}")
    up = measure_update_rates(tuple(math.exp(h) * w for w in ws), task, rule, method=method)
    down = measure_update_rates(tuple(math.exp(-h) * w for w in ws), task, rule, method=method)
    return tuple((math.log(u) - math.log(v)) / (2 * h) for u, v in zip(up, down))


# =======================================================================================
# mode projection (§4, Fig. 3D) and reading mode values from aligned weights
# =======================================================================================


def correlation_modes(task: Task) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SVD of the task's input–output correlation ``Σ_yx = W* Σ = U diag(s) Vᵀ``.

    For a task from data, ``W* Σ = Y Xᵀ/P`` (the data correlation of §4; the row space of
    ``Y Xᵀ`` lies in the range of Σ). Returns ``(U (n_d, r), s (r,), V (n_0, r))`` with
    ``r = min(n_d, n_0)``, ``s`` descending (Fig. 3A: the mode strengths).
    """
    corr = np.asarray(task.target) @ np.asarray(task.input_cov)
    u, s, vt = np.linalg.svd(corr, full_matrices=False)
    return u, s, vt.T


def project_modes(maps, task: Task, *, full: bool = False) -> np.ndarray:
    """Project a network's input–output correlation on the task's correlation modes (Fig. 3D).

    The network's input–output correlation is ``E[ŷ xᵀ] = W Σ``; its component on mode k of
    ``Σ_yx = W* Σ`` (:func:`correlation_modes`) is ``c_k = u_kᵀ W Σ v_k``. For the task
    itself ``c_k = s_k``; for Σ = I and aligned weights ``c_k`` is the map's mode value σ̄_k.
    Each ``c_k`` is invariant under the SVD's sign choice (u_k, v_k → −u_k, −v_k); within a
    degenerate singular value only the block as a whole is basis-independent.

    Args:
      maps: ``W`` of shape ``(n_d, n_0)``, or with leading axes ``(..., n_d, n_0)`` (e.g. a
        trajectory's ``traj.map`` of shape ``(T, n_d, n_0)``).
      task: the task defining Σ and ``Σ_yx``.
      full: return the whole matrix ``Uᵀ W Σ V`` (``(..., r, r)``) instead of its diagonal.

    Returns:
      ``(..., r)`` components (or ``(..., r, r)``).
    """
    u, _, v = correlation_modes(task)
    w = np.asarray(maps, dtype=np.float64)
    if w.shape[-2:] != tuple(task.target.shape):
        raise ValueError(f"maps must end in shape {tuple(task.target.shape)}, got {w.shape}")
    proj = np.einsum("ak,...ab,bc,cl->...kl", u, w, np.asarray(task.input_cov), v)
    return proj if full else np.diagonal(proj, axis1=-2, axis2=-1).copy()


def aligned_bases(target, widths: Sequence[int], r: Optional[int] = None) -> tuple[np.ndarray, ...]:
    """The bases ``U_0, ..., U_d`` of :func:`curvdyn.init_aligned` with ``key=None``.

    ``U_0 = R*`` and ``U_d = L*`` (the target's right/left singular vectors, first r) and the
    first r coordinate axes for the hidden layers; ``w_i = U_i diag(σ_i) U_{i−1}ᵀ``.
    """
    target = np.asarray(target, dtype=np.float64)
    widths = tuple(int(n) for n in widths)
    r = min(min(widths), min(target.shape)) if r is None else int(r)
    left, _, right_t = np.linalg.svd(target)
    d = len(widths) - 1
    return (right_t.T[:, :r],) + tuple(np.eye(widths[i])[:, :r] for i in range(1, d)) + (left[:, :r],)


def layer_mode_values(weights, bases: Sequence) -> np.ndarray:
    """Per-layer mode values ``σ_{i,k} = u_{i,k}ᵀ w_i u_{i−1,k}`` of aligned weights.

    Args:
      weights: ``(w_1, ..., w_d)``, each ``(..., n_i, n_{i−1})`` (e.g. ``traj.weights``).
      bases: ``(U_0, ..., U_d)``, ``U_i`` of shape ``(n_i, r)`` (:func:`aligned_bases`).

    Returns:
      ``(..., r, d)`` — the layout of :class:`ModeTrajectory` ``.sigmas``.
    """
    if len(bases) != len(weights) + 1:
        raise ValueError(f"need d + 1 = {len(weights) + 1} bases, got {len(bases)}")
    vals = [
        np.einsum("ak,...ab,bk->...k", np.asarray(bases[i + 1]), np.asarray(w), np.asarray(bases[i]))
        for i, w in enumerate(weights)
    ]
    return np.stack(vals, axis=-1)
