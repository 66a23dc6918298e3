"""Fractional K-FAC and exact fractional NGD in an ordinary optax training loop.

A tanh MLP student learns a random tanh teacher with squared loss. The loop is the usual
optax one; the only additions are ``curvature=`` (fractional K-FAC: the layer statistics) and
``inputs=`` (exact fractional NGD: the batch) in ``opt.update``.

    python examples/optax_fractional_kfac.py          # a few seconds on a laptop CPU
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import curvdyn.optim as co

jax.config.update("jax_enable_x64", True)  # curvdyn's exact paths in float64 (importing curvdyn does not)

N_TRAIN, BATCH, STEPS = 512, 64, 150
WIDTHS = (6, 24, 24, 3)


def make_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    teacher = co.MLP("tanh")
    t_widths = (WIDTHS[0], 16, WIDTHS[-1])
    t_params = tuple(
        {"w": jnp.asarray(1.5 * rng.normal(size=(n, m)) / np.sqrt(m)), "b": jnp.asarray(0.1 * rng.normal(size=n))}
        for m, n in zip(t_widths[:-1], t_widths[1:])
    )
    x = jnp.asarray(rng.normal(size=(N_TRAIN, WIDTHS[0])))
    return x, teacher(t_params, x)


def train(name: str, opt: optax.GradientTransformationExtraArgs, extra, x, y, model, params, batch: int = BATCH):
    """Mini-batch training; ``extra(params, xb)`` returns the optimizer's extra update arguments."""
    state = opt.init(params)

    @jax.jit
    def step(params, state, xb, yb):
        loss, grads = jax.value_and_grad(model.loss)(params, xb, yb)
        updates, state = opt.update(grads, state, params, **extra(params, xb))
        return optax.apply_updates(params, updates), state, loss

    full_loss = jax.jit(model.loss)
    rng = np.random.default_rng(1)
    start = time.perf_counter()
    for _ in range(STEPS):
        idx = rng.choice(N_TRAIN, batch, replace=False)
        params, state, _ = step(params, state, x[idx], y[idx])
    loss = float(full_loss(params, x, y))
    print(f"{name:<42s} train loss after {STEPS} steps: {loss:.3e}   ({time.perf_counter() - start:.1f} s)")
    return params


def main() -> None:
    x, y = make_data()
    model = co.MLP("tanh")  # hidden tanh, linear output; loss ½ mean_b ‖f(x_b) − y_b‖²
    params = model.init(jax.random.PRNGKey(0), WIDTHS)
    print(f"student {WIDTHS}, {N_TRAIN} examples, batch {BATCH}; initial loss {float(model.loss(params, x, y)):.3e}")

    # Fractional K-FAC: pass the layer statistics as a zero-argument callable; it is evaluated
    # only on factor-update steps (here every 5th step; roots every 10th).
    def kfac_extra(p, xb):
        return {"curvature": lambda: co.kfac_statistics(model, p, xb)}

    common = dict(decay=0.95, factor_update_every=5, root_update_every=10)
    train(
        "K-FAC (q = 1), damping 1e-1",
        co.fractional_kfac(0.3, q=1.0, damping=1e-1, **common),
        kfac_extra,
        x,
        y,
        model,
        params,
    )
    # Same learning rate, little damping: the full inverse curvature amplifies low-curvature
    # directions and K-FAC fails to train here (it stalls or diverges, depending on the learning
    # rate), while the square root (sqrt-NGD-d, the paper's eq. 26) trains with the same damping.
    train(
        "K-FAC (q = 1), damping 1e-3",
        co.fractional_kfac(0.3, q=1.0, damping=1e-3, **common),
        kfac_extra,
        x,
        y,
        model,
        params,
    )
    train(
        "sqrt-K-FAC (q = 2, d^-1/2), damping 1e-3",
        co.fractional_kfac(0.3, q=2.0, damping=1e-3, depth_scaling=True, **common),
        kfac_extra,
        x,
        y,
        model,
        params,
    )

    # Exact fractional NGD on each mini-batch: pass the batch inputs. Its cost grows with the
    # mini-batch output size M = batch · n_out (an M × P Jacobian); solver="eigh" (eigenvectors of
    # the M × M kernel J Jᵀ) is the fast choice when damped, "svd" (default) the most accurate.
    train(
        "exact sqrt-NGD (q = 2), batch 32",
        co.fractional_ngd(0.3, model, q=2.0, damping=1e-4, solver="eigh"),
        lambda p, xb: {"inputs": xb},
        x,
        y,
        model,
        params,
        batch=32,
    )

    # Baselines: plain optax optimizers, same loop, no extra arguments.
    train("SGD", optax.sgd(0.3), lambda p, xb: {}, x, y, model, params)
    train("Adam", optax.adam(1e-2), lambda p, xb: {}, x, y, model, params)


if __name__ == "__main__":
    main()
