"""Batched simulation (curvdyn.batch): the strategies compute what separate runs compute, per-member
tasks, bad options, and a batch split over 4 forced CPU devices gives bitwise the one-device numbers."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import curvdyn as cd
from curvdyn import batch

WIDTHS = (3, 4, 3)
ODE = cd.ODE(rtol=1e-7, atol=1e-9)


def _members(n, scale=0.3):
    return [cd.init_random(jax.random.PRNGKey(10 + s), WIDTHS, scale * (1 + 0.5 * s)) for s in range(n)]


def _stack(members):
    return tuple(np.stack(layer) for layer in zip(*members))


def _task(seed):
    return cd.Task(np.random.default_rng(seed).standard_normal((3, 3)))


def _runs(kind):
    # diagnose=False: the trajectories are compared here (test_exactness checks the diagnostics)
    if kind == "ode":
        return dict(t_end=2.0, integrator=ODE, n_save=9, diagnose=False)
    return dict(t_end=None, integrator=cd.Euler(steps=40, dt=0.1), n_save=9, diagnose=False)


def _assert_same_run(member, single, exact):
    check = (
        np.testing.assert_array_equal if exact else lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-13)
    )
    check(member.t, single.t)
    for a, b in zip(member.weights, single.weights):
        check(a, b)
    check(member.loss, single.loss)
    assert member.status == single.status


def test_auto_picks_vmap_for_the_gradient_and_map_for_curvature_rules_on_the_cpu():
    assert jax.devices()[0].platform == "cpu"
    for kind in ("ode", "euler"):
        assert batch.choose_strategy(cd.get_rule("sgd"), kind) == "vmap"
        for name in ("ngd", "sqrt-ngd", "ngd-d", "sqrt-ngd-d"):
            assert batch.choose_strategy(cd.get_rule(name), kind) == "map"
    # frac-ngd with q = inf is the plain gradient; with layer rates it is not
    assert batch.choose_strategy(cd.get_rule("frac-ngd", q=float("inf")), "ode") == "vmap"
    assert batch.choose_strategy(cd.get_rule("frac-ngd-d", q=float("inf"), layer_rates=(1.0, 2.0)), "ode") == "map"


@pytest.mark.parametrize("kind", ["ode", "euler"])
def test_map_gives_bitwise_the_separate_runs_and_vmap_agrees(kind):
    """Members with different step counts (different initial scales): ``map`` is each separate run
    exactly; ``vmap`` agrees to round-off (Euler here; the lock-stepped vmapped ODE is checked
    against separate runs in test_scale.py and test_simulate.py)."""
    task, members, run = _task(1), _members(3), _runs(kind)
    # the ODE with the gradient (the smallest program to compile; map is rule-agnostic), Euler with sqrt-NGD
    rule = cd.get_rule("sgd" if kind == "ode" else "sqrt-ngd")
    t_end = run.pop("t_end")
    singles = [cd.simulate(m, task, rule, t_end, **run) for m in members]
    mapped = cd.simulate(_stack(members), task, rule, t_end, batch="map", **run)
    assert mapped.config["batch_strategy"] == "map"
    vmapped = cd.simulate(_stack(members), task, rule, t_end, batch="vmap", **run) if kind == "euler" else None
    if kind == "ode":
        steps = [s.config["solver_steps"] for s in singles]
        assert len(set(steps)) > 1, "the members should need different step counts"
        assert mapped.config["solver_steps"] == steps
    for b, single in enumerate(singles):
        _assert_same_run(mapped.member(b), single, exact=True)
        if vmapped is not None:
            assert vmapped.config["batch_strategy"] == "vmap"
            _assert_same_run(vmapped.member(b), single, exact=False)


def test_auto_batch_equals_separate_runs_for_the_gradient():
    task, members = _task(2), _members(3)
    euler = dict(integrator=cd.Euler(steps=30, dt=0.1), n_save=4, diagnose=False)
    traj = cd.simulate(_stack(members), task, "sgd", **euler)
    assert traj.config["batch_strategy"] == "vmap"
    for b, m in enumerate(members):
        _assert_same_run(traj.member(b), cd.simulate(m, task, "sgd", **euler), exact=False)


def test_one_task_per_member():
    """A list of tasks runs member b on task b: the same as separate runs on each task (vmap with
    one task per member is checked in the device test below)."""
    tasks = [_task(s) for s in range(3)]
    members = _members(3)
    rule = cd.get_rule("ngd-d")
    euler = dict(integrator=cd.Euler(steps=20, dt=0.1), n_save=5, diagnose=False)
    traj = cd.simulate(_stack(members), tasks, rule, batch="map", **euler)
    assert isinstance(traj.config["task"], list) and len(traj.config["task"]) == 3
    for b, (m, t) in enumerate(zip(members, tasks)):
        single = cd.simulate(m, t, rule, **euler)
        _assert_same_run(traj.member(b), single, exact=True)
        np.testing.assert_array_equal(traj.member(b).update_norm, single.update_norm)
        assert traj.config["task"][b]["target"] == single.config["task"]["target"]


def test_bad_batch_options_raise_clear_errors():
    task, members = _task(0), _members(2)
    stacked = _stack(members)
    with pytest.raises(ValueError, match="unknown batch strategy 'lockstep'"):
        cd.simulate(stacked, task, "sgd", 1.0, batch="lockstep")
    with pytest.raises(ValueError, match="unknown batch strategy"):
        cd.simulate(members[0], task, "sgd", 1.0, batch="lockstep")  # checked for single runs too
    with pytest.raises(ValueError, match="3 tasks for a batch of 2 members"):
        cd.simulate(stacked, [task] * 3, "sgd", 1.0)
    with pytest.raises(ValueError, match="share the target's shape"):
        cd.simulate(stacked, [task, cd.Task(np.ones((3, 3)), np.eye(3) * 2.0)], "sgd", 1.0)
    with pytest.raises(TypeError, match="needs batched weights"):
        cd.simulate(members[0], [task], "sgd", 1.0)
    with pytest.raises(TypeError, match=r"task must be a curvdyn\.Task"):
        cd.simulate(stacked, [task, "not a task"], "sgd", 1.0)
    with pytest.raises(ValueError, match="at least one device"):
        cd.simulate(stacked, task, "sgd", 1.0, devices=[])


_DEVICE_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    import jax
    import numpy as np
    jax.config.update("jax_enable_x64", True)
    import curvdyn as cd
    from curvdyn import batch

    devs = jax.local_devices()
    assert len(devs) == 4, devs
    widths = (3, 4, 3)
    members = [cd.init_random(jax.random.PRNGKey(10 + s), widths, 0.3 * (1 + 0.5 * s)) for s in range(5)]
    stacked = tuple(np.stack(layer) for layer in zip(*members))
    tasks = [cd.Task(np.random.default_rng(s).standard_normal((3, 3))) for s in range(5)]
    cases = {
        # the block rule's direction is where shard_map's partitioned program differed in the last bits;
        # with loss_tol the members stop after different step counts. (Euler: quick to compile 5 times,
        # once per device and once for the one-device run; the split is the same for any program.)
        "sqrt-ngd-d euler map, one task each": ("sqrt-ngd-d", tasks, None, cd.Euler(steps=60, dt=0.1), "auto"),
        "sgd euler vmap": ("sgd", tasks[0], None, cd.Euler(steps=60, dt=0.1), "vmap"),
    }
    out = {}
    for name, (rule, task, t_end, integrator, strategy) in cases.items():
        run = lambda **kw: cd.simulate(
        stacked, task, rule, t_end, integrator=integrator, n_save=9, batch=strategy, loss_tol=0.05, diagnose=False, **kw
    )
        one, split = run(devices=devs[:1]), run()
        arrays = lambda t: [t.t, t.loss, t.update_norm, *t.weights, *t.conserved]
        out[name] = {
            "strategy": split.config["batch_strategy"],
            "identical": all(np.array_equal(a, b, equal_nan=True) for a, b in zip(arrays(one), arrays(split))),
            "status": [split.status, one.status],
            "steps": [split.config.get("solver_steps"), one.config.get("solver_steps")],
            "ends": sorted({float(t) for t in np.nanmax(split.t, axis=1)}),
        }
    try:
        cd.simulate(stacked, tasks[0], "sqrt-ngd", 1.0, batch="vmap")
        out["refused"] = None
    except ValueError as exc:
        out["refused"] = str(exc)
    print(json.dumps(out))
    """
)


def test_split_over_four_cpu_devices_gives_bitwise_the_one_device_numbers():
    """In a fresh process with 4 forced host devices (the flag must precede JAX's start): a batch of
    5 (padded to 8) split over the devices equals the run on one device, bit for bit, for both
    strategies, a shared task and one task per member; vmap of a curvature rule over several CPU
    devices is refused (it deadlocks jaxlib's CPU eigendecomposition)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(os.path.dirname(cd.__file__), ".."), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _DEVICE_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    refused = out.pop("refused")
    assert refused is not None and "deadlocks" in refused and "batch='map'" in refused
    for name, res in out.items():
        assert res["identical"], (name, res)
        assert res["status"][0] == res["status"][1], (name, res)
        assert res["steps"][0] == res["steps"][1], (name, res)
        assert len(res["ends"]) > 1, (name, res)  # the members stopped at different times (loss_tol)
    assert out["sqrt-ngd-d euler map, one task each"]["strategy"] == "map"
    assert out["sgd euler vmap"]["strategy"] == "vmap"
