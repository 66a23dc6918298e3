"""Spectral functions of symmetric PSD operators: the one place for ``gain · (λ + shift)^(−power)``
with its pseudo-inverse cutoff, the power ``1/q`` of a correction of order q and the block rules'
layer factor ``d^{−1/q}``, and the small dense linear-algebra helpers every method shares."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

from curvdyn.curvature.precision import DEFAULT_RCOND, effective_rcond


@dataclasses.dataclass(frozen=True)
class SpectralFunction:
    """``f(λ) = gain · (λ + shift)^{−power}``, with a pseudo-inverse cutoff when ``shift = 0``.

    With ``shift = 0``, eigenvalues ``λ ≤ rcond · λ_max`` map to 0 (the pseudo-inverse power
    on the range of the operator). ``power = 0`` is the projection on the range. ``rcond`` is
    resolved per dtype by :func:`effective_rcond` (the float64 default becomes
    :data:`DEFAULT_RCOND_F32` in float32). The fields may be traced values (e.g. an optimizer's
    scheduled damping); a traced ``shift`` selects between the two branches elementwise.
    """

    power: float
    shift: float = 0.0
    gain: float = 1.0
    rcond: float = DEFAULT_RCOND

    def cutoff(self, dtype) -> float:
        """The relative cutoff applied to eigenvalues of ``dtype``."""
        return effective_rcond(self.rcond, dtype)

    def __call__(self, evals: jax.Array, max_eval: jax.Array) -> jax.Array:
        evals = jnp.maximum(evals, 0.0)
        if isinstance(self.shift, jax.core.Tracer):
            shifted = dataclasses.replace(self, shift=jnp.where(self.shift > 0, self.shift, 1.0))
            unshifted = dataclasses.replace(self, shift=0.0)
            return jnp.where(self.shift > 0, shifted._shifted(evals), unshifted(evals, max_eval))
        if self.shift > 0:
            return self._shifted(evals)
        keep = evals > self.cutoff(evals.dtype) * max_eval
        safe = jnp.where(keep, evals, 1.0)
        return jnp.where(keep, self.gain * safe ** (-self.power), 0.0)

    def _shifted(self, evals: jax.Array) -> jax.Array:
        return self.gain * (evals + self.shift) ** (-self.power)


def curvature_power(q: Any) -> Any:
    """The power ``1/q`` of the curvature that a correction of order ``q`` applies (eq. 14):
    1 for NGD, ½ for sqrt-NGD, 0 for ``q = ∞`` (SGD: the plain gradient). ``q`` may be traced."""
    if isinstance(q, jax.core.Tracer):
        return 1.0 / q
    return 0.0 if math.isinf(q) else 1.0 / q


def block_scale(depth: int, power: Any) -> Any:
    """The layer factor ``d^{−power}`` of the block-diagonal rules: ``d^{−1/q}`` of eq. (25) with
    ``power = 1/q`` (:func:`curvature_power`), ``d`` the number of layer blocks. ``power`` may be
    traced (then a JAX scalar is returned), otherwise the factor is a Python float."""
    if isinstance(power, jax.core.Tracer):
        return jnp.power(float(depth), -power)
    return float(depth) ** (-float(power))


def _eigh(m: jax.Array) -> tuple[jax.Array, jax.Array]:
    # Symmetrize first: products like ĴᵀĴ are symmetric only up to round-off.
    return jnp.linalg.eigh(0.5 * (m + m.T))


def _eigh_sym(m: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``eigh`` of a matrix that is exactly symmetric by construction (no extra copy)."""
    return jnp.linalg.eigh(m, symmetrize_input=False)


def order_after(x, dep):
    """``x``, made to depend on ``dep`` (its value unchanged unless ``dep``'s first entry is NaN).

    This orders eigendecompositions (and SVDs) one after another; every module that runs
    several independent ones in one compiled function goes through it. jaxlib 0.10's CPU LAPACK kernels
    split a *batched* call (any ``eigh`` under ``vmap``, e.g. in a batched ``simulate``) into
    chunks on XLA's intra-op thread pool and block until they finish; when as many independent
    batched ``eigh`` calls run concurrently as the pool has threads, every thread waits and the
    process deadlocks (observed on 2 cores; fixed in later jaxlib). A true data dependency
    (XLA:CPU schedules by data flow; an optimization barrier is not enough) keeps at most one
    in flight. Applied to the small inputs (Grams), it costs a pass over them.
    """
    if dep is None:
        return x
    s = jnp.ravel(dep)[0]
    return jnp.where(jnp.isnan(s), s.astype(x.dtype), x)


def _sym(m: jax.Array) -> jax.Array:
    """Exactly symmetric part of a (batch of) small matrices."""
    return 0.5 * (m + jnp.swapaxes(m, -1, -2))


def apply_psd_function(m: jax.Array, f: SpectralFunction, v: jax.Array) -> jax.Array:
    """``f(M) v`` for a symmetric PSD matrix ``M`` (n × n) and ``v`` of shape (n,) or (n, k)."""
    evals, evecs = _eigh(m)
    fv = f(evals, jnp.max(evals))
    return evecs @ (fv[:, None] * (evecs.T @ v)) if v.ndim == 2 else evecs @ (fv * (evecs.T @ v))
