"""Batches of seeds against separate runs: which batch strategy is never slower, per rule and integrator.

    python benchmarks/batch.py [--out benchmarks/results/batch.json] [--seeds 8] [--repeats 3] [--quick]

The paper's Fig. 3 network (student–teacher, N = 16, d = 4, initial largest singular value
0.05, one seed per member), for sgd, ngd (LM damping 1e-5), sqrt-ngd and sqrt-ngd-d, with Euler
steps and with the adaptive ODE (Tsit5, rtol 1e-6, atol 1e-9; a short t_end for the stiff
NGD family, as in ``curvature.py``). Side by side in one loop (each repeat calls every variant
once, in turn; medians over repeats):

* ``separate``: B ``simulate`` calls of one member each (compiled once, before timing);
* ``vmap``: one ``simulate`` call with a leading batch axis of B, ``batch="vmap"``;
* ``map``: the same with ``batch="map"``;
* ``auto``: what ``batch="auto"`` picks (one of the two; its ratio is that one's).

A ratio is ``separate ÷ batched`` (> 1: the batch is faster), the median over repeats of the
ratio within one repeat (paired: the variants of one repeat run back to back, in rotating order). Every batched member is checked
against its separate run (relative difference of the final weights), so a strategy that is fast
because it computes something else would show here.

``--devices N`` (a second process with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``)
adds a row per case with the batch split over N host devices, against the same batch on one.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # see benchmarks/README.md

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing as T
import curvdyn as cd
from curvdyn.batch import choose_strategy

jax.config.update("jax_enable_x64", True)  # curvdyn's exact paths in float64 (importing curvdyn does not)

ODE_INTEGRATOR = cd.ODE(rtol=1e-6, atol=1e-9, max_steps=20_000)
# name: (rule, eta, Euler steps, Euler clip, ODE t_end) — the settings of curvature.py's simulate section
# (sqrt-ngd's ODE run half as long: 8 separate runs of it take ~6 s here)
CASES = {
    "sgd": (lambda: cd.get_rule("sgd"), 0.05, 2000, None, 20.0),
    "ngd": (lambda: cd.get_rule("ngd", lm_damping=1e-5), 0.05, 30, 0.1, 2e-4),
    "sqrt-ngd": (lambda: cd.get_rule("sqrt-ngd"), 0.05, 30, None, 0.01),
    "sqrt-ngd-d": (lambda: cd.get_rule("sqrt-ngd-d"), 0.05, 300, None, 5.0),
}


def fig3_members(n_seeds: int):
    task = cd.student_teacher(jax.random.PRNGKey(0), 16, rank=3, snr=10.0).train_task
    members = [cd.init_random(jax.random.PRNGKey(100 + s), (16,) * 5, 0.05) for s in range(n_seeds)]
    stacked = tuple(jnp.stack([m[i] for m in members]) for i in range(4))
    return task, members, stacked


def _runner(task, rule, integrator: str, eta, steps, clip, t_end, quick):
    if integrator == "euler":
        steps = max(3, steps // 5) if quick else steps
        opts = dict(integrator=cd.Euler(steps=steps, clip=clip), eta=eta, n_save=2)
        return (lambda w, **kw: cd.simulate(w, task, rule, **opts, **kw)), f"{steps} steps"
    t_end = t_end / 4 if quick else t_end
    opts = dict(integrator=ODE_INTEGRATOR, n_save=2)
    return (lambda w, **kw: cd.simulate(w, task, rule, t_end, **opts, **kw)), f"t_end = {t_end:g}"


def _final(traj, b=None):
    m = traj if b is None else traj.member(b)
    return np.concatenate([np.asarray(w[-1]).ravel() for w in m.weights])


def _max_rel_diff(batched, singles) -> float:
    out = 0.0
    for b, single in enumerate(singles):
        x, y = _final(batched, b), _final(single)
        out = max(out, float(np.linalg.norm(x - y) / np.linalg.norm(y)))
    return out


def measure_case(name, integrator, n_seeds, repeats, quick) -> dict:
    make, eta, steps, clip, t_end = CASES[name]
    rule = make()
    task, members, stacked = fig3_members(n_seeds)
    run, length = _runner(task, rule, integrator, eta, steps, clip, t_end, quick)
    calls = {
        "separate": lambda: [run(m) for m in members],
        "vmap": lambda: run(stacked, batch="vmap"),
        "map": lambda: run(stacked, batch="map"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        t0 = time.perf_counter()
        first = {k: c() for k, c in calls.items()}  # compiles each variant once
        compile_s = time.perf_counter() - t0
        times = _paired_times(calls, repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = {k: statistics.median(s / v for s, v in zip(times["separate"], times[k])) for k in ("vmap", "map")}
    auto = choose_strategy(rule, integrator)
    row = {
        "rule": name,
        "label": rule.label,
        "integrator": integrator,
        "length": length,
        "n_seeds": n_seeds,
        "repeats": repeats,
        "path": rule.method_at(members[0], task),
        "separate_s": med["separate"],
        "vmap_s": med["vmap"],
        "map_s": med["map"],
        "vmap_speedup": ratio["vmap"],
        "map_speedup": ratio["map"],
        "auto": auto,
        "auto_speedup": ratio[auto],
        "times": times,
        "warmup_s": compile_s,
        "vmap_max_rel_diff": _max_rel_diff(first["vmap"], first["separate"]),
        "map_max_rel_diff": _max_rel_diff(first["map"], first["separate"]),
        "status": sorted({s.status for s in first["separate"]}),
    }
    if integrator == "ode":
        row["solver_steps"] = [s.config["solver_steps"] for s in first["separate"]]
    return row


def _paired_times(calls: dict, repeats: int) -> dict[str, list[float]]:
    """Each repeat calls every variant once, back to back, starting one later each time (a rotation:
    no variant always runs first); a ratio is then the median over repeats of the ratio within one
    repeat — paired, so the machine's load, which drifts over minutes here, cancels."""
    names = list(calls)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(repeats):
        for k in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            calls[k]()
            times[k].append(time.perf_counter() - t)
    return times


def measure_devices(name, integrator, n_seeds, repeats, quick) -> dict:
    """In a process with several forced host devices: the batch split over all of them against
    the same batch on the first one only (``devices=[...]``), and whether the numbers are equal."""
    make, eta, steps, clip, t_end = CASES[name]
    rule = make()
    task, _, stacked = fig3_members(n_seeds)
    run, length = _runner(task, rule, integrator, eta, steps, clip, t_end, quick)
    auto = choose_strategy(rule, integrator)
    devs = jax.local_devices()
    calls = {"one_device": lambda: run(stacked, devices=devs[:1]), "all_devices": lambda: run(stacked)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        first = {k: c() for k, c in calls.items()}
        times = _paired_times(calls, repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    same = all(
        np.array_equal(a, b, equal_nan=True)
        for a, b in zip(
            first["one_device"].weights + (first["one_device"].t,),
            first["all_devices"].weights + (first["all_devices"].t,),
        )
    )
    return {
        "rule": name,
        "integrator": integrator,
        "length": length,
        "strategy": auto,
        "n_devices": len(devs),
        "one_device_s": med["one_device"],
        "all_devices_s": med["all_devices"],
        "speedup": statistics.median(a / b for a, b in zip(times["one_device"], times["all_devices"])),
        "identical": bool(same),
    }


def strategy_table(rows) -> str:
    body = [
        [
            r["rule"],
            r["integrator"],
            r["length"],
            r["path"],
            T.fmt_s(r["separate_s"]),
            f"{T.fmt_s(r['vmap_s'])} ({r['vmap_speedup']:.2f}×)",
            f"{T.fmt_s(r['map_s'])} ({r['map_speedup']:.2f}×)",
            f"{r['auto']} **{r['auto_speedup']:.2f}×**",
            f"{r['vmap_max_rel_diff']:.0e} / {r['map_max_rel_diff']:.0e}",
        ]
        for r in rows
    ]
    n = rows[0]["n_seeds"] if rows else 0
    return T.markdown_table(
        [
            "rule",
            "integrator",
            "run",
            "curvature path",
            f"{n} separate runs",
            "vmap (separate ÷ batched)",
            "map (separate ÷ batched)",
            "auto picks",
            "max rel. diff. to separate (vmap / map)",
        ],
        body,
    )


def devices_table(rows) -> str:
    body = [
        [
            r["rule"],
            r["integrator"],
            r["strategy"],
            T.fmt_s(r["one_device_s"]),
            f"{T.fmt_s(r['all_devices_s'])} ({r['speedup']:.2f}×)",
            "yes" if r["identical"] else "**no**",
        ]
        for r in rows
    ]
    n = rows[0]["n_devices"] if rows else 0
    return T.markdown_table(
        ["rule", "integrator", "strategy", "1 device", f"{n} host devices (1 ÷ {n})", "bitwise identical"], body
    )


def _device_rows(args) -> list[dict]:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={args.devices}").strip()
    cmd = [sys.executable, __file__, "--_device-child", "--seeds", str(args.seeds), "--repeats", str(args.repeats)]
    cmd += ["--cases", args.device_cases, "--integrators", args.integrators] + (["--quick"] if args.quick else [])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "batch.json"))
    ap.add_argument("--seeds", type=int, default=8, help="batch size B (seeds)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="shorter runs (a smoke test)")
    ap.add_argument("--cases", default="sgd,ngd,sqrt-ngd,sqrt-ngd-d", help="rules, comma-separated")
    ap.add_argument("--integrators", default="euler,ode")
    ap.add_argument("--devices", type=int, default=0, help="also split the batch over N forced host devices")
    ap.add_argument("--device-cases", default="sgd,sqrt-ngd-d", help="the rules of the --devices rows")
    ap.add_argument("--_device-child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    cases = args.cases.split(",")
    integrators = args.integrators.split(",")
    if args._device_child:
        rows = [measure_devices(c, i, args.seeds, args.repeats, args.quick) for c in cases for i in integrators]
        print(json.dumps(rows))
        return
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    log = T.JsonLog(args.out, {"benchmark": "batch", "machine": T.machine_info(), "quick": args.quick})
    t0 = time.perf_counter()
    rows = []
    for integrator in integrators:
        for name in cases:
            row = measure_case(name, integrator, args.seeds, args.repeats, args.quick)
            log.add(row)
            rows.append(row)
            print(
                f"  {name:>10s} {integrator:>5s} ({row['length']}): separate {T.fmt_s(row['separate_s'])}, "
                f"vmap {T.fmt_s(row['vmap_s'])} ({row['vmap_speedup']:.2f}×), map {T.fmt_s(row['map_s'])} "
                f"({row['map_speedup']:.2f}×); auto = {row['auto']}",
                flush=True,
            )
    tables = {"strategies": strategy_table(rows)}
    if args.devices > 1:
        dev_rows = _device_rows(args)
        log.set("devices", dev_rows)
        tables["devices"] = devices_table(dev_rows)
    for key, table in tables.items():
        print(f"\n## {key}\n\n{table}", flush=True)
    log.set("tables_markdown", tables)
    log.set("total_wall_s", time.perf_counter() - t0)
    print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s; JSON: {args.out}")


if __name__ == "__main__":
    main()
