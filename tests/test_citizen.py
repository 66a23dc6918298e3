"""curvdyn as a good citizen of a user's session: no global side effects at import, lazy imports,
explicit float64 (one clear error when it is off), float32 on request, diffrax's public result
API, progress bars only on a terminal.

The test suite runs with float64 on (conftest.py), so everything about a fresh session runs in a
subprocess with a clean environment (no JAX_ENABLE_X64, no MPLBACKEND).
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import struct
import subprocess
import sys
import textwrap

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import curvdyn
from curvdyn import _progress
from curvdyn.experiments import common
from curvdyn.integrators import SOLVE_OUTCOMES, solve_outcome

SRC = pathlib.Path(curvdyn.__file__).resolve().parents[1]


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_", "MPL"))}
    env["PYTHONPATH"] = str(SRC)
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _run_fresh(code: str, timeout: float = 240) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object on its last line."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------
# importing changes nothing
# ---------------------------------------------------------------------------------------


def test_importing_curvdyn_and_every_submodule_changes_nothing_in_the_session():
    """JAX's configuration and default dtype, matplotlib's backend (set to 'svg' first, so a
    ``matplotlib.use("Agg")`` anywhere would show), pyplot, the warnings filters and logging stay
    as they were after importing curvdyn, curvdyn.optim and every other module, experiments too."""
    out = _run_fresh(
        """
        import json, logging, sys, warnings
        import matplotlib
        matplotlib.use("svg")
        import jax, jax.numpy as jnp
        # third-party dependencies set their own filters on import (scipy does): import them first
        import diffrax, equinox, optax, scipy.linalg, scipy.special, scipy.sparse, tqdm

        def snapshot():
            root = logging.getLogger()
            return {
                "dtype": str(jnp.ones(2).dtype),
                "x64": bool(jax.config.jax_enable_x64),
                "backend": matplotlib.get_backend(),
                "pyplot": "matplotlib.pyplot" in sys.modules,
                "filters": repr(warnings.filters),
                "log": [root.level, len(root.handlers), logging.getLogger("jax").level],
            }

        before = snapshot()
        import curvdyn, curvdyn.optim
        after_optim = snapshot()
        import curvdyn.cli, curvdyn.curvature, curvdyn.experiments, curvdyn.nonlinear, curvdyn.report
        import curvdyn.reproduce, curvdyn.simulate, curvdyn.theory, curvdyn.optim.layouts
        from curvdyn import experiments
        experiments.all_experiments()
        for name in curvdyn.__all__:
            getattr(curvdyn, name)
        print(json.dumps({"before": before, "after_optim": after_optim, "after_all": snapshot()}))
        """
    )
    assert out["before"]["dtype"] == "float32" and out["before"]["backend"] == "svg"
    assert out["after_optim"] == out["before"]
    assert out["after_all"] == out["before"]


def test_import_curvdyn_is_lazy_and_names_resolve():
    """``import curvdyn`` imports no JAX; the first public name used does. ``cd.simulate`` stays
    the function even after the submodule ``curvdyn.simulate`` is imported; dir() lists __all__."""
    out = _run_fresh(
        """
        import json, sys
        import curvdyn as cd
        lazy = "jax" not in sys.modules and "numpy" not in sys.modules
        task_cls = cd.Task
        jax_after = "jax" in sys.modules
        import curvdyn.simulate
        from curvdyn.simulate import save_times
        print(json.dumps({
            "lazy": lazy,
            "jax_after": jax_after,
            "simulate_is_function": callable(cd.simulate) and cd.simulate.__module__ == "curvdyn.simulate",
            "trajectory": cd.Trajectory.__name__,
            "dir_has_all": set(cd.__all__) <= set(dir(cd)),
            "all": sorted(cd.__all__),
            "task": task_cls.__name__,
            "theory": cd.theory.__name__,
        }))
        """
    )
    assert out["lazy"] and out["jax_after"]
    assert out["simulate_is_function"] and out["trajectory"] == "Trajectory" and out["task"] == "Task"
    assert out["dir_has_all"] and out["theory"] == "curvdyn.theory"
    assert {"simulate", "Task", "ODE", "Euler", "astype", "get_rule", "init_random", "__version__"} <= set(out["all"])


def test_help_does_not_import_jax():
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, curvdyn.cli as c\ntry: c.main(['--help'])\nexcept SystemExit: pass\n"
            "print('JAX' if 'jax' in sys.modules else 'NOJAX')",
        ],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "curvdyn" in proc.stdout and proc.stdout.strip().endswith("NOJAX")


# ---------------------------------------------------------------------------------------
# float64 on request, float32 on request
# ---------------------------------------------------------------------------------------


def test_float64_paths_with_x64_off_raise_one_clear_error():
    out = _run_fresh(
        """
        import json
        import jax, jax.numpy as jnp, numpy as np
        import curvdyn as cd, curvdyn.optim as co
        from curvdyn._precision import Float64DisabledError
        from curvdyn.reproduce import reproduce

        key = jax.random.PRNGKey(0)
        x, y = np.ones((2, 4)), np.ones((2, 4))
        cases = {
            "Task": lambda: cd.Task(np.eye(2)),
            "Task(list)": lambda: cd.Task([[1.0, 0.0], [0.0, 1.0]]),
            "from_data": lambda: cd.Task.from_data(x, y),
            "student_teacher": lambda: cd.student_teacher(key, 4),
            "init_random": lambda: cd.init_random(key, (2, 2)),
            "init_xavier": lambda: cd.init_xavier(key, (2, 2)),
            "init_balanced": lambda: cd.init_balanced(key, (2, 2)),
            "init_aligned": lambda: cd.init_aligned(np.eye(2), (2, 2), [1.0]),
            "as_weights": lambda: cd.as_weights([np.eye(2)]),
            "dtype=float64": lambda: cd.Task(jnp.eye(2), dtype=np.float64),
            "mode_velocity": lambda: cd.theory.mode_velocity("sgd", [0.5, 0.5], 1.0),
            "simulate_modes": lambda: cd.theory.simulate_modes("sgd", [0.5, 0.5], 1.0, 1.0),
            "MLP.init(float64)": lambda: co.MLP("tanh").init(key, (2, 2), dtype=jnp.float64),
            "reproduce": lambda: reproduce(["fig3"], out="never-created"),
        }
        messages = {}
        for name, make in cases.items():
            try:
                make()
                messages[name] = None
            except Float64DisabledError as exc:
                messages[name] = str(exc)
        import os
        with jax.enable_x64(True):  # the same calls work once float64 is on
            ok = cd.Task(np.eye(2)).target.dtype == np.float64
        print(json.dumps({"messages": messages, "with_x64": bool(ok), "created": os.path.exists("never-created")}))
        """
    )
    for name, message in out["messages"].items():
        assert message is not None, f"{name} did not raise"
        assert "jax_enable_x64" in message and "float32" in message and "dtype=jnp.float32" in message, message
    assert out["with_x64"] and not out["created"]


def test_float32_paths_work_with_x64_off():
    """Explicit float32 everywhere computes in float32 (with the float32 cutoff); curvdyn.optim
    follows the parameters' dtype, so an optax loop stays float32."""
    out = _run_fresh(
        """
        import json
        import jax, jax.numpy as jnp, numpy as np, optax
        import curvdyn as cd, curvdyn.optim as co

        key = jax.random.PRNGKey(0)
        st = cd.student_teacher(key, 4, rank=2, dtype=jnp.float32)
        ws = cd.init_random(key, (4, 4, 4), 0.1, dtype=jnp.float32)
        traj = cd.simulate(ws, st.train_task, "sqrt-ngd", 5.0, integrator=cd.ODE(rtol=1e-5, atol=1e-6), n_save=5)
        d = cd.get_rule("ngd").direction(ws, cd.Task(np.eye(4, dtype=np.float32)))
        balanced = cd.init_balanced(key, (3, 3, 3), 0.5, dtype=jnp.float32)
        aligned = cd.init_aligned(np.eye(3, dtype=np.float32), (3, 3), [0.5])

        model = co.MLP("tanh")
        params = model.init(key, (3, 5, 2))
        x = jax.random.normal(key, (8, 3))
        y = jnp.sin(x[:, :2])
        opt = co.fractional_kfac(0.1, q=2.0)
        state = opt.init(params)
        grads = jax.grad(model.loss)(params, x, y)
        upd, state = jax.jit(lambda g, s: opt.update(g, s, params, curvature=co.kfac_statistics(model, params, x)))(
            grads, state)
        ngd = co.fractional_ngd(0.1, model, q=2.0)
        upd2, _ = ngd.update(grads, ngd.init(params), params, inputs=x)
        print(json.dumps({
            "task": str(st.train_task.target.dtype),
            "loss": str(traj.loss.dtype),
            "status": traj.status,
            "decreased": bool(traj.loss[-1] < 0.1 * traj.loss[0]),
            "direction": str(d[0].dtype),
            "balanced": str(balanced[0].dtype), "aligned": str(aligned[0].dtype),
            "params": str(params[0]["w"].dtype),
            "kfac": sorted({str(v.dtype) for v in jax.tree_util.tree_leaves(upd)}),
            "kfac_state": str(state[0].output_sums[0].dtype),
            "ngd": sorted({str(v.dtype) for v in jax.tree_util.tree_leaves(upd2)}),
            "finite": bool(all(np.all(np.isfinite(v)) for v in jax.tree_util.tree_leaves((upd, upd2)))),
            "x64": bool(jax.config.jax_enable_x64),
        }))
        """
    )
    assert out["task"] == out["loss"] == out["direction"] == out["balanced"] == out["aligned"] == "float32"
    assert out["status"] == "completed" and out["decreased"]
    assert out["params"] == "float32" and out["kfac"] == ["float32"] and out["kfac_state"] == "float32"
    assert out["ngd"] == ["float32"] and out["finite"] and not out["x64"]


def test_dtype_follows_the_inputs_with_x64_on():
    """With float64 available: float32 inputs give a float32 task, others float64; dtype= wins."""
    assert curvdyn.Task(np.eye(2, dtype=np.float32)).target.dtype == jnp.float32
    assert curvdyn.Task(np.eye(2)).input_cov.dtype == jnp.float64
    assert curvdyn.Task([[1, 0], [0, 1]]).target.dtype == jnp.float64  # integers: float64
    assert curvdyn.Task(np.eye(2), dtype=jnp.float32).sqrt_cov.dtype == jnp.float32
    x32 = np.ones((2, 3), np.float32)
    assert curvdyn.Task.from_data(x32, x32).target.dtype == jnp.float32
    assert curvdyn.init_random(jax.random.PRNGKey(0), (2, 3))[0].dtype == jnp.float64
    # dtype=None draws float64 numbers (the same as before dtype= existed, so seeds reproduce)
    ref = jax.random.normal(jax.random.split(jax.random.PRNGKey(1), 1)[0], (3, 2), dtype=jnp.float64)
    w = curvdyn.init_random(jax.random.PRNGKey(1), (2, 3), 1.0)[0]
    np.testing.assert_allclose(w, ref / np.linalg.norm(np.asarray(ref), 2), rtol=1e-15)
    with pytest.raises(ValueError, match="real floating type"):
        curvdyn.Task(np.eye(2), dtype=np.int32)


def test_reproduce_workers_enable_float64_themselves():
    """A spawned process starts in 32-bit mode; reproduce's worker initializer switches float64
    on (this branch's ``reproduce._worker_init``; after the merge with the process-handling work,
    ``_workers.start_worker`` with the parent's JAX settings, which reproduce requires to hold x64)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from curvdyn import _precision, reproduce

    if hasattr(reproduce, "_worker_init"):
        initializer, initargs = reproduce._worker_init, ()
    else:
        from curvdyn import _workers, io

        initializer, initargs = _workers.start_worker, (os.getpid(), io.jax_settings())
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context, initializer=initializer, initargs=initargs) as pool:
        assert pool.submit(_precision.x64_enabled).result(timeout=120) is True
    with ProcessPoolExecutor(1, mp_context=context) as pool:  # without it: JAX's 32-bit default
        assert pool.submit(_precision.x64_enabled).result(timeout=120) is False


# ---------------------------------------------------------------------------------------
# diffrax: public result API, progress only on a terminal
# ---------------------------------------------------------------------------------------


def test_no_private_diffrax_result_access_in_the_library():
    offenders = [
        str(path.relative_to(SRC))
        for path in (SRC / "curvdyn").rglob("*.py")
        if "._value" in path.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_solve_outcome_codes_under_jit_and_vmap():
    """Success, a terminating event and max_steps get their codes, per member of a vmapped solve."""

    def solve(y0, max_steps):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(lambda t, y, args: -y),
            diffrax.Tsit5(),
            t0=0.0,
            t1=5.0,
            dt0=0.1,
            y0=y0,
            event=diffrax.Event(lambda t, y, args, **kw: y < 0.5),
            max_steps=max_steps,
            throw=False,
        )
        return solve_outcome(sol.result)

    # y = y0 e^{-t} on [0, 5]: y0 = 100 stays above 0.5 (success), y0 = 3 crosses it (event)
    codes = jax.jit(jax.vmap(lambda y0: solve(y0, 1000)))(jnp.asarray([100.0, 3.0]))
    assert [SOLVE_OUTCOMES[int(c)] for c in codes] == ["successful", "event_occurred"]
    assert SOLVE_OUTCOMES[int(jax.jit(lambda y0: solve(y0, 2))(jnp.asarray(100.0)))] == "max_steps_reached"


class _FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_print_nothing_into_a_redirected_log(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    items = [1, 2, 3]
    assert common.progress(items, enabled=True, desc="runs") is items  # plain iterable
    assert not _progress.stderr_is_terminal()
    assert list(common.progress(items, enabled=True, desc="runs")) == items and log.getvalue() == ""
    terminal = _FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert list(common.progress(items, enabled=True, desc="runs", leave=True)) == items
    assert "runs" in terminal.getvalue()
    assert common.progress(items, enabled=False, desc="runs") is items  # disabled: nothing even on a terminal


def test_simulate_progress_meter_only_on_a_terminal(capfd):
    """``ODE(progress=True)`` into a redirected stderr (pytest's capture) prints nothing."""
    task = curvdyn.Task(np.eye(2))
    ws = curvdyn.init_random(jax.random.PRNGKey(0), (2, 2, 2), 0.1)
    traj = curvdyn.simulate(ws, task, "sgd", 2.0, integrator=curvdyn.ODE(rtol=1e-6, atol=1e-8, progress=True), n_save=3)
    assert traj.status == "completed"
    err = capfd.readouterr().err
    assert "\r" not in err and "%" not in err, err


def test_cli_simulate_shows_diffrax_progress_on_a_terminal(tmp_path):
    """Under a pseudo-terminal the CLI's long solve shows diffrax's tqdm meter; redirected, the
    same command writes no bar (and no carriage returns) into its stderr."""
    pty = pytest.importorskip("pty")
    fcntl, termios = pytest.importorskip("fcntl"), pytest.importorskip("termios")
    argv = [
        sys.executable,
        "-m",
        "curvdyn.cli",
        "simulate",
        "--depth",
        "2",
        "--width",
        "3",
        "--t-end",
        "3",
        "--n-save",
        "3",
        "--no-plot",
    ]
    leader, follower = pty.openpty()
    # a terminal of 100 columns (a pty starts at 0 x 0, where tqdm draws nothing)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        argv + ["--out", str(tmp_path / "tty")], env=_clean_env(), stdout=subprocess.PIPE, stderr=follower, cwd=tmp_path
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=300)
    os.close(leader)
    shown = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, shown
    assert "100.00%" in shown, shown[-2000:]
    piped = subprocess.run(
        argv + ["--out", str(tmp_path / "log")],
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert piped.returncode == 0, piped.stderr
    assert "%|" not in piped.stderr and "\r" not in piped.stderr, piped.stderr
