"""Map dynamics (§3.2): stiffness, effective depth, closed forms and the exact solution of eq. (21)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from scipy import special

from curvdyn._precision import require_float64
from curvdyn._validate import check_finite, check_nonneg, check_positive, check_q, check_real
from curvdyn.curvature.spectral import block_scale, curvature_power
from curvdyn.theory._common import _check_depth


def stiffness(d, q) -> float:
    """Stiffness of the balanced map dynamics ``p = 2(d−1)(q−1)/(dq)`` (eq. 21).

    ``q = math.inf`` (SGD) gives ``2(d−1)/d``; q = 1 (NGD) gives 0; q = 2 gives ``1 − 1/d``.
    """
    d, q = _check_depth(d), check_q(q)
    if math.isinf(q):
        return 2.0 * (d - 1) / d
    return 2.0 * (d - 1) * (q - 1) / (d * q)


def depth_calibrated_rate(eta, d, q) -> float:
    """Depth-calibrated learning rate ``η̄ = η d^{1−1/q}`` (eq. 21); ``η d`` for SGD.

    It is ``η`` times the sum over the d layers of the block rules' layer factor ``d^{−1/q}``
    (:func:`curvdyn.curvature.block_scale`).
    """
    d, q = _check_depth(d), check_q(q)
    return float(eta) * (d * block_scale(d, curvature_power(q)))


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
    require_float64("curvdyn.theory.balanced_map_velocity")
    sb = jnp.asarray(check_real(sigma_bar, "sigma_bar"), dtype=jnp.float64)
    target = check_real(target, "target")  # (traced under jit: an array check, not a float())
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
    p = check_nonneg(p, "p")
    target, init = check_finite(target, "target"), check_finite(init, "init")
    eta_bar = check_positive(eta_bar, "eta_bar")
    sign = 1.0
    if target < 0 or (target == 0 and init < 0):  # σ̄ → −σ̄ is a symmetry of eq. (21)
        sign, target, init = -1.0, -target, -init
    if init < 0:
        raise ValueError(
            "init and target have opposite signs: the mode would pass through σ̄ = 0, which "
            "eq. (21) for balanced weights does not describe"
        )
    return p, target, eta_bar, init, sign


def _closed_form_p(p: float) -> float | None:
    for c in (0.0, 0.5, 1.0):
        if abs(p - c) <= 1e-14:
            return c
    return None


def map_solution(t, p, target, *, eta_bar: float = 1.0, init: float = 0.0, branch: str = "auto") -> np.ndarray:
    """The exact solution ``σ̄(t)`` of eq. (21), ``σ̄̇ = −η̄ (σ̄ − σ̄*) σ̄^p``, ``σ̄(0) = init``.

    Closed forms (§3.2; ``branch="closed"`` or ``"auto"`` at these p), for ``0 ≤ σ̄(0) < σ̄*``:

    * p = 0: ``σ̄* + (σ̄(0) − σ̄*) e^{−η̄t}`` (NGD; ``σ̄*(1 − e^{−η̄t})`` from 0);
    * p = ½: ``σ̄* tanh²(η̄√σ̄* t/2 + atanh√(σ̄(0)/σ̄*))`` (``coth`` above σ̄*);
    * p = 1: ``σ̄* / (1 + (σ̄*/σ̄(0) − 1) e^{−η̄σ̄* t})`` (logistic; Saxe et al. 2013).

    Every other p ≥ 0 (``branch="general"``, or ``"auto"``) inverts
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
      branch: ``"auto"``, ``"closed"`` (p ∈ {0, ½, 1} only) or ``"general"``.

    Returns:
      ``σ̄(t)``, a float64 array of the shape of ``t``.
    """
    p, target, eta_bar, init, sign = _normalize_problem(p, target, eta_bar, init)
    t = np.asarray(check_real(t, "t"), dtype=np.float64)
    if np.any(~np.isfinite(t)) or np.any(t < 0):
        raise ValueError("times must be finite and >= 0")
    if branch not in ("auto", "closed", "general"):
        raise ValueError(f"branch must be 'auto', 'closed' or 'general', got {branch!r}")
    closed = _closed_form_p(p)
    if branch == "closed" and closed is None:
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
    if closed is not None and branch != "general":
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


def map_time(sigma_bar, p, target, *, eta_bar: float = 1.0, init: float = 0.0, branch: str = "auto") -> np.ndarray:
    """The time at which eq. (21)'s solution from ``init`` reaches ``sigma_bar``.

    ``t(σ̄) = ∫_{σ̄(0)}^{σ̄} dσ / (η̄ (σ̄* − σ) σ^p)`` — the inverse of :func:`map_solution`.
    Values between ``σ̄(0)`` and ``σ̄*`` give t ≥ 0; values on the far side of ``σ̄(0)`` (for
    σ̄(0) > 0) give the negative time of the same trajectory extended backwards; values not
    on the trajectory (beyond σ̄*, or of the wrong sign) give NaN. From ``σ̄(0) = 0`` with
    p ≥ 1 the time is ∞. Closed forms at p ∈ {0, ½, 1} (``branch="auto"``/``"closed"``).
    """
    p, target, eta_bar, init, sign = _normalize_problem(p, target, eta_bar, init)
    if branch not in ("auto", "closed", "general"):
        raise ValueError(f"branch must be 'auto', 'closed' or 'general', got {branch!r}")
    closed = _closed_form_p(p)
    if branch == "closed" and closed is None:
        raise ValueError(f"closed forms exist for p = 0, 1/2, 1 only, got p = {p}")
    if target == 0.0:
        raise ValueError("map_time needs a nonzero target")
    sb = sign * np.asarray(check_real(sigma_bar, "sigma_bar"), dtype=np.float64)
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
        if closed is not None and branch != "general":
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


def half_max_time(p, target, *, eta_bar: float = 1.0, init: float = 0.0, branch: str = "auto") -> float:
    """Time at which eq. (21)'s solution reaches ``σ̄*/2`` (the black circles of Fig. 2).

    From 0: ``ln 2/η̄`` (p = 0), ``2 atanh(2^{−1/2})/(η̄√σ̄*)`` (p = ½); p = 1 gives
    ``ln(σ̄*/σ̄(0) − 1)/(η̄ σ̄*)``; in general it scales as ``σ̄*^{−p}``. Negative when
    ``σ̄(0) > σ̄*/2``, ∞ for p ≥ 1 from 0, NaN when ``σ̄(0) > σ̄*`` (never reached).
    """
    return float(map_time(0.5 * float(target), p, target, eta_bar=eta_bar, init=init, branch=branch))
