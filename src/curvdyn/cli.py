"""The ``curvdyn`` command line: ``curvdyn reproduce``, ``curvdyn simulate`` and ``curvdyn sweep``.

Run ``curvdyn --help``, ``curvdyn reproduce --help``, ``curvdyn simulate --help`` or ``curvdyn sweep --help``.
Exit status: 0 on success; 1 when an experiment raised, when ``--check`` finds a failed
claim or a directory that is not one complete run, when a simulation diverged or failed, or
when a file cannot be written; 2 for invalid options (one line on stderr, never a traceback),
an output directory another run holds, or a re-plot over figures from different runs;
130 after Ctrl-C (143 after SIGTERM), with the output directory marked interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import shlex
import signal
import sys
import tempfile
import textwrap
import threading
from collections.abc import Sequence
from pathlib import Path

from curvdyn._names import METHODS, RULE_NAMES, SOLVER_NAMES
from curvdyn._version import __version__

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A user error found after parsing (printed as one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (no usage block), exit status 2."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(str(message).split())} (see {self.prog} --help)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keep the descriptions' line breaks; show each meaningful default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            action.default is not None
            and action.default is not False
            and action.default is not argparse.SUPPRESS
            and "default" not in text.lower()
            and action.option_strings
        ):
            text += " (default: %(default)s)"
        return text


def _v():
    from curvdyn import _validate

    return _validate


def _parsed(text: str, parse, kind: str):
    try:
        return parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None


def _checked(check, value, *args):
    """``check(value, "value", *args)`` of :mod:`curvdyn._validate`, its error as argparse's."""
    try:
        return check(value, "value", *args)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# The argument types parse the text and check the number with curvdyn._validate (the checks
# every library function uses), so the command line accepts what the library accepts. It is
# imported when an argument is converted, not for --help (it imports NumPy).
def _positive_int(text: str) -> int:
    return _checked(_v().check_count, _parsed(text, int, "an integer"), 1)


def _nonneg_int(text: str) -> int:
    return _checked(_v().check_count, _parsed(text, int, "an integer"), 0)


def _positive_float(text: str) -> float:
    return _checked(_v().check_positive, _parsed(text, float, "a number"))


def _nonneg_float(text: str) -> float:
    return _checked(_v().check_nonneg, _parsed(text, float, "a number"))


def _q_value(text: str) -> float:
    value = _parsed(text, float, "a number >= 1 or 'inf'")
    try:
        return _v().check_q(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _seeds(text: str) -> list[int]:
    """``--seeds``: ``N`` (the seeds 0, ..., N−1) or a comma-separated list of seeds (``3,7,11``)."""
    items = [t.strip() for t in text.split(",")]
    if len(items) == 1:
        n = _checked(_v().check_count, _parsed(items[0], int, "a number of seeds N or a list like 3,7,11"), 1)
        return list(range(n))
    if any(not t for t in items):
        raise argparse.ArgumentTypeError(f"expected seeds separated by single commas, got {text!r}")
    seeds = [_checked(_v().check_count, _parsed(t, int, "integer seeds"), 0) for t in items]
    from curvdyn.reproduce import check_seeds

    try:
        return check_seeds(seeds)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _n_save(text: str) -> int:  # the first and the last time at least
    return _checked(_v().check_count, _parsed(text, int, "an integer"), 2)


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"widths must be comma-separated integers like 16,16,16,16,16, got {text!r}"
        ) from None
    try:
        return _v().check_widths(widths)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _formats(text: str) -> list[str]:
    from curvdyn.reproduce import FORMATS, check_formats

    try:
        return list(check_formats(text.split(",")))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (e.g. --format png,pdf; any of {', '.join(FORMATS)})") from None


# ---------------------------------------------------------------------------------------
# the parser
# ---------------------------------------------------------------------------------------


def _default_seeds_text() -> str:
    from curvdyn.reproduce import DEFAULT_SEEDS

    return ", ".join(map(str, DEFAULT_SEEDS))


def build_parser() -> argparse.ArgumentParser:
    from curvdyn import experiments

    parser = _Parser(
        prog="curvdyn",
        formatter_class=_Formatter,
        description=textwrap.dedent(
            """\
            Exact learning dynamics of deep linear networks under curvature-corrected learning
            rules (SGD, NGD, fractional NGD such as sqrt-NGD, damped NGD, and the block-diagonal
            versions NGD-d, sqrt-NGD-d), after the paper "Curvature-corrected learning dynamics
            in deep linear neural networks".

            commands:
              reproduce   reproduce the paper's figures, check its claims, run the relu and
                          digits studies (report.md/.html)
              simulate    run one simulation and write its trajectory and a loss/map plot
              sweep       run a grid of simulations (rules, depths, widths, scales, tasks,
                          seeds) from a TOML file into one table (resumable)
            """
        ),
        epilog="Run 'curvdyn COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"curvdyn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    names = experiments.names()
    rep = sub.add_parser(
        "reproduce",
        formatter_class=_Formatter,
        help="reproduce the paper's figures and check its claims",
        description=textwrap.dedent(
            f"""\
            Reproduce the paper's figures and check its claims with measured numbers, and run
            the two studies beyond it: 'relu' (does a ReLU network conserve the per-unit
            rescaling quantity under SGD, NGD, sqrt-NGD and their block versions?) and
            'digits' (SGD, Adam, K-FAC and sqrt-K-FAC from small weights on sklearn's digits).

            Every experiment runs once per seed (seeds {_default_seeds_text()} by default; --seeds N for the
            seeds 0..N-1, --seeds 3,7,11 for those, --seed S for one) and every claim is
            measured on each seed's own data. For each figure FIG this writes, under OUT/FIG/:
              FIG.png (and FIG.pdf/.svg with --format)   the figure of the first seed
              FIG-seeds.png                              the spread over the seeds (fig3, relu,
                                                         digits; with several seeds)
              data.npz                                   the first seed's raw data (NumPy arrays)
                                                         and the run record
              config.json                                its exact configuration, the run record
                                                         and the wall time
              seed-S/data.npz, seed-S/config.json        the same for every further seed S
              claims.json                                the claims measured on every seed and
                                                         their statistics over the seeds
            and OUT/report.md, OUT/report.html (self-contained, figures embedded) and
            OUT/report.json: the figures and the claims table. Over several seeds each claim
            shows on how many seeds it passes (k/N), the median and 5-95 % range of the measured
            value, the failing seeds and its verdict: REPRODUCED (passes on every seed, or on
            the fraction the claim itself states with its reason), SEED-DEPENDENT (passes on
            some seeds only), DISAGREES (a documented, known deviation from the paper) or FAIL
            (passes on none). With one seed the table gives the measured number, the threshold
            and PASS/FAIL/DISAGREES. --check fails on FAIL and SEED-DEPENDENT.

            The run record (run id, seeds, resolution, versions of curvdyn, jax, jaxlib,
            diffrax, optax, numpy, scipy, matplotlib, JAX's PRNG and x64 settings) is in every
            file. OUT/manifest.json says whether OUT is one complete run: 'in-progress' while
            a run works (or after it was killed), 'complete', 'interrupted' (Ctrl-C) or
            'failed'. Every file is written whole or not at all; only one run writes into
            OUT at a time (OUT/curvdyn.lock names it).

            The figures and claims are computed from the saved data files only, so
            'curvdyn reproduce --replot --out OUT' re-draws and re-checks saved data of every
            seed; it refuses figures (or seeds) made by different runs unless --allow-mixed.

            Available figures, in order: {", ".join(names)}.
            """
        ),
        epilog=textwrap.dedent(
            """\
            examples:
              curvdyn reproduce                         # everything, default resolution and seeds
              curvdyn reproduce fig3 --quick            # one figure, lower resolution
              curvdyn reproduce --quick --seeds 20      # every claim over seeds 0..19
              curvdyn reproduce --quick --seed 0 --check  # CI: one seed, non-zero exit if a claim fails
              curvdyn reproduce --format png,pdf --out paper-figures
            """
        ),
    )
    rep.add_argument(
        "figures",
        nargs="*",
        metavar="FIG",
        help=f"figures to reproduce (default: all). Choose from: {', '.join(names)}",
    )
    rep.add_argument("--out", metavar="DIR", default="results", help="output directory (created if missing)")
    rep.add_argument(
        "--quick",
        action="store_true",
        help="lower resolution (fewer recorded times, looser tolerances, cheaper integrators): the "
        "same claims checked in a few minutes per seed on 2 cores",
    )
    rep.add_argument(
        "--seeds",
        type=_seeds,
        default=None,
        metavar="N|S,S,...",
        help=f"run every experiment on each of these seeds and report every claim over them: N means the "
        f"seeds 0..N-1, a comma-separated list names them (default: {_default_seeds_text()})",
    )
    rep.add_argument(
        "--seed",
        type=_nonneg_int,
        default=None,
        metavar="S",
        help="run every experiment on this one seed only (the one-seed report: PASS/FAIL per claim)",
    )
    rep.add_argument(
        "--format",
        dest="formats",
        type=_formats,
        default="png",
        metavar="FMT[,FMT]",
        help="image formats, comma-separated, from png, pdf, svg (PNG is always written: the report embeds it)",
    )
    rep.add_argument(
        "--check",
        action="store_true",
        help="exit with status 1 if any claim fails or OUT is not one complete run (for CI); documented deviations "
        "from the paper (DISAGREES) do not count",
    )
    rep.add_argument(
        "--replot",
        action="store_true",
        help="do not compute: re-draw the figures, re-measure the claims and rewrite the report "
        "from the data already saved in OUT (with their own seed and resolution)",
    )
    rep.add_argument(
        "--allow-mixed",
        action="store_true",
        help="with --replot: report figures made by different runs, each labelled with its run id and seed "
        "(refused otherwise)",
    )
    rep.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="run up to N experiments at once, each in its own process (default: the number of CPU "
        "cores, at most 2; 1 runs everything in this process)",
    )
    rep.add_argument("--list", action="store_true", help="list the available figures and exit")
    rep.add_argument("--no-progress", action="store_true", help="do not show progress bars")

    sim = sub.add_parser(
        "simulate",
        formatter_class=_Formatter,
        help="run one simulation and write its trajectory and a loss/map plot",
        description=textwrap.dedent(
            """\
            Run one simulation of a deep linear network learning a task under one rule, and
            write OUT/trajectory.npz (times, weights, loss, map, conserved quantities, update
            norm, the configuration and the run record as JSON metadata; read it with
            curvdyn.Trajectory.load) and OUT/trajectory.png (loss, the map's singular values
            against the target's, and the update norm over time).

            The network has widths n_0,...,n_d (--widths, or --depth with --width). The task's
            target W* (n_d x n_0, input covariance I) is chosen by --task:
              random            Gaussian entries N(0, 1/n_0), times --target-scale
              identity          the identity map (n_0 = n_d), times --target-scale
              student-teacher   the least-squares map of noisy samples of a low-rank teacher
                                (--rank, --snr, P = n_0 samples), as in the paper's section 4
            """
        ),
        epilog=textwrap.dedent(
            """\
            examples:
              curvdyn simulate --depth 4 --width 16 --rule sqrt-ngd --init-scale 0.05 --t-end 20
              curvdyn simulate --widths 3,4,4,3 --rule frac-ngd --q 3 --t-end 10
              curvdyn simulate --rule ngd --integrator euler --dt 0.05 --clip 0.1 --lm-damping 1e-5
            """
        ),
    )
    net = sim.add_argument_group("network")
    net.add_argument(
        "--widths", type=_widths, metavar="N0,N1,...,Nd", help="layer widths n_0,...,n_d (overrides --depth/--width)"
    )
    net.add_argument("--depth", type=_positive_int, default=3, metavar="D", help="number of layers d (with --width)")
    net.add_argument("--width", type=_positive_int, default=4, metavar="N", help="width of every layer (with --depth)")
    net.add_argument(
        "--init",
        choices=("random", "xavier", "balanced"),
        default="random",
        help="initial weights: 'random' = Gaussian layers rescaled to largest singular value "
        "--init-scale; 'xavier' = Xavier normal times --init-scale; 'balanced' = balanced "
        "layers with all singular values --init-scale",
    )
    net.add_argument("--init-scale", type=_positive_float, default=0.1, metavar="S", help="initial weight scale")
    tsk = sim.add_argument_group("task")
    tsk.add_argument(
        "--task", choices=("random", "identity", "student-teacher"), default="random", help="the target map"
    )
    tsk.add_argument(
        "--target-scale",
        type=_positive_float,
        default=1.0,
        metavar="S",
        help="scale of the target (random/identity tasks)",
    )
    tsk.add_argument("--rank", type=_positive_int, default=3, metavar="R", help="teacher rank (student-teacher)")
    tsk.add_argument(
        "--snr",
        type=_positive_float,
        default=10.0,
        metavar="SNR",
        help="teacher mode strength over noise std (student-teacher)",
    )
    rl = sim.add_argument_group("rule")
    rl.add_argument(
        "--rule",
        choices=RULE_NAMES,
        default="sqrt-ngd",
        help="learning rule (frac-ngd/frac-ngd-d need --q, damped-ngd needs --eps)",
    )
    rl.add_argument(
        "--q", type=_q_value, metavar="Q", help="correction order q >= 1 of frac-ngd/frac-ngd-d ('inf' = SGD)"
    )
    rl.add_argument("--eps", type=_nonneg_float, metavar="EPS", help="damping eps >= 0 of damped-ngd (eq. 17)")
    rl.add_argument(
        "--lm-damping",
        type=_nonneg_float,
        default=0.0,
        metavar="LAMBDA",
        help="Levenberg-Marquardt shift of the (block) curvature, for the NGD-family rules",
    )
    rl.add_argument("--eta", type=_positive_float, default=1.0, metavar="ETA", help="learning rate eta")
    num = sim.add_argument_group("numerics")
    num.add_argument("--t-end", type=_positive_float, default=20.0, metavar="T", help="final time (in units of 1/eta)")
    num.add_argument(
        "--integrator",
        choices=("ode", "euler"),
        default="ode",
        help="'ode' = adaptive continuous time; 'euler' = discrete steps of size --dt",
    )
    num.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="how the curvature directions are computed (default: the fastest exact method)",
    )
    num.add_argument("--n-save", type=_n_save, default=201, metavar="K", help="number of recorded times (>= 2)")
    num.add_argument(
        "--log-time",
        action="store_true",
        help="record at log-spaced times (from t_end*1e-4) instead of equally spaced ones (ode only)",
    )
    num.add_argument("--rtol", type=_positive_float, default=1e-8, help="relative tolerance (ode)")
    num.add_argument("--atol", type=_positive_float, default=1e-10, help="absolute tolerance (ode)")
    num.add_argument(
        "--solver",
        choices=SOLVER_NAMES,
        default="tsit5",
        help="ODE solver (ode; rkc: Runge–Kutta–Chebyshev for SGD's stiff flow)",
    )
    num.add_argument("--dt", type=_positive_float, default=0.01, metavar="DT", help="step size (euler)")
    num.add_argument(
        "--clip", type=_positive_float, metavar="C", help="cap on each step's parameter-update norm (euler)"
    )
    sim.add_argument("--seed", type=_nonneg_int, default=0, metavar="N", help="random seed (initial weights and task)")
    sim.add_argument("--out", metavar="DIR", default="results/simulation", help="output directory (created if missing)")
    sim.add_argument("--no-plot", action="store_true", help="write the trajectory only")

    swp = sub.add_parser(
        "sweep",
        formatter_class=_Formatter,
        help="run a grid of simulations from a TOML file into one table (resumable)",
        description=textwrap.dedent(
            """\
            Run every cell of a grid - rules x depths x widths x initial scales x tasks x seeds -
            defined in a TOML file whose keys are the fields of curvdyn.sweep.Sweep, e.g.

              rules = ["sgd", "sqrt-ngd", {name = "frac-ngd", q = 3}]
              depths = [2, 4]
              widths = [8]
              init_scales = [0.01, 0.05, 0.2]
              tasks = [{kind = "student-teacher", rank = 3, snr = 10}]
              seeds = [0, 1, 2, 3]
              t_end = 50.0
              integrator = {kind = "ode", rtol = 1e-7}

            and write OUT/table.parquet: one row per cell with its coordinates and measurements
            (status, initial and final loss, time to reach loss_fraction of the initial loss,
            largest update norm, drift of the conserved quantity, solver steps, wall time).
            Cells of one rule and shape run as one batched program, split over the local
            devices. Every finished cell is written at once (OUT/cells/); re-running the same
            command continues an interrupted sweep without recomputing finished cells; a
            changed definition is refused. OUT/manifest.json and OUT/curvdyn.lock follow
            'curvdyn reproduce'. With --workers or --scheduler the groups of cells run on Dask
            workers (needs dask[distributed]); the definition stays the same.
            """
        ),
        epilog=textwrap.dedent(
            """\
            examples:
              curvdyn sweep grid.toml --out results/grid
              curvdyn sweep grid.toml --out results/grid --workers 2          # a local Dask cluster
              curvdyn sweep grid.toml --out /shared/grid --scheduler tcp://head:8786
            """
        ),
    )
    swp.add_argument("config", metavar="CONFIG", help="the sweep definition, a TOML file")
    swp.add_argument("--out", metavar="DIR", default="results/sweep", help="the sweep directory (created if missing)")
    swp.add_argument(
        "--batch",
        choices=("auto", "vmap", "map"),
        default="auto",
        help="how the cells of one program run: vmap (in lock-step), map (one after the other), auto (measured best)",
    )
    swp.add_argument(
        "--batch-size", type=_positive_int, default=64, metavar="N", help="the most cells one program runs"
    )
    engine = swp.add_mutually_exclusive_group()
    engine.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="run the groups of cells on a local Dask cluster of N processes",
    )
    engine.add_argument(
        "--scheduler", metavar="ADDRESS", help="run the groups of cells on the Dask cluster whose scheduler is ADDRESS"
    )
    swp.add_argument("--save-trajectories", action="store_true", help="also write each cell's trajectory (.npz)")
    swp.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    return parser


# ---------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------


def _output_dir(text: str, *, create: bool) -> Path:
    """``--out`` as a directory this process can write into (created if asked), else :class:`UsageError`."""
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if not out.exists():
        if not create:
            raise UsageError(f"--replot needs saved data, but --out {out} does not exist")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--out {out}: cannot create the directory ({exc.strerror or exc})") from None
    try:  # os.access is not enough: root, read-only mounts, ACLs
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UsageError(f"--out {out} is not writable ({exc.strerror or exc})") from None
    return out


def _cmd_reproduce(args, parser) -> int:
    from curvdyn import experiments, reproduce, rundir

    if args.list:
        for name in experiments.names():
            try:
                title = experiments.get(name).TITLE
            except Exception as exc:  # pragma: no cover - a broken module still lists
                title = f"(cannot import: {exc})"
            print(f"{name:8s} {title}")
        return EXIT_OK
    try:
        names = reproduce.check_names(args.figures)
    except ValueError as exc:
        parser.error(str(exc))
    if args.seed is not None and args.seeds is not None:
        parser.error("--seed (one seed) and --seeds (several) exclude each other; give one of them")
    if args.replot:
        given = [
            opt
            for opt, on in (
                ("--seed", args.seed is not None),
                ("--seeds", args.seeds is not None),
                ("--quick", args.quick),
            )
            if on
        ]
        if given:
            parser.error(f"--replot uses the saved data's own seeds and resolution; drop {' and '.join(given)}")
        out = _output_dir(args.out, create=False)
        missing = [n for n in names if not (out / n / reproduce.DATA_FILE).is_file()]
        if missing:
            parser.error(f"--replot needs saved data, but {out} has none for: {', '.join(missing)}")
    else:
        if args.allow_mixed:
            parser.error("--allow-mixed applies to --replot only")
        out = _output_dir(args.out, create=True)
    command = "curvdyn " + " ".join(shlex.quote(a) for a in args.argv)
    try:
        run = reproduce.reproduce(
            names,
            out=out,
            quick=None if args.replot else args.quick,
            seed=args.seed,
            seeds=args.seeds,
            formats=args.formats,
            progress=not args.no_progress,
            replot=args.replot,
            command=command.strip(),
            jobs=args.jobs if args.jobs is not None else reproduce.default_jobs(),
            allow_mixed=args.allow_mixed,
        )
    except (rundir.DirectoryBusy, reproduce.MixedRuns) as exc:
        parser.error(str(exc))
    _print_summary(run)
    if any(r.error is not None for r in run.results):
        return EXIT_FAIL
    if args.check and not run.ok:
        if not run.complete:
            _error_line(f"{parser.prog}: --check: {out} is not one complete run: {run.problems[0]}")
        return EXIT_FAIL
    return EXIT_OK


def _error_line(text: str) -> None:
    print(" ".join(str(text).split()), file=sys.stderr, flush=True)


def _print_summary(run) -> None:
    from curvdyn import io
    from curvdyn.report import (
        SEED_INDEPENDENT,
        format_measured,
        passes_text,
        result_line,
        seed_list,
        several_seeds,
        spread,
        summary_counts,
    )

    several = several_seeds(run)
    width = max([len(c.key) for c in run.stats] + [10])
    for r in run.results:
        label = f" [run {r.record['run_id']}, seed {io.seeds_text(r.record)}]" if run.replot and r.record else ""
        if not r.seed_dependent:
            label += f" [{SEED_INDEPENDENT}]"
        print(f"{r.name}: {r.title}{label}")
        if r.error is not None:
            print(f"  ERROR: {r.error.strip().splitlines()[-1]}")
        for c in r.stats:
            if several:
                failing = f"  failing seeds {seed_list(c.failing_seeds)}" if c.failing_seeds else ""
                print(
                    f"  {c.verdict:<14}  {c.key:<{width}}  {passes_text(c):>5}  median {format_measured(c.median):>10}"
                    f"  5-95% {spread(c)}  ({c.threshold}){failing}"
                )
            else:
                print(f"  {c.verdict:<9}  {c.key:<{width}}  {format_measured(c.measured[0]):>10}  ({c.threshold})")
    seeds = f"over {len(run.seeds)} seeds ({seed_list(run.seeds)}): " if several else ""
    print(f"{seeds}{result_line(summary_counts(run), several=several)}; wall time {run.wall_time_s:.1f} s; report: "
          f"{run.out / 'report.html'}")  # fmt: skip
    for problem in run.problems:
        print(f"NOT ONE COMPLETE RUN: {problem}")


def _simulation_task(args, n_in: int, n_out: int):
    import jax
    import numpy as np

    from curvdyn.task import Task, student_teacher

    key = jax.random.fold_in(jax.random.PRNGKey(args.seed), 1)
    if args.task == "random":
        target = np.asarray(jax.random.normal(key, (n_out, n_in))) * (args.target_scale / math.sqrt(n_in))
        return Task(target)
    if args.task == "identity":
        if n_in != n_out:
            raise ValueError(f"--task identity needs n_0 = n_d, got widths with n_0 = {n_in}, n_d = {n_out}")
        return Task(np.eye(n_in) * args.target_scale)
    if args.rank > min(n_in, n_out):
        raise ValueError(f"--rank {args.rank} exceeds min(n_0, n_d) = {min(n_in, n_out)}")
    return student_teacher(key, n_in, n_out, rank=args.rank, snr=args.snr).train_task


def _simulation_rule(args):
    from curvdyn.rules import get_rule

    params = {}
    if args.rule in ("frac-ngd", "frac-ngd-d"):
        if args.q is None:
            raise ValueError(f"--rule {args.rule} needs --q (q >= 1)")
        params["q"] = args.q
    elif args.q is not None:
        raise ValueError(f"--q applies to frac-ngd and frac-ngd-d only, not to --rule {args.rule}")
    if args.rule == "damped-ngd":
        if args.eps is None:
            raise ValueError("--rule damped-ngd needs --eps (eps >= 0)")
        params["eps"] = args.eps
    elif args.eps is not None:
        raise ValueError(f"--eps applies to damped-ngd only, not to --rule {args.rule}")
    if args.lm_damping:
        if args.rule in ("sgd", "damped-ngd"):
            raise ValueError(f"--lm-damping does not apply to --rule {args.rule}")
        params["lm_damping"] = args.lm_damping
    return get_rule(args.rule, **params)


def _cmd_simulate(args, parser) -> int:
    import warnings

    import jax
    import numpy as np

    from curvdyn import io
    from curvdyn.experiments.common import log_times
    from curvdyn.init import init_balanced, init_random, init_xavier
    from curvdyn.integrators import ODE, Euler
    from curvdyn.network import loss
    from curvdyn.simulate import simulate

    widths = args.widths if args.widths else (args.width,) * (args.depth + 1)
    if args.integrator == "euler" and args.log_time:
        parser.error("--log-time applies to --integrator ode only")
    if args.integrator == "ode" and args.clip is not None:
        parser.error("--clip applies to --integrator euler only")
    if args.integrator == "euler" and args.t_end / args.dt > 5e7:
        parser.error(f"--t-end / --dt = {args.t_end / args.dt:.3g} Euler steps is too many (max 5e7)")
    out = _output_dir(args.out, create=True)
    try:
        rule = _simulation_rule(args)
        task = _simulation_task(args, widths[0], widths[-1])
        key = jax.random.PRNGKey(args.seed)
        init = {"random": init_random, "xavier": init_xavier, "balanced": init_balanced}[args.init]
        ws = init(key, widths, args.init_scale)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow is reported below
        finite = all(bool(np.all(np.isfinite(np.asarray(w)))) for w in ws) and bool(np.isfinite(float(loss(ws, task))))
    if not finite:
        parser.error(
            f"the initial weights or loss are not finite (float overflow): --init-scale {args.init_scale:g} "
            f"with {len(widths) - 1} layers and --target-scale {args.target_scale:g} is too large"
        )
    kwargs: dict = dict(eta=args.eta, method=args.method, seed=args.seed)
    if args.integrator == "ode":
        kwargs["integrator"] = ODE(rtol=args.rtol, atol=args.atol, solver=args.solver, progress=True)
        if args.log_time:
            kwargs["save_at"] = log_times(args.t_end, args.n_save, args.t_end * 1e-4)
        else:
            kwargs["n_save"] = args.n_save
    else:
        kwargs.update(integrator=Euler(dt=args.dt, clip=args.clip), n_save=args.n_save)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the status below says it
            traj = simulate(ws, task, rule, args.t_end, **kwargs)
    except ValueError as exc:  # simulate validates its options before it computes anything
        parser.error(str(exc))
    traj.config["cli"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items() if k != "argv"}
    written = [traj.save(out / "trajectory.npz")]
    if not args.no_plot:
        fig = plot_trajectory(traj, task, title=f"{rule.label}, widths {'-'.join(map(str, widths))}")
        io.save_figure(fig, out / "trajectory.png", format="png", dpi=130, bbox_inches="tight")
        written.append(out / "trajectory.png")
    loss0, loss1 = float(traj.loss[0]), float(traj.loss[-1])
    print(f"{rule.label} on widths {'-'.join(map(str, widths))}, {args.integrator}: {traj.status} — {traj.message}")
    print(f"loss {loss0:.6g} -> {loss1:.6g} at t = {float(traj.t[-1]):.6g}")
    print("wrote " + ", ".join(str(p) for p in written))
    if traj.status in ("diverged", "failed", "max_steps"):
        _error_line(f"{parser.prog}: {traj.status}: {traj.message} (recorded part saved in {written[0]})")
        return EXIT_FAIL
    return EXIT_OK


def _cmd_sweep(args, parser) -> int:
    from curvdyn import rundir
    from curvdyn.sweep import TABLE_FILE, Sweep, SweepMismatch, dask_executor, run

    config = Path(args.config)
    if not config.is_file():
        parser.error(f"no sweep definition {config}")
    try:
        definition = Sweep.from_toml(config)
    except (ValueError, TypeError) as exc:
        parser.error(f"{config}: {exc}")
    out = _output_dir(args.out, create=True)
    command = "curvdyn " + " ".join(shlex.quote(a) for a in args.argv)
    with contextlib.ExitStack() as stack:
        executor = None
        if args.workers or args.scheduler:
            try:
                executor = stack.enter_context(dask_executor(workers=args.workers, scheduler=args.scheduler))
            except (ImportError, OSError) as exc:
                parser.error(str(exc))
        try:
            table = run(
                definition,
                out=out,
                executor=executor,
                batch=args.batch,
                batch_size=args.batch_size,
                progress=not args.no_progress,
                save_trajectories=args.save_trajectories,
                command=command,
            )
        except (rundir.DirectoryBusy, SweepMismatch) as exc:
            parser.error(str(exc))
    shown = table.drop(columns=["cell", "wall_time_s", "batch_size"])
    print(shown.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    counts = table["status"].value_counts()
    print(
        f"{len(table)} cells ({table.attrs['computed_cells']} computed now, the rest read back); "
        + ", ".join(f"{n} {status}" for status, n in counts.items())
        + f"; wrote {out / TABLE_FILE}"
    )
    return EXIT_OK


def plot_trajectory(traj, task, *, title: str = ""):
    """A loss / map / update-norm figure of one :class:`~curvdyn.simulate.Trajectory`.

    A :class:`matplotlib.figure.Figure` drawn without pyplot: no backend is selected and no
    pyplot state is created (save it with ``fig.savefig``).
    """
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure

    t = np.asarray(traj.t)
    fig = Figure(figsize=(14, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    ax = axes[0]
    loss = np.asarray(traj.loss)
    ax.plot(t, np.where(loss > 0, loss, np.nan), color="k")
    ax.set_yscale("log")
    ax.set_xlabel("time t")
    ax.set_ylabel("loss $L = \\frac{1}{2}\\mathrm{tr}(\\Delta\\Sigma\\Delta^T)$")
    ax.set_title("loss")
    ax = axes[1]
    svals = np.linalg.svd(np.asarray(traj.map), compute_uv=False)
    target = np.linalg.svd(np.asarray(task.target), compute_uv=False)
    colors = matplotlib.colormaps["viridis"](np.linspace(0, 0.9, svals.shape[1]))
    for k in range(svals.shape[1]):
        ax.plot(t, svals[:, k], color=colors[k], lw=1.4, label=f"$\\bar\\sigma_{{{k + 1}}}$" if k < 8 else None)
        ax.axhline(target[k], color=colors[k], ls="--", lw=0.8)
    ax.set_xlabel("time t")
    ax.set_ylabel("singular values of the map W")
    ax.set_title("map (dashed: target W*)")
    if svals.shape[1] <= 8:
        ax.legend(fontsize=8, frameon=False)
    ax = axes[2]
    un = np.asarray(traj.update_norm)
    ax.plot(t, np.where(un > 0, un, np.nan), color="tab:red")
    ax.set_yscale("log")
    ax.set_xlabel("time t")
    ax.set_ylabel("update norm $\\|\\dot w\\|$")
    ax.set_title("parameter update speed")
    if np.all(t[1:] > 0) and t[-1] / max(t[1], 1e-300) > 1e3:
        for ax in axes:
            ax.set_xscale("log")
    for ax in axes:
        ax.grid(alpha=0.25)
    if title:
        fig.suptitle(title)
    return fig


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """While the command runs, SIGTERM stops it as Ctrl-C does (clean-up, directory marked
    interrupted), with exit status 143. Only in the main thread; the old handler is restored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from curvdyn.reproduce import Interrupted

    def handler(signum, frame):
        raise Interrupted("terminated", signum=signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _enable_float64() -> None:
    """The command line computes in float64: it switches JAX's 64-bit mode on when a command runs
    (a program of its own; importing curvdyn never does)."""
    import jax

    jax.config.update("jax_enable_x64", True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``curvdyn`` command; returns the exit status.

    User errors end as one line on stderr with status 2; Ctrl-C as one line with status 130.
    """
    prog = "curvdyn"
    try:
        with _sigterm_as_interrupt():
            parser = build_parser()
            argv = list(sys.argv[1:] if argv is None else argv)
            args = parser.parse_args(argv)
            args.argv = argv
            if args.command is None:
                parser.print_help()
                return EXIT_USAGE
            _enable_float64()
            commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            sub = commands.choices[args.command]  # for error messages
            prog = sub.prog
            run = {"reproduce": _cmd_reproduce, "simulate": _cmd_simulate, "sweep": _cmd_sweep}[args.command]
            return run(args, sub)
    except UsageError as exc:
        _error_line(f"{prog}: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        _error_line(f"{prog}: {str(exc) or 'interrupted'}")
        return 128 + int(getattr(exc, "signum", signal.SIGINT))
    except OSError as exc:  # a file that cannot be written (disk full, permissions changed meanwhile)
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        _error_line(f"{prog}: error: {where}{exc.strerror or exc}")
        return EXIT_FAIL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
