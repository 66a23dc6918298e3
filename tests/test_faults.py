"""Fault injection: kills during writes, interrupted and concurrent runs, killed parents, Ctrl-C,
and damaged trajectory files. Each test can fail: the kill test runs a control with in-place
writes that must show corruption, and every other test checks a state the old code got wrong.

The subprocess tests run ``tests/fault_driver.py`` (the real command line on three fast
stand-in experiments) so that no real experiment is computed here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import curvdyn as cd
from curvdyn import experiments, io, report, reproduce, rundir
from curvdyn.cli import main
from curvdyn.simulate import Trajectory

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "fault_driver.py"
WRITER = HERE / "fault_writer.py"
SRC = HERE.parent / "src"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="signals and /proc: Linux")


def _env(**extra) -> dict:
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _pids(pid_dir: Path, n: int, timeout: float = 60) -> dict[str, int]:
    """The pids of ``n`` stand-ins that have entered ``compute`` (each writes its pid file)."""
    files = _wait_for(lambda: (f := sorted(pid_dir.glob("*.pid"))) and len(f) >= n and f, timeout, f"{n} workers")
    return {f.name.removesuffix(".pid"): int(f.read_text()) for f in files}


def _communicate_or_dump_stacks(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """``proc.communicate(timeout)``; past the timeout, fail with the driver's Python stacks
    (``tests/fault_driver.py`` dumps them on SIGUSR1) so that a hang says where it hangs."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGUSR1)
        time.sleep(2)
        proc.kill()
        _, stderr = proc.communicate()
        raise AssertionError(f"no exit {timeout} s after the signal; the driver's threads:\n{stderr[-8000:]}") from None


def _one_seed(args) -> list[str]:
    """One seed per figure unless the test names its seeds: these tests are about files, processes
    and signals (one process per figure), tests/test_seeds.py about several seeds."""
    return list(args) if {"--seed", "--seeds", "--replot"} & set(args) else ["--seed", "0", *args]


def _driver(out: Path, *args, pid_dir: Path | None = None, sleep: str = "", jax: str = "", **popen):
    env = _env(FAULT_SLEEP=sleep, FAULT_PIDS=pid_dir or "", FAULT_JAX=jax)
    cmd = [sys.executable, str(DRIVER), "reproduce", "--no-progress", "--out", str(out), *_one_seed(args)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


@pytest.fixture
def standins(monkeypatch):
    """The driver's stand-in experiments, registered in this process."""
    import fault_driver

    for name in fault_driver.NAMES:
        monkeypatch.setitem(sys.modules, f"curvdyn.experiments.{name}", fault_driver.standin(name))
    monkeypatch.setattr(experiments, "_MODULES", fault_driver.NAMES)
    return fault_driver.NAMES


# ---------------------------------------------------------------------------------------
# atomic files
# ---------------------------------------------------------------------------------------


def _check_snapshot(d: Path) -> list[str]:
    """Every file in a snapshot is one complete version ``k`` (content fully determined by k).

    Returns the problems found (empty: all complete).
    """
    from fault_writer import N_ROWS, version_arrays

    problems = []

    def check(name, fn):
        try:
            fn()
        except Exception as exc:
            problems.append(f"{d.name}/{name}: {type(exc).__name__}: {str(exc)[:120]}")

    def data():
        arrays = reproduce.load_data(d / "data.npz")
        np.testing.assert_array_equal(arrays["x"], version_arrays(int(arrays["k"])))

    def config():
        doc = io.read_json(d / "config.json")
        assert doc["payload"] == version_arrays(doc["k"])[: N_ROWS // 4].tolist()

    def reports():
        # The three report files are written one after another: each on its own is one version.
        doc = io.read_json(d / "report.json")
        record = doc["run"]

        def expected(k: int) -> reproduce.Run:
            return reproduce.Run([], d, ("png",), False, 0.0, "t", f"k={k} " + "x" * 200_000, record=record)

        assert doc == json.loads(io.json_text(report.report_dict(expected(int(doc["command"].split()[0][2:])))))
        for name, render in (("report.md", report.render_markdown), ("report.html", report.render_html)):
            text = (d / name).read_text(encoding="utf-8")
            k = int(re.search(r"k=(\d+) ", text).group(1))
            assert text == render(expected(k)), f"{name} is not a complete version"

    def figure():
        import matplotlib.image

        raw = (d / "figure.png").read_bytes()
        assert raw.endswith(b"IEND\xaeB`\x82"), "PNG without its end chunk"
        assert matplotlib.image.imread(d / "figure.png").shape[2] in (3, 4)

    def trajectory():
        tr = Trajectory.load(d / "trajectory.npz")
        k = int(tr.config["k"])
        np.testing.assert_array_equal(tr.weights[2].ravel(), version_arrays(k)[:45_000] + 2)
        assert tr.t[0] == k and tr.message == f"k={k}"

    def bench():
        doc = io.read_json(d / "bench.json")
        row = doc["rows"][0]
        assert row["payload"] == version_arrays(row["k"])[: N_ROWS // 8].tolist()

    for name, fn in [
        ("data.npz", data),
        ("config.json", config),
        ("report.*", reports),
        ("figure.png", figure),
        ("trajectory.npz", trajectory),
        ("bench.json", bench),
    ]:
        check(name, fn)
    return problems


def test_sigkill_during_writes_leaves_old_or_new_complete_files(tmp_path):
    """SIGKILL at random moments and inside the write of each kind of file: each file is one
    complete version; the same kills with in-place writes (the control) corrupt every kind."""
    from fault_writer import TARGETS

    atomic, control = tmp_path / "atomic", tmp_path / "in-place"
    procs = [
        subprocess.Popen([sys.executable, str(WRITER), str(atomic), "atomic", "6", "1"], env=_env()),
        subprocess.Popen([sys.executable, str(WRITER), str(control), "in-place", "0", "2"], env=_env()),
    ]
    for p in procs:
        assert p.wait(timeout=180) == 0
    rounds = sorted(atomic.glob("round-*"))
    assert len(rounds) == 6 + len(TARGETS)
    problems = [p for d in rounds for p in _check_snapshot(d)]
    assert not problems, problems
    # The control: a kill inside the write of each kind of file is caught by the check of that kind.
    for name in TARGETS:
        caught = _check_snapshot(control / f"round-{name}")
        kind = "report.*" if name.startswith("report.") else name
        assert any(p.startswith(f"round-{name}/{kind}:") for p in caught), (name, caught)


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    target = tmp_path / "f.json"
    io.write_json(target, {"v": 1})
    with pytest.raises(RuntimeError, match="boom"), io.atomic_write(target, "w") as fh:
        fh.write('{"v": 2, "half": ')
        raise RuntimeError("boom")
    assert io.read_json(target) == {"v": 1}
    with pytest.raises(TypeError):
        io.write_json(target, {"v": object()})
    assert io.read_json(target) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"], "a temporary file was left behind"
    with pytest.raises(IsADirectoryError):
        io.write_text(tmp_path, "x")
    # the permissions of a plainly created file, not mkstemp's 0o600
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_remove_leftovers_deletes_only_temporary_files(tmp_path):
    (tmp_path / ".data.npz.abc123.curvdyn-tmp").write_bytes(b"partial")
    (tmp_path / "data.npz").write_bytes(b"keep")
    (tmp_path / ".hidden").write_bytes(b"keep")
    assert [p.name for p in io.remove_leftovers(tmp_path)] == [".data.npz.abc123.curvdyn-tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "data.npz"]


# ---------------------------------------------------------------------------------------
# one run, one record
# ---------------------------------------------------------------------------------------


def test_run_record_names_the_run_and_its_settings():
    import jax

    a = io.run_record(seeds=[4], resolution="quick")
    b = io.run_record(seeds=[4], resolution="quick")
    assert a["run_id"] != b["run_id"]
    assert a["seeds"] == [4] and a["resolution"] == "quick" and a["format"] == io.RECORD_FORMAT
    assert a["versions"]["curvdyn"] == cd.__version__ and a["versions"]["jax"] == jax.__version__
    assert set(a["versions"]) == {"curvdyn", "python", *io.VERSIONED}
    assert a["jax_config"] == {k: getattr(jax.config, k) for k in io.JAX_SETTINGS}
    assert io.run_record(seeds=range(3), resolution=None)["seeds"] == [0, 1, 2]  # several seeds per figure
    for bad in ({"seeds": [-1], "resolution": None}, {"seeds": [0.5], "resolution": None}):
        with pytest.raises(ValueError, match="seeds"):
            io.run_record(**bad)
    with pytest.raises(ValueError, match="resolution"):
        io.run_record(seeds=[0], resolution="fast")


def _reproduce_cli(capsys, *args) -> tuple[int, str, str]:
    try:
        code = main(["reproduce", "--no-progress", "--jobs", "1", *_one_seed(args)])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _interrupt_in(name: str):
    """Make stand-in ``name``'s compute raise KeyboardInterrupt (Ctrl-C in the middle of a run);
    returns the function that undoes it."""
    module = sys.modules[f"curvdyn.experiments.{name}"]
    original = module.compute

    def compute(*args, **kwargs):
        raise KeyboardInterrupt

    module.compute = compute
    return lambda: setattr(module, "compute", original)


def test_interrupted_rerun_with_another_seed_is_flagged_and_not_replotted_as_one_run(standins, tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = _reproduce_cli(capsys, "--out", str(out))
    assert code == 0, err
    run_a = io.read_json(out / "manifest.json")["run"]
    assert run_a["seeds"] == [0]
    # run B, seed 1: Ctrl-C during its second figure
    undo = _interrupt_in("beta")
    code, _, err = _reproduce_cli(capsys, "--seed", "1", "--out", str(out))
    assert code == 130 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "incomplete" in err and "1 of 3 figures" in err
    manifest = io.read_json(out / "manifest.json")
    run_b = manifest["run"]
    assert manifest["status"] == "interrupted" and run_b["seeds"] == [1]
    assert manifest["figures"]["alpha"] == rundir.figure_entry("complete", run_b)
    assert manifest["figures"]["beta"]["status"] == "interrupted"
    assert manifest["figures"]["gamma"]["status"] == "interrupted"
    # the report says so at its top, and does not pass for the old seed-0 run
    md = (out / "report.md").read_text()
    top = md.split("Paper:")[0]
    assert "INTERRUPTED" in top and "beta, gamma were not written by it" in top
    assert "seed: 1." in md and "seed: 0" not in md
    rep = json.loads((out / "report.json").read_text())
    assert rep["status"] == "interrupted" and rep["complete"] is False and rep["not_run"] == ["beta", "gamma"]
    assert [e["name"] for e in rep["experiments"]] == ["alpha"]
    assert reproduce.load_record(out / "alpha" / "data.npz")["run_id"] == run_b["run_id"]
    assert reproduce.load_record(out / "gamma" / "data.npz")["run_id"] == run_a["run_id"]
    # --replot refuses the mixed directory, naming the figures and their seeds
    undo()
    code, _, err = _reproduce_cli(capsys, "--replot", "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"run {run_b['run_id']} (seed 1, default): alpha" in err
    assert f"run {run_a['run_id']} (seed 0, default): beta, gamma" in err and "--allow-mixed" in err
    # asked explicitly: each figure labelled with its run and seed, and --check fails
    code, stdout, err = _reproduce_cli(capsys, "--replot", "--allow-mixed", "--check", "--out", str(out))
    assert code == 1 and "not one complete run" in err
    md = (out / "report.md").read_text()
    assert "NOT ONE COMPLETE RUN" in md.split("Paper:")[0] or "INTERRUPTED" in md.split("Paper:")[0]
    assert f"| 1 | `{run_b['run_id']}` |" in md and f"| 0 | `{run_a['run_id']}` |" in md
    assert "come from 2 different runs" in md and "seed: 0, 1." in md
    assert f"[run {run_b['run_id']}, seed 1]" in stdout
    # not mixed, but the run that made it was interrupted: still not one complete run
    code, _, err = _reproduce_cli(capsys, "--replot", "alpha", "--check", "--out", str(out))
    assert code == 1 and "its manifest says 'interrupted'" in err
    # the replot did not rewrite the manifest into a complete one
    assert io.read_json(out / "manifest.json")["status"] == "interrupted"


def test_a_figure_whose_files_come_from_two_runs_is_an_error(standins, tmp_path, capsys):
    out = tmp_path / "o"
    assert _reproduce_cli(capsys, "--out", str(out))[0] == 0
    meta = io.read_json(out / "alpha" / "config.json")
    meta["run"] = dict(meta["run"], run_id="20000101T000000Z-00000000")
    io.write_json(out / "alpha" / "config.json", meta)  # as if killed between data.npz and config.json
    code, _, _ = _reproduce_cli(capsys, "--replot", "alpha", "--out", str(out))
    assert code == 1
    rep = json.loads((out / "report.json").read_text())
    assert "config.json from run 20000101T000000Z-00000000" in rep["experiments"][0]["error"]


def test_a_killed_run_leaves_an_in_progress_directory(standins, tmp_path, capsys, caplog):
    """SIGKILL (no clean-up possible): the manifest stays in progress, the report says so, and
    the stale lock is taken over by the next run with a notice."""
    out = tmp_path / "o"
    assert _reproduce_cli(capsys, "--out", str(out))[0] == 0
    pid_dir = tmp_path / "pids"
    pid_dir.mkdir()
    p = _driver(out, "--jobs", "1", "--seed", "2", pid_dir=pid_dir, sleep="beta=60")
    _pids(pid_dir, 2)  # alpha done, beta computing
    p.kill()
    p.communicate()
    manifest = io.read_json(out / "manifest.json")
    assert manifest["status"] == "in-progress" and manifest["figures"]["alpha"]["status"] == "complete"
    md = (out / "report.md").read_text()
    assert "IN PROGRESS" in md.split("Paper:")[0] and "was killed" in md
    holder = json.loads((out / rundir.LOCK_FILE).read_text())
    assert holder["pid"] == p.pid and not rundir.pid_alive(p.pid)
    with caplog.at_level(logging.WARNING, logger="curvdyn"):
        code, _, err = _reproduce_cli(capsys, "--replot", "--out", str(out))
    assert code == 2 and "refusing to report figures from different runs" in err
    assert f"taking over the stale lock {out / rundir.LOCK_FILE} of pid {p.pid}" in caplog.text
    assert not (out / rundir.LOCK_FILE).exists()


# ---------------------------------------------------------------------------------------
# locks
# ---------------------------------------------------------------------------------------


def test_a_second_run_into_the_same_directory_is_refused(standins, tmp_path, capsys):
    """While one run works (in another process), a second is refused and told who holds the
    directory; the first finishes unharmed."""
    out, pid_dir = tmp_path / "o", tmp_path / "pids"
    pid_dir.mkdir()
    first = _driver(out, "--jobs", "1", pid_dir=pid_dir, sleep="alpha=3")
    _pids(pid_dir, 1)
    code, _, err = _reproduce_cli(capsys, "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"is being written by another curvdyn run (pid {first.pid} on host" in err
    assert "--no-progress --out" in err  # the other run's command
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    manifest = io.read_json(out / "manifest.json")
    assert manifest["status"] == "complete" and manifest["pid"] == first.pid
    assert all(e["status"] == "complete" for e in manifest["figures"].values())


def test_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path, caplog):
    held = rundir.DirectoryLock(tmp_path, command="curvdyn reproduce A", run_id="A").acquire()
    with pytest.raises(rundir.DirectoryBusy, match=f"pid {os.getpid()} on host .*command `curvdyn reproduce A`"):
        rundir.DirectoryLock(tmp_path, command="B").acquire()
    held.release()
    assert not (tmp_path / rundir.LOCK_FILE).exists()
    # a lock file left by a process that died (no flock held any more)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / rundir.LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": "h", "started": "s", "command": "c"}))
    with caplog.at_level(logging.WARNING, logger="curvdyn"):
        lock = rundir.DirectoryLock(tmp_path, command="C").acquire()
    assert lock.took_over["pid"] == dead.pid
    assert f"taking over the stale lock {tmp_path / rundir.LOCK_FILE} of pid {dead.pid}" in caplog.text
    assert json.loads((tmp_path / rundir.LOCK_FILE).read_text())["pid"] == os.getpid()
    lock.release()


def test_lock_without_flock_goes_by_the_pid(tmp_path, monkeypatch, caplog):
    """On a file system without flock, a lock is held while its pid lives on this host."""
    import errno
    import fcntl
    import socket

    def no_flock(fd, op):
        raise OSError(errno.EOPNOTSUPP, "flock not supported")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    lock_file = tmp_path / rundir.LOCK_FILE
    host = socket.gethostname()
    lock_file.write_text(json.dumps({"pid": os.getpid(), "host": host, "started": "s", "command": "live"}))
    with pytest.raises(rundir.DirectoryBusy, match="command `live`"):
        rundir.DirectoryLock(tmp_path).acquire()
    lock_file.write_text(json.dumps({"pid": os.getpid(), "host": "elsewhere", "started": "s", "command": "remote"}))
    with pytest.raises(rundir.DirectoryBusy, match="on host elsewhere"):
        rundir.DirectoryLock(tmp_path).acquire()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_file.write_text(json.dumps({"pid": dead.pid, "host": host, "started": "s", "command": "dead"}))
    with caplog.at_level(logging.WARNING, logger="curvdyn"):
        lock = rundir.DirectoryLock(tmp_path, command="new").acquire()
    assert "taking over the stale lock" in caplog.text and lock.took_over["command"] == "dead"
    assert json.loads(lock_file.read_text())["command"] == "new"
    lock.release()
    assert not lock_file.exists()


# ---------------------------------------------------------------------------------------
# processes
# ---------------------------------------------------------------------------------------


def _gone(pids) -> bool:
    return not any(rundir.pid_alive(p) for p in pids)


def test_killing_the_parent_kills_its_workers(tmp_path):
    out, pid_dir = tmp_path / "o", tmp_path / "pids"
    pid_dir.mkdir()
    parent = _driver(out, "--jobs", "2", pid_dir=pid_dir, sleep="alpha=60,beta=60,gamma=60")
    workers = _pids(pid_dir, 2)
    assert parent.pid not in workers.values()
    parent.kill()
    parent.communicate()
    _wait_for(lambda: _gone(workers.values()), 5, f"workers {sorted(workers.values())} to die with their parent")
    assert not (out / "alpha" / "data.npz").exists() and not (out / "beta" / "data.npz").exists()
    assert io.read_json(out / "manifest.json")["status"] == "in-progress"


def test_the_workers_shared_compilation_cache_is_removed_after_the_run(tmp_path):
    """The pool's cache lives in a temporary directory of the run: present while the workers
    compute, gone when the run has ended."""
    out, pid_dir, tmp = tmp_path / "o", tmp_path / "pids", tmp_path / "tmp"
    pid_dir.mkdir()
    tmp.mkdir()
    env = _env(FAULT_SLEEP="alpha=3,beta=3,gamma=0", FAULT_PIDS=pid_dir, FAULT_JAX="", TMPDIR=tmp)
    cmd = [sys.executable, str(DRIVER), "reproduce", "--no-progress", "--out", str(out), "--seed", "0", "--jobs", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _pids(pid_dir, 2)
    assert [p.name.startswith("curvdyn-xla-cache-") for p in tmp.iterdir()] == [True]
    _, err = _communicate_or_dump_stacks(proc, 120)
    assert proc.returncode == 0, err
    assert list(tmp.iterdir()) == []


_ORPHAN = """
import importlib.util, os, sys, threading, time
spec = importlib.util.spec_from_file_location("w", sys.argv[1])
w = importlib.util.module_from_spec(spec)
spec.loader.exec_module(w)
threading.Thread(target=w._watch_parent, args=(os.getppid(),), daemon=True).start()
open(sys.argv[2], "w").write(str(os.getpid()))
time.sleep(60)
"""


def test_the_watchdog_alone_ends_an_orphaned_worker(tmp_path):
    """Without the Linux death signal (other systems, or a worker spawned from a thread that
    ended), the watchdog thread ends a worker whose parent died."""
    workers_py = SRC / "curvdyn" / "_workers.py"
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [sys.executable, "-c", f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {_ORPHAN!r}, "
         f"{str(workers_py)!r}, {str(pid_file)!r}]); time.sleep(60)"]
    )  # fmt: skip
    child = int(_wait_for(lambda: pid_file.is_file() and pid_file.read_text(), 30, "the child"))
    parent.kill()
    parent.wait()
    _wait_for(lambda: not rundir.pid_alive(child), 3, "the orphaned child to end")


@pytest.mark.parametrize(
    "signum,jobs", [(signal.SIGINT, "2"), (signal.SIGTERM, "1")], ids=["ctrl-c-workers", "sigterm-in-process"]
)
def test_ctrl_c_stops_the_run_with_one_line_and_marks_it_interrupted(tmp_path, signum, jobs):
    """Ctrl-C (to the whole process group, as a terminal sends it) with worker processes, and
    SIGTERM to a run without workers: one line, exit 128 + signal, manifest interrupted, no
    process left. The worker that finished computed with the parent's JAX settings."""
    out, pid_dir = tmp_path / "o", tmp_path / "pids"
    pid_dir.mkdir()
    parent = _driver(
        out,
        "--jobs",
        jobs,
        pid_dir=pid_dir,
        sleep="alpha=0,beta=60,gamma=60",
        jax="jax_threefry_partitionable=0",
        start_new_session=True,
    )
    workers = _pids(pid_dir, 3 if jobs == "2" else 2)  # alpha finished, the others computing
    _wait_for(lambda: io.read_json(out / "manifest.json")["figures"]["alpha"]["status"] == "complete", 30, "alpha")
    if signum == signal.SIGINT:
        os.killpg(parent.pid, signal.SIGINT)
    else:
        parent.send_signal(signal.SIGTERM)
    _, stderr = _communicate_or_dump_stacks(parent, 30)
    assert parent.returncode == 128 + signum
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert "is incomplete (1 of 3 figures written, manifest.json says 'interrupted')" in stderr
    _wait_for(lambda: _gone(workers.values()), 5, "the workers to be terminated")
    manifest = io.read_json(out / "manifest.json")
    assert manifest["status"] == "interrupted"
    assert {n: e["status"] for n, e in manifest["figures"].items()} == {
        "alpha": "complete",
        "beta": "interrupted",
        "gamma": "interrupted",
    }
    assert "INTERRUPTED" in (out / "report.md").read_text().split("Paper:")[0]
    assert not (out / rundir.LOCK_FILE).exists()
    assert manifest["run"]["jax_config"]["jax_threefry_partitionable"] is False
    alpha = reproduce.load_data(out / "alpha" / "data.npz")
    assert not bool(alpha["jax_threefry_partitionable"]), "the worker did not compute with the parent's JAX settings"
    assert bool(alpha["jax_enable_x64"]) == manifest["run"]["jax_config"]["jax_enable_x64"]
    assert (int(alpha["pid"]) != parent.pid) == (jobs == "2")


_TGKILL = {"x86_64": 234, "aarch64": 131}  # syscall numbers: a signal to one thread of another process


def _sigint_to_a_thread_other_than_main(pid: int) -> int:
    """Send SIGINT to a thread of ``pid`` that is not its main thread and does not block SIGINT
    (one of XLA's, say): what the kernel may do with a terminal's Ctrl-C. Returns its id."""
    import ctypes

    def blocks_sigint(tid: int) -> bool:
        status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
        mask = next(line for line in status.splitlines() if line.startswith("SigBlk:")).split()[1]
        return bool(int(mask, 16) & (1 << (signal.SIGINT - 1)))

    tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    tid = next(t for t in sorted(tids) if t != pid and not blocks_sigint(t))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.syscall(_TGKILL[platform.machine()], pid, tid, int(signal.SIGINT)) == 0, ctypes.get_errno()
    return tid


@pytest.mark.skipif(platform.machine() not in _TGKILL, reason="tgkill's number on this machine")
def test_ctrl_c_handed_to_another_thread_stops_the_run_at_once(tmp_path):
    """The kernel hands a process-directed SIGINT to any thread that does not block it; Python
    runs the handler in the main thread. The parent waiting for a 60 s figure must still stop
    at once (before: it slept on until the figure finished)."""
    out, pid_dir = tmp_path / "o", tmp_path / "pids"
    pid_dir.mkdir()
    parent = _driver(out, "--jobs", "2", pid_dir=pid_dir, sleep="alpha=0,beta=60,gamma=60", start_new_session=True)
    _pids(pid_dir, 3)
    _wait_for(lambda: io.read_json(out / "manifest.json")["figures"]["alpha"]["status"] == "complete", 30, "alpha")
    _sigint_to_a_thread_other_than_main(parent.pid)
    _, stderr = _communicate_or_dump_stacks(parent, 20)
    assert parent.returncode == 128 + signal.SIGINT, stderr
    assert io.read_json(out / "manifest.json")["status"] == "interrupted"


def test_waiting_for_workers_acts_on_a_signal_handled_off_the_main_thread():
    """``_workers.as_completed`` (in-process): a SIGINT delivered to another thread raises in the
    main thread within the wait slice, not when the future finishes."""
    from concurrent.futures import ThreadPoolExecutor

    from curvdyn import _workers

    class Stop(Exception):
        pass

    def handler(signum, frame):
        raise Stop

    old, release = signal.signal(signal.SIGINT, handler), threading.Event()
    try:
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(release.wait, 5.0)
            pool.submit(lambda: (time.sleep(0.3), signal.pthread_kill(threading.get_ident(), signal.SIGINT)))
            t0 = time.monotonic()
            with pytest.raises(Stop):
                for _ in _workers.as_completed([slow]):
                    pass
            waited = time.monotonic() - t0
    finally:
        release.set()
        signal.signal(signal.SIGINT, old)
    assert waited < 0.3 + 4 * _workers.WAIT_SLICE_S, waited


# ---------------------------------------------------------------------------------------
# Trajectory files
# ---------------------------------------------------------------------------------------


@pytest.fixture
def trajectory():
    """A trajectory of a 3-layer network (3-4-4-3), 5 recorded times (the arrays' values do not
    matter here; tests/test_simulate.py round-trips a simulated one)."""
    rng = np.random.default_rng(0)
    widths, n_t = (3, 4, 4, 3), 5
    return Trajectory(
        t=np.linspace(0.0, 1.0, n_t),
        weights=tuple(rng.standard_normal((n_t, b, a)) for a, b in zip(widths[:-1], widths[1:])),
        loss=rng.random(n_t),
        map=rng.standard_normal((n_t, 3, 3)),
        conserved=tuple(rng.standard_normal((n_t, n, n)) for n in widths[1:-1]),
        update_norm=rng.random(n_t),
        status="completed",
        message="reached t_end = 1",
        config={"seed": 3, "widths": list(widths), "rule": {"name": "sqrt-ngd"}},
    )


def test_trajectory_round_trip_carries_the_record(trajectory, tmp_path):
    path = trajectory.save(tmp_path / "t.npz")
    back = Trajectory.load(path)
    assert back.record == trajectory.record and back.record["seeds"] == [3] and back.record["resolution"] is None
    assert back.config == json.loads(json.dumps(trajectory.config))
    for a, b in zip(back.weights + back.conserved, trajectory.weights + trajectory.conserved, strict=True):
        np.testing.assert_array_equal(a, b)
    # non-finite numbers in the configuration (SGD's q = inf) come back as the same floats
    trajectory.config["rule"] = {"name": "sgd", "q": float("inf"), "lm_damping": float("nan")}
    again = Trajectory.load(trajectory.save(tmp_path / "inf"))
    assert again.config["rule"]["q"] == float("inf") and np.isnan(again.config["rule"]["lm_damping"])
    # saving again keeps the run's identity
    trajectory.save(tmp_path / "again.npz")
    assert Trajectory.load(tmp_path / "again.npz").record["run_id"] == back.record["run_id"]


def test_trajectory_save_and_load_agree_on_the_path(trajectory, tmp_path):
    (tmp_path / "x").mkdir()
    written = trajectory.save(tmp_path / "x" / "b")
    assert written == tmp_path / "x" / "b.npz" and written.is_file()
    for path in (tmp_path / "x" / "b", tmp_path / "x" / "b.npz", str(tmp_path / "x" / "b")):
        np.testing.assert_array_equal(Trajectory.load(path).t, trajectory.t)
    with pytest.raises(FileNotFoundError, match=r"no trajectory file .*nope\.npz"):
        Trajectory.load(tmp_path / "nope")


def _rewrite_without(src: Path, dst: Path, drop=(), change=None):
    with np.load(src) as f:
        arrays = {k: f[k] for k in f.files if k not in drop}
    if change:
        arrays.update(change)
    np.savez(dst, **arrays)


def test_trajectory_load_names_what_is_missing_or_changed(trajectory, tmp_path):
    good = trajectory.save(tmp_path / "good.npz")
    _rewrite_without(good, tmp_path / "m.npz", drop=["weights_1"])
    with pytest.raises(ValueError, match=r"m\.npz is missing weights_1 \(its metadata records 3 layers"):
        Trajectory.load(tmp_path / "m.npz")
    _rewrite_without(good, tmp_path / "c.npz", drop=["conserved_1", "loss"])
    with pytest.raises(ValueError, match="missing loss, conserved_1"):
        Trajectory.load(tmp_path / "c.npz")
    _rewrite_without(good, tmp_path / "e.npz", change={"weights_3": np.zeros((5, 3, 3))})
    with pytest.raises(ValueError, match="does not record: weights_3"):
        Trajectory.load(tmp_path / "e.npz")
    _rewrite_without(good, tmp_path / "s.npz", change={"map": np.zeros((4, 3, 3))})
    with pytest.raises(ValueError, match=r"map has shape \(4, 3, 3\)"):
        Trajectory.load(tmp_path / "s.npz")
    _rewrite_without(good, tmp_path / "n.npz", drop=["__metadata__"])
    with pytest.raises(ValueError, match="not a trajectory file"):
        Trajectory.load(tmp_path / "n.npz")
    (tmp_path / "trunc.npz").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"not a readable \.npz file"):
        Trajectory.load(tmp_path / "trunc.npz")


def test_trajectory_files_from_before_the_inventory_are_checked_by_their_widths(trajectory, tmp_path):
    """A file written before the metadata listed its arrays: the layer count comes from the widths."""
    arrays = trajectory._arrays()
    meta = {"status": trajectory.status, "message": trajectory.message, "config": trajectory.config}
    legacy = {k: v for k, v in arrays.items() if k != "weights_2"}
    np.savez(tmp_path / "old.npz", __metadata__=np.array(json.dumps(meta)), **legacy)
    with pytest.raises(ValueError, match="missing weights_2"):
        Trajectory.load(tmp_path / "old.npz")
    np.savez(tmp_path / "old_ok.npz", __metadata__=np.array(json.dumps(meta)), **arrays)
    back = Trajectory.load(tmp_path / "old_ok.npz")
    assert back.record is None and len(back.weights) == 3
