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
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from curvdyn import curvature as cv
from curvdyn._names import METHODS, RULE_NAMES, STYLES
from curvdyn._validate import check_count, check_nonneg, check_number, check_q
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
    """A learning rule: build it with :func:`get_rule` (or directly: ``Rule(name="frac-ngd", q=3)``).

    However it is built, a rule is validated (:meth:`__post_init__`): the name is known and every
    field is consistent with it and in range, so ``Rule(name="ngd", q=0.5)`` raises instead of
    running another rule under NGD's name.

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

    def __post_init__(self) -> None:
        """Check the fields against the name (the one set of checks; :func:`get_rule` relies on it).

        Raises:
          ValueError: unknown name; a field the rule does not take set to a non-default value, or
            (``q``, ``block``) inconsistent with the name; ``q < 1``; negative ``eps``,
            ``lm_damping``, ``rcond`` or layer rate; ``rcond ≥ 1``; empty ``layer_rates``.
          TypeError: a field that is not a number (or ``layer_rates`` not a sequence of numbers).
        """
        name = self.name
        if not isinstance(name, str) or name not in RULE_NAMES:
            raise ValueError(f"unknown rule {name!r}; known rules: {', '.join(RULE_NAMES)}")
        set_ = lambda field, value: object.__setattr__(self, field, value)
        block = name.endswith("-d")
        if self.block is not block:
            raise ValueError(f"rule {name!r} has block={block}, got block={self.block!r}")
        if name in _FIXED_Q:
            q = check_number(self.q, "q")
            if q != _FIXED_Q[name]:
                raise ValueError(
                    f"rule {name!r} has q = {_FIXED_Q[name]:g}, got q = {self.q!r}; for another order use "
                    f"get_rule('frac-ngd{'-d' if block else ''}', q=...)"
                )
            set_("q", _FIXED_Q[name])
        elif name == "damped-ngd":
            if check_number(self.q, "q") != 1.0:
                raise ValueError(f"rule 'damped-ngd' has q = 1 (eq. 17), got q = {self.q!r}")
            set_("q", 1.0)
        else:
            set_("q", check_q(self.q))
        if name == "damped-ngd":
            if self.eps is None:
                raise ValueError("rule 'damped-ngd' needs eps (eps >= 0)")
            set_("eps", check_nonneg(self.eps, "eps"))
        elif self.eps is not None:
            raise ValueError(f"rule {name!r} takes no eps (only damped-ngd does), got eps = {self.eps!r}")
        allowed = _PARAMS[name]
        lm = check_nonneg(self.lm_damping, "lm_damping")
        if lm and "lm_damping" not in allowed:
            raise ValueError(f"rule {name!r} takes no lm_damping, got lm_damping = {self.lm_damping!r}")
        set_("lm_damping", lm)
        rcond = check_nonneg(self.rcond, "rcond")
        if rcond >= 1:
            raise ValueError(f"rcond is a relative cutoff and must be < 1, got {rcond}")
        if rcond != cv.DEFAULT_RCOND and "rcond" not in allowed:
            raise ValueError(f"rule {name!r} takes no rcond, got rcond = {self.rcond!r}")
        set_("rcond", rcond)
        rates = self.layer_rates
        if rates is not None:
            if not block:
                raise ValueError(f"rule {name!r} takes no layer_rates (only the block rules, -d, do)")
            if isinstance(rates, (str, bytes)) or not hasattr(rates, "__len__"):
                raise TypeError(f"layer_rates must be a sequence of numbers, got {rates!r}")
            rates = tuple(check_nonneg(x, "each layer rate") for x in rates)
            if not rates:
                raise ValueError("layer_rates must not be empty")
            set_("layer_rates", rates)

    @property
    def label(self) -> str:
        """A short plain-text name from :data:`curvdyn._names.STYLES`, e.g. ``sqrt-NGD-d`` or
        ``q-NGD (q=3)`` (figures use the same table's typeset ``display`` names)."""
        base = STYLES[self.name].text
        if self.name == "damped-ngd":
            base += f" (eps={self.eps:g})"
        elif self.name in ("frac-ngd", "frac-ngd-d"):
            base += f" (q={self.q:g})"
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
        return cv.SpectralFunction(power=cv.curvature_power(self.q), shift=self.lm_damping, rcond=self.rcond)

    def layer_scales(self, depth: int) -> tuple[float, ...]:
        """The factor multiplying layer i's block direction: η_i, or ``d^{−1/q}``."""
        if self.layer_rates is not None:
            if len(self.layer_rates) != depth:
                raise ValueError(
                    f"rule {self.name} has {len(self.layer_rates)} layer_rates but the network has depth {depth}"
                )
            return self.layer_rates
        return (cv.block_scale(depth, cv.curvature_power(self.q)),) * depth

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
        return_info: bool = False,
        diagnose: bool = True,
    ) -> Weights | tuple[Weights, cv.DirectionInfo]:
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
            an ill-conditioned K, or the angle bound of a deflated eigenvector) warns and is kept.
          return_info: also return the :class:`~curvdyn.curvature.DirectionInfo` of the path
            that ran (cut eigenvalues, conditioning, residual, error estimate; per layer block
            for the block rules; see :mod:`curvdyn.curvature.diagnostics`; ``krylov``: its
            error estimate, the cut count and the certified bound of the condition number).
          diagnose: compute those diagnostics and warn on an unreliable direction (the default).
            ``False`` runs the direction alone — the same computation, without the diagnostics'
            extra work (a compiled program of about a quarter of the size: worth it where the
            same direction is computed many times and checked once) and without the warnings;
            it cannot be combined with ``return_info``. ``cg`` warns on its stopping criterion
            either way, ``krylov`` on what it could not certify (and falls back) either way.

        Returns:
          ``d``, or ``(d, info)`` with ``return_info``. Mixed float32/float64 input runs in the
          common dtype (:func:`curvdyn.curvature.promote`). A direction the diagnostics find
          unreliable (estimated error, or with the default ``rcond`` the cutoff's effect, above
          :data:`curvdyn.curvature.WARN_TOL`) warns (``RuntimeWarning``) with the numbers.
        """
        if return_info and not diagnose:
            raise ValueError("return_info=True needs the diagnostics: do not pass diagnose=False with it")
        ws = as_weights(weights)
        check_compatible(ws, task)
        ws, task = cv.promote(ws, task)
        resolved = self.resolve_method(widths_of(ws), task.identity_cov, method)
        opts = _options(self, resolved, balance_tol, cg_tol, cg_maxiter)
        _check_krylov_options(self, resolved, krylov_tol, krylov_maxiter)
        if not diagnose and not (resolved in ("cg", "krylov") and not self.is_gradient):
            return tuple(_direction_jit(ws, task, self, resolved, *opts))
        if resolved == "cg" and not self.is_gradient:
            out, cg_info = _cg_jit(ws, task, self, opts[1], opts[2])
            if not bool(cg_info.converged):
                warnings.warn(
                    f"cg stopped after {int(cg_info.iterations)} iterations with relative error "
                    f"bound {float(cg_info.error_bound):.3g} > cg_tol = {opts[1]:.3g}; raise "
                    "cg_maxiter or use an eigendecomposition method",
                    RuntimeWarning,
                    stacklevel=2,
                )
            out, info = tuple(out), cv.bound_info(cg_info.error_bound)
        elif resolved == "krylov" and not self.is_gradient:
            out, info = _krylov_checked(ws, task, self, krylov_tol, krylov_maxiter)
        else:
            out, info = _direction_info_jit(ws, task, self, resolved, *opts)
            message = cv.describe(
                info,
                f"{self.label} ({resolved})",
                rcond=self.spectral_function().cutoff(ws[0].dtype),
                warn_cut=self.rcond == cv.DEFAULT_RCOND,  # a cutoff the user set is what they asked for
            )
            if message is not None:
                warnings.warn(message, RuntimeWarning, stacklevel=2)
        return (out, info) if return_info else out

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
        ws, task = cv.promote(ws, task)
        resolved = self.resolve_method(widths_of(ws), task.identity_cov, method)
        balance_tol = _options(self, resolved, balance_tol, None, None)[0]
        if resolved != "balanced-checked" or self.is_gradient:
            return "gradient" if self.is_gradient else resolved
        f = self.spectral_function()
        err = float(cv.shared_basis_error(ws, task, f))
        tol = cv.default_balance_tol(ws[0].dtype) if balance_tol is None else balance_tol
        return "balanced" if err <= tol else _eigh_fallback(widths_of(ws), task.identity_cov)


def _options(rule: Rule, resolved: str, balance_tol, cg_tol, cg_maxiter) -> tuple:
    """The method options, checked, with defaults; an option the resolved method ignores raises.

    ``balance_tol`` is used only by ``balanced-checked`` (what ``auto`` resolves to for the full
    rules unless d = 2 with Σ = I), ``cg_tol``/``cg_maxiter`` only by ``cg``; the plain gradient
    uses none of them.
    """
    runs = "gradient" if rule.is_gradient else resolved
    if balance_tol is not None:
        if runs != "balanced-checked":
            raise ValueError(
                f"balance_tol is an option of method 'balanced-checked' (and 'auto' where it resolves to it); "
                f"rule {rule.label} runs {runs!r} here, which does not use it"
            )
        balance_tol = check_nonneg(balance_tol, "balance_tol")
    if (cg_tol is not None or cg_maxiter is not None) and runs != "cg":
        given = ", ".join(n for n, v in (("cg_tol", cg_tol), ("cg_maxiter", cg_maxiter)) if v is not None)
        raise ValueError(
            f"{given}: option(s) of method 'cg'; rule {rule.label} runs {runs!r} here, which does not use them"
        )
    cg_tol = cv.DEFAULT_CG_TOL if cg_tol is None else check_nonneg(cg_tol, "cg_tol")
    cg_maxiter = cv.DEFAULT_CG_MAXITER if cg_maxiter is None else check_count(cg_maxiter, "cg_maxiter")
    return balance_tol, float(cg_tol), int(cg_maxiter)


def _check_krylov_options(rule: Rule, resolved: str, krylov_tol, krylov_maxiter) -> None:
    """``krylov_tol``/``krylov_maxiter`` are options of ``krylov`` only (the others raise, as
    :func:`_options` does for theirs)."""
    runs = "gradient" if rule.is_gradient else resolved
    if (krylov_tol is not None or krylov_maxiter is not None) and runs != "krylov":
        given = ", ".join(
            n for n, v in (("krylov_tol", krylov_tol), ("krylov_maxiter", krylov_maxiter)) if v is not None
        )
        raise ValueError(
            f"{given}: option(s) of method 'krylov'; rule {rule.label} runs {runs!r} here, which does not use them"
        )


def check_compatible(ws: Weights, task: Task) -> None:
    """Raise ``ValueError`` when the network's map shape differs from the task's."""
    n_out, n_in = ws[-1].shape[-2], ws[0].shape[-1]
    if (n_out, n_in) != tuple(task.target.shape):
        raise ValueError(
            f"network map has shape (n_d, n_0) = ({n_out}, {n_in}) but the task's target has "
            f"shape {tuple(task.target.shape)}"
        )


def _resolved_direction(
    ws: Weights,
    task: Task,
    rule: Rule,
    method: str,
    diagnose: bool,
    balance_tol: float | None,
    cg_tol: float,
    cg_maxiter: int,
) -> tuple[Weights, cv.DirectionInfo | None]:
    """The one dispatch behind :func:`direction_unchecked` and :func:`direction_and_info`:
    ``(direction, info)``, ``info`` the path's diagnostics when ``diagnose`` (else None). Each
    method is one pair of the same computation without and with its diagnostics."""
    if rule.is_gradient:
        return gradient(ws, task), (cv.exact_info(ws[0].dtype) if diagnose else None)
    f = rule.spectral_function()

    def run(plain: Callable[[], Any], with_info: Callable[[], Any]) -> tuple[Weights, cv.DirectionInfo | None]:
        return with_info() if diagnose else (plain(), None)

    if rule.block:
        if method == "mapspace":
            out, info = run(
                lambda: cv.block_direction_mapspace(ws, task, f), lambda: cv.block_direction_mapspace_info(ws, task, f)
            )
        else:
            g = gradient(ws, task)
            plain, with_info = (
                (cv.block_direction_kronecker, cv.block_direction_kronecker_info)
                if method == "kronecker"
                else (cv.block_direction_dense, cv.block_direction_dense_info)
            )
            out, info = run(lambda: plain(ws, task, f, g), lambda: with_info(ws, task, f, g))
        return tuple(s * o for s, o in zip(rule.layer_scales(len(ws)), out)), info
    if method in _FULL_PATHS:
        plain, with_info = _FULL_PATHS[method]
        return run(lambda: plain(ws, task, f), lambda: with_info(ws, task, f))
    if method == "balanced-checked":
        fallback = _eigh_fallback(widths_of(ws), task.identity_cov)
        return run(
            lambda: cv.checked_direction(ws, task, f, fallback, balance_tol),
            lambda: cv.checked_direction_info(ws, task, f, fallback, balance_tol),
        )
    if method == "cg":
        out, cg_info = cv.cg_direction(ws, task, f, tol=cg_tol, maxiter=cg_maxiter)
        return out, (cv.bound_info(cg_info.error_bound) if diagnose else None)
    if method == "krylov":
        return run(
            lambda: cv.krylov_direction(ws, task, f, fallback=_in_graph_fallback(ws))[0],
            lambda: cv.krylov_direction_info(ws, task, f, fallback=_in_graph_fallback(ws))[:2],
        )
    g = gradient(ws, task)
    return run(lambda: cv.dense_direction(ws, task, f, g), lambda: cv.dense_direction_info(ws, task, f, g))


#: The full-curvature methods whose two forms take ``(ws, task, f)``: (direction, direction with info).
_FULL_PATHS: dict[str, tuple[Callable, Callable]] = {
    "mapspace": (cv.mapspace_direction, cv.mapspace_direction_info),
    "kronsum": (cv.kronsum_direction, cv.kronsum_direction_info),
    "balanced": (cv.balanced_direction, cv.balanced_direction_info),
}


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
    return _resolved_direction(ws, task, rule, method, False, balance_tol, cg_tol, cg_maxiter)[0]


#: Entries of the per-run statistics of :func:`direction_warm` (summed over directions, the last
#: one a maximum).
WARM_STATS = ("directions", "fallbacks", "uncertified", "over_tol", "iterations", "max_estimate")


def warm_state(ws: Weights, task: Task, rule: Rule, method: str):
    """The initial warm-start state of :func:`direction_warm` (empty except for ``krylov``)."""
    if method == "krylov" and not rule.is_gradient:
        return cv.krylov_init_state(ws, task, rule.spectral_function())
    return ()


def direction_warm(ws: Weights, task: Task, rule: Rule, method: str, state, *, with_info: bool = False):
    """``(direction, new_state, stats)``: :func:`direction_unchecked` that carries a warm start
    (``with_info``: ``(direction, new_state, stats, info)``, the
    :class:`~curvdyn.curvature.DirectionInfo` of :func:`direction_and_info`).

    For ``krylov`` the state holds the last solutions of the shifted solves (a step along a
    trajectory then costs a handful of iterations), an uncertified direction is replaced by the
    eigh one inside the program when ``n_d n_0 ≤`` :data:`curvdyn.curvature.IN_GRAPH_FALLBACK_MAX_MAP`,
    and ``stats`` (:data:`WARM_STATS`) counts what happened. Other methods pass the state through.
    """
    dtype = ws[0].dtype
    if method != "krylov" or rule.is_gradient:
        stats = jnp.zeros(len(WARM_STATS), dtype).at[0].set(1.0)
        if with_info:
            out, info = direction_and_info(ws, task, rule, method)
            return out, state, stats, info
        return direction_unchecked(ws, task, rule, method), state, stats
    fallback = _in_graph_fallback(ws)
    f = rule.spectral_function()
    if with_info:
        out, dinfo, info, new = cv.krylov_direction_info(ws, task, f, state=state, fallback=fallback)
    else:
        out, info, new = cv.krylov_direction(ws, task, f, state=state, fallback=fallback)
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
    if with_info:
        return tuple(out), new, stats, dinfo
    return tuple(out), new, stats


def _eigh_fallback(widths: tuple[int, ...], identity_cov: bool) -> str:
    """The eigendecomposition method ``balanced-checked`` falls back to (never ``krylov``)."""
    choice = cv.choose_full_method(widths, identity_cov)
    return "mapspace" if choice == "krylov" else choice


_direction_jit = jax.jit(direction_unchecked, static_argnames=("rule", "method", "balance_tol", "cg_tol", "cg_maxiter"))


def direction_and_info(
    ws: Weights,
    task: Task,
    rule: Rule,
    method: str,
    balance_tol: float | None = None,
    cg_tol: float = cv.DEFAULT_CG_TOL,
    cg_maxiter: int = cv.DEFAULT_CG_MAXITER,
) -> tuple[Weights, cv.DirectionInfo]:
    """:func:`direction_unchecked` and the :class:`~curvdyn.curvature.DirectionInfo` of the path
    that ran (traceable). The direction is the same computation as :func:`direction_unchecked`'s."""
    out, info = _resolved_direction(ws, task, rule, method, True, balance_tol, cg_tol, cg_maxiter)
    assert info is not None
    return out, info


_direction_info_jit = jax.jit(
    direction_and_info, static_argnames=("rule", "method", "balance_tol", "cg_tol", "cg_maxiter")
)


def _cg_with_info(ws, task, rule, cg_tol, cg_maxiter):
    return cv.cg_direction(ws, task, rule.spectral_function(), tol=cg_tol, maxiter=cg_maxiter)


_cg_jit = jax.jit(_cg_with_info, static_argnames=("rule", "cg_tol", "cg_maxiter"))


def _in_graph_fallback(ws: Weights) -> bool:
    """Whether a compiled ``krylov`` direction carries the eigh fallback in its program (static:
    up to :data:`curvdyn.curvature.IN_GRAPH_FALLBACK_MAX_MAP`, beyond it ``K`` is too large)."""
    return ws[-1].shape[-2] * ws[0].shape[-1] <= cv.IN_GRAPH_FALLBACK_MAX_MAP


def _krylov_with_info(ws, task, rule, tol, maxiter):
    return cv.krylov_direction_info(ws, task, rule.spectral_function(), tol=tol, maxiter=maxiter)


_krylov_jit = jax.jit(_krylov_with_info, static_argnames=("rule", "tol", "maxiter"))


def _krylov_checked(ws: Weights, task: Task, rule: Rule, tol, maxiter) -> tuple[Weights, cv.DirectionInfo]:
    """The ``krylov`` direction of :meth:`Rule.direction` and its info, with its warnings and the
    fallback to ``mapspace`` run outside the Krylov program (no eigendecomposition of ``K``
    compiled in; the fallback's info is then the eigh path's)."""
    tol = cv.default_krylov_tol(ws[0].dtype) if tol is None else check_nonneg(tol, "krylov_tol")
    maxiter = cv.DEFAULT_KRYLOV_MAXITER if maxiter is None else check_count(maxiter, "krylov_maxiter")
    out, dinfo, info = _krylov_jit(ws, task, rule, float(tol), int(maxiter))
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
        out, dinfo = _direction_info_jit(ws, task, rule, "mapspace", None, cv.DEFAULT_CG_TOL, cv.DEFAULT_CG_MAXITER)
        message = cv.describe(
            dinfo,
            f"{rule.label} (mapspace, the krylov fallback)",
            rcond=rule.spectral_function().cutoff(ws[0].dtype),
            warn_cut=rule.rcond == cv.DEFAULT_RCOND,
        )
        if message is not None:
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        return tuple(out), dinfo
    if not bool(info.certified):
        warnings.warn(
            f"krylov direction error estimate {float(info.error_estimate):.3g} exceeds krylov_tol = {tol:.3g} "
            f"(round-off floor {float(info.floor):.3g}; {numbers}); kept",
            RuntimeWarning,
            stacklevel=3,
        )
    return tuple(out), dinfo


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
    if name in ("frac-ngd", "frac-ngd-d") and "q" not in params:
        raise TypeError(f"rule {name!r} needs the parameter q (q >= 1)")
    if name == "damped-ngd" and "eps" not in params:
        raise TypeError("rule 'damped-ngd' needs the parameter eps (eps >= 0)")
    kwargs: dict = {"name": name, "block": name.endswith("-d"), **params}
    if name in _FIXED_Q:
        kwargs["q"] = _FIXED_Q[name]
    elif name == "damped-ngd":
        kwargs["q"] = 1.0
    return Rule(**kwargs)  # the value checks: Rule.__post_init__
