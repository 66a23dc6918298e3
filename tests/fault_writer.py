"""Kill curvdyn's file writers at random moments and in the middle of each file, for the
fault-injection tests.

    python fault_writer.py OUT MODE ROUNDS SEED        # MODE: atomic or in-place

Writes every kind of file curvdyn writes, over and over, each version ``k`` fully determined by
``k``: an experiment's ``data.npz`` (:func:`curvdyn.reproduce.save_data`), a JSON file
(``config.json``/``claims.json``/``manifest.json``: :func:`curvdyn.io.write_json`), the three
report files (:func:`curvdyn.report.write_report`), a PNG figure (:func:`curvdyn.io.save_figure`),
a :meth:`curvdyn.Trajectory.save` file and a benchmark JSON log (``benchmarks/_timing.JsonLog``).

Each round forks a child that rewrites them in a loop (so the imports are paid once) and copies
the directory to ``OUT/round-<name>`` after the child is SIGKILLed, for the test to check:

* ``ROUNDS`` random rounds (``round-random-<i>``): the child runs for a random time, then is killed;
* one targeted round per kind of file (``round-<file>``, :data:`TARGETS`): the child kills itself
  in the middle of writing that file (half of the first chunk written, flushed, then SIGKILL), so
  every kind of file is certainly caught mid-write, whatever the machine's speed.

With ``in-place`` the atomic writer is replaced by a plain ``open(path, mode)``: the control
that shows a kill does corrupt files written in place (so the check can fail). A random kill
lands inside a write only now and then (the writes are fast next to the work between them), so
the control's proof is the targeted rounds, not luck.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import _timing
from curvdyn import io, report, reproduce
from curvdyn.simulate import Trajectory

N_ROWS = 60_000  # ~0.5 MB per array: each write takes a while, so kills land inside writes
TARGETS = ("data.npz", "config.json", "report.md", "figure.png", "trajectory.npz", "bench.json")
_kill_in: str | None = None  # the child writing this file name kills itself mid-write


class _KilledMidWrite:
    """A file handle whose first ``write`` writes half of its data, flushes, and SIGKILLs the
    process: a kill inside the write of this file, deterministically."""

    def __init__(self, fh):
        self._fh = fh

    def write(self, data):
        self._fh.write(data[: len(data) // 2])
        self._fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)

    def __getattr__(self, name):
        return getattr(self._fh, name)


def _killing_mid_write(open_for_writing):
    """``open_for_writing`` (a context manager like :func:`curvdyn.io.atomic_write`) whose
    handle for the file named ``_kill_in`` kills the process in its first write."""

    @contextlib.contextmanager
    def opener(path, mode="wb", *, encoding=None):
        with open_for_writing(path, mode, encoding=encoding) as fh:
            yield _KilledMidWrite(fh) if Path(path).name == _kill_in else fh

    return opener


def version_arrays(k: int) -> np.ndarray:
    return np.random.default_rng(k).standard_normal(N_ROWS) + k


def write_all(work: Path, k: int, record: dict, log: _timing.JsonLog, fig) -> None:
    x = version_arrays(k)
    reproduce.save_data(work / "data.npz", {"x": x, "k": np.array(k)}, record)
    io.write_json(work / "config.json", {"k": k, "run": record, "payload": x[: N_ROWS // 4].tolist()})
    run = reproduce.Run([], work, ("png",), False, 0.0, "t", f"k={k} " + "x" * 200_000, record=record)
    report.write_report(run)
    fig.axes[0].set_title(f"k={k}")
    io.save_figure(fig, work / "figure.png", format="png", dpi=100)
    w = x[:45_000].reshape(5_000, 3, 3)
    Trajectory(
        t=np.arange(5_000.0) + k,
        weights=(w, w + 1, w + 2),
        loss=np.full(5_000, float(k)),
        map=w,
        conserved=(w, w),
        update_norm=np.ones(5_000),
        status="completed",
        message=f"k={k}",
        config={"k": k, "widths": [3, 3, 3, 3]},
        record=record,
    ).save(work / "trajectory.npz")
    log.doc["rows"] = [{"k": k, "payload": x[: N_ROWS // 8].tolist()}]
    log.flush()


@contextlib.contextmanager
def _in_place(path, mode="wb", *, encoding=None):
    kwargs = {"encoding": encoding or "utf-8", "newline": ""} if mode == "w" else {}
    with open(path, mode, **kwargs) as fh:
        yield fh


def _round(work: Path, out: Path, k: int, record: dict, log, fig, kill_in: str | None, delay: float) -> None:
    """Fork a child that rewrites every file until it is killed (after ``delay`` seconds, or by
    itself inside the write of ``kill_in``), then copy the directory to ``out``."""
    global _kill_in
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: rewrite everything until killed
        os.close(ready_r)
        write_all(work, k, record, log, fig)
        os.write(ready_w, b"x")
        _kill_in = kill_in
        while True:
            k += 1
            write_all(work, k, record, log, fig)
    os.close(ready_w)
    os.read(ready_r, 1)  # one full round written: the kill lands among later rewrites
    os.close(ready_r)
    if kill_in is None:
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not os.waitpid(pid, os.WNOHANG)[0]:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise SystemExit(f"the child writing {kill_in} did not kill itself within 60 s")
        time.sleep(0.01)
    shutil.copytree(work, out)


def main() -> None:
    out, mode, rounds, seed = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if mode not in ("atomic", "in-place"):
        raise SystemExit(f"MODE must be atomic or in-place, got {mode!r}")
    io.atomic_write = _killing_mid_write(_in_place if mode == "in-place" else io.atomic_write)
    # JAX warns at every fork; the forked children here never call JAX (the record is made above).
    warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
    rng = random.Random(seed)
    work = out / "work"
    work.mkdir(parents=True)
    record = io.run_record(seeds=[0], resolution="quick")
    log = _timing.JsonLog(str(work / "bench.json"), {"benchmark": "fault"})
    fig, _ = plt.subplots(figsize=(4, 3))
    fig.axes[0].plot(np.sin(np.linspace(0, 30, 20_000)))
    write_all(work, 0, record, log, fig)  # every file exists, complete, before the first kill
    for i in range(rounds):
        _round(work, out / f"round-random-{i}", 1000 * (i + 1), record, log, fig, None, rng.uniform(0.05, 0.8))
    for j, name in enumerate(TARGETS):
        _round(work, out / f"round-{name}", 1000 * (rounds + j + 1), record, log, fig, name, 0.0)
    print("done", flush=True)


if __name__ == "__main__":
    main()
