"""Integrating many singular modes at once (the reduced dynamics of aligned weights)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from curvdyn._precision import require_float64
from curvdyn._progress import stderr_is_terminal
from curvdyn._validate import check_positive, check_real
from curvdyn.integrators import ODE, OUTCOME_MAX_STEPS, OUTCOME_SUCCESSFUL, SOLVERS, solve_outcome
from curvdyn.simulate import save_times
from curvdyn.theory._common import _as_rule
from curvdyn.theory.modes import _rule_params, _velocity_core, constant_of_motion


@dataclasses.dataclass
class ModeTrajectory:
    """Singular-mode dynamics recorded at the save times.

    Attributes:
      t: times, (T,).
      sigmas: per-layer values ``σ_i(t)``, (T, modes, d) (``(T, d)`` for a single mode given
        as shape ``(d,)``).
      map: ``σ̄(t) = Π_i σ_i``, (T, modes) (or (T,)).
      loss: ``½ Σ_k (σ̄_k − σ̄*_k)²`` (T,) — the full loss of aligned weights with Σ = I when
        every mode of ``W*`` is listed (inactive ones included).
      constants: :func:`constant_of_motion` along the path, (T, modes, d−1) (or (T, d−1));
        ``None`` when the rule has none in closed form.
      targets: ``σ̄*`` per mode.
      status: ``"completed"``, ``"max_steps"`` or ``"failed"``.
      message: what happened, in words.
      n_steps: the solver's accepted + rejected steps.
    """

    t: np.ndarray
    sigmas: np.ndarray
    map: np.ndarray
    loss: np.ndarray
    constants: np.ndarray | None
    targets: np.ndarray
    status: str
    message: str
    n_steps: int


def _mode_field(t, y, args):
    return _velocity_core(y, *args)


def _make_solver(solver: str, max_steps: int, progress: bool):
    cls = SOLVERS[solver]

    def run(y0, args, ts, rtol, atol):
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(_mode_field),
            cls(),
            t0=ts[0],
            t1=ts[-1],
            dt0=None,
            y0=y0,
            args=args,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol),
            max_steps=max_steps,
            throw=False,
            progress_meter=diffrax.TqdmProgressMeter() if progress else diffrax.NoProgressMeter(),
        )
        return sol.ys, solve_outcome(sol.result), sol.stats["num_steps"]

    return jax.jit(run)


_SOLVER_CACHE: dict = {}


def simulate_modes(
    rule,
    sigmas0,
    targets,
    t_end: float,
    *,
    eta: float = 1.0,
    n_save: int = 201,
    save_at: Sequence[float] | np.ndarray | None = None,
    integrator: ODE = ODE(),
) -> ModeTrajectory:
    """Integrate the singular-mode ODEs ``σ̇ = mode_velocity(rule, σ, σ̄*)`` of many modes at once.

    The same adaptive solvers and options as :func:`curvdyn.simulate` with an :class:`~curvdyn.ODE`
    integrator (diffrax, float64, PID step control with its ``rtol``/``atol``), so an aligned
    full-matrix run and this reduced run are comparable step for step in accuracy. One compiled
    program serves every rule (rule parameters are traced numbers), per solver, ``max_steps``
    and array shape.

    Args:
      rule: a rule or rule name.
      sigmas0: initial per-layer values, shape ``(modes, d)`` or ``(d,)``.
      targets: ``σ̄*`` per mode, shape ``(modes,)`` or a number.
      t_end: final time (> 0).
      eta: learning rate η.
      n_save: number of equally spaced save times on ``[0, t_end]`` (ignored with ``save_at``).
      save_at: explicit strictly increasing save times starting at 0; the run ends at the
        last one (as in :func:`curvdyn.simulate`).
      integrator: a :class:`curvdyn.ODE` (``rtol``, ``atol``, ``solver``, ``max_steps``,
        ``progress``); reaching ``max_steps`` returns status ``"max_steps"`` with a
        ``RuntimeWarning`` (values after the stop are ``inf``, diffrax's convention).

    Returns:
      a :class:`ModeTrajectory`.
    """
    rule = _as_rule(rule)
    if not isinstance(integrator, ODE):
        raise TypeError(
            f"simulate_modes integrates the mode ODEs adaptively: integrator must be a curvdyn.ODE, "
            f"got {type(integrator).__name__}"
        )
    require_float64("curvdyn.theory.simulate_modes")
    s0 = np.asarray(check_real(sigmas0, "sigmas0"), dtype=np.float64)
    single = s0.ndim == 1
    s0 = np.atleast_2d(s0)
    if s0.ndim != 2 or s0.shape[-1] < 1:
        raise ValueError(f"sigmas0 must have shape (modes, d) or (d,), got {np.shape(sigmas0)}")
    if not np.all(np.isfinite(s0)):
        raise ValueError("sigmas0 has non-finite entries")
    tg = np.broadcast_to(np.asarray(check_real(targets, "targets"), dtype=np.float64), s0.shape[:1]).copy()
    if not np.all(np.isfinite(tg)):
        raise ValueError("targets has non-finite entries")
    t_end = check_positive(t_end, "t_end")
    ts = save_times(t_end, n_save, save_at)
    check_positive(eta, "eta")

    progress = integrator.progress and stderr_is_terminal()
    key = (integrator.solver, integrator.max_steps, progress)
    if key not in _SOLVER_CACHE:
        _SOLVER_CACHE[key] = _make_solver(*key)
    args = tuple(jnp.asarray(a) for a in _rule_params(rule, s0.shape[-1]))
    ys, result, n_steps = _SOLVER_CACHE[key](
        jnp.asarray(s0),
        (jnp.asarray(tg),) + args + (jnp.float64(eta),),
        jnp.asarray(ts),
        jnp.float64(integrator.rtol),
        jnp.float64(integrator.atol),
    )
    ys = np.asarray(ys)
    code = int(result)
    if code == OUTCOME_SUCCESSFUL:
        status, message = "completed", f"reached t_end = {ts[-1]:.6g}"
    elif code == OUTCOME_MAX_STEPS:
        status, message = "max_steps", "the ODE solver reached max_steps before t_end (later values are inf)"
    else:
        status, message = (
            "failed",
            "the ODE solver failed (step size collapsed or non-finite values); later values are inf",
        )
    if status != "completed":
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    maps = np.prod(ys, axis=-1)
    loss_t = 0.5 * np.sum((maps - tg) ** 2, axis=-1)
    try:
        consts = np.asarray(constant_of_motion(rule, ys))
    except ValueError:
        consts = None
    if single:
        ys, maps = ys[:, 0], maps[:, 0]
        consts = None if consts is None else consts[:, 0]
    return ModeTrajectory(
        t=ts,
        sigmas=ys,
        map=maps,
        loss=loss_t,
        constants=consts,
        targets=tg if not single else tg[0:1],
        status=status,
        message=message,
        n_steps=int(n_steps),
    )
