"""Iterative refinement of the power-one directions with the structured residual (corrected semi-normal equations).

For ``f(λ) = gain / (λ + shift)`` (NGD, damped NGD, NGD with a Levenberg–Marquardt shift; with
``shift = 0`` the pseudo-inverse on the kept spectrum) the direction solves a linear system,
in one of two forms:

* map space (``mapspace``, ``kronsum``, ``balanced``; the block ``mapspace`` path per layer):
  ``(K + shift) Λ = gain · ΔS`` with ``K = Ĵ Ĵᵀ`` and ``d = Ĵᵀ Λ``;
* parameter space (``dense``, the explicit blocks, the block ``kronecker`` path):
  ``(Ĵᵀ Ĵ + shift) d = gain · Ĵᵀ ΔS``.

The first answer comes from an eigendecomposition of ``K`` (or ``H₊``), which squares the
condition number: its relative error is about ``cond(K) · eps = cond(Ĵ)² · eps``. The residual
computed from the structure — ``r = gain · ΔS − Ĵ d − shift · Λ`` with ``Ĵ d = Σ_i A_i d_i B_i S``
evaluated layer by layer from the actual ``d``, never through ``K`` — has error
``eps · ‖Ĵ‖ ‖d‖``; a correction solved with the same eigendecomposition
(``δΛ = f(K) r / gain``, ``δd = Ĵᵀ δΛ``) shrinks the error by a factor ``~cond(K) · eps`` per
step, down to ``~cond(Ĵ) · eps`` (Björck's corrected semi-normal equations). In parameter space
the residual is pulled back from map space, ``Ĵᵀ(gain · ΔS − Ĵ d) − shift · d``: forming the
difference in map space is what keeps the square out.

A step is taken only while the corrections shrink (each at most half the previous one, the
first at most half of ``‖d‖``), so refinement never makes an answer worse where the
eigendecomposition is too inaccurate for the iteration to converge. The size of the first
correction *not* taken is returned: the usual estimate of the error that remains.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from curvdyn.curvature.spectral import SpectralFunction

#: Refinement steps of the power-one directions (each: one solve with the eigendecomposition
#: at hand, one pull-back ``Ĵᵀ`` and one forward product ``Ĵ``).
REFINE_STEPS = 2


class Refined(NamedTuple):
    """A refined power-one solve (or the unrefined answer of another power).

    Attributes:
      direction: ``d`` (a pytree shaped like the weights, or one layer's matrix).
      lam: ``Λ`` of the map-space form (``None`` in the parameter-space form).
      residual: the final residual of the system solved (map space: ``gain·ΔS − Ĵd − shift·Λ``;
        parameter space: ``Ĵᵀ(gain·ΔS − Ĵd) − shift·d``); ``None`` when ``f`` is not a power one.
      correction: ``‖δd‖`` of the next correction (not applied), the remaining-error estimate;
        ``None`` when ``f`` is not a power one.
    """

    direction: Any
    lam: Any
    residual: Any
    correction: Any


def _norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree_util.tree_leaves(tree)))


def _add(x, y):
    return jax.tree_util.tree_map(jnp.add, x, y)


def _select(take, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(take, a, b), new, old)


def _iterate(zero_d, zero_aux, zero_r, step: Callable, steps: int | None):
    """The shared loop, from ``d = 0``: iteration 0 is the plain solve, iterations ``1..steps``
    refine, and one more evaluates the next correction without applying it.

    ``step(d, aux) -> (d + δd, aux + δaux, residual at d, ‖δd‖)``. One loop body (traced once,
    so the compiled program does not grow with ``steps``). ``steps=None``: :data:`REFINE_STEPS`,
    read when traced.
    """
    steps = REFINE_STEPS if steps is None else steps

    def body(k, carry):
        d, aux, _, _, last, go = carry
        d_new, aux_new, r, size = step(d, aux)
        take = go & (size <= 0.5 * last) & (k <= steps)
        return (
            _select(take, d_new, d),
            _select(take, aux_new, aux),
            r,
            size,
            jnp.where(take, size, last),
            take,
        )

    dtype = jax.tree_util.tree_leaves(zero_r)[0].dtype
    init = (zero_d, zero_aux, zero_r, jnp.zeros((), dtype), jnp.full((), jnp.inf, dtype), jnp.asarray(True))
    d, aux, r, size, _, _ = jax.lax.fori_loop(0, steps + 2, body, init)
    return d, aux, r, size


def refine_map(
    f: SpectralFunction,
    rhs: jax.Array,
    pull: Callable,
    forward: Callable,
    solve: Callable,
    steps: int | None = None,
) -> Refined:
    """``Λ`` of ``(K + shift) Λ = gain · rhs`` (``K = Ĵ Ĵᵀ``) and ``d = Ĵᵀ Λ``, refined for power-one ``f``.

    Args:
      f: the spectral function (other powers: ``d = Ĵᵀ f(K) rhs``, unrefined).
      rhs: ``ΔS`` (n_d × n_0, without the gain).
      pull: ``Λ ↦ Ĵᵀ Λ``; forward: ``d ↦ Ĵ d`` (from the layers, not through ``K``).
      solve: ``x ↦ f(K) x`` with the eigendecomposition at hand (gain and cutoff included).
    """
    if f.power != 1.0:
        lam = solve(rhs)
        return Refined(pull(lam), lam, None, None)
    target = f.gain * rhs

    def step(d, lam):
        r = target - forward(d) - f.shift * lam
        dl = solve(r) / f.gain
        dd = pull(dl)
        return _add(d, dd), lam + dl, r, _norm(dd)

    zero_d = jax.tree_util.tree_map(jnp.zeros_like, pull(rhs))
    d, lam, r, size = _iterate(zero_d, jnp.zeros_like(rhs), jnp.zeros_like(rhs), step, steps)
    return Refined(d, lam, r, size)


def refine_params(
    f: SpectralFunction,
    rhs: jax.Array,
    pull: Callable,
    forward: Callable,
    solve: Callable,
    steps: int | None = None,
) -> Refined:
    """``d`` of ``(Ĵᵀ Ĵ + shift) d = gain · Ĵᵀ rhs``, refined for power-one ``f``.

    Args:
      f: the spectral function (other powers: ``f(H) Ĵᵀ rhs``, unrefined).
      rhs: ``ΔS`` (map space, without the gain).
      pull: ``r ↦ Ĵᵀ r`` (map space to parameters); forward: ``d ↦ Ĵ d``.
      solve: ``v ↦ f(H) v`` with the eigendecomposition at hand (gain and cutoff included).
    """
    if f.power != 1.0:
        return Refined(solve(pull(rhs)), None, None, None)
    target = f.gain * rhs

    def step(d, _):
        r = _add(pull(target - forward(d)), jax.tree_util.tree_map(lambda x: -f.shift * x, d))
        dd = jax.tree_util.tree_map(lambda x: x / f.gain, solve(r))
        return _add(d, dd), None, r, _norm(dd)

    zero_d = jax.tree_util.tree_map(jnp.zeros_like, pull(rhs))
    d, _, r, size = _iterate(zero_d, None, zero_d, step, steps)
    return Refined(d, None, r, size)


def refine_from_eigenbasis(
    f: SpectralFunction,
    rhs: jax.Array,
    grad,
    pull: Callable,
    forward: Callable,
    apply_f: Callable,
    apply_h: Callable,
    steps: int | None = None,
) -> Refined:
    """The direction of a parameter-space eigendecomposition (``H₊`` or a block), refined.

    ``apply_f(v) = f(H) v`` and ``apply_h(v) = h(H) v`` with ``h(λ) = f(λ)/λ`` (0 where ``f`` is
    cut). Without a shift ``H`` is singular (the network's symmetries, rank-deficient layers) and
    the computed kept eigenvectors lean into its null space by ``~eps λ_max / λ_min``: a
    parameter-space answer would carry that null-space part, which no residual sees. So the
    pseudo-inverse is refined in the map-space form, ``d = Ĵᵀ Λ`` (in the row space of ``Ĵ`` by
    construction) with ``f(K) x = Ĵ h(H) Ĵᵀ x``. With a shift the system is nonsingular and is
    refined as it stands (:func:`refine_params`). Other powers: ``f(H) g`` unrefined (the map-space
    form would triple their eigenvalue error, ``h = f/λ``, to remove the null-space part; the
    diagnostics estimate both instead).
    """
    if f.power != 1.0:
        return Refined(apply_f(grad), None, None, None)
    if f.shift > 0:
        return refine_params(f, rhs, pull, forward, apply_f, steps)

    def solve(x):
        return forward(apply_h(pull(x)))

    return refine_map(f, rhs, pull, forward, solve, steps)


def over_lambda(fv: jax.Array, evals: jax.Array) -> jax.Array:
    """``h(λ) = f(λ)/λ`` where ``f`` keeps ``λ > 0``, else 0 (the ``apply_h`` of :func:`refine_from_eigenbasis`)."""
    ok = (fv != 0) & (evals > 0)
    return jnp.where(ok, fv / jnp.where(ok, evals, 1.0), 0.0)
