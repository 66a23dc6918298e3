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
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from curvdyn import _workers, claimstats, experiments, io, rundir
from curvdyn._validate import check_count
from curvdyn._version import __version__
from curvdyn.claimstats import ClaimStats
from curvdyn.experiments.base import Claim, Config, seed_dependent, settings_for, settings_type

FORMATS = ("png", "pdf", "svg")
DATA_FILE = "data.npz"
CONFIG_FILE = "config.json"
CLAIMS_FILE = "claims.json"
MANIFEST_FILE = rundir.MANIFEST_FILE
LOCK_FILE = rundir.LOCK_FILE
REPORT_FILES = ("report.md", "report.html", "report.json")
PNG_DPI = 130
NO_RECORD = "(no run record)"
#: Where the seeds after a run's first live: ``OUT/<fig>/seed-<s>/`` (data.npz, config.json).
SEED_DIR_PREFIX = "seed-"
#: The spread-over-seeds figure: ``OUT/<fig>/<fig>-seeds.png`` (modules with ``plot_seeds``).
SEEDS_FIGURE_SUFFIX = "-seeds"
#: The seeds of ``curvdyn reproduce`` when neither ``--seeds`` nor ``--seed`` is given: every
#: claim is measured on each. Three, so that the default run stays within 10 minutes on a
#: 2-core machine (measured: 470 s; two seeds 367 s, each further seed ~100 s; the README has the
#: measurements).
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)


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
    """The outcome of one experiment over the seeds of its run.

    Attributes:
      name, title: the experiment's ``NAME`` and ``TITLE``.
      claims: the claims measured on the first seed (empty if it failed before measuring).
      error: the error message (with traceback) when a step raised, else ``None``.
      timings: seconds spent in ``compute`` (from ``config.json``), ``plot`` and ``claims``.
      files: the files written, relative to the output directory.
      meta: the saved ``config.json`` (``None`` if it was never written).
      description: the experiment's own account of its setup and numerics (its optional
        ``describe(config)``), shown in the report.
      record: the run record of the figure's data (from ``data.npz``; ``None`` if unreadable);
        its ``seeds`` are the figure's.
      stats: every claim over the seeds (:func:`curvdyn.claimstats.aggregate`).
      by_seed: seed → the claims measured on that seed.
      seed_dependent: False for an experiment that declares its compute independent of the
        seed (``SEED_DEPENDENT = False``): run once, on the run's first seed.
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
    stats: list[ClaimStats] = dataclasses.field(default_factory=list)
    by_seed: dict[int, list[Claim]] = dataclasses.field(default_factory=dict)
    seed_dependent: bool = True

    def __post_init__(self):
        if not self.by_seed and not self.stats and self.claims:  # built from one seed's claims
            seed = self.record["seeds"][0] if self.record and self.record.get("seeds") else 0
            self.by_seed = {seed: list(self.claims)}
            self.stats = claimstats.aggregate(self.by_seed)

    @property
    def seeds(self) -> list[int]:
        """The seeds the figure's claims were measured on."""
        return list(self.by_seed)

    @property
    def ok(self) -> bool:
        """No error and no claim that is neither holding nor a documented deviation from the paper."""
        return self.error is None and not any(s.blocking for s in self.stats)


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
        """The claims measured on each figure's first seed."""
        return [c for r in self.results for c in r.claims]

    @property
    def stats(self) -> list[ClaimStats]:
        """Every claim over its seeds (:mod:`curvdyn.claimstats`), in figure order."""
        return [s for r in self.results for s in r.stats]

    @property
    def n_failed(self) -> int:
        """Blocking claims (neither holding nor documented deviations) plus experiments that raised."""
        return sum(s.blocking for s in self.stats) + sum(r.error is not None for r in self.results)

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
# one experiment: one seed, then the figure over its seeds
# ---------------------------------------------------------------------------------------


def seed_dir(exp_dir: Path, seed: int, seeds: Sequence[int]) -> Path:
    """Where one seed's ``data.npz`` and ``config.json`` live: the figure's own directory for
    the first seed of its run (as in a one-seed run), ``<exp_dir>/seed-<s>/`` for the others."""
    return Path(exp_dir) if seed == seeds[0] else Path(exp_dir) / f"{SEED_DIR_PREFIX}{int(seed)}"


def figure_seeds(module, seeds: Sequence[int]) -> list[int]:
    """The seeds an experiment runs: all of ``seeds``, or only the first when the module
    declares that its compute does not depend on the seed (``SEED_DEPENDENT = False``)."""
    seeds = [int(s) for s in seeds]
    return seeds if seed_dependent(module) else seeds[:1]


def load_config(module, meta: dict) -> Config:
    """The typed :class:`~curvdyn.experiments.base.Config` of a saved ``config.json`` (``meta``)."""
    return Config.from_json(settings_type(module), meta["config"])


def claims_from_files(module, exp_dir: Path) -> list[Claim]:
    """Measure an experiment's claims from one seed's saved ``data.npz`` and ``config.json`` alone."""
    data = load_data(exp_dir / DATA_FILE)
    meta = read_json(exp_dir / CONFIG_FILE)
    claims = list(module.claims(data, load_config(module, meta)))
    for c in claims:
        if not isinstance(c, Claim):
            raise TypeError(f"{module.NAME}.claims() must return Claim objects, got {type(c).__name__}")
    return claims


def saved_seeds(out: Path, name: str) -> list[int]:
    """The seeds of figure ``name``'s saved run (from the record of its ``data.npz``)."""
    return list(load_record(Path(out) / name / DATA_FILE)["seeds"])


def recompute_claims(out: Path, name: str, seed: int | None = None) -> list[Claim]:
    """The claims of experiment ``name`` on one seed (default: the run's first), recomputed from
    the files under ``out`` (a check)."""
    module = experiments.get(name)
    seeds = saved_seeds(out, name)
    return claims_from_files(module, seed_dir(Path(out) / name, seeds[0] if seed is None else seed, seeds))


def recompute_stats(out: Path, name: str) -> list[ClaimStats]:
    """Every claim of experiment ``name`` over every seed of its saved run, from the files alone."""
    seeds = saved_seeds(out, name)
    return claimstats.aggregate([(s, recompute_claims(out, name, s)) for s in seeds])


def _check_same_run(exp_dir: Path, data_record: dict, meta: dict) -> None:
    """data.npz and config.json of one figure must come from one run (a kill between them does not)."""
    meta_record = io.check_record(meta.get("run") if isinstance(meta, dict) else None, str(exp_dir / CONFIG_FILE))
    if meta_record["run_id"] != data_record["run_id"]:
        raise io.RecordError(
            f"{exp_dir.name}: {DATA_FILE} is from run {data_record['run_id']} but {CONFIG_FILE} from run "
            f"{meta_record['run_id']} (a run was stopped between them); re-run {exp_dir.name}"
        )


@dataclasses.dataclass
class SeedResult:
    """One experiment on one seed: what :func:`run_seed` returns to the runner.

    Attributes:
      claims: measured on this seed's saved files (empty if a step raised).
      error: the traceback when a step raised, else ``None``.
      compute_s: the wall time of ``compute`` (from ``config.json``), claims_s: of measuring.
      files: written or read, relative to the output directory.
      record: the run record of this seed's ``data.npz`` (``None`` if unreadable).
      meta: this seed's ``config.json``.
    """

    name: str
    seed: int
    claims: list[Claim]
    error: str | None
    compute_s: float | None = None
    claims_s: float | None = None
    files: list[str] = dataclasses.field(default_factory=list)
    record: dict | None = None
    meta: dict | None = None


def run_seed(
    name: str,
    out: Path,
    seed: int,
    *,
    record: dict | None = None,
    progress: bool = False,
    replot: bool = False,
    seeds: Sequence[int] | None = None,
) -> SeedResult:
    """Compute (unless ``replot``) and save experiment ``name`` on ``seed``, then measure its
    claims from the saved files alone; never raises for the experiment's own errors.

    Args:
      record: the figure's run record (computing runs): its seeds (``seed`` among them) and its
        resolution; every file carries it. Not used with ``replot``.
      seeds: with ``replot``, the seeds of the saved run (they say where ``seed``'s files are).
    """
    out = Path(out)
    exp_dir = out / name
    result = SeedResult(name, int(seed), [], None)
    try:
        module = experiments.get(name)
        if replot:
            record = None
        else:
            record = io.check_record(record, "the run")
            seeds = record["seeds"]
            if seed not in seeds:
                raise ValueError(f"seed {seed} is not among the run's seeds {seeds}")
            here = io.jax_settings()
            if here != record["jax_config"]:
                raise RuntimeError(f"this process's JAX settings {here} differ from the run's {record['jax_config']}")
        if seeds is None:
            raise ValueError("run_seed needs the run's seeds with replot=True")
        where = seed_dir(exp_dir, seed, seeds)
        rel = where.relative_to(out).as_posix()
        if record is not None:  # a computing run (check_record above)
            where.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            settings = settings_for(module, quick=record["resolution"] == "quick")
            data, outcome = module.compute(settings, seed=int(seed), progress=progress)
            wall = time.perf_counter() - start
            meta = {
                "experiment": name,
                "title": module.TITLE,
                "run": record,
                "seed": int(seed),
                "wall_time_s": round(wall, 3),
                "config": Config(settings, outcome).as_json(),
            }
            save_data(where / DATA_FILE, data, record)
            write_json(where / CONFIG_FILE, meta)
        for fname in (DATA_FILE, CONFIG_FILE):
            if not (where / fname).is_file():
                raise FileNotFoundError(f"{where / fname} is missing (run without --replot first)")
            result.files.append(f"{rel}/{fname}")
        # From here on only the files are used.
        data_record = io.check_record(io.load_npz(where / DATA_FILE)[1], str(where / DATA_FILE))
        result.record = data_record
        meta = read_json(where / CONFIG_FILE)
        result.meta = meta
        _check_same_run(where, data_record, meta)
        if record is not None and data_record["run_id"] != record["run_id"]:
            raise io.RecordError(f"{where / DATA_FILE} was overwritten by run {data_record['run_id']}")
        found = meta.get("seed", data_record["seeds"][0]) if isinstance(meta, dict) else None
        if found != seed:
            raise io.RecordError(f"{where / CONFIG_FILE} holds seed {found}, expected seed {seed}")
        result.compute_s = meta.get("wall_time_s")
        start = time.perf_counter()
        result.claims = claims_from_files(module, where)
        result.claims_s = round(time.perf_counter() - start, 3)
    except Exception:  # the report records it; the other seeds and experiments still run
        result.error = traceback.format_exc()
    return result


def _save_figure(fig, exp_dir: Path, stem: str, formats, name: str, record: dict) -> list[str]:
    files = []
    for fmt in ("png",) + tuple(f for f in formats if f != "png"):
        path = exp_dir / f"{stem}.{fmt}"
        io.save_figure(
            fig, path, format=fmt, dpi=PNG_DPI, bbox_inches="tight", metadata=_figure_metadata(fmt, name, record)
        )
        files.append(f"{name}/{path.name}")
    return files


def finish_figure(
    name: str, out: Path, seed_results: Sequence[SeedResult], *, formats: Sequence[str] = ("png",)
) -> ExperimentResult:
    """Draw a figure and write its ``claims.json`` from its seeds' saved files (``seed_results``,
    in run order, the first seed first); never raises for the experiment's own errors.

    Writes ``<name>.png`` (the first seed's figure, as in a one-seed run), with several seeds
    also ``<name>-seeds.png`` when the module draws the spread over seeds (``plot_seeds``), and
    ``claims.json``: the first seed's claims (``claims``), every seed's (``by_seed``) and their
    statistics (``summary``, :func:`curvdyn.claimstats.aggregate`).
    """
    out = Path(out)
    exp_dir = out / name
    seed_results = list(seed_results)
    first = seed_results[0]
    files = [f for r in seed_results for f in r.files]
    timings: dict = {}
    computes = [r.compute_s for r in seed_results if r.compute_s is not None]
    if computes:
        timings["compute_s"] = round(sum(computes), 3)
        if len(seed_results) > 1:
            timings["compute_s_per_seed"] = [r.compute_s for r in seed_results]
    errors = [f"seed {r.seed}: {r.error}" if len(seed_results) > 1 else r.error for r in seed_results if r.error]
    title, description, record = name, "", first.record
    by_seed = [(r.seed, r.claims) for r in seed_results if r.error is None]
    stats: list[ClaimStats] = []
    dependent = True
    try:
        module = experiments.get(name)
        title = module.TITLE
        dependent = seed_dependent(module)
        for r in seed_results[1:]:
            if r.record is not None and record is not None and r.record["run_id"] != record["run_id"]:
                raise io.RecordError(
                    f"{name}: seed {r.seed}'s data are from run {r.record['run_id']} but seed {first.seed}'s from run "
                    f"{record['run_id']}; re-run {name}"
                )
        stats = claimstats.aggregate(by_seed)
        if first.error is None and first.meta is not None and record is not None:
            config = load_config(module, first.meta)
            if hasattr(module, "describe"):
                description = str(module.describe(config))
            start = time.perf_counter()
            fig = module.plot(load_data(exp_dir / DATA_FILE), config)  # a Figure: no pyplot state to close
            files += _save_figure(fig, exp_dir, name, formats, name, record)
            ok = [r for r in seed_results if r.error is None]
            if len(ok) > 1 and hasattr(module, "plot_seeds"):
                datas = [load_data(seed_dir(exp_dir, r.seed, record["seeds"]) / DATA_FILE) for r in ok]
                configs = [load_config(module, r.meta or {}) for r in ok]
                fig = module.plot_seeds(datas, configs, [r.seed for r in ok])
                files += _save_figure(fig, exp_dir, f"{name}{SEEDS_FIGURE_SUFFIX}", formats, name, record)
            timings["plot_s"] = round(time.perf_counter() - start, 3)
        timings["claims_s"] = round(sum(r.claims_s or 0.0 for r in seed_results), 3)
        if by_seed and record is not None:
            write_json(
                exp_dir / CLAIMS_FILE,
                {
                    "experiment": name,
                    "run": record,
                    "seeds": [s for s, _ in by_seed],
                    "claims": [c.as_dict() for c in by_seed[0][1]] if by_seed[0][0] == first.seed else [],
                    "by_seed": [{"seed": s, "claims": [c.as_dict() for c in cs]} for s, cs in by_seed],
                    "summary": [s.as_dict() for s in stats],
                },
            )
            files.append(f"{name}/{CLAIMS_FILE}")
    except Exception:
        errors.append(traceback.format_exc())
    return ExperimentResult(
        name,
        title,
        list(first.claims),
        "\n".join(errors) if errors else None,
        timings,
        files,
        first.meta,
        description,
        record,
        stats=stats,
        by_seed=dict(by_seed),
        seed_dependent=dependent,
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
    """Run one registered experiment on every seed of ``record`` (or, with ``replot``, re-measure
    every seed of its saved run) in this process, then draw it (:func:`run_seed`, :func:`finish_figure`)."""
    if replot:
        try:
            seeds = saved_seeds(out, name)
        except Exception:
            seeds = [0]
        results = [run_seed(name, out, s, replot=True, seeds=seeds) for s in seeds]
    else:
        module = experiments.get(name)
        record = dict(io.check_record(record, "the run"))
        record["seeds"] = figure_seeds(module, record["seeds"])
        results = [run_seed(name, out, s, record=record, progress=progress) for s in record["seeds"]]
    return finish_figure(name, out, results, formats=formats)


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
SeedDone = Callable[[str, int, SeedResult], None]


def _run_sequential(tasks: list[tuple[str, int]], out: Path, *, progress: bool, on_seed: SeedDone, seed_kwargs) -> None:
    from curvdyn.experiments.common import progress as progress_bar

    bar = progress_bar(tasks, enabled=progress, desc="experiments × seeds", leave=True)
    for name, seed in bar:
        if progress and hasattr(bar, "set_postfix_str"):
            bar.set_postfix_str(f"{name} seed {seed}")
        on_seed(name, seed, run_seed(name, out, seed, progress=progress, **seed_kwargs[name]))


def _run_parallel(
    tasks: list[tuple[str, int]], out: Path, *, jobs: int, progress: bool, on_seed: SeedDone, seed_kwargs
) -> None:
    """Run (experiment, seed) tasks in ``jobs`` fresh processes (spawned: JAX does not survive a fork).

    The workers die with this process and never see Ctrl-C (:mod:`curvdyn._workers`); on any
    exception here (KeyboardInterrupt included) they are terminated before it propagates. They
    share one XLA compilation cache, a temporary directory removed afterwards: each worker
    meets each experiment's programs at its first seed, and only the first worker to meet a
    program compiles it (the others load the same executable; results are bit-identical).
    """
    with tempfile.TemporaryDirectory(prefix="curvdyn-xla-cache-", ignore_cleanup_errors=True) as cache_dir:
        _run_pool(
            tasks, out, jobs=jobs, progress=progress, on_seed=on_seed, seed_kwargs=seed_kwargs, cache_dir=cache_dir
        )


def _run_pool(tasks, out: Path, *, jobs: int, progress: bool, on_seed: SeedDone, seed_kwargs, cache_dir: str) -> None:
    from concurrent.futures import ProcessPoolExecutor

    from curvdyn.experiments.common import progress as progress_bar

    pool = ProcessPoolExecutor(
        max_workers=min(jobs, len(tasks)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_workers.start_worker,
        initargs=(os.getpid(), io.jax_settings(), cache_dir),
    )
    try:
        # The workers start here (ProcessPoolExecutor spawns them in submit).
        with _single_threaded_children(), _workers.sigint_blocked():
            futures = {
                pool.submit(run_seed, name, out, seed, progress=False, **seed_kwargs[name]): (name, seed)
                for name, seed in tasks
            }
        bar = progress_bar(
            _workers.as_completed(futures), enabled=progress, desc="experiments × seeds", total=len(futures), leave=True
        )
        for fut in bar:
            name, seed = futures[fut]
            try:
                result = fut.result()
            except Exception:  # the worker process itself died
                result = SeedResult(name, seed, [], traceback.format_exc())
            on_seed(name, seed, result)
            if progress and hasattr(bar, "set_postfix_str"):
                bar.set_postfix_str(f"{name} seed {seed} done")
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


def _figure_records(out, name: str) -> list[tuple[str, Path]]:
    """(run id, data file) of every saved seed of figure ``name`` (its first seed's first)."""
    exp_dir = Path(out) / name
    path = exp_dir / DATA_FILE
    if not path.is_file():
        return []
    try:
        record = load_record(path)
    except (ValueError, OSError):
        return [(NO_RECORD, path)]
    found = [(record["run_id"], path)]
    for seed in record["seeds"][1:]:
        other = seed_dir(exp_dir, seed, record["seeds"]) / DATA_FILE
        if other.is_file():
            try:
                found.append((load_record(other)["run_id"], other))
            except (ValueError, OSError):
                found.append((NO_RECORD, other))
    return found


def figure_runs(out, names: Sequence[str]) -> dict[str, list[str]]:
    """Run id → those of ``names`` whose saved data (any of their seeds' ``data.npz``) that run made.

    Figures whose data have no readable record are grouped under :data:`NO_RECORD`; figures
    without data are left out; a figure whose seeds come from several runs is in each group.
    """
    groups: dict[str, list[str]] = {}
    for name in names:
        for key in dict.fromkeys(k for k, _ in _figure_records(out, name)):
            groups.setdefault(key, []).append(name)
    return groups


def _runs_text(out: Path, groups: dict[str, list[str]]) -> str:
    parts = []
    for run_id, names in groups.items():
        if run_id == NO_RECORD:
            parts.append(f"no run record: {', '.join(names)}")
            continue
        path = next(p for k, p in _figure_records(out, names[0]) if k == run_id)
        record = load_record(path)
        parts.append(f"run {run_id} (seed {io.seeds_text(record)}, {record['resolution']}): {', '.join(names)}")
    return "; ".join(parts)


def check_seeds(seeds) -> list[int]:
    """The seeds of a run: distinct non-negative integers, in the order given.

    Raises:
      ValueError: none, a negative or non-integer one, or one given twice.
    """
    if isinstance(seeds, int | np.integer):
        seeds = [seeds]
    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int | np.integer) or s < 0:
            raise ValueError(f"seeds must be non-negative integers, got {s!r}")
        out.append(int(s))
    if not out:
        raise ValueError("no seeds given")
    repeated = sorted({s for s in out if out.count(s) > 1})
    if repeated:
        raise ValueError(f"seed {', '.join(map(str, repeated))} given more than once")
    return out


def reproduce(
    names: Sequence[str] | None = None,
    *,
    out="results",
    quick: bool | None = None,
    seed: int | None = None,
    seeds: Sequence[int] | None = None,
    formats: Sequence[str] = ("png",),
    progress: bool = False,
    replot: bool = False,
    jobs: int = 1,
    command: str = "",
    allow_mixed: bool = False,
) -> Run:
    """Run the experiments ``names`` (all when empty) on every seed, then write the report.

    Every experiment runs once per seed (each (experiment, seed) is one task: with ``jobs > 1``
    the tasks run in that many separate processes; the results are the same), except those
    that declare their compute independent of the seed (``SEED_DEPENDENT = False``), which
    run on the first seed only. Every claim is measured on each seed's saved data, and
    reported over the seeds (:mod:`curvdyn.claimstats`).

    Args:
      quick: the resolution of a computing run (default: not quick).
      seeds: the seeds of a computing run (default :data:`DEFAULT_SEEDS`); ``seed``: one seed,
        the same as ``seeds=[seed]`` (not both). A re-plot uses the saved data's own seeds and
        resolution and takes none of these.
      replot: do not compute; re-draw and re-check the saved data of every seed.
      allow_mixed: with ``replot``, report figures made by different runs, each labelled with
        its run and seed (the report then says the directory is not one run).

    The experiments compute in float64: JAX's 64-bit mode must be on
    (``jax.config.update("jax_enable_x64", True)``; the ``curvdyn`` command does it); worker
    processes take the parent's setting (:mod:`curvdyn._workers`).

    Returns the :class:`Run`; its ``ok`` is False when a claim is neither holding nor a
    documented deviation, an experiment raised, or the reported figures are not one complete run.

    Raises:
      curvdyn.Float64DisabledError: JAX's 64-bit mode is off.
      curvdyn.rundir.DirectoryBusy: another run holds ``out``'s lock.
      MixedRuns: ``replot`` over figures (or seeds of a figure) from different runs without
        ``allow_mixed``.
      Interrupted: Ctrl-C (``KeyboardInterrupt``) stopped the run; ``out`` is marked interrupted.
    """
    from curvdyn._precision import require_float64

    require_float64("curvdyn reproduce")
    selected = check_names(names)
    formats = check_formats(formats)
    jobs = check_count(jobs, "jobs")
    out = Path(out)
    if seed is not None and seeds is not None:
        raise ValueError("pass seed (one seed) or seeds, not both")
    if replot:
        if quick is not None or seed is not None or seeds is not None:
            raise ValueError("a re-plot uses the saved data's own seeds and resolution: do not pass quick or seeds")
        if not out.is_dir():
            raise FileNotFoundError(f"{out} does not exist: nothing to re-plot")
        record = None
    else:
        if allow_mixed:
            raise ValueError("allow_mixed applies to re-plots only (a computing run makes one run)")
        run_seeds = check_seeds(DEFAULT_SEEDS if seeds is None and seed is None else [seed] if seeds is None else seeds)
        record = io.run_record(seeds=run_seeds, resolution="quick" if quick else "default")
        out.mkdir(parents=True, exist_ok=True)
    with rundir.DirectoryLock(out, command=command, run_id=record["run_id"] if record else ""):
        for directory in [out] + [out / n for n in selected if (out / n).is_dir()]:
            io.remove_leftovers(directory)
            if directory != out:
                for sub in directory.glob(f"{SEED_DIR_PREFIX}*"):
                    if sub.is_dir():
                        io.remove_leftovers(sub)
        if record is None:  # a re-plot
            return _replot(selected, out, formats=formats, progress=progress, jobs=jobs, command=command,
                           allow_mixed=allow_mixed)  # fmt: skip
        return _compute(selected, out, record, formats=formats, progress=progress, jobs=jobs, command=command)


class _Figures:
    """Collects the seeds of each figure and finishes the figure (:func:`finish_figure`, in this
    process) once all its seeds are in."""

    def __init__(self, plan: dict[str, list[int]], out: Path, formats, on_done: Done):
        self.plan, self.out, self.formats, self.on_done = plan, out, formats, on_done
        self.got: dict[str, dict[int, SeedResult]] = {name: {} for name in plan}

    def seed_done(self, name: str, seed: int, result: SeedResult) -> None:
        self.got[name][seed] = result
        if len(self.got[name]) == len(self.plan[name]):
            results = [self.got[name][s] for s in self.plan[name]]
            self.on_done(name, finish_figure(name, self.out, results, formats=self.formats))


def _execute(
    plan: dict[str, list[int]], out, *, jobs: int, progress: bool, on_done: Done, formats, seed_kwargs
) -> None:
    tasks = [(name, s) for name, seeds in plan.items() for s in seeds]
    figures = _Figures(plan, out, formats, on_done)
    if jobs == 1 or len(tasks) == 1:
        _run_sequential(tasks, out, progress=progress, on_seed=figures.seed_done, seed_kwargs=seed_kwargs)
    else:
        tasks = _parallel_order(plan)
        _run_parallel(tasks, out, jobs=jobs, progress=progress, on_seed=figures.seed_done, seed_kwargs=seed_kwargs)


def _parallel_order(plan: dict[str, list[int]]) -> list[tuple[str, int]]:
    """The order in which the workers take the (experiment, seed) tasks: every experiment's first
    seed, in figure order, before any experiment's further seeds.

    Each experiment's programs are then compiled once, by the worker that runs its first seed, and
    every later seed finds them in the run's shared compilation cache. In figure order the two
    workers would start the same experiment's first two seeds together and both compile it
    (measured: a first seed costs 13-40 s more than a later one for fig1, fig2, figS1, figS2 and
    fig3). A sequential run keeps figure order: one process compiles each program once anyway.
    """
    firsts = [(name, seeds[0]) for name, seeds in plan.items() if seeds]
    return firsts + [(name, s) for name, seeds in plan.items() for s in seeds[1:]]


def _figure_record(name: str, record: dict) -> dict:
    """The run record of one figure's files: the run's, with the seeds that figure runs."""
    try:
        seeds = figure_seeds(experiments.get(name), record["seeds"])
    except Exception:  # a module that does not import: its tasks report the error
        seeds = list(record["seeds"])
    return dict(record, seeds=seeds)


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
    records = {name: _figure_record(name, record) for name in selected}

    def on_done(name: str, result: ExperimentResult) -> None:
        results[name] = result
        manifest.figure(name, "complete" if result.error is None else "failed", result.record or records[name])

    try:
        _execute(
            {name: records[name]["seeds"] for name in selected},
            out,
            jobs=jobs,
            progress=progress,
            on_done=on_done,
            formats=formats,
            seed_kwargs={name: {"record": records[name]} for name in selected},
        )
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
    plan: dict[str, list[int]] = {}
    for name in selected:
        try:
            plan[name] = saved_seeds(out, name)
        except (ValueError, OSError):  # no readable record: the task says why
            plan[name] = [0]
    results: dict[str, ExperimentResult] = {}
    _execute(
        plan,
        out,
        jobs=jobs,
        progress=progress,
        on_done=lambda name, result: results.__setitem__(name, result),
        formats=formats,
        seed_kwargs={name: {"replot": True, "seeds": plan[name]} for name in selected},
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
