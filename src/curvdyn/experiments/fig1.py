"""Fig. 1: one singular mode of a d = 2 network in the (σ_1, σ_2) plane (sections 3.1 and 3.3).

With weights aligned to the target's singular vectors (footnote 2) one mode of a depth-2
network is a point ``(σ_1, σ_2)`` with map value ``σ̄ = σ_1σ_2`` and target ``σ̄* = 1``. For
SGD, NGD, √NGD, NGD-d and √NGD-d (panels A–E) this experiment evaluates

* the displacement-normalized update field ``[σ̇_1, σ̇_2]/|σ_Δ|`` on a grid
  (:func:`curvdyn.theory.mode_velocity`, η = 1);
* each rule's constant of motion on a fine mesh (:func:`curvdyn.theory.constant_of_motion`),
  whose level sets are the rule's paths (red lines);
* the mode trajectories from four starting points (:func:`curvdyn.theory.simulate_modes`,
  adaptive ODE, rtol 1e-12), one of them shared by NGD and NGD-d and marked at the times
  where NGD's map value ``σ̄(t)`` reaches a few chosen levels (``map_time`` of the p = 0 map
  dynamics, eq. 20 with q = 1) — the red dots of panels B and D;
* full-matrix runs (:func:`curvdyn.simulate`) of a 4 → 4 → 4 network whose four modes start at
  the same four points (:func:`curvdyn.init_aligned`, target ``U Vᵀ`` with Haar-random U, V,
  all singular values σ̄*), read back mode by mode (:func:`curvdyn.theory.layer_mode_values`):
  the reduced mode ODEs must reproduce them, and the full-matrix ``w_1w_1ᵀ − w_2ᵀw_2`` must stay
  constant (eq. 4). The default run does this for SGD, NGD and √NGD, the quick run for NGD.

A second, log-spaced grid (σ_i from 1e-2 to 10, coupling ‖j‖ from 1.4e-2 to 14) serves the
speed claims: √NGD's ``‖σ̇‖ = η|σ_Δ|`` (eq. 16) and footnote 7's ``‖σ̇‖_NGD-d ≥ ‖σ̇‖_NGD``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np
from matplotlib.figure import Figure

from curvdyn import theory
from curvdyn.experiments.base import Claim, Config, Data, at_least, at_most, measure
from curvdyn.experiments.common import (
    MODE_RUN_N_SAVE,
    MODE_RUN_ODE,
    Axis,
    random_target,
    relative_drift,
    rule_color,
    rule_label,
    scalar,
)
from curvdyn.experiments.common import (
    progress as progress_bar,
)
from curvdyn.init import init_aligned
from curvdyn.integrators import ODE
from curvdyn.rules import get_rule
from curvdyn.simulate import simulate
from curvdyn.task import Task

NAME = "fig1"
TITLE = "Fig. 1 — one singular mode of a d = 2 network: update fields and paths of SGD, NGD, √NGD, NGD-d, √NGD-d"

RULES = ("sgd", "ngd", "sqrt-ngd", "ngd-d", "sqrt-ngd-d")
HYPERBOLIC = ("sgd", "ngd", "sqrt-ngd")  # rules that conserve σ_1² − σ_2² (Theorem 1, eq. 7)
PANEL = dict(zip(RULES, "ABCDE"))


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of Fig. 1 (the module docstring says what each part is for).

    Attributes:
      target, eta: the mode's target ``σ̄*`` and the learning rate η.
      starts: the starting points ``(σ_1, σ_2)``: two below the solution set ``σ_1σ_2 = σ̄*``,
        two above.
      highlight: the start shared by the NGD / NGD-d comparison (red dots).
      sync_levels: the map values ``σ̄`` marked by the red dots.
      t_end, n_save: the mode trajectories' end time and number of save times (the sync
        times included).
      field_grid: the arrows' axis; speed_grid: the log axis of the speed claims; mesh: the
        axis of the level sets.
      mode_ode: the integrator of the mode ODEs.
      full_rules: the rules of the full-matrix check; full_ode: its integrator.
    """

    target: float = 1.0
    eta: float = 1.0
    starts: tuple[tuple[float, float], ...] = ((0.6, 0.15), (0.1, 0.5), (1.9, 1.2), (0.7, 1.9))
    highlight: int = 0
    sync_levels: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)
    t_end: float = 20.0
    n_save: int = MODE_RUN_N_SAVE
    field_grid: Axis = Axis(0.1, 2.0, 14)
    speed_grid: Axis = Axis(-2.0, 1.0, 41, log=True)
    mesh: Axis = Axis(0.005, 2.1, 300)
    mode_ode: ODE = ODE(rtol=1e-12, atol=1e-14, solver="tsit5", max_steps=100_000)
    full_rules: tuple[str, ...] = HYPERBOLIC
    full_ode: ODE = MODE_RUN_ODE

    @property
    def widths(self) -> tuple[int, ...]:
        """The full-matrix network: ``len(starts)`` modes, so widths ``(m, m, m)``."""
        return (len(self.starts),) * 3


DEFAULT = Settings()
#: The same mode theory; one full-matrix rule (each full-matrix rule compiles once, ~7 s).
QUICK = dataclasses.replace(DEFAULT, full_rules=("ngd",))


def grid_points(axis) -> np.ndarray:
    """The points ``[i, j] = (σ_1, σ_2) = (axis[j], axis[i])`` of a square grid, shape (n, n, 2)."""
    s1, s2 = np.meshgrid(axis, axis)
    return np.stack([s1, s2], axis=-1)


def compute(settings: Settings, *, seed: int, progress: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    s = settings
    target, eta = float(s.target), float(s.eta)
    starts = np.asarray(s.starts, dtype=np.float64)
    n_modes = starts.shape[0]
    hl = int(s.highlight)
    levels = np.asarray(s.sync_levels, dtype=np.float64)

    # NGD's map dynamics is σ̄̇ = −η(σ̄ − σ̄*) whatever σ_1, σ_2 (eq. 20, q = 1: p = 0), so the
    # times at which it reaches the marked levels are map_time of the p = 0 solution.
    p_ngd = theory.stiffness(2, 1.0)
    eta_bar_ngd = theory.depth_calibrated_rate(eta, 2, 1.0)
    t_sync = theory.map_time(levels, p_ngd, target, eta_bar=eta_bar_ngd, init=float(np.prod(starts[hl])))
    if not np.all(np.isfinite(t_sync) & (t_sync > 0) & (t_sync < s.t_end)):
        raise ValueError(f"sync levels {levels} are not reached within t_end from the highlighted start")
    ts = np.sort(np.concatenate([np.linspace(0.0, s.t_end, s.n_save - len(levels)), t_sync]))
    if np.any(np.diff(ts) <= 0):
        raise ValueError("a sync time coincides with a regular save time; change sync_levels or t_end")
    sync_index = np.searchsorted(ts, t_sync)

    field_axis, speed_axis, mesh_axis = s.field_grid.values(), s.speed_grid.values(), s.mesh.values()
    field_pts, speed_pts, mesh_pts = grid_points(field_axis), grid_points(speed_axis), grid_points(mesh_axis)
    data: dict[str, np.ndarray] = {
        "target": scalar(target),
        "eta": scalar(eta),
        "starts": starts,
        "t": ts,
        "sync_index": sync_index,
        "sync_levels": levels,
        "field_axis": field_axis,
        "speed_axis": speed_axis,
        "mesh_axis": mesh_axis,
    }
    runs: dict[str, dict[str, Any]] = {}
    for name in progress_bar(RULES, enabled=progress, desc="fig1 mode theory"):
        rule = get_rule(name)
        data[f"field__{name}"] = np.asarray(theory.mode_velocity(rule, field_pts, target, eta=eta))
        data[f"speed__{name}"] = np.asarray(theory.mode_velocity(rule, speed_pts, target, eta=eta))
        data[f"levelset__{name}"] = np.asarray(theory.constant_of_motion(rule, mesh_pts))[..., 0]
        modes = theory.simulate_modes(
            rule, starts, np.full(n_modes, target), s.t_end, eta=eta, save_at=ts, integrator=s.mode_ode
        )
        data[f"modes__{name}"] = np.asarray(modes.sigmas)
        runs[name] = {"mode_ode_status": modes.status, "mode_ode_steps": modes.n_steps}

    # full-matrix check: a 4 → 4 → 4 network whose modes start at the four points
    w_star = random_target(jax.random.PRNGKey(seed), [target] * n_modes)
    task = Task(w_star)
    ws0 = init_aligned(w_star, s.widths, starts.T)
    bases = theory.aligned_bases(w_star, s.widths)
    data["full_target"] = w_star
    for name in progress_bar(s.full_rules, enabled=progress, desc="fig1 full-matrix runs"):
        t0 = time.perf_counter()
        traj = simulate(ws0, task, get_rule(name), s.t_end, eta=eta, save_at=ts, seed=seed, integrator=s.full_ode)
        data[f"full__{name}__t"] = np.asarray(traj.t)
        data[f"full__{name}__sigmas"] = theory.layer_mode_values(traj.weights, bases)
        data[f"full__{name}__C"] = np.asarray(traj.conserved[0])
        runs[name].update(
            full_status=traj.status,
            full_solver_steps=traj.config["solver_steps"],
            full_wall_time_s=round(time.perf_counter() - t0, 3),
        )
    return data, {"sync_times": t_sync.tolist(), "runs": runs}


def describe(config: Config[Settings]) -> str:
    """The setup and numerics in words, for the report."""
    s = config.settings
    starts = ", ".join(f"({a:g}, {b:g})" for a, b in s.starts)
    n_f, n_s = s.field_grid.num, s.speed_grid.num
    return (
        f"One singular mode of a depth-2 network, target σ̄* = {s.target:g}, η = {s.eta:g}. "
        f"Arrows: theory.mode_velocity on a {n_f} × {n_f} grid, normalized by |σ_Δ| (colour: log10 of the "
        f"normalized speed); the speed claims use a {n_s} × {n_s} log grid with σ_i from 1e{s.speed_grid.start:g} "
        f"to 1e{s.speed_grid.stop:g}. Red paths: level sets of theory.constant_of_motion and the mode "
        f"ODEs (theory.simulate_modes, {s.mode_ode.solver}, rtol {s.mode_ode.rtol:g}, to t = {s.t_end:g}) from {starts}. "
        "The red dots mark the times at which NGD's map value reaches σ̄ = "
        + ", ".join(f"{v:g}" for v in s.sync_levels)
        + " (theory.map_time of the p = 0 map dynamics) on both the NGD and the NGD-d trajectory. Full-matrix "
        f"check: a {'-'.join(map(str, s.widths))} network whose modes start at these points (init_aligned, "
        f"target U Vᵀ·σ̄* with Haar-random U, V), rules {', '.join(rule_label(r) for r in s.full_rules)}; "
        f"curvdyn.simulate ({s.full_ode.solver}, rtol {s.full_ode.rtol:g}), read out per layer and mode."
    )


# ---------------------------------------------------------------------------------------
# measurements (from the data alone)
# ---------------------------------------------------------------------------------------


def displacement(points, target) -> np.ndarray:
    """``σ_Δ = σ_1σ_2 − σ̄*`` at points of shape (..., 2)."""
    return np.prod(points, axis=-1) - float(target)


def constant_drift(data, name: str, source: str = "modes") -> float:
    """``max_{t, start} |K(t) − K(0)| / |K(0)|`` of the rule's own constant of motion K."""
    k = np.asarray(theory.constant_of_motion(get_rule(name), data[f"{source}__{name}"]))
    return float(np.max(np.abs(k - k[0]) / np.abs(k[0])))


def hyperbolic_drift(data, name: str) -> float:
    """``max |C(t) − C(0)| / |C(0)|`` of ``C = σ_1² − σ_2²`` along the rule's mode trajectories."""
    k = np.asarray(theory.constant_of_motion(get_rule("sgd"), data[f"modes__{name}"]))
    return float(np.max(np.abs(k - k[0]) / np.abs(k[0])))


def map_values(data, name: str) -> np.ndarray:
    """``σ̄(t) = σ_1σ_2`` along the rule's mode trajectories, (T, starts)."""
    return np.prod(data[f"modes__{name}"], axis=-1)


def update_speed(data, name: str, start: int) -> np.ndarray:
    """``‖σ̇(t)‖`` along the rule's mode trajectory from start ``start`` (mode_velocity), (T,)."""
    v = theory.mode_velocity(name, data[f"modes__{name}"][:, start], float(data["target"]), eta=float(data["eta"]))
    return np.linalg.norm(np.asarray(v), axis=-1)


def _normalized_speed(data, name: str, points, key: str) -> tuple[np.ndarray, np.ndarray]:
    delta = np.abs(displacement(points, data["target"]))
    keep = delta > 1e-9 * float(data["target"])
    return np.linalg.norm(data[f"{key}__{name}"], axis=-1)[keep] / (float(data["eta"]) * delta[keep]), keep


def _full_rules(data) -> list[str]:
    return [r for r in RULES if f"full__{r}__sigmas" in data]


def _grid_text(data: Data) -> str:
    """How the speed claims' log grid is described."""
    j_norm = np.asarray(theory.coupling_norm(grid_points(data["speed_axis"])))
    span = f"‖j‖ from {j_norm.min():.2g} to {j_norm.max():.2g}"
    return (
        f"log grid σ_i ∈ [{data['speed_axis'][0]:g}, {data['speed_axis'][-1]:g}]² "
        f"({len(data['speed_axis'])}² points, {span}; points with σ_Δ = 0 excluded)"
    )


# ---------------------------------------------------------------------------------------
# the claims, in report order
# ---------------------------------------------------------------------------------------


def hyperbolic_paths(data: Data, config: Config[Settings]) -> Claim:
    drifts = {r: hyperbolic_drift(data, r) for r in HYPERBOLIC}
    worst = max(drifts, key=lambda r: drifts[r])
    return at_most(
        "hyperbolic-paths",
        "SGD, NGD and √NGD follow the same hyperbolic paths σ_1² − σ_2² = const (eqs. 7, 12, 14; Fig. 1A–C).",
        drifts[worst],
        1e-8,
        f"Max over t and {len(data['starts'])} starts of |C(t) − C(0)|/|C(0)|, C = σ_1² − σ_2², along the integrated "
        f"mode trajectories (simulate_modes, rtol {config.settings.mode_ode.rtol:g}); "
        + ", ".join(f"{rule_label(r)} {drifts[r]:.1e}" for r in HYPERBOLIC)
        + ".",
    )


def full_matrix_matches_mode_theory(data: Data, config: Config[Settings]) -> Claim | None:
    full = _full_rules(data)
    if not full:
        return None
    err = {r: float(np.max(np.abs(data[f"full__{r}__sigmas"] - data[f"modes__{r}"]))) for r in full}
    worst = max(err, key=lambda r: err[r])
    return at_most(
        "full-matrix-matches-mode-theory",
        "The full-matrix dynamics of aligned d = 2 weights reduces to the singular-mode dynamics "
        "(eqs. 6, 12, 14; footnote 2).",
        err[worst],
        1e-7,
        f"Max |σ_i(t) full − σ_i(t) mode ODE| over t, {len(data['starts'])} modes and both layers; full-matrix 4-4-4 "
        f"network (simulate, rtol {config.settings.full_ode.rtol:g}) read out with layer_mode_values; "
        + ", ".join(f"{rule_label(r)} {err[r]:.1e}" for r in full)
        + ".",
    )


def full_matrix_conservation(data: Data, config: Config[Settings]) -> Claim | None:
    full = _full_rules(data)
    if not full:
        return None
    cons = {r: relative_drift(data[f"full__{r}__C"]) for r in full}
    worst = max(cons, key=lambda r: cons[r])
    return at_most(
        "full-matrix-conservation",
        "In the full-matrix runs w_1w_1ᵀ − w_2ᵀw_2 stays constant (Theorem 1, eq. 4), the matrix form of "
        "the hyperbolic paths.",
        cons[worst],
        1e-8,
        "Max over t of ‖C(t) − C(0)‖_F/‖C(0)‖_F, C = w_1w_1ᵀ − w_2ᵀw_2; "
        + ", ".join(f"{rule_label(r)} {cons[r]:.1e}" for r in full)
        + ".",
    )


def same_direction_full_rules(data: Data, config: Config[Settings]) -> Claim:
    # the full rules share their update direction at every grid point (Fig. 1A–C)
    ref = data["speed__sgd"]
    unit = ref / np.linalg.norm(ref, axis=-1, keepdims=True).clip(1e-300)
    dev = 0.0
    for r in ("ngd", "sqrt-ngd"):
        v = data[f"speed__{r}"]
        dev = max(
            dev,
            float(
                np.nanmax(np.linalg.norm(v / np.linalg.norm(v, axis=-1, keepdims=True).clip(1e-300) - unit, axis=-1))
            ),
        )
    return at_most(
        "same-direction-full-rules",
        "SGD, NGD and √NGD share the same update direction at every point (Fig. 1A–C caption).",
        dev,
        1e-12,
        f"Max over the {_grid_text(data)} of ‖σ̇/‖σ̇‖ − σ̇_SGD/‖σ̇_SGD‖‖ for NGD and √NGD.",
    )


def normalized_speed_law(data: Data, config: Config[Settings]) -> Claim:
    pts = grid_points(data["speed_axis"])
    j_norm = np.asarray(theory.coupling_norm(pts))
    law = 0.0
    for r in HYPERBOLIC:
        # S.I.15: ‖σ̇‖/|σ_Δ| ∝ ‖j‖^{1−2/q}; ‖j‖ ∝ α^{d−1} for balanced weights, so this is S.I.16's e_w/(d − 1)
        expo = theory.scaling_exponents(2, get_rule(r).q)[0] / (2 - 1)
        speed, keep = _normalized_speed(data, r, pts, "speed")
        law = max(law, float(np.max(np.abs(speed / j_norm[keep] ** expo - 1.0))))
    return at_most(
        "normalized-speed-law",
        "The normalized update speed is ‖σ̇‖/|σ_Δ| = η‖j‖^{1−2/q}: ‖j‖ for SGD, 1/‖j‖ for NGD, 1 for √NGD "
        "(eqs. 8, 13, 15; Fig. 1 caption).",
        law,
        1e-12,
        f"Max relative deviation over the {_grid_text(data)}, rules SGD, NGD, √NGD.",
    )


def sqrt_ngd_constant_speed(data: Data, config: Config[Settings]) -> Claim:
    speed, _ = _normalized_speed(data, "sqrt-ngd", grid_points(data["speed_axis"]), "speed")
    return at_most(
        "sqrt-ngd-constant-speed",
        "√NGD's update speed ‖σ̇‖ = η|σ_Δ| is independent of the coupling strength (eq. 16, Fig. 1C).",
        float(np.max(np.abs(speed - 1.0))),
        1e-12,
        f"Max over the {_grid_text(data)} of |‖σ̇‖/(η|σ_Δ|) − 1|.",
    )


def sqrt_ngd_d_same_speed(data: Data, config: Config[Settings]) -> Claim:
    pts = grid_points(data["speed_axis"])
    speed, _ = _normalized_speed(data, "sqrt-ngd", pts, "speed")
    speed_d, _ = _normalized_speed(data, "sqrt-ngd-d", pts, "speed")
    return at_most(
        "sqrt-ngd-d-same-speed",
        "√NGD-d has the identical parameter update speed ‖σ̇‖ = η|σ_Δ| as √NGD (eq. 26, Fig. 1E).",
        float(np.max(np.abs(speed_d / speed - 1.0))),
        1e-12,
        f"Max over the {_grid_text(data)} of |‖σ̇‖_√NGD-d/‖σ̇‖_√NGD − 1|.",
    )


def ngd_d_conserves_ratio(data: Data, config: Config[Settings]) -> Claim:
    return at_most(
        "ngd-d-conserves-ratio",
        "NGD-d follows radially diverging paths that conserve σ_1/σ_2 (eq. 24, section 3.3, Fig. 1D).",
        constant_drift(data, "ngd-d"),
        1e-8,
        f"Max over t and {len(data['starts'])} starts of |K(t) − K(0)|/|K(0)|, K = σ_1/σ_2, along the NGD-d mode "
        "trajectories.",
    )


def ngd_d_breaks_hyperbolic(data: Data, config: Config[Settings]) -> Claim:
    return at_least(
        "ngd-d-breaks-hyperbolic",
        "NGD-d leaves the hyperbolic paths: σ_1² − σ_2² is not conserved (section 3.3: the block-diagonal "
        "approximation adds null-space components).",
        hyperbolic_drift(data, "ngd-d"),
        0.1,
        f"Max over t and {len(data['starts'])} starts of |C(t) − C(0)|/|C(0)|, C = σ_1² − σ_2², along the NGD-d "
        f"trajectories (for comparison NGD: {hyperbolic_drift(data, 'ngd'):.1e}).",
    )


def sqrt_ngd_d_conserves_abs_difference(data: Data, config: Config[Settings]) -> Claim:
    return at_most(
        "sqrt-ngd-d-conserves-abs-difference",
        "√NGD-d follows parallel paths that conserve |σ_1| − |σ_2| (eq. 26, Fig. 1E).",
        constant_drift(data, "sqrt-ngd-d"),
        1e-8,
        f"Max over t and {len(data['starts'])} starts of |K(t) − K(0)|/|K(0)|, K = |σ_1| − |σ_2|, along the √NGD-d "
        "trajectories.",
    )


def ngd_d_same_map_dynamics(data: Data, config: Config[Settings]) -> Claim:
    target = float(data["target"])
    sb_ngd, sb_d = map_values(data, "ngd"), map_values(data, "ngd-d")
    diff = float(np.max(np.abs(sb_ngd - sb_d)) / target)
    hl = int(config.settings.highlight)
    idx = data["sync_index"]
    at_dots = float(np.max(np.abs(np.stack([sb_ngd[idx, hl], sb_d[idx, hl]]) - data["sync_levels"])))
    return at_most(
        "ngd-d-same-map-dynamics",
        "NGD-d has identical map dynamics to NGD: from the same start both traverse the σ_Δ contours with "
        "synchronized timing (section 3.3, Fig. 1B,D red dots).",
        diff,
        1e-8,
        f"Max over t and {len(data['starts'])} starts of |σ̄_NGD-d(t) − σ̄_NGD(t)|/σ̄*; at the red dots (times where "
        f"the p = 0 map solution reaches σ̄ = {', '.join(f'{v:g}' for v in data['sync_levels'])}) both are within "
        f"{at_dots:.1e} of those levels.",
    )


def ngd_d_larger_update(data: Data, config: Config[Settings]) -> Claim:
    target = float(data["target"])
    pts = grid_points(data["speed_axis"])
    hl = int(config.settings.highlight)
    speed_ngd = np.linalg.norm(data["speed__ngd"], axis=-1)
    speed_ngdd = np.linalg.norm(data["speed__ngd-d"], axis=-1)
    keep = np.abs(displacement(pts, target)) > 1e-9 * target
    ratio = speed_ngdd[keep] / speed_ngd[keep]
    diag = np.isclose(pts[..., 0], pts[..., 1])[keep]
    with np.errstate(divide="ignore", invalid="ignore"):
        traj_ratio = update_speed(data, "ngd-d", hl) / update_speed(data, "ngd", hl)
    traj_ratio = traj_ratio[np.isfinite(traj_ratio)]
    return at_least(
        "ngd-d-larger-update",
        "NGD-d's parameter update is at least as large as NGD's, ‖σ̇‖_NGD-d ≥ ‖σ̇‖_NGD (footnote 7, Jensen).",
        float(np.min(ratio)),
        1.0 - 1e-12,
        f"Min over the {_grid_text(data)} of ‖σ̇‖_NGD-d/‖σ̇‖_NGD (equality on the balanced diagonal σ_1 = σ_2: min "
        f"there {float(np.min(ratio[diag])):.12g}); max on the grid {float(np.max(ratio)):.3g}; along the highlighted "
        f"trajectories (same t) the ratio runs from {float(np.min(traj_ratio)):.3g} to "
        f"{float(np.max(traj_ratio)):.3g}.",
    )


CLAIMS = (
    hyperbolic_paths,
    full_matrix_matches_mode_theory,
    full_matrix_conservation,
    same_direction_full_rules,
    normalized_speed_law,
    sqrt_ngd_constant_speed,
    sqrt_ngd_d_same_speed,
    ngd_d_conserves_ratio,
    ngd_d_breaks_hyperbolic,
    sqrt_ngd_d_conserves_abs_difference,
    ngd_d_same_map_dynamics,
    ngd_d_larger_update,
)


def claims(data: Data, config: Config[Settings]) -> list[Claim]:
    return measure(CLAIMS, data, config)


# ---------------------------------------------------------------------------------------
# figure
# ---------------------------------------------------------------------------------------

_CONST_LABEL = {
    "sgd": "$\\sigma_1^2 - \\sigma_2^2$",
    "ngd": "$\\sigma_1^2 - \\sigma_2^2$",
    "sqrt-ngd": "$\\sigma_1^2 - \\sigma_2^2$",
    "ngd-d": "$\\sigma_1 / \\sigma_2$",
    "sqrt-ngd-d": "$|\\sigma_1| - |\\sigma_2|$",
}
_SPEED_NOTE = {
    "sgd": "speed ∝ ‖j‖ (vanishes near 0)",
    "ngd": "speed ∝ 1/‖j‖ (explodes near 0)",
    "sqrt-ngd": "constant normalized speed",
    "ngd-d": "radially diverging",
    "sqrt-ngd-d": "constant direction and speed",
}
_PATH = "#c0392b"
_DOT = "#e31a1c"


def _path_levels(name: str, values: np.ndarray) -> np.ndarray:
    """Level sets to draw: the starts' own values plus an even spread."""
    if name == "ngd-d":
        extra = np.geomspace(1 / 8, 8, 7)
    elif name == "sqrt-ngd-d":
        extra = np.linspace(-1.6, 1.6, 9)
    else:
        extra = np.linspace(-3.2, 3.2, 9)
    return np.unique(np.round(np.concatenate([values, extra]), 12))


def plot(data: Data, config: Config[Settings]) -> Figure:
    target, eta = float(data["target"]), float(data["eta"])
    starts = data["starts"]
    hl = int(config.settings.highlight)
    t = data["t"]
    idx = data["sync_index"]
    lim = float(data["mesh_axis"][-1])

    fig = Figure(figsize=(16.5, 11.2), layout="constrained")
    axes = fig.subplots(2, 3)
    panels = [axes[0, 0], axes[0, 1], axes[0, 2], axes[1, 0], axes[1, 1]]
    f_pts = grid_points(data["field_axis"])
    m_axis = data["mesh_axis"]
    m1, m2 = np.meshgrid(m_axis, m_axis)
    delta_mesh = displacement(np.stack([m1, m2], -1), target)
    sb_levels = np.concatenate([data["sync_levels"], [1.5, 2.0, 3.0]]) - target
    quiver = None
    for ax, name in zip(panels, RULES):
        ax.contour(m1, m2, delta_mesh, levels=np.sort(sb_levels), colors="0.6", linewidths=0.8, linestyles="--")
        ax.contour(m1, m2, delta_mesh, levels=[0.0], colors="k", linewidths=2.2)
        v = data[f"field__{name}"]
        delta = np.abs(displacement(f_pts, target))
        vn = v / np.maximum(delta, 1e-300)[..., None]
        amp = np.linalg.norm(vn, axis=-1)
        ok = (delta > 1e-9) & (amp > 0)
        u = np.where(ok, vn[..., 0] / np.where(ok, amp, 1.0), np.nan)
        w = np.where(ok, vn[..., 1] / np.where(ok, amp, 1.0), np.nan)
        quiver = ax.quiver(
            f_pts[..., 0],
            f_pts[..., 1],
            u,
            w,
            np.log10(np.where(ok, amp, np.nan)),
            cmap="viridis",
            clim=(-1.0, 1.0),
            pivot="mid",
            scale=22,
            width=0.0045,
            headwidth=3.5,
            zorder=2,
        )
        k_start = np.asarray(theory.constant_of_motion(get_rule(name), starts))[:, 0]
        ax.contour(
            m1,
            m2,
            data[f"levelset__{name}"],
            levels=_path_levels(name, k_start),
            colors=_PATH,
            linewidths=0.7,
            alpha=0.55,
            zorder=1,
        )
        sig = data[f"modes__{name}"]
        for k in range(len(starts)):
            ax.plot(sig[:, k, 0], sig[:, k, 1], color=_PATH, lw=2.0 if k == hl else 1.4, zorder=3)
            ax.plot(*starts[k], "o", mfc="white", mec=_PATH, mew=1.5, ms=6, zorder=4)
        if name in ("ngd", "ngd-d"):
            other = "ngd-d" if name == "ngd" else "ngd"
            so = data[f"modes__{other}"][:, hl]
            ax.plot(
                so[:, 0],
                so[:, 1],
                color="0.35",
                lw=1.2,
                ls=":",
                zorder=3,
                label=f"{rule_label(other)} path from the same start",
            )
            ax.plot(
                sig[idx, hl, 0],
                sig[idx, hl, 1],
                "o",
                color=_DOT,
                mec="k",
                mew=0.6,
                ms=7,
                zorder=5,
                label="equal times $t_k$ on both paths",
            )
            ax.legend(loc="upper right", fontsize=8.5, framealpha=0.92)
        ax.set_xlim(0, lim)
        ax.set_ylim(0, lim)
        ax.set_aspect("equal")
        ax.set_xlabel("$\\sigma_1$ (layer 1)")
        ax.set_ylabel("$\\sigma_2$ (layer 2)")
        ax.set_title(
            f"{PANEL[name]}  {rule_label(name)}: conserves {_CONST_LABEL[name]}\n{_SPEED_NOTE[name]}",
            loc="left",
            fontsize=11.5,
        )
    assert quiver is not None  # one per panel
    cb = fig.colorbar(quiver, ax=panels, shrink=0.55, pad=0.01, aspect=30)
    cb.set_label("$\\log_{10}\\,\\|\\dot\\sigma\\|/|\\sigma_\\Delta|$  (arrow colour; arrows show direction)")

    ax = axes[1, 2]
    for name, ls in (("ngd", "-"), ("ngd-d", "--")):
        sb = map_values(data, name)[:, hl]
        ax.plot(t, sb, ls, color=rule_color(name), lw=2.0, label=f"$\\bar\\sigma(t)$ {rule_label(name)}")
    ax.plot(
        t[idx],
        map_values(data, "ngd")[idx, hl],
        "o",
        color=_DOT,
        mec="k",
        mew=0.6,
        ms=7,
        zorder=5,
        label="red dots of B, D",
    )
    ax.axhline(target, color="k", lw=0.8)
    ax.set_xlim(0, 8)
    ax.set_ylim(0, 1.1 * target)
    ax.set_xlabel("time t (η = 1)")
    ax.set_ylabel("map mode $\\bar\\sigma = \\sigma_1\\sigma_2$")
    ax2 = ax.twinx()
    for name, ls in (("ngd", "-"), ("ngd-d", "--")):
        ax2.semilogy(
            t,
            update_speed(data, name, hl),
            ls,
            color=rule_color(name),
            lw=1.0,
            alpha=0.7,
            label=f"$\\|\\dot\\sigma\\|$ {rule_label(name)}",
        )
    ax2.set_ylabel("parameter update speed $\\|\\dot\\sigma\\|$ (thin lines, log)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="center right", fontsize=8.5, framealpha=0.92)
    ax.set_title(
        "F  NGD vs NGD-d from the highlighted start:\nsame $\\bar\\sigma(t)$, larger NGD-d update",
        loc="left",
        fontsize=11.5,
    )
    ax.grid(alpha=0.25)
    fig.suptitle(
        f"Fig. 1 — one singular mode of a d = 2 network, $\\bar\\sigma_*$ = {target:g}, η = {eta:g}\n"
        "black: solution set $\\sigma_1\\sigma_2 = \\bar\\sigma_*$;  grey dashed: contours of $\\sigma_\\Delta$;  "
        "red: each rule's conserved paths (thin: level sets of its constant of motion, thick: integrated mode "
        "trajectories from ○)",
        fontsize=12.5,
    )
    return fig
