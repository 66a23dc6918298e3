"""How exact an exact direction is: what the cutoff cut, the conditioning of what was kept, a residual.

Every eigendecomposition path (``dense``, ``mapspace``, ``kronsum``, ``balanced``, the block
paths) can return a :class:`DirectionInfo` with its direction
(``rule.direction(ws, task, return_info=True)``). The numbers come from the eigendecomposition
the direction used plus a few structured products, so they cost a fraction of the direction:

* **Eigenvalues measured through Ĵ.** For each eigenvector ``u_k`` of ``K`` (``v_k`` of ``H₊``)
  the Rayleigh quotient ``ρ_k = ‖Ĵᵀ u_k‖²`` (``‖Ĵ v_k‖²``) is computed from the layer products,
  not from ``K``: its rounding error is ``~eps² λ_max`` where the eigensolver's eigenvalue
  ``λ_k`` has ``~eps λ_max``. So ``ρ_k`` resolves eigenvalues far below what the eigensolver of
  ``K`` can (an SVD of ``Ĵ`` would see them: singular values down to ``~eps σ_max``).
* **Exact zeros.** A computed eigenvector of an exact zero eigenvalue leans on its nearest
  nonzero neighbour ``λ_next`` (the smallest eigenvalue above the eigensolver's round-off level
  ``dim · eps · λ_max``) by an angle ``~√dim · eps · λ_max / λ_next``, so its ``ρ_k`` is at most
  about ``floor = dim · eps² · (1 + λ_max / λ_next)`` (relative to ``λ_max``). A cut eigenvalue with ``ρ_k``
  above ``floor`` is *resolved*: float64 sees it, and only the cutoff ``rcond`` removed it. At
  rank-deficient points (a zero mode, a bottleneck) the cut eigenvalues sit at ``ρ ~ 1e-30``,
  far below the floor, and count as exact zeros.
* **The cutoff's effect.** Keeping the resolved cut eigenvalues (with ``ρ_k``) would add a part
  ``d_cut`` to the direction: ``cut_effect = ‖d_cut‖ / (‖d‖² + ‖d_cut‖²)^{1/2}`` (1 means the
  cutoff decides the answer). ``cut_residual`` is the share of ``ΔS`` they carry, which the
  direction leaves unfitted (``‖P_cut ΔS‖ / ‖ΔS‖``); ``cut_eig_error`` says whether the
  eigensolver of ``K`` itself resolved them (``|λ_k − ρ_k| / ρ_k``: small, a smaller ``rcond``
  keeps them; ≳ 0.1, no ``rcond`` gives a reliable float64 answer through ``K``).
* **Residual.** Power-one rules (NGD, damped NGD, Levenberg–Marquardt NGD) solve a linear system
  (:mod:`curvdyn.curvature.refine`): ``residual`` is its relative residual on the kept range
  after refinement (for NGD: the least-squares residual of ``Ĵ d ≈ ΔS`` projected on the kept
  range of ``Ĵ``) and ``error_estimate`` the size of the next correction relative to ``‖d‖``.
  Fractional powers have no linear residual; ``residual`` is then the eigendecomposition's own:
  the relative eigenvalue errors ``|λ_k − ρ_k| / (λ_k + shift)``, weighted by each eigenvector's
  share of the direction, and ``error_estimate = power · residual`` (first order in the
  eigenvalue errors).

A direction is *reliable* when ``error_estimate`` and ``cut_effect`` are at most
:data:`WARN_TOL`; :meth:`curvdyn.Rule.direction` and :func:`curvdyn.simulate` warn
(``RuntimeWarning``) with the numbers otherwise.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from curvdyn.curvature._mapspace_ops import mapspace_kernel
from curvdyn.curvature.precision import effective_rcond
from curvdyn.curvature.spectral import SpectralFunction
from curvdyn.network import Weights
from curvdyn.task import Task

#: A direction whose ``error_estimate`` or ``cut_effect`` exceeds this warns.
WARN_TOL = 1e-6

#: ``cut_eig_error`` below this: the eigensolver of ``K`` resolved the cut eigenvalues too.
EIGENSOLVER_RESOLVES = 0.01


class DirectionInfo(NamedTuple):
    """How exact a direction is (arrays, so it works under ``jit`` and ``vmap``).

    Full rules: every field is a scalar; block rules: shape ``(d,)``, one entry per layer block
    (with any leading batch or time axes in front). Eigenvalues are relative to ``λ_max``.

    Attributes:
      n_cut: eigenvalues zeroed by the cutoff (``λ ≤ rcond · λ_max``; 0 with a shift).
      n_cut_resolved: those of them float64 resolves through ``Ĵ`` (``ρ > floor``).
      largest_cut: the largest cut eigenvalue, measured through ``Ĵ`` (``ρ / λ_max``; 0 if none).
      cut_residual: ``‖P ΔS‖ / ‖ΔS‖`` over the resolved cut eigenvectors.
      cut_effect: relative change of the direction if the resolved cut eigenvalues were kept.
      cut_eig_error: largest ``|λ − ρ| / ρ`` over the resolved cut eigenvalues (0 if none).
      cond: condition number of the kept spectrum, ``(λ_max + shift) / (λ_min,kept + shift)``.
      residual: relative residual (see the module docstring).
      error_estimate: estimated relative error of the direction on the kept spectrum.
      floor: relative level below which a cut eigenvalue counts as an exact zero.
    """

    n_cut: jax.Array
    n_cut_resolved: jax.Array
    largest_cut: jax.Array
    cut_residual: jax.Array
    cut_effect: jax.Array
    cut_eig_error: jax.Array
    cond: jax.Array
    residual: jax.Array
    error_estimate: jax.Array
    floor: jax.Array


def _safe_div(x, y):
    ok = y > 0
    return jnp.where(ok, x / jnp.where(ok, y, 1.0), 0.0)


def spectral_info(
    evals: jax.Array,
    rho: jax.Array,
    coef: jax.Array,
    f: SpectralFunction,
    *,
    rhs_norm: jax.Array,
    d_norm: jax.Array,
    res_coef: jax.Array | None = None,
    res_scale: jax.Array | None = None,
    correction: jax.Array | None = None,
    param_basis: bool = False,
) -> DirectionInfo:
    """The :class:`DirectionInfo` of a direction computed from one eigendecomposition.

    Args:
      evals: ``(m,)`` the eigensolver's eigenvalues of the operator (``K``, ``H₊`` or a block).
      rho: ``(m,)`` the same eigenvalues measured through ``Ĵ`` (``‖Ĵᵀu_k‖²`` or ``‖Ĵv_k‖²``).
      coef: ``(m,)`` the coefficient of ``ΔS`` along the unit map-space direction of eigenvector
        k (``u_kᵀ ΔS``, or ``(Ĵv_k)ᵀΔS / ‖Ĵv_k‖``): the gradient's coefficient is ``coef·√ρ``.
      f: the spectral function the direction applied.
      rhs_norm: ``‖ΔS‖``; d_norm: ``‖d‖``.
      res_coef, res_scale: power-one rules: the final residual's coefficients in the eigenbasis
        and those of the unscaled right-hand side in the same form (``coef`` in map space, the
        gradient's in parameter space).
      correction: power-one rules: ``‖δd‖`` of the next refinement correction.
      param_basis: the eigenvectors are parameter-space ones (``H₊`` or a block) and the
        direction was not refined: its kept eigenvectors lean into the null space of ``Ĵ`` by
        ``θ_k ≈ (Σ_null ρ_j / λ_k)^{1/2}`` (the computed null vectors lean into the row space by as
        much, and ``ρ_j`` measures that), which adds ``(Σ_k (θ_k · part_k)²)^{1/2} / ‖d‖`` to the
        error estimate.
    """
    dtype = evals.dtype
    eps = float(jnp.finfo(dtype).eps)
    dim = evals.size
    lam = jnp.maximum(evals, 0.0)
    top = jnp.max(lam)
    scale = jnp.where(top > 0, top, 1.0)
    shift, power = f.shift, f.power
    if shift > 0:
        kept = jnp.ones(lam.shape, dtype=bool)
    else:
        kept = lam > f.cutoff(dtype) * top
    cut = ~kept
    lam_min = jnp.min(jnp.where(kept, lam, jnp.inf))
    cond = jnp.where(jnp.any(kept), (top + shift) / (lam_min + shift), 1.0)
    # a computed null vector leans on its nearest nonzero neighbour (the smallest eigenvalue the
    # eigensolver resolves, kept or cut) by ~√dim·eps·λ_max/λ_next: that bounds its ρ
    lam_next = jnp.min(jnp.where(lam > dim * eps * top, lam, jnp.inf))
    floor = dim * eps**2 * (1.0 + jnp.where(jnp.isfinite(lam_next), top / lam_next, 1.0))
    rho = jnp.maximum(rho, 0.0)
    rho_rel = rho / scale
    resolved = cut & (rho_rel > floor)
    coef2 = coef * coef
    cut_residual = _safe_div(jnp.sqrt(jnp.sum(jnp.where(resolved, coef2, 0.0))), rhs_norm)
    # the part of d the resolved cut eigenvalues would add, f(ρ) · (gradient coefficient)
    safe_rho = jnp.where(resolved, rho, 1.0)
    would = jnp.where(resolved, f.gain * coef * safe_rho ** (0.5 - power), 0.0)
    d_cut = jnp.sqrt(jnp.sum(would * would))
    cut_effect = _safe_div(d_cut, jnp.sqrt(d_norm**2 + d_cut**2))
    cut_eig_error = jnp.max(jnp.where(resolved, jnp.abs(lam - rho) / safe_rho, 0.0))
    if res_coef is not None:
        if res_scale is None or correction is None:
            raise ValueError("res_coef needs res_scale and correction (a refined direction)")
        num = jnp.sqrt(jnp.sum(jnp.where(kept, res_coef * res_coef, 0.0)))
        den = f.gain * jnp.sqrt(jnp.sum(jnp.where(kept, res_scale * res_scale, 0.0)))
        residual = _safe_div(num, den)
        error_estimate = _safe_div(correction, d_norm)
    else:
        safe_lam = jnp.where(kept, lam, 1.0)
        part = jnp.where(kept, f(evals, top) * coef * jnp.sqrt(jnp.where(kept, rho, 0.0)), 0.0)
        rel_eig = jnp.where(kept, jnp.abs(lam - rho) / (safe_lam + shift), 0.0)
        residual = _safe_div(jnp.sqrt(jnp.sum((part * rel_eig) ** 2)), jnp.sqrt(jnp.sum(part * part)))
        error_estimate = power * residual
        if param_basis:
            null_rho = jnp.sum(jnp.where(cut & ~resolved, rho, 0.0))
            theta = jnp.where(kept, jnp.sqrt(jnp.minimum(1.0, null_rho / (safe_lam + shift))), 0.0)
            drift = _safe_div(jnp.sqrt(jnp.sum((theta * part) ** 2)), d_norm)
            error_estimate = jnp.sqrt(error_estimate**2 + drift**2)
    return DirectionInfo(
        n_cut=jnp.sum(cut).astype(jnp.int32),
        n_cut_resolved=jnp.sum(resolved).astype(jnp.int32),
        largest_cut=jnp.max(jnp.where(cut, rho_rel, 0.0)),
        cut_residual=cut_residual,
        cut_effect=cut_effect,
        cut_eig_error=cut_eig_error,
        cond=cond.astype(dtype),
        residual=residual,
        error_estimate=error_estimate,
        floor=floor.astype(dtype),
    )


def exact_info(dtype) -> DirectionInfo:
    """The info of a direction with nothing to report (the plain gradient): all zeros, cond 1."""
    zero = jnp.zeros((), dtype)
    n = jnp.zeros((), jnp.int32)
    return DirectionInfo(n, n, zero, zero, zero, zero, jnp.ones((), dtype), zero, zero, zero)


def bound_info(error_bound: jax.Array) -> DirectionInfo:
    """The info of a method that certifies only an error bound (``cg``): no cut, cond unknown (NaN)."""
    dtype = error_bound.dtype
    base = exact_info(dtype)
    nan = jnp.full((), jnp.nan, dtype)
    return base._replace(cond=nan, residual=nan, error_estimate=error_bound)


def stack_infos(infos) -> DirectionInfo:
    """One :class:`DirectionInfo` with a leading axis from a sequence of them (the layer blocks)."""
    return jax.tree_util.tree_map(lambda *x: jnp.stack(x), *infos)


def unit_coef(t: jax.Array, rho: jax.Array) -> jax.Array:
    """``ΔS``'s coefficients along the unit map-space directions ``Ĵ v_k / √ρ_k`` of a parameter
    eigenbasis, from the gradient's ``t_k = v_kᵀ g`` (0 where ``ρ_k = 0``)."""
    ok = rho > 0
    return jnp.where(ok, t / jnp.sqrt(jnp.where(ok, rho, 1.0)), 0.0)


def residual_in_basis(out, coef_params, coef_pulled, rho, t):
    """A parameter-eigenbasis method's refined residual as ``(res_coef, res_scale)`` for
    :func:`spectral_info`.

    Map form (``out.lam`` tracked, no shift): the map-space residual along the unit directions
    ``Ĵ v_k / √ρ_k`` (``coef_pulled(r) = Vᵀ Ĵᵀ r``), against ``ΔS``'s coefficients. Parameter form
    (with a shift): ``coef_params(r) = Vᵀ r`` against the gradient's ``t``. ``(None, None)`` when
    nothing was refined.
    """
    if out.residual is None:
        return None, None
    if out.lam is None:
        return coef_params(out.residual), t
    return unit_coef(coef_pulled(out.residual), rho), unit_coef(t, rho)


def norm_of(tree) -> jax.Array:
    """Euclidean norm of all the leaves of a pytree together."""
    return jnp.sqrt(functools.reduce(jnp.add, (jnp.sum(x * x) for x in jax.tree_util.tree_leaves(tree))))


def rho_map(a: Weights, bs: Weights, evecs: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """``‖Ĵᵀ u_k‖² = Σ_i ‖A_iᵀ U_k (B_i S)ᵀ‖_F²`` for the columns ``u_k`` of ``evecs`` (row-major maps)."""
    u = evecs.T.reshape((-1,) + shape)
    return functools.reduce(
        jnp.add, (jnp.sum(jnp.einsum("ai,kab,jb->kij", a_i, u, bs_i) ** 2, axis=(1, 2)) for a_i, bs_i in zip(a, bs))
    )


def rho_grid(a: Weights, bs: Weights, u: jax.Array, v: jax.Array) -> jax.Array:
    """``‖Ĵᵀ(u_a v_bᵀ)‖² = Σ_i ‖A_iᵀ u_a‖² ‖(B_i S) v_b‖²`` for the product basis, shape ``(n_d, n_0)``."""
    return functools.reduce(
        jnp.add,
        (
            jnp.sum((a_i.T @ u) ** 2, axis=0)[:, None] * jnp.sum((bs_i @ v) ** 2, axis=0)[None, :]
            for a_i, bs_i in zip(a, bs)
        ),
    )


def condition_number(ws: Weights, task: Task) -> float:
    """``λ_max / λ_min`` over the nonzero spectrum of ``K`` (= that of ``H₊``), a diagnostic."""
    evals = jnp.linalg.eigvalsh(mapspace_kernel(ws, task))
    top = float(evals[-1])
    nonzero = evals[evals > effective_rcond(None, evals.dtype) * top]
    return top / float(nonzero[0]) if nonzero.size else math.inf


# ---------------------------------------------------------------------------------------
# reading the numbers: warnings and summaries (host side)
# ---------------------------------------------------------------------------------------


def _worst_index(values: np.ndarray) -> int:
    flat = np.nan_to_num(np.asarray(values, dtype=np.float64).ravel(), nan=-np.inf)
    return int(np.argmax(flat))


def describe(
    info: DirectionInfo, what: str = "the direction", rcond: float | None = None, *, warn_cut: bool = True
) -> str | None:
    """A one-paragraph warning when ``info`` says the direction is unreliable, else ``None``.

    ``info`` may carry leading axes (layer blocks, times, batch members): the worst entry is
    described. ``what`` names the direction (e.g. ``"NGD (mapspace)"``); ``rcond`` is the
    cutoff applied (named in the text). ``warn_cut=False`` (a cutoff the user chose, so the
    pseudo-inverse at that cutoff is what was asked for): only the conditioning can warn.
    """
    arr = {k: np.asarray(v) for k, v in info._asdict().items()}
    parts = []
    cut_effect = np.nan_to_num(arr["cut_effect"], nan=0.0)
    if warn_cut and np.max(cut_effect, initial=0.0) > WARN_TOL:
        i = _worst_index(cut_effect)
        pick = {k: v.ravel()[i] for k, v in arr.items()}
        where = _where(arr["cut_effect"].shape, i)
        cutoff = f"the cutoff rcond = {rcond:.3g}" if rcond is not None else "the cutoff"
        text = (
            f"{cutoff} zeroed {int(pick['n_cut_resolved'])} eigenvalue(s){where} that float64 resolves through "
            f"Ĵ (largest {pick['largest_cut']:.2g} λ_max, above the exact-zero floor {pick['floor']:.1g} λ_max); "
            f"they carry {100 * pick['cut_residual']:.2g} % of ΔS, which the direction leaves unfitted, and "
            f"keeping them would change the direction by about {100 * pick['cut_effect']:.3g} %: the cutoff, "
            "not the mathematics, decides this answer. "
        )
        if pick["cut_eig_error"] < EIGENSOLVER_RESOLVES:
            text += (
                f"The eigensolver of K resolved them too (its eigenvalues agree with ‖Ĵᵀu‖² to "
                f"{100 * pick['cut_eig_error']:.2g} %): a smaller rcond (below {pick['largest_cut']:.1g}) keeps them."
            )
        else:
            text += (
                f"The eigensolver of K does not resolve them (its eigenvalue is off by "
                f"{100 * min(pick['cut_eig_error'], 99.99):.3g} % from ‖Ĵᵀu‖²: below its round-off floor, "
                "~dim · eps · λ_max): no rcond gives a reliable float64 answer through K."
            )
        parts.append(text)
    err = np.nan_to_num(arr["error_estimate"], nan=0.0)
    if np.max(err, initial=0.0) > WARN_TOL:
        i = _worst_index(err)
        pick = {k: v.ravel()[i] for k, v in arr.items()}
        parts.append(
            f"the estimated relative error of the direction is {pick['error_estimate']:.2g}{_where(err.shape, i)} "
            f"(condition number of the kept spectrum {pick['cond']:.3g}, relative residual {pick['residual']:.2g})."
        )
    if not parts:
        return None
    return f"{what} is not exact to {WARN_TOL:g}: " + " Also, ".join(parts)


def _where(shape: tuple, index: int) -> str:
    if len(shape) == 0:
        return ""
    idx = np.unravel_index(index, shape)
    return f" (in block/entry {tuple(int(i) for i in idx)})" if len(shape) > 1 else f" (layer block {idx[0] + 1})"


def summarize(
    info: DirectionInfo,
    times: np.ndarray | None = None,
    what: str = "the direction",
    rcond: float | None = None,
    *,
    warn_cut: bool = True,
) -> dict:
    """The worst of a stack of :class:`DirectionInfo` (e.g. one per recorded time) as a JSON-ready dict.

    Args:
      info: fields with leading axes (``times.shape``, e.g. ``(T,)`` or ``(B, T)``), and a
        trailing ``(d,)`` for block rules.
      times: the times of the leading axes (NaN marks padding, which is ignored); ``None``:
        every entry counts, no time is reported.
      what, rcond, warn_cut: as in :func:`describe`.

    Returns:
      ``{field: worst value}`` for every field (max over the valid entries; ``None`` where all
      are NaN), plus ``reliable`` (no warning), ``warning`` (:func:`describe` of the worst entry,
      prefixed with its time) and ``worst_at`` (the time of the largest ``error_estimate`` or
      ``cut_effect``; ``None`` without ``times``).
    """
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in info._asdict().items()}
    lead = np.shape(times) if times is not None else ()
    valid = np.isfinite(np.asarray(times, dtype=np.float64)) if times is not None else np.ones((), dtype=bool)
    n_lead = valid.size

    def per_entry(a):  # (entries, rest)
        return a.reshape(n_lead, -1)

    out: dict = {}
    for k, a in arrays.items():
        vals = per_entry(a)[valid.ravel()]
        m = float(np.nanmax(vals)) if vals.size and not np.all(np.isnan(vals)) else None
        out[k] = int(m) if (m is not None and k.startswith("n_")) else m
    bad = np.nan_to_num(per_entry(arrays["error_estimate"]), nan=0.0)
    if warn_cut:
        bad = np.maximum(bad, np.nan_to_num(per_entry(arrays["cut_effect"]), nan=0.0))
    bad = bad.max(axis=1)
    bad = np.where(valid.ravel(), bad, -np.inf)
    worst = int(np.argmax(bad)) if bad.size else 0
    picked = DirectionInfo(*(per_entry(a)[worst].reshape(a.shape[len(lead) :]) for a in arrays.values()))
    message = describe(picked, what, rcond, warn_cut=warn_cut) if bad.size and np.isfinite(bad[worst]) else None
    out["worst_at"] = None
    if times is not None and n_lead and np.any(valid):
        out["worst_at"] = float(np.asarray(times, dtype=np.float64).ravel()[worst])
        if message is not None:
            message = f"at t = {out['worst_at']:.6g}: {message}"
    out["reliable"] = message is None
    out["warning"] = message
    return out
