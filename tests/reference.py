"""An independent dense reference for the curvdyn rules, written from DESIGN.md's definitions.

Nothing here imports ``curvdyn``: the map, the loss, the gradient and the Jacobian are
rebuilt from scratch (JAX autodiff over a flat parameter vector), ``H₊`` is assembled as
``Jᵀ (I ⊗ Σ) J`` and every spectral function is applied through ``numpy.linalg.eigh`` in
float64. It is deliberately slow and simple (O(P³)), meant for P up to a few hundred.

Conventions (DESIGN.md):

* weights ``ws = (w_1, ..., w_d)``, ``w_i`` of shape ``(n_i, n_{i-1})``; map ``W = w_d ... w_1``;
* flat parameter vector: layer 1 first, each layer row-major
  (``concatenate([w.reshape(-1) for w in ws])``);
* the map is vectorized row-major too: ``vec_r(W)[a * n_0 + b] = W[a, b]``. Then
  ``tr(Δ Σ Δᵀ) = Σ_a Δ[a, :] Σ Δ[a, :]ᵀ = vec_r(Δ)ᵀ (I_{n_d} ⊗ Σ) vec_r(Δ)``, so the
  Gauss–Newton matrix of ``L = ½ tr(Δ Σ Δᵀ)`` is ``H₊ = Jᵀ (I_{n_d} ⊗ Σ) J`` with
  ``J = ∂ vec_r(W) / ∂θ`` of shape ``(n_d n_0, P)``.

Rules (direction ``d``, velocity ``ẇ = −d``): see :func:`direction`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

#: The documented default relative cutoff of the pseudo-inverse powers (DESIGN.md: "a
#: documented, user-settable parameter"; curvdyn documents 1e-13). Restated here on purpose:
#: if the library's default drifted, the reference comparison would notice.
RCOND = 1e-13

FULL_Q = {"ngd": 1.0, "sqrt-ngd": 2.0}
BLOCK_Q = {"ngd-d": 1.0, "sqrt-ngd-d": 2.0}


# ---------------------------------------------------------------------------------------
# network, from the definitions
# ---------------------------------------------------------------------------------------


def widths(ws: Sequence) -> tuple[int, ...]:
    return (int(ws[0].shape[1]),) + tuple(int(w.shape[0]) for w in ws)


def flat(ws: Sequence) -> jnp.ndarray:
    return jnp.concatenate([jnp.asarray(w, dtype=jnp.float64).reshape(-1) for w in ws])


def unflat(theta, widths_: Sequence[int]) -> tuple:
    out, start = [], 0
    for n_in, n_out in zip(widths_[:-1], widths_[1:]):
        out.append(theta[start : start + n_in * n_out].reshape(n_out, n_in))
        start += n_in * n_out
    assert start == theta.shape[0]
    return tuple(out)


def product_map(ws: Sequence):
    """``W = w_d ... w_1`` (as a plain loop of matrix products)."""
    out = ws[0]
    for w in ws[1:]:
        out = w @ out
    return out


def loss(ws: Sequence, target, cov):
    """``L = ½ tr(Δ Σ Δᵀ)``, ``Δ = W − W*``."""
    delta = product_map(ws) - target
    return 0.5 * jnp.trace(delta @ cov @ delta.T)


# The autodiff transforms are jitted per widths only to keep the suite fast; jit does not
# change what is computed.


@functools.cache
def _grad_fn(widths_: tuple[int, ...]):
    return jax.jit(jax.grad(lambda th, target, cov: loss(unflat(th, widths_), target, cov)))


@functools.cache
def _jac_fn(widths_: tuple[int, ...]):
    return jax.jit(jax.jacfwd(lambda th: product_map(unflat(th, widths_)).reshape(-1)))


@functools.cache
def _jac_and_grad_fn(widths_: tuple[int, ...]):
    def both(th, target, cov):
        jac = jax.jacfwd(lambda t: product_map(unflat(t, widths_)).reshape(-1))(th)
        grad = jax.grad(lambda t: loss(unflat(t, widths_), target, cov))(th)
        return jac, grad

    return jax.jit(both)


@functools.cache
def _hess_fn(widths_: tuple[int, ...]):
    return jax.jit(jax.hessian(lambda th, target, cov: loss(unflat(th, widths_), target, cov)))


def gradient_flat(ws: Sequence, target, cov) -> np.ndarray:
    """``∂L/∂θ`` by ``jax.grad`` over the flat parameter vector."""
    g = _grad_fn(widths(ws))(flat(ws), jnp.asarray(target), jnp.asarray(cov))
    return np.asarray(g)


def loss_hessian_flat(ws: Sequence, target, cov) -> np.ndarray:
    """The full Hessian ``∂²L/∂θ²`` by ``jax.hessian`` (equals H₊ when W* = W)."""
    return np.asarray(_hess_fn(widths(ws))(flat(ws), jnp.asarray(target), jnp.asarray(cov)))


def jacobian(ws: Sequence) -> np.ndarray:
    """``J = ∂ vec_r(W) / ∂θ`` by ``jax.jacfwd``, shape ``(n_d n_0, P)``."""
    return np.asarray(_jac_fn(widths(ws))(flat(ws)))


def hessian_plus(ws: Sequence, cov) -> np.ndarray:
    """``H₊ = Jᵀ (I_{n_d} ⊗ Σ) J`` (row-major vec of the map), shape ``(P, P)``."""
    jac = jacobian(ws)
    n_out = int(ws[-1].shape[0])
    h = jac.T @ np.kron(np.eye(n_out), np.asarray(cov, dtype=np.float64)) @ jac
    return 0.5 * (h + h.T)


def layer_slices(ws: Sequence) -> list[slice]:
    out, start = [], 0
    for w in ws:
        size = int(w.shape[0] * w.shape[1])
        out.append(slice(start, start + size))
        start += size
    return out


def null_direction(ws: Sequence, ms: Sequence) -> tuple:
    """The symmetry direction ``(.., m_i w_i, −w_{i+1} m_i, ..)`` (paper section 2), summed over i.

    ``ms[i-1]`` is ``m_i`` of shape ``(n_i, n_i)``, i = 1..d−1; it leaves the map unchanged to
    first order (``A_{i+1}(−w_{i+1} m_i)B_{i+1} + A_i(m_i w_i)B_i = 0``).
    """
    out = [np.zeros(np.shape(w)) for w in ws]
    for i, m in enumerate(ms):
        out[i] = out[i] + np.asarray(m) @ np.asarray(ws[i])
        out[i + 1] = out[i + 1] - np.asarray(ws[i + 1]) @ np.asarray(m)
    return tuple(out)


# ---------------------------------------------------------------------------------------
# spectral functions (numpy eigh, float64)
# ---------------------------------------------------------------------------------------


def eigh(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.linalg.eigh(0.5 * (h + h.T))


def psd_power(h, power: float, *, rcond: float = RCOND, shift: float = 0.0, eig=None) -> np.ndarray:
    """``(H + shift I)^{-power}`` for symmetric PSD ``H`` (``eig``: its precomputed ``eigh``).

    With ``shift = 0`` it is the pseudo-inverse power: eigenvalues ``≤ rcond · λ_max`` map to 0
    (``power = 0`` is then the projection on the range). With ``shift > 0`` there is no cutoff.
    """
    evals, evecs = eigh(h) if eig is None else eig
    if shift > 0:
        f = (np.maximum(evals, 0.0) + shift) ** (-power)
    else:
        keep = evals > rcond * evals.max()
        f = np.where(keep, np.where(keep, evals, 1.0) ** (-power), 0.0)
    return (evecs * f) @ evecs.T


# ---------------------------------------------------------------------------------------
# the rules
# ---------------------------------------------------------------------------------------


class Reference:
    """Dense reference quantities of one (ws, W*, Σ), computed once and reused across rules."""

    def __init__(self, ws: Sequence, target, cov=None):
        self.ws = tuple(np.asarray(w, dtype=np.float64) for w in ws)
        self.widths = widths(self.ws)
        n_in = self.widths[0]
        self.target = np.asarray(target, dtype=np.float64)
        self.cov = np.eye(n_in) if cov is None else np.asarray(cov, dtype=np.float64)
        # J = ∂vec_r(W)/∂θ (jax.jacfwd) and g = ∂L/∂θ (jax.grad), in one compiled call
        jac, g = _jac_and_grad_fn(self.widths)(flat(self.ws), jnp.asarray(self.target), jnp.asarray(self.cov))
        self.g = np.asarray(g)
        h = np.asarray(jac).T @ np.kron(np.eye(self.widths[-1]), self.cov) @ np.asarray(jac)
        self.h = 0.5 * (h + h.T)  # H₊ = Jᵀ (I ⊗ Σ) J, as in hessian_plus()
        self.slices = layer_slices(self.ws)
        self.depth = len(self.ws)
        self.eig = eigh(self.h)
        self.block_eig = [eigh(self.block(i)) for i in range(1, self.depth + 1)]

    def unflat(self, theta: np.ndarray) -> tuple:
        return tuple(np.asarray(x) for x in unflat(theta, self.widths))

    def gradient(self) -> tuple:
        return self.unflat(self.g)

    def block(self, i: int) -> np.ndarray:
        """Diagonal block ``H_i`` of the dense ``H₊`` (i 1-based), cut out of the dense matrix."""
        s = self.slices[i - 1]
        return self.h[s, s]

    def direction(self, name: str, **params) -> tuple:
        """Reference direction of rule ``name`` with parameters ``params``.

        * ``sgd``: ``g``.
        * ``ngd`` / ``sqrt-ngd`` / ``frac-ngd(q)``: ``(H₊⁺)^{1/q} g``; with ``lm_damping = λ > 0``
          ``(H₊ + λ I)^{-1/q} g`` (no cutoff).
        * ``damped-ngd(eps)``: ``(eps + 1)(eps I + H₊)⁻¹ g`` for eps > 0 (a linear solve);
          ``H₊⁺ g`` at eps = 0 (the limit ε → 0, since g lies in the range of H₊).
        * ``ngd-d`` / ``sqrt-ngd-d`` / ``frac-ngd-d(q)``: layer i gets
          ``η_i (H_i⁺)^{1/q} g_i`` (or ``η_i (H_i + λ I)^{-1/q} g_i`` with lm_damping), with
          ``η_i = layer_rates[i-1]`` or ``d^{-1/q}``.
        """
        rcond = params.get("rcond", RCOND)
        lm = float(params.get("lm_damping", 0.0))
        if name == "sgd":
            return self.gradient()
        if name == "damped-ngd":
            eps = float(params["eps"])
            if eps > 0:
                p = self.h.shape[0]
                out = (eps + 1.0) * np.linalg.solve(eps * np.eye(p) + self.h, self.g)
            else:
                out = psd_power(self.h, 1.0, rcond=rcond, eig=self.eig) @ self.g
            return self.unflat(out)
        if name in FULL_Q or name == "frac-ngd":
            q = FULL_Q.get(name, params.get("q"))
            q = float(q)
            power = 0.0 if math.isinf(q) else 1.0 / q
            return self.unflat(psd_power(self.h, power, rcond=rcond, shift=lm, eig=self.eig) @ self.g)
        if name in BLOCK_Q or name == "frac-ngd-d":
            q = float(BLOCK_Q.get(name, params.get("q")))
            power = 0.0 if math.isinf(q) else 1.0 / q
            rates: Sequence[float] | None = params.get("layer_rates")
            if rates is None:
                rates = [self.depth ** (-power)] * self.depth
            out = []
            for i in range(1, self.depth + 1):
                g_i = self.g[self.slices[i - 1]]
                f_i = psd_power(self.block(i), power, rcond=rcond, shift=lm, eig=self.block_eig[i - 1])
                d_i = rates[i - 1] * (f_i @ g_i)
                out.append(d_i)
            return self.unflat(np.concatenate(out))
        raise ValueError(f"reference knows no rule {name!r}")


# ---------------------------------------------------------------------------------------
# comparisons
# ---------------------------------------------------------------------------------------


def flat_np(ws: Sequence) -> np.ndarray:
    return np.concatenate([np.asarray(w, dtype=np.float64).reshape(-1) for w in ws])


def rel_err(x: Sequence, ref: Sequence) -> float:
    """``‖x − ref‖ / ‖ref‖`` over all layers together (Euclidean norm of the flat vectors)."""
    a, b = flat_np(x), flat_np(ref)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def inner(x: Sequence, y: Sequence) -> float:
    """``x · y = Σ_i tr(x_i y_iᵀ)``."""
    return float(flat_np(x) @ flat_np(y))


def ngd_extended(ws: Sequence, target, cov=None, *, shift: float = 0.0, gain: float = 1.0) -> list[np.ndarray]:
    """``gain · Ĵᵀ (K + shift)⁺ vec(ΔS)`` in extended precision: NGD (``shift = 0``, ``gain = 1``)
    or a damped/LM solve, for any Σ (``S = Σ^{1/2}``).

    ``Λ`` solves ``(K + shift) Λ = ΔS`` by iterative refinement with residuals in numpy longdouble
    (least-squares corrections, so a singular K gives the minimum-norm solution); the direction is
    ``{gain · A_iᵀ Λ (B_i S)ᵀ}`` (float64). Accurate far beyond float64's ``cond(K) · 1e-16``, so
    it shows which float64 method is closer to the truth on ill-conditioned networks.
    """
    ld = np.longdouble
    w = [np.asarray(x).astype(ld) for x in ws]
    n_out, n_in = w[-1].shape[0], w[0].shape[1]
    s = np.eye(n_in, dtype=ld) if cov is None else _psd_sqrt(np.asarray(cov, dtype=np.float64)).astype(ld)
    a_list, b_list = [], []
    for i in range(len(w)):
        a, b = np.eye(n_out, dtype=ld), np.eye(n_in, dtype=ld)
        for x in w[:i:-1]:
            a = a @ x
        for x in w[:i]:
            b = x @ b
        a_list.append(a)
        b_list.append(b @ s)
    m = np.eye(n_in, dtype=ld)
    for x in w:
        m = x @ m
    r = ((m - np.asarray(target).astype(ld)) @ s).ravel()
    k = sum(np.kron(a @ a.T, b.T @ b) for a, b in zip(a_list, b_list)) + shift * np.eye(n_out * n_in, dtype=ld)
    k64 = k.astype(np.float64)
    lam = np.linalg.lstsq(k64, r.astype(np.float64), rcond=None)[0].astype(ld)
    for _ in range(8):
        lam = lam + np.linalg.lstsq(k64, (r - k @ lam).astype(np.float64), rcond=None)[0].astype(ld)
    lam = lam.reshape(n_out, n_in)
    return [(gain * a.T @ lam @ b.T).astype(np.float64) for a, b in zip(a_list, b_list)]


def ngd_svd(
    ws: Sequence, target, cov=None, *, q: float = 1.0, shift: float = 0.0, gain: float = 1.0, rtol: float | None = None
) -> tuple:
    """The q-NGD direction ``gain (H₊ + shift)^{−1/q} g`` (pseudo-inverse power for shift = 0) from a
    float64 SVD of the dense ``Ĵ = (I ⊗ S) J``.

    With ``Ĵ = U s Vᵀ`` and ``g = Ĵᵀ vec(Δ S)``: the direction is
    ``V [gain · s (s² + shift)^{−1/q}] Uᵀ vec(Δ S)``; for q = 1, shift = 0 the minimum-norm
    least-squares solution ``Ĵ⁺ vec(Δ S)``; damped NGD is ``q = 1, shift = ε, gain = ε + 1``.
    Singular values ``≤ rtol · s_max`` count as zero (default ``max(shape) · eps``, numpy's lstsq
    rule; no cutoff with a shift). A backward-stable SVD never forms ``ĴᵀĴ``, so its error is
    about ``cond(Ĵ) · eps`` where a method through ``H₊`` or ``K`` has ``cond(Ĵ)² · eps``.
    """
    ws = tuple(np.asarray(w, dtype=np.float64) for w in ws)
    target = np.asarray(target, dtype=np.float64)
    n_out, n_in = target.shape
    s = np.eye(n_in) if cov is None else _psd_sqrt(np.asarray(cov, dtype=np.float64))
    jac = jacobian(ws)  # rows: vec_r(W) = a * n_0 + b
    jhat = np.einsum("bc,acp->abp", s, jac.reshape(n_out, n_in, -1)).reshape(n_out * n_in, -1)  # (I ⊗ S) J
    rhs = ((np.asarray(product_map(ws)) - target) @ s).reshape(-1)
    u, sv, vt = np.linalg.svd(jhat, full_matrices=False)
    tol = (max(jhat.shape) * np.finfo(np.float64).eps if rtol is None else rtol) * sv[0]
    keep = sv > tol if shift == 0 else sv > 0
    factor = gain * sv[keep] * (sv[keep] ** 2 + shift) ** (-1.0 / q)
    theta = vt[keep].T @ ((u[:, keep].T @ rhs) * factor)
    return tuple(np.asarray(x) for x in unflat(theta, widths(ws)))


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    evals, evecs = np.linalg.eigh(0.5 * (cov + cov.T))
    return (evecs * np.sqrt(np.clip(evals, 0.0, None))) @ evecs.T


def ngd_exact(ws: Sequence, target) -> list[np.ndarray]:
    """The NGD direction for Σ = I and an invertible kernel K, in exact rational arithmetic.

    The float64 weights and target are exact rationals (``fractions.Fraction``); ``K = Σ_i
    A_iA_iᵀ ⊗ B_iᵀB_i``, the solve ``K Λ = Δ`` (Gauss–Jordan) and ``{A_iᵀ Λ B_iᵀ}`` are exact;
    only the final rounding to float64 is inexact. For small maps only (``n_d n_0`` ≲ 25: the
    numbers grow to thousands of digits). Raises ``ValueError`` if K is singular.
    """
    from fractions import Fraction

    def mat(x):
        return [[Fraction(float(v)) for v in row] for row in np.asarray(x, dtype=np.float64)]

    def mm(a, b):
        bt = list(zip(*b))
        return [[sum(x * y for x, y in zip(row, col)) for col in bt] for row in a]

    def eye(n):
        return [[Fraction(int(i == j)) for j in range(n)] for i in range(n)]

    def tr(a):
        return [list(r) for r in zip(*a)]

    w = [mat(x) for x in ws]
    depth, n_out, n_in = len(w), len(w[-1]), len(w[0][0])
    a_list, b_list = [], []
    for i in range(depth):
        a, b = eye(n_out), eye(n_in)
        for x in w[:i:-1]:
            a = mm(a, x)
        for x in w[:i]:
            b = mm(x, b)
        a_list.append(a)
        b_list.append(b)
    m = eye(n_in)
    for x in w:
        m = mm(x, m)
    tgt = mat(target)
    n = n_out * n_in
    rhs = [m[i][j] - tgt[i][j] for i in range(n_out) for j in range(n_in)]
    p = [mm(a, tr(a)) for a in a_list]
    q = [mm(tr(b), b) for b in b_list]
    rows = [
        [sum(p[i][r // n_in][c // n_in] * q[i][r % n_in][c % n_in] for i in range(depth)) for c in range(n)] + [rhs[r]]
        for r in range(n)
    ]
    for col in range(n):
        piv = next((r for r in range(col, n) if rows[r][col] != 0), None)
        if piv is None:
            raise ValueError("K is singular: ngd_exact needs an invertible map-space kernel")
        rows[col], rows[piv] = rows[piv], rows[col]
        for r in range(n):
            if r != col and rows[r][col] != 0:
                factor = rows[r][col] / rows[col][col]
                rows[r] = [x - factor * y for x, y in zip(rows[r], rows[col])]
    lam_flat = [rows[r][n] / rows[r][r] for r in range(n)]
    lam = [[lam_flat[i * n_in + j] for j in range(n_in)] for i in range(n_out)]
    return [np.array([[float(v) for v in row] for row in mm(mm(tr(a), lam), tr(b))]) for a, b in zip(a_list, b_list)]


def block_ngd_svd(ws: Sequence, target, *, q: float = 1.0, rtol: float | None = None) -> tuple:
    """The block q-NGD direction ``d^{−1/q} (H_i⁺)^{1/q} g_i`` (Σ = I) from float64 SVDs of each
    layer's Jacobian ``J_i`` (the columns of layer i of the autodiff ``J``), never forming ``H_i``."""
    ws = tuple(np.asarray(w, dtype=np.float64) for w in ws)
    target = np.asarray(target, dtype=np.float64)
    rhs = (np.asarray(product_map(ws)) - target).reshape(-1)
    jac = jacobian(ws)
    depth = len(ws)
    out = []
    for i, sl in enumerate(layer_slices(ws)):
        u, sv, vt = np.linalg.svd(jac[:, sl], full_matrices=False)
        tol = (max(jac[:, sl].shape) * np.finfo(np.float64).eps if rtol is None else rtol) * sv[0]
        keep = sv > tol
        d_i = vt[keep].T @ ((u[:, keep].T @ rhs) * sv[keep] ** (1.0 - 2.0 / q))
        out.append(depth ** (-1.0 / q) * d_i.reshape(ws[i].shape))
    return tuple(out)
