"""Tests of the experiments beyond the paper's figures (``relu``, ``digits``) and of
:mod:`curvdyn.nonlinear` (exact block-diagonal fractional NGD, rescaling symmetry).

* The exact block-diagonal direction of a ReLU network equals a dense reference built
  independently here (``jax.jacfwd`` Jacobian, Gauss–Newton blocks ``c J_iᵀJ_i``, NumPy
  ``eigh``, pseudo-inverse power) to 1e-9 relative; on a deep linear network it equals
  fractional K-FAC with the layer factor (where K-FAC is exact).
* The full NGD direction is orthogonal to every per-unit rescaling direction (1e-10 relative),
  which lie in the null space of ``J``; the block direction is not.
* Each experiment's quick variant is computed once, its data sent through an
  ``np.savez``/``np.load`` round trip and its configuration through JSON; claims, description
  and figure come from the reloaded files only.

Runtime: about 35 s (the two quick variants; mostly JAX compilation).
"""

from __future__ import annotations

import builtins
import dataclasses
import io
import math

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import curvdyn  # noqa: F401  (float64)
import curvdyn.optim as co
import quick_runs
from curvdyn import experiments
from curvdyn import nonlinear as nl
from curvdyn.experiments.base import Config
from quick_runs import run

pytestmark = pytest.mark.usefixtures("quick_reproduce")  # run(name) reads its files

NAMES = ("relu", "digits")

# Claims whose quick-mode measurement does not confirm the paper (digits: its deep-linear exponent;
# relu: exact NGD's integrated drift on the task of seed 1, see relu.NGD_SINGULAR); they
# carry a documented known_deviation (not blocking).
KNOWN_DISAGREEMENTS = {"relu": {"conservation-ngd"}, "digits": {"exponent-kfac-deep-linear-value"}}

RELU = co.MLP("relu")


# ---------------------------------------------------------------------------------------
# curvdyn.nonlinear against a dense reference
# ---------------------------------------------------------------------------------------


def _relu_problem(seed=0, widths=(4, 6, 5, 3), batch=7, bias=False):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = RELU.init(k1, widths, bias=bias)
    if bias:  # nonzero biases, so their columns matter
        params = tuple(
            dict(p, b=0.3 * jax.random.normal(jax.random.fold_in(k1, i), p["b"].shape)) for i, p in enumerate(params)
        )
    x = jax.random.normal(k2, (batch, widths[0]))
    y = jax.random.normal(k3, (batch, widths[-1]))
    return params, x, y


def _dense_block_reference(params, x, grads, q, *, c, damping=0.0, rcond=1e-13):
    """``d^{-1/q} (H_i⁺)^{1/q} g_i`` per layer from the dense Gauss–Newton blocks (NumPy eigh)."""
    theta, unravel = ravel_pytree(params)
    jac = np.asarray(jax.jacfwd(lambda th: RELU(unravel(th), x).ravel())(theta))
    g = np.asarray(ravel_pytree(grads)[0])
    sizes = [ravel_pytree(layer)[0].size for layer in params]
    out, start = [], 0
    for n in sizes:
        ji = jac[:, start : start + n]
        h = c * ji.T @ ji
        evals, evecs = np.linalg.eigh(h)
        evals = np.maximum(evals, 0.0)
        if damping > 0:
            f = (evals + damping) ** (-1.0 / q)
        else:
            keep = evals > rcond * evals.max()
            f = np.where(keep, np.where(keep, evals, 1.0) ** (-1.0 / q), 0.0)
        out.append(len(sizes) ** (-1.0 / q) * evecs @ (f * (evecs.T @ g[start : start + n])))
        start += n
    return np.concatenate(out)


def _rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


@pytest.mark.parametrize("q", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("solver", ["svd", "eigh"])
def test_block_direction_matches_dense_reference_relu(q, solver):
    params, x, y = _relu_problem()
    grads = jax.grad(RELU.loss)(params, x, y)
    got = nl.block_fractional_ngd_direction(RELU, params, x, grads, q=q, solver=solver)
    ref = _dense_block_reference(params, x, grads, q, c=1.0 / x.shape[0])
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(params)
    assert _rel(ravel_pytree(got)[0], ref) < 1e-9


def test_block_direction_with_biases_and_damping():
    params, x, y = _relu_problem(seed=8, bias=True)  # well-conditioned blocks (cond(H_i) < 1e4)
    grads = jax.grad(RELU.loss)(params, x, y)
    for q, lam in ((1.0, 0.0), (2.0, 1e-3)):
        got = nl.block_fractional_ngd_direction(RELU, params, x, grads, q=q, damping=lam)
        ref = _dense_block_reference(params, x, grads, q, c=1.0 / x.shape[0], damping=lam)
        assert _rel(ravel_pytree(got)[0], ref) < 1e-9


def test_block_direction_loss_convention_and_depth_scaling():
    params, x, y = _relu_problem(seed=1)
    # L' = κ L has gradient κ g and H₊' = κ H₊: the direction scales by κ^{1 − 1/q}
    grads = jax.grad(RELU.loss)(params, x, y)
    kappa, q = 3.0, 2.0
    base = ravel_pytree(nl.block_fractional_ngd_direction(RELU, params, x, grads, q=q))[0]
    scaled_grads = jax.tree_util.tree_map(lambda g: kappa * g, grads)
    scaled = ravel_pytree(nl.block_fractional_ngd_direction(RELU, params, x, scaled_grads, q=q, loss_scale=kappa))[0]
    assert _rel(scaled, kappa ** (1 - 1 / q) * base) < 1e-10
    plain = ravel_pytree(nl.block_fractional_ngd_direction(RELU, params, x, grads, q=q, depth_scaling=False))[0]
    assert _rel(plain, len(params) ** (1 / q) * base) < 1e-12


@pytest.mark.parametrize("q", [1.0, 2.0])
def test_block_direction_is_kfac_on_a_deep_linear_network(q):
    model = co.MLP("linear")
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(5), 3)
    params = model.init(k1, (3, 4, 4, 2), bias=False)
    x = jax.random.normal(k2, (9, 3))
    grads = jax.grad(model.loss)(params, x, jax.random.normal(k3, (9, 2)))
    block = nl.block_fractional_ngd_direction(model, params, x, grads, q=q)
    kfac = co.fractional_kfac_direction(
        grads, co.kfac_statistics(model, params, x), q=q, damping=0.0, depth_scaling=True
    )
    assert _rel(ravel_pytree(block)[0], ravel_pytree(kfac)[0]) < 1e-9


def test_rescaling_directions_span_null_space_and_balances():
    params, x, _ = _relu_problem(seed=2)
    theta, unravel = ravel_pytree(params)
    jac = np.asarray(jax.jacfwd(lambda th: RELU(unravel(th), x).ravel())(theta))
    vs = np.asarray(jax.vmap(lambda v: ravel_pytree(v)[0])(nl.rescaling_directions(params)))
    n_hidden = sum(w.shape[0] for w in params[:-1])
    assert vs.shape == (n_hidden, theta.size)
    assert np.max(np.abs(jac @ vs.T)) < 1e-12 * np.max(np.abs(jac))
    # c_u and its gradient: ∇c_u = 2 v_u
    bal = np.asarray(nl.unit_balances(params))
    w1, w2 = np.asarray(params[0]), np.asarray(params[1])
    np.testing.assert_allclose(bal[: w1.shape[0]], np.sum(w1**2, 1) - np.sum(w2**2, 0), rtol=1e-13)
    grad_c = np.asarray(jax.jacfwd(lambda th: nl.unit_balances(unravel(th)))(theta))
    np.testing.assert_allclose(grad_c, 2 * vs, atol=1e-13)
    # the symmetry itself: rescaling unit 0 leaves the function unchanged
    c = 1.7
    scaled = (params[0].at[0].mul(c), params[1].at[:, 0].divide(c)) + tuple(params[2:])
    np.testing.assert_allclose(RELU(scaled, x), RELU(params, x), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("q", [1.0, 2.0, math.inf])
def test_full_ngd_direction_is_orthogonal_to_every_rescaling_direction(q):
    params, x, y = _relu_problem(seed=4)
    grads = jax.grad(RELU.loss)(params, x, y)
    vs = np.asarray(jax.vmap(lambda v: ravel_pytree(v)[0])(nl.rescaling_directions(params)))
    full = np.asarray(ravel_pytree(co.fractional_ngd_direction(RELU, params, x, grads, q=q))[0])
    rel = np.abs(vs @ full) / (np.linalg.norm(vs, axis=1) * np.linalg.norm(full))
    assert np.max(rel) < 1e-10
    if not math.isinf(q):  # the block-diagonal direction is not orthogonal: it breaks the conservation law
        block = np.asarray(ravel_pytree(nl.block_fractional_ngd_direction(RELU, params, x, grads, q=q))[0])
        rel_block = np.abs(vs @ block) / (np.linalg.norm(vs, axis=1) * np.linalg.norm(block))
        assert np.max(rel_block) > 1e-3


_VMAPPED_EIGH_SCRIPT = """
import jax, jax.numpy as jnp
import curvdyn.optim as co
from curvdyn import nonlinear as nl
from curvdyn.experiments.base import Config
key = jax.random.PRNGKey(0)
jac = jax.random.normal(key, (64, 24, 60))
g = jax.random.normal(key, (64, 60))
block = jax.jit(jax.vmap(lambda j, gg: nl.gauss_newton_direction(j, gg, power=0.5, c=1.0, blocks=(20, 20, 20),
                                                                 solver="eigh")))
model = co.MLP("tanh")
params = model.init(jax.random.PRNGKey(1), (5, 7, 6, 3), bias=False)
x = jax.random.normal(key, (32, 5))
def kfac(scale):
    p = jax.tree_util.tree_map(lambda w: scale * w, params)
    grads = jax.grad(model.loss)(p, x, jnp.ones((32, 3)))
    return co.fractional_kfac_direction(grads, co.kfac_statistics(model, p, x), q=2.0, damping=0.0)
kfac_batched = jax.jit(jax.vmap(kfac))
for i in range(10):
    jax.block_until_ready(block(jac * (1 + i), g))
    jax.block_until_ready(kfac_batched(jnp.linspace(0.5, 1.5, 16) * (1 + i)))
print("finished")
"""


def test_batched_eigendecompositions_do_not_deadlock():
    """Under vmap, independent batched eigh calls can deadlock jaxlib 0.10's CPU pool on 2 cores
    (reproduced: the unordered block loop of this script hangs); curvdyn orders them."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", _VMAPPED_EIGH_SCRIPT], capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0 and "finished" in proc.stdout, proc.stderr[-2000:]


def test_gauss_newton_direction_power_zero_projects_the_gradient():
    params, x, y = _relu_problem(seed=6)
    theta, unravel = ravel_pytree(params)
    jac = jax.jacfwd(lambda th: RELU(unravel(th), x).ravel())(theta)
    g = ravel_pytree(jax.grad(RELU.loss)(params, x, y))[0]
    c = 1.0 / x.shape[0]
    assert _rel(nl.gauss_newton_direction(jac, g, power=0.0, c=c), g) < 1e-12  # g ∈ range(Jᵀ)
    with pytest.raises(ValueError, match="block sizes"):
        nl.gauss_newton_direction(jac, g, power=0.5, c=c, blocks=(3, 4))
    with pytest.raises(ValueError, match="positive"):
        nl.gauss_newton_direction(jac, g, power=0.5, c=c, blocks=(-5, g.size + 5))
    with pytest.raises(ValueError, match="positive"):
        nl.gauss_newton_direction(jac, g, power=0.5, c=c, blocks=(0, g.size))
    with pytest.raises(ValueError, match="loss constant"):
        nl.gauss_newton_direction(jac, g, power=0.5, c=-1.0)


def test_nonlinear_bad_input():
    params, x, y = _relu_problem()
    grads = jax.grad(RELU.loss)(params, x, y)
    with pytest.raises(ValueError, match="q must be >= 1"):
        nl.block_fractional_ngd_direction(RELU, params, x, grads, q=0.5)
    with pytest.raises(ValueError, match="same structure"):
        nl.block_fractional_ngd_direction(RELU, params, x, grads[:2], q=2.0)
    transposed = (grads[0].T,) + tuple(grads[1:])  # same structure and size, other shape
    with pytest.raises(ValueError, match="same structure and shapes"):
        nl.block_fractional_ngd_direction(RELU, params, x, transposed, q=2.0)
    with pytest.raises(ValueError, match="same structure and shapes"):
        co.fractional_ngd_direction(RELU, params, x, transposed, q=2.0)
    with pytest.raises(ValueError, match="solver"):
        nl.block_fractional_ngd_direction(RELU, params, x, grads, solver="qr")
    with pytest.raises(TypeError, match="tuple or list"):
        nl.block_sizes({"w": params[0]})
    with pytest.raises(ValueError, match="hidden"):
        nl.unit_balances(params[:1])
    inf_dir = nl.block_fractional_ngd_direction(RELU, params, x, grads, q=math.inf)
    assert _rel(ravel_pytree(inf_dir)[0], ravel_pytree(grads)[0]) == 0.0


# ---------------------------------------------------------------------------------------
# the experiments (quick variants)
# ---------------------------------------------------------------------------------------


def test_registered_at_the_end():
    assert experiments.names()[-2:] == NAMES
    for name in NAMES:
        module = experiments.get(name)
        assert module.NAME == name and module.TITLE


@pytest.mark.parametrize("name", NAMES)
def test_data_are_plain_arrays_and_config_is_json(name):
    quick_runs.check_plain_data(*run(name)[1:])


@pytest.mark.parametrize("name", NAMES)
def test_claims_from_reloaded_data(name):
    quick_runs.check_claims(name, KNOWN_DISAGREEMENTS[name])


@pytest.mark.parametrize("name", NAMES)
def test_describe_and_plot_from_reloaded_files(name):
    module, _, _, loaded, loaded_config = run(name)
    text = module.describe(loaded_config)
    assert isinstance(text, str) and len(text) > 200
    fig = module.plot(loaded, loaded_config)
    try:
        assert isinstance(fig, matplotlib.figure.Figure)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=50)
        assert buf.getbuffer().nbytes > 10_000
    finally:
        plt.close(fig)


def test_relu_quick_measures_conservation():
    module, data, config, _, _ = run("relu")
    prefixes = module.task_prefixes(data)
    assert len(prefixes) == 1 + module.QUICK.extra_seeds and config.outcome["seeds"] == [0, 1, 2]
    for p in prefixes:
        # SGD and √NGD: c_u conserved to the floor-limited integration error on every task
        for rule in ("sgd", "sqrt-ngd"):
            assert module.max_drift(data, rule, p) < 1e-3, (p, rule)
        # the full rules' rate is round-off; the block rules' is not, and they break the law
        for rule in module.FULL:
            assert np.max(data[f"{p}{rule}__rate"]) < 1e-10
        for rule in module.BLOCK:
            assert module.max_drift(data, rule, p) > 0.1
            assert np.max(data[f"{p}{rule}__rate"]) > 1e-2
        # rank of J: recorded, at most the number of outputs, at least one rank change somewhere
        rank = data[f"{p}ngd__rank"]
        assert rank.shape == data["t"].shape and 0 < rank.min() and rank.max() <= data["y"].size
    assert all(run_["status"] == "completed" for run_ in config.outcome["runs"].values())
    assert data["sgd__balances"].shape == (len(data["t"]), sum(config.settings.widths[1:-1]))
    # the extra tasks are other tasks (not copies of the main one)
    assert not np.allclose(data["seed1__sgd__balances"][0], data["sgd__balances"][0])


def test_relu_rank_changes_and_scale_helpers():
    from curvdyn.experiments import relu

    data = {"r__rank": np.array([3, 3, 4, 4, 3]), "seed2__in_norms": np.array([1.0, 3.0])}
    assert relu.rank_changes({"ngd__rank": data["r__rank"]}, "ngd") == 2
    assert relu.balance_scale(data, "seed2__") == 2.0
    bal = np.array([[1.0, 2.0], [1.5, 2.0], [0.0, 2.5]])
    assert relu.max_drift({"seed2__sgd__balances": bal, **data}, "sgd", "seed2__") == 0.5  # |0 − 1| / 2


def test_digits_quick_shapes_and_selection():
    module, data, config, _, _ = run("digits")
    n = config.settings.n_steps
    for name in config.outcome["runs"]:
        assert data[f"{name}__train_loss"].shape == (n + 1,)
        assert data[f"{name}__update_norm"].shape == (n,)
    for kind in module.OPTIMIZERS:
        for a in range(len(config.settings.scales)):
            best = module.best_run(data, config, kind, a)
            finals = [data[f"{r}__train_loss"][-1] for r in module.configs(data, config, kind, a)]
            assert data[f"{best}__train_loss"][-1] == np.nanmin(np.where(np.isfinite(finals), finals, np.nan))
    assert set(module.first_update_keys(config.settings)) == {
        k[len("first__") :] for k in data if k.startswith("first__")
    }
    # the fit recovers a known power law
    fake = dict(data, first__sgd=3.0 * data["exponent_scales"] ** 2.5)
    assert module.fitted_exponent(fake, config, "sgd") == pytest.approx(2.5)


def test_digits_needs_sklearn_with_a_clear_message(monkeypatch):
    from curvdyn.experiments import digits

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="scikit-learn"):
        digits.load_data(0)


def test_digits_data_split_is_seeded_and_standardized():
    from curvdyn.experiments import digits

    x_tr, y_tr, x_te, y_te, lab = digits.load_data(0)
    n_train = digits.DEFAULT.n_train
    assert x_tr.shape == (n_train, 64) and x_te.shape == (1797 - n_train, 64)
    np.testing.assert_allclose(x_tr.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(y_tr.sum(axis=1), 0.0, atol=1e-12)
    np.testing.assert_array_equal(np.argmax(y_te, axis=1), lab)
    again = digits.load_data(0)
    np.testing.assert_array_equal(again[0], x_tr)
    assert not np.array_equal(digits.load_data(1)[0], x_tr)


def test_relu_default_only_paths():
    """The refined runs, the no-floor diagnosis and their claims (default variant only), on a short run."""
    from curvdyn.experiments import relu

    short = dataclasses.replace(
        relu.QUICK,
        t_end=0.3,
        n_save=12,
        refine=2,
        diagnose_sliding=True,
        extra_seeds=1,
        ode=dataclasses.replace(relu.QUICK.ode, max_steps=4000),
        no_floor_max_steps=1500,
    )
    data, outcome = relu.compute(short, seed=0)
    config = Config(short, outcome)
    assert short.refined_dtmin == short.dtmin / 2 and outcome["seeds"] == [0, 1]
    assert {"refined__sgd__balances", "nofloor__sgd__step_t", "seed1__ngd__rank"} <= set(data)
    stall = relu.sliding_stall(data)
    assert stall is not None and 0 < stall["steps"] <= 1500
    # the diagnosis alone stops at its own cap (it stalls on a kink); the other runs keep theirs
    assert outcome["runs"]["nofloor__sgd"]["solver_steps"] == 1500
    assert "max_steps" in outcome["runs"]["nofloor__sgd"]["status"]
    assert all(r["status"] == "completed" for k, r in outcome["runs"].items() if k != "nofloor__sgd")
    keys = {c.key for c in relu.claims(data, config)}
    assert "drift-is-first-order-integration-error" in keys
    ratio = relu.max_drift(data, "sgd") / relu.max_drift(data, "sgd", "refined__")
    assert 1.0 < ratio < 4.0  # SGD's drift shrinks with the floor (first order: 2)


def test_digits_grid_bracket_check():
    from curvdyn.experiments import digits

    grid = tuple(digits.Hyper(v) for v in (0.1, 0.3, 1.0))
    grids = digits.Grids(sgd=grid, adam=grid, kfac=grid, sqrt_kfac=grid)
    settings = dataclasses.replace(digits.DEFAULT, scales=(0.1,), grids=grids)
    runs = {
        f"{k}__s0__c{j}": {"optimizer": k, "scale": 0.1, "lr": c.lr}
        for k in digits.OPTIMIZERS
        for j, c in enumerate(grids.of(k))
    }
    config = Config(settings, {"runs": runs})
    finals = {"sgd": (3.0, 1.0, 2.0), "adam": (1.0, 2.0, 3.0), "kfac": (3.0, 2.0, 1.0), "sqrt-kfac": (2.0, 1.0, np.nan)}
    data = {
        f"{k}__s0__c{j}__train_loss": np.array([5.0, v]) for k in digits.OPTIMIZERS for j, v in enumerate(finals[k])
    }
    edge = digits.unbracketed(data, config)
    # Adam's best is the smallest η, K-FAC's the largest; SGD's is inside, and √K-FAC's larger η diverged
    assert len(edge) == 2 and edge[0].startswith("Adam") and edge[1].startswith("K-FAC")
    assert digits._lrs_per_damping(config) == 3
