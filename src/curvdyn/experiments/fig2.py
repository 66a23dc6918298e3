"""Fig. 2: map learning curves of balanced networks for several stiffness levels (section 3.2).

For balanced weights the map dynamics of a singular mode is eq. (21),
``σ̄̇ = −η̄ (σ̄ − σ̄*) σ̄^p`` with stiffness ``p = 2(d−1)(q−1)/(dq)`` and ``η̄ = η d^{1−1/q}``.
The figure draws its exact solutions (:func:`curvdyn.theory.map_solution`) for p ∈ {0, ½, 1, 2}
and mode strengths σ̄* ∈ {0.5, 1, 2, 4}, η̄ = 1, from ``σ̄(0) = 0`` for p < 1 and
``σ̄(0) = σ̄*/100`` for p ≥ 1 (the caption's initial conditions), with the half-max points
(:func:`curvdyn.theory.half_max_time`, black circles) and the loss profiles
``½(σ̄ − σ̄*)²`` below. p = 0 is NGD at any depth, ½ ≤ p < 1 √NGD (d = 2 … ∞), 1 ≤ p < 2 SGD
(d = 2 … ∞); p = 2 is the infinite-depth limit of SGD.

Checks of those curves:

* the general-p solver against the closed forms of section 3.2 (p = 0, ½, 1);
* the p = 2 curves (no closed form) against a direct numerical integration of eq. (21)
  (:func:`curvdyn.theory.balanced_map_velocity`, SciPy's DOP853, rtol 1e-12);
* full-matrix runs (:func:`curvdyn.simulate`) of balanced networks of width 4 whose four modes
  have the strengths σ̄* and start at ``σ̄(0) = x₀σ̄*`` (x₀ = 10⁻³ for p < 1, 10⁻² for p ≥ 1;
  the full dynamics cannot start at 0, a fixed point), weights aligned with the target's
  singular vectors and balanced across layers (every layer ``σ_i = σ̄(0)^{1/d}``,
  :func:`curvdyn.init_aligned`), read back with :func:`curvdyn.theory.project_modes`:
  NGD d = 2 (p = 0), √NGD d = 2 (p = ½), SGD d = 2 (p = 1, the logistic of Saxe et al. 2013)
  and √NGD d = 3 (p = ⅔, effective depth 3·2/(3+2−1) = 1.5; eq. 22). The quick run keeps only
  NGD. A second NGD run starts from balanced weights in random orientation
  (:func:`curvdyn.init_balanced`), where only the whole displacement can be compared:
  ``Δ(t) = Δ(0) e^{−ηt}`` (S.I.1). That law needs invertible weights all along, i.e. a straight
  map path from W(0) to W* that avoids singular maps; the orientation is drawn until it does
  (see :func:`_invertible_path_init` — for many random orientations it does not, and the
  balanced network then stops at a rank-deficient map).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import jax
import numpy as np
from matplotlib.figure import Figure
from scipy import integrate

from curvdyn import theory
from curvdyn.experiments.base import Claim, Config, Data, at_most, measure
from curvdyn.experiments.common import (
    MODE_RUN_N_SAVE,
    MODE_RUN_ODE,
    MODE_RUN_WIDTH,
    Axis,
    random_target,
    rule_color,
    rule_label,
    scalar,
    straight_map_path_invertible,
)
from curvdyn.experiments.common import (
    progress as progress_bar,
)
from curvdyn.init import init_aligned, init_balanced
from curvdyn.integrators import ODE
from curvdyn.rules import get_rule
from curvdyn.simulate import simulate
from curvdyn.task import Task

NAME = "fig2"
TITLE = "Fig. 2 — map learning curves σ̄(t) and loss profiles for stiffness p = 0, ½, 1, 2 (eq. 21)"

CLOSED_P = (0.0, 0.5, 1.0)


@dataclasses.dataclass(frozen=True)
class Eq21Check:
    """The check of the curves without a closed form: SciPy's ``solve_ivp`` applied to eq. (21).

    Attributes:
      p: the stiffness checked (one of the settings' ``p_values``).
      scipy_solver: ``solve_ivp``'s ``method``; rtol, atol: its tolerances (atol relative to σ̄*).
      converged: each curve is integrated up to where ``|σ̄ − σ̄*|`` falls below ``converged·σ̄*``.
    """

    p: float = 2.0
    scipy_solver: str = "DOP853"
    rtol: float = 1e-12
    atol: float = 1e-14
    converged: float = 1e-9


@dataclasses.dataclass(frozen=True)
class FullMatrixRuns:
    """The full-matrix runs of balanced, aligned networks (and the one in random orientation).

    Attributes:
      cases: ``(rule, depth)`` pairs.
      init_fraction, stiff_init_fraction: ``σ̄(0)/σ̄*`` for p < 1 and for p ≥ 1.
      t_end, t_min, n_save: save times 0 and ``n_save − 1`` log-spaced from ``t_min`` to ``t_end``.
      width: of every layer (one mode per strength).
      unaligned_scale: the singular value of the randomly oriented balanced NGD start.
      ode: the integrator.
    """

    cases: tuple[tuple[str, int], ...] = (("ngd", 2), ("sqrt-ngd", 2), ("sgd", 2), ("sqrt-ngd", 3))
    init_fraction: float = 1e-3
    stiff_init_fraction: float = 1e-2
    t_end: float = 30.0
    t_min: float = 1e-3
    n_save: int = MODE_RUN_N_SAVE
    width: int = MODE_RUN_WIDTH
    unaligned_scale: float = 0.05
    ode: ODE = MODE_RUN_ODE


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of Fig. 2.

    Attributes:
      p_values, strengths: the stiffness of each column and the mode strengths σ̄*.
      eta_bar: η̄ of the curves.
      stiff_init_fraction: ``σ̄(0)/σ̄*`` of the curves for p ≥ 1 (the caption's; 0 for p < 1).
      curve_times: the curves' times (after t = 0).
      eq21_check: the numerical check of the curves without a closed form.
      eta: the learning rate of the full-matrix runs.
      full: the full-matrix runs.
    """

    p_values: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    strengths: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    eta_bar: float = 1.0
    stiff_init_fraction: float = 0.01
    curve_times: Axis = Axis(-3.0, 4.0, 560, log=True)
    eq21_check: Eq21Check = Eq21Check()
    eta: float = 1.0
    full: FullMatrixRuns = FullMatrixRuns()


DEFAULT = Settings()
#: The same theory curves and checks; one full-matrix rule (each compiles once, ~7 s).
QUICK = dataclasses.replace(DEFAULT, full=dataclasses.replace(DEFAULT.full, cases=(("ngd", 2),)))


def case_name(rule: str, depth: int) -> str:
    return f"{rule}-d{int(depth)}"


def _invertible_path_init(key, w_star, width: int, scale: float, max_draws: int = 1000):
    """Balanced d = 2 weights in random orientation whose straight map path to ``W*`` stays invertible.

    S.I.1's exponential law ``Δ(t) = Δ(0)e^{−ηt}`` needs invertible weights. Under it the map
    moves on the straight line ``(1 − s)W* + sW(0)``, ``s = e^{−ηt}``, which is singular for some
    s ∈ (0, 1) exactly when ``W*⁻¹W(0)`` has an eigenvalue on the negative real axis (always the
    case when ``det W(0)`` and ``det W*`` differ in sign). Balanced layers then lose the same
    direction together — an inactive mode that stays frozen (footnote 3) — and the network
    stops at a rank-deficient map. Orientations are drawn with ``init_balanced`` from
    ``fold_in(key, k)``, k = 0, 1, ..., until the path avoids that; returns ``(weights, draws)``.
    """
    for k in range(max_draws):
        ws = init_balanced(jax.random.fold_in(key, k), (width,) * 3, scale)
        if straight_map_path_invertible(np.asarray(ws[1] @ ws[0]), w_star):
            return ws, k + 1
    raise RuntimeError(f"no orientation with an invertible map path in {max_draws} draws")


def compute(settings: Settings, *, seed: int, progress: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    s = settings
    ps = np.asarray(s.p_values, dtype=np.float64)
    strengths = np.asarray(s.strengths, dtype=np.float64)
    eta_bar = float(s.eta_bar)
    t = np.concatenate([[0.0], s.curve_times.values()])

    inits = np.array([[0.0 if p < 1 else s.stiff_init_fraction * tg for tg in strengths] for p in ps])
    curves = np.array(
        [
            [theory.map_solution(t, p, tg, eta_bar=eta_bar, init=x0) for tg, x0 in zip(strengths, row)]
            for p, row in zip(ps, inits)
        ]
    )
    half = np.array(
        [
            [theory.half_max_time(p, tg, eta_bar=eta_bar, init=x0) for tg, x0 in zip(strengths, row)]
            for p, row in zip(ps, inits)
        ]
    )
    # (a 1-element array, not a scalar time: map_solution of a scalar returns shape (1,) for general p)
    half_value = np.array(
        [
            [
                theory.map_solution(np.array([h]), p, tg, eta_bar=eta_bar, init=x0)[0]
                for h, tg, x0 in zip(hrow, strengths, row)
            ]
            for p, hrow, row in zip(ps, half, inits)
        ]
    )
    data: dict[str, np.ndarray] = {
        "p_values": ps,
        "strengths": strengths,
        "eta_bar": scalar(eta_bar),
        "t": t,
        "sigma": curves,
        "init": inits,
        "half_time": half,
        "half_value": half_value,
        "closed_p": np.asarray(CLOSED_P),
    }
    closed_init = [0.0 if p < 1 else s.stiff_init_fraction for p in CLOSED_P]
    for branch in ("closed", "general"):
        data[f"{branch}_sigma"] = np.array(
            [
                [theory.map_solution(t, p, tg, eta_bar=eta_bar, init=x0 * tg, branch=branch) for tg in strengths]
                for p, x0 in zip(CLOSED_P, closed_init)
            ]
        )

    # p = 2 has no closed form: integrate eq. (21) itself numerically, each σ̄* up to where its
    # curve is within `converged` of σ̄* (beyond that an explicit solver only crawls at the
    # stability limit of the fast relaxation rate η̄σ̄*^p; the curve there is flat at σ̄*)
    oc = s.eq21_check
    p_ode = float(oc.p)
    k_ode = int(np.argmin(np.abs(ps - p_ode)))
    if ps[k_ode] != p_ode:
        raise ValueError(f"eq21_check p = {p_ode} is not among the p_values {ps}")
    velocity = jax.jit(theory.balanced_map_velocity)
    ode_sigma = np.full((len(strengths), len(t)), np.nan)
    for k, tg in enumerate(strengths):
        last = int(np.nonzero(np.abs(curves[k_ode, k] - tg) > oc.converged * tg)[0][-1])
        sol = integrate.solve_ivp(
            lambda _t, y, tg=tg: np.asarray(velocity(y, p_ode, tg, eta_bar=eta_bar)),
            (0.0, float(t[last])),
            [inits[k_ode, k]],
            method=oc.scipy_solver,
            t_eval=t[: last + 1],
            rtol=oc.rtol,
            atol=oc.atol * tg,
        )
        if not sol.success:
            raise RuntimeError(f"the eq. (21) ODE check failed for σ̄* = {tg}: {sol.message}")
        ode_sigma[k, : last + 1] = sol.y[0]
    data["ode_p"] = scalar(p_ode)
    data["ode_sigma"] = ode_sigma

    # full-matrix runs of balanced, aligned networks
    eta = float(s.eta)
    full = s.full
    k_target, k_unaligned = jax.random.split(jax.random.PRNGKey(seed))
    width = full.width
    if len(strengths) != width:
        raise ValueError(f"the full-matrix runs need {width} strengths (one per mode), got {len(strengths)}")
    w_star = random_target(k_target, strengths)
    task = Task(w_star)
    ts = np.concatenate([[0.0], np.logspace(math.log10(full.t_min), math.log10(full.t_end), full.n_save - 1)])
    data["full_target"] = w_star
    # init_aligned and project_modes list the modes by decreasing strength (the target's SVD);
    # `order` maps the order of `strengths` to that one
    s_desc = theory.correlation_modes(task)[1]
    order = np.array([int(np.argmin(np.abs(s_desc - tg))) for tg in strengths])
    runs: dict[str, dict[str, Any]] = {}
    for rule_name, depth in progress_bar(full.cases, enabled=progress, desc="fig2 full-matrix runs"):
        t0 = time.perf_counter()
        rule = get_rule(rule_name)
        p = theory.stiffness(depth, rule.q)
        e_bar = theory.depth_calibrated_rate(eta, depth, rule.q)
        x0 = full.init_fraction if p < 1 else full.stiff_init_fraction
        sb0 = x0 * strengths
        per_layer = (sb0 ** (1.0 / depth))[np.argsort(order)]  # in the target's SVD order
        ws0 = init_aligned(w_star, (width,) * (depth + 1), np.tile(per_layer, (depth, 1)))
        traj = simulate(ws0, task, rule, full.t_end, eta=eta, save_at=ts, seed=seed, integrator=full.ode)
        key = case_name(rule_name, depth)
        data[f"full__{key}__t"] = np.asarray(traj.t)
        data[f"full__{key}__modes"] = theory.project_modes(traj.map, task)[:, order]
        data[f"full__{key}__exact"] = np.stack(
            [theory.map_solution(np.asarray(traj.t), p, tg, eta_bar=e_bar, init=x) for tg, x in zip(strengths, sb0)],
            axis=1,
        )
        data[f"full__{key}__p"] = scalar(p)
        data[f"full__{key}__eta_bar"] = scalar(e_bar)
        data[f"full__{key}__init"] = sb0
        runs[key] = {
            "rule": rule_name,
            "depth": int(depth),
            "p": p,
            "eta_bar": e_bar,
            "init_fraction": x0,
            "status": traj.status,
            "solver_steps": traj.config["solver_steps"],
            "wall_time_s": round(time.perf_counter() - t0, 3),
        }

    ws_u, draws = _invertible_path_init(k_unaligned, w_star, width, full.unaligned_scale)
    traj = simulate(ws_u, task, get_rule("ngd"), full.t_end, eta=eta, save_at=ts, seed=seed, integrator=full.ode)
    data["unaligned__t"] = np.asarray(traj.t)
    data["unaligned__map"] = np.asarray(traj.map)
    data["eta"] = scalar(eta)
    runs["ngd-unaligned"] = {"status": traj.status, "solver_steps": traj.config["solver_steps"], "draws": draws}

    return data, {"runs": runs}


def describe(config: Config[Settings]) -> str:
    """The setup and numerics in words, for the report."""
    s = config.settings
    oc, full = s.eq21_check, s.full
    cases = "; ".join(
        f"{rule_label(c['rule'])} d = {c['depth']} (p = {c['p']:.3g}, η̄ = {c['eta_bar']:.4g}, σ̄(0) = "
        f"{c['init_fraction']:g}·σ̄*)"
        for k, c in config.outcome["runs"].items()
        if k != "ngd-unaligned"
    )
    return (
        "Curves: the exact solution of eq. (21) (theory.map_solution; closed forms at p = 0, ½, 1, the general-p "
        f"series solution otherwise) for p ∈ {{{', '.join(f'{p:g}' for p in s.p_values)}}} and σ̄* ∈ "
        f"{{{', '.join(f'{v:g}' for v in s.strengths)}}}, η̄ = {s.eta_bar:g}, from σ̄(0) = 0 for p < 1 and "
        f"{s.stiff_init_fraction:g}·σ̄* for p ≥ 1 (the caption's); half-max "
        f"times from theory.half_max_time. The p = {oc.p:g} curves are checked against SciPy's {oc.scipy_solver} "
        f"(rtol {oc.rtol:g}) applied to theory.balanced_map_velocity. Full-matrix runs (curvdyn.simulate, "
        f"{full.ode.solver}, rtol {full.ode.rtol:g}) of width-{full.width} networks whose four modes "
        f"have the strengths σ̄*, weights aligned with the target and balanced across layers: {cases}; map modes read "
        "with theory.project_modes. A further NGD run starts from balanced weights in random orientation "
        "(init_balanced), drawn so that the straight map path to W* stays invertible."
    )


# ---------------------------------------------------------------------------------------
# measurements (from the data alone)
# ---------------------------------------------------------------------------------------


def _decay(data) -> np.ndarray:
    """``e^{−ηt}`` at the unaligned run's times: eq. (21) at p = 0 relaxing from 1 to 0 (S.I.1: Δ̇ = −ηΔ)."""
    return theory.map_solution(data["unaligned__t"], 0.0, 0.0, eta_bar=float(data["eta"]), init=1.0)


def full_cases(data) -> list[str]:
    return [k[len("full__") : -len("__p")] for k in data if k.startswith("full__") and k.endswith("__p")]


def full_error(data, case: str) -> float:
    """``max_{t, k} |σ̄_k(t) full − σ̄_k(t) exact| / σ̄*_k`` of a full-matrix case."""
    return float(np.max(np.abs(data[f"full__{case}__modes"] - data[f"full__{case}__exact"]) / data["strengths"]))


def crossing_time(t: np.ndarray, x: np.ndarray, level: float = 0.5) -> float:
    """First time the fraction ``x = σ̄/σ̄*`` (rising, in (0, 1)) reaches ``level``.

    Interpolated linearly in ``(ln t, logit x)`` — the coordinates in which the learning
    curves of eq. (21) are closest to straight lines; ``t[0] = 0`` is skipped.
    """
    t, x = np.asarray(t, float), np.asarray(x, float)
    keep = (t > 0) & (x > 0) & (x < 1)
    t, x = t[keep], x[keep]
    above = np.nonzero(x >= level)[0]
    if above.size == 0 or above[0] == 0:
        return float("nan")
    k = int(above[0])
    logit = np.log(x[k - 1 : k + 1]) - np.log1p(-x[k - 1 : k + 1])
    target = math.log(level) - math.log1p(-level)
    frac = (target - logit[0]) / (logit[1] - logit[0])
    return float(math.exp(math.log(t[k - 1]) + frac * (math.log(t[k]) - math.log(t[k - 1]))))


def fitted_exponent(strengths, times) -> float:
    """Least-squares slope of ``ln t½`` against ``ln σ̄*`` (the paper: ``t½ ∝ σ̄*^{−p}``)."""
    return float(np.polyfit(np.log(strengths), np.log(times), 1)[0])


def full_half_times(data, case: str) -> np.ndarray:
    frac = data[f"full__{case}__modes"] / data["strengths"]
    return np.array([crossing_time(data[f"full__{case}__t"], frac[:, k]) for k in range(frac.shape[1])])


def _case_label(data, case: str) -> str:
    rule, depth = case.rsplit("-d", 1)
    d_eff = theory.effective_depth(int(depth), get_rule(rule).q)
    return f"{rule_label(rule)} d = {depth} (p = {float(data[f'full__{case}__p']):.3g}, d_eff = {d_eff:.3g})"


def _full_ode(config: Config[Settings]) -> str:
    return f"simulate rtol {config.settings.full.ode.rtol:g}"


# ---------------------------------------------------------------------------------------
# the claims, in report order
# ---------------------------------------------------------------------------------------


def ngd_map_exponential(data: Data, config: Config[Settings]) -> Claim | None:
    if "ngd-d2" not in full_cases(data):
        return None
    strengths = data["strengths"]
    err = full_error(data, "ngd-d2")
    eb = float(data["full__ngd-d2__eta_bar"])
    zero_start = np.stack(
        [theory.map_solution(data["full__ngd-d2__t"], 0.0, tg, eta_bar=eb, init=0.0) for tg in strengths], axis=1
    )
    from_zero = float(np.max(np.abs(data["full__ngd-d2__modes"] - zero_start) / strengths))
    return at_most(
        "ngd-map-exponential",
        "Under NGD the map dynamics is exactly exponential, σ̄(t) = σ̄* + (σ̄(0) − σ̄*)e^{−η̄t} with η̄ = η "
        "(p = 0, section 3.2, Fig. 2).",
        err,
        1e-7,
        f"Full-matrix NGD run of a balanced aligned d = 2 network (width {config.settings.full.width}, "
        f"{_full_ode(config)}), max over t and the {len(strengths)} modes of |σ̄(t) − closed form|/σ̄*, modes read "
        f"with project_modes. Against σ̄*(1 − e^{{−η̄t}}) from exactly 0 the deviation is {from_zero:.1e} "
        f"(= the start fraction {config.settings.full.init_fraction:g}·e^{{−η̄t}}: the full dynamics "
        "cannot start at 0).",
    )


def ngd_displacement_exponential(data: Data, config: Config[Settings]) -> Claim:
    delta = data["unaligned__map"] - data["full_target"]
    decay = _decay(data)[:, None, None]
    dev = float(np.max(np.linalg.norm(delta - decay * delta[0], axis=(-2, -1))) / np.linalg.norm(delta[0]))
    return at_most(
        "ngd-displacement-exponential",
        "NGD makes the whole displacement decay exponentially, Δ(t) = Δ(0)e^{−ηt}, for invertible weights in "
        "any orientation (S.I.1; p = 0 in eq. 21).",
        dev,
        1e-7,
        "Full-matrix NGD run from balanced weights in random orientation (init_balanced, not aligned with W*), "
        f"d = 2, width {config.settings.full.width}; max over t of ‖Δ(t) − Δ(0)e^{{−ηt}}‖_F/‖Δ(0)‖_F. The "
        "orientation is drawn such that the straight map path (1 − e^{−ηt})W* + e^{−ηt}W(0) stays invertible "
        f"(draw {config.outcome['runs']['ngd-unaligned']['draws']}; S.I.1 assumes invertible weights); "
        "orientations whose path crosses a singular map stop at a rank-deficient map instead.",
    )


def general_solution_closed_forms(data: Data, config: Config[Settings]) -> Claim:
    strengths = data["strengths"]
    err = float(np.max(np.abs(data["general_sigma"] - data["closed_sigma"]) / strengths[None, :, None]))
    return at_most(
        "general-solution-closed-forms",
        "The exact solution of eq. (21) for general p reproduces the closed forms of section 3.2: "
        "σ̄*(1 − e^{−η̄t}) (p = 0), σ̄* tanh²(η̄√σ̄* t/2) (p = ½), the logistic (p = 1).",
        err,
        1e-10,
        "Max over t, σ̄* ∈ {" + ", ".join(f"{v:g}" for v in strengths) + "} and p ∈ {0, ½, 1} of "
        "|map_solution(general) − map_solution(closed)|/σ̄*, from σ̄(0) = 0 (p < 1) and σ̄*/100 (p = 1).",
    )


def stiff_solution_solves_eq21(data: Data, config: Config[Settings]) -> Claim:
    oc = config.settings.eq21_check
    k = int(np.argmin(np.abs(data["p_values"] - float(data["ode_p"]))))
    err = float(np.nanmax(np.abs(data["ode_sigma"] - data["sigma"][k]) / data["strengths"][:, None]))
    return at_most(
        "stiff-solution-solves-eq21",
        f"The p = {float(data['ode_p']):g} learning curves of Fig. 2 (no closed form) solve eq. (21).",
        err,
        1e-7,
        "Max over t and σ̄* of |σ̄ exact − σ̄ numerical|/σ̄*, the numerical solution by "
        f"{oc.scipy_solver} "
        f"(rtol {oc.rtol:g}) of σ̄̇ = balanced_map_velocity(σ̄), from σ̄*/100, up to where "
        f"|σ̄ − σ̄*| falls below {oc.converged:g}·σ̄*.",
    )


def half_max_time_scaling(data: Data, config: Config[Settings]) -> Claim:
    strengths = data["strengths"]
    slopes = {float(p): fitted_exponent(strengths, data["half_time"][i]) for i, p in enumerate(data["p_values"])}
    worst = max(abs(slopes[p] + p) for p in slopes)
    on_curve = float(np.max(np.abs(data["half_value"] / (0.5 * strengths) - 1.0)))
    return at_most(
        "half-max-time-scaling",
        "The half-max time (overall time-scale of learning) scales with mode strength as σ̄*^{−p} (Fig. 2 caption, "
        "section 3.2).",
        worst,
        1e-9,
        "Max over p of |fitted exponent + p|, the exponent a least-squares fit of ln t½ against ln σ̄* over σ̄* ∈ {"
        + ", ".join(f"{v:g}" for v in strengths)
        + "}; fitted: "
        + ", ".join(f"p = {p:g}: {v:.10f}" for p, v in slopes.items())
        + f". The black circles lie on the curves: |σ̄(t½)/(σ̄*/2) − 1| ≤ {on_curve:.1e}.",
    )


def sqrt_ngd_tanh2(data: Data, config: Config[Settings]) -> Claim | None:
    if "sqrt-ngd-d2" not in full_cases(data):
        return None
    return at_most(
        "sqrt-ngd-tanh2",
        "A d = 2 network under √NGD has p = ½ and follows σ̄* tanh²(η̄√σ̄* t/2 + atanh√(σ̄(0)/σ̄*)), "
        "η̄ = √2 η (eq. 21, section 3.2).",
        full_error(data, "sqrt-ngd-d2"),
        1e-7,
        f"Full-matrix √NGD run, balanced aligned d = 2 network ({_full_ode(config)}); max over t and modes of "
        "|σ̄(t) − closed form|/σ̄*.",
    )


def saxe_logistic(data: Data, config: Config[Settings]) -> Claim | None:
    if "sgd-d2" not in full_cases(data):
        return None
    eb = float(data["full__sgd-d2__eta_bar"])
    return at_most(
        "saxe-logistic",
        "A d = 2 network under SGD from balanced small weights learns each mode along the logistic curve of "
        "Saxe et al. (2013), σ̄*/(1 + (σ̄*/σ̄(0) − 1)e^{−η̄σ̄* t}), η̄ = 2η (p = 1, section 3.2).",
        full_error(data, "sgd-d2"),
        1e-7,
        f"Full-matrix SGD run from σ̄(0) = σ̄*/100 (η̄ = {eb:g}, {_full_ode(config)}); max over t and modes of "
        "|σ̄(t) − logistic|/σ̄*.",
    )


def sqrt_ngd_effective_depth(data: Data, config: Config[Settings]) -> Claim | None:
    case = "sqrt-ngd-d3"
    if case not in full_cases(data):
        return None
    strengths = data["strengths"]
    p = float(data[f"full__{case}__p"])
    eb = float(data[f"full__{case}__eta_bar"])
    t = data[f"full__{case}__t"]
    alt = {}
    for p_alt in (0.5, 1.0):
        want = np.stack(
            [
                theory.map_solution(t, p_alt, tg, eta_bar=eb, init=x)
                for tg, x in zip(strengths, data[f"full__{case}__init"])
            ],
            axis=1,
        )
        alt[p_alt] = float(np.max(np.abs(data[f"full__{case}__modes"] - want) / strengths))
    d_eff = theory.effective_depth(3, get_rule("sqrt-ngd").q)
    return at_most(
        "effective-depth",
        "A d = 3 network under √NGD (q = 2) has the map dynamics of an SGD network of effective depth "
        "d_eff = dq/(d + q − 1) = 1.5, i.e. stiffness p = 2(d_eff − 1)/d_eff = 2(d−1)(q−1)/(dq) = ⅔ "
        "(eqs. 21, 22).",
        full_error(data, case),
        1e-7,
        f"Full-matrix √NGD d = 3 run (balanced, aligned; η̄ = √3 η = {eb:.6g}; {_full_ode(config)}); max over t and "
        f"modes of |σ̄(t) − exact solution at p = {p:.6g}|/σ̄* (d_eff = {d_eff:.6g}). For contrast, the same data "
        f"against the p = ½ solution (d_eff = 4/3): {alt[0.5]:.2g}, against p = 1 (d_eff = 2): {alt[1.0]:.2g}.",
    )


def stiffness_from_full_matrix(data: Data, config: Config[Settings]) -> Claim:
    strengths = data["strengths"]
    cases = full_cases(data)
    fits = {c: 0.0 - fitted_exponent(strengths, full_half_times(data, c)) for c in cases}
    worst = max(fits, key=lambda c: abs(fits[c] - float(data[f"full__{c}__p"])))
    dev = abs(fits[worst] - float(data[f"full__{worst}__p"]))
    txt = "; ".join(f"{_case_label(data, c)}: fitted {round(fits[c], 5) + 0.0:.5f}" for c in cases)
    if "sqrt-ngd-d3" in fits:
        txt += (
            f"; the √NGD d = 3 value {float(data['full__sqrt-ngd-d3__p']):.5f} is the stiffness 2(d_eff − 1)/d_eff "
            f"of SGD at the effective depth d_eff = {theory.effective_depth(3, get_rule('sqrt-ngd').q):g} (eq. 22)"
        )
    return at_most(
        "stiffness-from-full-matrix",
        "The learning time-scale of full-matrix networks scales as σ̄*^{−p} with the stiffness p = 2(d−1)(q−1)/(dq) "
        "of their rule and depth (eq. 21, Fig. 2 caption).",
        dev,
        1e-3,
        "Max over the full-matrix runs of |p fitted − p|; p fitted = −slope of ln t½ against ln σ̄*, the half-max "
        "times read off the recorded σ̄(t) (interpolated in ln t and logit σ̄/σ̄*; 240 log-spaced save times, "
        f"which limits the accuracy to ~1e-4). {txt}.",
    )


CLAIMS = (
    ngd_map_exponential,
    ngd_displacement_exponential,
    general_solution_closed_forms,
    stiff_solution_solves_eq21,
    half_max_time_scaling,
    sqrt_ngd_tanh2,
    saxe_logistic,
    sqrt_ngd_effective_depth,
    stiffness_from_full_matrix,
)


def claims(data: Data, config: Config[Settings]) -> list[Claim]:
    return measure(CLAIMS, data, config)


# ---------------------------------------------------------------------------------------
# figure
# ---------------------------------------------------------------------------------------

_STRENGTH_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02")
_P_TITLE = {
    0.0: "p = 0: NGD (any depth)",
    0.5: "p = ½: √NGD, d = 2",
    1.0: "p = 1: SGD, d = 2",
    2.0: "p = 2: SGD, d → ∞",
}


def _p_title(p: float) -> str:
    return _P_TITLE.get(float(p), f"p = {p:g}")


def _stiffness_strip(ax, data):
    ax.axvspan(0.5, 1.0, color=rule_color("sqrt-ngd"), alpha=0.22, lw=0)
    ax.axvspan(1.0, 2.0, color=rule_color("sgd"), alpha=0.22, lw=0)
    ax.plot([0.0], [0.5], marker="D", ms=11, color=rule_color("ngd"), clip_on=False)
    ax.text(0.04, 0.5, "NGD: p = 0\n(every depth)", va="center", ha="left", fontsize=10)
    ax.text(0.75, 0.5, "√NGD: ½ ≤ p < 1\n(d = 2 … ∞)", va="center", ha="center", fontsize=10)
    ax.text(1.5, 0.5, "SGD: 1 ≤ p < 2\n(d = 2 … ∞)", va="center", ha="center", fontsize=10)
    for p in data["p_values"]:
        ax.axvline(p, color="k", lw=1.6, ymax=0.22)
        ax.axvline(p, color="k", lw=1.6, ymin=0.78)
    for case in full_cases(data):
        p = float(data[f"full__{case}__p"])
        ax.plot([p], [0.12], marker="^", ms=9, color="k", mfc="white", clip_on=False)
    ax.plot([], [], marker="^", ms=8, color="k", mfc="white", ls="none", label="full-matrix runs (bottom row)")
    ax.plot([], [], color="k", lw=1.6, label="p of the columns below")
    ax.legend(loc="center right", bbox_to_anchor=(1.0, 0.5), fontsize=9, framealpha=0.9)
    ax.set_xlim(-0.05, 2.45)
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    ax.set_xticks([0, 0.5, 2 / 3, 1, 1.5, 2])
    ax.set_xticklabels(["0", "½", "⅔", "1", "3/2", "2"])
    ax.set_xlabel("stiffness p = 2(d−1)(q−1)/(dq)  (q = 1 NGD, q = 2 √NGD, q = ∞ SGD)", fontsize=10)


def plot(data: Data, config: Config[Settings]) -> Figure:
    ps = data["p_values"]
    strengths = data["strengths"]
    t = data["t"]
    n_p = len(ps)
    fig = Figure(figsize=(4.3 * n_p, 14.0), layout="constrained")
    grid = fig.add_gridspec(4, n_p, height_ratios=[0.42, 1.0, 0.9, 1.0])
    _stiffness_strip(fig.add_subplot(grid[0, :]), data)
    top = [fig.add_subplot(grid[1, i]) for i in range(n_p)]
    bottom = [fig.add_subplot(grid[2, i], sharex=top[i]) for i in range(n_p)]
    m = t > 0
    colors = _STRENGTH_COLORS
    for i, p in enumerate(ps):
        for k, tg in enumerate(strengths):
            c = colors[k % len(colors)]
            sb = data["sigma"][i, k]
            top[i].plot(t[m], sb[m], color=c, lw=2.0, label=f"$\\bar\\sigma_*$ = {tg:g}")
            top[i].axhline(tg, color=c, ls="--", lw=1.0)
            top[i].plot(data["half_time"][i, k], 0.5 * tg, "o", color="k", ms=6, zorder=5)
            bottom[i].plot(t[m], 0.5 * (sb[m] - tg) ** 2, color=c, lw=2.0)
        init = "$\\bar\\sigma(0) = 0$" if p < 1 else "$\\bar\\sigma(0) = \\bar\\sigma_*/100$"
        top[i].set_title(f"{_p_title(p)}\n{init}, $\\bar\\eta$ = {float(data['eta_bar']):g}", fontsize=11.5)
        top[i].set_xscale("log")
        top[i].set_ylim(0, 1.08 * strengths.max())
        top[i].grid(alpha=0.25, which="both")
        bottom[i].set_yscale("log")
        bottom[i].set_ylim(1e-8, 2 * 0.5 * strengths.max() ** 2)
        bottom[i].set_xlabel("time t")
        bottom[i].grid(alpha=0.25, which="both")
        top[i].set_xlim(1e-3, t[-1])
    top[0].set_ylabel("map mode $\\bar\\sigma(t)$ (eq. 21)")
    bottom[0].set_ylabel("loss $\\frac{1}{2}(\\bar\\sigma - \\bar\\sigma_*)^2$")
    top[0].plot([], [], "o", color="k", ms=6, label="half-max point")
    top[0].plot([], [], "--", color="0.4", label="$\\bar\\sigma_*$")
    top[0].legend(loc="upper left", fontsize=9, framealpha=0.9)

    cases = full_cases(data)
    slots = [fig.add_subplot(grid[3, i]) for i in range(n_p)]
    for ax, case in zip(slots, cases):
        tc = data[f"full__{case}__t"]
        mc = tc > 0
        frac = data[f"full__{case}__modes"] / strengths
        exact = data[f"full__{case}__exact"] / strengths
        for k in range(len(strengths)):
            c = colors[k % len(colors)]
            ax.plot(tc[mc], exact[mc, k], color=c, lw=1.6)
            ax.plot(tc[mc][::8], frac[mc, k][::8], "o", color=c, ms=4.5, mfc="none", mew=1.1)
        if case == "ngd-d2":
            tu = data["unaligned__t"]
            delta = data["unaligned__map"] - data["full_target"]
            ratio = np.linalg.norm(delta, axis=(-2, -1)) / np.linalg.norm(delta[0])
            mu = tu > 0
            ax.plot(
                tu[mu][::8],
                ratio[mu][::8],
                "s",
                color="0.3",
                ms=4,
                mfc="none",
                label="‖Δ(t)‖/‖Δ(0)‖, random-orientation\nbalanced init",
            )
            ax.plot(tu[mu], _decay(data)[mu], ":", color="0.3", lw=1.4, label="$e^{-\\eta t}$")
            ax.legend(loc="center left", fontsize=8.5, framealpha=0.9)
        ax.set_xscale("log")
        ax.set_xlim(1e-3, tc[-1])
        ax.set_ylim(-0.03, 1.08)
        ax.grid(alpha=0.25, which="both")
        ax.set_xlabel("time t (η = 1)")
        ax.set_title(f"full matrix: {_case_label(data, case)}\nmax error {full_error(data, case):.1e}", fontsize=11)
    for ax in slots[len(cases) :]:
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            "(full-matrix run not made\nin the quick variant)",
            ha="center",
            va="center",
            fontsize=10,
            color="0.4",
            transform=ax.transAxes,
        )
    if cases:
        slots[0].set_ylabel("$\\bar\\sigma(t)/\\bar\\sigma_*$: ○ full matrix, — exact")
    fig.suptitle(
        "Fig. 2 — map learning curves of balanced networks, $\\dot{\\bar\\sigma} = -\\bar\\eta(\\bar\\sigma - "
        "\\bar\\sigma_*)\\bar\\sigma^p$ (eq. 21): exact solutions (rows 2–3) and full-matrix networks (row 4)",
        fontsize=13,
    )
    return fig
