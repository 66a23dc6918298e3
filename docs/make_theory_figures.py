"""Make the figures of docs/theory.md with curvdyn.theory (and curvdyn.simulate).

    python docs/make_theory_figures.py            # writes docs/figures/theory_*.png

Every number drawn comes from the library; this script only arranges the plots.
"""

from __future__ import annotations

import math
import pathlib

import matplotlib

matplotlib.use("Agg")
import jax
import matplotlib.pyplot as plt
import numpy as np

import curvdyn as cd
from curvdyn import io
from curvdyn import theory as th

OUT = pathlib.Path(__file__).resolve().parent / "figures"
INF = math.inf
plt.rcParams.update({"font.size": 10, "axes.titlesize": 10, "legend.fontsize": 8, "figure.dpi": 110})


def save(fig, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    io.save_figure(fig, OUT / name, bbox_inches="tight")  # atomic: a killed run keeps the old figure
    plt.close(fig)
    print("wrote", OUT / name)


# ---------------------------------------------------------------------------------------
# 1. one singular mode, d = 2: paths and speeds of five rules (paper Fig. 1)
# ---------------------------------------------------------------------------------------


def fig_mode_paths() -> None:
    target = 1.0
    rules = [("sgd", "SGD"), ("ngd", "NGD"), ("sqrt-ngd", "sqrt-NGD"), ("ngd-d", "NGD-d"), ("sqrt-ngd-d", "sqrt-NGD-d")]
    conserved = {
        "sgd": r"$\sigma_1^2-\sigma_2^2$",
        "ngd": r"$\sigma_1^2-\sigma_2^2$",
        "sqrt-ngd": r"$\sigma_1^2-\sigma_2^2$",
        "ngd-d": r"$\sigma_1/\sigma_2$",
        "sqrt-ngd-d": r"$|\sigma_1|-|\sigma_2|$",
    }
    starts = np.array([[0.12, 0.05], [0.05, 0.3], [0.35, 0.1], [0.6, 0.35], [0.2, 0.8], [1.9, 0.25]])
    g = np.linspace(0.05, 2.0, 13)
    s1, s2 = np.meshgrid(g, g)
    grid = np.stack([s1.ravel(), s2.ravel()], axis=1)
    lim = np.linspace(0.0, 2.05, 200)
    c1, c2 = np.meshgrid(lim, lim)
    fig, axes = plt.subplots(1, 5, figsize=(17, 4.3), sharey=True)
    fig.subplots_adjust(left=0.05, right=0.9, wspace=0.08, top=0.8, bottom=0.14)
    for ax, (name, label) in zip(axes, rules):
        v = np.asarray(th.mode_velocity(name, grid, target))
        delta = np.abs(np.prod(grid, axis=1) - target)[:, None]
        vn = v / np.maximum(delta, 1e-12)  # displacement-normalized update (Fig. 1)
        speed = np.linalg.norm(vn, axis=1)
        ax.contour(c1, c2, c1 * c2 - target, levels=np.linspace(-0.9, 3.0, 14), colors="0.85", linewidths=0.7)
        ax.contour(c1, c2, c1 * c2 - target, levels=[0.0], colors="k", linewidths=1.2)
        q = ax.quiver(
            grid[:, 0],
            grid[:, 1],
            vn[:, 0] / speed,
            vn[:, 1] / speed,
            np.log10(speed),
            cmap="viridis",
            clim=(-1.3, 1.3),
            scale=16,
            width=0.007,
            pivot="mid",
        )
        traj = th.simulate_modes(
            name, starts, np.full(len(starts), target), 40.0, n_save=400, integrator=cd.ODE(rtol=1e-9, atol=1e-11)
        )
        for k in range(len(starts)):
            ax.plot(traj.sigmas[:, k, 0], traj.sigmas[:, k, 1], color="tab:red", lw=1.4)
            ax.plot(*starts[k], "o", color="tab:red", ms=3)
        ax.set_title(f"{label}\nconserves {conserved[name]}")
        ax.set_xlim(0, 2.05)
        ax.set_ylim(0, 2.05)
        ax.set_aspect("equal")
        ax.set_xlabel(r"$\sigma_1$ (layer 1)")
    axes[0].set_ylabel(r"$\sigma_2$ (layer 2)")
    cax = fig.add_axes([0.915, 0.2, 0.01, 0.55])
    cb = fig.colorbar(q, cax=cax)
    cb.set_label(r"$\log_{10}\,\|\dot\sigma\|/|\sigma_\Delta|$ (arrow colour)")
    fig.suptitle(
        r"One singular mode of a d = 2 network, target $\bar\sigma_*=1$.  Black: $\sigma_1\sigma_2=\bar\sigma_*$;"
        r" grey: level sets of $\bar\sigma$; arrows: direction of mode_velocity; red: paths from simulate_modes",
        y=0.97,
    )
    save(fig, "theory_mode_paths.png")


# ---------------------------------------------------------------------------------------
# 2. map dynamics of balanced weights: eq. (21) for several stiffnesses (paper Fig. 2)
# ---------------------------------------------------------------------------------------


def fig_map_dynamics() -> None:
    ps = [
        (0.0, "p = 0 (NGD, any d)"),
        (0.5, "p = 1/2 (sqrt-NGD, d = 2)"),
        (0.75, "p = 3/4 (sqrt-NGD, d = 4)"),
        (1.0, "p = 1 (SGD, d = 2)"),
        (1.5, "p = 3/2 (SGD, d = 4)"),
    ]
    targets = [1.0, 2.0, 4.0]
    colors = ["tab:blue", "tab:orange", "tab:green"]
    t = np.logspace(-2, 2.5, 600)
    fig, axes = plt.subplots(2, len(ps), figsize=(16, 5.6), sharex=True)
    for col, (p, title) in enumerate(ps):
        for tgt, c in zip(targets, colors):
            init = 0.0 if p < 1 else tgt / 100
            sb = th.map_solution(t, p, tgt, init=init)
            th_half = th.half_max_time(p, tgt, init=init)
            axes[0, col].plot(t, sb, color=c, label=rf"$\bar\sigma_*={tgt:g}$")
            axes[0, col].axhline(tgt, color=c, ls="--", lw=0.8)
            axes[0, col].plot(th_half, tgt / 2, "o", color="k", ms=4)
            axes[1, col].semilogy(t, 0.5 * (sb - tgt) ** 2, color=c)
        axes[0, col].set_title(title)
        axes[1, col].set_xlabel(r"time $t$ ($\bar\eta = 1$, log scale)")
        axes[1, col].set_ylim(1e-6, 20)
        axes[0, col].set_xscale("log")
    axes[0, 0].set_ylabel(r"map mode $\bar\sigma(t)$")
    axes[1, 0].set_ylabel(r"loss $\frac{1}{2}(\bar\sigma-\bar\sigma_*)^2$")
    axes[0, 0].legend(loc="lower right")
    fig.suptitle(
        r"map_solution: $\dot{\bar\sigma} = -\bar\eta(\bar\sigma-\bar\sigma_*)\bar\sigma^p$ (eq. 21); "
        r"start 0 for p < 1, $\bar\sigma_*/100$ for p ≥ 1; dots: half_max_time",
        y=1.0,
    )
    fig.tight_layout()
    save(fig, "theory_map_dynamics.png")


# ---------------------------------------------------------------------------------------
# 3. stiffness and effective depth
# ---------------------------------------------------------------------------------------


def fig_stiffness() -> None:
    ds = np.arange(1, 21)
    qs = [(1.0, "q = 1 (NGD)"), (1.5, "q = 1.5"), (2.0, "q = 2 (sqrt-NGD)"), (3.0, "q = 3"), (INF, "q = ∞ (SGD)")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for q, label in qs:
        axes[0].plot(ds, [th.stiffness(d, q) for d in ds], "o-", ms=3, label=label)
        axes[1].plot(ds, [th.effective_depth(d, q) for d in ds], "o-", ms=3, label=label)
    axes[0].set_xlabel("network depth d")
    axes[0].set_ylabel("stiffness p = 2(d−1)(q−1)/(dq)")
    axes[0].set_title("stiffness(d, q) (eq. 21)")
    axes[1].set_xlabel("network depth d")
    axes[1].set_ylabel(r"$d_{eff} = dq/(d+q-1)$")
    axes[1].set_title("effective_depth(d, q) (eq. 22): bounded by q")
    axes[1].legend()
    fig.tight_layout()
    save(fig, "theory_stiffness.png")


# ---------------------------------------------------------------------------------------
# 4. scaling laws (paper Fig. S.I.1)
# ---------------------------------------------------------------------------------------


def fig_scaling() -> None:
    d, widths = 3, (6, 6, 6, 6)
    target = np.linalg.qr(np.random.default_rng(0).standard_normal((6, 6)))[0]
    task = cd.Task(target)
    alphas = np.logspace(-1.0, 0.3, 9)
    rules = [
        ("sgd", "SGD", "tab:blue"),
        ("sqrt-ngd", "sqrt-NGD", "tab:green"),
        ("ngd", "NGD", "tab:red"),
        ("sqrt-ngd-d", "sqrt-NGD-d", "tab:olive"),
        ("ngd-d", "NGD-d", "tab:purple"),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    with jax.disable_jit():  # a handful of evaluations per rule: eager is faster than compiling
        bal = cd.init_balanced(jax.random.PRNGKey(0), widths, 1.0)
        for name, label, c in rules:
            rule = cd.get_rule(name)
            pred = np.array([th.balanced_update_rates(rule, d, a) for a in alphas])
            e_w, e_l = th.scaling_exponents(d, rule.q)
            s_b, r_b = th.scaling_curve(bal, task, rule, alphas)
            xaviers = [cd.init_xavier(jax.random.PRNGKey(k), widths, 1.0) for k in range(5)]
            runs = [th.scaling_curve(w, task, rule, alphas) for w in xaviers]
            s_x = np.array([r[0] for r in runs])
            r_x = np.array([r[1] for r in runs])
            ls = ":" if name.endswith("-d") else "-"
            axes[0].loglog(alphas, pred[:, 0], ls, color=c, lw=1, label=f"{label}: slope {e_w:g}")
            axes[0].loglog(alphas, s_b, "o", color=c, ms=4, mfc="none")
            gm = np.exp(np.log(s_x).mean(0))
            axes[0].errorbar(alphas, gm, yerr=[gm - s_x.min(0), s_x.max(0) - gm], fmt="x", color=c, ms=4, lw=0.8)
            axes[1].loglog(alphas, pred[:, 1], ls, color=c, lw=1, label=f"{label}: slope {e_l:g}")
            axes[1].loglog(alphas, r_b, "o", color=c, ms=4, mfc="none")
            gm = np.exp(np.log(r_x).mean(0))
            axes[1].errorbar(alphas, gm, yerr=[gm - r_x.min(0), r_x.max(0) - gm], fmt="x", color=c, ms=4, lw=0.8)
    axes[0].set_ylabel(r"$\|\dot w\|/\sqrt{L}$")
    axes[1].set_ylabel(r"$|\dot L/L|$")
    for ax in axes:
        ax.set_xlabel(r"weight scale $\alpha$")
        ax.legend(loc="best")
    axes[0].set_title("update size (S.I.16)")
    axes[1].set_title("loss rate (S.I.17)")
    fig.suptitle(
        "Scaling laws, d = 3, width 6: lines balanced_update_rates, circles measured on balanced weights, "
        "crosses on Xavier·α weights (geometric mean, min–max of 5 draws)",
        y=1.01,
    )
    fig.tight_layout()
    save(fig, "theory_scaling.png")


# ---------------------------------------------------------------------------------------
# 5. the mode ODEs reproduce the full-matrix dynamics of aligned weights
# ---------------------------------------------------------------------------------------


def fig_mode_vs_full() -> None:
    rng = np.random.default_rng(2)
    d, widths = 3, (3, 4, 4, 3)
    strengths = np.array([3.0, 1.5, 0.5])
    u = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    v = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    target = (u * strengths) @ v.T
    task = cd.Task(target)
    vals = np.array([[0.3, -0.6, 0.2], [0.5, 0.4, 0.7], [0.2, -0.5, 0.9]])  # (d, modes)
    ws = cd.init_aligned(target, widths, vals)
    bases = th.aligned_bases(target, widths)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, name in zip(axes, ["sqrt-ngd", "ngd-d"]):
        rule = cd.get_rule(name)
        traj = cd.simulate(ws, task, rule, 4.0, n_save=41, integrator=cd.ODE(rtol=1e-10, atol=1e-12))
        modes = th.simulate_modes(rule, vals.T, strengths, 4.0, n_save=41, integrator=cd.ODE(rtol=1e-10, atol=1e-12))
        full = th.layer_mode_values(traj.weights, bases)
        for k, c in zip(range(3), ["tab:blue", "tab:orange", "tab:green"]):
            for i, ls in zip(range(d), ["-", "--", ":"]):
                ax.plot(
                    modes.t,
                    modes.sigmas[:, k, i],
                    ls,
                    color=c,
                    lw=1.2,
                    label=rf"mode {k + 1}, layer {i + 1}" if name == "sqrt-ngd" else None,
                )
                ax.plot(traj.t[::3], full[::3, k, i], "o", color=c, ms=3, mfc="none")
        err = np.max(np.abs(full - modes.sigmas))
        ax.set_title(f"{rule.label}: max |full − theory| = {err:.1e}")
        ax.set_xlabel("time t")
    axes[0].set_ylabel(r"per-layer mode value $\sigma_{i,k}(t)$")
    axes[0].legend(ncol=3, fontsize=7, loc="lower right")
    fig.suptitle(
        "Lines: simulate_modes; circles: full-matrix curvdyn.simulate read out by layer_mode_values "
        "(aligned weights, d = 3)",
        y=1.01,
    )
    fig.tight_layout()
    save(fig, "theory_mode_vs_full.png")


# ---------------------------------------------------------------------------------------
# 6. projecting a learning trajectory on the data's modes (paper Fig. 3D)
# ---------------------------------------------------------------------------------------


def fig_projection() -> None:
    n, d = 8, 3
    data = cd.student_teacher(jax.random.PRNGKey(0), n, rank=3, snr=6.0, teacher_profile=[1.6, 1.0, 0.6])
    task = data.train_task
    _, strengths, _ = th.correlation_modes(task)
    ws = cd.init_random(jax.random.PRNGKey(1), (n,) * (d + 1), scale=0.05)
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    axes[0].bar(np.arange(1, n + 1), strengths, color=["tab:red"] * 3 + ["0.6"] * (n - 3))
    axes[0].set_xlabel("mode k of the data correlation $YX^T/P$")
    axes[0].set_ylabel("strength $s_k$")
    axes[0].set_title("correlation_modes(task): 3 signal + 5 noise modes")
    for ax, name, t_end in zip(axes[1:], ["sgd", "sqrt-ngd"], [60.0, 6.0]):
        traj = cd.simulate(ws, task, cd.get_rule(name), t_end, n_save=301, integrator=cd.ODE(rtol=1e-7, atol=1e-9))
        comp = th.project_modes(traj.map, task)
        for k in range(n):
            ax.plot(traj.t, comp[:, k], color="tab:red" if k < 3 else "0.5", lw=1.3 if k < 3 else 0.9)
            ax.axhline(strengths[k], color="tab:red" if k < 3 else "0.5", ls=":", lw=0.6)
        ax.set_xlabel("time t")
        ax.set_ylabel(r"$u_k^T W(t)\,\Sigma\, v_k$")
        ax.set_title(f"project_modes(traj.map, task): {cd.get_rule(name).label}")
    fig.suptitle(
        "Student–teacher data (n = 8, P = 8), d = 3 student from small random weights; dotted: data strengths", y=1.02
    )
    fig.tight_layout()
    save(fig, "theory_projection.png")


if __name__ == "__main__":
    fig_mode_paths()
    fig_map_dynamics()
    fig_stiffness()
    fig_scaling()
    fig_mode_vs_full()
    fig_projection()
