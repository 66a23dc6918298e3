"""ReLU study: the per-unit rescaling conservation law under SGD, NGD, √NGD and their block versions.

Section 4 of the paper ("Weight balance") notes that deep ReLU networks share the rescaling
symmetry of deep linear networks and that "the conservation of squared difference of norms for
homogeneous ReLU networks still requires similar numerical confirmation". This experiment does
that confirmation, per hidden unit.

Setup. A bias-free ReLU student (widths 4-6-6-3, d = 3, LeCun-normal initial weights) learns a
fixed full batch of P = 8 Gaussian inputs labelled by a random bias-free ReLU teacher (4-5-3,
outputs scaled to unit mean square), with curvdyn's squared loss ``L = ½ mean_b ‖f(x_b) − y_b‖²``.
Five rules run in continuous time, ``θ̇ = −d(θ)`` (η = 1):

* ``sgd``: ``d = g``;
* ``ngd`` / ``sqrt-ngd``: ``d = (H₊⁺)^{1/q} g`` (q = 1, 2), exact, through the output-space kernel
  ``J Jᵀ`` (:func:`curvdyn.nonlinear.gauss_newton_direction`, the same computation as
  :func:`curvdyn.optim.fractional_ngd_direction`);
* ``ngd-d`` / ``sqrt-ngd-d``: layer i moves along ``d^{-1/q} (H_i⁺)^{1/q} g_i`` with the *exact*
  Gauss–Newton diagonal block ``H_i = c J_iᵀ J_i`` of the ReLU network (not a Kronecker
  factorization, which is not exact here; :func:`curvdyn.nonlinear.block_fractional_ngd_direction`).

Measured, for every hidden unit u (row u of ``w_i``, column u of ``w_{i+1}``):
``c_u(t) = ‖w_in,u‖² − ‖w_out,u‖²`` (:func:`curvdyn.nonlinear.unit_balances`), and its drift
``max_u |c_u(t) − c_u(0)|`` relative to the initial mean ``‖w_in,u‖²``. Also the instantaneous
rate ``ċ_u = 2 ⟨v_u, θ̇⟩`` relative to ``‖v_u‖ ‖θ̇‖`` (``v_u`` the rescaling tangent): exactly the
quantity the theory says vanishes for SGD and the full NGD family (their directions lie in
``range(Jᵀ)``, and ``v_u ∈ null(J)``).

Kinks. The vector field jumps where a pre-activation crosses 0, and along the way the flows
*slide* on kinks (a pre-activation pinned at 0 while the field on either side points back to
it: a Filippov sliding mode), which an error-controlled solver cannot step through: it shrinks
the step without end (the default run records an SGD run without a floor, which stalls with
steps of ~1e-8 and smaller). The solver (Bosh3, rtol 1e-10, atol 1e-12) therefore runs with a
step floor ``dtmin`` (diffrax ``force_dtmin``): above it the step is error-controlled, at it the
step is taken anyway, and most steps sit at the floor. The conservation error of SGD and √NGD
is then first order in ``dtmin``, so the default run repeats every rule at ``dtmin/2``: their
drift must halve, a genuine violation must not shrink.

Exact NGD is different: its field ``(H₊⁺) g`` is singular where the rank of ``J`` changes (a
unit switching on for an example adds an eigenvalue of ``J Jᵀ`` that starts at 0), and a floor
step across such an event leaves a drift that does not shrink with the floor. The rank of ``J``
is recorded at every save time, and the five rules also run on the tasks of further seeds
(teacher, inputs and student all redrawn), so every conservation claim is made on every task.
Recorded per run: solver steps, rejected steps and the fraction of steps taken at the floor.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any

import diffrax
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
from jax.flatten_util import ravel_pytree
from matplotlib.figure import Figure

from curvdyn import nonlinear as nl
from curvdyn.curvature.spectral import curvature_power
from curvdyn.experiments.base import Claim, Config, Data, at_least, at_most, measure
from curvdyn.experiments.common import log_times, per_seed_points, rule_color, rule_label
from curvdyn.experiments.common import progress as progress_bar
from curvdyn.integrators import ODE, OUTCOME_SUCCESSFUL, SOLVE_OUTCOMES, SOLVERS, solve_outcome
from curvdyn.optim import MLP
from curvdyn.rules import get_rule

NAME = "relu"
TITLE = "ReLU study — per-unit conservation of ‖w_in‖² − ‖w_out‖² under SGD, NGD, √NGD and block-diagonal NGD-d, √NGD-d"

RULES = ("sgd", "ngd", "sqrt-ngd", "ngd-d", "sqrt-ngd-d")
FULL = ("sgd", "ngd", "sqrt-ngd")
BLOCK = ("ngd-d", "sqrt-ngd-d")
#: rule → (branch of the vector field, 1/q): 0 gradient, 1 full (H₊⁺)^{1/q}, 2 block-diagonal.
RULE_KIND = {r: (0 if r == "sgd" else 2 if get_rule(r).block else 1, curvature_power(get_rule(r).q)) for r in RULES}

MODEL = MLP("relu")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings of the ReLU study.

    Attributes:
      widths: the bias-free ReLU student; teacher_widths: the random ReLU teacher;
        n_examples: the full batch P; init_scale: times LeCun-normal initial weights.
      t_end, n_save, t_min: 0 and ``n_save`` log-spaced save times from ``t_min`` to ``t_end``.
      ode: the solver, tolerances and step cap (its ``solver`` from :data:`curvdyn.integrators.SOLVERS`).
      dtmin: the forced step floor (diffrax ``force_dtmin``).
      refine: a second run of every rule with ``dtmin / refine`` (0: none).
      diagnose_sliding: an SGD run with the floor ``no_floor`` (it stalls on a kink), stopped
        after ``no_floor_max_steps`` steps.
      extra_seeds: the five rules again on k further tasks (teacher, inputs, student): seed s
        runs the tasks s·(k + 1), ..., s·(k + 1) + k (:meth:`seeds`), so different seeds never
        share a task and each seed's claims come from its own draws (seed 0: tasks 0, ..., k).
      kernel_solver: how the kernels ``J Jᵀ`` / ``J_i J_iᵀ`` are diagonalized (see
        :func:`curvdyn.optim.fractional_ngd_direction`). ``"eigh"`` is about twice as fast as
        ``"svd"`` here; its error grows like eps·cond(K), and the direction stays exactly in
        range(Jᵀ) (so it stays orthogonal to every v_u) either way.
      rank_rcond: the relative cutoff of the rank of J recorded along the trajectories (that of
        the rules).
      no_floor: the "no floor" of the sliding diagnosis.
      no_floor_max_steps: the step cap of the sliding diagnosis. It stalls within a few thousand
        steps (on the tasks of seeds 0-2 the median of its last 1000 steps is 1e-8 to 5e-8 by
        step 5000 and stays there up to its stall after 26k-82k steps), so more steps show
        nothing new.
    """

    widths: tuple[int, ...] = (4, 6, 6, 3)
    teacher_widths: tuple[int, ...] = (4, 5, 3)
    n_examples: int = 8
    init_scale: float = 1.0
    t_end: float = 8.0
    n_save: int = 120
    t_min: float = 1e-3
    ode: ODE = ODE(rtol=1e-10, atol=1e-12, solver="bosh3", max_steps=100_000)
    dtmin: float = 1e-3
    refine: int = 2
    diagnose_sliding: bool = True
    extra_seeds: int = 3
    kernel_solver: str = "eigh"
    rank_rcond: float = 1e-13
    no_floor: float = 1e-15
    no_floor_max_steps: int = 10_000

    @property
    def no_floor_ode(self) -> ODE:
        """The solver of the sliding diagnosis: :attr:`ode` with :attr:`no_floor_max_steps`."""
        return dataclasses.replace(self.ode, max_steps=self.no_floor_max_steps)

    @property
    def refined_dtmin(self) -> float | None:
        """The step floor of the refined runs (``None`` without them)."""
        return self.dtmin / self.refine if self.refine else None

    def seeds(self, seed: int) -> list[int]:
        """The task seeds of run seed ``seed``: the main task's, then the extra tasks' (disjoint
        between run seeds)."""
        return [seed * (self.extra_seeds + 1) + k for k in range(self.extra_seeds + 1)]


DEFAULT = Settings()
QUICK = dataclasses.replace(DEFAULT, t_end=3.0, n_save=60, dtmin=2e-3, refine=0, diagnose_sliding=False, extra_seeds=2)


def make_task(seed: int, s: Settings):
    """``(x, y, params0)``: inputs (P, n_0), teacher targets (P, n_d), student initial weights."""
    k_teacher, k_x, k_student = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jax.random.normal(k_x, (s.n_examples, s.widths[0]))
    teacher = MODEL.init(k_teacher, s.teacher_widths, bias=False)
    y = MODEL(teacher, x)
    y = y / jnp.sqrt(jnp.mean(jnp.sum(y * y, axis=1)) / y.shape[1])
    for attempt in range(100):
        params = MODEL.init(jax.random.fold_in(k_student, attempt), s.widths, bias=False, scale=s.init_scale)
        if not _dead_examples(params, x):
            return x, y, params
    raise RuntimeError("no student initialization without dead examples found in 100 draws")


def _dead_examples(params, x) -> int:
    """Examples whose activations vanish in some hidden layer (their Jacobian rows are zero)."""
    a, dead = x, np.zeros(x.shape[0], bool)
    for w in params[:-1]:
        a = jax.nn.relu(a @ w.T)
        dead |= np.asarray(jnp.all(a == 0, axis=1))
    return int(np.sum(dead))


@functools.lru_cache(maxsize=8)
def _runner(sizes: tuple, shapes: tuple, ode: ODE, kernel_solver: str, rank_rcond: float):
    """A compiled ``run(theta0, x, y, ts, kind, power, dtmin)`` for one network shape and solver."""
    template = tuple(jnp.zeros(sh) for sh in shapes)
    _, unravel = ravel_pytree(template)

    def field(t, theta, args):
        x, y, kind, power = args
        jac = jax.jacrev(lambda th: MODEL(unravel(th), x).ravel())(theta)
        c = 1.0 / x.shape[0]  # L = ½ mean_b ‖f − y‖²: H₊ = c JᵀJ, g = c Jᵀ r
        g = c * (jac.T @ (MODEL(unravel(theta), x).ravel() - y.ravel()))
        branches = [
            lambda: g,
            lambda: nl.gauss_newton_direction(jac, g, power=power, c=c, solver=kernel_solver),
            lambda: nl.gauss_newton_direction(jac, g, power=power, c=c, blocks=sizes, solver=kernel_solver),
        ]
        return -jax.lax.switch(kind, branches)

    def run(theta0, x, y, ts, kind, power, dtmin):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            SOLVERS[ode.solver](),
            t0=ts[0],
            t1=ts[-1],
            dt0=jnp.maximum(dtmin, 1e-4),
            y0=theta0,
            args=(x, y, kind, power),
            saveat=diffrax.SaveAt(
                subs=[diffrax.SubSaveAt(ts=ts), diffrax.SubSaveAt(steps=True, fn=lambda t, y_, a: t)]
            ),
            stepsize_controller=diffrax.PIDController(rtol=ode.rtol, atol=ode.atol, dtmin=dtmin, force_dtmin=True),
            max_steps=ode.max_steps,
            throw=False,
        )
        ys, step_ts = sol.ys
        return ys, step_ts, solve_outcome(sol.result), sol.stats["num_steps"], sol.stats["num_rejected_steps"]

    def observables(theta, x, y, kind, power):
        params = unravel(theta)
        vel = field(0.0, theta, (x, y, kind, power))
        vs = jax.vmap(lambda v: ravel_pytree(v)[0])(nl.rescaling_directions(params))
        rate = jnp.abs(vs @ vel) / (jnp.linalg.norm(vs, axis=1) * jnp.linalg.norm(vel) + 1e-300)
        jac = jax.jacrev(lambda th: MODEL(unravel(th), x).ravel())(theta)
        kappa = jnp.linalg.eigvalsh(jac @ jac.T)
        rank = jnp.sum(kappa > rank_rcond * jnp.max(kappa))
        return MODEL.loss(params, x, y), nl.unit_balances(params), jnp.linalg.norm(vel), jnp.max(rate), rank

    def obs(thetas, x, y, kind, power):
        # one save time after the other: a vmapped field would run batched, independent SVDs of
        # every switch branch at once, which can deadlock jaxlib 0.10's CPU thread pool
        # (see curvdyn.curvature.order_after)
        return jax.lax.map(lambda th: observables(th, x, y, kind, power), thetas)

    return jax.jit(run), jax.jit(obs), unravel


def _compile(theta0, x, y, ts, s: Settings, shapes, sizes) -> float:
    """Compile the solver and the observables ahead of time (so run times exclude it); seconds taken."""
    run, obs, _ = _runner(sizes, shapes, s.ode, s.kernel_solver, s.rank_rcond)
    start = time.perf_counter()
    kind, power, dtmin = jnp.asarray(0), jnp.asarray(0.0), jnp.asarray(float(s.dtmin))
    run.lower(theta0, x, y, ts, kind, power, dtmin).compile()
    if s.diagnose_sliding:
        run_no_floor = _runner(sizes, shapes, s.no_floor_ode, s.kernel_solver, s.rank_rcond)[0]
        run_no_floor.lower(theta0, x, y, ts, kind, power, dtmin).compile()
    obs.lower(jnp.zeros((ts.shape[0], theta0.size)), x, y, kind, power).compile()
    return time.perf_counter() - start


def _integrate(rule, theta0, x, y, ts, dtmin, s: Settings, shapes, sizes, ode: ODE):
    """One run of ``rule`` with the step floor ``dtmin`` and the solver ``ode``; observed with ``s.ode``'s programs."""
    run = _runner(sizes, shapes, ode, s.kernel_solver, s.rank_rcond)[0]
    obs = _runner(sizes, shapes, s.ode, s.kernel_solver, s.rank_rcond)[1]
    kind, power = (jnp.asarray(v) for v in RULE_KIND[rule])
    dtmin = jnp.asarray(float(dtmin))
    start = time.perf_counter()
    ys, step_ts, result, n_steps, n_rej = run(theta0, x, y, ts, kind, power, dtmin)
    ys = np.asarray(ys)
    wall = time.perf_counter() - start
    ok = np.all(np.isfinite(ys), axis=1)
    loss, bal, speed, rate, rank = (
        np.asarray(v) for v in obs(jnp.asarray(np.where(ok[:, None], ys, 0.0)), x, y, kind, power)
    )
    bad = ~ok
    loss, speed, rate = (np.where(bad, np.nan, v) for v in (loss, speed, rate))
    bal = np.where(bad[:, None], np.nan, bal)
    step_ts = np.asarray(step_ts)
    step_ts = step_ts[np.isfinite(step_ts)]
    dts = np.diff(np.concatenate([[float(ts[0])], step_ts]))
    at_floor = float(np.mean(dts <= dtmin * (1 + 1e-9))) if dts.size else 0.0
    info = {
        "status": "completed"
        if int(result) == OUTCOME_SUCCESSFUL
        else f"solver stopped ({SOLVE_OUTCOMES[int(result)]})",
        "solver_steps": int(n_steps),
        "rejected_steps": int(n_rej),
        "fraction_of_steps_at_dtmin": round(at_floor, 4),
        "dtmin": float(dtmin),
        "wall_time_s": round(wall, 3),
    }
    rank = np.where(bad, -1, rank)
    arrays = {"theta": ys, "loss": loss, "balances": bal, "speed": speed, "rate": rate, "rank": rank, "step_t": step_ts}
    return arrays, info


def compute(settings: Settings, *, seed: int, progress: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    s = settings
    task_seeds = s.seeds(seed)
    x, y, params0 = make_task(task_seeds[0], s)
    theta0, _ = ravel_pytree(params0)
    shapes = tuple(tuple(int(n) for n in w.shape) for w in params0)
    sizes = nl.block_sizes(params0)
    ts = jnp.asarray(log_times(s.t_end, s.n_save, s.t_min))
    ts = ts.at[-1].set(s.t_end)

    data: dict[str, np.ndarray] = {
        "t": np.asarray(ts),
        "x": np.asarray(x),
        "y": np.asarray(y),
        "widths": np.asarray(s.widths),
    }
    runs: dict[str, dict[str, Any]] = {}
    compile_s = _compile(theta0, x, y, ts, s, shapes, sizes)
    refined = s.refined_dtmin
    jobs = [(rule, s.dtmin, "") for rule in RULES]
    jobs += [(rule, refined, "refined__") for rule in RULES] if refined else []
    jobs += [("sgd", s.no_floor, "nofloor__")] if s.diagnose_sliding else []
    jobs += [(rule, s.dtmin, f"seed{k}__") for k in range(1, s.extra_seeds + 1) for rule in RULES]
    tasks = {0: (x, y, theta0)}
    for k in range(1, s.extra_seeds + 1):
        xk, yk, pk = make_task(task_seeds[k], s)
        tasks[k] = (xk, yk, ravel_pytree(pk)[0])
    for rule, dtmin, prefix in progress_bar(jobs, enabled=progress, desc="relu runs"):
        k = int(prefix[4:-2]) if prefix.startswith("seed") else 0
        xk, yk, theta_k = tasks[k]
        ode = s.no_floor_ode if prefix == "nofloor__" else s.ode
        arrays, info = _integrate(rule, theta_k, xk, yk, ts, dtmin, s, shapes, sizes, ode)
        if not prefix:
            for key in ("theta", "loss", "balances", "speed", "rate", "rank"):
                data[f"{rule}__{key}"] = arrays[key]
        elif prefix.startswith("seed"):  # the other tasks: what the per-seed claims need
            for key in ("loss", "balances", "rate", "rank"):
                data[f"{prefix}{rule}__{key}"] = arrays[key]
            data[f"{prefix}in_norms"] = hidden_in_norms(data, np.asarray(theta_k))
        elif prefix == "refined__":  # only what the convergence check needs
            data[f"{prefix}{rule}__balances"] = arrays["balances"]
            data[f"{prefix}{rule}__loss"] = arrays["loss"]
        else:  # the sliding diagnosis: every step time of a run without a step floor
            data[f"{prefix}{rule}__step_t"] = arrays["step_t"]
            info["note"] = f"no step floor (dtmin {s.no_floor:g}): shows the solver stalling on a kink"
        runs[f"{prefix}{rule}"] = info
    return data, {"compile_time_s": round(compile_s, 3), "seeds": task_seeds, "runs": runs}


def describe(config: Config[Settings]) -> str:
    """The setup and numerics in words, for the report."""
    s, runs = config.settings, config.outcome["runs"]
    ode = s.ode
    inputs = f"x ~ N(0, I_{s.widths[0]}), P = {s.n_examples} examples (full batch)"
    teacher = (
        f"bias-free ReLU MLP, widths {list(s.teacher_widths)}, LeCun-normal weights, outputs scaled to unit mean square"
    )
    text = (
        f"Bias-free ReLU network, widths {'-'.join(map(str, s.widths))} (d = {len(s.widths) - 1}, LeCun-normal "
        f"weights × {s.init_scale:g}), on a fixed batch: {inputs}; targets from a {teacher}. "
        "Five rules from the same weights, η = 1, continuous time to "
        f"t = {s.t_end:g}: SGD, exact NGD and √NGD ((H₊⁺)^{{1/q}} g through the kernel J Jᵀ) and their exact "
        "block-diagonal versions NGD-d, √NGD-d (per-layer Gauss–Newton blocks J_iᵀJ_i, layer factor d^{-1/q}; for a ReLU "
        "network these blocks are not Kronecker products, so this is not K-FAC). "
        f"ODE: {ode.solver}, rtol {ode.rtol:g}, atol {ode.atol:g}, with a forced step floor dtmin {s.dtmin:g}"
        + (f" (and every rule again at {s.refined_dtmin:g})" if s.refined_dtmin else "")
        + ": the flows slide along ReLU kinks, where error control alone stalls"
    )
    if "nofloor__sgd" in runs:
        text += f" (SGD without the floor: {runs['nofloor__sgd']['solver_steps']} steps without reaching t_end)"
    text += (
        ". Steps per rule: "
        + ", ".join(
            f"{r} {runs[r]['solver_steps']} ({runs[r]['fraction_of_steps_at_dtmin']:.0%} at "
            f"the floor, {runs[r]['wall_time_s']:.1f} s)"
            for r in RULES
        )
        + f"; compilation {config.outcome.get('compile_time_s', float('nan')):.1f} s"
        + ". c_u = ‖w_in,u‖² − ‖w_out,u‖² per hidden unit; drift relative to the initial mean ‖w_in,u‖²."
    )
    return text


# ---------------------------------------------------------------------------------------
# measurements (from the data alone)
# ---------------------------------------------------------------------------------------


def hidden_in_norms(data, theta) -> np.ndarray:
    """``‖w_in,u‖²`` of every hidden unit for a flat parameter vector ``theta``."""
    widths = [int(n) for n in data["widths"]]
    out, start = [], 0
    for n_in, n_out in zip(widths[:-2], widths[1:-1]):
        w = theta[start : start + n_in * n_out].reshape(n_out, n_in)
        out.append(np.sum(w * w, axis=1))
        start += n_in * n_out
    return np.concatenate(out)


def balance_scale(data, prefix: str = "") -> float:
    """The initial mean ``‖w_in,u‖²`` over hidden units (the unit of the drift) of a task."""
    if prefix.startswith("seed"):
        return float(np.mean(data[f"{prefix}in_norms"]))
    return float(np.mean(hidden_in_norms(data, data["sgd__theta"][0])))


def drift_curve(data, rule: str, prefix: str = "") -> np.ndarray:
    """``max_u |c_u(t) − c_u(0)|`` over time, relative to :func:`balance_scale`.

    ``prefix``: ``""`` (the main task), ``"refined__"`` (main task, finer step floor) or
    ``"seed{k}__"`` (the k-th extra task, :meth:`Settings.seeds`).
    """
    bal = data[f"{prefix}{rule}__balances"]
    return np.max(np.abs(bal - bal[0]), axis=1) / balance_scale(data, prefix)


def max_drift(data, rule: str, prefix: str = "") -> float:
    """``max_t max_u |c_u(t) − c_u(0)| / mean_u ‖w_in,u(0)‖²`` (``inf`` if the run broke off)."""
    d = drift_curve(data, rule, prefix)
    return float(np.max(d)) if np.all(np.isfinite(d)) else float("inf")


def task_prefixes(data) -> list[str]:
    """``""`` (the main task) and ``"seed{k}__"`` for every extra task in ``data``."""
    extra = sorted(
        {k.split("__")[0] for k in data if k.startswith("seed") and k.endswith("__in_norms")}, key=lambda p: int(p[4:])
    )
    return [""] + [f"{p}__" for p in extra]


def drifts_over_tasks(data, rule: str) -> list[float]:
    """:func:`max_drift` of ``rule`` on every task (main task first)."""
    return [max_drift(data, rule, p) for p in task_prefixes(data)]


def rank_changes(data, rule: str, prefix: str = "") -> int:
    """How often the rank of ``J`` changes between consecutive save times."""
    r = np.asarray(data[f"{prefix}{rule}__rank"])
    return int(np.sum(r[1:] != r[:-1]))


def loss_ratio(data, rule: str, prefix: str = "") -> float:
    """``L(t_end) / L(0)``."""
    loss = data[f"{prefix}{rule}__loss"]
    return float(loss[-1] / loss[0]) if np.isfinite(loss[-1]) else float("inf")


def norm_growth(data, rule: str) -> float:
    """``max_t ‖θ(t)‖ / ‖θ(0)‖``."""
    n = np.linalg.norm(data[f"{rule}__theta"], axis=1)
    return float(np.max(n) / n[0]) if np.all(np.isfinite(n)) else float("inf")


def sliding_stall(data) -> dict | None:
    """The run without step floor: where it stalled and how small its last steps were."""
    key = "nofloor__sgd__step_t"
    if key not in data:
        return None
    st = np.asarray(data[key])
    st = st[np.isfinite(st)]
    dt = np.diff(st)
    return {"t_stall": float(st[-1]), "steps": int(st.size), "median_last_dt": float(np.median(dt[-1000:]))}


def _per_task(values, seeds) -> str:
    return ", ".join(f"seed {s} {v:.2g}" for s, v in zip(seeds, values))


#: Why exact NGD's integrated drift is not a confirmation (fixed before any run; see the claim).
NGD_SINGULAR = (
    "Exact NGD's field (H₊⁺) g is singular where the rank of J changes: when a ReLU unit switches on for an example, "
    "J Jᵀ gains an eigenvalue that starts at 0, and the pseudo-inverse's component along it grows like its inverse. "
    "A step at the forced floor across such an event moves off the level set of c_u by an amount that does not shrink "
    "with the floor, so the integrated drift of NGD depends on the task (the rank changes) and is not controlled at "
    "these floors (on some tasks it drifts with no rank change seen at the save times: a unit that switches between "
    "two saves, or a near-singular J, is not located by the recorded data). The flow itself conserves c_u wherever it is defined: ⟨v_u, θ̇⟩ is at round-off at every recorded "
    "point (claim rescaling-rate-zero-full-rules). SGD's field has no such singularity and √NGD's grows only like the "
    "inverse square root; both conserve c_u to integration error on every task."
)


def _floor_note(data: Data, config: Config[Settings]) -> str:
    """The solver and its step floor, in words (and where SGD stalls without it, if measured)."""
    s = config.settings
    stall = sliding_stall(data)
    note = f"{s.ode.solver} with rtol {s.ode.rtol:g}, atol {s.ode.atol:g} and a forced step floor dtmin {s.dtmin:g}"
    if stall:
        note += (
            f" (without the floor SGD stalls at t = {stall['t_stall']:.3g}: its last 1000 steps have median size "
            f"{stall['median_last_dt']:.1g}, a pre-activation sliding on its kink)"
        )
    return note


def _seeds(config: Config[Settings]) -> list[int]:
    return list(config.outcome.get("seeds", [0]))


# ---------------------------------------------------------------------------------------
# the claims, in report order
# ---------------------------------------------------------------------------------------


def _conservation(rule: str):
    def claim(data: Data, config: Config[Settings]) -> Claim:
        s, runs = config.settings, config.outcome["runs"]
        refined = s.refined_dtmin
        drifts = drifts_over_tasks(data, rule)
        n_units = data["sgd__balances"].shape[1]
        detail = (
            f"max over {len(drifts)} tasks (seeds) of max_t max_u |c_u(t) − c_u(0)| / mean_u ‖w_in,u(0)‖², "
            f"{n_units} hidden units, t ≤ {s.t_end:g}: {_per_task(drifts, _seeds(config))}; "
            f"{_floor_note(data, config)}; on the main task "
            f"{runs[rule]['fraction_of_steps_at_dtmin']:.0%} of {runs[rule]['solver_steps']} steps at the floor. The "
            "bound is the error such a floor allows (first order in dtmin), not the 1e-7 of a smooth flow"
        )
        if refined:
            detail += f"; at dtmin {refined:g} the main task's drift is {max_drift(data, rule, 'refined__'):.2g}"
        return at_most(
            f"conservation-{rule}",
            f"{rule_label(rule)} conserves c_u = ‖w_in,u‖² − ‖w_out,u‖² of every hidden unit of a ReLU network, on "
            "every task (rescaling symmetry; section 4 leaves this numerical confirmation open).",
            max(drifts),
            1e-3,
            detail + ".",
        )

    claim.__name__ = f"conservation_{rule.replace('-', '_')}"
    return claim


def conservation_ngd(data: Data, config: Config[Settings]) -> Claim:
    refined = config.settings.refined_dtmin
    seeds = _seeds(config)
    ngd = drifts_over_tasks(data, "ngd")
    changes = [rank_changes(data, "ngd", p) for p in task_prefixes(data)]
    steady = [d for d, c in zip(ngd, changes) if c == 0]
    return at_most(
        "conservation-ngd",
        "Exact NGD conserves c_u = ‖w_in,u‖² − ‖w_out,u‖² of every hidden unit along its integrated trajectory, on "
        "every task (section 4 leaves this numerical confirmation open).",
        max(ngd),
        1e-2,
        f"Max drift per task: {_per_task(ngd, seeds)}; changes of rank J between save times along NGD's trajectory: "
        + ", ".join(f"seed {s} {c}" for s, c in zip(seeds, changes))
        + f"; max drift on the {len(steady)} tasks with no rank change seen at the save times: "
        + (f"{max(steady):.2g}" if steady else "none")
        + " (a rank change between two save times is not seen: these drifts are not located by the data)"
        + (f"; main task at dtmin {refined:g}: {max_drift(data, 'ngd', 'refined__'):.2g}" if refined else "")
        + f". {_floor_note(data, config)}.",
        known_deviation=NGD_SINGULAR,
    )


def rescaling_rate_zero_full_rules(data: Data, config: Config[Settings]) -> Claim:
    rates = {rule: max(float(np.max(data[f"{p}{rule}__rate"])) for p in task_prefixes(data)) for rule in FULL}
    worst = max(rates, key=lambda r: rates[r])
    return at_most(
        "rescaling-rate-zero-full-rules",
        "Consistency check of the directions along the trajectories: SGD, NGD and √NGD move orthogonally to every "
        "per-unit rescaling direction v_u (so ċ_u = 2⟨v_u, θ̇⟩ = 0 pointwise), as range(Jᵀ) ⊥ null(J) requires.",
        rates[worst],
        1e-10,
        "max over tasks, save times and units of |⟨v_u, θ̇⟩| / (‖v_u‖ ‖θ̇‖) ("
        + ", ".join(f"{rule_label(r)} {v:.2g}" for r, v in rates.items())
        + "). This holds at any point by construction; it checks the computed directions, and that the "
        "integrated drift of the conservation claims is integration error.",
    )


def drift_is_first_order_integration_error(data: Data, config: Config[Settings]) -> Claim | None:
    s = config.settings
    refined = s.refined_dtmin
    if not refined:
        return None
    factor = s.dtmin / refined
    ratios = {
        rule: max_drift(data, rule) / max(max_drift(data, rule, "refined__"), 1e-300) for rule in ("sgd", "sqrt-ngd")
    }
    # the observed order p of the drift in the step floor: drift ∝ dtmin^p, so ratio = factor^p
    orders = {rule: math.log(max(r, 1e-300)) / math.log(factor) for rule, r in ratios.items()}
    slow = min(orders, key=lambda r: orders[r])
    return at_least(
        "drift-is-first-order-integration-error",
        "The residual drift of SGD and √NGD is integration error: it shrinks with the step floor (first order "
        "expected), so c_u is conserved by the continuous-time flows.",
        orders[slow],
        0.5,
        f"Observed order p of the drift in the step floor, drift(dtmin {s.dtmin:g}) / drift(dtmin {refined:g}) = "
        f"{factor:g}^p on the main task, the smaller of the two rules: "
        + ", ".join(f"{rule_label(r)} ratio {ratios[r]:.3g} (p = {orders[r]:.2f})" for r in ratios)
        + ". A first-order error gives p = 1; p ≥ ½ asks that the drift clearly vanishes with the step floor "
        "(a faster fall, p > 1, is no evidence against integration error). NGD: "
        f"{max_drift(data, 'ngd') / max(max_drift(data, 'ngd', 'refined__'), 1e-300):.3g} (see conservation-ngd).",
    )


def _conservation_breaks(rule: str):
    def claim(data: Data, config: Config[Settings]) -> Claim:
        refined = config.settings.refined_dtmin
        drifts = drifts_over_tasks(data, rule)
        rate = max(float(np.max(data[f"{p}{rule}__rate"])) for p in task_prefixes(data))
        detail = (
            f"min over tasks of the max drift (same solver settings as the full rules): "
            f"{_per_task(drifts, _seeds(config))}; |⟨v_u, θ̇⟩| / (‖v_u‖‖θ̇‖) reaches {rate:.2g}"
        )
        if refined:
            detail += f"; main task at dtmin {refined:g}: {max_drift(data, rule, 'refined__'):.3g}"
        return at_least(
            f"conservation-breaks-{rule}",
            f"{rule_label(rule)} (exact diagonal Gauss–Newton blocks of the ReLU network) breaks the per-unit "
            "conservation law on every task (section 4: block-diagonal methods do not follow it).",
            min(drifts),
            0.1,
            detail + ".",
        )

    claim.__name__ = f"conservation_breaks_{rule.replace('-', '_')}"
    return claim


def ngd_d_less_stable_than_sqrt_ngd_d(data: Data, config: Config[Settings]) -> Claim:
    ratio = [a / b for a, b in zip(drifts_over_tasks(data, "ngd-d"), drifts_over_tasks(data, "sqrt-ngd-d"))]
    return at_least(
        "ngd-d-less-stable-than-sqrt-ngd-d",
        "NGD-d's parameter dynamics are less stable than √NGD-d's: its per-unit balances drift at least 10× more "
        "(median over the tasks; conclusion: block NGD gives 'highly divergent parameter update dynamics', block "
        "√NGD 'preserves stability').",
        float(np.median(ratio)),
        10.0,
        f"Ratio of the max drifts, NGD-d / √NGD-d, per task: {_per_task(ratio, _seeds(config))} (median shown). "
        "NGD-d's trajectory is sensitive to the integration and to round-off (its drift changes by orders of magnitude "
        "with the step floor, or between processes), √NGD-d's is not. Weight-norm growth max_t ‖θ(t)‖/‖θ(0)‖ on the "
        "main task: " + ", ".join(f"{rule_label(r)} {norm_growth(data, r):.3g}" for r in RULES) + ".",
    )


def loss_decreases(data: Data, config: Config[Settings]) -> Claim:
    stable = [r for r in RULES if r != "ngd-d"]
    ratios = {rule: max(loss_ratio(data, rule, p) for p in task_prefixes(data)) for rule in RULES}
    worst = max(stable, key=lambda r: ratios[r])
    return at_most(
        "loss-decreases",
        "SGD, NGD, √NGD and √NGD-d learn the teacher task (the loss falls by at least 5× by t_end, on every task).",
        ratios[worst],
        0.2,
        f"Largest L(t_end)/L(0) over the tasks, t_end = {config.settings.t_end:g}: "
        + ", ".join(f"{rule_label(r)} {ratios[r]:.2g}" for r in stable)
        + f". NGD-d is left out: its trajectory runs through bursts where a layer block is nearly singular and "
        f"depends on round-off (the same run in another process, or at another step floor, ends elsewhere); here "
        f"its largest L(t_end)/L(0) is {ratios['ngd-d']:.2g}.",
        known_deviation=NOT_LEARNED_BY_T_END,
    )


#: Measured over ``curvdyn reproduce --seeds 20`` (default resolution).
NOT_LEARNED_BY_T_END = (
    "The 5× by t_end = 8 is this study's reading of 'learns', not a statement of the paper. It holds on every task of "
    "13–14 of seeds 0–19 (14 on one machine, 13 on another: NGD's run on a task of seed 19 ends at 0.32 there, its "
    "outcome at a rank change set by round-off); on the others a task is slower: NGD ends at 0.32–0.60 of its initial "
    "loss on a task of seeds 5, 6 and 10 (its field is singular where the rank of J changes, see conservation-ngd), SGD at 0.29–0.45 "
    "on a task of seeds 8, 10, 13 and 16 and √NGD-d at 0.44 on seed 13 (a longer plateau from the small initial "
    "weights); √NGD falls ≥ 20× on every task of every seed. The conservation claims are measured on those runs "
    "all the same."
)


CLAIMS = (
    _conservation("sgd"),
    _conservation("sqrt-ngd"),
    conservation_ngd,
    rescaling_rate_zero_full_rules,
    drift_is_first_order_integration_error,
    *(_conservation_breaks(rule) for rule in BLOCK),
    ngd_d_less_stable_than_sqrt_ngd_d,
    loss_decreases,
)


def claims(data: Data, config: Config[Settings]) -> list[Claim]:
    return measure(CLAIMS, data, config)


# ---------------------------------------------------------------------------------------
# figure
# ---------------------------------------------------------------------------------------


def plot(data: Data, config: Config[Settings]) -> Figure:
    t = data["t"]
    tp = t[1:]
    scale = balance_scale(data)
    fig = Figure(figsize=(15, 8.4))
    axes = fig.subplots(2, 3)
    fig.subplots_adjust(left=0.065, right=0.985, top=0.89, bottom=0.07, wspace=0.3, hspace=0.42)

    ax = axes[0, 0]
    for rule in RULES:
        ax.plot(tp, data[f"{rule}__loss"][1:], color=rule_color(rule), lw=1.6, label=rule_label(rule))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel("training loss L")
    ax.set_title("loss (teacher task)")
    ax.legend(loc="lower left", fontsize=8.5, framealpha=0.9)

    ax = axes[0, 1]
    for rule in RULES:
        ax.plot(
            tp, np.maximum(drift_curve(data, rule)[1:], 1e-17), color=rule_color(rule), lw=1.6, label=rule_label(rule)
        )
        if f"refined__{rule}__balances" in data:
            ax.plot(
                tp, np.maximum(drift_curve(data, rule, "refined__")[1:], 1e-17), color=rule_color(rule), lw=1.0, ls="--"
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel("max$_u$ |c$_u$(t) − c$_u$(0)| / mean ‖w$_{in}$(0)‖²")
    refined = config.settings.refined_dtmin
    sub = f"\n(solid dtmin {config.settings.dtmin:g}, dashed {refined:g})" if refined else ""
    ax.set_title("per-unit conservation: drift" + sub, fontsize=10.5)
    lo, hi = ax.get_ylim()
    ax.set_ylim(lo, hi * 1e4)  # headroom for the legend
    ax.legend(loc="upper left", fontsize=8.5, framealpha=0.9, ncol=3)

    ax = axes[0, 2]
    for rule in RULES:
        th = data[f"{rule}__theta"]
        ax.plot(tp, np.linalg.norm(th, axis=1)[1:], color=rule_color(rule), lw=1.6, label=rule_label(rule))
    ax.set_xscale("log")
    ax.set_ylabel("‖θ(t)‖")
    ax.set_title("parameter norm")
    ax.legend(loc="upper left", fontsize=8.5, framealpha=0.9)

    for ax, rule in zip(axes[1], ("ngd", "sqrt-ngd-d", "ngd-d")):
        bal = data[f"{rule}__balances"][1:] / scale
        n_units = bal.shape[1]
        half = int(data["widths"][1])  # units of hidden layer 1 come first
        for u in range(n_units):
            ax.plot(
                tp,
                bal[:, u],
                lw=1.1,
                color=matplotlib.colormaps["viridis"](u / max(n_units - 1, 1)),
                ls="-" if u < half else "--",
                label=("layer-1 units" if u == 0 else "layer-2 units" if u == half else None),
            )
        ax.set_xscale("log")
        lo, hi = float(np.nanmin(bal)), float(np.nanmax(bal))
        if rule == "ngd-d" and max(abs(lo), abs(hi)) > 10:
            ax.set_yscale("symlog", linthresh=1.0)
            ax.set_ylim(-3 * max(abs(lo), 1), 30 * max(hi, 1))
        else:
            span = max(hi - lo, 1e-3)
            ax.set_ylim(lo - 0.08 * span, hi + 0.35 * span)  # headroom for the legend
        ax.set_ylabel("c$_u$(t) / mean ‖w$_{in}$(0)‖²")
        ax.set_title(
            f"{rule_label(rule)}: c$_u$ = ‖w$_{{in,u}}$‖² − ‖w$_{{out,u}}$‖² per unit\n"
            f"(max drift {max_drift(data, rule):.2g})",
            fontsize=10.5,
        )
        ax.legend(loc="upper left", fontsize=8, framealpha=0.9, ncol=2)
    for ax in axes.ravel():
        ax.grid(alpha=0.25)
    for ax in axes[1]:
        ax.set_xlabel("time t (η = 1)")
    widths = "-".join(str(n) for n in config.settings.widths)
    fig.suptitle(
        f"ReLU network {widths} (bias-free) on a ReLU teacher: the rescaling conservation law per hidden unit",
        fontsize=13,
    )
    return fig


def plot_seeds(datas: list[Data], configs: list[Config[Settings]], seeds: list[int]) -> Figure:
    """Per-seed results on each seed's main task: every rule's largest per-unit drift, its loss
    ratio L(t_end)/L(0) and its weight-norm growth (the claims also use each seed's extra tasks)."""
    fig = Figure(figsize=(15, 4.6), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = (
        ("largest drift max$_t$ max$_u$ |Δc$_u$| (scaled)", lambda d, r: max_drift(d, r)),
        ("L(t_end) / L(0)", lambda d, r: loss_ratio(d, r)),
        ("weight-norm growth max$_t$ ‖θ(t)‖/‖θ(0)‖", lambda d, r: norm_growth(d, r)),
    )
    for ax, (title, measure_fn) in zip(axes, panels):
        per_seed_points(ax, seeds, {r: [measure_fn(d, r) for d in datas] for r in RULES})
        ax.set_title(title, fontsize=10.5)
    axes[0].legend(fontsize=8, loc="best", framealpha=0.9)
    fig.suptitle(f"ReLU study over {len(seeds)} seeds: each seed's main teacher task", fontsize=12)
    return fig
