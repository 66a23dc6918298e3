"""The command line: help texts, `curvdyn simulate`, and clear errors for bad options."""

import argparse
import shutil
import subprocess
import sys

import numpy as np
import pytest

import curvdyn as cd
from curvdyn import experiments
from curvdyn.cli import build_parser, main


def _run(capsys, argv):
    """Run ``curvdyn argv`` in-process; return (exit status, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's --help and usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


# ---------------------------------------------------------------------------------------
# help
# ---------------------------------------------------------------------------------------


def test_top_level_help_names_both_commands(capsys):
    code, out, _ = _run(capsys, ["--help"])
    assert code == 0
    assert "reproduce" in out and "simulate" in out
    assert "curvdyn COMMAND --help" in out


def test_no_command_prints_help_and_fails(capsys):
    code, out, _ = _run(capsys, [])
    assert code == 2
    assert "reproduce" in out


def test_version(capsys):
    code, out, _ = _run(capsys, ["--version"])
    assert code == 0
    assert cd.__version__ in out


@pytest.mark.parametrize("command", ["reproduce", "simulate"])
def test_every_option_is_explained(command, capsys):
    sub = _subparsers(build_parser())[command]
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help and len(action.help) > 10, (
            f"{command}: option {action.option_strings or action.dest} has no help"
        )
    code, out, _ = _run(capsys, [command, "--help"])
    assert code == 0
    for action in sub._actions:
        for opt in action.option_strings:
            assert opt in out, f"{opt} missing from 'curvdyn {command} --help'"


def test_reproduce_help_lists_figures_and_outputs(capsys):
    code, out, _ = _run(capsys, ["reproduce", "--help"])
    assert code == 0
    for name in experiments.names():
        assert name in out
    for word in ("data.npz", "config.json", "claims.json", "report.md", "report.html", "--check", "--quick"):
        assert word in out


def test_console_script_is_installed():
    exe = shutil.which("curvdyn")
    if exe is None:
        pytest.skip("the curvdyn console script is not on PATH (package not installed)")
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    assert "reproduce" in res.stdout


def test_module_entry_point_runs():
    res = subprocess.run(
        [sys.executable, "-m", "curvdyn.cli", "reproduce", "--list"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    for name in experiments.names():
        assert name in res.stdout


# ---------------------------------------------------------------------------------------
# simulate
# ---------------------------------------------------------------------------------------


def test_simulate_writes_trajectory_and_plot(tmp_path, capsys):
    out = tmp_path / "sim"
    code, stdout, _ = _run(
        capsys,
        [
            "simulate",
            "--widths",
            "3,4,3",
            "--rule",
            "sqrt-ngd",
            "--init-scale",
            "0.2",
            "--t-end",
            "3",
            "--n-save",
            "11",
            "--seed",
            "1",
            "--out",
            str(out),
        ],
    )
    assert code == 0, stdout
    assert (out / "trajectory.npz").is_file()
    png = out / "trajectory.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    traj = cd.Trajectory.load(out / "trajectory.npz")
    assert traj.status == "completed"
    assert len(traj.t) == 11 and traj.t[-1] == pytest.approx(3.0)
    assert traj.loss[-1] < 0.5 * traj.loss[0]
    assert traj.config["rule"]["name"] == "sqrt-ngd"
    assert traj.config["cli"]["widths"] == [3, 4, 3]
    assert "completed" in stdout and "trajectory.npz" in stdout


def test_simulate_euler_with_clip_and_depth_width(tmp_path, capsys):
    out = tmp_path / "euler"
    code, stdout, _ = _run(
        capsys,
        [
            "simulate",
            "--depth",
            "2",
            "--width",
            "3",
            "--rule",
            "ngd",
            "--lm-damping",
            "1e-5",
            "--integrator",
            "euler",
            "--dt",
            "0.1",
            "--clip",
            "0.5",
            "--t-end",
            "2",
            "--n-save",
            "5",
            "--no-plot",
            "--out",
            str(out),
        ],
    )
    assert code == 0, stdout
    traj = cd.Trajectory.load(out / "trajectory.npz")
    assert traj.config["integrator"]["kind"] == "euler" and traj.config["integrator"]["clip"] == 0.5
    assert traj.config["rule"]["lm_damping"] == 1e-5
    assert not (out / "trajectory.png").exists()
    assert np.all(np.isfinite(traj.loss))


def test_simulate_frac_rule_and_student_teacher(tmp_path, capsys):
    out = tmp_path / "st"
    code, stdout, _ = _run(
        capsys,
        [
            "simulate",
            "--widths",
            "4,4,4",
            "--rule",
            "frac-ngd",
            "--q",
            "3",
            "--task",
            "student-teacher",
            "--rank",
            "2",
            "--t-end",
            "1",
            "--n-save",
            "3",
            "--log-time",
            "--no-plot",
            "--out",
            str(out),
        ],
    )
    assert code == 0, stdout
    traj = cd.Trajectory.load(out / "trajectory.npz")
    assert traj.config["rule"]["q"] == 3.0
    assert traj.t[1] == pytest.approx(1e-4)


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------


def test_seeds_option_parses_a_count_or_a_list(capsys):
    from curvdyn.cli import build_parser
    from curvdyn.reproduce import DEFAULT_SEEDS

    parser = build_parser()
    assert parser.parse_args(["reproduce", "--seeds", "3"]).seeds == [0, 1, 2]
    assert parser.parse_args(["reproduce", "--seeds", "3,7,11"]).seeds == [3, 7, 11]
    assert parser.parse_args(["reproduce", "--seeds", " 4 , 2 "]).seeds == [4, 2]
    args = parser.parse_args(["reproduce"])
    assert args.seeds is None and args.seed is None
    with pytest.raises(SystemExit):
        parser.parse_args(["reproduce", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {', '.join(map(str, DEFAULT_SEEDS))})" in text and "N means the seeds 0..N-1" in text


@pytest.mark.parametrize(
    "argv,message",
    [
        (["simulate", "--rule", "adam"], "invalid choice: 'adam'"),
        (["simulate", "--widths", "3,x,3"], "widths must be comma-separated integers"),
        (["simulate", "--widths", "3"], "at least two"),
        (["simulate", "--widths", "3,0,3"], "every width must be a positive integer, got n_1 = 0"),
        (["simulate", "--depth", "two"], "expected an integer, got 'two'"),
        (["simulate", "--eta", "0"], "value must be > 0, got 0.0"),
        (["simulate", "--depth", "0"], "argument --depth: value must be an integer >= 1, got 0"),
        (["simulate", "--t-end", "-1"], "argument --t-end: value must be finite and >= 0, got -1.0"),
        (["simulate", "--init-scale", "nan"], "value must be finite and >= 0, got nan"),
        (["simulate", "--rule", "frac-ngd"], "needs --q"),
        (["simulate", "--rule", "frac-ngd", "--q", "0.5"], "q must be >= 1"),
        (["simulate", "--rule", "sgd", "--q", "2"], "--q applies to frac-ngd"),
        (["simulate", "--rule", "damped-ngd"], "needs --eps"),
        (["simulate", "--rule", "sgd", "--lm-damping", "1e-3"], "--lm-damping does not apply"),
        (["simulate", "--integrator", "ode", "--clip", "1"], "--clip applies to --integrator euler only"),
        (["simulate", "--method", "magic"], "invalid choice: 'magic'"),
        (["simulate", "--widths", "3,4,2", "--task", "identity"], "needs n_0 = n_d"),
        (["simulate", "--widths", "3,4,3", "--task", "student-teacher", "--rank", "5"], "exceeds min"),
        (["reproduce", "fig99"], "unknown figure(s) fig99; available:"),
        (["reproduce", "--format", "png,gif"], "unknown image format(s) gif"),
        (["reproduce", "--seed", "-3"], "value must be an integer >= 0, got -3"),
        (["reproduce", "--seeds", "0"], "value must be an integer >= 1, got 0"),
        (["reproduce", "--seeds", "a"], "expected a number of seeds N or a list like 3,7,11, got 'a'"),
        (["reproduce", "--seeds", "2,-1"], "value must be an integer >= 0, got -1"),
        (["reproduce", "--seeds", "3,7,3"], "seed 3 given more than once"),
        (["reproduce", "--seeds", "1,,2"], "expected seeds separated by single commas, got '1,,2'"),
        (["reproduce", "--seed", "1", "--seeds", "2"], "--seed (one seed) and --seeds (several) exclude each other"),
        (["bogus"], "invalid choice: 'bogus'"),
    ],
)
def test_bad_options_fail_clearly(argv, message, capsys):
    code, _out, err = _run(capsys, argv)
    assert code == 2
    assert message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def _user_error_cases(tmp):
    afile = tmp / "afile"
    afile.write_text("not a directory")
    sim = ["simulate", "--t-end", "0.1", "--n-save", "3", "--no-plot"]
    return [
        (["reproduce", "--out", str(afile)], "exists and is not a directory"),
        (sim + ["--out", str(afile)], "exists and is not a directory"),
        (["reproduce", "--out", str(afile / "sub")], "cannot create the directory"),
        (sim + ["--out", str(tmp / "x" / "y" / "afile" / "z")], None),  # creatable: not an error
        (sim + ["--out", "/proc/self"], "is not writable"),
        (["simulate", "--n-save", "1", "--out", str(tmp / "s")], "value must be an integer >= 2, got 1"),
        (sim + ["--init-scale", "1e200", "--out", str(tmp / "s")], "not finite (float overflow): --init-scale 1e+200"),
        (sim + ["--target-scale", "1e200", "--out", str(tmp / "s")], "not finite (float overflow)"),
        (["reproduce", "--replot", "--seed", "1", "--out", str(tmp)], "drop --seed"),
        (["reproduce", "--replot", "--seeds", "3", "--out", str(tmp)], "drop --seeds"),
        (["reproduce", "--replot", "--quick", "--out", str(tmp)], "drop --quick"),
        (["reproduce", "--allow-mixed", "--out", str(tmp / "r")], "--allow-mixed applies to --replot only"),
        (
            ["reproduce", "--replot", "--out", str(tmp / "missing")],
            "needs saved data, but --out " + str(tmp / "missing") + " does not exist",
        ),
        (["reproduce", "nosuchfig", "--out", str(tmp / "r")], "unknown figure(s) nosuchfig"),
    ]


def test_every_user_error_is_one_line_and_exit_2(tmp_path, capsys):
    for argv, message in _user_error_cases(tmp_path):
        code, _out, err = _run(capsys, argv)
        if message is None:
            assert code == 0, err
            continue
        assert code == 2, (argv, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)
        assert message in err, (argv, err)


def test_a_diverged_simulation_says_so_and_exits_1(tmp_path, capsys):
    argv = ["simulate", "--rule", "sgd", "--integrator", "euler", "--dt", "5", "--t-end", "200"]
    argv += ["--init-scale", "1", "--target-scale", "3", "--widths", "3,3,3", "--no-plot", "--out", str(tmp_path)]
    code, out, err = _run(capsys, argv)
    assert code == 1 and "diverged" in out
    assert len(err.strip().splitlines()) == 1 and err.startswith("curvdyn simulate: diverged: diverged at t = ")
    traj = cd.Trajectory.load(tmp_path / "trajectory")
    assert traj.status == "diverged" and np.all(np.isfinite(traj.loss))


def test_replot_without_data_fails_clearly(tmp_path, capsys):
    code, _, err = _run(capsys, ["reproduce", "--replot", "--out", str(tmp_path / "empty")])
    assert code == 2
    assert "--replot needs saved data" in err
