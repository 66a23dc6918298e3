"""Simulation: conservation law (eq. 4), NGD's exponential map convergence, Euler steps,
stop conditions, batches, and saving."""

import math
import warnings

import jax
import numpy as np
import pytest

import curvdyn as cd

# the dynamics are what these tests check (test_exactness checks the recorded diagnostics)
TIGHT = dict(integrator=cd.ODE(rtol=1e-11, atol=1e-13, solver="dopri8"), diagnose=False)


def _task(n_out, n_in, seed=0, cov=False):
    rng = np.random.default_rng(seed)
    target = rng.standard_normal((n_out, n_in))
    if not cov:
        return cd.Task(target)
    a = rng.standard_normal((n_in, n_in))
    return cd.Task(target, a @ a.T / n_in + 0.1 * np.eye(n_in))


def _rel_drift(traj):
    """max_t ‖C_i(t) − C_i(0)‖ / ‖C_i(0)‖ over layers i."""
    return max(float(np.max(np.linalg.norm(c - c[0], axis=(1, 2))) / np.linalg.norm(c[0])) for c in traj.conserved)


@pytest.mark.parametrize(
    "name,params",
    [("sgd", {}), ("ngd", {}), ("sqrt-ngd", {}), ("frac-ngd", {"q": 3.0}), ("damped-ngd", {"eps": 0.5})],
)
@pytest.mark.parametrize("cov", [False, True])
def test_conservation_law_holds_for_full_curvature_rules(name, params, cov):
    widths = (3, 4, 2, 3)  # a bottleneck of width 2 and a rectangular map
    task = _task(3, 3, seed=1, cov=cov)
    ws = cd.init_xavier(jax.random.PRNGKey(3), widths, 1.0)
    traj = cd.simulate(ws, task, cd.get_rule(name, **params), 3.0, n_save=31, **TIGHT)
    assert traj.status == "completed"
    assert traj.loss[-1] < 0.5 * traj.loss[0]  # it really moved
    assert _rel_drift(traj) <= 1e-7


def test_conservation_law_fails_for_ngd_d():
    widths = (3, 4, 4, 3)
    task = _task(3, 3, seed=1)
    ws = cd.init_xavier(jax.random.PRNGKey(3), widths, 1.0)
    ngd_d = cd.simulate(ws, task, "ngd-d", 1.0, n_save=11, **TIGHT)
    ngd = cd.simulate(ws, task, "ngd", 1.0, n_save=11, **TIGHT)
    assert _rel_drift(ngd) <= 1e-7
    assert _rel_drift(ngd_d) > 1e-2


@pytest.mark.parametrize("depth", [2, 3, 4])
def test_ngd_map_converges_exponentially(depth):
    n = 3
    task = _task(n, n, seed=depth)
    ws = cd.init_xavier(jax.random.PRNGKey(depth), (n,) * (depth + 1), 1.0)
    eta = 0.7
    traj = cd.simulate(ws, task, "ngd", 4.0, eta=eta, n_save=21, **TIGHT)
    delta = np.linalg.norm(traj.map - np.asarray(task.target), axis=(1, 2))
    expected = delta[0] * np.exp(-eta * traj.t)
    np.testing.assert_allclose(delta, expected, rtol=1e-7)


def test_euler_matches_explicit_loop_and_clipping():
    task = _task(2, 3, seed=5)
    ws = cd.init_xavier(jax.random.PRNGKey(1), (3, 4, 2), 1.0)
    rule = cd.get_rule("sqrt-ngd")
    eta, dt, clip = 0.3, 0.5, 0.05
    traj = cd.simulate(ws, task, rule, eta=eta, integrator=cd.Euler(dt=dt, steps=6, clip=clip), n_save=7)
    w = tuple(np.asarray(x) for x in ws)
    for k in range(6):
        np.testing.assert_allclose(traj.t[k], k * dt)
        for a, b in zip(traj.weights, w):
            np.testing.assert_allclose(a[k], b, rtol=1e-12, atol=1e-14)
        step = [eta * dt * np.asarray(v) for v in rule.direction(w, task)]
        norm = math.sqrt(sum(float(np.sum(s * s)) for s in step))
        scale = min(1.0, clip / norm)
        w = tuple(a - scale * s for a, s in zip(w, step))
    assert traj.status == "completed"


def test_euler_divergence_stops_and_keeps_record():
    task = _task(3, 3, seed=2)
    ws = cd.init_xavier(jax.random.PRNGKey(0), (3, 3, 3), 1.0)
    with pytest.warns(RuntimeWarning, match="diverged"):
        traj = cd.simulate(ws, task, "sgd", 200.0, eta=3.0, integrator=cd.Euler(), n_save=201)
    assert traj.status == "diverged"
    assert len(traj.t) >= 2
    assert np.all(np.isfinite(traj.loss))
    assert np.all(np.isfinite(traj.weights[0]))


def test_ode_divergence_stops_with_message():
    task = _task(2, 2, seed=2)
    ws = cd.init_xavier(jax.random.PRNGKey(0), (2, 2, 2), 1.0)
    # Gradient *ascent* (negative rate is rejected, so flip the target's role via max_loss):
    # a tiny max_loss makes the very first steps count as divergence.
    l0 = float(cd.loss(ws, task))
    with pytest.warns(RuntimeWarning, match="diverged"):
        traj = cd.simulate(ws, task, "sgd", 5.0, max_loss=l0 * 0.999999 if l0 > 0 else 1e-12)
    assert traj.status == "diverged"
    assert np.all(np.isfinite(traj.loss))


def test_loss_tol_stops_both_methods():
    task = _task(3, 3, seed=3)
    ws = cd.init_xavier(jax.random.PRNGKey(2), (3, 3, 3), 1.0)
    for integrator in (cd.ODE(), cd.Euler(dt=0.05)):
        traj = cd.simulate(ws, task, "ngd", 50.0, integrator=integrator, loss_tol=1e-3)
        assert traj.status == "converged"
        assert traj.loss[-1] < 1e-3 <= traj.loss[-2]
        assert traj.t[-1] < 50.0


def test_batch_equals_separate_runs():
    task = _task(3, 3, seed=4)
    inits = [cd.init_random(jax.random.PRNGKey(s), (3, 4, 3), 0.3) for s in range(3)]
    batch = tuple(np.stack(layer) for layer in zip(*inits))
    for integrator in (cd.ODE(rtol=1e-10, atol=1e-12), cd.Euler(dt=0.1)):
        traj_b = cd.simulate(batch, task, "sqrt-ngd", 5.0, integrator=integrator, n_save=11)
        assert traj_b.batched and traj_b.t.shape[0] == 3
        for s, ws in enumerate(inits):
            single = cd.simulate(ws, task, "sqrt-ngd", 5.0, integrator=integrator, n_save=11)
            member = traj_b.member(s)
            np.testing.assert_allclose(member.loss, single.loss, rtol=1e-9)
            np.testing.assert_allclose(member.weights[1], single.weights[1], rtol=1e-9, atol=1e-12)


def test_trajectory_save_load_round_trip(tmp_path):
    task = _task(2, 3, seed=6, cov=True)
    ws = cd.init_xavier(jax.random.PRNGKey(9), (3, 2, 2), 1.0)
    rule = cd.get_rule("frac-ngd-d", q=3.0, layer_rates=(0.2, 0.4))
    traj = cd.simulate(ws, task, rule, 1.0, n_save=5, seed=9)
    path = tmp_path / "traj.npz"
    traj.save(path)
    back = cd.Trajectory.load(path)
    assert back.rule == rule
    assert back.config["seed"] == 9
    assert back.config["curvdyn_version"] == cd.__version__
    assert back.status == traj.status
    for a, b in zip(back.weights + back.conserved, traj.weights + traj.conserved):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back.loss, traj.loss)
    np.testing.assert_array_equal(back.t, traj.t)


def test_recorded_observables_match_library_functions():
    task = _task(2, 3, seed=7, cov=True)
    ws = cd.init_xavier(jax.random.PRNGKey(4), (3, 3, 2), 1.0)
    traj = cd.simulate(ws, task, "sqrt-ngd", 2.0, eta=0.5, n_save=4)
    rule = cd.get_rule("sqrt-ngd")
    for k in range(len(traj)):
        wk = tuple(w[k] for w in traj.weights)
        np.testing.assert_allclose(traj.loss[k], float(cd.loss(wk, task)), rtol=1e-12)
        np.testing.assert_allclose(traj.map[k], np.asarray(cd.network_map(wk)), rtol=1e-12)
        d = rule.direction(wk, task)
        np.testing.assert_allclose(
            traj.update_norm[k], 0.5 * math.sqrt(sum(float(np.sum(np.square(v))) for v in d)), rtol=1e-10
        )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(eta=-1.0), "eta"),
        (dict(eta=float("nan")), "eta"),
        (dict(n_save=1), "n_save"),
        (dict(save_at=[0.0, 2.0, 1.0]), "save_at"),
        (dict(save_at=[0.0, 0.5, 2.0]), "t_end"),
        (dict(save_at=[0.0, 0.5, 1.0], n_save=3), "not both"),
        (dict(save_at=[0.0, 0.5, 1.0], integrator=cd.Euler(dt=0.1)), "save_at"),
        (dict(integrator=cd.Euler(dt=0.1, steps=3)), "conflicts"),
        (dict(loss_tol=-1.0), "loss_tol"),
        (dict(method="magic"), "method"),
    ],
)
def test_simulate_rejects_bad_options(kwargs, match):
    task = _task(2, 2)
    ws = cd.init_xavier(jax.random.PRNGKey(0), (2, 2, 2), 1.0)
    with pytest.raises(ValueError, match=match):
        cd.simulate(ws, task, "sgd", 1.0, **kwargs)


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: cd.ODE(rtol=0.0), "rtol"),
        (lambda: cd.ODE(atol=-1.0), "atol"),
        (lambda: cd.ODE(solver="rk4"), "solver"),
        (lambda: cd.ODE(max_steps=0), "max_steps"),
        (lambda: cd.ODE(max_steps=2.5), "max_steps"),
        (lambda: cd.Euler(dt=0.0), "dt"),
        (lambda: cd.Euler(steps=0), "steps"),
        (lambda: cd.Euler(clip=-1.0), "clip"),
    ],
)
def test_integrators_reject_bad_options(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_simulate_needs_an_end_and_an_integrator_object():
    task = _task(2, 2)
    ws = cd.init_xavier(jax.random.PRNGKey(0), (2, 2, 2), 1.0)
    with pytest.raises(ValueError, match="t_end"):
        cd.simulate(ws, task, "sgd")
    with pytest.raises(ValueError, match="t_end or Euler"):
        cd.simulate(ws, task, "sgd", integrator=cd.Euler())
    with pytest.raises(TypeError, match="integrator"):
        cd.simulate(ws, task, "sgd", 1.0, integrator="euler")
    traj = cd.simulate(ws, task, "sgd", save_at=[0.0, 0.5, 1.0])
    assert traj.config["t_end"] == 1.0 and traj.config["integrator"]["kind"] == "ode"
    traj = cd.simulate(ws, task, "sgd", integrator=cd.Euler(dt=0.25, steps=4), n_save=5)
    np.testing.assert_allclose(traj.t, [0.0, 0.25, 0.5, 0.75, 1.0])
    assert traj.config["integrator"] == {"kind": "euler", "dt": 0.25, "steps": 4, "clip": None}


def test_simulate_rejects_bad_weights_and_task():
    task = _task(2, 2)
    ws = cd.init_xavier(jax.random.PRNGKey(0), (2, 2, 2), 1.0)
    bad = (ws[0].at[0, 0].set(np.nan), ws[1])
    with pytest.raises(ValueError, match="non-finite"):
        cd.simulate(bad, task, "sgd", 1.0)
    with pytest.raises(ValueError, match="shape"):
        cd.simulate(ws, _task(3, 2), "sgd", 1.0)
    with pytest.raises(TypeError, match="Task"):
        cd.simulate(ws, np.eye(2), "sgd", 1.0)
    with pytest.raises(ValueError, match="known rules"):
        cd.simulate(ws, task, "adam", 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cd.simulate(ws, task, "sgd", 0.1, n_save=2).status == "completed"
