"""Rational approximations of ``x^{−α}`` (0 < α < 1) with real negative poles, for fractional powers
of an operator through shifted linear solves.

``x^{−α} ≈ r(x) = Σ_j w_j / (x + t_j) + Σ_k c_k x^k`` uniformly in the *relative* error on
``[1/κ, 1]``; scaled to an interval ``[x_hi/κ, x_hi]`` it gives

    A^{−α} b ≈ Σ_j (w_j x_hi^{1−α}) (A + x_hi t_j)^{−1} b + Σ_k c_k x_hi^{−α−k} A^k b,

one shifted solve per pole (the way lattice QCD applies fractional powers of its operators).
With ``|r(x) − x^{−α}| ≤ δ x^{−α}`` on an interval that holds the spectrum of ``A``, the
parameter-space direction built from ``r(A)`` is within ``δ`` (relative) of the exact one
(:mod:`curvdyn.curvature.krylov`). Poles and weights depend on ``(α, δ)`` and ``κ`` only and
are computed here once, on the host, in float64 (NumPy/SciPy), for a ladder of ``κ`` tiers; the
compiled code picks the tier by the run-time ``κ`` (:func:`select_tier`).

Two constructions, chosen by measurement (benchmarks/README.md, "rational approximations"):

* ``α = 1/2``: Zolotarev's best relative approximation of ``x^{−1/2}`` (Jacobi elliptic
  functions, ``scipy.special.ellipj``), in partial fractions: ``n`` poles for error
  ``≈ 4 exp(−2π² n / ln(16 κ))`` — 16 / 28 / 42 poles at ``κ = 1e4 / 1e8 / 1e13`` for
  ``δ ≤ 1e-10``.
* other α: the trapezoidal rule in ``y = ln t`` of the Stieltjes integral
  ``x^{−α} = (sin πα / π) ∫ e^{(1−α) y} / (e^y + x) dy`` (step ``h ≈ 2π² / ln(1/δ)``, error
  ``O(e^{−2π²/h})`` from the poles of the integrand at ``Im y = ±π``), truncated where the
  omitted nodes can be summed in closed form: the nodes below the interval contribute
  ``c_{−1}/x`` (one pole at ``t = 0``), those above it a cubic polynomial in ``x`` (geometric
  series of the expansions in ``x e^{−y}``). About 1.5–1.8× Zolotarev's pole count
  (36 / 54 / 65 poles at ``κ = 1e3 / 1e9 / 1e13`` for α = 1/3). A best approximation for
  general α (Remez) would save those poles; the measured attempts (weights fitted to fixed
  poles by Lawson iterations or linear programming) did not reach 1e-11 in float64.

Every tier's error is verified on a fine logarithmic grid (``_verify``, 20 000 points plus the
extrema refined) and stored with a safety factor; :class:`RationalTable` carries it.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

#: κ tiers of every table: 10¹ … 10¹⁶ (one decade apart; a coarser ladder costs at most ~1 pole).
TIER_KAPPAS = tuple(10.0**k for k in range(1, 17))
#: Degree of the polynomial part of the trapezoid tables (x⁰ … x³).
_POLY_TERMS = 4
#: Safety factor on the verified grid maximum of the relative error.
_SAFETY = 1.5


@dataclasses.dataclass(frozen=True, eq=False)
class RationalTable:
    """Normalized approximations of ``x^{−α}`` on ``[1/κ_k, 1]`` for the tiers ``κ_k``.

    Attributes:
      alpha: the exponent α.
      delta: the target relative error the tiers were built for.
      kappas: ``(T,)`` the tiers' ``κ``.
      poles: ``(T, n_max)`` the ``t_j ≥ 0`` (padded with 1 where unused).
      weights: ``(T, n_max)`` the ``w_j > 0`` (0 where unused).
      counts: ``(T,)`` the number of poles used by each tier.
      poly: ``(T, 4)`` coefficients of ``x⁰ … x³`` (zeros for Zolotarev tables).
      errors: ``(T,)`` verified bound on ``max |r(x) x^α − 1|`` over ``[1/κ_k, 1]``.
      kind: ``"zolotarev"`` or ``"trapezoid"``.
    """

    alpha: float
    delta: float
    kappas: np.ndarray
    poles: np.ndarray
    weights: np.ndarray
    counts: np.ndarray
    poly: np.ndarray
    errors: np.ndarray
    kind: str


# ---------------------------------------------------------------------------------------
# Zolotarev (α = 1/2)
# ---------------------------------------------------------------------------------------


def _zolotarev(n: int, kappa: float) -> tuple[np.ndarray, np.ndarray]:
    """Zolotarev's best relative approximation of ``x^{−1/2}`` on ``[1/κ, 1]`` with ``n`` poles.

    ``r(x) = D ∏_{j<n} (x + c_{2j}) / ∏_{j≤n} (x + c_{2j−1})``, ``c_i = k² sn²(iK'/2n) / cn²(iK'/2n)``
    (modulus ``k' = sqrt(1 − 1/κ)``, ``k² = 1/κ``), written in partial fractions
    ``Σ_j β_j / (x + c_{2j−1})``; ``D`` makes the relative error equioscillate.
    Residues are computed in log space (products of up to 2n factors of either sign).
    """
    k2 = 1.0 / kappa
    kp2 = 1.0 - k2
    big_k = special.ellipk(kp2)
    i = np.arange(1, 2 * n)
    sn, cn, _, _ = special.ellipj(i * big_k / (2 * n), kp2)
    c = k2 * sn**2 / cn**2
    poles, zeros = c[0::2], c[1::2]
    beta = np.empty(n)
    for j, pj in enumerate(poles):
        num = zeros - pj
        den = np.delete(poles, j) - pj
        sign = np.prod(np.sign(num)) * np.prod(np.sign(den))
        beta[j] = sign * math.exp(np.sum(np.log(np.abs(num))) - np.sum(np.log(np.abs(den))))
    x = np.logspace(-math.log10(kappa), 0.0, 4000)
    r = (beta[None, :] / (x[:, None] + poles[None, :])).sum(axis=1) * np.sqrt(x)
    scale = 2.0 / (r.max() + r.min())
    return poles, scale * beta


def _zolotarev_count(kappa: float, delta: float) -> int:
    """A first guess of the pole count for relative error ``δ`` (checked by the caller): the
    asymptotic error ``4 exp(−2π² n / ln(16 κ))``."""
    return max(2, math.ceil(math.log(4.0 / delta) * math.log(16.0 * kappa) / (2.0 * math.pi**2)))


# ---------------------------------------------------------------------------------------
# trapezoid rule with closed-form tails (any α)
# ---------------------------------------------------------------------------------------


def _trapezoid(alpha: float, kappa: float, delta: float, h_factor: float):
    """Trapezoid nodes of the Stieltjes integral of ``x^{−α}`` on ``[1/κ, 1]`` with summed tails.

    Returns ``(t, w, poly)``: poles (the first one ``t = 0`` carries the lower tail ``c_{−1}/x``),
    weights, and the coefficients of ``x⁰ … x³`` of the upper tail.
    """
    c = math.sin(math.pi * alpha) / math.pi
    h = h_factor * 2.0 * math.pi**2 / math.log(1.0 / delta)
    log_d = math.log(1.0 / delta)
    # the first omitted term of each tail decays like e^{(2−α) y} (below) and e^{−(4+α) y} (above)
    y_lo = math.log(1.0 / kappa) - log_d / (2.0 - alpha)
    y_hi = log_d / (_POLY_TERMS + alpha)
    n = math.ceil((y_hi - y_lo) / h)
    y = y_lo + h * np.arange(n + 1)
    w = c * h * np.exp((1.0 - alpha) * y)
    # omitted nodes y_j = y_0 − h k (k ≥ 1): Σ h e^{(1−α) y_j} / (e^{y_j} + x) = Σ_m (−1)^m x^{−(m+1)} ...
    # keep m = 0 (the term c_{−1}/x); the rest is below δ by the choice of y_lo
    y_below = y[0] - h
    c_m1 = c * h * math.exp((1.0 - alpha) * y_below) / (1.0 - math.exp(-(1.0 - alpha) * h))
    y_above = y[-1] + h
    poly = np.array(
        [
            c * (-1) ** k * h * math.exp(-(k + alpha) * y_above) / (1.0 - math.exp(-(k + alpha) * h))
            for k in range(_POLY_TERMS)
        ]
    )
    t = np.concatenate([[0.0], np.exp(y)])
    w = np.concatenate([[c_m1], w])
    return t, w, poly


# ---------------------------------------------------------------------------------------
# verification and tables
# ---------------------------------------------------------------------------------------


def evaluate(t: np.ndarray, w: np.ndarray, poly: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``r(x) = Σ_j w_j/(x + t_j) + Σ_k poly_k x^k`` (host, float64)."""
    r = (w[None, :] / (x[:, None] + t[None, :])).sum(axis=1)
    for k, ck in enumerate(poly):
        r = r + ck * x**k
    return r


def _verify(alpha: float, t, w, poly, kappa: float, points: int = 20000) -> float:
    """``max |r(x) x^α − 1|`` on ``[1/κ, 1]``: a log grid of ``points``, the 20 largest local
    maxima refined on a 200 times finer grid."""
    lx = np.linspace(-math.log(kappa), 0.0, points)
    err = np.abs(evaluate(t, w, poly, np.exp(lx)) * np.exp(alpha * lx) - 1.0)
    worst = float(err.max())
    step = lx[1] - lx[0]
    for i in np.argsort(err)[-20:]:
        fine = np.linspace(lx[i] - step, lx[i] + step, 201)
        fine = fine[(fine >= lx[0]) & (fine <= 0.0)]
        e = np.abs(evaluate(t, w, poly, np.exp(fine)) * np.exp(alpha * fine) - 1.0)
        worst = max(worst, float(e.max()))
    return worst


def _tier(alpha: float, kappa: float, delta: float):
    """One tier: the cheapest verified approximation with ``_SAFETY · error ≤ δ`` on ``[1/κ, 1]``."""
    none = np.zeros(_POLY_TERMS)
    if alpha == 0.5:
        ok = lambda n: _SAFETY * _verify(alpha, *_zolotarev(n, kappa), none, kappa, 2000) <= 0.8 * delta
        n = _zolotarev_count(kappa, delta / _SAFETY)
        while n > 2 and ok(n - 1):
            n -= 1
        while not ok(n):
            n += 1
            if n > 200:
                raise RuntimeError(f"no Zolotarev approximation reached δ = {delta:g} at κ = {kappa:g}")
        t, w = _zolotarev(n, kappa)
        err = _SAFETY * _verify(alpha, t, w, none, kappa)
        if err > delta:  # the coarse grid missed a peak: one more pole
            t, w = _zolotarev(n + 1, kappa)
            err = _SAFETY * _verify(alpha, t, w, none, kappa)
        return t, w, none, err
    h_factor = 1.0
    for _ in range(40):
        t, w, poly = _trapezoid(alpha, kappa, delta / _SAFETY, h_factor)
        err = _SAFETY * _verify(alpha, t, w, poly, kappa)
        if err <= delta:
            return t, w, poly, err
        h_factor *= 0.93
    raise RuntimeError(f"no trapezoid approximation reached δ = {delta:g} at κ = {kappa:g} (α = {alpha:g})")


@functools.lru_cache(maxsize=32)
def rational_table(alpha: float, delta: float) -> RationalTable:
    """The tiers of ``x^{−α}`` for relative error ``δ`` (cached per ``(α, δ)``).

    Raises:
      ValueError: α outside (0, 1) or δ outside (0, 0.1].
    """
    alpha, delta = float(alpha), float(delta)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"rational tables are for 0 < α < 1, got α = {alpha}")
    if not 0.0 < delta <= 0.1:
        raise ValueError(f"the target relative error must be in (0, 0.1], got {delta}")
    tiers = [_tier(alpha, kappa, delta) for kappa in TIER_KAPPAS]
    n_max = max(len(t) for t, _, _, _ in tiers)
    poles = np.ones((len(tiers), n_max))
    weights = np.zeros((len(tiers), n_max))
    for k, (t, w, _, _) in enumerate(tiers):
        poles[k, : len(t)] = t
        weights[k, : len(w)] = w
    return RationalTable(
        alpha=alpha,
        delta=delta,
        kappas=np.array(TIER_KAPPAS),
        poles=poles,
        weights=weights,
        counts=np.array([len(t) for t, _, _, _ in tiers]),
        poly=np.stack([p for _, _, p, _ in tiers]),
        errors=np.array([e for _, _, _, e in tiers]),
        kind="zolotarev" if alpha == 0.5 else "trapezoid",
    )


def select_tier(table: RationalTable, kappa: jax.Array) -> jax.Array:
    """Index of the smallest tier with ``κ_k ≥ κ`` (the last tier when κ exceeds all; the caller
    checks ``table.kappas[k] ≥ κ`` and reports an uncertified result otherwise). Traceable."""
    kappas = jnp.asarray(table.kappas, dtype=kappa.dtype)
    idx = jnp.sum(kappas < kappa)
    return jnp.minimum(idx, kappas.shape[0] - 1)


def scaled_terms(table: RationalTable, tier: jax.Array, x_hi: jax.Array, dtype):
    """Shifts, weights and polynomial coefficients of ``r`` scaled to ``[x_hi/κ, x_hi]``.

    ``x^{−α} ≈ Σ_j W_j/(x + σ_j) + Σ_k C_k x^k`` with ``σ_j = x_hi t_j``, ``W_j = w_j x_hi^{1−α}``,
    ``C_k = c_k x_hi^{−α−k}``; also the tier's pole count and verified error. Traceable.
    """
    a = table.alpha
    poles = jnp.asarray(table.poles, dtype=dtype)[tier]
    weights = jnp.asarray(table.weights, dtype=dtype)[tier]
    poly = jnp.asarray(table.poly, dtype=dtype)[tier]
    k = jnp.arange(poly.shape[0], dtype=dtype)
    return (
        x_hi * poles,
        weights * x_hi ** (1.0 - a),
        poly * x_hi ** (-a - k),
        jnp.asarray(table.counts)[tier],
        jnp.asarray(table.errors, dtype=dtype)[tier],
    )
