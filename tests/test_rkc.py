"""The Runge–Kutta–Chebyshev solver (curvdyn.rkc) against closed forms and a tight reference.

References: the exact solution of linear systems ``y' = −Λ y``; the stability polynomial
``P_s(z) = a_s + b_s T_s(w₀ + w₁ z)`` in closed form (Chebyshev polynomials through cosh); Tsit5 at
tight tolerance for a nonlinear gradient flow and for SGD on a deep linear network.
"""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from curvdyn import ODE, Task, get_rule, simulate
from curvdyn.init import init_random
from curvdyn.rkc import DAMPING, RHO_SAFETY, RKC, _w1, stages_for


def chebyshev_stability_polynomial(s: int, z, damping: float = DAMPING):
    """``P_s(z) = a_s + b_s T_s(w₀ + w₁ z)``: the factor by which one step multiplies a mode of
    ``y' = λ y`` at ``z = h λ`` (the reference the steps are checked against).
    """
    w0 = 1.0 + damping / s**2
    w1 = float(_w1(jnp.asarray(float(s)), jnp.asarray(w0)))
    # T_s(w₀), T_s'(w₀), T_s''(w₀) by their three-term recursions (as the stages use them)
    t, dt, d2t = (1.0, w0), (0.0, 1.0), (0.0, 0.0)
    for _ in range(s - 1):
        t, dt, d2t = (
            (t[1], 2 * w0 * t[1] - t[0]),
            (dt[1], 2 * t[1] + 2 * w0 * dt[1] - dt[0]),
            (d2t[1], 4 * dt[1] + 2 * w0 * d2t[1] - d2t[0]),
        )
    b_s = d2t[1] / dt[1] ** 2
    a_s = 1.0 - b_s * t[1]
    x = w0 + w1 * jnp.asarray(z)
    # T_s(x) for any real x: the three-term recursion (x may lie in [−1, 1] or beyond)
    t_prev, t_cur = jnp.ones_like(x), x
    for _ in range(s - 1):
        t_prev, t_cur = t_cur, 2 * x * t_cur - t_prev
    return a_s + b_s * t_cur


def _one_step(lam: float, h: float) -> tuple[float, int]:
    """One RKC step of ``y' = λ y`` from ``y = 1``: ``(y₁, s)``."""
    term = diffrax.ODETerm(lambda t, y, args: lam * y)
    solver = RKC()
    y0 = jnp.asarray([1.0])
    state = solver.init(term, 0.0, h, y0, None)
    y1, _, _, _, _ = solver.step(term, 0.0, h, y0, None, state, False)
    s = int(stages_for(jnp.asarray(h * abs(lam) * RHO_SAFETY)))
    return float(y1[0]), s


def _beta(s: int) -> float:
    """The stability interval's length ``(1 + w₀)/w₁`` (where ``w₀ + w₁ z`` reaches −1)."""
    w0 = 1.0 + DAMPING / s**2
    return (1.0 + w0) / float(_w1(jnp.asarray(float(s)), w0))


@pytest.mark.parametrize("s", [2, 3, 5, 10, 40, 200])
def test_stability_polynomial_is_damped_on_its_interval_and_second_order(s):
    beta = _beta(s)
    assert beta >= (0.49 if s == 2 else 0.58 if s < 5 else 0.62) * s**2  # → 0.653 s² (the paper's)
    z = jnp.linspace(-beta, 0.0, 20001)
    p = chebyshev_stability_polynomial(s, z)
    assert float(jnp.max(jnp.abs(p))) <= 1.0 + 1e-12
    # damped: inside the interval, away from z = 0, |P_s| stays below 1 − ε/3-ish (no neutral points)
    inner = p[z < -0.1 * beta]
    assert float(jnp.max(jnp.abs(inner))) < 0.99
    # second order: P_s(z) = 1 + z + z²/2 + O(z³)
    for zz in (1e-2, -1e-2):
        taylor = 1 + zz + zz**2 / 2
        assert abs(float(chebyshev_stability_polynomial(s, jnp.asarray(zz))) - taylor) < 5 * abs(zz) ** 3 * max(
            1, s**2 / 10
        )


def test_stage_count_covers_the_step():
    h_rho = np.logspace(-3, 6, 400)
    stages = np.asarray(stages_for(jnp.asarray(h_rho)))
    assert np.all(np.asarray([_beta(int(s)) for s in stages]) >= h_rho)
    assert stages[-1] < 1.3 * np.sqrt(h_rho[-1] / 0.653) + 2  # ~sqrt(hρ/0.653), not hρ


@pytest.mark.parametrize("lam, h", [(-1.0, 0.1), (-50.0, 0.3), (-1e3, 2.0), (-1e4, 5.0), (0.5, 0.2)])
def test_one_step_multiplies_by_the_stability_polynomial(lam, h):
    y1, s = _one_step(lam, h)
    assert y1 == pytest.approx(float(chebyshev_stability_polynomial(s, jnp.asarray(h * lam))), rel=1e-12, abs=1e-14)
    if lam < 0:
        assert abs(y1) <= 1.0  # stable at h|λ| far beyond an explicit RK method's ~3


def test_second_order_convergence_with_constant_steps():
    # y' = −y + sin t (y(0) = 1): y = (3/2) e^{−t} + (sin t − cos t)/2
    term = diffrax.ODETerm(lambda t, y, args: -y + jnp.sin(t))
    exact = 1.5 * np.exp(-2.0) + (np.sin(2.0) - np.cos(2.0)) / 2
    errors = []
    for n in (20, 40, 80):
        sol = diffrax.diffeqsolve(
            term, RKC(), 0.0, 2.0, 2.0 / n, jnp.asarray(1.0), stepsize_controller=diffrax.ConstantStepSize()
        )
        errors.append(abs(float(sol.ys[-1]) - exact))
    orders = np.log2(np.asarray(errors[:-1]) / np.asarray(errors[1:]))
    assert np.all((orders > 1.8) & (orders < 2.3)), orders


@pytest.mark.parametrize("rtol", [1e-5, 1e-8])
def test_stiff_linear_system_matches_the_exact_solution_in_few_steps(rtol):
    lam = jnp.logspace(-3, 3, 40)
    term = diffrax.ODETerm(lambda t, y, args: -lam * y)
    ts = jnp.linspace(0.0, 50.0, 11)
    kw = dict(saveat=diffrax.SaveAt(ts=ts), stepsize_controller=diffrax.PIDController(rtol=rtol, atol=rtol * 1e-3))
    sol = diffrax.diffeqsolve(term, RKC(), 0.0, 50.0, None, jnp.ones(40), max_steps=100_000, **kw)
    exact = jnp.exp(-lam[None] * ts[:, None])
    # global error: a few hundred local tolerances over the run (second order, 1e6 stiffness ratio)
    assert float(jnp.max(jnp.abs(sol.ys - exact))) < 300 * rtol
    if rtol == 1e-5:  # at loose tolerances Tsit5 is held at h ≈ 3.3/λ_max; RKC's steps follow accuracy
        tsit = diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, 50.0, None, jnp.ones(40), max_steps=100_000, **kw)
        assert int(sol.stats["num_steps"]) * 10 < int(tsit.stats["num_steps"])


def test_nonlinear_gradient_flow_converges_with_the_tolerance():
    lam = jnp.logspace(-2, 3, 30)

    def field(t, y, args):  # −∇(½ yᵀΛy + ¼ Σ y⁴ + ¼ (Σ y)²·0.1)
        return -(lam * y + y**3 + 0.05 * jnp.sum(y))

    term = diffrax.ODETerm(field)
    y0 = jnp.linspace(-1.0, 1.0, 30)
    ts = jnp.linspace(0.0, 20.0, 21)
    ref = diffrax.diffeqsolve(
        term,
        diffrax.Tsit5(),
        0.0,
        20.0,
        None,
        y0,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-14),
        max_steps=200_000,
    )
    errors = []
    for rtol in (1e-5, 1e-7, 1e-9):
        sol = diffrax.diffeqsolve(
            term,
            RKC(),
            0.0,
            20.0,
            None,
            y0,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=rtol * 1e-3),
            max_steps=200_000,
        )
        errors.append(float(jnp.max(jnp.abs(sol.ys - ref.ys))))
        assert errors[-1] < 100 * rtol
    assert errors[0] > 10 * errors[1] > 100 * errors[2]


def test_sgd_simulation_with_rkc_matches_tsit5_and_vmaps():
    key = jax.random.PRNGKey(3)
    k1, k2 = jax.random.split(key)
    n, d = 5, 3
    target = jax.random.normal(k1, (n, n)) * jnp.linspace(2.0, 0.05, n)
    task = Task(target=target)
    ws = init_random(k2, (n,) * (d + 1), 0.3)
    ts = jnp.linspace(0.0, 40.0, 21)
    tight = simulate(
        ws, task, get_rule("sgd"), 40.0, integrator=ODE(rtol=1e-11, atol=1e-13, max_steps=500_000), save_at=ts
    )
    rkc = simulate(ws, task, get_rule("sgd"), 40.0, integrator=ODE(rtol=1e-9, atol=1e-12, solver="rkc"), save_at=ts)
    assert rkc.status == "completed"
    scale = float(jnp.linalg.norm(tight.map[-1]))
    assert float(jnp.max(jnp.linalg.norm(rkc.map - tight.map, axis=(1, 2)))) / scale < 1e-6
    assert rkc.config["integrator"]["solver"] == "rkc"
    # a vmapped batch of two starts: each member keeps its own stage counts and steps
    ws2 = init_random(jax.random.PRNGKey(11), (n,) * (d + 1), 0.2)
    stacked = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), ws, ws2)
    ode = ODE(rtol=1e-9, atol=1e-12, solver="rkc")
    batch = simulate(stacked, task, get_rule("sgd"), 40.0, integrator=ode, save_at=ts, batch="vmap")
    for b, start in enumerate((ws, ws2)):
        single = simulate(start, task, get_rule("sgd"), 40.0, integrator=ode, save_at=ts)
        member = batch.member(b)
        assert member.status == "completed"
        # the same to the run's accuracy (round-off that adaptive steps amplify may differ)
        assert float(jnp.max(jnp.abs(member.map - single.map))) / scale < 1e-6
