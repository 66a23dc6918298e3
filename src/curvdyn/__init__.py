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
    traj = cd.simulate(ws, task, rule, t_end=50.0)    # adaptive ODE (diffrax)
"""

import jax as _jax

_jax.config.update("jax_enable_x64", True)

from curvdyn._version import __version__  # noqa: E402
from curvdyn.network import (  # noqa: E402
    as_weights,
    network_map,
    displacement,
    loss,
    gradient,
    outer_products,
    conserved,
    widths_of,
    n_params,
    flatten_weights,
    unflatten_weights,
)
from curvdyn.init import (  # noqa: E402
    init_random,
    init_xavier,
    init_balanced,
    init_aligned,
)
from curvdyn.task import Task, StudentTeacher, student_teacher  # noqa: E402
from curvdyn.rules import Rule, get_rule, RULE_NAMES  # noqa: E402
from curvdyn.simulate import simulate, Trajectory  # noqa: E402
from curvdyn.curvature import astype  # noqa: E402
from curvdyn import theory  # noqa: E402

__all__ = [
    "__version__",
    "as_weights",
    "network_map",
    "displacement",
    "loss",
    "gradient",
    "outer_products",
    "conserved",
    "widths_of",
    "n_params",
    "flatten_weights",
    "unflatten_weights",
    "init_random",
    "init_xavier",
    "init_balanced",
    "init_aligned",
    "Task",
    "StudentTeacher",
    "student_teacher",
    "Rule",
    "get_rule",
    "RULE_NAMES",
    "simulate",
    "Trajectory",
    "astype",
]
