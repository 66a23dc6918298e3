"""Reproducible experiments: one module per figure of the paper (see base.py for the protocol).

Each experiment's settings are a frozen dataclass: ``module.DEFAULT`` and ``module.QUICK``
(``--quick``); ``module.compute(settings, seed=...)`` runs one seed.

The registry below lists the experiment modules in figure order. Adding an experiment is one
line: put its module name (a module of this package following :mod:`.base`) into
``_MODULES`` at its place in the order. Modules are imported only when asked for, so a broken
or slow import in one experiment does not affect the others.

>>> from curvdyn import experiments
>>> experiments.names()            # doctest: +SKIP
('fig1', 'fig2', 'fig3', 'figS1', 'figS2')
>>> module = experiments.get("fig3")
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

# Module names (inside curvdyn.experiments), in the order of the paper's figures.
_MODULES: tuple[str, ...] = (
    "fig1",
    "fig2",
    "fig3",
    "figS1",
    "figS2",
    "relu",
    "digits",
)

_REQUIRED = ("NAME", "TITLE", "DEFAULT", "QUICK", "compute", "plot", "claims")


def names() -> tuple[str, ...]:
    """The registered experiment names, in figure order (each module's ``NAME``)."""
    return tuple(_MODULES)


def get(name: str) -> ModuleType:
    """The experiment module registered as ``name``.

    Raises:
      KeyError: ``name`` is not registered (the message lists the registered names).
      TypeError: the module does not follow the protocol of :mod:`.base`.
    """
    if name not in _MODULES:
        raise KeyError(f"unknown experiment {name!r}; registered experiments: {', '.join(_MODULES)}")
    module = importlib.import_module(f"{__name__}.{name}")
    missing = [attr for attr in _REQUIRED if not hasattr(module, attr)]
    if missing:
        raise TypeError(f"experiment module {module.__name__} lacks {missing} (see curvdyn.experiments.base)")
    if module.NAME != name:
        raise TypeError(f"experiment module {module.__name__} has NAME {module.NAME!r}, expected {name!r}")
    settings = type(module.DEFAULT)
    frozen = dataclasses.is_dataclass(settings) and settings.__dataclass_params__.frozen  # type: ignore[attr-defined]
    if not frozen or type(module.QUICK) is not settings:
        raise TypeError(
            f"experiment module {module.__name__}: DEFAULT and QUICK must be instances of one frozen dataclass"
        )
    return module


def all_experiments() -> list[ModuleType]:
    """Every registered experiment module, in figure order."""
    return [get(name) for name in _MODULES]
