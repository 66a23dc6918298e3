"""The protocol every reproducible experiment follows, its typed configuration, and the claim record.

An experiment is a module in :mod:`curvdyn.experiments` that defines

* ``NAME``: the name on the command line (``fig1``, ``fig3``, ``relu``, ...);
* ``TITLE``: one line for the report;
* ``DEFAULT``: its settings, an instance of a frozen dataclass (one per experiment, usually
  named ``Settings``; nested frozen dataclasses where it reads better, such as
  :class:`curvdyn.ODE`). Fields are numbers, strings, booleans, ``None``, tuples of these and
  nested settings, so settings are hashable, compare by value and round-trip through JSON
  (:func:`settings_as_json`, :func:`settings_from_json`). The seed is not a setting: one
  settings object serves every seed;
* ``QUICK``: the ``--quick`` resolution, ``dataclasses.replace(DEFAULT, ...)``;
* ``compute(settings, *, seed: int, progress: bool = False) -> tuple[dict[str, np.ndarray], dict]``:
  runs the numerics for one seed and returns the raw data (NumPy arrays, float64 where it
  matters, under names that do not start with ``__``: those are curvdyn's own entries, such as
  the run record ``__run__``) and the *outcome*: what the run reports about itself, as JSON
  (solver statuses, step counts, wall times, values found while running). The run record
  (:func:`curvdyn.io.run_record`) that the runner stores with the data lists the seeds, so that
  a figure can later hold several;
* ``plot(data, config: Config) -> matplotlib.figure.Figure``: draws the figure from the data alone;
* ``claims(data, config: Config) -> list[Claim]``: measures the paper's claims from the data
  alone. Each claim is its own small function ``(data, config) -> Claim | None`` (``None``
  when the run did not make the data it needs, e.g. a full-matrix case the quick run leaves
  out), listed in the module's ``CLAIMS`` in report order; ``claims`` is
  ``measure(CLAIMS, data, config)``.

Optionally ``describe(config: Config) -> str``: a paragraph for the report on the setup and
numerics, read from the same settings fields the run used; ``plot_seeds(datas, configs, seeds)
-> Figure``: the spread over several seeds (one data dict and config per seed, in run order),
drawn from the saved data alone, written next to the first seed's figure as ``<name>-seeds.png``;
and ``SEED_DEPENDENT = False`` for an experiment whose ``compute`` does not depend on the seed at
all (it then runs once, on a run's first seed, and is reported as seed-independent).

``curvdyn reproduce`` runs ``compute`` once per seed and measures every claim on each seed's
data; :mod:`curvdyn.claimstats` turns the per-seed claims into the verdict over seeds.

``config.json`` holds :meth:`Config.as_json` (the settings by :func:`dataclasses.asdict`, and
the outcome); ``plot``, ``claims`` and ``describe`` get the :class:`Config` rebuilt from it
(:meth:`Config.from_json`), and read only what ``compute`` returned (after a round trip
through the saved files), so every number in the report can be recomputed from the data files.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import numpy as np

S = TypeVar("S")

#: An experiment's raw data: arrays by name.
Data = Mapping[str, np.ndarray]


def settings_as_json(settings: Any) -> dict[str, Any]:
    """The JSON-ready form of a settings dataclass (:func:`dataclasses.asdict`)."""
    if not dataclasses.is_dataclass(settings) or isinstance(settings, type):
        raise TypeError(f"settings must be a dataclass instance, got {type(settings).__name__}")
    return dataclasses.asdict(settings)


def settings_from_json(cls: type[S], obj: Mapping[str, Any]) -> S:
    """Rebuild a settings dataclass ``cls`` from :func:`settings_as_json` after a JSON round trip.

    Lists become the tuples the field types name, nested dictionaries the nested dataclasses,
    and the strings ``"inf"``, ``"-inf"``, ``"nan"`` (how strict JSON writes non-finite numbers)
    floats again. Every field must be present and no other.

    Raises:
      ValueError: a missing or unknown field, or a value that does not fit its field's type.
    """
    return _build(cls, obj, cls.__name__)


def _build(hint: Any, value: Any, where: str) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: expected an object for {hint.__name__}, got {value!r}")
        hints = typing.get_type_hints(hint)
        names = [f.name for f in dataclasses.fields(hint) if f.init]
        missing, unknown = sorted(set(names) - set(value)), sorted(set(value) - set(names))
        if missing or unknown:
            raise ValueError(f"{where}: settings fields missing {missing}, unknown {unknown} (another curvdyn?)")
        return hint(**{n: _build(hints[n], value[n], f"{where}.{n}") for n in names})
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} entries, got {len(value)}")
        return tuple(_build(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) != 1:
            raise ValueError(f"{where}: only `X | None` unions are supported in settings, got {hint}")
        return _build(options[0], value, where)
    if hint is Any:
        return value
    if hint is float and isinstance(value, str) and value in ("inf", "-inf", "nan"):
        return float(value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ValueError(f"{where}: {value!r} is not a {getattr(hint, '__name__', hint)}")


@dataclasses.dataclass(frozen=True)
class Config(Generic[S]):
    """What ``plot``, ``claims`` and ``describe`` read besides the data.

    Attributes:
      settings: the experiment's settings the run used (its ``DEFAULT`` or ``QUICK``).
      outcome: what the run reported about itself (``compute``'s second result, JSON).
    """

    settings: S
    outcome: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """``{"settings": asdict(settings), "outcome": outcome}``: the ``config`` of ``config.json``."""
        return {"settings": settings_as_json(self.settings), "outcome": dict(self.outcome)}

    @classmethod
    def from_json(cls, settings_type: type[S], obj: Mapping[str, Any]) -> Config[S]:
        """The configuration :meth:`as_json` wrote, with typed settings (:func:`settings_from_json`).

        Raises:
          ValueError: ``obj`` is not such a configuration (e.g. written by an older curvdyn).
        """
        if not isinstance(obj, Mapping) or set(obj) != {"settings", "outcome"}:
            keys = sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__
            raise ValueError(
                f"not an experiment configuration with 'settings' and 'outcome' (got {keys}); it was written by "
                "another curvdyn version: re-run the experiment"
            )
        return cls(settings_from_json(settings_type, obj["settings"]), dict(obj["outcome"]))


def settings_type(module: Any) -> type:
    """The settings class of an experiment module (the type of its ``DEFAULT``)."""
    return type(module.DEFAULT)


def seed_dependent(module: Any) -> bool:
    """Whether an experiment's ``compute`` depends on the seed (its ``SEED_DEPENDENT``, default True)."""
    value = getattr(module, "SEED_DEPENDENT", True)
    if not isinstance(value, bool):
        raise TypeError(f"{getattr(module, 'NAME', module)}.SEED_DEPENDENT must be True or False, got {value!r}")
    return value


def settings_for(module: Any, *, quick: bool) -> Any:
    """The module's ``QUICK`` settings when ``quick``, else its ``DEFAULT``."""
    return module.QUICK if quick else module.DEFAULT


ClaimFunction = Callable[[Data, Config[Any]], "Claim | None"]


def measure(claim_functions: Sequence[ClaimFunction], data: Data, config: Config[Any]) -> list[Claim]:
    """Every claim function's claim, in order (those that return ``None`` do not apply to this run)."""
    out = []
    for fn in claim_functions:
        claim = fn(data, config)
        if claim is not None:
            out.append(claim)
    return out


@dataclasses.dataclass(frozen=True)
class Claim:
    """One checked statement of the paper.

    Attributes:
      key: short stable identifier, e.g. ``"conservation-sgd"``.
      statement: the claim in words, with its source (``"eq. 4"``, ``"Fig. 3"``, ...).
      measured: the measured number.
      threshold: the pass criterion in words, e.g. ``"≤ 1e-7"``.
      passed: whether the measurement meets the criterion.
      detail: optional extra context (how it was measured, where it differs from the paper).
      known_deviation: empty, or the reason — written into the experiment before the run — why
        the paper's statement is known not to hold as stated (a documented disagreement).
        A failed claim with a known deviation is reported as "DISAGREES (documented)" and
        does not fail ``reproduce --check``; every other failed claim does.
      min_pass_fraction: over several seeds, the claim counts as reproduced when it passes on
        at least this fraction of them (default 1: on every seed). Below 1 only with
        ``fraction_reason``: why the paper's statement holds for most draws, not all (e.g. a
        hypothesis a random draw can violate). See :mod:`curvdyn.claimstats`.
      fraction_reason: the reason for ``min_pass_fraction`` < 1 (empty otherwise).
    """

    key: str
    statement: str
    measured: float
    threshold: str
    passed: bool
    detail: str = ""
    known_deviation: str = ""
    min_pass_fraction: float = 1.0
    fraction_reason: str = ""

    def __post_init__(self):
        f = self.min_pass_fraction
        if not (isinstance(f, int | float) and 0 < f <= 1):
            raise ValueError(f"claim {self.key!r}: min_pass_fraction must be in (0, 1], got {f!r}")
        if f < 1 and not self.fraction_reason:
            raise ValueError(f"claim {self.key!r}: min_pass_fraction {f} < 1 needs its reason (fraction_reason)")

    @property
    def verdict(self) -> str:
        """``"PASS"``, ``"FAIL"``, or ``"DISAGREES"`` (failed, with a documented known deviation):
        the one-seed verdict of :func:`curvdyn.claimstats.verdict`."""
        from curvdyn.claimstats import verdict

        return verdict(int(self.passed), 1, known_deviation=self.known_deviation)

    @property
    def blocking(self) -> bool:
        """A failure that ``reproduce --check`` counts: failed and not a documented deviation."""
        return not self.passed and not self.known_deviation

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["measured"] = None if not math.isfinite(self.measured) else float(self.measured)
        return out


def at_most(
    key: str,
    statement: str,
    measured: float,
    bound: float,
    detail: str = "",
    *,
    known_deviation: str = "",
    **over_seeds,
) -> Claim:
    """A claim that holds when ``measured ≤ bound`` (and is finite).

    ``over_seeds``: ``min_pass_fraction`` and ``fraction_reason`` (see :class:`Claim`)."""
    measured = float(measured)
    ok = bool(math.isfinite(measured) and measured <= bound)
    return Claim(key, statement, measured, f"≤ {bound:.3g}", ok, detail, known_deviation, **over_seeds)


def at_least(
    key: str,
    statement: str,
    measured: float,
    bound: float,
    detail: str = "",
    *,
    known_deviation: str = "",
    **over_seeds,
) -> Claim:
    """A claim that holds when ``measured ≥ bound`` (and is finite).

    ``over_seeds``: ``min_pass_fraction`` and ``fraction_reason`` (see :class:`Claim`)."""
    measured = float(measured)
    ok = bool(math.isfinite(measured) and measured >= bound)
    return Claim(key, statement, measured, f"≥ {bound:.3g}", ok, detail, known_deviation, **over_seeds)


def within(
    key: str, statement: str, measured: float, target: float, tol: float, detail: str = "", *, relative: bool = False
) -> Claim:
    """A claim that holds when ``|measured − target| ≤ tol`` (relative to ``|target|`` if asked).

    The threshold names the target and the tolerance only (the same on every seed); the error
    measured is appended to the detail."""
    measured = float(measured)
    err = abs(measured - target) / (abs(target) if relative and target else 1.0)
    kind = "relative " if relative else ""
    return Claim(
        key,
        statement,
        measured,
        f"{target:.4g} ± {tol:.2g}" + (" (relative)" if relative else ""),
        bool(math.isfinite(measured) and err <= tol),
        (detail + " " if detail else "") + f"({kind}error {err:.2g})",
    )
