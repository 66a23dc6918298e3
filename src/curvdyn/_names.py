"""Names the library and the command line share, in a module that imports nothing heavy.

The command line builds its parser from these (so ``curvdyn --help`` needs no JAX); the
modules that implement them (:mod:`curvdyn.rules`, :mod:`curvdyn.integrators`) take the
same tuples, so a name is listed in one place.
"""

from __future__ import annotations

#: Registry names of the learning rules (:func:`curvdyn.get_rule`).
RULE_NAMES = (
    "sgd",
    "ngd",
    "sqrt-ngd",
    "frac-ngd",
    "damped-ngd",
    "ngd-d",
    "sqrt-ngd-d",
    "frac-ngd-d",
)

#: Curvature methods of :meth:`curvdyn.Rule.direction` (``method=``).
METHODS = ("auto", "dense", "mapspace", "kronsum", "kronecker", "balanced", "balanced-checked", "cg", "krylov")

#: Adaptive ODE solvers of :class:`curvdyn.ODE` (diffrax's classes of the same names).
SOLVER_NAMES = ("tsit5", "dopri5", "dopri8", "bosh3")
