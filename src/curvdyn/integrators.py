"""How :func:`curvdyn.simulate` advances time: the integrator objects.

As diffrax takes a solver and a step-size controller, :func:`curvdyn.simulate` takes one
integrator object that holds every option of the way it integrates:

* :class:`ODE` — the continuous-time dynamics ``ẇ = −η d(w)`` with an adaptive Runge–Kutta
  solver of diffrax (error-controlled to ``rtol``/``atol``);
* :class:`Euler` — discrete steps ``w ← w − η·dt·d(w)`` (``dt = 1``: the plain learning-rate
  step ``w ← w − η d``), optionally with update-norm clipping.

Both are frozen dataclasses, validated when built, and recorded in a trajectory's
configuration (:meth:`ODE.as_config`, :meth:`Euler.as_config`).
"""

from __future__ import annotations

import dataclasses
import math

import diffrax
import jax
import jax.numpy as jnp

from curvdyn._names import SOLVER_NAMES
from curvdyn._validate import check_count, check_positive
from curvdyn.rkc import RKC

#: The adaptive solvers by name: the one table the library and the command line use.
SOLVERS: dict[str, type[diffrax.AbstractAdaptiveSolver]] = {
    name: RKC if name == "rkc" else getattr(diffrax, name.capitalize()) for name in SOLVER_NAMES
}


#: Outcomes of one diffrax solve, indexed by :func:`solve_outcome`'s code.
SOLVE_OUTCOMES = ("successful", "event_occurred", "max_steps_reached", "failed")
OUTCOME_SUCCESSFUL, OUTCOME_EVENT, OUTCOME_MAX_STEPS, OUTCOME_FAILED = range(len(SOLVE_OUTCOMES))


def solve_outcome(result) -> jax.Array:
    """The int32 code (index into :data:`SOLVE_OUTCOMES`) of a diffrax ``Solution.result``.

    Built from diffrax's public comparisons (``result == diffrax.RESULTS.successful``), so it
    runs inside ``jit`` and ``vmap``: call it in the compiled function and return the code.
    Every result other than success, a terminating event or ``max_steps`` is ``"failed"``
    (step size collapsed, non-finite values, ...).
    """
    code = jnp.asarray(OUTCOME_FAILED, jnp.int32)
    for index, name in enumerate(SOLVE_OUTCOMES[:-1]):
        code = jnp.where(result == getattr(diffrax.RESULTS, name), jnp.int32(index), code)
    return code


@dataclasses.dataclass(frozen=True)
class ODE:
    """Adaptive continuous time: ``ẇ = −η d(w)`` integrated by diffrax.

    Attributes:
      rtol, atol: relative and absolute tolerances of the PID step-size controller.
      solver: one of :data:`SOLVERS` (``"tsit5"`` default; ``"dopri8"`` for tight tolerances;
        ``"bosh3"`` for cheap low-order steps; ``"rkc"`` for SGD's stiff gradient flow from
        small weights, :class:`curvdyn.rkc.RKC`: second order, its steps follow accuracy where
        Tsit5's are held by stability — give it a tighter ``rtol``, 1e-9 matched Tsit5 at 1e-6
        on Fig. 3's SGD run in 4.4–7.6× less time, benchmarks/sgd_solvers.py).
      max_steps: cap on the solver's steps; reaching it stops the run with status
        ``"max_steps"`` and keeps the recorded part.
      progress: show diffrax's progress meter (fraction of ``t_end`` done) on standard error
        while the solve runs — only when standard error is a terminal.
    """

    rtol: float = 1e-8
    atol: float = 1e-10
    solver: str = "tsit5"
    max_steps: int = 100_000
    progress: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "rtol", check_positive(self.rtol, "rtol"))
        object.__setattr__(self, "atol", check_positive(self.atol, "atol"))
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown solver {self.solver!r}; choose one of {sorted(SOLVERS)}")
        object.__setattr__(self, "max_steps", check_count(self.max_steps, "max_steps"))
        object.__setattr__(self, "progress", bool(self.progress))

    kind = "ode"

    def as_config(self) -> dict:
        """The JSON-ready record of this integrator (``kind`` plus every field)."""
        return {"kind": self.kind, **dataclasses.asdict(self)}


@dataclasses.dataclass(frozen=True)
class Euler:
    """Discrete steps ``w ← w − η·dt·d(w)``.

    Attributes:
      dt: step size in time units (``1``: one learning-rate step ``w ← w − η d``).
      steps: the number of steps; ``None`` takes ``ceil(t_end / dt)`` steps. Given together with
        ``t_end``, the two must agree (``t_end = steps · dt``).
      clip: rescale any step ``η·dt·d`` whose parameter norm exceeds ``clip`` to norm ``clip``
        (the update clipping of the paper's section 4 NGD numerics); ``None``: no clipping.
    """

    dt: float = 1.0
    steps: int | None = None
    clip: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dt", check_positive(self.dt, "dt"))
        if self.steps is not None:
            object.__setattr__(self, "steps", check_count(self.steps, "steps"))
        if self.clip is not None:
            object.__setattr__(self, "clip", check_positive(self.clip, "clip"))

    kind = "euler"

    def n_steps(self, t_end: float | None) -> int:
        """The step count for a run to ``t_end`` (``None``: ``steps`` must be set).

        Raises:
          ValueError: neither ``t_end`` nor ``steps`` given, or both given and ``t_end`` is not
            ``steps · dt`` (to relative 1e-9).
        """
        if t_end is None:
            if self.steps is None:
                raise ValueError("an Euler run needs t_end or Euler(steps=...)")
            return self.steps
        t_end = check_positive(t_end, "t_end")
        if self.steps is None:
            return max(1, math.ceil(t_end / self.dt - 1e-9))
        if not math.isclose(self.steps * self.dt, t_end, rel_tol=1e-9):
            raise ValueError(
                f"t_end = {t_end:g} conflicts with Euler(steps={self.steps}, dt={self.dt:g}) "
                f"(steps · dt = {self.steps * self.dt:g}); give one of them"
            )
        return self.steps

    def as_config(self) -> dict:
        """The JSON-ready record of this integrator (``kind`` plus every field)."""
        return {"kind": self.kind, **dataclasses.asdict(self)}


Integrator = ODE | Euler
