"""curvdyn: exact learning dynamics of deep linear networks under curvature-corrected rules.

Importing curvdyn changes nothing in your session (JAX's configuration, matplotlib's backend,
logging, warnings filters) and imports no JAX until a name is used. The exact paths compute in
float64, which JAX provides in its 64-bit mode: switch it on yourself, once, at the start::

    import jax
    jax.config.update("jax_enable_x64", True)

A float64 path that meets 64-bit mode off raises :class:`curvdyn.Float64DisabledError` saying so
(never a silent float32 result). To compute in float32 instead, ask for it
explicitly: ``dtype=jnp.float32`` in :class:`Task` and the initializers, float32 arrays, or
``ws32, task32 = cd.astype(ws, task, jnp.float32)``; :mod:`curvdyn.optim` follows the dtype of
the parameters it is given.

The public API::

    import curvdyn as cd
    task = cd.Task(target, input_cov)                 # W*, Sigma
    ws = cd.init_random(key, (16, 16, 16, 16, 16), scale=0.05)
    rule = cd.get_rule("sqrt-ngd")
    d = rule.direction(ws, task)                      # tuple shaped like ws; w' = -eta d
    traj = cd.simulate(ws, task, rule, 50.0, integrator=cd.ODE(rtol=1e-8))  # adaptive ODE (diffrax)
"""

from __future__ import annotations

import importlib as _importlib
import sys as _sys
import types as _types

from curvdyn._version import __version__ as __version__

# Public name -> the submodule that defines it; imported on first use (PEP 562).
_LAZY = {
    "Float64DisabledError": "curvdyn._precision",
    "ODE": "curvdyn.integrators",
    "Euler": "curvdyn.integrators",
    "RULE_NAMES": "curvdyn.rules",
    "Rule": "curvdyn.rules",
    "get_rule": "curvdyn.rules",
    "StudentTeacher": "curvdyn.task",
    "Task": "curvdyn.task",
    "student_teacher": "curvdyn.task",
    "Trajectory": "curvdyn.simulate",
    "simulate": "curvdyn.simulate",
    "exactness_summary": "curvdyn.simulate",
    "Sweep": "curvdyn.sweep",
    "sweep": "curvdyn.sweep",
    "astype": "curvdyn.curvature",
    "haar_orthogonal": "curvdyn.init",
    "init_aligned": "curvdyn.init",
    "init_balanced": "curvdyn.init",
    "init_random": "curvdyn.init",
    "init_xavier": "curvdyn.init",
    "as_weights": "curvdyn.network",
    "conserved": "curvdyn.network",
    "displacement": "curvdyn.network",
    "flatten_weights": "curvdyn.network",
    "gradient": "curvdyn.network",
    "loss": "curvdyn.network",
    "n_params": "curvdyn.network",
    "network_map": "curvdyn.network",
    "outer_products": "curvdyn.network",
    "unflatten_weights": "curvdyn.network",
    "widths_of": "curvdyn.network",
}
# Public submodules reached as attributes (``cd.theory.map_solution``).
_SUBMODULES = ("theory",)

__all__ = sorted([*_LAZY, *_SUBMODULES, "__version__"])


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name]), name)
    elif name in _SUBMODULES:
        value = _importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(_types.ModuleType):
    """The package module: ``curvdyn.simulate`` stays the function.

    Importing the submodule ``curvdyn.simulate`` (which other modules do) makes Python set the
    package attribute ``simulate`` to that module; this keeps the public function there instead,
    as an eager ``from curvdyn.simulate import simulate`` would.
    """

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, _types.ModuleType) and _LAZY.get(name) == value.__name__:
            value = getattr(value, name)
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package
