"""Fig. S2: numerical confirmation of the conservation law (S.I. section 4) — a 3-layer network.

A depth-3 network of width 2 (widths 2-2-2-2) learns a fixed 2 × 2 target (singular values
3 and 1, Σ = I) from small random weights under SGD, NGD, √NGD, NGD-d and √NGD-d in
continuous time with tight ODE tolerances. Recorded: every weight entry and the quantities
``C_1 = w_1 w_1ᵀ − w_2ᵀ w_2`` and ``C_2 = w_2 w_2ᵀ − w_3ᵀ w_3`` of eq. (4).

Theorem 1 says the C_i are constant for SGD, NGD and √NGD; the paper's S.I. says they blow up
for NGD-d, and that √NGD-d also breaks them while the weights stay balanced.

*Balance* is measured by the relative imbalance ``‖C_i‖_F / (½(‖w_i‖_F² + ‖w_{i+1}‖_F²))``:
0 for perfectly balanced layers (``w_i w_iᵀ = w_{i+1}ᵀ w_{i+1}``), of order 1 when one layer's
scale dominates the other's. From small initial weights it starts of order 1 and should fall
towards 0 as the weights grow, when the layers stay balanced.

The random initial weights are drawn so that the straight map path from W(0) to W* stays
invertible (:func:`curvdyn.experiments.common.straight_map_path_invertible`): NGD's and NGD-d's
map moves on that line (eq. 20, p = 0), and where it is singular a layer is, where NGD-d's field
is singular — the run stops there at max_steps (for about 40 % of plain ``init_random`` draws
here, e.g. whenever ``det W(0)`` and ``det W*`` differ in sign), and no NGD-d solution exists to
compare with. The paper's Fig. S2 shows NGD-d converging from its initial weights, so it drew
such weights. The draw is ``init_random`` from the seed's key, and, if its path is singular,
from ``fold_in(key, k)``, k = 1, 2, ...: ``init_random`` conditioned on an invertible path.

A second, smaller run starts from weights aligned with the target's singular vectors
(footnote 2, unequal per-layer mode values), where each mode's per-layer values σ_i can be
read off exactly and each rule's own constant of motion checked: ``σ_i² − σ_k²`` (SGD, NGD,
√NGD, eq. 7), ``σ_i/σ_k`` (NGD-d, eq. 24) and ``|σ_i| − |σ_k|`` (√NGD-d, eq. 26).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullLocator

from curvdyn import theory
from curvdyn.experiments.base import Claim, Config, Data, at_least, at_most, measure
from curvdyn.experiments.common import (
    log_times,
    random_target,
    relative_drift,
    rule_label,
    straight_map_path_invertible,
)
from curvdyn.experiments.common import progress as progress_bar
from curvdyn.init import init_aligned, init_random
from curvdyn.integrators import ODE
from curvdyn.rules import get_rule
from curvdyn.simulate import simulate
from curvdyn.task import Task

NAME = "figS2"
TITLE = "Fig. S2 — conservation law in a 3-layer network: weights and w_i w_iᵀ − w_{i+1}ᵀ w_{i+1} over time"

RULES = ("sgd", "ngd", "sqrt-ngd", "ngd-d", "sqrt-ngd-d")
FULL = ("sgd", "ngd", "sqrt-ngd")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of Fig. S2.

    Attributes:
      widths: the network (d = 3); target_singular_values: of the fixed target (Haar-random
        singular vectors); init_scale: every layer's largest initial singular value.
      invertible_path: draw the random initial weights with an invertible straight map path to
        the target (the module docstring says why), at most ``max_draws`` draws.
      aligned_mode_values: the aligned run's per-layer mode values (rows: layers, columns: modes).
      eta: the learning rate; t_end, n_save, t_min: 0 and ``n_save`` log-spaced save times from
        ``t_min`` to ``t_end``; ode: the integrator.
    """

    widths: tuple[int, ...] = (2, 2, 2, 2)
    target_singular_values: tuple[float, ...] = (3.0, 1.0)
    init_scale: float = 0.1
    invertible_path: bool = True
    max_draws: int = 1000
    aligned_mode_values: tuple[tuple[float, ...], ...] = ((0.12, 0.05), (0.08, 0.1), (0.15, 0.07))
    eta: float = 1.0
    t_end: float = 20.0
    n_save: int = 300
    t_min: float = 1e-4
    ode: ODE = ODE(rtol=1e-11, atol=1e-13, solver="dopri8", max_steps=200_000)


DEFAULT = Settings()
QUICK = dataclasses.replace(DEFAULT, n_save=120, ode=dataclasses.replace(DEFAULT.ode, rtol=1e-10, atol=1e-12))


def init_with_invertible_path(key, widths, scale: float, target: np.ndarray, max_draws: int):
    """``(weights, draws)``: ``init_random(key, widths, scale)``, or the first draw from
    ``fold_in(key, k)``, k = 1, 2, ..., whose straight map path to ``target`` is invertible."""
    for k in range(max_draws):
        ws = init_random(key if k == 0 else jax.random.fold_in(key, k), widths, scale)
        w_map = np.asarray(ws[0])
        for w in ws[1:]:
            w_map = np.asarray(w) @ w_map
        if straight_map_path_invertible(w_map, target):
            return ws, k + 1
    raise RuntimeError(f"no initial weights with an invertible straight map path in {max_draws} draws")


def compute(settings: Settings, *, seed: int, progress: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    s = settings
    k_target, k_init = jax.random.split(jax.random.PRNGKey(seed))
    target = random_target(k_target, s.target_singular_values)
    task = Task(target)
    if s.invertible_path:
        ws0, draws = init_with_invertible_path(k_init, s.widths, s.init_scale, target, s.max_draws)
    else:
        ws0, draws = init_random(k_init, s.widths, s.init_scale), 1
    wa0 = init_aligned(target, s.widths, np.asarray(s.aligned_mode_values))
    bases = theory.aligned_bases(target, s.widths)
    save = log_times(s.t_end, s.n_save, s.t_min)
    ode = s.ode

    data: dict[str, np.ndarray] = {"target": target}
    runs: dict[str, dict[str, Any]] = {}
    for name in progress_bar(RULES, enabled=progress, desc="figS2 rules"):
        start = time.perf_counter()
        traj = simulate(ws0, task, get_rule(name), s.t_end, eta=s.eta, save_at=save, seed=seed, integrator=ode)
        data[f"{name}__t"] = np.asarray(traj.t)
        data[f"{name}__loss"] = np.asarray(traj.loss)
        for i, w in enumerate(traj.weights, start=1):
            data[f"{name}__w{i}"] = np.asarray(w)
        for i, c in enumerate(traj.conserved, start=1):
            data[f"{name}__C{i}"] = np.asarray(c)
        aligned = simulate(wa0, task, get_rule(name), s.t_end, eta=s.eta, save_at=save, seed=seed, integrator=ode)
        data[f"aligned__{name}__t"] = np.asarray(aligned.t)
        data[f"aligned__{name}__sigmas"] = theory.layer_mode_values(aligned.weights, bases)
        runs[name] = {
            "status": traj.status,
            "message": traj.message,
            "solver_steps": traj.config["solver_steps"],
            "aligned_status": aligned.status,
            "aligned_solver_steps": aligned.config["solver_steps"],
            "wall_time_s": round(time.perf_counter() - start, 3),
        }
    return data, {"runs": runs, "init_draws": draws}


def describe(config: Config[Settings]) -> str:
    """The setup and numerics in words, for the report."""
    s = config.settings
    return (
        f"Depth-3 linear network, widths {'-'.join(map(str, s.widths))}, learning a 2 × 2 target with singular "
        f"values {', '.join(f'{v:g}' for v in s.target_singular_values)} (Σ = I) from random weights "
        f"(largest singular value {s.init_scale:g} per layer"
        + (
            f"; draw {config.outcome.get('init_draws', '?')}: the first whose straight map path to W* is invertible"
            if s.invertible_path
            else ""
        )
        + f"), all rules from the same weights, η = {s.eta:g}, "
        f"continuous time to t = {s.t_end:g} ({s.ode.solver}, rtol {s.ode.rtol:g}, atol {s.ode.atol:g}). "
        "Relative imbalance = ‖C_i‖_F / (½(‖w_i‖_F² + ‖w_{i+1}‖_F²)). A second run per rule starts from weights "
        "aligned with the target's singular vectors with unequal per-layer mode values "
        f"{[list(row) for row in s.aligned_mode_values]} (rows: layers; columns: modes), where each rule's "
        "own constant of motion is read off the per-layer mode values."
    )


# ---------------------------------------------------------------------------------------
# measurements (from the data alone)
# ---------------------------------------------------------------------------------------


def _depth(data) -> int:
    return sum(1 for k in data if k.startswith("sgd__w"))


def conservation_drift(data, name: str) -> float:
    """``max_i max_t ‖C_i(t) − C_i(0)‖_F / ‖C_i(0)‖_F`` of a rule's random-init run."""
    d = _depth(data)
    return max(relative_drift(data[f"{name}__C{i}"]) for i in range(1, d))


def imbalance(data, name: str) -> np.ndarray:
    """Relative imbalance ``‖C_i‖_F / (½(‖w_i‖_F² + ‖w_{i+1}‖_F²))`` over time, shape (d−1, T)."""
    d = _depth(data)
    out = []
    for i in range(1, d):
        c = np.linalg.norm(data[f"{name}__C{i}"], axis=(-2, -1))
        scale = 0.5 * (
            np.sum(data[f"{name}__w{i}"] ** 2, axis=(-2, -1)) + np.sum(data[f"{name}__w{i + 1}"] ** 2, axis=(-2, -1))
        )
        out.append(c / scale)
    return np.asarray(out)


def final_norm(data, name: str) -> float:
    """``(Σ_i ‖w_i(t_end)‖_F²)^{1/2}`` of a rule's random-init run."""
    d = _depth(data)
    return float(np.sqrt(sum(np.sum(data[f"{name}__w{i}"][-1] ** 2) for i in range(1, d + 1))))


def aligned_constants(data, name: str) -> np.ndarray:
    """The rule's own constants of motion on the aligned run, (T, modes, d−1)."""
    return np.asarray(theory.constant_of_motion(get_rule(name), data[f"aligned__{name}__sigmas"]))


def aligned_constant_drift(data, name: str) -> float:
    """``max |K(t) − K(0)| / max |K(0)|`` over modes and layer pairs of the aligned run."""
    k = aligned_constants(data, name)
    return float(np.max(np.abs(k - k[0])) / np.max(np.abs(k[0])))


_CONST_LABEL = {
    "sgd": "$\\sigma_i^2 - \\sigma_{i+1}^2$",
    "ngd": "$\\sigma_i^2 - \\sigma_{i+1}^2$",
    "sqrt-ngd": "$\\sigma_i^2 - \\sigma_{i+1}^2$",
    "ngd-d": "$\\sigma_i \\,/\\, \\sigma_{i+1}$",
    "sqrt-ngd-d": "$|\\sigma_i| - |\\sigma_{i+1}|$",
}


def _final_imbalance(data: Data) -> dict[str, float]:
    return {name: float(np.max(imbalance(data, name)[:, -1])) for name in RULES}


# ---------------------------------------------------------------------------------------
# the claims, in report order
# ---------------------------------------------------------------------------------------


def _conservation(name: str):
    def claim(data: Data, config: Config[Settings]) -> Claim:
        return at_most(
            f"conservation-{name}",
            f"{rule_label(name)} conserves w_i w_iᵀ − w_{{i+1}}ᵀ w_{{i+1}} (Theorem 1, eq. 4; S.I. Fig. S2).",
            conservation_drift(data, name),
            1e-6,
            f"Max over t and i of ‖C_i(t) − C_i(0)‖_F / ‖C_i(0)‖_F, 3-layer width-2 network from random weights "
            f"(scale {config.settings.init_scale}), ODE rtol {config.settings.ode.rtol:g}.",
        )

    claim.__name__ = f"conservation_{name.replace('-', '_')}"
    return claim


def conservation_breaks_ngd_d(data: Data, config: Config[Settings]) -> Claim:
    return at_least(
        "conservation-breaks-ngd-d",
        "NGD-d breaks the conservation law: the C_i blow up (S.I. Fig. S2; contribution 5).",
        conservation_drift(data, "ngd-d"),
        0.1,
        "Max relative drift of C_i, as for the full rules.",
    )


def conservation_breaks_sqrt_ngd_d(data: Data, config: Config[Settings]) -> Claim:
    return at_least(
        "conservation-breaks-sqrt-ngd-d",
        "√NGD-d also violates the conservation law (S.I. Fig. S2).",
        conservation_drift(data, "sqrt-ngd-d"),
        0.01,
        "Max relative drift of C_i, as for the full rules (4 orders above the full rules' numerical level).",
    )


def balance_sqrt_ngd_d(data: Data, config: Config[Settings]) -> Claim:
    final = _final_imbalance(data)
    return at_most(
        "balance-sqrt-ngd-d",
        "√NGD-d keeps the layers balanced while the weights grow (section 4, S.I. Fig. S2; contribution 5).",
        final["sqrt-ngd-d"],
        0.1,
        "Final relative imbalance max_i ‖C_i‖_F / (½(‖w_i‖_F² + ‖w_{i+1}‖_F²)) at t_end "
        f"(initial {float(np.max(imbalance(data, 'sqrt-ngd-d')[:, 0])):.3g}; SGD ends at {final['sgd']:.3g}, "
        f"NGD-d at {final['ngd-d']:.3g}).",
    )


def imbalance_ngd_d(data: Data, config: Config[Settings]) -> Claim:
    return at_least(
        "imbalance-ngd-d",
        "NGD-d breaks the weight balance across layers (section 4; contribution 5).",
        _final_imbalance(data)["ngd-d"],
        0.2,
        f"Final relative imbalance, as for √NGD-d (initial {float(np.max(imbalance(data, 'ngd-d')[:, 0])):.3g}).",
    )


def aligned_same_hyperbolic_path(data: Data, config: Config[Settings]) -> Claim:
    full_drift = {name: aligned_constant_drift(data, name) for name in FULL}
    worst = max(full_drift, key=lambda r: full_drift[r])
    return at_most(
        "aligned-same-hyperbolic-path",
        "SGD, NGD and √NGD move every singular mode along the same hyperbola σ_i² − σ_k² = const: the same path, "
        "at different speeds (eq. 7, sections 3.1; contribution 1).",
        full_drift[worst],
        1e-6,
        "Aligned initial weights: max |K(t) − K(0)| / max |K(0)| for K = σ_i² − σ_{i+1}² over modes and layers, "
        "largest of the three rules (" + ", ".join(f"{rule_label(r)} {v:.2g}" for r, v in full_drift.items()) + ").",
    )


def larger_norm_ngd_d(data: Data, config: Config[Settings]) -> Claim:
    norms = {name: final_norm(data, name) for name in RULES}
    return at_least(
        "larger-norm-ngd-d",
        "NGD-d converges to a less efficient, larger-norm solution than NGD (section 3.3).",
        norms["ngd-d"] / norms["ngd"],
        1.05,
        "Ratio of the final weight norms (Σ_i ‖w_i‖_F²)^{1/2}, NGD-d / NGD, random initial weights whose straight "
        "map path to W* is invertible (NGD-d converges only then: see the setup), both at loss ≈ 0; NGD-d run "
        f"{config.outcome.get('runs', {}).get('ngd-d', {}).get('status', '?')}; final norms: "
        + ", ".join(f"{rule_label(r)} {v:.4g}" for r, v in norms.items())
        + ".",
    )


def aligned_ngd_d_ratio(data: Data, config: Config[Settings]) -> Claim:
    return at_most(
        "aligned-ngd-d-ratio",
        "NGD-d conserves σ_i/σ_k of every singular mode (eq. 24, section 3.3).",
        aligned_constant_drift(data, "ngd-d"),
        1e-6,
        "Aligned initial weights (footnote 2): max |K(t) − K(0)| / max |K(0)| for K = σ_i/σ_{i+1} over modes and "
        "layers.",
    )


def aligned_sqrt_ngd_d_difference(data: Data, config: Config[Settings]) -> Claim:
    return at_most(
        "aligned-sqrt-ngd-d-difference",
        "√NGD-d conserves |σ_i| − |σ_k| of every singular mode (eq. 26, section 3.3).",
        aligned_constant_drift(data, "sqrt-ngd-d"),
        1e-6,
        "Aligned initial weights: max |K(t) − K(0)| / max |K(0)| for K = |σ_i| − |σ_{i+1}| over modes and layers.",
    )


CLAIMS = (
    *(_conservation(name) for name in FULL),
    conservation_breaks_ngd_d,
    conservation_breaks_sqrt_ngd_d,
    balance_sqrt_ngd_d,
    imbalance_ngd_d,
    aligned_same_hyperbolic_path,
    larger_norm_ngd_d,
    aligned_ngd_d_ratio,
    aligned_sqrt_ngd_d_difference,
)


def claims(data: Data, config: Config[Settings]) -> list[Claim]:
    return measure(CLAIMS, data, config)


# ---------------------------------------------------------------------------------------
# figure
# ---------------------------------------------------------------------------------------

_LAYER_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def plot(data: Data, config: Config[Settings]) -> Figure:
    d = _depth(data)
    fig = Figure(figsize=(16, 3.0 * len(RULES)))
    axes = fig.subplots(len(RULES), 4, sharex=True)
    # A fixed layout: a layout engine would cost seconds of text measuring for 20 panels.
    fig.subplots_adjust(left=0.065, right=0.99, top=0.93, bottom=0.05, wspace=0.33, hspace=0.12)
    for row, name in enumerate(RULES):
        t = data[f"{name}__t"]
        tp = t[1:]  # log time axis: drop t = 0
        ax = axes[row, 0]
        for i in range(1, d + 1):
            w = data[f"{name}__w{i}"][1:].reshape(len(tp), -1)
            ax.plot(tp, w, color=_LAYER_COLORS[i - 1], lw=1.2, label=[f"$w_{i}$"] + [None] * (w.shape[1] - 1))
        ax.set_ylabel(f"{rule_label(name)}\nweight entries")
        ax.axhline(0, color="0.7", lw=0.6)
        if row == 0:
            ax.legend(loc="upper left", fontsize=8, ncol=d, framealpha=0.9)

        ax = axes[row, 1]
        for i in range(1, d):
            c = data[f"{name}__C{i}"][1:].reshape(len(tp), -1)
            ax.plot(tp, c, color=_LAYER_COLORS[i - 1], lw=1.2, label=[f"$C_{i}$"] + [None] * (c.shape[1] - 1))
        drift = conservation_drift(data, name)
        ax.set_ylabel("entries of $C_i$")
        ax.text(
            0.98,
            0.05,
            f"max rel. drift {drift:.1e}",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=8,
            bbox=dict(fc="white", ec="0.8", alpha=0.8),
        )
        if row == 0:
            ax.legend(loc="upper left", fontsize=8, ncol=d - 1, framealpha=0.9)
        _symmetric_ylim(ax, [data[f"{name}__C{i}"] for i in range(1, d)])

        ax = axes[row, 2]
        imb = imbalance(data, name)
        for i in range(1, d):
            ax.plot(tp, imb[i - 1, 1:], color=_LAYER_COLORS[i - 1], lw=1.4, label=f"layers {i},{i + 1}")
        ax.set_yscale("log")
        ax.set_ylabel("relative imbalance")
        if row == 0:
            ax.legend(loc="lower left", fontsize=8, framealpha=0.9)

        ax = axes[row, 3]
        ta = data[f"aligned__{name}__t"][1:]
        k = aligned_constants(data, name)[1:]
        for m in range(k.shape[1]):
            for i in range(k.shape[2]):
                ax.plot(
                    ta,
                    k[:, m, i],
                    lw=1.4,
                    color=_LAYER_COLORS[i],
                    ls="-" if m == 0 else "--",
                    label=f"mode {m + 1}, i={i + 1}",
                )
        ax.set_ylabel(_CONST_LABEL[name])
        if row == 0:
            ax.legend(loc="best", fontsize=7.5, ncol=2, framealpha=0.9)
        _pad_ylim(ax)
    for ax in axes.ravel():
        ax.set_xscale("log")
        # Decade ticks only: minor log ticks on 20 panels cost seconds of drawing.
        ax.xaxis.set_major_locator(LogLocator(base=10, numticks=8))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(alpha=0.25)
    for ax in axes[-1]:
        ax.set_xlabel("time t (η = 1)")
    axes[0, 0].set_title("weights (random init)")
    axes[0, 1].set_title("$C_i = w_i w_i^T - w_{i+1}^T w_{i+1}$ (eq. 4)")
    axes[0, 2].set_title("$\\|C_i\\|_F\\,/\\,\\frac{1}{2}(\\|w_i\\|_F^2 + \\|w_{i+1}\\|_F^2)$")
    axes[0, 3].set_title("aligned init: each rule's own constant")
    widths = "-".join(str(n) for n in config.settings.widths)
    fig.suptitle(
        f"Fig. S2 — 3-layer linear network (widths {widths}): conservation law and balance", fontsize=13, y=0.985
    )
    return fig


def _symmetric_ylim(ax, cs):
    lim = 1.25 * max(float(np.max(np.abs(c))) for c in cs) or 1.0
    ax.set_ylim(-lim, lim)


def _pad_ylim(ax):
    lo, hi = ax.get_ylim()
    span = max(hi - lo, 0.1 * max(abs(lo), abs(hi)), 1e-3)
    mid = 0.5 * (lo + hi)
    ax.set_ylim(mid - 0.8 * span, mid + 0.8 * span)
