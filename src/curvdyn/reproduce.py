"""Run the paper's experiments and write figures, raw data, claims and the report.

A run first takes the output directory's lock (:class:`curvdyn.rundir.DirectoryLock`: a second
run into the same directory is refused), builds its run record (:func:`curvdyn.io.run_record`:
run id, seed, resolution, versions, JAX settings), marks the directory in progress
(``OUT/manifest.json``) and replaces the report by an "in progress" one. Then for each
experiment (a module following :mod:`curvdyn.experiments.base`) it

1. calls ``compute(settings, seed=..., progress=...)`` with the module's ``DEFAULT`` settings
   (``QUICK`` for the quick resolution);
2. saves ``<out>/<name>/data.npz`` (the raw arrays and the run record) and
   ``<out>/<name>/config.json`` (the experiment's configuration — its settings and the run's
   outcome, :meth:`curvdyn.experiments.base.Config.as_json` —, the run record and the wall
   time);
3. reloads both files (checking that both carry this run's record), and from the reloaded
   data alone
4. draws ``<out>/<name>/<name>.png`` (and ``.pdf``/``.svg`` if asked) and measures the
   claims, saved as ``<out>/<name>/claims.json`` (with the record of the data they measure);

and records the figure in the manifest. Every file is written atomically (:mod:`curvdyn.io`).
At the end :mod:`curvdyn.report` writes ``<out>/report.md``, ``<out>/report.html`` and
``<out>/report.json``, and only then the manifest says ``complete`` (or ``failed`` when an
experiment raised). Ctrl-C (or SIGTERM from the command line) terminates the workers, marks
the manifest ``interrupted``, writes a report that says so at its top, and raises
:class:`Interrupted`. Every number in the report is recomputable from the data files:
:func:`recompute_claims` does exactly that.

With ``replot=True`` the first two steps are skipped and the saved files are used as they are
(re-plotting and re-checking someone else's data); the report then states each figure's own
run id and seed, and figures from different runs are refused (:class:`MixedRuns`) unless
``allow_mixed=True``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from curvdyn import _workers, experiments, io, rundir
from curvdyn._validate import check_count
from curvdyn._version import __version__
from curvdyn.experiments.base import Claim, Config, settings_for, settings_type

FORMATS = ("png", "pdf", "svg")
DATA_FILE = "data.npz"
CONFIG_FILE = "config.json"
CLAIMS_FILE = "claims.json"
MANIFEST_FILE = rundir.MANIFEST_FILE
LOCK_FILE = rundir.LOCK_FILE
REPORT_FILES = ("report.md", "report.html", "report.json")
PNG_DPI = 130
NO_RECORD = "(no run record)"


class MixedRuns(ValueError):
    """The figures to report come from different runs (see :func:`reproduce`'s ``allow_mixed``)."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C (or SIGTERM from the command line) after cleaning up.

    Attributes:
      out: the output directory (``None`` if the run had not started writing).
      completed: the figures the run finished.
      signum: the signal that stopped it (``signal.SIGINT`` for Ctrl-C).
    """

    def __init__(self, message: str = "interrupted", *, out=None, completed=(), signum: int = signal.SIGINT):
        super().__init__(message)
        self.out = out
        self.completed = list(completed)
        self.signum = int(signum)


@dataclasses.dataclass
class ExperimentResult:
    """The outcome of one experiment.

    Attributes:
      name, title: the experiment's ``NAME`` and ``TITLE``.
      claims: the measured claims (empty if the experiment failed before measuring).
      error: the error message (with traceback) when a step raised, else ``None``.
      timings: seconds spent in ``compute`` (from ``config.json``), ``plot`` and ``claims``.
      files: the files written, relative to the output directory.
      meta: the saved ``config.json`` (``None`` if it was never written).
      description: the experiment's own account of its setup and numerics (its optional
        ``describe(config)``), shown in the report.
      record: the run record of the figure's data (from ``data.npz``; ``None`` if unreadable).
    """

    name: str
    title: str
    claims: list[Claim]
    error: str | None
    timings: dict
    files: list[str]
    meta: dict | None
    description: str = ""
    record: dict | None = None

    @property
    def ok(self) -> bool:
        """No error and no failed claim other than documented deviations from the paper."""
        return self.error is None and not any(c.blocking for c in self.claims)


@dataclasses.dataclass
class Run:
    """A whole reproduction (or re-plot): its results, its record and the directory's state.

    Attributes:
      results: one per reported figure, in figure order.
      record: the run record of a computing run (``None`` for a re-plot: each figure has its own).
      status: the directory's manifest status after this run (``"in-progress"``, ``"complete"``,
        ``"interrupted"``, ``"failed"``), or ``"unknown"`` (no manifest).
      problems: sentences saying why the directory is not one complete run (empty when it is);
        the report prints them at its top and ``--check`` fails on them.
      not_run: figures the run planned but did not finish (an interrupted run).
      allow_mixed: figures from different runs were reported as such.
    """

    results: list[ExperimentResult]
    out: Path
    formats: tuple[str, ...]
    replot: bool
    wall_time_s: float
    started: str
    command: str
    record: dict | None = None
    status: str = "complete"
    problems: list[str] = dataclasses.field(default_factory=list)
    not_run: list[str] = dataclasses.field(default_factory=list)
    allow_mixed: bool = False

    @property
    def claims(self) -> list[Claim]:
        return [c for r in self.results for c in r.claims]

    @property
    def n_failed(self) -> int:
        """Failed claims (documented deviations excluded) plus experiments that raised."""
        return sum(c.blocking for c in self.claims) + sum(r.error is not None for r in self.results)

    @property
    def runs(self) -> dict[str, list[str]]:
        """Run id → the reported figures whose data that run made (``NO_RECORD`` for none)."""
        out: dict[str, list[str]] = {}
        for r in self.results:
            out.setdefault(r.record["run_id"] if r.record else NO_RECORD, []).append(r.name)
        return out

    @property
    def mixed(self) -> bool:
        return len(self.runs) > 1

    @property
    def seeds(self) -> list[int]:
        """Every seed behind the reported figures (the run's own when none has a record yet)."""
        found = sorted({s for r in self.results if r.record for s in r.record["seeds"]})
        return found or (list(self.record["seeds"]) if self.record else [])

    @property
    def resolutions(self) -> list[str]:
        found = {r.record["resolution"] for r in self.results if r.record}
        if not found and self.record:
            found = {self.record["resolution"]}
        return sorted(str(x) for x in found)

    @property
    def complete(self) -> bool:
        """The reported figures are one complete run (nothing in :attr:`problems`)."""
        return not self.problems

    @property
    def ok(self) -> bool:
        """No failed claim, no error, and the directory is one complete run."""
        return self.n_failed == 0 and self.complete


# ---------------------------------------------------------------------------------------
# data files
# ---------------------------------------------------------------------------------------


def save_data(path: Path, data: dict, record: dict | None) -> None:
    """Write an experiment's data dict and the run record as one ``.npz`` (plain arrays, no pickles)."""
    if not isinstance(data, dict) or not data:
        raise TypeError("compute() must return a non-empty dict of arrays as its data")
    io.save_npz(path, data, record=record)


def load_data(path: Path) -> dict:
    """The arrays of a file written by :func:`save_data` (its run record checked and removed)."""
    return io.load_npz(path)[0]


def load_record(path: Path) -> dict:
    """The run record of a file written by :func:`save_data`.

    Raises:
      curvdyn.io.RecordError: the file has none (written by an older curvdyn) or a bad one.
    """
    return io.check_record(io.load_npz(path)[1], str(path))


write_json = io.write_json
read_json = io.read_json


# ---------------------------------------------------------------------------------------
# one experiment
# ---------------------------------------------------------------------------------------


def load_config(module, meta: dict) -> Config:
    """The typed :class:`~curvdyn.experiments.base.Config` of a saved ``config.json`` (``meta``)."""
    return Config.from_json(settings_type(module), meta["config"])


def claims_from_files(module, exp_dir: Path) -> list[Claim]:
    """Measure an experiment's claims from its saved ``data.npz`` and ``config.json`` alone."""
    data = load_data(exp_dir / DATA_FILE)
    meta = read_json(exp_dir / CONFIG_FILE)
    claims = list(module.claims(data, load_config(module, meta)))
    for c in claims:
        if not isinstance(c, Claim):
            raise TypeError(f"{module.NAME}.claims() must return Claim objects, got {type(c).__name__}")
    return claims


def recompute_claims(out: Path, name: str) -> list[Claim]:
    """The claims of experiment ``name`` recomputed from the files under ``out`` (a check)."""
    return claims_from_files(experiments.get(name), Path(out) / name)


def _check_same_run(exp_dir: Path, data_record: dict, meta: dict) -> None:
    """data.npz and config.json of one figure must come from one run (a kill between them does not)."""
    meta_record = io.check_record(meta.get("run") if isinstance(meta, dict) else None, str(exp_dir / CONFIG_FILE))
    if meta_record["run_id"] != data_record["run_id"]:
        raise io.RecordError(
            f"{exp_dir.name}: {DATA_FILE} is from run {data_record['run_id']} but {CONFIG_FILE} from run "
            f"{meta_record['run_id']} (a run was stopped between them); re-run {exp_dir.name}"
        )


def run_experiment(
    name: str,
    out: Path,
    *,
    record: dict | None = None,
    formats: Sequence[str] = ("png",),
    progress: bool = False,
    replot: bool = False,
) -> ExperimentResult:
    """Run one registered experiment (see the module docstring); never raises for the
    experiment's own errors — they are recorded in the result.

    Args:
      record: the run's record (computing runs): its one seed and its resolution are the
        experiment's, and every file carries it. Not used with ``replot``.
    """
    out = Path(out)
    exp_dir = out / name
    files: list[str] = []
    timings: dict = {}
    title, meta, claims, description, data_record = name, None, [], "", None
    try:
        module = experiments.get(name)
        title = module.TITLE
        if not replot:
            record = io.check_record(record, "the run")
            if len(record["seeds"]) != 1:
                raise ValueError(f"an experiment runs one seed per call, the record lists {record['seeds']}")
            here = io.jax_settings()
            if here != record["jax_config"]:
                raise RuntimeError(f"this process's JAX settings {here} differ from the run's {record['jax_config']}")
            exp_dir.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            settings = settings_for(module, quick=record["resolution"] == "quick")
            data, outcome = module.compute(settings, seed=record["seeds"][0], progress=progress)
            wall = time.perf_counter() - start
            meta = {
                "experiment": name,
                "title": module.TITLE,
                "run": record,
                "wall_time_s": round(wall, 3),
                "config": Config(settings, outcome).as_json(),
            }
            save_data(exp_dir / DATA_FILE, data, record)
            write_json(exp_dir / CONFIG_FILE, meta)
        for fname in (DATA_FILE, CONFIG_FILE):
            if not (exp_dir / fname).is_file():
                raise FileNotFoundError(f"{exp_dir / fname} is missing (run without --replot first)")
            files.append(f"{name}/{fname}")
        # From here on only the files are used.
        data, found_record, _ = io.load_npz(exp_dir / DATA_FILE)
        data_record = io.check_record(found_record, str(exp_dir / DATA_FILE))
        meta = read_json(exp_dir / CONFIG_FILE)
        _check_same_run(exp_dir, data_record, meta)
        if not replot and record is not None and data_record["run_id"] != record["run_id"]:
            raise io.RecordError(f"{exp_dir / DATA_FILE} was overwritten by run {data_record['run_id']}")
        timings["compute_s"] = meta.get("wall_time_s")
        config = load_config(module, meta)
        if hasattr(module, "describe"):
            description = str(module.describe(config))

        start = time.perf_counter()
        fig = module.plot(data, config)  # a matplotlib.figure.Figure: no pyplot state to close
        for fmt in ("png",) + tuple(f for f in formats if f != "png"):
            path = exp_dir / f"{name}.{fmt}"
            io.save_figure(
                fig,
                path,
                format=fmt,
                dpi=PNG_DPI,
                bbox_inches="tight",
                metadata=_figure_metadata(fmt, name, data_record),
            )
            files.append(f"{name}/{path.name}")
        timings["plot_s"] = round(time.perf_counter() - start, 3)

        start = time.perf_counter()
        claims = claims_from_files(module, exp_dir)
        timings["claims_s"] = round(time.perf_counter() - start, 3)
        write_json(
            exp_dir / CLAIMS_FILE, {"experiment": name, "run": data_record, "claims": [c.as_dict() for c in claims]}
        )
        files.append(f"{name}/{CLAIMS_FILE}")
        error = None
    except Exception:  # the report records it; the other experiments still run
        error = traceback.format_exc()
    return ExperimentResult(name, title, claims, error, timings, files, meta, description, data_record)


def _figure_metadata(fmt: str, name: str, record: dict) -> dict:
    text = (
        f"curvdyn {__version__} reproduce {name} run={record['run_id']} seeds={io.seeds_text(record)} "
        f"resolution={record['resolution']}"
    )
    if fmt == "png":
        return {"Software": "curvdyn " + __version__, "Description": text}
    if fmt == "pdf":
        return {"Creator": "curvdyn " + __version__, "Subject": text}
    return {"Description": text}


# ---------------------------------------------------------------------------------------
# the whole reproduction
# ---------------------------------------------------------------------------------------


# Each worker process computes on one thread: several processes that each start a pool of
# BLAS/XLA threads on a small machine oversubscribe its cores (measured on 2 cores: the
# eigendecomposition-heavy runs became 10–20× slower).
_SINGLE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
_XLA_SINGLE_THREAD = "--xla_cpu_multi_thread_eigen=false"


@contextlib.contextmanager
def _single_threaded_children():
    """Set the environment that spawned workers inherit (this process keeps its own threads)."""
    saved = {k: os.environ.get(k) for k in list(_SINGLE_THREAD_ENV) + ["XLA_FLAGS"]}
    try:
        os.environ.update(_SINGLE_THREAD_ENV)
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " " + _XLA_SINGLE_THREAD).strip()
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


Done = Callable[[str, ExperimentResult], None]


def _run_sequential(selected: list[str], out: Path, *, progress: bool, on_done: Done, **kwargs) -> None:
    from curvdyn.experiments.common import progress as progress_bar

    bar = progress_bar(selected, enabled=progress, desc="experiments", leave=True)
    for name in bar:
        if progress and hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(name)
        on_done(name, run_experiment(name, out, progress=progress, **kwargs))


def _run_parallel(selected: list[str], out: Path, *, jobs: int, progress: bool, on_done: Done, **kwargs) -> None:
    """Run experiments in ``jobs`` fresh processes (spawned: JAX does not survive a fork).

    The workers die with this process and never see Ctrl-C (:mod:`curvdyn._workers`); on any
    exception here (KeyboardInterrupt included) they are terminated before it propagates.
    """
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from curvdyn.experiments.common import progress as progress_bar

    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(selected)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_workers.start_worker,
        initargs=(os.getpid(), io.jax_settings()),
    )
    try:
        # The workers start here (ProcessPoolExecutor spawns them in submit).
        with _single_threaded_children(), _workers.sigint_blocked():
            futures = {pool.submit(run_experiment, name, out, progress=False, **kwargs): name for name in selected}
        bar = progress_bar(as_completed(futures), enabled=progress, desc="experiments", total=len(futures), leave=True)
        for fut in bar:
            name = futures[fut]
            try:
                result = fut.result()
            except Exception:  # the worker process itself died
                result = ExperimentResult(name, name, [], traceback.format_exc(), {}, [], None)
            on_done(name, result)
            if progress and hasattr(bar, "set_postfix_str"):
                bar.set_postfix_str(f"{name} done")
    except BaseException:
        with _workers.stop_signals_ignored():  # a second Ctrl-C must not leave workers running
            _workers.terminate(pool)
        raise
    pool.shutdown(wait=True)


def check_names(names: Sequence[str] | None) -> list[str]:
    """The experiments to run: all registered ones when ``names`` is empty, in figure order.

    Raises:
      ValueError: an unknown name (the message lists the registered ones).
    """
    registered = experiments.names()
    if not names:
        return list(registered)
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)}; available: {', '.join(registered)}")
    wanted = set(names)
    return [n for n in registered if n in wanted]


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """Validate the image formats (PNG is always written: the report embeds it)."""
    formats = tuple(f.strip().lower().lstrip(".") for f in formats if f.strip())
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown image format(s) {', '.join(bad)}; choose from {', '.join(FORMATS)}")
    return ("png",) + tuple(dict.fromkeys(f for f in formats if f != "png"))


def default_jobs() -> int:
    """Experiments run in parallel by default: one process per CPU core, at most 2."""
    return max(1, min(2, os.cpu_count() or 1))


def figure_runs(out, names: Sequence[str]) -> dict[str, list[str]]:
    """Run id → those of ``names`` whose ``data.npz`` under ``out`` that run made.

    Figures whose data have no readable record are grouped under :data:`NO_RECORD`; figures
    without data are left out.
    """
    groups: dict[str, list[str]] = {}
    for name in names:
        path = Path(out) / name / DATA_FILE
        if not path.is_file():
            continue
        try:
            key = load_record(path)["run_id"]
        except (ValueError, OSError):
            key = NO_RECORD
        groups.setdefault(key, []).append(name)
    return groups


def _runs_text(out: Path, groups: dict[str, list[str]]) -> str:
    parts = []
    for run_id, names in groups.items():
        if run_id == NO_RECORD:
            parts.append(f"no run record: {', '.join(names)}")
            continue
        record = load_record(Path(out) / names[0] / DATA_FILE)
        parts.append(f"run {run_id} (seed {io.seeds_text(record)}, {record['resolution']}): {', '.join(names)}")
    return "; ".join(parts)


def reproduce(
    names: Sequence[str] | None = None,
    *,
    out="results",
    quick: bool | None = None,
    seed: int | None = None,
    formats: Sequence[str] = ("png",),
    progress: bool = False,
    replot: bool = False,
    jobs: int = 1,
    command: str = "",
    allow_mixed: bool = False,
) -> Run:
    """Run the experiments ``names`` (all when empty), then write the report.

    With ``jobs > 1`` the experiments run in that many separate processes (each experiment
    is independent and writes only its own folder); the results are the same.

    Args:
      quick, seed: the resolution (default: not quick) and the seed (default 0) of a
        computing run; a re-plot uses the saved data's own and takes neither.
      replot: do not compute; re-draw and re-check the saved data.
      allow_mixed: with ``replot``, report figures made by different runs, each labelled with
        its run and seed (the report then says the directory is not one run).

    The experiments compute in float64: JAX's 64-bit mode must be on
    (``jax.config.update("jax_enable_x64", True)``; the ``curvdyn`` command does it); worker
    processes take the parent's setting (:mod:`curvdyn._workers`).

    Returns the :class:`Run`; its ``ok`` is False when a claim failed, an experiment raised,
    or the reported figures are not one complete run.

    Raises:
      curvdyn.Float64DisabledError: JAX's 64-bit mode is off.
      curvdyn.rundir.DirectoryBusy: another run holds ``out``'s lock.
      MixedRuns: ``replot`` over figures from different runs without ``allow_mixed``.
      Interrupted: Ctrl-C (``KeyboardInterrupt``) stopped the run; ``out`` is marked interrupted.
    """
    from curvdyn._precision import require_float64

    require_float64("curvdyn reproduce")
    selected = check_names(names)
    formats = check_formats(formats)
    jobs = check_count(jobs, "jobs")
    out = Path(out)
    if replot:
        if quick is not None or seed is not None:
            raise ValueError("a re-plot uses the saved data's own seed and resolution: do not pass quick or seed")
        if not out.is_dir():
            raise FileNotFoundError(f"{out} does not exist: nothing to re-plot")
        record = None
    else:
        if allow_mixed:
            raise ValueError("allow_mixed applies to re-plots only (a computing run makes one run)")
        record = io.run_record(seeds=[0 if seed is None else seed], resolution="quick" if quick else "default")
        out.mkdir(parents=True, exist_ok=True)
    with rundir.DirectoryLock(out, command=command, run_id=record["run_id"] if record else ""):
        for directory in [out] + [out / n for n in selected if (out / n).is_dir()]:
            io.remove_leftovers(directory)
        if record is None:  # a re-plot
            return _replot(selected, out, formats=formats, progress=progress, jobs=jobs, command=command,
                           allow_mixed=allow_mixed)  # fmt: skip
        return _compute(selected, out, record, formats=formats, progress=progress, jobs=jobs, command=command)


def _execute(selected, out, *, jobs: int, progress: bool, on_done: Done, **kwargs) -> None:
    if jobs == 1 or len(selected) == 1:
        _run_sequential(selected, out, progress=progress, on_done=on_done, **kwargs)
    else:
        _run_parallel(selected, out, jobs=jobs, progress=progress, on_done=on_done, **kwargs)


def _compute(selected, out: Path, record: dict, *, formats, progress, jobs, command) -> Run:
    from curvdyn import report

    start = time.perf_counter()
    manifest = rundir.Manifest.begin(out, record=record, planned=selected, command=command)
    run = Run([], out, formats, False, 0.0, record["created"], command, record=record, status="in-progress")
    run.problems = [
        f"This run ({record['run_id']}) is in progress, started {record['created']} (UTC); this report is replaced "
        f"when it ends. If no process holds {out / LOCK_FILE}, the run was killed and the directory is incomplete."
    ]
    report.write_report(run)
    results: dict[str, ExperimentResult] = {}

    def on_done(name: str, result: ExperimentResult) -> None:
        results[name] = result
        manifest.figure(name, "complete" if result.error is None else "failed", result.record or record)

    try:
        _execute(selected, out, jobs=jobs, progress=progress, on_done=on_done, record=record, formats=formats)
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        with _workers.stop_signals_ignored():  # a second Ctrl-C does not cut the clean-up short
            manifest.finish("interrupted")
            run.results = [results[n] for n in selected if n in results]
            run.not_run = [n for n in selected if n not in results]
            run.status, run.wall_time_s = "interrupted", round(time.perf_counter() - start, 3)
            run.problems = [
                f"This run ({record['run_id']}) was interrupted before it finished: "
                f"{', '.join(run.not_run)} {'was' if len(run.not_run) == 1 else 'were'} not written by it. "
                f"Files of {'that figure' if len(run.not_run) == 1 else 'those figures'} in this directory, if any, "
                "are from earlier runs or partly rewritten, and are not part of this report."
            ]
            report.write_report(run)
        raise Interrupted(
            f"interrupted; {out} is incomplete ({len(results)} of {len(selected)} figures written, "
            f"{MANIFEST_FILE} says 'interrupted')",
            out=out,
            completed=list(results),
            signum=signum,
        ) from None
    except BaseException:
        with contextlib.suppress(Exception):
            manifest.finish("failed")
        raise
    run.results = [results[n] for n in selected]
    run.wall_time_s = round(time.perf_counter() - start, 3)
    failed = [r.name for r in run.results if r.error is not None]
    run.status = "failed" if failed else "complete"
    run.problems = (
        [
            f"This run did not complete: {', '.join(failed)} raised an error (below); files of "
            f"{'that figure' if len(failed) == 1 else 'those figures'} may be stale or partly rewritten."
        ]
        if failed
        else []
    )
    report.write_report(run)
    manifest.finish(run.status)  # last: "complete" means every file, the report included, is written
    return run


def _replot(selected, out: Path, *, formats, progress, jobs, command, allow_mixed) -> Run:
    from curvdyn import report

    start = time.perf_counter()
    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    groups = figure_runs(out, selected)
    if len(groups) > 1 and not allow_mixed:
        raise MixedRuns(
            f"refusing to report figures from different runs as one: {_runs_text(out, groups)}. Re-run them "
            "together, or pass --allow-mixed to report each figure with its own run and seed"
        )
    results: dict[str, ExperimentResult] = {}
    _execute(
        selected,
        out,
        jobs=jobs,
        progress=progress,
        on_done=lambda name, result: results.__setitem__(name, result),
        formats=formats,
        replot=True,
    )
    run = Run(
        [results[n] for n in selected],
        out,
        formats,
        True,
        round(time.perf_counter() - start, 3),
        started,
        command,
        allow_mixed=allow_mixed,
    )
    run.status, run.problems = _directory_state(out, run)
    report.write_report(run)
    return run


def _directory_state(out: Path, run: Run) -> tuple[str, list[str]]:
    """The manifest's status and why the re-plotted figures are not one complete run (if so)."""
    problems = []
    try:
        manifest = rundir.read_manifest(out)
    except ValueError as exc:
        return "unknown", [f"The manifest cannot be read ({exc}): nothing says these files are one complete run."]
    if manifest is None:
        return "unknown", [f"{out} has no {MANIFEST_FILE}: nothing says these files are one complete run."]
    status = manifest["status"]
    if status != "complete":
        last = manifest.get("run") or {}
        problems.append(
            f"The last run into this directory ({last.get('run_id')}, `{manifest.get('command') or '?'}`) did not "
            f"complete: its manifest says '{status}'."
        )
    entries = manifest.get("figures") or {}
    for r in run.results:
        entry = entries.get(r.name)
        if r.record is None:
            continue
        if entry is None:
            problems.append(f"{r.name}: the manifest does not list it.")
        elif entry.get("run_id") != r.record["run_id"] or entry.get("status") != "complete":
            problems.append(
                f"{r.name}: the manifest lists it as {entry.get('status')} (run {entry.get('run_id')}), but its data "
                f"are from run {r.record['run_id']}."
            )
    if run.mixed:
        problems.append(
            f"The figures come from {len(run.runs)} different runs (reported as such because of --allow-mixed): "
            f"{_runs_text(out, run.runs)}."
        )
    return status, problems
