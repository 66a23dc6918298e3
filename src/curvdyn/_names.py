"""Names the library and the command line share, in a module that imports nothing heavy.

The command line builds its parser from these (so ``curvdyn --help`` needs no JAX); the
modules that implement them (:mod:`curvdyn.rules`, :mod:`curvdyn.integrators`) take the
same tuples, so a name is listed in one place. :data:`STYLES` is the one table of display
names and colours: :attr:`curvdyn.Rule.label`, every figure and the report read it.
"""

from __future__ import annotations

import dataclasses

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

#: Adaptive ODE solvers of :class:`curvdyn.ODE`: diffrax's classes of the same names, and
#: ``rkc`` (:class:`curvdyn.rkc.RKC`, Runge–Kutta–Chebyshev for stiff gradient flows).
SOLVER_NAMES = ("tsit5", "dopri5", "dopri8", "bosh3", "rkc")


@dataclasses.dataclass(frozen=True)
class Style:
    """How a rule (or an optimizer of the digits study) is named and drawn.

    Attributes:
      text: the plain-text name (``sqrt-NGD``): :attr:`curvdyn.Rule.label`, terminal output.
      display: the typeset name (``√NGD``): figures, the report and the claims.
      color: its colour in every figure.
    """

    text: str
    display: str
    color: str


#: The display names and colours, by rule name (and by optimizer name of the digits study:
#: K-FAC and √K-FAC share the colours of NGD and √NGD, whose block versions they approximate).
STYLES: dict[str, Style] = {
    "sgd": Style("SGD", "SGD", "#1f77b4"),
    "ngd": Style("NGD", "NGD", "#d62728"),
    "sqrt-ngd": Style("sqrt-NGD", "√NGD", "#2ca02c"),
    "ngd-d": Style("NGD-d", "NGD-d", "#ff7f0e"),
    "sqrt-ngd-d": Style("sqrt-NGD-d", "√NGD-d", "#9467bd"),
    "damped-ngd": Style("damped NGD", "damped NGD", "#8c564b"),
    "frac-ngd": Style("q-NGD", "q-NGD", "#e377c2"),
    "frac-ngd-d": Style("q-NGD-d", "q-NGD-d", "#7f7f7f"),
    "adam": Style("Adam", "Adam", "#8c564b"),
    "kfac": Style("K-FAC (q=1)", "K-FAC (q=1)", "#d62728"),
    "sqrt-kfac": Style("sqrt-K-FAC (q=2)", "√K-FAC (q=2)", "#2ca02c"),
}

#: The style of a name missing from :data:`STYLES` (grey; the name itself as label).
UNKNOWN_COLOR = "#555555"
