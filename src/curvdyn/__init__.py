"""curvdyn: exact learning dynamics of deep linear networks under curvature-corrected rules.

Float64 is switched on at import (``jax_enable_x64``): the library's exactness claims are
float64 claims. To compute in float32, cast weights and task together:
``ws32, task32 = cd.astype(ws, task, jnp.float32)``.

The public API::

    import curvdyn as cd
    task = cd.Task(target, input_cov)                 # W*, Sigma
    ws = cd.init_random(key, (16, 16, 16, 16, 16), scale=0.05)
    rule = cd.get_rule("sqrt-ngd")
    d = rule.direction(ws, task)                      # tuple shaped like ws; w' = -eta d
    traj = cd.simulate(ws, task, rule, 50.0, integrator=cd.ODE(rtol=1e-8))  # adaptive ODE (diffrax)
"""

import jax as _jax

_jax.config.update("jax_enable_x64", True)

from curvdyn import theory  # noqa: E402
from curvdyn._version import __version__  # noqa: E402
from curvdyn.curvature import astype  # noqa: E402
from curvdyn.init import (  # noqa: E402
    init_aligned,
    init_balanced,
    init_random,
    init_xavier,
)
from curvdyn.integrators import ODE, Euler  # noqa: E402
from curvdyn.network import (  # noqa: E402
    as_weights,
    conserved,
    displacement,
    flatten_weights,
    gradient,
    loss,
    n_params,
    network_map,
    outer_products,
    unflatten_weights,
    widths_of,
)
from curvdyn.rules import RULE_NAMES, Rule, get_rule  # noqa: E402
from curvdyn.simulate import Trajectory, exactness_summary, simulate  # noqa: E402
from curvdyn.task import StudentTeacher, Task, student_teacher  # noqa: E402

__all__ = [
    "ODE",
    "RULE_NAMES",
    "Euler",
    "Rule",
    "StudentTeacher",
    "Task",
    "Trajectory",
    "__version__",
    "as_weights",
    "astype",
    "conserved",
    "displacement",
    "exactness_summary",
    "flatten_weights",
    "get_rule",
    "gradient",
    "init_aligned",
    "init_balanced",
    "init_random",
    "init_xavier",
    "loss",
    "n_params",
    "network_map",
    "outer_products",
    "simulate",
    "student_teacher",
    "theory",
    "unflatten_weights",
    "widths_of",
]
