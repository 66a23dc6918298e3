"""Sweeps: a grid of runs over rules, depths, widths, initial scales, tasks and seeds, as one table.

::

    import curvdyn as cd
    table = cd.sweep(rules=["sgd", "sqrt-ngd"], depths=[3], widths=[4], init_scales=[0.05, 0.2],
                     seeds=range(4), t_end=30.0, out="results/my-sweep")

returns a :class:`pandas.DataFrame` with one row per cell (the grid's coordinates, then the
measurements of :data:`MEASUREMENTS` and those of the user's ``measure`` function), written to
``OUT/table.parquet``. A sweep is defined by a :class:`Sweep` (built from keyword arguments, a
dict, or a TOML file: ``curvdyn sweep CONFIG.toml``) and is the same definition however it runs:
in this process, or its groups of cells spread over any :class:`concurrent.futures.Executor` —
a Dask cluster (``client.get_executor()``, several processes or hosts), a
:class:`~concurrent.futures.ProcessPoolExecutor`, mpi4py's ``MPIPoolExecutor`` (see
``docs/sweep.md``).

**Cells and groups.** A cell is one run: (rule, depth, width, init scale, task, seed). Cells with
the same rule, depth, width and task kind share shapes and compiled code; they run as one batch
of :func:`curvdyn.simulate` (:mod:`curvdyn.batch`: batched or mapped members, one task per
member, split over the local devices), at most ``batch_size`` members per program.

**The directory** (``out``), following :mod:`curvdyn.rundir`'s conventions::

    OUT/curvdyn.lock        held by the running sweep (a second one is refused, naming the holder)
    OUT/manifest.json       in-progress | complete | interrupted | failed, with the run record
    OUT/sweep.json          the definition, its hash and the run record that created the directory
    OUT/cells/CELL.json     one per finished cell: its coordinates, measurements, the definition
                            hash, the run record and the host and pid that computed it (each
                            written atomically, as the cell finishes)
    OUT/cells/CELL.npz      its trajectory (with ``save_trajectories``; :meth:`Trajectory.load`)
    OUT/table.parquet       the table (written last, atomically; :func:`load_table`)

**Resuming.** Re-running the same definition into the same directory computes only the cells that
have no file yet: an interrupted sweep (Ctrl-C, a killed process, a lost worker) continues where
it stopped. A different definition is refused (:class:`SweepMismatch`): old cells are never mixed
with new ones.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io as _stdio
import json
import math
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import numpy as np

from curvdyn import _workers, io, rundir
from curvdyn._names import RULE_NAMES
from curvdyn._progress import progress_bar

SWEEP_FORMAT = "curvdyn-sweep/1"
CELL_FORMAT = "curvdyn-sweep-cell/1"
DEFINITION_FILE = "sweep.json"
CELLS_DIR = "cells"
TABLE_FILE = "table.parquet"
#: The manifest lists the table as the one output it plans (:class:`curvdyn.rundir.Manifest`).
TABLE_ENTRY = "table"
#: The grid's axes, in the order the cells are enumerated (the last varies fastest).
AXES = ("rule", "depth", "width", "init_scale", "task", "seed")
#: The measurements of every cell (columns of the table after the axes).
MEASUREMENTS = (
    "status",
    "initial_loss",
    "final_loss",
    "t_final",
    "time_to_fraction",
    "max_update_norm",
    "conserved_drift",
    "steps",
    "wall_time_s",
    "batch_size",
)
INITS = ("random", "xavier", "balanced")
TASK_KINDS = ("random", "identity", "student-teacher")
_TASK_PARAMS = {"random": ("scale",), "identity": ("scale",), "student-teacher": ("rank", "snr")}


class SweepMismatch(ValueError):
    """The output directory holds cells of a different sweep definition."""


# ---------------------------------------------------------------------------------------
# the definition
# ---------------------------------------------------------------------------------------


def _rule_spec(spec) -> dict:
    """A rule as ``{"name": ..., **params}``, checked by building it."""
    from curvdyn.rules import get_rule

    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise ValueError(
            f"a rule is a name ({', '.join(RULE_NAMES)}) or a table with a name and parameters, got {spec!r}"
        )
    spec = dict(spec)
    params = {k: v for k, v in spec.items() if k != "name"}
    if "layer_rates" in params:
        params["layer_rates"] = tuple(params["layer_rates"])
    try:
        get_rule(spec["name"], **params)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"rule {spec!r}: {exc}") from None
    return {"name": spec["name"].lower(), **{k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()}}


def _task_spec(spec) -> dict:
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, Mapping) or spec.get("kind") not in TASK_KINDS:
        raise ValueError(f"a task is one of {TASK_KINDS} or a table with kind = one of them, got {spec!r}")
    spec = dict(spec)
    extra = sorted(set(spec) - {"kind", *_TASK_PARAMS[spec["kind"]]})
    if extra:
        raise ValueError(f"task kind {spec['kind']!r} takes {list(_TASK_PARAMS[spec['kind']])}, not {extra}")
    defaults = {"scale": 1.0} if spec["kind"] != "student-teacher" else {"rank": 3, "snr": 10.0}
    return {**{"kind": spec["kind"]}, **defaults, **{k: v for k, v in spec.items() if k != "kind"}}


def _label(spec: Mapping, key: str) -> str:
    params = ",".join(f"{k}={v}" for k, v in spec.items() if k != key)
    return spec[key] + (f"({params})" if params else "")


def _positive_ints(values, name: str) -> tuple[int, ...]:
    values = tuple(values)
    if not values or any(isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1 for v in values):
        raise ValueError(f"{name} must be a non-empty list of positive integers, got {list(values)}")
    return tuple(int(v) for v in values)


def _integrator_spec(spec) -> dict:
    from curvdyn.integrators import ODE, Euler

    if isinstance(spec, ODE | Euler):
        return spec.as_config()
    if isinstance(spec, str):
        spec = {"kind": spec}
    if not isinstance(spec, Mapping) or spec.get("kind") not in ("ode", "euler"):
        raise ValueError(f"integrator must be 'ode', 'euler' or a table with kind = 'ode' | 'euler', got {spec!r}")
    fields = {k: v for k, v in spec.items() if k != "kind"}
    cls = ODE if spec["kind"] == "ode" else Euler
    try:
        return cls(**fields).as_config()
    except TypeError as exc:
        raise ValueError(f"integrator {spec!r}: {exc}") from None


def _function_name(fn) -> str:
    name = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', '?')}"
    if "<" in name:
        raise ValueError(
            f"measure must be a module-level function (it is named in the definition and sent to workers), got {name}"
        )
    return name


def _resolve_function(name: str) -> Callable:
    import importlib

    module, _, qualname = name.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import the measure function {name!r}: {exc}") from None
    if not callable(obj):
        raise ValueError(f"measure {name!r} is not callable")
    return obj


@dataclasses.dataclass(frozen=True)
class Sweep:
    """The definition of a sweep: the grid and the settings every cell shares.

    Attributes:
      rules: rule names or ``{"name": ..., **parameters}`` (e.g. ``{"name": "frac-ngd", "q": 3}``).
      depths: network depths d.
      widths: widths n of the square networks ``(n,) * (d + 1)``.
      init_scales: initial weight scales (the largest singular value per layer for ``"random"``,
        α for ``"xavier"``, the singular value for ``"balanced"``).
      tasks: ``"random"`` (Gaussian W*, N(0, 1/n) entries, times ``scale``), ``"identity"`` (times
        ``scale``) or ``"student-teacher"`` (``rank``, ``snr``: the paper's section 4 data) — names
        or ``{"kind": ..., **parameters}``.
      seeds: the seeds; seed s draws the initial weights from ``PRNGKey(s)`` and the task from
        ``fold_in(PRNGKey(task_seed or s), 1)`` (as ``curvdyn simulate --seed s`` does).
      task_seed: one fixed seed for every cell's task (``None``: the cell's own seed).
      init: ``"random"``, ``"xavier"`` or ``"balanced"`` initial weights.
      t_end: final time (required, except with an Euler integrator that sets ``steps``).
      integrator: ``"ode"``, ``"euler"``, a :class:`~curvdyn.ODE` / :class:`~curvdyn.Euler`, or a
        table ``{"kind": "ode", "rtol": ...}``.
      eta, n_save, loss_tol, method: as in :func:`curvdyn.simulate`.
      loss_fraction: ``time_to_fraction`` is the time at which L first falls to this fraction of L(0).
      measure: a module-level function ``f(trajectory, task) -> float | dict[str, float]`` (or
        its name ``"module:function"``) whose values become further columns.
    """

    rules: tuple = ("sgd",)
    depths: tuple[int, ...] = (2,)
    widths: tuple[int, ...] = (4,)
    init_scales: tuple[float, ...] = (0.1,)
    tasks: tuple = ("random",)
    seeds: tuple[int, ...] = (0,)
    task_seed: int | None = None
    init: str = "random"
    t_end: float | None = None
    integrator: Any = "ode"
    eta: float = 1.0
    n_save: int = 101
    loss_tol: float = 0.0
    method: str = "auto"
    loss_fraction: float = 0.01
    measure: Any = None

    def __post_init__(self) -> None:
        from curvdyn._validate import check_nonneg, check_positive

        def put(name, value):
            object.__setattr__(self, name, value)

        rules = [self.rules] if isinstance(self.rules, str | Mapping) else list(self.rules)
        tasks = [self.tasks] if isinstance(self.tasks, str | Mapping) else list(self.tasks)
        if not rules or not tasks:
            raise ValueError("rules and tasks must not be empty")
        put("rules", tuple(_rule_spec(r) for r in rules))
        put("tasks", tuple(_task_spec(t) for t in tasks))
        put("depths", _positive_ints(self.depths, "depths"))
        put("widths", _positive_ints(self.widths, "widths"))
        scales = tuple(check_positive(s, "each init scale") for s in self.init_scales)
        if not scales:
            raise ValueError("init_scales must not be empty")
        put("init_scales", scales)
        seeds = tuple(self.seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0 for s in seeds):
            raise ValueError(f"seeds must be a non-empty list of non-negative integers, got {list(seeds)}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {list(seeds)}")
        put("seeds", tuple(int(s) for s in seeds))
        for label, values in (("rules", self.rules), ("tasks", self.tasks), ("init_scales", self.init_scales)):
            if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
                raise ValueError(f"{label} must be distinct, got {list(values)}")
        if len(set(self.depths)) != len(self.depths) or len(set(self.widths)) != len(self.widths):
            raise ValueError("depths and widths must be distinct")
        if self.task_seed is not None and (isinstance(self.task_seed, bool) or int(self.task_seed) != self.task_seed):
            raise ValueError(f"task_seed must be an integer or None, got {self.task_seed!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        put("integrator", _integrator_spec(self.integrator))
        if self.t_end is not None:
            put("t_end", check_positive(self.t_end, "t_end"))
        elif self.integrator["kind"] == "ode" or self.integrator.get("steps") is None:
            raise ValueError("a sweep needs t_end (an Euler integrator with steps may leave it out)")

        put("eta", check_positive(self.eta, "eta"))
        if isinstance(self.n_save, bool) or int(self.n_save) != self.n_save or self.n_save < 2:
            raise ValueError(f"n_save must be an integer >= 2, got {self.n_save!r}")
        put("loss_tol", check_nonneg(self.loss_tol, "loss_tol"))
        fraction = check_positive(self.loss_fraction, "loss_fraction")
        if fraction >= 1:
            raise ValueError(f"loss_fraction must be in (0, 1), got {fraction}")
        put("loss_fraction", fraction)
        from curvdyn._names import METHODS

        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {METHODS}")
        if self.measure is not None:
            name = self.measure if isinstance(self.measure, str) else _function_name(self.measure)
            _resolve_function(name)
            put("measure", name)

    # -- forms ------------------------------------------------------------------------------

    def as_dict(self) -> dict:
        """The definition as plain JSON-ready data (what ``sweep.json`` stores and the hash covers)."""
        return json.loads(io.json_text(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, doc: Mapping) -> Sweep:
        """A definition from a mapping of its fields (e.g. a parsed TOML file).

        Raises:
          ValueError: an unknown field (the message lists the known ones) or a bad value.
        """
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(doc) - set(known))
        if unknown:
            raise ValueError(f"unknown sweep setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
        return cls(**dict(doc))

    @classmethod
    def from_toml(cls, path) -> Sweep:
        """A definition from a TOML file whose top-level keys are :class:`Sweep`'s fields.

        Raises:
          FileNotFoundError: no such file; ValueError: not valid TOML, or a bad setting.
        """
        import tomllib

        path = Path(path)
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path} is not valid TOML: {exc}") from None
        return cls.from_dict(doc)

    @property
    def hash(self) -> str:
        """A hash of the definition (16 hex digits): equal definitions, equal hashes."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # -- the grid ---------------------------------------------------------------------------

    def cells(self) -> list[dict]:
        """Every cell's coordinates, in grid order: ``{"rule", "depth", "width", "init_scale",
        "task", "seed"}`` (rule and task as labels) plus the indices ``rule_index``/``task_index``."""
        out = []
        for ri, rule in enumerate(self.rules):
            for depth in self.depths:
                for width in self.widths:
                    for scale in self.init_scales:
                        for ti, task in enumerate(self.tasks):
                            for seed in self.seeds:
                                out.append(
                                    {
                                        "rule": _label(rule, "name"),
                                        "depth": depth,
                                        "width": width,
                                        "init_scale": scale,
                                        "task": _label(task, "kind"),
                                        "seed": seed,
                                        "rule_index": ri,
                                        "task_index": ti,
                                    }
                                )
        return out


def cell_key(cell: Mapping) -> str:
    """The file name (without suffix) of a cell: its coordinates, hashed (16 hex digits)."""
    coords = {k: cell[k] for k in AXES}
    return hashlib.sha256(json.dumps(coords, sort_keys=True).encode()).hexdigest()[:16]


def groups(cells: Sequence[Mapping], batch_size: int) -> list[list[dict]]:
    """The cells split into batches that run as one program: same rule, depth, width and task
    kind (hence shapes and compiled code), at most ``batch_size`` cells each, in grid order."""
    by_key: dict[tuple, list[dict]] = {}
    for c in cells:
        by_key.setdefault((c["rule_index"], c["depth"], c["width"], c["task_index"]), []).append(dict(c))
    out = []
    for members in by_key.values():
        out += [members[i : i + batch_size] for i in range(0, len(members), batch_size)]
    return out


# ---------------------------------------------------------------------------------------
# running one group (in this process or a worker)
# ---------------------------------------------------------------------------------------


def _make_task(spec: Mapping, width: int, seed: int):
    import jax

    from curvdyn.task import Task, student_teacher

    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    if spec["kind"] == "random":
        return Task(np.asarray(jax.random.normal(key, (width, width))) * (spec["scale"] / math.sqrt(width)))
    if spec["kind"] == "identity":
        return Task(np.eye(width) * spec["scale"])
    if spec["rank"] > width:
        raise ValueError(f"task {spec}: rank {spec['rank']} exceeds the width {width}")
    return student_teacher(key, width, rank=spec["rank"], snr=spec["snr"]).train_task


def _make_weights(init: str, depth: int, width: int, scale: float, seed: int):
    import jax

    from curvdyn.init import init_balanced, init_random, init_xavier

    fn = {"random": init_random, "xavier": init_xavier, "balanced": init_balanced}[init]
    return fn(jax.random.PRNGKey(seed), (width,) * (depth + 1), scale)


def time_to_fraction(t: np.ndarray, loss: np.ndarray, fraction: float) -> float:
    """The time at which ``loss`` first falls to ``fraction · loss[0]``: linear interpolation of
    ``log L`` between the two recorded times around the crossing; NaN if it never does."""
    target = fraction * loss[0]
    below = np.nonzero(loss <= target)[0]
    if below.size == 0 or not np.isfinite(target) or target <= 0:
        return math.nan
    k = int(below[0])
    if k == 0:
        return float(t[0])
    l0, l1 = np.log(loss[k - 1]), np.log(max(loss[k], np.finfo(float).tiny))
    w = (l0 - np.log(target)) / (l0 - l1) if l0 != l1 else 1.0
    return float(t[k - 1] + w * (t[k] - t[k - 1]))


def conserved_drift(traj) -> float:
    """``max_t ‖C(t) − C(0)‖ / max_t Σ_i ‖w_i(t)‖²``, with ``C = (w_i w_iᵀ − w_{i+1}ᵀ w_{i+1})_i``
    (eq. 4) and Frobenius norms over all layers together: 0 when the quantity is conserved, of
    order 1 when it is not (the block rules). NaN for depth 1 (nothing to conserve)."""
    if not traj.conserved:
        return math.nan
    diff = np.sqrt(sum(np.sum((c - c[0]) ** 2, axis=(1, 2)) for c in traj.conserved))
    scale = sum(np.sum(w**2, axis=(1, 2)) for w in traj.weights)
    return float(np.max(diff) / max(float(np.max(scale)), np.finfo(float).tiny))


def _measure(traj, task, definition: Sweep, extra: Callable | None) -> dict:
    loss = np.asarray(traj.loss, dtype=float)
    values = {
        "status": traj.status,
        "initial_loss": float(loss[0]),
        "final_loss": float(loss[-1]),
        "t_final": float(traj.t[-1]),
        "time_to_fraction": time_to_fraction(np.asarray(traj.t), loss, definition.loss_fraction),
        "max_update_norm": float(np.nanmax(traj.update_norm)),
        "conserved_drift": conserved_drift(traj),
    }
    if extra is not None:
        got = extra(traj, task)
        got = {"measure": got} if not isinstance(got, Mapping) else dict(got)
        clash = sorted(set(got) & (set(MEASUREMENTS) | set(AXES) | {"cell"}))
        if clash:
            raise ValueError(f"the measure function returned names the table already uses: {clash}")
        values.update({str(k): _scalar(v, k) for k, v in got.items()})
    return values


def _scalar(value, name):
    if isinstance(value, str | bool | int | float | np.generic) or np.ndim(value) == 0:
        return value.item() if isinstance(value, np.generic | np.ndarray) else value
    raise ValueError(f"the measure function's {name!r} is not a scalar (shape {np.shape(value)})")


def run_group(definition: Mapping, members: Sequence[Mapping], options: Mapping) -> list[dict]:
    """Run one group of cells as one batched :func:`curvdyn.simulate`; return one result per cell.

    A plain function of plain data, so that an executor can send it to another process or host.

    Args:
      definition: :meth:`Sweep.as_dict`.
      members: the cells (from :meth:`Sweep.cells`), all of one rule, depth, width and task kind.
      options: ``{"batch", "jax_settings", "trajectories"}``: the batch strategy, the JAX settings
        of the calling process (applied here when they differ: a worker process computes as its
        caller), and whether to return each cell's :class:`~curvdyn.simulate.Trajectory`.

    Returns:
      Per cell ``{"key", "cell", "measurements", "computed_by", "trajectory"}``: ``computed_by`` is
      ``{"host", "pid"}`` of the process that ran it; ``trajectory`` is ``None`` unless asked.
    """
    import warnings

    import jax

    from curvdyn.integrators import ODE, Euler
    from curvdyn.rules import get_rule
    from curvdyn.simulate import simulate

    for name, value in (options.get("jax_settings") or {}).items():
        if getattr(jax.config, name) != value:
            jax.config.update(name, value)
    d = Sweep.from_dict(definition)
    first = members[0]
    spec = dict(d.rules[first["rule_index"]])
    name = spec.pop("name")
    if "layer_rates" in spec:
        spec["layer_rates"] = tuple(spec["layer_rates"])
    rule = get_rule(name, **spec)
    task_spec = d.tasks[first["task_index"]]
    tasks = [_make_task(task_spec, c["width"], c["seed"] if d.task_seed is None else d.task_seed) for c in members]
    weights = [_make_weights(d.init, c["depth"], c["width"], c["init_scale"], c["seed"]) for c in members]
    stacked = tuple(np.stack([np.asarray(w[i]) for w in weights]) for i in range(first["depth"]))
    fields = {k: v for k, v in d.integrator.items() if k != "kind"}
    integrator = ODE(**fields) if d.integrator["kind"] == "ode" else Euler(**fields)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a diverged cell is a result: its status says so
        traj = simulate(
            stacked,
            tasks,
            rule,
            d.t_end,
            integrator=integrator,
            eta=d.eta,
            n_save=d.n_save,
            loss_tol=d.loss_tol,
            method=d.method,
            batch=options.get("batch", "auto"),
        )
    wall = time.perf_counter() - start
    extra = _resolve_function(d.measure) if d.measure else None
    steps = traj.config.get("solver_steps") or [traj.config.get("n_steps")] * len(members)
    out = []
    for b, cell in enumerate(members):
        member = traj.member(b)
        member.config.update(seed=cell["seed"], sweep_cell={k: cell[k] for k in AXES})
        values = _measure(member, tasks[b], d, extra)
        values.update(steps=int(steps[b]), wall_time_s=wall / len(members), batch_size=len(members))
        out.append(
            {
                "key": cell_key(cell),
                "cell": {k: cell[k] for k in AXES},
                "measurements": values,
                "computed_by": {"host": socket.gethostname(), "pid": os.getpid()},
                "trajectory": member if options.get("trajectories") else None,
            }
        )
    return out


# ---------------------------------------------------------------------------------------
# the store
# ---------------------------------------------------------------------------------------


def _cell_path(out: Path, key: str) -> Path:
    return out / CELLS_DIR / f"{key}.json"


def _read_cells(out: Path, definition_hash: str) -> dict[str, dict]:
    """The finished cells in ``out`` of the definition ``definition_hash`` (others are ignored)."""
    found: dict[str, dict] = {}
    directory = out / CELLS_DIR
    if not directory.is_dir():
        return found
    for path in directory.glob("*.json"):
        try:
            doc = io.read_json(path)
        except (OSError, ValueError):
            continue  # unreadable: recomputed (atomic writes make this a foreign file)
        if isinstance(doc, dict) and doc.get("format") == CELL_FORMAT and doc.get("definition_hash") == definition_hash:
            found[path.stem] = doc
    return found


def _begin_directory(out: Path, definition: Sweep, record: dict) -> None:
    """Create ``out``'s definition file, or check that it holds this definition.

    Raises:
      SweepMismatch: ``out`` holds another definition.
    """
    path = out / DEFINITION_FILE
    if path.is_file():
        try:
            doc = io.read_json(path)
        except ValueError as exc:
            raise SweepMismatch(f"{path} is not valid JSON ({exc}); choose another out directory") from None
        if not isinstance(doc, dict) or doc.get("format") != SWEEP_FORMAT:
            raise SweepMismatch(f"{path} is not a curvdyn sweep definition; choose another out directory")
        if doc.get("definition_hash") != definition.hash:
            changed = sorted(k for k, v in definition.as_dict().items() if (doc.get("definition") or {}).get(k) != v)
            raise SweepMismatch(
                f"{out} holds the cells of another sweep (definition {doc.get('definition_hash')}, this one is "
                f"{definition.hash}; changed: {', '.join(changed) or '?'}); its cells are not mixed with a changed "
                "definition: choose another out directory, or delete it to start over"
            )
        return
    (out / CELLS_DIR).mkdir(parents=True, exist_ok=True)
    io.write_json(
        path,
        {"format": SWEEP_FORMAT, "definition_hash": definition.hash, "definition": definition.as_dict(), "run": record},
    )


def _write_cell(out: Path, result: Mapping, definition_hash: str, record: dict) -> None:
    if result.get("trajectory") is not None:
        traj = result["trajectory"]
        traj.record = record
        traj.save(out / CELLS_DIR / f"{result['key']}.npz")
    io.write_json(
        _cell_path(out, result["key"]),
        {
            "format": CELL_FORMAT,
            "definition_hash": definition_hash,
            "cell": result["cell"],
            "measurements": result["measurements"],
            "computed_by": result.get("computed_by"),
            "run": record,
        },
    )


# ---------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------


def _table(definition: Sweep, cells: Sequence[Mapping], results: Mapping[str, Mapping], attrs: dict):
    import pandas as pd

    rows = []
    for c in cells:
        doc = results[cell_key(c)]
        rows.append({"cell": cell_key(c), **{k: c[k] for k in AXES}, **doc["measurements"]})
    table = pd.DataFrame(rows)
    for axis in ("rule", "task"):
        order = list(dict.fromkeys(c[axis] for c in cells))
        table[axis] = pd.Categorical(table[axis], categories=order, ordered=True)
    table.attrs.update(attrs)
    return table


def save_table(table, path) -> None:
    """Write a sweep table as Parquet, atomically, with its ``attrs`` (definition, hash, run
    record) in the file's metadata under ``curvdyn``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    meta = dict(arrow.schema.metadata or {})
    meta.pop(b"PANDAS_ATTRS", None)  # ours, below, is the one copy of the attributes
    meta[b"curvdyn"] = io.json_text(dict(table.attrs), indent=None).encode()
    buffer = _stdio.BytesIO()
    pq.write_table(arrow.replace_schema_metadata(meta), buffer)
    io.write_bytes(path, buffer.getvalue())


def load_table(path):
    """Read a table written by :func:`save_table` (or ``OUT/table.parquet`` of a sweep directory),
    its ``attrs`` restored: ``definition``, ``definition_hash``, ``run``, ``computed_cells``."""
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():
        path = path / TABLE_FILE
    arrow = pq.read_table(path)
    meta = (arrow.schema.metadata or {}).get(b"curvdyn")
    table = arrow.to_pandas()
    table.attrs.clear()
    if meta:
        table.attrs.update(json.loads(meta))
    return table


# ---------------------------------------------------------------------------------------
# running a sweep
# ---------------------------------------------------------------------------------------


def run(
    definition: Sweep,
    *,
    out=None,
    executor: Executor | None = None,
    batch: str = "auto",
    batch_size: int = 64,
    progress: bool = True,
    save_trajectories: bool = False,
    command: str = "",
):
    """Run a sweep; return its table (:class:`pandas.DataFrame`, one row per cell, grid order).

    Args:
      definition: the :class:`Sweep`.
      out: the sweep directory (see the module docstring): resumable, and the table is written
        there as ``table.parquet``. ``None``: nothing is written and nothing resumes.
      executor: where the groups of cells run: ``None`` in this process, one after the other;
        else any :class:`concurrent.futures.Executor` (a Dask cluster's ``client.get_executor()``,
        a :class:`~concurrent.futures.ProcessPoolExecutor`, ...). The results come back to this
        process, which alone writes the directory.
      batch: the batch strategy of each group (:mod:`curvdyn.batch`).
      batch_size: the most cells one program runs (a group with more is split).
      progress: a progress bar over the cells on standard error (only on a terminal).
      save_trajectories: also write each cell's trajectory (``OUT/cells/CELL.npz``; needs ``out``).
      command: the command line recorded in the manifest.

    Returns:
      The table; ``table.attrs`` holds ``definition``, ``definition_hash``, ``run`` (the run record
      of this run) and ``computed_cells`` (how many cells this call computed; the rest were read
      back from ``out``).

    Raises:
      SweepMismatch: ``out`` holds a different definition.
      curvdyn.rundir.DirectoryBusy: another sweep is writing into ``out``.
      curvdyn.Float64DisabledError: JAX's 64-bit mode is off.
      KeyboardInterrupt: Ctrl-C; ``out`` keeps every finished cell and is marked interrupted.
    """
    from curvdyn._precision import require_float64

    require_float64("curvdyn.sweep")
    if not isinstance(definition, Sweep):
        raise TypeError(f"definition must be a curvdyn.sweep.Sweep, got {type(definition).__name__}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if save_trajectories and out is None:
        raise ValueError("save_trajectories needs an out directory")
    from curvdyn import batch as batch_lib

    batch_lib.check_strategy(batch)
    cells = definition.cells()
    record = io.run_record(seeds=list(definition.seeds), resolution=None)
    attrs = {"definition": definition.as_dict(), "definition_hash": definition.hash, "run": record}
    options = {"batch": batch, "jax_settings": io.jax_settings(), "trajectories": save_trajectories}
    if out is None:
        results: dict[str, dict] = {}
        _compute(definition, cells, results, None, record, options, executor, int(batch_size), progress)
        return _table(definition, cells, results, {**attrs, "computed_cells": len(cells)})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with rundir.DirectoryLock(out, command=command, run_id=record["run_id"]):
        for directory in (out, out / CELLS_DIR):
            if directory.is_dir():
                io.remove_leftovers(directory)
        _begin_directory(out, definition, record)
        results = _read_cells(out, definition.hash)
        todo = [c for c in cells if cell_key(c) not in results]
        manifest = rundir.Manifest.begin(out, record=record, planned=[TABLE_ENTRY], command=command)
        try:
            _compute(definition, todo, results, out, record, options, executor, int(batch_size), progress)
            table = _table(definition, cells, results, {**attrs, "computed_cells": len(todo)})
            save_table(table, out / TABLE_FILE)
        except KeyboardInterrupt:
            manifest.finish("interrupted")
            raise
        except BaseException:
            manifest.finish("failed")
            raise
        manifest.figure(TABLE_ENTRY, "complete", record)
        manifest.finish("complete")
    return table


def _compute(definition, cells, results, out, record, options, executor, batch_size, progress) -> None:
    """Run ``cells`` group by group, storing each finished cell (in ``results`` and under ``out``)."""
    todo = groups(cells, batch_size)
    if not todo:
        return
    doc = definition.as_dict()
    bar = progress_bar(range(len(cells)), enabled=progress, desc="sweep cells", total=len(cells), leave=True)
    update = getattr(bar, "update", None)

    def store(group_results):
        for r in group_results:
            if out is not None:
                _write_cell(out, r, definition.hash, record)
            results[r["key"]] = {"cell": r["cell"], "measurements": r["measurements"]}
        if update is not None:
            update(len(group_results))

    try:
        if executor is None:
            for members in todo:
                store(run_group(doc, members, options))
        else:
            futures = [executor.submit(run_group, doc, members, options) for members in todo]
            try:
                for fut in _workers.as_completed(futures):
                    store(fut.result())
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    finally:
        if hasattr(bar, "close"):
            bar.close()


def sweep(
    *,
    out=None,
    executor: Executor | None = None,
    batch: str = "auto",
    batch_size: int = 64,
    progress: bool = True,
    save_trajectories: bool = False,
    **definition,
):
    """Run a sweep defined by keyword arguments (the fields of :class:`Sweep`); return its table.

    ``cd.sweep(rules=["sgd", "sqrt-ngd"], depths=[2, 3], init_scales=[0.05, 0.1], seeds=range(5),
    t_end=30.0, out="results/s")`` is ``run(Sweep(rules=..., ...), out=...)`` — see :func:`run` for
    the options and the returned :class:`pandas.DataFrame`.
    """
    return run(
        Sweep.from_dict(definition),
        out=out,
        executor=executor,
        batch=batch,
        batch_size=batch_size,
        progress=progress,
        save_trajectories=save_trajectories,
    )


@contextlib.contextmanager
def dask_executor(*, workers: int | None = None, scheduler: str | None = None) -> Iterator[Executor]:
    """An executor over Dask workers for :func:`run`: a new local cluster of ``workers`` processes
    (one thread each, single-threaded BLAS), or the existing cluster whose scheduler is at
    ``scheduler`` (``"tcp://host:8786"``: workers on any hosts that reach it, each with curvdyn
    installed). Needs ``dask[distributed]`` (the ``distributed`` extra).

    Raises:
      ImportError: Dask is not installed (the message says how to install it).
      ValueError: neither or both of ``workers`` and ``scheduler``.
    """
    if (workers is None) == (scheduler is None):
        raise ValueError("give workers (a local cluster) or scheduler (an existing one), not both or neither")
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ImportError(
            "running a sweep on Dask needs dask[distributed]: pip install 'curvdyn[distributed]'"
        ) from None
    if scheduler is not None:
        with Client(scheduler) as client:
            yield client.get_executor()
        return
    from curvdyn.reproduce import _single_threaded_children

    with _single_threaded_children():  # the workers inherit it: two processes with BLAS pools oversubscribe
        cluster = LocalCluster(
            n_workers=int(workers or 1), threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
        )
    try:
        with Client(cluster) as client:
            yield client.get_executor()
    finally:
        cluster.close()


def plot(table, x: str = "init_scale", y: str = "time_to_fraction", *, by: str = "rule", logx=True, logy=True):
    """A figure of ``y`` against ``x``, one line per value of ``by``: the median over the other
    axes (typically the seeds) with the 5–95 % range as a band.

    Returns a :class:`matplotlib.figure.Figure` (no pyplot state; save it with ``fig.savefig``).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = fig.subplots()
    import warnings

    for label, part in table.groupby(by, observed=True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a point where no seed has a value: no band
            stats = part.groupby(x)[y].agg(
                median="median", lo=lambda v: np.nanpercentile(v, 5), hi=lambda v: np.nanpercentile(v, 95)
            )
        line = ax.plot(stats.index, stats["median"], marker="o", label=str(label))[0]
        ax.fill_between(stats.index, stats["lo"], stats["hi"], color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.legend(title=by, fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    return fig


__all__ = [
    "AXES",
    "MEASUREMENTS",
    "Sweep",
    "SweepMismatch",
    "cell_key",
    "conserved_drift",
    "dask_executor",
    "groups",
    "load_table",
    "plot",
    "run",
    "run_group",
    "save_table",
    "sweep",
    "time_to_fraction",
]
