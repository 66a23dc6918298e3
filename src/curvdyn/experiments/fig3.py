"""Fig. 3: curvature correction and generalization — the student–teacher experiment of section 4.

A rank-3 teacher ``W̄*`` (16 × 16, all three modes of strength SNR · noise std = 10) makes
``P = N = 16`` noisy training samples ``y = W̄* x + z``; the inputs are exactly whitened
(``X Xᵀ/P = I``). A depth-4 student of width 16, every layer random with largest singular
value 0.05, learns the training data with SGD, NGD, NGD-d, √NGD and √NGD-d from the same
initial weights, all with η = 1 so that times compare directly.

Numerics (the paper's, section 4): SGD, √NGD and √NGD-d run in continuous time (adaptive
ODE). NGD and NGD-d run as discrete Euler steps with Levenberg–Marquardt damping 1e-5 and
update clipping (the step's parameter norm is capped) — from 0.05-scale weights NGD's
velocity is of order 1e7. √NGD needs neither. (``--quick`` keeps everything but runs SGD as
explicit Euler steps just inside the stability limit, with fewer recorded times.)

Measured: the training loss (data loss), the exact expected test loss
``E[½‖W x − y‖²] = ½‖W − W̄*‖² + ½ N σ_z²`` for fresh ``x ~ N(0, I)``, and the network map
projected on the singular vectors of the training data's input–output correlation
``Σ_yx = Y Xᵀ/P`` (:func:`curvdyn.theory.project_modes`; a mode's component is
``u_kᵀ W v_k`` and tends to the data mode strength ``s_k``). Because the student has no
bottleneck (width 16 = N), every rule converges to the least-squares map of the training
data ``W* = Y Xᵀ/P``, and the test loss there (the dashed line) is computed exactly.
"""

from __future__ import annotations

import math
import time

import jax
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from curvdyn import theory
from curvdyn.experiments.base import Claim, at_least, at_most
from curvdyn.experiments.common import first_crossing, log_times, rule_color, rule_label
from curvdyn.experiments.common import progress as progress_bar
from curvdyn.init import init_random
from curvdyn.integrators import ODE, Euler
from curvdyn.network import network_map
from curvdyn.rules import get_rule
from curvdyn.simulate import simulate
from curvdyn.task import student_teacher

NAME = "fig3"
TITLE = "Fig. 3 — generalization dynamics: student–teacher task, SGD / NGD / √NGD and their block-diagonal versions"

RULES = ("sgd", "ngd", "sqrt-ngd", "ngd-d", "sqrt-ngd-d")
CONTINUOUS = ("sgd", "sqrt-ngd", "sqrt-ngd-d")
DISCRETE = ("ngd", "ngd-d")

# Run settings. ``quick`` keeps the experiment (task, network, rules, numerics) and lowers the
# resolution: fewer recorded times, looser ODE tolerances, coarser NGD steps and a shorter
# SGD run.
SETTINGS = {
    False: {
        "n": 16,
        "depth": 4,
        "rank": 3,
        "snr": 10.0,
        "noise_std": 1.0,
        "n_train": 16,
        "init_scale": 0.05,
        "eta": 1.0,
        "t_end": {"sgd": 10000.0, "sqrt-ngd": 12.0, "sqrt-ngd-d": 12.0, "ngd": 12.0, "ngd-d": 12.0},
        "sgd_method": "ode",
        "n_save": 400,
        "n_save_curvature": 100,
        "t_min": 1e-3,
        "rtol": 1e-6,
        "atol": 1e-9,
        "solver": "tsit5",
        "max_steps": 2_000_000,
        "ngd_dt": 0.1,
        "ngd_clip": 0.5,
        "ngd_save_every": 2,
        "lm_damping": 1e-5,
    },
}
# --quick: the same task, network, rules and NGD numerics (so the same data set and initial
# weights), at lower resolution: fewer recorded times, looser ODE tolerances, and SGD as
# explicit Euler steps at 1.5/λ_max (λ_max = d s_1^{2−2/d}, the largest curvature at the
# solution) instead of the adaptive ODE. SGD's run is long (its noise modes take ~1e4 time
# units from 0.05-scale weights) and stiff (the learned signal modes relax at rate λ_max ≈ 134),
# so the adaptive solver is stability-limited to steps ≈ 0.02 at ~150 µs each; the Euler
# step costs ~10× less.
SETTINGS[True] = dict(
    SETTINGS[False], sgd_method="euler", n_save=200, n_save_sgd_euler=2000, n_save_curvature=60, rtol=1e-5, atol=1e-8
)

SGD_EULER_SAFETY = 1.5  # Euler step = SGD_EULER_SAFETY / λ_max; stable below 2


def _test_loss(maps: np.ndarray, teacher: np.ndarray, noise_floor: float) -> np.ndarray:
    """Exact expected test loss ``½‖W − W̄*‖² + ½ N σ²`` for maps of shape (..., n, n)."""
    return 0.5 * np.sum((maps - teacher) ** 2, axis=(-2, -1)) + noise_floor


def sgd_curvature_max(strengths: np.ndarray, depth: int) -> float:
    """Largest H₊ eigenvalue at the balanced solution: ``‖j‖² = d s_1^{2−2/d}`` of the top mode."""
    return float(depth * float(np.max(strengths)) ** (2.0 - 2.0 / depth))


def _run_rule(name: str, ws0, task, s: dict, seed: int, strengths: np.ndarray):
    """One rule's simulation with this experiment's numerics; returns (trajectory, numerics)."""
    t_end = s["t_end"][name]
    if name in CONTINUOUS and not (name == "sgd" and s["sgd_method"] == "euler"):
        n_save = s["n_save"] if name == "sgd" else s["n_save_curvature"]
        traj = simulate(
            ws0,
            task,
            get_rule(name),
            t_end,
            eta=s["eta"],
            integrator=ODE(rtol=s["rtol"], atol=s["atol"], solver=s["solver"], max_steps=s["max_steps"]),
            save_at=log_times(t_end, n_save, s["t_min"]),
            seed=seed,
        )
        numerics = {
            "method": "ode",
            "solver": s["solver"],
            "rtol": s["rtol"],
            "atol": s["atol"],
            "solver_steps": traj.config["solver_steps"],
        }
    elif name == "sgd":
        dt = SGD_EULER_SAFETY / (s["eta"] * sgd_curvature_max(strengths, s["depth"]))
        n_steps = int(math.ceil(t_end / dt))
        traj = simulate(
            ws0,
            task,
            get_rule(name),
            eta=s["eta"],
            integrator=Euler(dt=dt, steps=n_steps),
            n_save=s["n_save_sgd_euler"],
            seed=seed,
        )
        numerics = {
            "method": "euler",
            "dt": dt,
            "n_steps": n_steps,
            "dt_rule": f"{SGD_EULER_SAFETY} / (eta * d * s_1^(2-2/d))",
        }
    else:
        n_steps = int(round(t_end / s["ngd_dt"]))
        traj = simulate(
            ws0,
            task,
            get_rule(name, lm_damping=s["lm_damping"]),
            eta=s["eta"],
            integrator=Euler(dt=s["ngd_dt"], steps=n_steps, clip=s["ngd_clip"]),
            n_save=n_steps // s["ngd_save_every"] + 1,
            seed=seed,
        )
        numerics = {"method": "euler", "dt": s["ngd_dt"], "clip": s["ngd_clip"], "lm_damping": s["lm_damping"]}
        clipped = np.asarray(traj.update_norm) * s["ngd_dt"] > s["ngd_clip"]
        numerics["clipped_until_t"] = float(np.asarray(traj.t)[clipped][-1]) if clipped.any() else 0.0
    return traj, numerics


def compute(*, quick: bool, seed: int, progress: bool = False):
    s = SETTINGS[bool(quick)]
    n, d = s["n"], s["depth"]
    k_data, k_init = jax.random.split(jax.random.PRNGKey(seed))
    st = student_teacher(k_data, n, rank=s["rank"], snr=s["snr"], n_train=s["n_train"], noise_std=s["noise_std"])
    task = st.train_task
    teacher = np.asarray(st.teacher)
    noise_floor = float(st.test_task.loss_offset)
    ws0 = init_random(k_init, (n,) * (d + 1), s["init_scale"])

    _, strengths, _ = theory.correlation_modes(task)
    w_star = np.asarray(task.target)
    data: dict[str, np.ndarray] = {
        "data_strengths": strengths,
        "teacher_strengths": np.linalg.svd(teacher, compute_uv=False),
        "overfit_test_loss": np.float64(_test_loss(w_star, teacher, noise_floor)),
        "overfit_train_loss": np.float64(task.loss_offset),
        "noise_floor": np.float64(noise_floor),
        "initial_map_norm": np.float64(np.linalg.norm(np.asarray(network_map(ws0)), 2)),
    }

    runs = {}
    for name in progress_bar(RULES, enabled=progress, desc="fig3 rules"):
        start = time.perf_counter()
        traj, numerics = _run_rule(name, ws0, task, s, seed, strengths)
        info = dict(
            numerics, status=traj.status, message=traj.message, wall_time_s=round(time.perf_counter() - start, 3)
        )
        maps = np.asarray(traj.map)
        data[f"{name}__t"] = np.asarray(traj.t)
        data[f"{name}__train_loss"] = np.asarray(traj.loss) + task.loss_offset
        data[f"{name}__test_loss"] = _test_loss(maps, teacher, noise_floor)
        data[f"{name}__modes"] = theory.project_modes(maps, task)
        data[f"{name}__update_norm"] = np.asarray(traj.update_norm)
        runs[name] = info

    config = {
        "task": {
            "kind": "student_teacher",
            "n_in": n,
            "n_out": n,
            "rank": s["rank"],
            "snr": s["snr"],
            "noise_std": s["noise_std"],
            "n_train": s["n_train"],
            "teacher_profile": None,
            "whitened_inputs": True,
            "seed_key": "jax.random.split(PRNGKey(seed))[0]",
        },
        "network": {
            "widths": [n] * (d + 1),
            "init": "init_random (every layer's largest singular value = init_scale)",
            "init_scale": s["init_scale"],
            "seed_key": "jax.random.split(PRNGKey(seed))[1]",
        },
        "rules": list(RULES),
        "eta": s["eta"],
        "t_end": s["t_end"],
        "save_times": f"0 and {s['n_save']} (SGD) / {s['n_save_curvature']} (√NGD, √NGD-d) log-spaced times from "
        f"{s['t_min']:g} to t_end for the ODE runs; every {s['ngd_save_every']} steps for NGD/NGD-d"
        + (f"; {s['n_save_sgd_euler']} equally spaced times for SGD's Euler run" if s["sgd_method"] == "euler" else ""),
        "sgd_method": s["sgd_method"],
        "ode": {"solver": s["solver"], "rtol": s["rtol"], "atol": s["atol"], "max_steps": s["max_steps"]},
        "ngd_numerics": {
            "method": "euler",
            "dt": s["ngd_dt"],
            "clip": s["ngd_clip"],
            "clip_meaning": "each Euler step's parameter update eta*dt*direction is rescaled to norm <= clip "
            "(a parameter speed of at most clip/dt)",
            "lm_damping": s["lm_damping"],
        },
        "runs": runs,
    }
    return data, config


def describe(config) -> str:
    """The setup and numerics in words, for the report."""
    task, net, ode, ngd = config["task"], config["network"], config["ode"], config["ngd_numerics"]
    t_end = config["t_end"]
    sgd = config["runs"].get("sgd", {})
    if config.get("sgd_method") == "euler":
        sgd_txt = (
            f"SGD as explicit Euler steps of dt = {sgd.get('dt', float('nan')):.4g} (1.5/λ_max, λ_max the largest "
            "curvature at the solution; --quick), √NGD and √NGD-d as adaptive ODEs"
        )
    else:
        sgd_txt = "SGD, √NGD and √NGD-d as adaptive ODEs"
    return (
        f"Student–teacher task: N = {task['n_in']} inputs and outputs, rank-{task['rank']} teacher with all modes of "
        f"strength SNR × noise std = {task['snr'] * task['noise_std']:g}, P = {task['n_train']} exactly whitened "
        f"training samples, exact expected test loss. Student: depth {len(net['widths']) - 1}, width "
        f"{net['widths'][1]}, every layer random with largest singular value {net['init_scale']:g}; all rules start "
        f"from the same weights with η = {config['eta']:g}. Numerics: {sgd_txt} ({ode['solver']}, rtol {ode['rtol']:g}, "
        f"atol {ode['atol']:g}); NGD and NGD-d as the paper's section 4 says — Euler steps dt = {ngd['dt']:g} with "
        f"Levenberg–Marquardt damping {ngd['lm_damping']:g} and update clipping (every step's parameter change is "
        f"capped at norm {ngd['clip']:g}, i.e. a speed ≤ {ngd['clip'] / ngd['dt']:g}; NGD was clipped until "
        f"t ≈ {config['runs'].get('ngd', {}).get('clipped_until_t', float('nan')):.3g}). Run lengths: "
        + ", ".join(f"{rule_label(r)} {t_end[r]:g}" for r in RULES)
        + ". Mode components are u_kᵀ W v_k on the singular vectors of the training data's Σ_yx = Y Xᵀ/P. "
        "The early-stopping time is the time of minimum test loss."
    )


# ---------------------------------------------------------------------------------------
# measurements (from the data alone)
# ---------------------------------------------------------------------------------------


def _rank(config) -> int:
    return int(config["task"]["rank"])


def excess_test_loss(data, name: str) -> np.ndarray:
    """Test loss above the noise floor, ``½‖W − W̄*‖²``, over time."""
    return data[f"{name}__test_loss"] - float(data["noise_floor"])


def early_stopping(data, name: str) -> tuple[float, float]:
    """``(time, test loss)`` at the minimum of the recorded test loss (early stopping)."""
    k = int(np.argmin(data[f"{name}__test_loss"]))
    return float(data[f"{name}__t"][k]), float(data[f"{name}__test_loss"][k])


def near_best_interval(data, name: str, tol: float = 0.05) -> tuple[float, float]:
    """First and last recorded times at which the excess test loss is within ``tol`` (relative)
    of its minimum — how flat the test-loss valley around the early-stopping point is."""
    excess = excess_test_loss(data, name)
    t = data[f"{name}__t"][excess <= (1.0 + tol) * float(np.min(excess))]
    return float(t[0]), float(t[-1])


def half_times(data, name: str) -> np.ndarray:
    """Per data mode, the first time its component reaches half the data strength (∞ if never)."""
    frac = data[f"{name}__modes"] / data["data_strengths"]
    t = data[f"{name}__t"]
    return np.array([first_crossing(t, frac[:, k], 0.5) for k in range(frac.shape[1])])


def mode_separation(data, name: str, rank: int) -> float:
    """Time-scale separation of signal and noise: half time of the strongest noise mode over
    that of the weakest signal mode (1 = learned together)."""
    h = half_times(data, name)
    return float(h[rank] / h[rank - 1])


def claims(data, config) -> list[Claim]:
    rank = _rank(config)
    best = {r: float(np.min(excess_test_loss(data, r))) for r in RULES}
    stop = {r: early_stopping(data, r)[0] for r in RULES}
    overfit = float(data["overfit_test_loss"])
    final = {r: float(data[f"{r}__test_loss"][-1]) for r in RULES}
    sep = {r: mode_separation(data, r, rank) for r in RULES}
    floor = float(data["noise_floor"])
    best_txt = ", ".join(f"{rule_label(r)} {best[r]:.3f}" for r in RULES)
    stop_txt = ", ".join(f"{rule_label(r)} {stop[r]:.3g}" for r in RULES)
    valley = {r: near_best_interval(data, r) for r in ("sgd", "ngd", "sqrt-ngd")}
    stop_txt += (
        " (the excess test loss stays within 5% of its minimum from t = "
        + ", ".join(f"{valley[r][0]:.3g} to {valley[r][1]:.3g} for {rule_label(r)}" for r in valley)
        + ")"
    )
    excess = "Excess test loss = expected test loss − noise floor ½Nσ² = ½‖W − W̄*‖²"
    out = []
    for name in ("sqrt-ngd", "sqrt-ngd-d"):
        ratio = best[name] / best["sgd"]
        out.append(
            Claim(
                f"best-test-{name}-vs-sgd",
                f"{rule_label(name)} reaches a best (early-stopped) test loss comparable to SGD's (section 4, Fig. 3C).",
                ratio,
                "ratio within 1 ± 0.1",
                bool(np.isfinite(ratio) and abs(ratio - 1.0) <= 0.1),
                f"Ratio of best excess test losses {rule_label(name)}/SGD. {excess}; best values: {best_txt} "
                f"(noise floor {floor:.3g}).",
            )
        )
    for name, ref in (("sqrt-ngd", "ngd"), ("sqrt-ngd-d", "ngd-d")):
        out.append(
            at_most(
                f"best-test-{name}-below-{ref}",
                f"{rule_label(name)} generalizes better than {rule_label(ref)}: lower best test loss "
                "(section 4; contribution 4).",
                best[name] / best[ref],
                0.9,
                f"Ratio of best excess test losses {rule_label(name)}/{rule_label(ref)}; best values: {best_txt}.",
            )
        )
    ratio = stop["sqrt-ngd"] / stop["ngd"]
    out.append(
        Claim(
            "stop-time-sqrt-ngd-vs-ngd",
            "√NGD's early-stopping time is comparable to NGD's (section 4, Fig. 3C).",
            ratio,
            "ratio between 0.1 and 10",
            bool(np.isfinite(ratio) and 0.1 <= ratio <= 10.0),
            f"Ratio of the times of minimum test loss, √NGD/NGD, η = 1 for both; times: {stop_txt}. NGD's time "
            "depends on its update clipping (its steps were clipped until t ≈ "
            f"{config['runs'].get('ngd', {}).get('clipped_until_t', float('nan')):.3g}; a tighter clip delays it), and "
            "√NGD stops earlier than NGD when the ratio is below 1.",
        )
    )
    out.append(
        at_least(
            "stop-time-sgd-vs-sqrt-ngd",
            "SGD's early-stopping time is far longer than √NGD's (long plateaus; section 4, Fig. 3C).",
            stop["sgd"] / stop["sqrt-ngd"],
            10.0,
            f"Ratio of the times of minimum test loss, SGD/√NGD; times: {stop_txt}.",
        )
    )
    dev = {r: abs(final[r] - overfit) / overfit for r in RULES}
    worst = max(dev, key=dev.get)
    out.append(
        at_most(
            "same-overfitted-test-loss",
            "All rules end at the same overfitted test loss, that of the training data's least-squares map "
            "(section 4, Fig. 3C dashed line).",
            dev[worst],
            0.01,
            f"Max over rules of |L_test(t_end) − L_test(W*)| / L_test(W*), L_test(W*) = {overfit:.4g}; worst "
            f"{rule_label(worst)}; final test losses: "
            + ", ".join(f"{rule_label(r)} {final[r]:.4g} (t_end {float(data[f'{r}__t'][-1]):.3g})" for r in RULES)
            + ".",
        )
    )
    sep_txt = ", ".join(f"{rule_label(r)} {sep[r]:.3g}" for r in RULES)
    how = (
        f"Separation = t½(mode {rank + 1}) / t½(mode {rank}): the time at which the strongest noise mode's "
        "component reaches half its data strength over that of the weakest signal mode "
        f"(strengths {data['data_strengths'][rank]:.3g} and {data['data_strengths'][rank - 1]:.3g}); "
        f"values: {sep_txt}."
    )
    ngd_sep = max(sep["ngd"], sep["ngd-d"])
    out.append(
        at_most(
            "ngd-learns-signal-and-noise-together",
            "NGD (and NGD-d) learn the signal and the noise modes simultaneously (section 4, Fig. 3D; contribution 4).",
            ngd_sep,
            1.5,
            "Larger of NGD's and NGD-d's separation. " + how,
        )
    )
    sqrt_sep = min(sep["sqrt-ngd"], sep["sqrt-ngd-d"])
    out.append(
        at_least(
            "sqrt-ngd-separates-signal-from-noise",
            "√NGD (and √NGD-d) separate the time-scales of signal and noise modes (section 4, Fig. 3D; contribution 4).",
            sqrt_sep,
            2.0,
            "Smaller of √NGD's and √NGD-d's separation. " + how,
        )
    )
    return out


# ---------------------------------------------------------------------------------------
# figure
# ---------------------------------------------------------------------------------------


def _style(name: str) -> dict:
    return {"color": rule_color(name), "ls": "--" if name.endswith("-d") else "-", "lw": 1.8, "label": rule_label(name)}


def plot(data, config):
    rank = _rank(config)
    strengths = data["data_strengths"]
    n_modes = len(strengths)
    fig = Figure(figsize=(16, 9.5), layout="constrained")
    grid = fig.add_gridspec(2, 15, height_ratios=[1.15, 1.0])
    ax_a = fig.add_subplot(grid[0, 0:4])
    ax_b = fig.add_subplot(grid[0, 4:9])
    ax_c = fig.add_subplot(grid[0, 9:15])
    axes_d = [fig.add_subplot(grid[1, 3 * i : 3 * i + 3]) for i in range(len(RULES))]

    k = np.arange(1, n_modes + 1)
    colors = ["#333333" if i < rank else "#bbbbbb" for i in range(n_modes)]
    ax_a.bar(k, strengths, color=colors, edgecolor="k", lw=0.5)
    ax_a.axhline(float(data["teacher_strengths"][0]), color="k", ls=":", lw=1.0, label="teacher modes")
    ax_a.set_yscale("log")
    ax_a.set_xlabel("mode k of $\\Sigma_{yx} = YX^T/P$")
    ax_a.set_ylabel("mode strength $s_k$")
    ax_a.set_title("A  data mode strengths", loc="left")
    ax_a.bar([0], [np.nan], color="#333333", label=f"signal (k ≤ {rank})")
    ax_a.bar([0], [np.nan], color="#bbbbbb", label="noise")
    ax_a.set_xlim(0.3, n_modes + 0.7)
    ax_a.set_xticks(k[:: max(1, n_modes // 8)])
    ax_a.legend(fontsize=9, loc="upper right")

    t_max = max(float(data[f"{r}__t"][-1]) for r in RULES)
    for name in RULES:
        t = data[f"{name}__t"]
        m = t > 0
        ax_b.plot(t[m], data[f"{name}__train_loss"][m], **_style(name))
        ax_c.plot(t[m], data[f"{name}__test_loss"][m], **_style(name))
        ts, ls = early_stopping(data, name)
        ax_c.plot([ts], [ls], marker="o", ms=7, mfc=rule_color(name), mec="k", ls="none", zorder=5)
    ax_b.set_yscale("log")
    ax_b.set_ylabel("training loss")
    ax_b.set_title("B  training loss", loc="left")
    ax_c.axhline(
        float(data["overfit_test_loss"]), color="k", ls="--", lw=1.2, label="overfitted (W* of the training data)"
    )
    ax_c.axhline(float(data["noise_floor"]), color="0.5", ls=":", lw=1.2, label="noise floor (teacher)")
    ax_c.plot([], [], marker="o", mfc="w", mec="k", ls="none", label="early stopping (min)")
    floor, overfit = float(data["noise_floor"]), float(data["overfit_test_loss"])
    top = overfit + 0.6 * (overfit - floor)
    ax_c.set_ylim(floor - 0.08 * (top - floor), top)
    start = float(data[f"{RULES[0]}__test_loss"][0])
    ax_c.text(
        0.015,
        0.985,
        f"initial test loss {start:.4g} (off scale)",
        transform=ax_c.transAxes,
        ha="left",
        va="top",
        fontsize=8.5,
        color="0.3",
        zorder=6,
        bbox=dict(fc="white", ec="none", alpha=0.85, pad=1.5),
    )
    ax_c.set_ylabel("test loss (expected, exact)")
    ax_c.set_title("C  test loss", loc="left")
    ax_c.legend(fontsize=8.5, loc="lower left", ncol=2, framealpha=0.9)
    ax_b.legend(fontsize=9, loc="lower left")
    for ax in (ax_b, ax_c):
        ax.set_xscale("log")
        ax.set_xlim(1e-2, t_max)
        ax.set_xlabel("time t (η = 1)")
        ax.grid(alpha=0.25, which="both")

    for ax, name in zip(axes_d, RULES):
        t = data[f"{name}__t"]
        m = t > 0
        frac = data[f"{name}__modes"][m] / strengths
        for j in range(n_modes - 1, -1, -1):
            signal = j < rank
            ax.plot(
                t[m],
                frac[:, j],
                color=rule_color(name) if signal else "0.6",
                lw=1.8 if signal else 0.9,
                alpha=1.0 if signal else 0.8,
            )
        ax.axvline(early_stopping(data, name)[0], color="k", ls=":", lw=1.0)
        ax.axhline(1.0, color="k", lw=0.5)
        ax.set_xscale("log")
        ax.set_xlim(1e-2, t_max)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_ylim(-0.25, 1.35)
        ax.set_title(f"D  {rule_label(name)}" if name == RULES[0] else rule_label(name), loc="left")
        ax.set_xlabel("time t")
        ax.grid(alpha=0.25)
        if name != RULES[0]:
            ax.tick_params(labelleft=False)
    axes_d[0].set_ylabel("mode component $u_k^T W v_k\\,/\\,s_k$")
    axes_d[0].plot([], [], color="k", lw=1.8, label="signal modes (rule colour)")
    axes_d[0].plot([], [], color="0.6", lw=0.9, label="noise modes")
    axes_d[0].plot([], [], color="k", ls=":", lw=1.0, label="early stopping")
    axes_d[0].legend(fontsize=8, loc="upper left")
    task = config["task"]
    ngd = config["ngd_numerics"]
    fig.suptitle(
        f"Fig. 3 — student–teacher: N = {task['n_in']}, depth {len(config['network']['widths']) - 1}, rank-{rank} teacher, "
        f"SNR {task['snr']:g}, P = {task['n_train']}, init scale {config['network']['init_scale']:g}; "
        f"NGD/NGD-d: Euler dt = {ngd['dt']:g}, clip {ngd['clip']:g}, LM {ngd['lm_damping']:g}",
        fontsize=12,
    )
    return fig
