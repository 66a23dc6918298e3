"""Exact curvature on a GPU: matrix-product rates, then one exact sqrt-NGD direction at scale.

    python benchmarks/gpu.py [--out benchmarks/results/gpu.json] [--budget 330] [--cpu-budget 100]

Unattended and bounded: it prints progress as it goes (flushed), rewrites the JSON after every
measurement (a timeout keeps what ran), and checks a wall-clock budget (``--budget`` seconds
for everything, ``--cpu-budget`` for the CPU comparisons) before every step, skipping steps
whose projected time does not fit. Steps, in order:

1. the card's float64 and float32 matrix-product rates (8192², TFLOP/s; float32 both at the
   backend's default precision, which may be TF32, and at ``precision="highest"``);
2. one exact sqrt-NGD direction (``method="auto"``: the map-space kernel K) and one gradient on
   square d = 4 networks, N = 32, 64, 96, 128 (K up to 16384²), float64 then float32, with
   the float32 direction's error against float64; the N = 128 float64 eigendecomposition is
   timed once (its first call after ahead-of-time compilation), the others by the median of
   a few calls; the dense full H₊ at N = 32 (a 4096² eigendecomposition) on the card, once;
3. the wide network 64 → 8192 → 8192 → 8192 → 64 (135 M parameters, K = 4096²): gradient and
   direction, float64 and float32;
4. the same directions on the host CPU, float64, where the projected time fits
   (``--cpu-budget``): N = 32, 64 and what else fits (projected from the measured N = 64 time
   by the cubic cost of the eigendecomposition), and the wide network (its K has the size of
   N = 64's);
5. a batched sweep: the Fig. 3 network (N = 16, d = 4), sqrt-NGD, 30 Euler steps, 16 seeds in
   one call versus 16 separate calls.

Weights: Haar-random layers with singular values uniform in [0.5, 1.5] (square); Gaussian
N(0, 1/n_in) layers (wide). Float64 unless stated (the library's default); float32 via
``curvdyn.astype``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import traceback
import warnings

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _timing as T
import curvdyn as cd
from curvdyn.network import gradient
from curvdyn.rules import direction_unchecked

jax.config.update("jax_enable_x64", True)  # curvdyn's exact paths in float64 (importing curvdyn does not)

START = time.perf_counter()
RULE = cd.get_rule("sqrt-ngd")


def elapsed() -> float:
    return time.perf_counter() - START


def say(msg: str) -> None:
    print(f"[{elapsed():6.1f} s] {msg}", flush=True)


def spread_square(n: int, depth: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    ws = []
    for _ in range(depth):
        u = np.linalg.qr(rng.standard_normal((n, n)))[0]
        v = np.linalg.qr(rng.standard_normal((n, n)))[0]
        ws.append((u * rng.uniform(0.5, 1.5, n)) @ v.T)
    return ws, rng.standard_normal((n, n))


def place(ws_np, target_np, device, dtype=jnp.float64):
    with jax.default_device(device):
        ws = tuple(jnp.asarray(w, dtype=jnp.float64) for w in ws_np)
        task = cd.Task(target_np)
        task = jax.device_put(task, device)
        ws = jax.device_put(ws, device)
        if dtype != jnp.float64:
            ws, task = cd.astype(ws, task, dtype)
    return ws, task


def gaussian_wide(widths, device, seed=0):
    """Gaussian layers N(0, 1/n_in), generated on the device (135 M entries at 8192)."""
    keys = jax.random.split(jax.random.PRNGKey(seed), len(widths))
    with jax.default_device(device):
        ws = tuple(
            jax.random.normal(k, (b, a), dtype=jnp.float64) / math.sqrt(a)
            for k, a, b in zip(keys, widths[:-1], widths[1:])
        )
        target = jax.random.normal(keys[-1], (widths[-1], widths[0]), dtype=jnp.float64)
        task = jax.device_put(cd.Task(np.asarray(target)), device)
        ws = jax.device_put(ws, device)
    return jax.block_until_ready(ws), task


def time_direction(ws, task, *, repeats: int, once_if_slower_s: float = 20.0, with_gradient=True):
    """Compile (AOT), then time gradient and direction; returns dict and the direction."""
    method = RULE.resolve_method(cd.widths_of(ws), task.identity_cov, "auto")
    out = {"method": method, "path": RULE.method_at(ws, task)}
    dcall, out["compile_direction_s"] = T.compiled(direction_unchecked, ws, task, static=dict(rule=RULE, method=method))
    t0 = time.perf_counter()
    d = jax.block_until_ready(dcall())
    out["first_direction_s"] = time.perf_counter() - t0
    calls = {}
    if with_gradient:
        gcall, out["compile_gradient_s"] = T.compiled(gradient, ws, task)
        jax.block_until_ready(gcall())
        calls["gradient"] = gcall
    if out["first_direction_s"] < once_if_slower_s:
        calls["direction"] = dcall
    t = T.time_interleaved(calls, repeats) if calls else {}
    out["direction_s"] = t["direction"]["median"] if "direction" in t else out["first_direction_s"]
    out["direction_repeats"] = t["direction"]["n"] if "direction" in t else 1
    if with_gradient:
        out["gradient_s"] = t["gradient"]["median"]
        out["direction_over_gradient"] = out["direction_s"] / out["gradient_s"]
    return out, d


def matmul_rates(log, device, n):
    res = {}
    for name, dtype, prec in [
        ("float64", jnp.float64, None),
        ("float32 (default precision)", jnp.float32, None),
        ("float32 (precision=highest)", jnp.float32, "highest"),
    ]:
        with jax.default_device(device):
            a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype=dtype)
            b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dtype=dtype)
        call, _ = T.compiled(lambda x, y, p=prec: jnp.matmul(x, y, precision=p), a, b)
        jax.block_until_ready(call())
        t = T.time_interleaved({"mm": call}, 5)["mm"]["median"]
        res[name] = 2 * n**3 / t / 1e12
        say(f"matmul {n}x{n} {name}: {res[name]:.1f} TFLOP/s ({t * 1e3:.1f} ms)")
        del a, b
    log.set("matmul_tflops", res)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "gpu.json"))
    ap.add_argument("--budget", type=float, default=330.0, help="total wall-clock seconds")
    ap.add_argument("--cpu-budget", type=float, default=100.0, help="seconds for the CPU comparisons")
    ap.add_argument("--sizes", default="32,64,96,128")
    ap.add_argument("--wide", type=int, default=8192)
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--matmul-n", type=int, default=None, help="matrix size of the rate test (8192 on a GPU)")
    args = ap.parse_args(argv)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    dev = gpus[0] if gpus else jax.devices()[0]
    cpu = jax.devices("cpu")[0]
    info = T.machine_info()
    info["accelerator"] = str(getattr(dev, "device_kind", dev))
    try:
        stats = dev.memory_stats() or {}
        info["accelerator_memory_bytes"] = stats.get("bytes_limit")
    except Exception:
        pass
    log = T.JsonLog(
        args.out,
        {
            "benchmark": "gpu",
            "machine": info,
            "rule": "sqrt-ngd",
            "method": "auto",
            "budget_s": args.budget,
            "complete": False,
        },
    )
    say(f"device: {info['accelerator']} ({dev.platform}); jax {jax.__version__}; CPU cores {os.cpu_count()}")
    if not gpus:
        say("WARNING: no GPU found; the 'GPU' rows below ran on " + dev.platform)

    def left() -> float:
        return args.budget - elapsed()

    def guarded(label, fn, projected_s=0.0):
        if projected_s > left():
            say(f"skip {label}: projected {projected_s:.0f} s > {left():.0f} s left")
            log.add({"case": label, "skipped": f"projected {projected_s:.0f} s exceeds the remaining budget"})
            return None
        try:
            return fn()
        except Exception as exc:
            say(f"FAILED {label}: {type(exc).__name__}: {exc}")
            log.add({"case": label, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-2000:]})
            return None

    guarded("matmul rates", lambda: matmul_rates(log, dev, args.matmul_n or (8192 if gpus else 1024)))

    # ---- square d = 4 on the card -------------------------------------------------------
    sizes = [int(s) for s in args.sizes.split(",")]
    gpu_f64 = {}
    last_eigh = None  # (n_map, seconds) of the latest float64 direction: projects the next
    for n in sizes:
        ws_np, target_np = spread_square(n)
        n_map = n * n
        for dtype, dname in [(jnp.float64, "float64"), (jnp.float32, "float32")]:
            proj = 0.0
            if last_eigh is not None:
                proj = 2.5 * last_eigh[1] * (n_map / last_eigh[0]) ** 3 * (0.5 if dname == "float32" else 1.0)

            def run(n=n, dtype=dtype, dname=dname):
                ws, task = place(ws_np, target_np, dev, dtype)
                say(f"square N={n} d=4 {dname}: K = {n_map}², P = {cd.n_params(ws)} ...")
                res, d = time_direction(ws, task, repeats=5 if n_map <= 4096 else 2)
                row = {
                    "case": f"square N={n} d=4",
                    "N": n,
                    "K_dim": n_map,
                    "P": cd.n_params(ws),
                    "dtype": dname,
                    "device": dev.platform,
                    **res,
                }
                if dname == "float64":
                    gpu_f64[n] = [np.asarray(x) for x in d]
                elif n in gpu_f64:
                    row["rel_err_vs_float64"] = T.rel_err(d, gpu_f64[n])
                log.add(row)
                say(
                    f"  direction {T.fmt_s(res['direction_s'])} (first call {T.fmt_s(res['first_direction_s'])}, "
                    f"compile {res['compile_direction_s']:.1f} s), gradient {T.fmt_s(res['gradient_s'])}, "
                    f"ratio {res['direction_over_gradient']:.0f}×"
                    + (f", error vs float64 {row['rel_err_vs_float64']:.1e}" if "rel_err_vs_float64" in row else "")
                )
                return res

            res = guarded(f"square N={n} {dname} (gpu)", run, proj)
            if res is not None and dname == "float64":
                last_eigh = (n_map, res["first_direction_s"])

    # dense full H₊ at N = 32 on the card (P = 4096)
    def dense32():
        ws_np, target_np = spread_square(32)
        ws, task = place(ws_np, target_np, dev)
        say("dense full H₊, N = 32 (4096² eigendecomposition) on the card ...")
        call, c = T.compiled(direction_unchecked, ws, task, static=dict(rule=RULE, method="dense"))
        t0 = time.perf_counter()
        d = jax.block_until_ready(call())
        t = time.perf_counter() - t0
        row = {
            "case": "square N=32 d=4",
            "N": 32,
            "dtype": "float64",
            "device": dev.platform,
            "method": "dense",
            "direction_s": t,
            "compile_direction_s": c,
        }
        if 32 in gpu_f64:
            row["rel_err_auto_vs_dense"] = T.rel_err(gpu_f64[32], d)
        log.add(row)
        say(
            f"  dense {T.fmt_s(t)}"
            + (f", auto agrees to {row['rel_err_auto_vs_dense']:.1e}" if "rel_err_auto_vs_dense" in row else "")
        )

    guarded("dense N=32 (gpu)", dense32, 20.0)

    # ---- wide ----------------------------------------------------------------------------
    w = args.wide
    widths = (64, w, w, w, 64)
    wide_f64 = {}
    for dtype, dname in [(jnp.float64, "float64"), (jnp.float32, "float32")]:

        def run_wide(dtype=dtype, dname=dname):
            ws, task = gaussian_wide(widths, dev)
            if dtype != jnp.float64:
                ws, task = cd.astype(ws, task, dtype)
            say(f"wide {widths} {dname}: P = {cd.n_params(ws) / 1e6:.1f} M, K = {64 * 64}² ...")
            res, d = time_direction(ws, task, repeats=5)
            row = {
                "case": "wide " + "→".join(map(str, widths)),
                "P": cd.n_params(ws),
                "K_dim": 64 * 64,
                "dtype": dname,
                "device": dev.platform,
                **res,
            }
            if dname == "float64":
                wide_f64["d"] = [np.asarray(x[:64, :64]) for x in d]  # a corner: enough to compare
            else:
                row["rel_err_vs_float64_corner"] = T.rel_err([np.asarray(x[:64, :64]) for x in d], wide_f64["d"])
            log.add(row)
            say(
                f"  direction {T.fmt_s(res['direction_s'])}, gradient {T.fmt_s(res['gradient_s'])}, "
                f"ratio {res['direction_over_gradient']:.1f}×"
            )
            del ws, d

        guarded(f"wide {dname} (gpu)", run_wide, 30.0)

    # ---- CPU comparisons -----------------------------------------------------------------
    if not args.skip_cpu and gpus:
        cpu_start = elapsed()

        def cpu_left():
            return min(args.cpu_budget - (elapsed() - cpu_start), left())

        cpu_last = None
        for n in sizes:
            n_map = n * n
            proj = 5.0 if cpu_last is None else 2.0 * cpu_last[1] * (n_map / cpu_last[0]) ** 3
            if proj > cpu_left():
                say(f"skip CPU N={n}: projected {proj:.0f} s > {cpu_left():.0f} s left for the CPU")
                log.add({"case": f"square N={n} d=4", "device": "cpu", "skipped": f"projected {proj:.0f} s"})
                continue

            def run_cpu(n=n):
                ws_np, target_np = spread_square(n)
                ws, task = place(ws_np, target_np, cpu)
                say(f"CPU square N={n} float64 ...")
                res, d = time_direction(ws, task, repeats=3 if n_map <= 1024 else 1, once_if_slower_s=5.0)
                row = {"case": f"square N={n} d=4", "N": n, "K_dim": n_map, "dtype": "float64", "device": "cpu", **res}
                if n in gpu_f64:
                    row["rel_err_cpu_vs_gpu"] = T.rel_err(d, gpu_f64[n])
                log.add(row)
                say(
                    f"  CPU direction {T.fmt_s(res['direction_s'])}, gradient {T.fmt_s(res['gradient_s'])}"
                    + (
                        f", agrees with the GPU to {row['rel_err_cpu_vs_gpu']:.1e}"
                        if "rel_err_cpu_vs_gpu" in row
                        else ""
                    )
                )
                return res

            res = guarded(f"square N={n} (cpu)", run_cpu, 0.0)
            if res is not None:
                cpu_last = (n_map, res["first_direction_s"])

        # wide on the CPU: K = 4096², like N = 64
        proj_wide = 30.0
        if cpu_last is not None:
            proj_wide = 2.0 * cpu_last[1] * (4096 / cpu_last[0]) ** 3 + 20.0
        if proj_wide <= cpu_left():

            def run_cpu_wide():
                ws, task = gaussian_wide(widths, cpu)
                say(f"CPU wide {widths} float64 ...")
                res, _ = time_direction(ws, task, repeats=1, once_if_slower_s=5.0)
                log.add({"case": "wide " + "→".join(map(str, widths)), "dtype": "float64", "device": "cpu", **res})
                say(f"  CPU direction {T.fmt_s(res['direction_s'])}, gradient {T.fmt_s(res['gradient_s'])}")

            guarded("wide (cpu)", run_cpu_wide, 0.0)
        else:
            say(f"skip CPU wide: projected {proj_wide:.0f} s > {cpu_left():.0f} s left for the CPU")

    # ---- batched sweep on the card ---------------------------------------------------------
    def batched():
        st = cd.student_teacher(jax.random.PRNGKey(0), 16, rank=3, snr=10.0)
        task = st.train_task
        keys = jax.random.split(jax.random.PRNGKey(1), 16)
        seeds = [cd.init_random(k, (16,) * 5, 0.05) for k in keys]
        batch = tuple(jnp.stack([s[i] for s in seeds]) for i in range(4))

        def euler(w):
            return cd.simulate(w, task, RULE, integrator=cd.Euler(steps=30), n_save=2, eta=0.05)

        say("batched sweep: fig3 network, sqrt-ngd, 30 Euler steps, 16 seeds ...")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            euler(seeds[0])
            euler(batch)
            t_b = T.run_once(lambda: euler(batch).loss)
            t_s = T.run_once(lambda: [euler(s).loss for s in seeds])
        log.add(
            {
                "case": "batched sweep fig3 sqrt-ngd 30 Euler steps",
                "device": dev.platform,
                "batch16_s": t_b,
                "separate16_s": t_s,
                "speedup": t_s / t_b,
            }
        )
        say(f"  16 batched {T.fmt_s(t_b)}, 16 separate {T.fmt_s(t_s)}: {t_s / t_b:.1f}×")

    guarded("batched sweep (gpu)", batched, 40.0)

    # ---- table ---------------------------------------------------------------------------
    rows = [r for r in log.doc["rows"] if "direction_s" in r]
    table = T.markdown_table(
        ["case", "device", "dtype", "path", "direction", "gradient", "÷ gradient", "compile", "note"],
        [
            [
                r["case"],
                r["device"],
                r["dtype"],
                r.get("path", r.get("method", "")),
                T.fmt_s(r["direction_s"]),
                T.fmt_s(r.get("gradient_s")),
                f"{r['direction_over_gradient']:.1f}×" if "direction_over_gradient" in r else "—",
                f"{r['compile_direction_s']:.1f} s" if "compile_direction_s" in r else "—",
                "; ".join(f"{k} {v:.1e}" for k, v in r.items() if k.startswith("rel_err")),
            ]
            for r in rows
        ],
    )
    print("\n" + table, flush=True)
    log.set("table_markdown", table)
    log.set("complete", True)
    log.set("total_wall_s", elapsed())
    say(f"done; JSON: {args.out}")


if __name__ == "__main__":
    main()
