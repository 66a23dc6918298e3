"""The learning rules of the paper, exact, and a registry by name.

Every rule is a direction ``d(w)`` with continuous-time velocity ``ẇ = −η d`` (η = 1 in
``direction``); a discrete step is ``w ← w − η d``. With the gradient ``g`` and the
Gauss–Newton matrix ``H₊`` (DESIGN.md):

==============  =====================================================  ===============
name            direction                                              paper
==============  =====================================================  ===============
``sgd``         ``g``                                                  eq. 5
``ngd``         ``H₊⁺ g``                                              eqs. 9–11
``sqrt-ngd``    ``(H₊⁺)^{1/2} g``                                      eq. 14, q = 2
``frac-ngd``    ``(H₊⁺)^{1/q} g``, q ≥ 1                               eq. 14
``damped-ngd``  ``(ε + 1)(ε I + H₊)⁻¹ g``, ε ≥ 0                       eq. 17
``ngd-d``       layer i: ``d^{−1} H_i⁺ g_i``                           eq. 23
``sqrt-ngd-d``  layer i: ``d^{−1/2} (H_i⁺)^{1/2} g_i``                 eq. 26
``frac-ngd-d``  layer i: ``d^{−1/q} (H_i⁺)^{1/q} g_i``                 eq. 25
==============  =====================================================  ===============

``X⁺^{1/q}`` is the pseudo-inverse power: eigenvalues ``λ ≤ rcond · λ_max`` count as zero
and stay zero (``rcond`` defaults to :data:`curvdyn.curvature.DEFAULT_RCOND`). For the
block-diagonal rules ``H_i = (B_i Σ B_iᵀ) ⊗ (A_iᵀ A_i)`` and the cutoff acts on the
eigenvalues of ``H_i`` (products of the factors' eigenvalues). ``layer_rates`` (η_1..η_d)
replace the default layer factor ``d^{−1/q}``.

``lm_damping = λ > 0`` (Levenberg–Marquardt, the paper's section 4 numerics for NGD)
replaces ``H⁺^{1/q}`` by ``(H + λ I)^{−1/q}`` — for the block rules on each block exactly.

Methods (``Rule.direction(..., method=...)``, ``simulate(..., method=...)``); all are
exact (``cg`` to its stated tolerance) and all compile under ``jax.jit``:

=====================  ==================================================  ==================
method                 how                                                 cost
=====================  ==================================================  ==================
``dense``              explicit ``H₊`` (or blocks), eigendecomposition     O(P³), O(P²) memory
``mapspace``           map-space kernel ``K`` (n_d n_0 square), eigh       O((n_d n_0)³)
``kronsum``            d = 2, Σ = I: two eigendecompositions               O(N³)
``balanced``           shared eigenbasis of the Grams (declared)           O(d (n_d³ + n_0³))
``balanced-checked``   ``balanced`` if its error estimate ≤ balance_tol,   same + the check
                       else ``mapspace`` (or ``dense`` when P < n_d n_0)
``cg``                 damped rules: matrix-free CG on ``K + shift``       iterations × O(d n³)
``krylov``             every full rule: preconditioned CG, rational         iterations × O(d n³)
                       approximation for q > 1, checked error (default
                       1e-10), fallback to ``mapspace`` when uncertified
``kronecker``          block rules: layer factors                          O(Σ n_i³)
``auto``               full rules: ``kronsum`` for d = 2, Σ = I, ``krylov``
                       from n_d n_0 ≥ 400, else ``balanced-checked``;
                       block rules: the cheaper of
                       ``kronecker`` and ``mapspace``
=====================  ==================================================  ==================

``auto`` never forms a ``P × P`` matrix unless the network has fewer parameters than its map
has entries (``P < n_d n_0``), where ``H₊`` is the smaller eigenproblem. ``balanced`` trusts
the user's declaration that the weights are balanced (or aligned): under the full rules balance
is conserved (eq. 4), so declaring it at the start of a run holds along the run up to the
integration error; check with :func:`curvdyn.curvature.shared_basis_error`.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from curvdyn import curvature as cv
from curvdyn._names import METHODS, RULE_NAMES
from curvdyn._validate import check_nonneg, check_q
from curvdyn.network import Weights, as_weights, gradient, widths_of
from curvdyn.task import Task

_FIXED_Q = {"sgd": math.inf, "ngd": 1.0, "sqrt-ngd": 2.0, "ngd-d": 1.0, "sqrt-ngd-d": 2.0}
_PARAMS = {
    "sgd": (),
    "ngd": ("lm_damping", "rcond"),
    "sqrt-ngd": ("lm_damping", "rcond"),
    "frac-ngd": ("q", "lm_damping", "rcond"),
    "damped-ngd": ("eps", "rcond"),
    "ngd-d": ("layer_rates", "lm_damping", "rcond"),
    "sqrt-ngd-d": ("layer_rates", "lm_damping", "rcond"),
    "frac-ngd-d": ("q", "layer_rates", "lm_damping", "rcond"),
}
_FULL_ONLY = ("kronsum", "balanced", "balanced-checked", "cg", "krylov")


@dataclasses.dataclass(frozen=True)
class Rule:
    """A learning rule: build it with :func:`get_rule`.

    Attributes:
      name: registry name.
      q: correction order (1 = NGD, 2 = sqrt-NGD, ``math.inf`` = SGD).
      eps: damping ε of ``damped-ngd`` (eq. 17), else ``None``.
      block: whether the curvature is restricted to the diagonal layer blocks.
      layer_rates: per-layer rates η_i of a block rule (``None``: ``d^{−1/q}`` each).
      lm_damping: Levenberg–Marquardt shift λ ≥ 0.
      rcond: relative eigenvalue cutoff of the pseudo-inverse powers.
    """

    name: str
    q: float = math.inf
    eps: float | None = None
    block: bool = False
    layer_rates: tuple[float, ...] | None = None
    lm_damping: float = 0.0
    rcond: float = cv.DEFAULT_RCOND

    @property
    def label(self) -> str:
        """A short human-readable name, e.g. ``sqrt-NGD-d`` or ``q-NGD (q=3)``."""
        base = {
            "sgd": "SGD",
            "ngd": "NGD",
            "sqrt-ngd": "sqrt-NGD",
            "ngd-d": "NGD-d",
            "sqrt-ngd-d": "sqrt-NGD-d",
        }.get(self.name)
        if base is None and self.name == "damped-ngd":
            base = f"damped NGD (eps={self.eps:g})"
        elif base is None:
            base = f"q-NGD{'-d' if self.block else ''} (q={self.q:g})"
        return base + (f", LM {self.lm_damping:g}" if self.lm_damping else "")

    @property
    def is_gradient(self) -> bool:
        """True when the direction is the plain gradient (SGD, or q = ∞ without layer rates)."""
        plain_rates = not (self.block and self.layer_rates is not None)
        return math.isinf(self.q) and self.eps is None and not self.lm_damping and plain_rates

    def spectral_function(self) -> cv.SpectralFunction:
        """The function ``f`` of the curvature this rule applies to the gradient."""
        if self.eps is not None:
            if self.eps > 0:
                return cv.SpectralFunction(power=1.0, shift=self.eps, gain=self.eps + 1.0, rcond=self.rcond)
            return cv.SpectralFunction(power=1.0, rcond=self.rcond)
        power = 0.0 if math.isinf(self.q) else 1.0 / self.q
        return cv.SpectralFunction(power=power, shift=self.lm_damping, rcond=self.rcond)

    def layer_scales(self, depth: int) -> tuple[float, ...]:
        """The factor multiplying layer i's block direction: η_i, or ``d^{−1/q}``."""
        if self.layer_rates is not None:
            if len(self.layer_rates) != depth:
                raise ValueError(
                    f"rule {self.name} has {len(self.layer_rates)} layer_rates but the network has depth {depth}"
                )
            return self.layer_rates
        return (1.0 if math.isinf(self.q) else depth ** (-1.0 / self.q),) * depth

    def direction(
        self,
        weights: Sequence,
        task: Task,
        *,
        method: str = "auto",
        balance_tol: float | None = None,
        cg_tol: float | None = None,
        cg_maxiter: int | None = None,
        krylov_tol: float | None = None,
        krylov_maxiter: int | None = None,
    ) -> Weights:
        """The direction ``d`` (velocity ``ẇ = −d`` at η = 1), a tuple shaped like ``weights``.

        Args:
          weights: ``(w_1, ..., w_d)``, ``w_i`` of shape ``(n_i, n_{i−1})``.
          task: the :class:`~curvdyn.task.Task` (``W*``, ``Σ``).
          method: ``"auto"`` (fastest exact method, see the module table), ``"dense"``
            (explicit ``H₊`` or blocks, the reference), ``"mapspace"`` (DESIGN.md identity),
            ``"kronsum"`` (full rules, d = 2 and Σ = I), ``"balanced"`` (full rules, declared
            shared eigenbasis), ``"balanced-checked"`` (that, checked at run time),
            ``"cg"`` (damped full rules, matrix-free), ``"krylov"`` (full rules,
            matrix-free, checked), ``"kronecker"`` (block rules: layer factors).
          balance_tol: tolerance of the shared-basis check (``balanced-checked`` and
            ``auto``); default :func:`curvdyn.curvature.default_balance_tol` of the dtype.
          cg_tol, cg_maxiter: ``cg`` only: relative error bound to stop at (default 1e-10)
            and iteration cap (default 2000). A ``cg`` direction that stops at the cap
            without meeting ``cg_tol`` warns (``RuntimeWarning``) with its error bound.
          krylov_tol, krylov_maxiter: ``krylov`` only: relative error tolerance in parameter
            space (default :func:`curvdyn.curvature.default_krylov_tol`: 1e-10 in float64) and
            the iteration cap of each solve. An uncertified direction (cutoff zone not cleared,
            or a solve that did not converge) warns and is replaced by the ``mapspace`` one; a
            converged one whose estimate exceeds ``krylov_tol`` (the float64 round-off floor of
            an ill-conditioned K) warns and is kept (the eigh path would be less accurate).
        """
        ws = as_weights(weights)
        check_compatible(ws, task)
        resolved = self.resolve_method(widths_of(ws), task.identity_cov, method)
        opts = _options(balance_tol, cg_tol, cg_maxiter)
        if resolved == "cg" and not self.is_gradient:
            out, info = _cg_jit(ws, task, self, opts[1], opts[2])
            if not bool(info.converged):
                warnings.warn(
                    f"cg stopped after {int(info.iterations)} iterations with relative error "
                    f"bound {float(info.error_bound):.3g} > cg_tol = {opts[1]:.3g}; raise "
                    "cg_maxiter or use an eigendecomposition method",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return tuple(out)
        if resolved == "krylov" and not self.is_gradient:
            return _krylov_checked(ws, task, self, krylov_tol, krylov_maxiter)
        return _direction_jit(ws, task, self, resolved, *opts)

    def resolve_method(self, widths: tuple[int, ...], identity_cov: bool, method: str) -> str:
        """The concrete (static) method ``auto`` stands for, or a validated explicit one.

        Full rules: ``auto`` is ``kronsum`` for d = 2 with Σ = I, else ``balanced-checked``
        (the shared-basis path where it holds at run time, else the shape's fallback,
        :func:`curvdyn.curvature.choose_full_method`). Block rules: the cheaper of
        ``kronecker`` and ``mapspace`` (:func:`curvdyn.curvature.choose_block_method`).
        """
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
        if self.block:
            if method in _FULL_ONLY:
                raise ValueError(f"method {method!r} is for the full-curvature rules, not block rules")
            return cv.choose_block_method(widths) if method == "auto" else method
        if method == "kronecker":
            raise ValueError("method 'kronecker' is for the block-diagonal rules (-d)")
        if method == "kronsum" and (len(widths) != 3 or not identity_cov):
            raise ValueError("method 'kronsum' needs depth d = 2 and an identity input covariance")
        if method == "krylov" and not self.is_gradient and self.spectral_function().power > 1.0:
            raise ValueError(f"method 'krylov' needs q >= 1; rule {self.label} has q = {self.q:g}")
        if method == "cg" and not self.is_gradient:
            f = self.spectral_function()
            if not (f.shift > 0 and f.power == 1.0):
                raise ValueError(
                    "method 'cg' is for damped rules ((ε + H)⁻¹): damped-ngd with eps > 0, or "
                    f"ngd/damped-ngd with lm_damping > 0; rule {self.label} is not one"
                )
        if method != "auto":
            return method
        shape_choice = cv.choose_full_method(widths, identity_cov)
        if shape_choice in ("kronsum", "krylov") or self.is_gradient:
            return shape_choice
        return "balanced-checked"

    def method_at(
        self, weights: Sequence, task: Task, method: str = "auto", *, balance_tol: float | None = None
    ) -> str:
        """The path that actually runs at these weights: ``resolve_method``, with
        ``balanced-checked`` resolved to ``balanced`` or its fallback by evaluating the check."""
        ws = as_weights(weights)
        check_compatible(ws, task)
        resolved = self.resolve_method(widths_of(ws), task.identity_cov, method)
        if resolved != "balanced-checked" or self.is_gradient:
            return "gradient" if self.is_gradient else resolved
        f = self.spectral_function()
        err = float(cv.shared_basis_error(ws, task, f))
        tol = cv.default_balance_tol(ws[0].dtype) if balance_tol is None else float(balance_tol)
        return "balanced" if err <= tol else _eigh_fallback(widths_of(ws), task.identity_cov)


def _options(balance_tol, cg_tol, cg_maxiter) -> tuple:
    if balance_tol is not None:
        balance_tol = check_nonneg(balance_tol, "balance_tol")
    cg_tol = cv.DEFAULT_CG_TOL if cg_tol is None else check_nonneg(cg_tol, "cg_tol")
    if cg_maxiter is None:
        cg_maxiter = cv.DEFAULT_CG_MAXITER
    elif int(cg_maxiter) != cg_maxiter or cg_maxiter < 1:
        raise ValueError(f"cg_maxiter must be a positive integer, got {cg_maxiter}")
    return balance_tol, float(cg_tol), int(cg_maxiter)


def check_compatible(ws: Weights, task: Task) -> None:
    """Raise ``ValueError`` when the network's map shape differs from the task's."""
    n_out, n_in = ws[-1].shape[-2], ws[0].shape[-1]
    if (n_out, n_in) != tuple(task.target.shape):
        raise ValueError(
            f"network map has shape (n_d, n_0) = ({n_out}, {n_in}) but the task's target has "
            f"shape {tuple(task.target.shape)}"
        )


def direction_unchecked(
    ws: Weights,
    task: Task,
    rule: Rule,
    method: str,
    balance_tol: float | None = None,
    cg_tol: float = cv.DEFAULT_CG_TOL,
    cg_maxiter: int = cv.DEFAULT_CG_MAXITER,
) -> Weights:
    """The rule's direction with a resolved method and no input validation (traceable)."""
    if rule.is_gradient:
        return gradient(ws, task)
    f = rule.spectral_function()
    if rule.block:
        if method == "mapspace":
            out = cv.block_direction_mapspace(ws, task, f)
        elif method == "kronecker":
            out = cv.block_direction_kronecker(ws, task, f, gradient(ws, task))
        else:
            out = cv.block_direction_dense(ws, task, f, gradient(ws, task))
        return tuple(s * o for s, o in zip(rule.layer_scales(len(ws)), out))
    if method == "mapspace":
        return cv.mapspace_direction(ws, task, f)
    if method == "kronsum":
        return cv.kronsum_direction(ws, task, f)
    if method == "balanced":
        return cv.balanced_direction(ws, task, f)
    if method == "balanced-checked":
        fallback = _eigh_fallback(widths_of(ws), task.identity_cov)
        return cv.checked_direction(ws, task, f, fallback, balance_tol)
    if method == "cg":
        return cv.cg_direction(ws, task, f, tol=cg_tol, maxiter=cg_maxiter)[0]
    if method == "krylov":
        # inside a compiled caller: the eigh fallback travels in the program up to a size
        fallback = ws[-1].shape[-2] * ws[0].shape[-1] <= cv.IN_GRAPH_FALLBACK_MAX_MAP
        return cv.krylov_direction(ws, task, f, fallback=fallback)[0]
    return cv.dense_direction(ws, task, f, gradient(ws, task))


#: Entries of the per-run statistics of :func:`direction_warm` (summed over directions, the last
#: one a maximum).
WARM_STATS = ("directions", "fallbacks", "uncertified", "over_tol", "iterations", "max_estimate")


def warm_state(ws: Weights, task: Task, rule: Rule, method: str):
    """The initial warm-start state of :func:`direction_warm` (empty except for ``krylov``)."""
    if method == "krylov" and not rule.is_gradient:
        return cv.krylov_init_state(ws, task, rule.spectral_function())
    return ()


def direction_warm(ws: Weights, task: Task, rule: Rule, method: str, state):
    """``(direction, new_state, stats)``: :func:`direction_unchecked` that carries a warm start.

    For ``krylov`` the state holds the last solutions of the shifted solves (a step along a
    trajectory then costs a handful of iterations), an uncertified direction is replaced by the
    eigh one inside the program when ``n_d n_0 ≤`` :data:`curvdyn.curvature.IN_GRAPH_FALLBACK_MAX_MAP`,
    and ``stats`` (:data:`WARM_STATS`) counts what happened. Other methods pass the state through.
    """
    dtype = ws[0].dtype
    if method != "krylov" or rule.is_gradient:
        return direction_unchecked(ws, task, rule, method), state, jnp.zeros(len(WARM_STATS), dtype).at[0].set(1.0)
    fallback = ws[-1].shape[-2] * ws[0].shape[-1] <= cv.IN_GRAPH_FALLBACK_MAX_MAP
    out, info, new = cv.krylov_direction(ws, task, rule.spectral_function(), state=state, fallback=fallback)
    new = new._replace(valid=info.converged)
    as_f = lambda x: jnp.asarray(x, dtype)
    stats = jnp.stack(
        [
            as_f(1.0),
            as_f(info.fallback),
            as_f(~info.converged & (not fallback)),
            as_f(info.converged & ~info.certified),
            as_f(info.iterations),
            jnp.where(info.converged, info.error_estimate, 0.0).astype(dtype),
        ]
    )
    return tuple(out), new, stats


def _eigh_fallback(widths: tuple[int, ...], identity_cov: bool) -> str:
    """The eigendecomposition method ``balanced-checked`` falls back to (never ``krylov``)."""
    choice = cv.choose_full_method(widths, identity_cov)
    return "mapspace" if choice == "krylov" else choice


_direction_jit = jax.jit(direction_unchecked, static_argnames=("rule", "method", "balance_tol", "cg_tol", "cg_maxiter"))


def _cg_with_info(ws, task, rule, cg_tol, cg_maxiter):
    return cv.cg_direction(ws, task, rule.spectral_function(), tol=cg_tol, maxiter=cg_maxiter)


_cg_jit = jax.jit(_cg_with_info, static_argnames=("rule", "cg_tol", "cg_maxiter"))


def _krylov_with_info(ws, task, rule, tol, maxiter):
    return cv.krylov_direction(ws, task, rule.spectral_function(), tol=tol, maxiter=maxiter)


_krylov_jit = jax.jit(_krylov_with_info, static_argnames=("rule", "tol", "maxiter"))


def _krylov_checked(ws: Weights, task: Task, rule: Rule, tol, maxiter) -> Weights:
    """The ``krylov`` direction of :meth:`Rule.direction`, with its warnings and the fallback to
    ``mapspace`` run outside the Krylov program (no eigendecomposition of ``K`` compiled in)."""
    tol = cv.default_krylov_tol(ws[0].dtype) if tol is None else check_nonneg(tol, "krylov_tol")
    if maxiter is None:
        maxiter = cv.DEFAULT_KRYLOV_MAXITER
    elif int(maxiter) != maxiter or maxiter < 1:
        raise ValueError(f"krylov_maxiter must be a positive integer, got {maxiter}")
    out, info = _krylov_jit(ws, task, rule, float(tol), int(maxiter))
    numbers = (
        f"{int(info.iterations)} CG iterations, {int(info.poles)} shifted solve(s), spectrum certified "
        f"in [{float(info.lam_lo):.3g}, {float(info.lam_hi):.3g}], cutoff certified: {bool(info.cutoff_certified)}"
    )
    if not bool(info.converged):
        warnings.warn(
            f"krylov could not certify the direction ({numbers}); falling back to the eigh path (mapspace)",
            RuntimeWarning,
            stacklevel=3,
        )
        return tuple(_direction_jit(ws, task, rule, "mapspace", None, cv.DEFAULT_CG_TOL, cv.DEFAULT_CG_MAXITER))
    if not bool(info.certified):
        warnings.warn(
            f"krylov direction error estimate {float(info.error_estimate):.3g} exceeds krylov_tol = {tol:.3g} "
            f"(round-off floor {float(info.floor):.3g}; {numbers}); kept: the eigh path is less accurate here",
            RuntimeWarning,
            stacklevel=3,
        )
    return tuple(out)


def get_rule(name: str, **params) -> Rule:
    """Build a rule by name.

    Names and their parameters: ``sgd``; ``ngd``, ``sqrt-ngd`` (``lm_damping``, ``rcond``);
    ``frac-ngd`` (``q`` ≥ 1, required; ``lm_damping``, ``rcond``); ``damped-ngd`` (``eps`` ≥ 0,
    required; ``rcond``); ``ngd-d``, ``sqrt-ngd-d`` (``layer_rates``, ``lm_damping``, ``rcond``);
    ``frac-ngd-d`` (``q`` ≥ 1, required; ``layer_rates``, ``lm_damping``, ``rcond``).
    ``q = math.inf`` is allowed (it is SGD, or its block version: plain gradient).

    Raises:
      ValueError: unknown name (the message lists the known ones), ``q < 1``, negative
        ``eps``/``lm_damping``/``rcond``, or bad ``layer_rates``.
      TypeError: a parameter the rule does not take, or a missing required one.
    """
    if not isinstance(name, str) or name.lower() not in RULE_NAMES:
        raise ValueError(f"unknown rule {name!r}; known rules: {', '.join(RULE_NAMES)}")
    name = name.lower()
    allowed = _PARAMS[name]
    extra = sorted(set(params) - set(allowed))
    if extra:
        raise TypeError(f"rule {name!r} takes no parameter(s) {extra}; it takes {list(allowed) or 'none'}")
    kwargs: dict = {"name": name, "block": name.endswith("-d")}
    if name in _FIXED_Q:
        kwargs["q"] = _FIXED_Q[name]
    if name in ("frac-ngd", "frac-ngd-d"):
        if "q" not in params:
            raise TypeError(f"rule {name!r} needs the parameter q (q >= 1)")
        kwargs["q"] = check_q(params["q"])
    if name == "damped-ngd":
        if "eps" not in params:
            raise TypeError("rule 'damped-ngd' needs the parameter eps (eps >= 0)")
        kwargs["eps"] = check_nonneg(params["eps"], "eps")
        kwargs["q"] = 1.0
    if "lm_damping" in params:
        kwargs["lm_damping"] = check_nonneg(params["lm_damping"], "lm_damping")
    if "rcond" in params:
        rcond = check_nonneg(params["rcond"], "rcond")
        if rcond >= 1:
            raise ValueError(f"rcond is a relative cutoff and must be < 1, got {rcond}")
        kwargs["rcond"] = rcond
    if params.get("layer_rates") is not None:
        rates = params["layer_rates"]
        if isinstance(rates, (str, bytes)) or not hasattr(rates, "__len__"):
            raise TypeError(f"layer_rates must be a sequence of numbers, got {rates!r}")
        kwargs["layer_rates"] = tuple(check_nonneg(r, "each layer rate") for r in rates)
        if not kwargs["layer_rates"]:
            raise ValueError("layer_rates must not be empty")
    return Rule(**kwargs)
