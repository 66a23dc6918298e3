"""Simulation of the learning dynamics: adaptive continuous time (diffrax) and discrete steps.

``simulate(ws, task, rule, t_end, integrator=ODE(...))`` integrates the continuous-time
dynamics ``ẇ = −η d(w)`` of a rule with an adaptive solver (float64, user tolerances);
``integrator=Euler(dt, steps, clip)`` takes discrete steps ``w ← w − η·dt·d(w)`` (``dt = 1`` is
the plain learning-rate step ``w ← w − η d``), with optional update-norm clipping (see
:mod:`curvdyn.integrators`). Both run fully compiled, record the state at save times, stop early
when the loss falls below ``loss_tol`` or the run diverges, and then return what was
recorded with a message instead of raising.

Weights with a leading batch axis ``(B, n_i, n_{i−1})`` run B initial conditions in one
vectorized (``vmap``) call.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from curvdyn._validate import check_nonneg, check_positive
from curvdyn._version import __version__
from curvdyn.integrators import ODE, SOLVERS, Euler, Integrator
from curvdyn.network import Weights, as_weights, conserved, loss, network_map, widths_of
from curvdyn.rules import (
    WARM_STATS,
    Rule,
    check_compatible,
    direction_unchecked,
    direction_warm,
    get_rule,
    warm_state,
)
from curvdyn.task import Task

# Status codes shared by the compiled loops and the Trajectory.
_RUNNING, _CONVERGED, _DIVERGED = 0, 1, 2
#: Recorded times of a run when neither ``n_save`` nor ``save_at`` is given.
DEFAULT_N_SAVE = 201
STATUSES = ("completed", "converged", "diverged", "max_steps", "failed")


@dataclasses.dataclass
class Trajectory:
    """A recorded run.

    Shapes are for a single run; a batched run has an extra leading axis B on every array
    (and ``status``/``message`` are lists). Times after an early stop are NaN in a batch.

    Attributes:
      t: recorded times, (T,).
      weights: per layer, (T, n_i, n_{i−1}).
      loss: ``L(t)`` (T,) (add ``task.loss_offset`` for the data loss).
      map: ``W(t)`` (T, n_d, n_0).
      conserved: per i = 1..d−1, ``w_i w_iᵀ − w_{i+1}ᵀ w_{i+1}`` (T, n_i, n_i) (eq. 4).
      update_norm: ``‖ẇ‖ = η ‖d(w)‖`` at each recorded time (T,).
      status: ``"completed"`` (reached t_end), ``"converged"`` (loss < loss_tol),
        ``"diverged"`` (loss above max_loss or non-finite), ``"max_steps"`` or ``"failed"``.
      message: what happened, in words.
      config: the run's configuration (rule, method, tolerances, seed, package version, ...).
    """

    t: np.ndarray
    weights: tuple[np.ndarray, ...]
    loss: np.ndarray
    map: np.ndarray
    conserved: tuple[np.ndarray, ...]
    update_norm: np.ndarray
    status: Any
    message: Any
    config: dict

    @property
    def batched(self) -> bool:
        """Whether this holds several runs (leading axis B)."""
        return self.t.ndim == 2

    def __len__(self) -> int:
        return self.t.shape[-1]

    def member(self, b: int) -> Trajectory:
        """Run ``b`` of a batched trajectory, with the padding after an early stop removed."""
        if not self.batched:
            raise ValueError("member() is for batched trajectories")
        keep = np.isfinite(self.t[b])
        cut = lambda x: x[b][keep]
        return Trajectory(
            t=cut(self.t),
            weights=tuple(cut(w) for w in self.weights),
            loss=cut(self.loss),
            map=cut(self.map),
            conserved=tuple(cut(c) for c in self.conserved),
            update_norm=cut(self.update_norm),
            status=self.status[b],
            message=self.message[b],
            config=dict(self.config, batch_member=b),
        )

    def save(self, path) -> None:
        """Write one ``.npz`` file: the arrays plus the configuration as JSON metadata."""
        arrays = {"t": self.t, "loss": self.loss, "map": self.map, "update_norm": self.update_norm}
        arrays.update({f"weights_{i}": w for i, w in enumerate(self.weights)})
        arrays.update({f"conserved_{i}": c for i, c in enumerate(self.conserved)})
        meta = {"status": self.status, "message": self.message, "config": self.config}
        np.savez(path, __metadata__=np.array(json.dumps(meta)), **arrays)

    @classmethod
    def load(cls, path) -> Trajectory:
        """Read a file written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["__metadata__"]))
            n_w = sum(1 for k in f.files if k.startswith("weights_"))
            n_c = sum(1 for k in f.files if k.startswith("conserved_"))
            return cls(
                t=f["t"],
                weights=tuple(f[f"weights_{i}"] for i in range(n_w)),
                loss=f["loss"],
                map=f["map"],
                conserved=tuple(f[f"conserved_{i}"] for i in range(n_c)),
                update_norm=f["update_norm"],
                status=meta["status"],
                message=meta["message"],
                config=meta["config"],
            )

    @property
    def rule(self) -> Rule:
        """The rule of the run, rebuilt from the configuration."""
        fields = dict(self.config["rule"])
        if fields.get("layer_rates") is not None:
            fields["layer_rates"] = tuple(fields["layer_rates"])
        return Rule(**fields)


def save_times(t_end: float | None, n_save: int, save_at: Sequence[float] | None = None) -> np.ndarray:
    """The recorded times of a continuous-time run, shape ``(n,)``, float64.

    ``save_at`` as given (checked: finite, strictly increasing, starting at 0, at least 2 times),
    else ``n_save`` equally spaced times from 0 to ``t_end``.

    Raises:
      ValueError: ``save_at`` or ``n_save`` invalid.
    """
    if save_at is not None:
        ts = np.asarray(save_at, dtype=np.float64)
        if ts.ndim != 1 or ts.size < 2 or ts[0] != 0 or np.any(np.diff(ts) <= 0) or not np.all(np.isfinite(ts)):
            raise ValueError("save_at must be finite, strictly increasing, start at 0 and hold >= 2 times")
        return ts
    if int(n_save) != n_save or n_save < 2:
        raise ValueError(f"n_save must be an integer >= 2, got {n_save}")
    return np.linspace(0.0, t_end, int(n_save))


def _loss_and_finite(ws: Weights, task: Task):
    value = loss(ws, task)
    finite = jnp.isfinite(value)
    for w in ws:
        finite = finite & jnp.all(jnp.isfinite(w))
    return value, finite


def _stop_code(ws: Weights, task: Task, loss_tol: float, max_loss: float):
    value, finite = _loss_and_finite(ws, task)
    diverged = (~finite) | (value > max_loss)
    return jnp.where(diverged, _DIVERGED, jnp.where(value < loss_tol, _CONVERGED, _RUNNING))


class _WarmStartSolver(diffrax.AbstractWrappedSolver):
    """Wraps an adaptive solver so that its vector field carries a warm start.

    The solver state is ``(inner state, warm state, statistics)``. Every stage of a step starts
    from the warm state of the step's beginning (passed to the vector field as its ``args``);
    after the step, one more warm-started direction at the new point refreshes it (a handful of
    iterations). diffrax keeps the old solver state when it rejects a step, so a rejected step
    leaves the warm state (and the statistics) as they were.
    """

    solver: diffrax.AbstractSolver
    refresh: Callable = eqx.field(static=True)  # (y, warm) -> (warm, stats)
    cold: Callable = eqx.field(static=True)  # y -> warm

    @property
    def term_structure(self):
        return self.solver.term_structure

    @property
    def interpolation_cls(self):  # pyright: ignore
        return self.solver.interpolation_cls

    @property
    def term_compatible_contr_kwargs(self):
        return self.solver.term_compatible_contr_kwargs

    def order(self, terms):
        return self.solver.order(terms)

    def strong_order(self, terms):
        return self.solver.strong_order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    def init(self, terms, t0, t1, y0, args):
        # the first step starts cold (an empty warm state): one copy of the direction fewer in
        # the compiled program than a refresh here
        warm = self.cold(y0)
        stats = jnp.zeros(len(WARM_STATS), jax.tree_util.tree_leaves(y0)[0].dtype)
        return self.solver.init(terms, t0, t1, y0, (args, warm)), warm, stats

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        inner, warm, stats = solver_state
        y1, y_error, dense, inner, result = self.solver.step(terms, t0, t1, y0, (args, warm), inner, made_jump)
        warm, more = self.refresh(y1, warm)
        stats = jnp.concatenate([stats[:-1] + more[:-1], jnp.maximum(stats[-1:], more[-1:])])
        return y1, y_error, dense, (inner, warm, stats), result

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, (args, self.cold(y0)))


def _ode_run(ws, task, eta, ts, loss_tol, max_loss, *, rule, method, rtol, atol, solver, max_steps, progress):
    warm_started = method == "krylov" and not rule.is_gradient

    def field(t, y, args):
        if warm_started:
            # args = (user args, warm state) from _WarmStartSolver; diffrax's own shape checks call
            # the field with the user args alone
            warm = args[1] if isinstance(args, tuple) else warm_state(y, task, rule, method)
            return tuple(-eta * v for v in direction_warm(y, task, rule, method, warm)[0])
        return tuple(-eta * v for v in direction_unchecked(y, task, rule, method))

    def stop(t, y, args, **kwargs):
        return _stop_code(y, task, loss_tol, max_loss) != _RUNNING

    ode_solver = SOLVERS[solver]()
    if warm_started:

        def refresh(y, warm):
            _, warm, stats = direction_warm(y, task, rule, method, warm)
            return warm, stats

        ode_solver = _WarmStartSolver(ode_solver, refresh, lambda y: warm_state(y, task, rule, method))
    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        ode_solver,
        t0=ts[0],
        t1=ts[-1],
        dt0=None,
        y0=ws,
        saveat=diffrax.SaveAt(ts=ts, t1=True, solver_state=warm_started),
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
        event=diffrax.Event(stop),
        max_steps=max_steps,
        throw=False,
        progress_meter=diffrax.TqdmProgressMeter() if progress else diffrax.NoProgressMeter(),
    )
    stats = sol.solver_state[2] if warm_started else jnp.zeros(len(WARM_STATS), ws[0].dtype)
    return sol.ts, sol.ys, sol.result._value, sol.stats["num_steps"], stats


def _euler_run(
    ws, task, eta, dt, clip, loss_tol, max_loss, *, rule, method, n_steps, steps_per_save, n_saves, use_clip
):
    def one_step(carry):
        w, k, _code, warm, stats = carry
        d, warm_new, more = direction_warm(w, task, rule, method, warm)
        upd = tuple(eta * dt * v for v in d)
        if use_clip:
            norm = jnp.sqrt(sum(jnp.sum(u * u) for u in upd))
            factor = jnp.where(norm > clip, clip / jnp.maximum(norm, 1e-300), 1.0)
            upd = tuple(factor * u for u in upd)
        new = tuple(a - u for a, u in zip(w, upd))
        new_code = _stop_code(new, task, loss_tol, max_loss)
        # A diverged step is not taken: the last finite state is what stays recorded.
        keep = new_code == _DIVERGED
        w = tuple(jnp.where(keep, a, b) for a, b in zip(w, new))
        stats = jnp.concatenate([stats[:-1] + more[:-1], jnp.maximum(stats[-1:], more[-1:])])
        return w, jnp.where(keep, k, k + 1), new_code, warm_new, stats

    def chunk(carry, _):
        end = jnp.minimum(carry[1] + steps_per_save, n_steps)
        carry = jax.lax.while_loop(lambda c: (c[1] < end) & (c[2] == _RUNNING), one_step, carry)
        return carry, (carry[0], carry[1], carry[2])

    code0 = _stop_code(ws, task, loss_tol, max_loss)
    carry0 = (ws, jnp.asarray(0), code0, warm_state(ws, task, rule, method), jnp.zeros(len(WARM_STATS), ws[0].dtype))
    final, (w_rec, k_rec, code_rec) = jax.lax.scan(chunk, carry0, None, length=n_saves)
    w_all = tuple(jnp.concatenate([a[None], b]) for a, b in zip(ws, w_rec))
    k_all = jnp.concatenate([jnp.zeros((1,), k_rec.dtype), k_rec])
    code_all = jnp.concatenate([code0[None], code_rec])
    return w_all, k_all, code_all, final[4]


@functools.lru_cache(maxsize=64)
def _compiled(kind: str, batched: bool, **static):
    """A jitted (and, for batches, vmapped) runner for one static configuration.

    Cached so that repeated simulations with the same rule, shapes and options compile once.
    """
    fn = functools.partial(_ode_run if kind == "ode" else _euler_run, **static)
    if batched:
        n_dynamic = 6 if kind == "ode" else 7
        fn = jax.vmap(fn, in_axes=(0,) + (None,) * (n_dynamic - 1))
    return jax.jit(fn)


def _observables(ws_t: Weights, task: Task, rule: Rule, method: str, eta: float):
    def at(w, d):
        return (
            loss(w, task),
            network_map(w),
            conserved(w),
            eta * jnp.sqrt(sum(jnp.sum(v * v) for v in d)),
        )

    if method == "krylov" and not rule.is_gradient:
        # consecutive records are close: warm-started directions along the trajectory
        def scan_body(warm, w):
            d, warm, _ = direction_warm(w, task, rule, method, warm)
            return warm, at(w, d)

        first = tuple(w[0] for w in ws_t)
        return jax.lax.scan(scan_body, warm_state(first, task, rule, method), ws_t)[1]
    return jax.vmap(lambda w: at(w, direction_unchecked(w, task, rule, method)))(ws_t)


_observables_jit = jax.jit(_observables, static_argnames=("rule", "method"))


def simulate(
    weights: Sequence,
    task: Task,
    rule: Rule | str,
    t_end: float | None = None,
    *,
    integrator: Integrator | None = None,
    eta: float = 1.0,
    n_save: int | None = None,
    save_at: Sequence[float] | None = None,
    loss_tol: float = 0.0,
    max_loss: float | None = None,
    method: str = "auto",
    seed: int | None = None,
) -> Trajectory:
    """Run a rule's learning dynamics from ``weights`` on ``task``.

    Args:
      weights: ``(w_1, ..., w_d)``, ``w_i`` of shape ``(n_i, n_{i−1})``; or with a leading
        batch axis ``(B, n_i, n_{i−1})`` to run B initial conditions in one vectorized call.
      task: the :class:`~curvdyn.task.Task`.
      rule: a :class:`~curvdyn.rules.Rule` or a rule name (default parameters).
      t_end: final time. With :class:`~curvdyn.integrators.ODE` it is required (or taken from
        ``save_at[-1]``); with :class:`~curvdyn.integrators.Euler` the step count is
        ``Euler.steps`` or ``ceil(t_end / dt)``.
      integrator: :class:`~curvdyn.integrators.ODE` (default ``ODE()``: adaptive continuous
        time, diffrax) or :class:`~curvdyn.integrators.Euler` (discrete steps); every
        integration option lives there.
      eta: learning rate η: velocity ``ẇ = −η d`` (ODE), step ``w ← w − η·dt·d`` (Euler).
      n_save: number of equally spaced recorded times on ``[0, t_end]`` (default 201; not
        with ``save_at``). For Euler the recorded times are multiples of the save interval in steps.
      save_at: explicit increasing recorded times starting at 0 and ending at ``t_end``
        (ODE only).
      loss_tol: stop (status ``"converged"``) once ``L < loss_tol``.
      max_loss: stop (status ``"diverged"``) once ``L > max_loss`` or anything is non-finite;
        default ``1e6 · max(L(0), 1)``.
      method: how the curvature directions are computed (see :meth:`Rule.direction`).
      seed: recorded in the configuration (the seed that made ``weights``), for provenance.

    Returns:
      A :class:`Trajectory`. A run that stops early warns (``RuntimeWarning``) when it
      diverged or ran out of steps, and returns what was recorded up to the stop.

    Raises:
      ValueError: bad or conflicting options (e.g. ``save_at`` with Euler, ``save_at`` that
        does not end at ``t_end``, ``n_save`` together with ``save_at``).
    """
    if isinstance(rule, str):
        rule = get_rule(rule)
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be a Rule (from get_rule) or a rule name, got {type(rule).__name__}")
    if not isinstance(task, Task):
        raise TypeError(f"task must be a curvdyn.Task, got {type(task).__name__}")
    integrator = ODE() if integrator is None else integrator
    if not isinstance(integrator, ODE | Euler):
        raise TypeError(f"integrator must be curvdyn.ODE(...) or curvdyn.Euler(...), got {type(integrator).__name__}")
    batched = isinstance(weights, tuple | list) and len(weights) > 0 and np.ndim(weights[0]) == 3
    ws = as_weights(weights, batched=batched)
    check_compatible(ws, task)
    eta = check_positive(eta, "eta")
    widths = widths_of(ws)
    cmethod = rule.resolve_method(widths, task.identity_cov, method)
    loss0 = jax.vmap(loss, in_axes=(0, None))(ws, task) if batched else loss(ws, task)
    if max_loss is None:
        max_loss = 1e6 * max(float(jnp.max(loss0)), 1.0)
    max_loss = check_positive(max_loss, "max_loss")
    loss_tol = check_nonneg(loss_tol, "loss_tol")
    if save_at is not None and n_save is not None:
        raise ValueError("give n_save or save_at, not both")
    n_save = DEFAULT_N_SAVE if n_save is None else n_save
    if isinstance(n_save, bool) or int(n_save) != n_save or n_save < 2:
        raise ValueError(f"n_save must be an integer >= 2, got {n_save}")

    config: dict = {
        "rule": dataclasses.asdict(rule),
        "integrator": integrator.as_config(),
        "method": cmethod,
        "eta": eta,
        "widths": list(widths),
        "batch": int(ws[0].shape[0]) if batched else None,
        "loss_tol": loss_tol,
        "max_loss": max_loss,
        "seed": seed,
        "curvdyn_version": __version__,
        "task": {
            "target": np.asarray(task.target).tolist(),
            "input_cov": None if task.identity_cov else np.asarray(task.input_cov).tolist(),
            "loss_offset": float(task.loss_offset),
        },
    }
    if config["rule"]["layer_rates"] is not None:
        config["rule"]["layer_rates"] = list(config["rule"]["layer_rates"])

    if isinstance(integrator, ODE):
        if save_at is not None:
            ts = save_times(None, n_save, save_at)
            if t_end is not None and not math.isclose(float(ts[-1]), check_positive(t_end, "t_end"), rel_tol=1e-12):
                raise ValueError(f"save_at ends at {ts[-1]:g} but t_end = {t_end:g}; they must agree")
        else:
            if t_end is None:
                raise ValueError("an ODE run needs t_end (or save_at)")
            ts = save_times(check_positive(t_end, "t_end"), n_save)
        config["t_end"] = float(ts[-1])
        run = _compiled(
            "ode",
            batched,
            rule=rule,
            method=cmethod,
            rtol=integrator.rtol,
            atol=integrator.atol,
            solver=integrator.solver,
            max_steps=integrator.max_steps,
            progress=integrator.progress and _stderr_is_terminal(),
        )
        # times in the weights' precision: diffrax promotes the state to the time dtype
        t_dev = jnp.asarray(ts, dtype=jnp.asarray(ws[0]).dtype)
        t_out, w_out, result, n_solver_steps, warm_stats = run(ws, task, eta, t_dev, loss_tol, max_loss)
        t_out, result = np.asarray(t_out), np.asarray(result)
        w_out = tuple(np.asarray(w) for w in w_out)
        config["solver_steps"] = np.asarray(n_solver_steps).tolist()

        def finish(ts_b, ws_b, result_b):
            return _finish_ode(ts_b, ws_b, result_b, task, loss_tol, max_loss)
    else:
        if save_at is not None:
            raise ValueError("save_at is for the ODE integrator; an Euler run records every n-th step (n_save)")
        dt = integrator.dt
        n_steps = integrator.n_steps(t_end)
        steps_per_save = max(1, math.ceil(n_steps / (int(n_save) - 1)))
        n_saves = math.ceil(n_steps / steps_per_save)
        config.update(t_end=n_steps * dt, n_steps=n_steps)
        run = _compiled(
            "euler",
            batched,
            rule=rule,
            method=cmethod,
            n_steps=n_steps,
            steps_per_save=steps_per_save,
            n_saves=n_saves,
            use_clip=integrator.clip is not None,
        )
        clip = 0.0 if integrator.clip is None else integrator.clip
        w_out, k_out, code_out, warm_stats = run(ws, task, eta, dt, clip, loss_tol, max_loss)
        w_out = tuple(np.asarray(w) for w in w_out)
        t_out, result = np.asarray(k_out) * dt, np.asarray(code_out)
        finish = _finish_euler

    if cmethod == "krylov" and not rule.is_gradient:
        _report_krylov(np.asarray(warm_stats), config)
    if batched:
        parts = [finish(t_out[b], tuple(w[b] for w in w_out), result[b]) for b in range(ws[0].shape[0])]
        length = max(len(p[0]) for p in parts)
        t_rec = np.full((len(parts), length), np.nan)
        w_rec = tuple(np.full((len(parts), length) + w.shape[2:], np.nan) for w in w_out)
        for b, (tb, wb, _, _) in enumerate(parts):
            t_rec[b, : len(tb)] = tb
            for i, w in enumerate(wb):
                w_rec[i][b, : len(tb)] = w
        status = [p[2] for p in parts]
        message = [p[3] for p in parts]
        obs = jax.vmap(lambda w: _observables_jit(w, task, rule, cmethod, eta))(tuple(map(jnp.asarray, w_rec)))
    else:
        t_rec, w_rec, status, message = finish(t_out, w_out, result)
        obs = _observables_jit(tuple(map(jnp.asarray, w_rec)), task, rule, cmethod, eta)
    loss_t, map_t, cons_t, unorm_t = jax.tree_util.tree_map(np.asarray, obs)
    for s, m in zip(status if batched else [status], message if batched else [message]):
        if s in ("diverged", "max_steps", "failed"):
            warnings.warn(m, RuntimeWarning, stacklevel=2)
    return Trajectory(
        t=t_rec,
        weights=w_rec,
        loss=loss_t,
        map=map_t,
        conserved=tuple(cons_t),
        update_norm=unorm_t,
        status=status,
        message=message,
        config=config,
    )


def _report_krylov(stats: np.ndarray, config: dict) -> None:
    """Record the matrix-free path's statistics (summed over a batch) and warn about what it could
    not certify (the directions at accepted steps and Euler steps are counted)."""
    stats = stats.reshape(-1, len(WARM_STATS))
    total = dict(zip(WARM_STATS, stats.sum(axis=0).tolist()))
    total["max_estimate"] = float(stats[:, -1].max())
    config["krylov"] = {k: (int(v) if k != "max_estimate" else v) for k, v in total.items()}
    if total["fallbacks"] or total["uncertified"]:
        warnings.warn(
            f"krylov: {int(total['fallbacks'])} of {int(total['directions'])} directions fell back to the eigh path "
            f"and {int(total['uncertified'])} could not be certified (too large for the in-program fallback) — "
            "cutoff zone not cleared or a solve did not converge",
            RuntimeWarning,
            stacklevel=3,
        )
    if total["over_tol"]:
        warnings.warn(
            f"krylov: {int(total['over_tol'])} of {int(total['directions'])} directions have an error estimate above "
            f"the tolerance (largest {total['max_estimate']:.3g}: the float64 round-off floor of an ill-conditioned "
            "K); kept, the eigh path is less accurate there",
            RuntimeWarning,
            stacklevel=3,
        )


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _finish_ode(ts: np.ndarray, ws: tuple, result: np.ndarray, task: Task, loss_tol: float, max_loss: float):
    """Trim diffrax's padded output and name the outcome."""
    keep = np.isfinite(ts)
    ts = ts[keep]
    ws = tuple(w[keep] for w in ws)
    # The final ``t1`` save repeats the last ``ts`` entry when the run reaches t_end.
    if len(ts) >= 2 and ts[-1] == ts[-2]:
        ts, ws = ts[:-1], tuple(w[:-1] for w in ws)
    code = int(result)
    if code == int(diffrax.RESULTS.successful._value):
        return ts, ws, "completed", f"reached t_end = {ts[-1]:.6g}"
    if code == int(diffrax.RESULTS.event_occurred._value):
        code = int(_stop_code(tuple(jnp.asarray(w[-1]) for w in ws), task, loss_tol, max_loss))
        if code == _CONVERGED:
            return ts, ws, "converged", f"loss fell below loss_tol = {loss_tol:.3g} at t = {ts[-1]:.6g}"
        return (
            ts,
            ws,
            "diverged",
            (
                f"diverged at t = {ts[-1]:.6g}: the loss exceeded max_loss = {max_loss:.3g} or became "
                "non-finite; the recorded part is kept"
            ),
        )
    if code == int(diffrax.RESULTS.max_steps_reached._value):
        return (
            ts,
            ws,
            "max_steps",
            (
                f"the ODE solver reached max_steps before t_end; stopped at t = {ts[-1]:.6g} "
                "(raise max_steps, or the dynamics may be diverging or stiff)"
            ),
        )
    return (
        ts,
        ws,
        "failed",
        (
            f"the ODE solver failed at t = {ts[-1]:.6g} (diffrax result code {code}: step size "
            "collapsed or non-finite values); the recorded part is kept"
        ),
    )


def _finish_euler(ts: np.ndarray, ws: tuple, codes: np.ndarray):
    """Keep records up to the first stop; name the outcome."""
    stopped = np.nonzero(codes != _RUNNING)[0]
    end = int(stopped[0]) + 1 if stopped.size else len(ts)
    ts, ws, codes = ts[:end], tuple(w[:end] for w in ws), codes[:end]
    if codes[-1] == _CONVERGED:
        return ts, ws, "converged", f"loss fell below loss_tol after {int(round(ts[-1]))} time units"
    if codes[-1] == _DIVERGED:
        return (
            ts,
            ws,
            "diverged",
            (
                f"diverged at t = {ts[-1]:.6g}: the next step made the loss exceed max_loss or "
                "non-finite; the last finite state is kept"
            ),
        )
    return ts, ws, "completed", f"completed {ts[-1]:.6g} time units"
