"""Exact curvature at scale on the CPU: every exact method, q = 1 and 2, next to one gradient.

    python benchmarks/curvature.py [--out benchmarks/results/curvature.json] [--quick]

Sections (all float64, weights Xavier-normal α = 1 unless said, a Gaussian target, Σ = I):

* ``square``: d = 4, N ∈ {8, 16, 32, 48}; ngd (q = 1) and sqrt-ngd (q = 2) by ``dense`` (the
  explicit H₊; up to N = 32), ``mapspace`` and ``auto``, plus the block rules (ngd-d,
  sqrt-ngd-d) by ``kronecker`` (= auto) and ``dense`` blocks, plus balanced weights (distinct
  singular values) by ``balanced``, ``auto`` and ``mapspace``, plus damped-ngd by
  ``mapspace`` and matrix-free ``cg``;
* ``wide``: 16 → W → W → W → 16, W ∈ {64, 256, 1024} (P up to 2.1 M; the dense H₊ does not fit);
* ``d2``: d = 2, N ∈ {64, 256, 512}, Σ = I: ``kronsum`` (= auto), ``balanced`` and, at N = 64,
  the dense map-space method (a 4096² eigendecomposition);
* ``krylov``: the matrix-free path (``method="krylov"``) against the eigh (map-space) path,
  d = 4, N ∈ {16, 32, 48, 64, 96, 128} (eigh up to N = 64), Xavier and spread weights, q = 1, 2, 3,
  and d = 8, N ∈ {16, 32} Xavier: time, CG iterations and poles, the error estimate, the error
  against eigh and (q = 1) against an extended-precision solve, the compiled program's memory;
* ``simulate``: the paper's Fig. 3 network (student–teacher, N = 16, d = 4, initial largest
  singular value 0.05): Euler steps per second and the wall time of a fixed ODE run for
  sqrt-ngd, ngd, sgd and sqrt-ngd-d, one seed, 16 seeds batched, and 16 separate runs,
  next to the same loop with the dense full H₊.

Every time is the median over repeats of calls interleaved in one loop (gradient and
directions side by side), compile time excluded (ahead-of-time compilation, reported in the
JSON). Relative errors are ``‖d − d_ref‖ / ‖d_ref‖`` over all layers, against the dense full
H₊ where it runs (the ``ref`` column says what the reference is otherwise).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see benchmarks/README.md

import argparse
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import _timing as T
import curvdyn as cd
import curvdyn.curvature as cv
import reference  # the independent reference of the tests (extended-precision NGD)
from curvdyn.network import gradient
from curvdyn.rules import direction_unchecked

jax.config.update("jax_enable_x64", True)  # curvdyn's exact paths in float64 (importing curvdyn does not)

RULES_Q = {1: ("ngd", "ngd-d"), 2: ("sqrt-ngd", "sqrt-ngd-d")}


def spread_net(widths, seed=0, lo=0.5, hi=1.5):
    """Haar-random layers with singular values uniform in [lo, hi]: random but well conditioned
    (cond(K) ~ 10–100), so that differences between exact methods are the methods' own."""
    rng = np.random.default_rng(seed)
    ws = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        k = min(n_in, n_out)
        u = np.linalg.qr(rng.standard_normal((n_out, k)))[0]
        v = np.linalg.qr(rng.standard_normal((n_in, k)))[0]
        ws.append(jnp.asarray((u * rng.uniform(lo, hi, k)) @ v.T))
    target = rng.standard_normal((widths[-1], widths[0]))
    return tuple(ws), cd.Task(target)


def xavier_net(widths, seed=0):
    """Xavier-normal layers (α = 1): Gaussian, so cond(K) grows fast with N (~1e5 at N = 8,
    ~1e7 at N = 16 for d = 4)."""
    ws = cd.init_xavier(jax.random.PRNGKey(seed), widths, 1.0)
    target = np.random.default_rng(seed + 100).standard_normal((widths[-1], widths[0]))
    return ws, cd.Task(target)


def balanced_net(widths, seed=0):
    """Balanced layers ``w_i = U_i D U_{i−1}ᵀ`` with distinct singular values D in [0.5, 1.5]."""
    r = min(widths)
    vals = np.linspace(0.5, 1.5, r)  # distinct singular values: a generic balanced network
    ws = cd.init_balanced(jax.random.PRNGKey(seed), widths, vals)
    target = np.random.default_rng(seed + 100).standard_normal((widths[-1], widths[0]))
    return ws, cd.Task(target)


class Bench:
    def __init__(self, log: T.JsonLog):
        self.log = log

    def measure(self, section, label, ws, task, entries, repeats, *, ref_name=None, extra=None, once=(), budget_s=12.0):
        """Time the gradient and each ``(name, rule, method)`` entry side by side.

        ``ref_name`` names the entry whose output is the reference for the relative errors.
        Entries named in ``once`` (expensive: a dense eigendecomposition of thousands of rows)
        are timed by their single first call after ahead-of-time compilation; the others by the
        median of interleaved calls (the first call not counted): ``repeats`` of them, fewer
        (at least 3) when one round would take more than ``budget_s / repeats``.
        """
        calls, compile_s, outs, meta, first = {}, {}, {}, {}, {}
        once = tuple(k for k in once if k in {e[0] for e in entries})
        call, compile_s["gradient"] = T.compiled(gradient, ws, task)
        calls["gradient"] = call
        for name, rule, method in entries:
            resolved = rule.resolve_method(cd.widths_of(ws), task.identity_cov, method)
            call, compile_s[name] = T.compiled(direction_unchecked, ws, task, static=dict(rule=rule, method=resolved))
            t0 = time.perf_counter()
            outs[name] = jax.block_until_ready(call())
            first[name] = time.perf_counter() - t0
            if name not in once:
                calls[name] = call
            meta[name] = {"rule": rule.name, "q": rule.q, "method": method, "path": rule.method_at(ws, task, method)}
        round_s = sum(first.get(k, 0.0) for k in calls)
        repeats = max(3, min(repeats, int(budget_s / max(round_s, 1e-9))))
        t = T.time_interleaved(calls, repeats)
        for name in once:
            t[name] = {"median": first[name], "min": first[name], "n": 1}
        g = t["gradient"]["median"]
        rows = []
        for name, _, _ in entries:
            err = None
            if ref_name is not None and name != ref_name:
                err = T.rel_err(outs[name], outs[ref_name])
            row = {
                "section": section,
                "case": label,
                "name": name,
                **meta[name],
                "P": cd.n_params(ws),
                "widths": list(cd.widths_of(ws)),
                "time_s": t[name]["median"],
                "time_min_s": t[name]["min"],
                "first_call_s": first[name],
                "gradient_s": g,
                "ratio_to_gradient": t[name]["median"] / g,
                "rel_err": err,
                "ref": ref_name if err is not None else None,
                "repeats": t[name]["n"],
                "compile_s": compile_s[name],
                **(extra or {}),
            }
            self.log.add(row)
            rows.append(row)
            print(
                f"  [{section}] {label:>22s} {name:>22s} ({row['path']}): {T.fmt_s(row['time_s']):>9s} "
                f"= {row['ratio_to_gradient']:8.1f}× gradient ({T.fmt_s(g)}), rel err {T.fmt_e(err)}"
                + (f" vs {ref_name}" if err is not None else ""),
                flush=True,
            )
        return rows, outs


def section_square(b: Bench, sizes, dense_max, quick):
    rows = []
    for n in sizes:
        widths = (n,) * 5
        ws, task = spread_net(widths)
        cond = cv.condition_number(ws, task)
        for _q, (full, block) in RULES_Q.items():
            rule, brule = cd.get_rule(full), cd.get_rule(block)
            entries = []
            if n <= dense_max:
                entries.append((f"{full} dense", rule, "dense"))
            entries += [(f"{full} mapspace", rule, "mapspace"), (f"{full} auto", rule, "auto")]
            ref = f"{full} dense" if n <= dense_max else f"{full} mapspace"
            once = (f"{full} dense",) if n >= 32 else ()
            rows += b.measure(
                "square",
                f"N={n} d=4",
                ws,
                task,
                entries,
                3 if quick else 7,
                ref_name=ref,
                once=once,
                extra={"N": n, "K_cond": cond},
            )[0]
            bentries = [(f"{block} kronecker", brule, "kronecker"), (f"{block} auto", brule, "auto")]
            if n <= 32:
                bentries.insert(0, (f"{block} dense", brule, "dense"))
            rows += b.measure(
                "square",
                f"N={n} d=4",
                ws,
                task,
                bentries,
                3 if quick else 7,
                ref_name=f"{block} dense" if n <= 32 else None,
                extra={"N": n},
            )[0]
        # balanced weights (distinct singular values): the shared-basis path
        wsb, taskb = balanced_net(widths)
        for _q, (full, _) in RULES_Q.items():
            rule = cd.get_rule(full)
            entries = [
                (f"{full} mapspace", rule, "mapspace"),
                (f"{full} balanced", rule, "balanced"),
                (f"{full} auto", rule, "auto"),
            ]
            if n <= 16:
                entries.insert(0, (f"{full} dense", rule, "dense"))
            once = (f"{full} mapspace",) if n >= 32 else ()
            rows += b.measure(
                "square-balanced",
                f"N={n} d=4 balanced",
                wsb,
                taskb,
                entries,
                3 if quick else 7,
                ref_name=f"{full} dense" if n <= 16 else f"{full} mapspace",
                once=once,
                extra={"N": n},
            )[0]
    return rows


def section_gaussian(b: Bench, sizes, quick):
    """Ill-conditioned Gaussian (Xavier) layers: dense vs map-space, and both against an
    extended-precision NGD reference."""
    rows = []
    for n in sizes:
        ws, task = xavier_net((n,) * 5)
        cond = cv.condition_number(ws, task)
        ext = reference.ngd_extended(ws, task.target)
        for q, (full, _) in RULES_Q.items():
            rule = cd.get_rule(full)
            entries = [
                (f"{full} dense", rule, "dense"),
                (f"{full} mapspace", rule, "mapspace"),
                (f"{full} auto", rule, "auto"),
            ]
            r, outs = b.measure(
                "square-gaussian",
                f"N={n} d=4 Gaussian",
                ws,
                task,
                entries,
                3 if quick else 5,
                ref_name=f"{full} dense",
                extra={"N": n, "K_cond": cond},
            )
            if q == 1:
                for row in r:
                    row["rel_err_extended_precision"] = T.rel_err(outs[row["name"]], ext)
                    print(
                        f"      {row['name']}: error vs extended-precision NGD {row['rel_err_extended_precision']:.1e}"
                        f" (cond(K) = {cond:.1e})",
                        flush=True,
                    )
                b.log.flush()
            rows += r
    return rows


def section_cg(b: Bench, sizes, quick):
    """Damped NGD: dense eigendecomposition of K versus matrix-free CG (iterations, bound)."""
    rows = []
    for n in sizes:
        ws, task = spread_net((n,) * 5)
        kmax = float(jnp.linalg.eigvalsh(cv.mapspace_kernel(ws, task))[-1])
        for eps_rel in (1e-1, 1e-3):
            eps = eps_rel * kmax
            rule = cd.get_rule("damped-ngd", eps=eps)
            entries = [("damped-ngd mapspace", rule, "mapspace"), ("damped-ngd cg", rule, "cg")]
            r, _ = b.measure(
                "cg",
                f"N={n} ε={eps_rel:g}·λmax",
                ws,
                task,
                entries,
                3 if quick else 5,
                ref_name="damped-ngd mapspace",
                extra={"N": n, "eps": eps, "eps_rel": eps_rel},
            )
            _, info = jax.jit(lambda w, t: cv.cg_direction(w, t, rule.spectral_function()))(ws, task)
            for row in r:
                if row["name"] == "damped-ngd cg":
                    row["cg_iterations"] = int(info.iterations)
                    row["cg_error_bound"] = float(info.error_bound)
                    print(
                        f"      cg: {int(info.iterations)} iterations, error bound {float(info.error_bound):.1e}",
                        flush=True,
                    )
            b.log.flush()
            rows += r
    return rows


def section_wide(b: Bench, widths_list, quick):
    rows = []
    for w in widths_list:
        ws, task = spread_net((16, w, w, w, 16))
        for _q, (full, block) in RULES_Q.items():
            rule, brule = cd.get_rule(full), cd.get_rule(block)
            entries = [
                (f"{full} mapspace", rule, "mapspace"),
                (f"{full} auto", rule, "auto"),
                (f"{block} auto", brule, "auto"),
            ]
            rows += b.measure(
                "wide", f"16→{w}→{w}→{w}→16", ws, task, entries, 5 if quick else 11, ref_name=None, extra={"W": w}
            )[0]
    return rows


def section_d2(b: Bench, sizes, quick):
    rows = []
    for n in sizes:
        ws, task = spread_net((n, n, n))
        for q, (full, _) in RULES_Q.items():
            rule = cd.get_rule(full)
            # the dense map-space reference (a (N²)² eigendecomposition: 35 s at N = 64 here)
            # runs once, for sqrt-ngd (q = 2) only
            with_map = n <= 64 and (q == 2 or n < 64)
            entries = [(f"{full} mapspace", rule, "mapspace")] if with_map else []
            entries += [
                (f"{full} kronsum", rule, "kronsum"),
                (f"{full} auto", rule, "auto"),
                (f"{full} balanced", rule, "balanced"),
            ]
            once = (f"{full} mapspace",) if n >= 64 else ()
            rows += b.measure(
                "d2",
                f"N={n} d=2 Σ=I",
                ws,
                task,
                entries,
                3 if quick else 7,
                ref_name=f"{full} mapspace" if with_map else f"{full} kronsum",
                once=once,
                extra={"N": n},
            )[0]
    return rows


# ---------------------------------------------------------------------------------------
# the matrix-free krylov path
# ---------------------------------------------------------------------------------------

KRYLOV_RULES = {
    1: lambda: cd.get_rule("ngd"),
    2: lambda: cd.get_rule("sqrt-ngd"),
    3: lambda: cd.get_rule("frac-ngd", q=3),
}


def _compiled_with_memory(fn, *args):
    """AOT-compile ``jit(fn)``; return ``(call, compile_s, bytes)`` with the executable's buffer
    sizes (temporaries + arguments + outputs, from XLA's memory analysis: the peak the program
    allocates)."""
    t0 = time.perf_counter()
    exe = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    mem = exe.memory_analysis()
    total = None
    if mem is not None:
        total = int(mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes)
    return (lambda: exe(*args)), compile_s, total


def section_krylov(b: Bench, sizes, eigh_max, depths, quick):
    """Krylov against the eigh (map-space) path: time, iterations, error against eigh and (q = 1)
    against extended precision, the error estimate, the compiled program's memory."""
    rows = []
    for depth in depths:
        for kind in ("xavier", "spread"):
            for n in sizes if depth == 4 else (16, 32):
                if depth == 8 and kind == "spread":
                    continue
                widths = (n,) * (depth + 1)
                ws, task = xavier_net(widths) if kind == "xavier" else spread_net(widths)
                run_eigh = n <= eigh_max
                ext = reference.ngd_extended(ws, task.target) if (run_eigh and depth == 4) else None
                for q, make in KRYLOV_RULES.items():
                    rule = make()
                    f = rule.spectral_function()
                    kcall, kcomp, kmem = _compiled_with_memory(lambda w, t, f=f: cv.krylov_direction(w, t, f), ws, task)
                    gcall, _ = T.compiled(gradient, ws, task)
                    t0 = time.perf_counter()
                    out, info = jax.block_until_ready(kcall())
                    first = time.perf_counter() - t0
                    reps = 1 if first > 4.0 else (3 if quick or first > 0.5 else 5)
                    t = T.time_interleaved({"krylov": kcall, "gradient": gcall}, reps)
                    row = {
                        "section": "krylov",
                        "case": f"N={n} d={depth} {kind}",
                        "N": n,
                        "depth": depth,
                        "weights": kind,
                        "q": q,
                        "rule": rule.name,
                        "krylov_s": t["krylov"]["median"],
                        "krylov_min_s": t["krylov"]["min"],
                        "gradient_s": t["gradient"]["median"],
                        "krylov_compile_s": kcomp,
                        "krylov_program_bytes": kmem,
                        "iterations": int(info.iterations),
                        "poles": int(info.poles),
                        "error_estimate": float(info.error_estimate),
                        "converged": bool(info.converged),
                        "certified": bool(info.certified),
                        "cutoff_certified": bool(info.cutoff_certified),
                        "lam_lo": float(info.lam_lo),
                        "lam_hi": float(info.lam_hi),
                    }
                    if run_eigh:
                        resolved = "mapspace"
                        ecall, _ecomp, emem = _compiled_with_memory(
                            lambda w, t, r=rule: direction_unchecked(w, t, r, resolved), ws, task
                        )
                        t0 = time.perf_counter()
                        eout = jax.block_until_ready(ecall())
                        efirst = time.perf_counter() - t0
                        if efirst < 1.0:
                            efirst = T.time_interleaved({"eigh": ecall}, 3)["eigh"]["median"]
                        row.update(
                            eigh_s=efirst,
                            eigh_program_bytes=emem,
                            speedup=efirst / row["krylov_s"],
                            rel_err_vs_eigh=T.rel_err(out, eout),
                        )
                        if q == 1 and ext is not None:
                            row["rel_err_vs_extended"] = T.rel_err(out, ext)
                            row["eigh_rel_err_vs_extended"] = T.rel_err(eout, ext)
                    b.log.add(row)
                    rows.append(row)
                    msg = (
                        f"  [krylov] {row['case']:>20s} q={q}: {T.fmt_s(row['krylov_s'])} ({row['iterations']} it, "
                        f"{row['poles']} poles, est {row['error_estimate']:.1e}, conv {row['converged']}, "
                        f"mem {(kmem or 0) / 2**20:.1f} MiB)"
                    )
                    if run_eigh:
                        msg += f"; eigh {T.fmt_s(row['eigh_s'])} = {row['speedup']:.0f}×, err vs eigh {row['rel_err_vs_eigh']:.1e}"
                    if "rel_err_vs_extended" in row:
                        msg += (
                            f"; vs extended: krylov {row['rel_err_vs_extended']:.1e}, "
                            f"eigh {row['eigh_rel_err_vs_extended']:.1e}"
                        )
                    print(msg, flush=True)
    return rows


def krylov_table(rows) -> str:
    body = []
    for r in rows:
        body.append(
            [
                r["case"],
                {1: "ngd", 2: "sqrt-ngd", 3: "q=3"}[r["q"]],
                T.fmt_s(r["krylov_s"]),
                T.fmt_s(r.get("eigh_s")),
                f"{r['speedup']:.0f}×" if "speedup" in r else "—",
                f"{r['iterations']} / {r['poles']}",
                f"{r['error_estimate']:.1e}" if r["converged"] else "not certified → eigh",
                T.fmt_e(r.get("rel_err_vs_eigh")),
                T.fmt_e(r.get("rel_err_vs_extended")),
                T.fmt_e(r.get("eigh_rel_err_vs_extended")),
                f"{r['krylov_program_bytes'] / 2**20:.1f}" if r.get("krylov_program_bytes") else "—",
                f"{r['eigh_program_bytes'] / 2**20:.0f}" if r.get("eigh_program_bytes") else "—",
            ]
        )
    return T.markdown_table(
        [
            "case",
            "rule",
            "krylov",
            "eigh",
            "eigh ÷ krylov",
            "CG it. / poles",
            "error estimate",
            "vs eigh",
            "vs ext. prec.",
            "eigh vs ext. prec.",
            "krylov MiB",
            "eigh MiB",
        ],
        body,
    )


# ---------------------------------------------------------------------------------------
# simulate throughput
# ---------------------------------------------------------------------------------------


def fig3_setup(n_seeds: int):
    st = cd.student_teacher(jax.random.PRNGKey(0), 16, rank=3, snr=10.0)
    task = st.train_task
    keys = jax.random.split(jax.random.PRNGKey(1), n_seeds)
    seeds = [cd.init_random(k, (16,) * 5, 0.05) for k in keys]
    batch = tuple(jnp.stack([s[i] for s in seeds]) for i in range(4))
    return task, seeds, batch


SIM_RULES = {
    # name: (rule, Euler options, Euler steps, ODE t_end). The paper's NGD numerics: LM damping
    # 1e-5 and update clipping (Euler). The ODE runs are short because NGD with small weights is
    # stiff (hundreds of adaptive steps per time unit) and each step costs 6 directions.
    "sqrt-ngd": (lambda: cd.get_rule("sqrt-ngd"), dict(eta=0.05), 30, 0.02),
    "ngd": (lambda: cd.get_rule("ngd", lm_damping=1e-5), dict(eta=0.05, clip=0.1), 30, 2e-4),
    "sgd": (lambda: cd.get_rule("sgd"), dict(eta=0.05), 2000, 20.0),
    "sqrt-ngd-d": (lambda: cd.get_rule("sqrt-ngd-d"), dict(eta=0.05), 300, 5.0),
}
ODE_INTEGRATOR = cd.ODE(rtol=1e-6, atol=1e-9, max_steps=20_000)
DENSE_EULER_STEPS = 3
DENSE_ODE_T_END = 0.01


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def section_simulate(b: Bench, quick):
    n_seeds = 16
    task, seeds, batch = fig3_setup(n_seeds)
    rows = []
    for name, (make, eopts, n_steps, t_end) in SIM_RULES.items():
        rule = make()
        if quick:
            n_steps = max(3, n_steps // 5)
        methods = ["auto"] + (["dense"] if name in ("sqrt-ngd", "ngd") else [])  # dense ODE: sqrt-ngd only
        for cm in methods:
            dense = cm == "dense"
            steps = DENSE_EULER_STEPS if dense else n_steps

            def euler(w, steps=steps, cm=cm):
                return cd.simulate(
                    w,
                    task,
                    rule,
                    eta=eopts["eta"],
                    integrator=cd.Euler(steps=steps, clip=eopts.get("clip")),
                    n_save=2,
                    method=cm,
                )

            def ode(w, t, cm=cm):
                return cd.simulate(w, task, rule, t, method=cm, integrator=ODE_INTEGRATOR, n_save=2)

            row = {
                "section": "simulate",
                "rule": name,
                "label": rule.label,
                "curvature_method": cm,
                "path": rule.method_at(seeds[0], task, cm),
                "n_seeds": n_seeds,
            }
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                _, c1 = _timed(lambda: euler(seeds[0]))  # compiles
                one, t_one = _timed(lambda: euler(seeds[0]))
                row.update(
                    euler_steps=steps,
                    euler_compile_plus_run_s=c1,
                    euler_one_seed_s=t_one,
                    euler_steps_per_s_one_seed=steps / t_one,
                    euler_status=one.status,
                )
                if not dense:
                    euler(batch)  # compiles the batched runner
                    _, t_b = _timed(lambda: euler(batch))
                    _, t_sep = _timed(lambda: [euler(s) for s in seeds])
                    row.update(
                        euler_batch16_s=t_b,
                        euler_separate16_s=t_sep,
                        euler_batch_speedup=t_sep / t_b,
                        euler_steps_per_s_batch16=steps * n_seeds / t_b,
                    )
                # one fixed ODE run (compiled first with a tiny t_end: same runner)
                t_ode = DENSE_ODE_T_END if dense else t_end
                if dense and name != "sqrt-ngd":
                    b.log.add(row)
                    rows.append(row)
                    print(
                        f"  [simulate] {name:>10s} {cm:>5s} ({row['path']}): Euler {row['euler_steps_per_s_one_seed']:.1f} steps/s",
                        flush=True,
                    )
                    continue
                ode(seeds[0], 1e-6)
                o1, t_o1 = _timed(lambda: ode(seeds[0], t_ode))
                row.update(
                    ode_t_end=t_ode,
                    ode_one_seed_s=t_o1,
                    ode_solver_steps=o1.config["solver_steps"],
                    ode_status=o1.status,
                )
                if dense:  # the same short run by the default method, for comparison
                    ode_auto = lambda w, t: cd.simulate(w, task, rule, t, integrator=ODE_INTEGRATOR, n_save=2)
                    ode_auto(seeds[0], 1e-6)
                    _oa, t_oa = _timed(lambda: ode_auto(seeds[0], t_ode))
                    row.update(ode_same_run_auto_s=t_oa, ode_dense_over_auto=t_o1 / t_oa)
                else:
                    ode(batch, 1e-6)
                    ob, t_ob = _timed(lambda: ode(batch, t_ode))
                    _, t_osep = _timed(lambda: [ode(s, t_ode) for s in seeds])
                    row.update(
                        ode_batch16_s=t_ob,
                        ode_separate16_s=t_osep,
                        ode_batch_speedup=t_osep / t_ob,
                        ode_batch_solver_steps=ob.config["solver_steps"],
                    )
            b.log.add(row)
            rows.append(row)
            msg = (
                f"  [simulate] {name:>10s} {cm:>5s} ({row['path']}): Euler {row['euler_steps_per_s_one_seed']:.0f} steps/s"
                + (
                    f", 16 batched {row['euler_steps_per_s_batch16']:.0f} steps/s, 16 separate ÷ batched "
                    f"{row['euler_batch_speedup']:.1f}×"
                    if "euler_batch16_s" in row
                    else ""
                )
                + f"; ODE(t={row['ode_t_end']:g}) {T.fmt_s(row['ode_one_seed_s'])} ({row['ode_solver_steps']} steps)"
                + (
                    f", 16 batched {T.fmt_s(row['ode_batch16_s'])} vs separate {T.fmt_s(row['ode_separate16_s'])} "
                    f"({row['ode_batch_speedup']:.1f}×)"
                    if "ode_batch16_s" in row
                    else ""
                )
                + (f", auto {T.fmt_s(row['ode_same_run_auto_s'])}" if "ode_same_run_auto_s" in row else "")
            )
            print(msg, flush=True)
    return rows


# ---------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------


def direction_table(rows) -> str:
    body = []
    for r in rows:
        body.append(
            [
                r["case"],
                r["name"],
                r["path"],
                T.fmt_s(r["time_s"]),
                T.fmt_s(r["gradient_s"]),
                f"{r['ratio_to_gradient']:.1f}×",
                T.fmt_e(r["rel_err"]),
                r["ref"] or "—",
                (f"{r['cg_iterations']} it, bound {r['cg_error_bound']:.0e}" if "cg_iterations" in r else ""),
            ]
        )
    return T.markdown_table(
        ["case", "rule & method", "path", "direction", "gradient", "÷ gradient", "rel. err", "ref", "note"], body
    )


def simulate_table(rows) -> str:
    body = []
    for r in rows:
        body.append(
            [
                r["rule"],
                r["curvature_method"],
                r["path"],
                f"{r['euler_steps_per_s_one_seed']:.3g}",
                f"{r['euler_steps_per_s_batch16']:.0f}" if "euler_steps_per_s_batch16" in r else "—",
                f"{r['euler_batch_speedup']:.1f}×" if "euler_batch_speedup" in r else "—",
                (
                    f"t = {r['ode_t_end']:g}: {T.fmt_s(r['ode_one_seed_s'])} ({r['ode_solver_steps']} steps)"
                    if "ode_one_seed_s" in r
                    else "—"
                ),
                T.fmt_s(r["ode_batch16_s"]) if "ode_batch16_s" in r else "—",
                T.fmt_s(r["ode_separate16_s"]) if "ode_separate16_s" in r else "—",
                f"{r['ode_batch_speedup']:.1f}×"
                if "ode_batch_speedup" in r
                else (f"dense ÷ auto {r['ode_dense_over_auto']:.0f}×" if "ode_dense_over_auto" in r else "—"),
            ]
        )
    return T.markdown_table(
        [
            "rule",
            "curvature",
            "path",
            "Euler steps/s, 1 seed",
            "Euler steps/s, 16 batched (all seeds)",
            "Euler: 16 separate ÷ 16 batched",
            "ODE run, 1 seed",
            "ODE, 16 batched",
            "ODE, 16 separate",
            "ODE: separate ÷ batched",
        ],
        body,
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "curvature.json"))
    ap.add_argument("--quick", action="store_true", help="small sizes only (a smoke test)")
    ap.add_argument(
        "--sections", default="square,gaussian,cg,wide,d2,simulate", help="also: krylov (~22 min, see README)"
    )
    ap.add_argument("--krylov-sizes", default="16,32,48,64,96,128", help="N of the krylov section (d = 4)")
    ap.add_argument("--krylov-eigh-max", type=int, default=64, help="largest N of the krylov section's eigh runs")
    ap.add_argument("--krylov-depths", default="4,8", help="depths of the krylov section (d = 8: N = 16, 32)")
    args = ap.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    log = T.JsonLog(args.out, {"benchmark": "curvature", "machine": T.machine_info(), "quick": args.quick})
    b = Bench(log)
    sections = args.sections.split(",")
    t0 = time.perf_counter()
    out = {}
    if "square" in sections:
        print("square d = 4", flush=True)
        out["square"] = section_square(
            b, (8, 16) if args.quick else (8, 16, 32, 48), 16 if args.quick else 32, args.quick
        )
    if "gaussian" in sections:
        print("square d = 4, Gaussian (ill-conditioned) layers", flush=True)
        out["gaussian"] = section_gaussian(b, (8,) if args.quick else (8, 16), args.quick)
    if "cg" in sections:
        print("damped NGD: eigendecomposition vs CG", flush=True)
        out["cg"] = section_cg(b, (16,) if args.quick else (32, 48), args.quick)
    if "wide" in sections:
        print("wide 16 → W → W → W → 16", flush=True)
        out["wide"] = section_wide(b, (64, 256) if args.quick else (64, 256, 1024), args.quick)
    if "d2" in sections:
        print("d = 2, Σ = I", flush=True)
        out["d2"] = section_d2(b, (32, 64) if args.quick else (64, 256, 512), args.quick)
    if "simulate" in sections:
        print("simulate: fig3 network (N = 16, d = 4)", flush=True)
        out["simulate"] = section_simulate(b, args.quick)
    if "krylov" in sections:
        print("matrix-free krylov vs eigh (map space)", flush=True)
        sizes = tuple(int(x) for x in args.krylov_sizes.split(","))
        depths = tuple(int(x) for x in args.krylov_depths.split(","))
        out["krylov"] = section_krylov(
            b, (16, 32) if args.quick else sizes, args.krylov_eigh_max, (4,) if args.quick else depths, args.quick
        )
    tables = {}
    for key, rows in out.items():
        if key == "krylov":
            tables[key] = krylov_table(rows)
            print(f"\n## {key}\n\n{tables[key]}", flush=True)
            continue
        tables[key] = simulate_table(rows) if key == "simulate" else direction_table(rows)
        print(f"\n## {key}\n\n{tables[key]}", flush=True)
    log.set("tables_markdown", tables)
    log.set("total_wall_s", time.perf_counter() - t0)
    print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s; JSON: {args.out}")


if __name__ == "__main__":
    main()
