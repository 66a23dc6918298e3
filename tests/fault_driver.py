"""``curvdyn`` on small stand-in experiments, run as a script by the fault-injection tests.

    python fault_driver.py reproduce --out DIR ...      # the ordinary command line

The stand-ins ``alpha``, ``beta``, ``gamma`` replace the registered experiments. They are
registered when this file runs as a script and also when it is imported as ``__mp_main__``:
``curvdyn reproduce --jobs N`` spawns its workers, which re-import the main script under that
name and so see the same registry. (Imported under its own name, e.g. by a test, it registers
nothing: use :func:`standin`.)

Environment (inherited by the workers):

* ``FAULT_SLEEP="beta=30,gamma=30"``: seconds each stand-in's ``compute`` sleeps (default 0);
* ``FAULT_PIDS=DIR``: each ``compute`` writes ``DIR/<name>.pid`` (its process id) on entry, so
  a test knows which processes are computing and when;
* ``FAULT_JAX="jax_threefry_partitionable=0"``: JAX settings the main process (only) sets
  before running, to check that the workers compute with the parent's settings.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
import types

import numpy as np

from curvdyn import experiments
from curvdyn.experiments.base import at_least

NAMES = ("alpha", "beta", "gamma")


def _sleep_for(name: str) -> float:
    for item in os.environ.get("FAULT_SLEEP", "").split(","):
        key, _, value = item.partition("=")
        if key.strip() == name:
            return float(value)
    return 0.0


@dataclasses.dataclass(frozen=True)
class StandInSettings:
    n: int = 16


def standin(name: str) -> types.ModuleType:
    """A stand-in experiment module ``name`` (fast, seed-dependent data, one claim)."""
    module = types.ModuleType(f"curvdyn.experiments.{name}")
    module.NAME = name
    module.TITLE = f"stand-in experiment {name}"
    module.DEFAULT = StandInSettings()
    module.QUICK = StandInSettings(n=16)

    def compute(settings, *, seed, progress):
        pid_dir = os.environ.get("FAULT_PIDS")
        if pid_dir:
            with open(os.path.join(pid_dir, f"{name}.pid.tmp"), "w") as fh:
                fh.write(str(os.getpid()))
            os.replace(os.path.join(pid_dir, f"{name}.pid.tmp"), os.path.join(pid_dir, f"{name}.pid"))
        time.sleep(_sleep_for(name))
        import jax

        x = np.random.default_rng(seed).standard_normal(16)
        seen = {k: np.array(getattr(jax.config, k)) for k in ("jax_enable_x64", "jax_threefry_partitionable")}
        return {"x": x, "seed_seen": np.array(seed), "pid": np.array(os.getpid()), **seen}, {"n": settings.n}

    def plot(data, config):
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(2, 1.5))
        ax.plot(data["x"])
        return fig

    def claims(data, config):
        return [at_least("size", "The data hold 16 numbers (stand-in).", float(data["x"].size), 16, "Entries of x.")]

    module.compute, module.plot, module.claims = compute, plot, claims
    return module


def install() -> None:
    """Replace the experiment registry of this process by the stand-ins."""
    for name in NAMES:
        sys.modules[f"curvdyn.experiments.{name}"] = standin(name)
    experiments._MODULES = NAMES


if __name__ in ("__main__", "__mp_main__"):
    install()

if __name__ == "__main__":
    import faulthandler
    import signal

    import jax

    # Started as a terminal starts a command, Ctrl-C at its default: a test runner's process may
    # have SIGINT ignored or blocked, which a started process inherits (Python then installs no
    # handler), and the Ctrl-C tests would test the runner, not curvdyn (measured: a suite started
    # in the background of a non-interactive shell, as CI may, has SIGINT ignored in every test
    # process, and the Ctrl-C tests then failed).
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a test that waits too long asks for the stacks

    from curvdyn.cli import main

    for item in filter(None, os.environ.get("FAULT_JAX", "").split(",")):
        key, _, value = item.partition("=")
        jax.config.update(key, bool(int(value)))
    sys.exit(main(sys.argv[1:]))
