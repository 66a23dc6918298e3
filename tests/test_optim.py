"""curvdyn.optim: fractional K-FAC and exact fractional NGD tied to the exact rules.

On deep linear networks with squared loss the optimizers must reproduce curvdyn's exact
``frac-ngd-d`` / ``frac-ngd`` directions (float64, relative error ≤ 1e-9); at q = 1 the K-FAC
statistics and preconditioner must agree with kfac-jax; and the optimizers must train a small
tanh MLP in an ordinary optax loop.
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import curvdyn as cd
import curvdyn.optim as co
from curvdyn import curvature as cv

TOL = 1e-9
Q_VALUES = (1.0, 2.0, 3.0)
# depth 2, 3, 4; the last has a bottleneck (n_1 = 3 < n_0 = 4): rank-deficient layer factors.
WIDTHS = ((3, 4, 2), (3, 4, 5, 2), (4, 3, 5, 4, 3))
N_SAMPLES = 7


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree_util.tree_leaves(tree)])


def _rel(got, ref) -> float:
    """‖got − ref‖ / ‖ref‖ over all parameters (NumPy: no JAX dispatch in the checks)."""
    ref = _flat(ref)
    return float(np.linalg.norm(_flat(got) - ref) / np.linalg.norm(ref))


def _whiten(x: np.ndarray) -> np.ndarray:
    evals, evecs = np.linalg.eigh(x @ x.T / x.shape[1])
    return (evecs / np.sqrt(evals)) @ evecs.T @ x


def _linear_problem(widths, *, whitened: bool, seed: int = 0):
    """Random O(1) Gaussian weights and data ``X (n_0, P)``, ``Y (n_d, P)`` (curvdyn layout)."""
    rng = np.random.default_rng(seed)
    n0, nd = widths[0], widths[-1]
    x = rng.normal(size=(n0, N_SAMPLES))
    if whitened:
        x = _whiten(x)
        np.testing.assert_allclose(x @ x.T / N_SAMPLES, np.eye(n0), atol=1e-13)
    else:
        x = x * np.linspace(0.5, 2.0, n0)[:, None]  # anisotropic Σ = X Xᵀ / P
    y = rng.normal(size=(nd, N_SAMPLES))
    ws = tuple(jnp.asarray(rng.normal(size=(b, a))) for a, b in zip(widths[:-1], widths[1:]))
    return ws, x, y


def _task(x, y) -> cd.Task:
    """``Task.from_data`` without its ``loss_offset``: the directions do not depend on it, and a
    Task keeps it as static pytree data, so every data set would otherwise recompile the rules."""
    task = cd.Task.from_data(x, y)
    return cd.Task(task.target, task.input_cov)


@partial(jax.jit, static_argnames=("reduction", "loss_scale"))
def _data_loss_grads(ws, x, y, *, reduction="mean", loss_scale=1.0):
    """Gradient of the data loss for curvdyn-layout data ``x (n_0, P)``, ``y (n_d, P)``."""
    return jax.grad(co.MLP("linear").loss)(ws, x.T, y.T, reduction=reduction, loss_scale=loss_scale)


# ---------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("whitened", [True, False])
def test_kfac_factors_are_the_exact_layer_factors_of_a_linear_network(whitened):
    """G_i = A_iᵀ A_i and A_i = B_i Σ B_iᵀ exactly (DESIGN.md), whatever Σ."""
    ws, x, y = _linear_problem(WIDTHS[2], whitened=whitened)
    task = _task(x, y)
    stats = co.kfac_statistics(co.MLP("linear"), ws, jnp.asarray(x.T))
    for (left, right), g, a in zip(jax.jit(cv.layer_factors)(ws, task), stats.output_factors, stats.input_factors):
        np.testing.assert_allclose(g, left, rtol=0, atol=1e-12 * float(jnp.max(jnp.abs(left))))
        np.testing.assert_allclose(a, right, rtol=0, atol=1e-12 * float(jnp.max(jnp.abs(right))))
    # The data gradient is curvdyn's gradient of ½ tr(ΔΣΔᵀ) (mean reduction, factor ½).
    assert _rel(_data_loss_grads(ws, x, y), cd.gradient(ws, task)) < 1e-13


def test_kfac_statistics_single_example_equal_the_exact_gauss_newton_block():
    """With one example K-FAC is exact for any MLP: G ⊗ A is the GN block of [w | b] (tanh, bias)."""
    model = co.MLP("tanh", output_activation="sigmoid")
    rng = np.random.default_rng(3)
    params = tuple(
        {"w": jnp.asarray(rng.normal(size=(n, m))), "b": jnp.asarray(rng.normal(size=n))}
        for m, n in zip((3, 5, 4), (5, 4, 2))
    )
    x = jnp.asarray(rng.normal(size=(1, 3)))
    stats = co.kfac_statistics(model, params, x, loss_scale=2.0)
    jac = jax.jit(jax.jacfwd(lambda p: model(p, x).ravel()))(params)  # per layer {"w": (2, n, m), "b": (2, n)}
    for g, a, j in zip(stats.output_factors, stats.input_factors, jac):
        j_tilde = jnp.concatenate([j["w"], j["b"][:, :, None]], axis=2).reshape(2, -1)  # row-major vec [w | b]
        np.testing.assert_allclose(jnp.kron(g, a), 2.0 * j_tilde.T @ j_tilde, rtol=0, atol=1e-13)


# ---------------------------------------------------------------------------------------
# fractional K-FAC == frac-ngd-d on deep linear networks
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("whitened", [True, False], ids=["whitened", "general-cov"])
@pytest.mark.parametrize("widths", WIDTHS, ids=["d2", "d3", "d4-bottleneck"])
def test_fractional_kfac_equals_frac_ngd_d(widths, whitened):
    """Undamped, current-batch factors, d^{-1/q} scaling: exactly the block rule (eq. 25)."""
    ws, x, y = _linear_problem(widths, whitened=whitened)
    task = _task(x, y)
    grads = _data_loss_grads(ws, x, y)
    stats = co.kfac_statistics(co.MLP("linear"), ws, jnp.asarray(x.T))
    refs = {}
    for q in Q_VALUES:
        got = co.fractional_kfac_direction(grads, stats, q=q, damping=0.0, depth_scaling=True)
        refs[q] = cd.get_rule("frac-ngd-d", q=q).direction(ws, task, method="dense")
        assert _rel(got, refs[q]) < TOL, (q, _rel(got, refs[q]))
    # the weights' spectra are far from flat: different q give clearly different directions
    assert _rel(refs[1.0], refs[2.0]) > 1e-2 and _rel(refs[2.0], refs[3.0]) > 1e-2


def test_fractional_kfac_transformation_is_the_block_rule():
    """The optax transformation (decay 0, no damping) gives the same exact direction (q = 2:
    sqrt-NGD-d; q = 1 goes through it in the kfac-jax optimizer test)."""
    q = 2.0
    ws, x, y = _linear_problem(WIDTHS[1], whitened=True, seed=4)
    model, inputs = co.MLP("linear"), jnp.asarray(x.T)
    tx = co.scale_by_fractional_kfac(q=q, damping=0.0, decay=0.0, depth_scaling=True)
    update = jax.jit(lambda g, s: tx.update(g, s, ws, curvature=lambda: co.kfac_statistics(model, ws, inputs)))
    got, _ = update(_data_loss_grads(ws, x, y), tx.init(ws))
    ref = cd.get_rule("frac-ngd-d", q=q).direction(ws, _task(x, y), method="dense")
    assert _rel(got, ref) < TOL


@pytest.mark.parametrize("q", Q_VALUES)
def test_fractional_kfac_kronecker_damping_equals_lm_damping(q):
    ws, x, y = _linear_problem(WIDTHS[1], whitened=False, seed=1)
    task = _task(x, y)
    stats = co.kfac_statistics(co.MLP("linear"), ws, jnp.asarray(x.T))
    lam = 0.05
    got = co.fractional_kfac_direction(
        _data_loss_grads(ws, x, y), stats, q=q, damping=lam, damping_mode="kronecker", depth_scaling=True
    )
    ref = cd.get_rule("frac-ngd-d", q=q, lm_damping=lam).direction(ws, task, method="dense")
    assert _rel(got, ref) < TOL


def test_fractional_kfac_factored_damping_formula():
    """Factored damping: (G + λ_G I)^{-1/q} ∇W (A + λ_A I)^{-1/q}, λ_A = π√λ, λ_G = √λ/π."""
    ws, x, y = _linear_problem(WIDTHS[0], whitened=False, seed=2)
    grads = _data_loss_grads(ws, x, y)
    stats = co.kfac_statistics(co.MLP("linear"), ws, jnp.asarray(x.T))
    lam, q = 0.3, 2.0

    def mpow(m, shift):
        vals, vecs = np.linalg.eigh(np.asarray(m))
        return (vecs * (vals + shift) ** (-1 / q)) @ vecs.T

    for pi_adjusted in (True, False):
        got = co.fractional_kfac_direction(grads, stats, q=q, damping=lam, pi_adjusted=pi_adjusted)
        ref = []
        for g_i, g, a in zip(grads, stats.output_factors, stats.input_factors):
            pi = math.sqrt((np.trace(a) / len(a)) / (np.trace(g) / len(g))) if pi_adjusted else 1.0
            ref.append(mpow(g, math.sqrt(lam) / pi) @ np.asarray(g_i) @ mpow(a, math.sqrt(lam) * pi))
        assert _rel(got, ref) < 1e-12


# ---------------------------------------------------------------------------------------
# exact fractional NGD == frac-ngd
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("whitened", [True, False], ids=["whitened", "general-cov"])
@pytest.mark.parametrize("widths", WIDTHS, ids=["d2", "d3", "d4-bottleneck"])
def test_fractional_ngd_equals_frac_ngd(widths, whitened):
    ws, x, y = _linear_problem(widths, whitened=whitened)
    task = _task(x, y)
    grads = _data_loss_grads(ws, x, y)
    for q in Q_VALUES:
        ref = cd.get_rule("frac-ngd", q=q).direction(ws, task, method="dense")
        for solver in co.SOLVERS:  # these K are well conditioned (≤ 1e4): "eigh" is exact here too
            got = co.fractional_ngd_direction(co.MLP("linear"), ws, jnp.asarray(x.T), grads, q=q, solver=solver)
            assert _rel(got, ref) < TOL, (q, solver, _rel(got, ref))


def test_fractional_ngd_transformation_is_the_exact_rule():
    ws, x, y = _linear_problem(WIDTHS[2], whitened=True, seed=4)
    tx = co.scale_by_fractional_ngd(co.MLP("linear"), q=2.0)
    update = jax.jit(lambda g, s, p, inputs: tx.update(g, s, p, inputs=inputs))
    got, state = update(_data_loss_grads(ws, x, y), tx.init(ws), ws, jnp.asarray(x.T))
    ref = cd.get_rule("frac-ngd", q=2.0).direction(ws, _task(x, y), method="dense")
    assert _rel(got, ref) < TOL and int(state.count) == 1


@pytest.mark.parametrize("q", Q_VALUES)
def test_fractional_ngd_damping_equals_lm_damping(q):
    ws, x, y = _linear_problem(WIDTHS[1], whitened=False, seed=1)
    task = _task(x, y)
    lam = 0.05
    grads = _data_loss_grads(ws, x, y)
    got = co.fractional_ngd_direction(co.MLP("linear"), ws, jnp.asarray(x.T), grads, q=q, damping=lam)
    ref = cd.get_rule("frac-ngd", q=q, lm_damping=lam).direction(ws, task, method="dense")
    assert _rel(got, ref) < TOL


def test_reduction_and_loss_scale_conventions():
    """L' = κ L (here Σ_b ‖f − y‖², κ = 2P) with matching options gives κ^{1−1/q} × the direction of L."""
    ws, x, y = _linear_problem(WIDTHS[1], whitened=False, seed=3)
    model, inputs = co.MLP("linear"), jnp.asarray(x.T)
    kappa = 2.0 * N_SAMPLES
    g_mean = _data_loss_grads(ws, x, y)
    g_sum = _data_loss_grads(ws, x, y, reduction="sum", loss_scale=2.0)
    assert _rel(g_sum, jax.tree_util.tree_map(lambda g: kappa * g, g_mean)) < 1e-13
    stats_mean = co.kfac_statistics(model, ws, inputs)
    stats_sum = co.kfac_statistics(model, ws, inputs, reduction="sum", loss_scale=2.0)
    for q in (1.0, 2.0):
        factor = kappa ** (1 - 1 / q)
        ref = co.fractional_kfac_direction(g_mean, stats_mean, q=q, damping=0.0)
        got = co.fractional_kfac_direction(g_sum, stats_sum, q=q, damping=0.0)
        assert _rel(got, [factor * np.asarray(d) for d in ref]) < TOL
        ref = co.fractional_ngd_direction(model, ws, inputs, g_mean, q=q)
        got = co.fractional_ngd_direction(model, ws, inputs, g_sum, q=q, reduction="sum", loss_scale=2.0)
        assert _rel(got, [factor * np.asarray(d) for d in ref]) < TOL


def test_q_infinity_is_the_gradient():
    ws, x, y = _linear_problem(WIDTHS[0], whitened=True)
    grads = _data_loss_grads(ws, x, y)
    stats = co.kfac_statistics(co.MLP("linear"), ws, jnp.asarray(x.T))
    assert _rel(co.fractional_kfac_direction(grads, stats, q=math.inf, depth_scaling=True), grads) == 0.0
    assert _rel(co.fractional_ngd_direction(co.MLP("linear"), ws, jnp.asarray(x.T), grads, q=math.inf), grads) == 0.0


# ---------------------------------------------------------------------------------------
# moving averages and update periods
# ---------------------------------------------------------------------------------------


def test_moving_average_and_update_periods():
    model = co.MLP("tanh")
    params = _student((3, 6, 2), seed=1)
    rng = np.random.default_rng(2)
    xs = [jnp.asarray(rng.normal(size=(5, 3))) for _ in range(5)]
    stats = [co.kfac_statistics(model, params, x) for x in xs]
    decay = 0.6
    tx = co.scale_by_fractional_kfac(q=2.0, damping=1e-2, decay=decay, factor_update_every=2, root_update_every=3)
    step = jax.jit(lambda g, s, x: tx.update(g, s, params, curvature=lambda: co.kfac_statistics(model, params, x)))
    grads = jax.tree_util.tree_map(lambda p: jnp.asarray(np.ones(p.shape)), params)
    state = tx.init(params)
    history = []
    for x in xs:
        _, state = step(grads, state, x)
        history.append(state)
    # factors refreshed at steps 0, 2, 4 with a bias-corrected moving average
    mix = [stats[0], stats[2], stats[4]]
    weights = np.array([decay**2, decay, 1.0]) * (1 - decay)
    assert float(state.ema_weight) == pytest.approx(weights.sum(), rel=1e-14)
    for i in range(2):
        expected = sum(w * s.input_factors[i] for w, s in zip(weights, mix)) / weights.sum()
        np.testing.assert_allclose(state.input_sums[i] / state.ema_weight, expected, rtol=1e-13)
    # the first update uses the first batch's factors exactly
    first = history[0]
    np.testing.assert_allclose(first.output_sums[1] / first.ema_weight, stats[0].output_factors[1], rtol=1e-13)
    # roots refreshed at steps 0 and 3 only
    same = [all(np.array_equal(a, b) for a, b in zip(history[k].weights, history[k - 1].weights)) for k in range(1, 5)]
    assert same == [True, True, False, True]
    assert int(state.count) == 5


# ---------------------------------------------------------------------------------------
# optax training loops
# ---------------------------------------------------------------------------------------


def _teacher_data(n=64):
    rng = np.random.default_rng(10)
    w1, w2 = 2.0 * rng.normal(size=(8, 4)) / 2.0, 2.0 * rng.normal(size=(3, 8)) / np.sqrt(8)
    x = rng.normal(size=(n, 4))
    return jnp.asarray(x), jnp.asarray(np.tanh(x @ w1.T) @ w2.T)


def _student(widths, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(
        {"w": jnp.asarray(rng.normal(size=(n, m)) / np.sqrt(m)), "b": jnp.zeros(n)}
        for m, n in zip(widths[:-1], widths[1:])
    )


def test_fractional_kfac_trains_a_tanh_mlp_in_an_optax_loop():
    x, y = _teacher_data()
    model = co.MLP("tanh")
    params = _student((4, 16, 3))
    # chained with a plain optax transformation: the extra argument reaches fractional K-FAC
    opt = optax.chain(
        optax.clip_by_global_norm(10.0),
        co.fractional_kfac(0.2, q=2.0, damping=1e-3, decay=0.9, factor_update_every=2, root_update_every=4),
    )
    state = opt.init(params)

    @jax.jit
    def train_step(params, state):
        loss, grads = jax.value_and_grad(model.loss)(params, x, y)
        updates, state = opt.update(grads, state, params, curvature=lambda: co.kfac_statistics(model, params, x))
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(60):
        params, state, loss = train_step(params, state)
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.05 * losses[0], losses[::10]


def test_fractional_ngd_trains_a_tanh_mlp_in_an_optax_loop():
    x, y = _teacher_data(n=16)
    model = co.MLP("tanh")
    params = _student((4, 6, 3))
    opt = co.fractional_ngd(0.5, model, q=2.0, damping=1e-6)
    state = opt.init(params)

    @jax.jit
    def train_step(params, state):
        loss, grads = jax.value_and_grad(model.loss)(params, x, y)
        updates, state = opt.update(grads, state, params, inputs=x)
        return optax.apply_updates(params, updates), state, loss

    losses = []
    for _ in range(30):
        params, state, loss = train_step(params, state)
        losses.append(float(loss))
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.05 * losses[0], losses[::5]


# ---------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"q": 0.5}, "q must be >= 1"),
        ({"q": float("nan")}, "q must be >= 1"),
        ({"damping": -1e-3}, "damping must be finite and >= 0"),
        ({"damping": float("inf")}, "damping must be finite and >= 0"),
        ({"decay": 1.0}, "decay must lie in"),
        ({"decay": float("nan")}, "decay must be finite"),
        ({"rcond": 1.0}, "rcond must lie in"),
        ({"factor_update_every": 0}, "factor_update_every must be a positive integer"),
        ({"root_update_every": 1.5}, "root_update_every must be a positive integer"),
        ({"damping_mode": "tikhonov"}, "damping_mode must be one of"),
        ({"learning_rate": float("nan")}, "learning_rate must be finite"),
        ({"learning_rate": -0.1}, "learning_rate must be finite and >= 0"),
    ],
)
def test_fractional_kfac_rejects_bad_hyperparameters(kwargs, match):
    kwargs = {"learning_rate": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        co.fractional_kfac(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"q": 0.99}, "q must be >= 1"),
        ({"damping": -1.0}, "damping must be finite and >= 0"),
        ({"damping": float("nan")}, "damping must be finite and >= 0"),
        ({"reduction": "avg"}, "reduction must be one of"),
        ({"loss_scale": 0.0}, "loss_scale must be > 0"),
        ({"loss_scale": float("inf")}, "loss_scale must be finite"),
        ({"solver": "lstsq"}, "solver must be one of"),
    ],
)
def test_fractional_ngd_rejects_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        co.fractional_ngd(0.1, co.MLP("linear"), **kwargs)


def test_bad_runtime_input_raises_clear_errors():
    model = co.MLP("linear")
    ws, x, y = _linear_problem(WIDTHS[0], whitened=True)
    inputs = jnp.asarray(x.T)
    grads = _data_loss_grads(ws, x, y)
    stats = co.kfac_statistics(model, ws, inputs)
    tx = co.scale_by_fractional_kfac(q=2.0)
    with pytest.raises(ValueError, match="needs the layer statistics"):
        tx.update(grads, tx.init(ws), ws)
    wrong = co.KFACStatistics(stats.output_factors[::-1], stats.input_factors)
    with pytest.raises(ValueError, match="factors must have shapes"):
        tx.update(grads, tx.init(ws), ws, curvature=wrong)
    bad_grads = (grads[0].at[0, 0].set(jnp.nan),) + grads[1:]
    with pytest.raises(ValueError, match="non-finite"):
        co.fractional_kfac_direction(bad_grads, stats)
    with pytest.raises(ValueError, match="non-finite"):
        co.kfac_statistics(model, ws, inputs.at[0, 0].set(jnp.inf))
    with pytest.raises(ValueError, match="non-finite"):
        co.fractional_ngd_direction(model, ws, inputs, bad_grads)
    ngd = co.scale_by_fractional_ngd(model)
    with pytest.raises(ValueError, match="needs the parameters and the batch"):
        ngd.update(grads, ngd.init(ws), ws)
    with pytest.raises(ValueError, match="inputs must have shape"):
        co.kfac_statistics(model, ws, inputs.T)
    with pytest.raises(ValueError, match="layers do not chain"):
        co.kfac_statistics(model, (ws[1], ws[0]), inputs)
    with pytest.raises(ValueError, match="unknown activation"):
        co.MLP("swishy")


# ---------------------------------------------------------------------------------------
# agreement with kfac-jax at q = 1 (and its exact matrix powers at q = 2, 3)
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kfac_jax():
    """kfac-jax, with a compatibility shim for JAX versions whose ``get_bind_params`` returns
    only the params (kfac-jax 0.0.8's ``tag_graph_matcher.eval_jaxpr_eqn`` expects a pair)."""
    kfac_jax = pytest.importorskip("kfac_jax")
    from jax.extend import source_info_util
    from kfac_jax._src import tag_graph_matcher as tgm

    original = tgm.eval_jaxpr_eqn

    def eval_jaxpr_eqn(eqn, in_values):
        bind = eqn.primitive.get_bind_params(eqn.params)
        subfuns, params = ((), bind) if isinstance(bind, dict) else bind
        with source_info_util.user_context(eqn.source_info.traceback):
            out = eqn.primitive.bind(*subfuns, *in_values, **params)
        return out if isinstance(out, list) else [out]

    tgm.eval_jaxpr_eqn = eval_jaxpr_eqn
    yield kfac_jax
    tgm.eval_jaxpr_eqn = original


KFAC_WIDTHS = (3, 5, 4, 2)
KFAC_BATCH = 8


def _kfac_problem(kfac_jax):
    """A tanh MLP with biases in both layouts: ours ``w (n_out, n_in)``, kfac-jax's ``w (n_in, n_out)``."""
    model = co.MLP("tanh")
    rng = np.random.default_rng(5)
    params = tuple(
        {"w": jnp.asarray(rng.normal(size=(n, m))), "b": jnp.asarray(rng.normal(size=n))}
        for m, n in zip(KFAC_WIDTHS[:-1], KFAC_WIDTHS[1:])
    )
    batches = [
        (
            jnp.asarray(rng.normal(size=(KFAC_BATCH, KFAC_WIDTHS[0]))),
            jnp.asarray(rng.normal(size=(KFAC_BATCH, KFAC_WIDTHS[-1]))),
        )
        for _ in range(2)
    ]

    def their_params():  # fresh buffers: kfac_jax.Optimizer donates its arguments
        return [{"w": jnp.array(p["w"].T), "b": jnp.array(p["b"])} for p in params]

    def their_loss(tp, batch):
        x, y = batch
        a = x
        for i, layer in enumerate(tp):
            a = a @ layer["w"] + layer["b"]
            a = jnp.tanh(a) if i < len(tp) - 1 else a
        # kfac-jax's squared error is weight · Σ‖y − f‖² / B; weight ½ is our default convention
        kfac_jax.register_squared_error_loss(a, y, weight=0.5)
        return 0.5 * jnp.mean(jnp.sum((a - y) ** 2, axis=1))

    return model, params, batches, their_params, their_loss


def _to_ours(tp):
    return tuple({"w": layer["w"].T, "b": layer["b"]} for layer in tp)


def test_kfac_statistics_and_preconditioner_match_kfac_jax(kfac_jax):
    model, params, batches, their_params, their_loss = _kfac_problem(kfac_jax)
    est = kfac_jax.curvature_estimator.BlockDiagonalCurvature(their_loss, default_estimation_mode="ggn_exact")
    tp = their_params()
    est_state = est.init(
        jax.random.PRNGKey(0), (tp, batches[0]), exact_powers_to_cache=None, approx_powers_to_cache=None
    )
    for block, (n_in, n_out) in zip(est.blocks, zip(KFAC_WIDTHS[:-1], KFAC_WIDTHS[1:])):
        assert tuple(block.parameters_shapes) == ((n_in, n_out), (n_out,))  # one dense block per layer, in order

    decay = 0.7

    @jax.jit
    def estimate(state, batch):  # kfac-jax's optimizer convention: ema_old = decay, ema_new = 1
        return est.update_curvature_matrix_estimate(
            state,
            ema_old=decay,
            ema_new=1.0,
            identity_weight=0.0,
            batch_size=KFAC_BATCH,
            rng=jax.random.PRNGKey(1),
            func_args=(tp, batch),
        )

    first = estimate(est_state, batches[0])
    second = estimate(first, batches[1])

    # 1. factors: A = E[[a;1][a;1]ᵀ] (bias last), G = E[J_sᵀ J_s] ("ggn_exact")
    stats = co.kfac_statistics(model, params, batches[0][0])
    for block_state, g, a in zip(first.blocks_states, stats.output_factors, stats.input_factors):
        np.testing.assert_allclose(block_state.factors[0].value, a, rtol=0, atol=1e-14)
        np.testing.assert_allclose(block_state.factors[1].value, g, rtol=0, atol=1e-14)

    # 2. moving averages: kfac-jax's (ema_old = decay, ema_new = 1) weighting is ours,
    #    Σ_k decay^k stat_{t−k} / Σ_k decay^k (the transformation's own EMA: see the test above)
    stats2 = co.kfac_statistics(model, params, batches[1][0])
    for block_state, s1, s2 in zip(second.blocks_states, zip(*stats), zip(*stats2)):
        for k in (0, 1):  # kfac-jax factor 0 is A, factor 1 is G
            mixed = (decay * np.asarray(s1[1 - k]) + np.asarray(s2[1 - k])) / (decay + 1.0)
            np.testing.assert_allclose(block_state.factors[k].value, mixed, rtol=1e-13)

    # 3. preconditioned gradients, damping λ: exact (G ⊗ A + λI)^{-1/q} and K-FAC's factored damping
    their_grads = jax.jit(jax.grad(their_loss))(tp, batches[0])
    our_grads = _to_ours(their_grads)
    assert _rel(our_grads, jax.jit(jax.grad(model.loss))(params, *batches[0])) < 1e-14
    lam = 1e-2
    requests = [(-1.0 / q, True) for q in Q_VALUES] + [(-1.0, False)]  # (power, exact_power)
    results = jax.jit(
        lambda s, v: [
            est.multiply_matpower(
                s, v, identity_weight=lam, power=p, exact_power=e, use_cached=False, pmap_axis_name=None
            )
            for p, e in requests
        ]
    )(first, their_grads)
    for q, theirs in zip(Q_VALUES, results):
        ours = co.fractional_kfac_direction(our_grads, stats, q=q, damping=lam, damping_mode="kronecker")
        assert _rel(ours, _to_ours(theirs)) < TOL, (q, _rel(ours, _to_ours(theirs)))
    # exact_power=False at power −1: K-FAC's pi-adjusted factored damping
    ours = co.fractional_kfac_direction(our_grads, stats, q=1.0, damping=lam, damping_mode="factored")
    assert _rel(ours, _to_ours(results[-1])) < TOL


def test_fractional_kfac_step_matches_a_kfac_jax_optimizer_step(kfac_jax):
    """One step of kfac_jax.Optimizer in its default K-FAC configuration (approximate inverses with
    pi-adjusted factored damping), fixed learning rate and damping, no momentum, no moving
    average, equals one step of ``fractional_kfac(q=1)`` with the default ``damping_mode``."""
    model, params, batches, their_params, their_loss = _kfac_problem(kfac_jax)
    lr, lam = 0.3, 1e-2
    opt = kfac_jax.Optimizer(
        value_and_grad_func=jax.value_and_grad(their_loss),
        l2_reg=0.0,
        use_adaptive_learning_rate=False,
        use_adaptive_momentum=False,
        use_adaptive_damping=False,
        estimation_mode="ggn_exact",
        curvature_ema=0.0,
        inverse_update_period=1,
        num_burnin_steps=0,
        multi_device=False,
    )
    opt_state = opt.init(their_params(), jax.random.PRNGKey(0), batches[0])
    new_theirs, _, _ = opt.step(
        their_params(),
        opt_state,
        jax.random.PRNGKey(2),
        batch=batches[0],
        learning_rate=jnp.asarray(lr),
        momentum=jnp.asarray(0.0),
        damping=jnp.asarray(lam),
    )
    ours = co.fractional_kfac(lr, q=1.0, damping=lam, decay=0.0)
    x, y = batches[0]
    step = jax.jit(
        lambda p: ours.update(
            jax.grad(model.loss)(p, x, y), ours.init(p), p, curvature=co.kfac_statistics(model, p, x)
        )[0]
    )
    new_ours = optax.apply_updates(params, step(params))
    leaves = jax.tree_util.tree_leaves
    step_ours = [np.asarray(a) - np.asarray(b) for a, b in zip(leaves(new_ours), leaves(params))]
    step_theirs = [np.asarray(a) - np.asarray(b) for a, b in zip(leaves(_to_ours(new_theirs)), leaves(params))]
    assert _rel(step_ours, step_theirs) < TOL
