"""Simulation of the learning dynamics: adaptive continuous time (diffrax) and discrete steps.

``simulate(ws, task, rule, t_end, integrator=ODE(...))`` integrates the continuous-time
dynamics ``ẇ = −η d(w)`` of a rule with an adaptive solver (float64, user tolerances);
``integrator=Euler(dt, steps, clip)`` takes discrete steps ``w ← w − η·dt·d(w)`` (``dt = 1`` is
the plain learning-rate step ``w ← w − η d``), with optional update-norm clipping (see
:mod:`curvdyn.integrators`). Both run fully compiled, record the state at save times, stop early
when the loss falls below ``loss_tol`` or the run diverges, and then return what was
recorded with a message instead of raising.

Weights with a leading batch axis ``(B, n_i, n_{i−1})`` run B initial conditions (with one
task, or one task each) in one compiled call: vectorized or one member after the other, and
split over the local devices (:mod:`curvdyn.batch`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from curvdyn import batch as batch_lib
from curvdyn._progress import stderr_is_terminal
from curvdyn._validate import check_count, check_nonneg, check_positive
from curvdyn._version import __version__
from curvdyn.curvature.diagnostics import WARN_TOL, summarize
from curvdyn.curvature.precision import DEFAULT_RCOND, promote
from curvdyn.integrators import (
    ODE,
    OUTCOME_EVENT,
    OUTCOME_MAX_STEPS,
    OUTCOME_SUCCESSFUL,
    SOLVERS,
    Euler,
    Integrator,
    solve_outcome,
)
from curvdyn.network import Weights, as_weights, conserved, loss, network_map, widths_of
from curvdyn.rules import (
    WARM_STATS,
    Rule,
    check_compatible,
    direction_and_info,
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
      config: the run's configuration (rule, method, tolerances, seed, package version, ...)
        and ``"exactness"``, the worst diagnostics at the recorded times (:func:`exactness_summary`).
      record: the run record (:func:`curvdyn.io.run_record`) written with it by :meth:`save`
        (made at the first save when the trajectory has none; read back by :meth:`load`;
        ``None`` for a file written before curvdyn kept records).

    Files: :meth:`save` and :meth:`load` take the same path and apply one rule: the file is
    ``path`` when its name ends in ``.npz``, else ``path`` with ``.npz`` appended (NumPy's
    rule), so ``save("x/b")`` writes ``x/b.npz`` and ``load("x/b")`` reads it.
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
    record: dict | None = dataclasses.field(default=None, compare=False, repr=False)

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
            record=self.record,
        )

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = {"t": self.t, "loss": self.loss, "map": self.map, "update_norm": self.update_norm}
        arrays.update({f"weights_{i}": w for i, w in enumerate(self.weights)})
        arrays.update({f"conserved_{i}": c for i, c in enumerate(self.conserved)})
        return {k: np.asarray(v) for k, v in arrays.items()}

    def save(self, path) -> Path:
        """Write one ``.npz`` file, atomically: the arrays, the run record (``__run__``) and
        the metadata (``__metadata__``: status, message, configuration, and the name, shape and
        dtype of every array, which :meth:`load` checks).

        Returns:
          The path written (``path``, with ``.npz`` appended if its name lacks it).
        """
        from curvdyn import io

        path = trajectory_path(path)
        arrays = self._arrays()
        if self.record is None:
            seed = self.config.get("seed") if isinstance(self.config, dict) else None
            self.record = io.run_record(seeds=[] if seed is None else [seed], resolution=None)
        meta = {
            "format": TRAJECTORY_FORMAT,
            "status": self.status,
            "message": self.message,
            "config": self.config,
            "layers": len(self.weights),
            "arrays": {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in arrays.items()},
        }
        io.save_npz(path, arrays, record=self.record, compress=False, metadata=meta)
        return path

    @classmethod
    def load(cls, path) -> Trajectory:
        """Read a file written by :meth:`save` (same path rule), checked against its own metadata.

        Raises:
          FileNotFoundError: no such file (the message names the path tried).
          ValueError: not a trajectory file, or one whose arrays do not match what its metadata
            records (a layer or array missing, an unexpected one, a shape or dtype changed);
            the message names what is wrong.
        """
        from curvdyn import io

        path = trajectory_path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no trajectory file {path} (Trajectory.load appends .npz to a name without it)")
        arrays, record, docs = io.load_npz(path, require_record=False)
        meta = docs.get("metadata")
        if not isinstance(meta, dict) or "config" not in meta:
            raise ValueError(f"{path} is not a trajectory file: it has no __metadata__ written by Trajectory.save")
        _check_contents(path, arrays, meta)
        n_layers = sum(1 for k in arrays if k.startswith("weights_"))
        return cls(
            t=arrays["t"],
            weights=tuple(arrays[f"weights_{i}"] for i in range(n_layers)),
            loss=arrays["loss"],
            map=arrays["map"],
            conserved=tuple(arrays[f"conserved_{i}"] for i in range(n_layers - 1)),
            update_norm=arrays["update_norm"],
            status=meta["status"],
            message=meta["message"],
            config=meta["config"],
            record=record,
        )

    @property
    def rule(self) -> Rule:
        """The rule of the run, rebuilt from the configuration."""
        fields = dict(self.config["rule"])
        if fields.get("layer_rates") is not None:
            fields["layer_rates"] = tuple(fields["layer_rates"])
        return Rule(**fields)


#: Layout version of :meth:`Trajectory.save`'s metadata.
TRAJECTORY_FORMAT = "curvdyn-trajectory/1"
_TRAJECTORY_SUFFIX = ".npz"


def trajectory_path(path) -> Path:
    """The file :meth:`Trajectory.save` writes and :meth:`Trajectory.load` reads for ``path``:
    ``path`` itself when its name ends in ``.npz``, else ``path`` + ``.npz``."""
    path = Path(path)
    return path if path.name.endswith(_TRAJECTORY_SUFFIX) else path.with_name(path.name + _TRAJECTORY_SUFFIX)


def _expected_arrays(meta: dict) -> tuple[int, dict[str, dict | None]]:
    """(number of layers, name → {"shape", "dtype"} or None) that a trajectory file must hold.

    From the metadata's own inventory; files written before it existed are checked against
    the layer count their configuration's widths give.
    """
    if isinstance(meta.get("arrays"), dict) and isinstance(meta.get("layers"), int):
        return meta["layers"], dict(meta["arrays"])
    widths = (meta.get("config") or {}).get("widths")
    if not isinstance(widths, list) or len(widths) < 2:
        raise ValueError("its metadata records neither its arrays nor the network's widths")
    d = len(widths) - 1
    names = ["t", "loss", "map", "update_norm"] + [f"weights_{i}" for i in range(d)]
    names += [f"conserved_{i}" for i in range(d - 1)]
    return d, dict.fromkeys(names)


def _check_contents(path: Path, arrays: dict, meta: dict) -> None:
    try:
        n_layers, expected = _expected_arrays(meta)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    missing = [k for k in expected if k not in arrays]
    if missing:
        raise ValueError(
            f"{path} is missing {', '.join(missing)} (its metadata records {n_layers} layers and "
            f"{len(expected)} arrays); the file is incomplete or was altered"
        )
    extra = [k for k in arrays if k not in expected]
    if extra:
        raise ValueError(f"{path} holds arrays its metadata does not record: {', '.join(extra)}")
    for name, spec in expected.items():
        if spec is None:
            continue
        shape, dtype = tuple(arrays[name].shape), arrays[name].dtype.str
        if shape != tuple(spec["shape"]) or dtype != spec["dtype"]:
            raise ValueError(
                f"{path}: {name} has shape {shape} and dtype {dtype}, its metadata records "
                f"{tuple(spec['shape'])} and {spec['dtype']}"
            )


def save_times(t_end: float | None, n_save: int, save_at: Sequence[float] | np.ndarray | None = None) -> np.ndarray:
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
    n_save = check_count(n_save, "n_save", 2)
    if t_end is None:
        raise ValueError("equally spaced save times (n_save) need t_end")
    return np.linspace(0.0, t_end, n_save)


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

    solver: diffrax.AbstractSolver  # type: ignore[misc]  # diffrax declares it a class variable
    refresh: Callable = eqx.field(static=True)  # (y, warm) -> (warm, stats)
    cold: Callable = eqx.field(static=True)  # y -> warm

    @property
    def term_structure(self):
        return self.solver.term_structure

    @property
    def interpolation_cls(self):  # type: ignore[override]  # a property, as diffrax's own wrappers
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

    ode_solver: diffrax.AbstractSolver = SOLVERS[solver]()
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
    return sol.ts, sol.ys, solve_outcome(sol.result), sol.stats["num_steps"], stats


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
def _compiled(kind: str, strategy: str | None, task_batched: bool, **static):
    """A jitted runner for one static configuration.

    ``strategy`` ``None`` runs one member; ``"vmap"`` or ``"map"`` a batch (weights with a
    leading axis, and the task too when ``task_batched``; :func:`curvdyn.batch.batched_program`).
    Cached so that repeated simulations with the same rule, shapes and options compile once.
    """
    fn = functools.partial(_ode_run if kind == "ode" else _euler_run, **static)
    if strategy is None:
        return jax.jit(fn)
    n_dynamic = 6 if kind == "ode" else 7
    batched_args = (True, task_batched) + (False,) * (n_dynamic - 2)
    return batch_lib.batched_program(fn, strategy=strategy, batched_args=batched_args)


def _observables(ws_t: Weights, task: Task, rule: Rule, method: str, eta: float, diagnose: bool = True):
    # The direction at each recorded time with its diagnostics (curvdyn.curvature.diagnostics);
    # one time after another (lax.map / scan), so the diagnostics' work arrays exist for one time
    # at once (diagnose=False: the direction alone, info None).
    def at(w, d, info):
        return (
            loss(w, task),
            network_map(w),
            conserved(w),
            eta * jnp.sqrt(sum(jnp.sum(v * v) for v in d)),
            info,
        )

    if method == "krylov" and not rule.is_gradient:
        # consecutive records are close: warm-started directions along the trajectory
        def scan_body(warm, w):
            if diagnose:
                d, warm, _, info = direction_warm(w, task, rule, method, warm, with_info=True)
            else:
                (d, warm, _), info = direction_warm(w, task, rule, method, warm), None
            return warm, at(w, d, info)

        first = tuple(w[0] for w in ws_t)
        return jax.lax.scan(scan_body, warm_state(first, task, rule, method), ws_t)[1]

    def one(w):
        if diagnose:
            return at(w, *direction_and_info(w, task, rule, method))
        return at(w, direction_unchecked(w, task, rule, method), None)

    return jax.lax.map(one, ws_t)


_observables_jit = jax.jit(_observables, static_argnames=("rule", "method", "diagnose"))


def simulate(
    weights: Sequence,
    task: Task | Sequence[Task],
    rule: Rule | str,
    t_end: float | None = None,
    *,
    integrator: Integrator | None = None,
    eta: float = 1.0,
    n_save: int | None = None,
    save_at: Sequence[float] | np.ndarray | None = None,
    loss_tol: float = 0.0,
    max_loss: float | None = None,
    method: str = "auto",
    seed: int | None = None,
    batch: str = "auto",
    devices: Sequence | None = None,
    diagnose: bool = True,
) -> Trajectory:
    """Run a rule's learning dynamics from ``weights`` on ``task``.

    Args:
      weights: ``(w_1, ..., w_d)``, ``w_i`` of shape ``(n_i, n_{i−1})``; or with a leading
        batch axis ``(B, n_i, n_{i−1})`` to run B initial conditions in one compiled call.
      task: the :class:`~curvdyn.task.Task`; with batched weights also a sequence of B tasks of
        one shape (one per member).
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
      batch: how a batch runs inside its one program (:mod:`curvdyn.batch`): ``"vmap"``
        (members step together), ``"map"`` (one after the other, each with its own adaptive
        steps), or ``"auto"`` (the measured faster one for the rule and integrator,
        :func:`curvdyn.batch.choose_strategy`). Ignored for a single run.
      devices: the devices a batch is split over (default: every local device); the numbers
        are those of a single-device run.
      diagnose: check the directions at the recorded times (the default; see Returns).
        ``False`` skips the diagnostics (a smaller compiled program, no exactness warning) and
        records ``traj.config["exactness"]`` as not checked; the trajectory is the same.

    Returns:
      A :class:`Trajectory`. A run that stops early warns (``RuntimeWarning``) when it
      diverged or ran out of steps, and returns what was recorded up to the stop. The worst
      exactness diagnostics of the directions at the recorded times are in
      ``traj.config["exactness"]`` (:func:`exactness_summary`); a run with a recorded direction
      not exact to :data:`curvdyn.curvature.WARN_TOL` warns once, with the numbers. With
      ``method="krylov"`` (what ``auto`` picks for full rules from ``n_d n_0 ≥ 400``) every
      direction is warm-started from the previous one (Euler: the last step's; ODE: the last
      accepted step's, carried in the solver state) and ``traj.config["krylov"]`` counts the
      directions, in-program fallbacks to the eigh path, uncertified directions, estimates
      over the tolerance, CG iterations and the largest estimate (a run with fallbacks or
      uncertified directions warns). Mixed
      float32/float64 input runs in the common dtype (:func:`curvdyn.curvature.promote`).

    Raises:
      ValueError: bad or conflicting options (e.g. ``save_at`` with Euler, ``save_at`` that
        does not end at ``t_end``, ``n_save`` together with ``save_at``).
    """
    if isinstance(rule, str):
        rule = get_rule(rule)
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be a Rule (from get_rule) or a rule name, got {type(rule).__name__}")
    member_tasks = None if isinstance(task, Task) else _member_tasks(task, weights)
    if member_tasks is not None:
        task = member_tasks[0]
    if not isinstance(task, Task):
        raise TypeError(f"task must be a curvdyn.Task, got {type(task).__name__}")
    integrator = ODE() if integrator is None else integrator
    if not isinstance(integrator, ODE | Euler):
        raise TypeError(f"integrator must be curvdyn.ODE(...) or curvdyn.Euler(...), got {type(integrator).__name__}")
    batched = isinstance(weights, tuple | list) and len(weights) > 0 and np.ndim(weights[0]) == 3
    ws = as_weights(weights, batched=batched)
    check_compatible(ws, task)
    ws, task = promote(ws, task)  # mixed float32/float64: the common dtype (docs/conventions.md)
    if member_tasks is not None:
        member_tasks = [promote(ws, t)[1] for t in member_tasks]
    if member_tasks is not None and len(member_tasks) != ws[0].shape[0]:
        raise ValueError(f"{len(member_tasks)} tasks for a batch of {ws[0].shape[0]} members; give one per member")
    # the task the compiled program sees: shared, or stacked along the batch axis
    run_task = task if member_tasks is None else jax.tree_util.tree_map(lambda *x: jnp.stack(x), *member_tasks)
    requested = batch_lib.check_strategy(batch)  # checked even where it does not apply
    strategy: str | None = None
    devs = None
    if batched:
        devs = batch_lib.local_devices(devices)
        strategy = batch_lib.choose_strategy(rule, integrator.kind, devs) if requested == "auto" else requested
        batch_lib.check_split(strategy, rule, devs)
    eta = check_positive(eta, "eta")
    widths = widths_of(ws)
    cmethod = rule.resolve_method(widths, task.identity_cov, method)
    task_axis = None if member_tasks is None else 0
    loss0 = jax.vmap(loss, in_axes=(0, task_axis))(ws, run_task) if batched else loss(ws, task)
    if max_loss is None:
        max_loss = 1e6 * max(float(jnp.max(loss0)), 1.0)
    max_loss = check_positive(max_loss, "max_loss")
    loss_tol = check_nonneg(loss_tol, "loss_tol")
    if save_at is not None and n_save is not None:
        raise ValueError("give n_save or save_at, not both")
    n_save = check_count(DEFAULT_N_SAVE if n_save is None else n_save, "n_save", 2)

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
        "task": _task_config(task) if member_tasks is None else [_task_config(t) for t in member_tasks],
        "batch_strategy": strategy,
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
            strategy,
            member_tasks is not None,
            rule=rule,
            method=cmethod,
            rtol=integrator.rtol,
            atol=integrator.atol,
            solver=integrator.solver,
            max_steps=integrator.max_steps,
            progress=integrator.progress and not batched and stderr_is_terminal(),
        )
        # times in the weights' precision: diffrax promotes the state to the time dtype
        t_dev = jnp.asarray(ts, dtype=jnp.asarray(ws[0]).dtype)
        t_out, w_out, result, n_solver_steps, warm_stats = _call(
            run, batched, devs, ws, run_task, eta, t_dev, loss_tol, max_loss
        )
        t_out, result = np.asarray(t_out), np.asarray(result)
        w_out = tuple(np.asarray(w) for w in w_out)
        config["solver_steps"] = np.asarray(n_solver_steps).tolist()

        def finish(ts_b, ws_b, result_b, task_b=task):
            return _finish_ode(ts_b, ws_b, result_b, task_b, loss_tol, max_loss)
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
            strategy,
            member_tasks is not None,
            rule=rule,
            method=cmethod,
            n_steps=n_steps,
            steps_per_save=steps_per_save,
            n_saves=n_saves,
            use_clip=integrator.clip is not None,
        )
        clip = 0.0 if integrator.clip is None else integrator.clip
        w_out, k_out, code_out, warm_stats = _call(run, batched, devs, ws, run_task, eta, dt, clip, loss_tol, max_loss)
        w_out = tuple(np.asarray(w) for w in w_out)
        t_out, result = np.asarray(k_out) * dt, np.asarray(code_out)

        def finish(ts_b, ws_b, result_b, task_b=task):
            return _finish_euler(ts_b, ws_b, result_b)

    if cmethod == "krylov" and not rule.is_gradient:
        _report_krylov(np.asarray(warm_stats), config)
    if batched:
        tasks = member_tasks or [task] * ws[0].shape[0]
        parts = [finish(t_out[b], tuple(w[b] for w in w_out), result[b], tasks[b]) for b in range(len(tasks))]
        length = max(len(p[0]) for p in parts)
        t_rec = np.full((len(parts), length), np.nan)
        w_rec = tuple(np.full((len(parts), length) + w.shape[2:], np.nan) for w in w_out)
        for b, (tb, wb, _, _) in enumerate(parts):
            t_rec[b, : len(tb)] = tb
            for i, w in enumerate(wb):
                w_rec[i][b, : len(tb)] = w
        status = [p[2] for p in parts]
        message = [p[3] for p in parts]
        obs = jax.vmap(lambda w, t: _observables_jit(w, t, rule, cmethod, eta, diagnose), in_axes=(0, task_axis))(
            tuple(map(jnp.asarray, w_rec)), run_task
        )
    else:
        t_rec, w_rec, status, message = finish(t_out, w_out, result)
        obs = _observables_jit(tuple(map(jnp.asarray, w_rec)), task, rule, cmethod, eta, diagnose)
    loss_t, map_t, cons_t, unorm_t, info_t = jax.tree_util.tree_map(np.asarray, obs)
    # the worst exactness diagnostics of the run, at the recorded times (exactness_summary)
    config["exactness"] = (
        summarize(
            info_t,
            t_rec,
            what=f"{rule.label} ({cmethod})",
            rcond=rule.spectral_function().cutoff(ws[0].dtype),
            warn_cut=rule.rcond == DEFAULT_RCOND,
        )
        if diagnose
        else {"checked": False}
    )
    for s, m in zip(status if batched else [status], message if batched else [message]):
        if s in ("diverged", "max_steps", "failed"):
            warnings.warn(m, RuntimeWarning, stacklevel=2)
    if diagnose and not config["exactness"]["reliable"]:
        warnings.warn(f"simulate: {config['exactness']['warning']}", RuntimeWarning, stacklevel=2)
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
            "K, or the angle bound of a deflated eigenvector); kept",
            RuntimeWarning,
            stacklevel=3,
        )


def exactness_summary(traj: Trajectory) -> dict:
    """What the report shows about a run's exactness: the worst diagnostics at its recorded times.

    The dict of :func:`curvdyn.curvature.summarize` that :func:`simulate` stores in
    ``traj.config["exactness"]`` (worst ``n_cut``, ``n_cut_resolved``, ``largest_cut``,
    ``cut_residual``, ``cut_effect``, ``cut_eig_error``, ``cond``, ``residual``,
    ``error_estimate``, ``floor``; ``worst_at``, ``reliable``, ``warning``), plus ``verdict``: a
    short phrase — ``"exact (est. error 1e-12)"``, ``"cutoff decides the answer"``,
    ``"ill-conditioned (est. error …)"``, ``"not checked"`` for a run with ``diagnose=False``, or
    ``"not recorded"`` for a trajectory saved before diagnostics existed.
    """
    summary = dict(traj.config.get("exactness") or {})
    if not summary:
        return {"verdict": "not recorded"}
    if summary.get("checked") is False:
        return {**summary, "verdict": "not checked (simulate(..., diagnose=False))"}
    cut = summary.get("cut_effect") or 0.0
    err = summary.get("error_estimate")
    if cut > WARN_TOL:
        verdict = f"cutoff decides the answer (cut effect {cut:.2g})"
    elif err is not None and err > WARN_TOL:
        verdict = f"ill-conditioned (est. error {err:.2g}, cond {summary.get('cond') or float('nan'):.2g})"
    elif err is None:
        verdict = "no estimate (method without diagnostics)"
    else:
        verdict = f"exact (est. error {err:.1g})"
    summary["verdict"] = verdict
    return summary


def _task_config(task: Task) -> dict:
    return {
        "target": np.asarray(task.target).tolist(),
        "input_cov": None if task.identity_cov else np.asarray(task.input_cov).tolist(),
        "loss_offset": float(task.loss_offset),
    }


def _member_tasks(tasks, weights) -> list[Task]:
    """A sequence of per-member tasks (batched weights only), checked: one shape, one kind of Σ."""
    batched = isinstance(weights, tuple | list) and len(weights) > 0 and np.ndim(weights[0]) == 3
    if not isinstance(tasks, tuple | list) or not tasks or not all(isinstance(t, Task) for t in tasks):
        raise TypeError(f"task must be a curvdyn.Task (or, for batched weights, a list of them), got {tasks!r:.80}")
    if not batched:
        raise TypeError("a list of tasks needs batched weights (a leading batch axis), one task per member")
    first = tasks[0]
    for t in tasks[1:]:
        if t.target.shape != first.target.shape or t.identity_cov != first.identity_cov:
            raise ValueError(
                f"the tasks of one batch must share the target's shape and whether Σ = I; got {first!r} and {t!r}"
            )
    return list(tasks)


def _call(run, batched: bool, devices, ws, task, *shared):
    """Call a compiled runner; a batch over several devices is split over them
    (:func:`curvdyn.batch.run_split`)."""
    if not batched:
        return run(ws, task, *shared)
    if len(devices) == 1:
        active = np.ones(ws[0].shape[0], dtype=bool)
        return run(*jax.device_put((active, ws, task, *shared), devices[0]))
    flags = (True, np.ndim(task.target) == 3) + (False,) * len(shared)
    return batch_lib.run_split(run, (ws, task, *shared), flags, devices)


def _finish_ode(ts: np.ndarray, ws: tuple, result: np.ndarray, task: Task, loss_tol: float, max_loss: float):
    """Trim diffrax's padded output and name the outcome."""
    keep = np.isfinite(ts)
    ts = ts[keep]
    ws = tuple(w[keep] for w in ws)
    # The final ``t1`` save repeats the last ``ts`` entry when the run reaches t_end.
    if len(ts) >= 2 and ts[-1] == ts[-2]:
        ts, ws = ts[:-1], tuple(w[:-1] for w in ws)
    code = int(result)
    if code == OUTCOME_SUCCESSFUL:
        return ts, ws, "completed", f"reached t_end = {ts[-1]:.6g}"
    if code == OUTCOME_EVENT:
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
    if code == OUTCOME_MAX_STEPS:
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
            f"the ODE solver failed at t = {ts[-1]:.6g} (step size collapsed or non-finite values); "
            "the recorded part is kept"
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
