"""One singular mode (§3.1, §3.3, S.I.2): coupling, velocities of every rule, constants of motion."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from curvdyn._precision import require_float64
from curvdyn._validate import check_real
from curvdyn.curvature.spectral import SpectralFunction
from curvdyn.rules import Rule
from curvdyn.theory._common import _as_rule


def coupling(sigmas) -> jax.Array:
    """The coupling (Jacobian) ``j_i = ∂σ̄/∂σ_i = Π_{k≠i} σ_k`` (eq. 6, S.I.2).

    Computed from prefix and suffix products — no division — so it is exact when some
    ``σ_i = 0`` (``σ̄/σ_i`` would be 0/0).

    Args:
      sigmas: per-layer mode values ``σ_1..σ_d``, shape ``(..., d)`` (e.g. ``(modes, d)``).

    Returns:
      ``j``, the same shape as ``sigmas``.
    """
    s = jnp.asarray(check_real(sigmas, "sigmas"), dtype=jnp.result_type(float))
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


def _rule_params(rule: Rule, d: int) -> tuple[np.float64, np.float64, np.float64, np.float64, np.ndarray]:
    """A rule as numbers ``(gain, shift, power, block, scales)``: its spectral function
    (:meth:`~curvdyn.rules.Rule.spectral_function`, ``f(κ) = gain (κ+shift)^{−power}``), whether it
    is a block rule, and its layer factors (:meth:`~curvdyn.rules.Rule.layer_scales`).

    Numbers rather than a static rule, so one compiled vector field serves every rule.
    """
    f = rule.spectral_function()
    scales = np.asarray(rule.layer_scales(d), dtype=np.float64) if rule.block else np.ones(d)
    return (
        np.float64(f.gain),
        np.float64(f.shift),
        np.float64(f.power),
        np.float64(1.0 if rule.block else 0.0),
        scales,
    )


def _velocity_core(s, target, gain, shift, power, block, scales, eta):
    """``σ̇_i = −η s_i f(κ_i) σ_Δ j_i`` for ``s`` of shape ``(..., d)``, ``target`` of ``(...)``."""
    j = coupling(s)
    sigma_delta = jnp.prod(s, axis=-1) - target
    norm2 = jnp.sum(j * j, axis=-1, keepdims=True)
    kappa = jnp.where(block > 0, j * j, jnp.broadcast_to(norm2, j.shape))
    # The mode sees one eigenvalue κ, not a spectrum: the cutoff is κ > 0 (rcond 0), so a zero
    # eigenvalue without shift gets f = 0, the pseudo-inverse convention.
    factor = SpectralFunction(power=power, shift=shift, gain=gain, rcond=0.0)(kappa, kappa)
    return -eta * scales * factor * sigma_delta[..., None] * j


_velocity_jit = jax.jit(_velocity_core)


def _prepare_modes(sigmas, target):
    require_float64("curvdyn.theory (mode velocities)")
    s = jnp.asarray(check_real(sigmas, "sigmas"), dtype=jnp.float64)
    if s.ndim == 0:
        raise ValueError("sigmas must have shape (d,) or (..., d)")
    tgt = jnp.broadcast_to(jnp.asarray(check_real(target, "target"), dtype=jnp.float64), s.shape[:-1])
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
    require_float64("curvdyn.theory.constant_of_motion")
    s = jnp.asarray(check_real(sigmas, "sigmas"), dtype=jnp.float64)
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
