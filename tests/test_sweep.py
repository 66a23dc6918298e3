"""Sweeps (curvdyn.sweep): the table and its measurements, the resumable store, a changed definition
refused, the TOML command line, and the same sweep on two Dask worker processes."""

import json
import math
import os
import shutil

import jax
import numpy as np
import pytest

import curvdyn as cd
from curvdyn import cli, rundir
from curvdyn.sweep import (
    CELLS_DIR,
    TABLE_FILE,
    Sweep,
    SweepMismatch,
    cell_key,
    conserved_drift,
    load_table,
    run,
    time_to_fraction,
)

BASE = dict(
    rules=["sgd", "sqrt-ngd-d"],
    depths=[2],
    widths=[3],
    init_scales=[0.1, 0.3],
    seeds=[0, 1, 2],
    t_end=8.0,
    integrator={"kind": "euler", "dt": 0.02},  # Euler: quick to compile
    n_save=17,
    loss_fraction=0.05,
)
TOML = """\
rules = ["sgd", "sqrt-ngd-d"]
depths = [2]
widths = [3]
init_scales = [0.1, 0.3]
seeds = [0, 1, 2]
t_end = 8.0
integrator = {kind = "euler", dt = 0.02}
n_save = 17
loss_fraction = 0.05
"""
NUMBERS = ["initial_loss", "final_loss", "t_final", "time_to_fraction", "max_update_norm", "conserved_drift", "steps"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The base sweep, run once into a directory (the other tests copy it)."""
    out = tmp_path_factory.mktemp("sweep") / "base"
    table = run(Sweep(**BASE), out=out, progress=False, save_trajectories=True)
    return out, table


def _copy(base_dir, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(base_dir, dest)
    return dest


def test_the_table_holds_every_cell_with_its_coordinates_and_measurements(base):
    out, table = base
    assert len(table) == 2 * 2 * 3
    assert list(table.columns[:7]) == ["cell", "rule", "depth", "width", "init_scale", "task", "seed"]
    assert list(table["rule"].cat.categories) == ["sgd", "sqrt-ngd-d"]
    assert set(table["status"]) == {"completed"}
    assert table.attrs["computed_cells"] == 12 and table.attrs["definition_hash"] == Sweep(**BASE).hash
    assert (table["batch_size"] == 6).all()  # one program per rule: 2 scales x 3 seeds
    # one cell recomputed by hand, exactly as the docs say: weights from PRNGKey(seed), the task
    # from fold_in(PRNGKey(seed), 1), a single (unbatched) simulate
    row = table[(table["rule"] == "sqrt-ngd-d") & (table["init_scale"] == 0.3) & (table["seed"] == 2)].iloc[0]
    key = jax.random.fold_in(jax.random.PRNGKey(2), 1)
    task = cd.Task(np.asarray(jax.random.normal(key, (3, 3))) * (1.0 / math.sqrt(3)))  # N(0, 1/n) entries
    ws = cd.init_random(jax.random.PRNGKey(2), (3, 3, 3), 0.3)
    single = cd.simulate(ws, task, "sqrt-ngd-d", 8.0, integrator=cd.Euler(dt=0.02), n_save=17)
    assert row["final_loss"] == single.loss[-1]  # the mapped batch is bitwise the separate run
    assert row["max_update_norm"] == np.max(single.update_norm)
    assert row["steps"] == single.config["n_steps"] == 400
    assert row["time_to_fraction"] == time_to_fraction(single.t, single.loss, 0.05)
    # the saved trajectory is that cell's run
    traj = cd.Trajectory.load(out / CELLS_DIR / f"{row['cell']}.npz")
    np.testing.assert_array_equal(traj.loss, single.loss)
    assert traj.record["run_id"] == table.attrs["run"]["run_id"]
    # conservation (eq. 4): SGD's drift is Euler's O(dt) error, the block rule's is not small
    sgd_drift = table.loc[table["rule"] == "sgd", "conserved_drift"].max()
    assert sgd_drift < 2e-3 and table.loc[table["rule"] == "sqrt-ngd-d", "conserved_drift"].min() > 10 * sgd_drift
    # the file holds the same table and its attributes
    back = load_table(out)
    assert back.equals(table) and back.attrs["definition"] == Sweep(**BASE).as_dict()
    manifest = rundir.read_manifest(out)
    assert manifest["status"] == "complete" and manifest["figures"]["table"]["status"] == "complete"


def test_time_to_fraction_and_drift_follow_their_definitions():
    t = np.linspace(0.0, 10.0, 11)
    # log-linear interpolation is exact for an exponential: L = e^{-t} reaches 5 % at t = ln 20
    assert time_to_fraction(t, np.exp(-t), 0.05) == pytest.approx(math.log(20.0), rel=1e-12)
    assert math.isnan(time_to_fraction(t, np.exp(-0.1 * t), 0.05))  # never gets there
    # a rescaling w_1 -> c w_1, w_2 -> w_2 / c breaks the balance by a known amount
    w1 = np.stack([np.eye(2), 2.0 * np.eye(2)])
    w2 = np.stack([np.eye(2), 0.5 * np.eye(2)])
    traj = cd.Trajectory(
        t=np.arange(2.0), weights=(w1, w2), loss=np.ones(2), map=w2 @ w1, conserved=(w1 @ w1.transpose(0, 2, 1) -
        w2.transpose(0, 2, 1) @ w2,), update_norm=np.ones(2), status="completed", message="", config={},
    )  # fmt: skip
    # C(0) = 0, C(1) = (4 - 1/4) I: ‖·‖ = 3.75 √2; max_t Σ‖w_i‖² = (4 + 1/4) · 2
    assert conserved_drift(traj) == pytest.approx(3.75 * math.sqrt(2) / 8.5, rel=1e-14)


def test_an_interrupted_sweep_resumes_without_recomputing_finished_cells(base, tmp_path):
    out = _copy(base[0], tmp_path)
    keys = sorted(p.stem for p in (out / CELLS_DIR).glob("*.json"))
    stamps = {k: (out / CELLS_DIR / f"{k}.json").stat().st_mtime_ns for k in keys}
    # as if the run had been killed before the second group (the block rule's 6 cells) finished
    lost = list(base[1].loc[base[1]["rule"] == "sqrt-ngd-d", "cell"])
    for k in lost:
        (out / CELLS_DIR / f"{k}.json").unlink()
    table = run(Sweep(**BASE), out=out, progress=False)
    assert table.attrs["computed_cells"] == 6
    assert table.drop(columns=["wall_time_s"]).equals(base[1].drop(columns=["wall_time_s"]))
    for k in keys:
        if k not in lost:
            assert (out / CELLS_DIR / f"{k}.json").stat().st_mtime_ns == stamps[k]  # not rewritten
    again = run(Sweep(**BASE), out=out, progress=False)
    assert again.attrs["computed_cells"] == 0


_CALLS = {"n": 0, "stop_at": None}


def interrupting_measure(traj, task):
    """A measure that presses Ctrl-C at its ``stop_at``-th call (module level: named in the definition)."""
    _CALLS["n"] += 1
    if _CALLS["stop_at"] is not None and _CALLS["n"] >= _CALLS["stop_at"]:
        raise KeyboardInterrupt
    return {"loss_ratio": float(traj.loss[-1] / traj.loss[0])}


def test_ctrl_c_keeps_the_finished_group_and_marks_the_directory_interrupted(tmp_path):
    definition = Sweep(**{**BASE, "measure": interrupting_measure})
    assert definition.measure == "test_sweep:interrupting_measure"
    out = tmp_path / "s"
    _CALLS.update(n=0, stop_at=7)  # the first cell of the second group (6 cells each)
    with pytest.raises(KeyboardInterrupt):
        run(definition, out=out, progress=False)
    assert rundir.read_manifest(out)["status"] == "interrupted"
    assert len(list((out / CELLS_DIR).glob("*.json"))) == 6
    assert not (out / TABLE_FILE).exists()
    assert not (out / rundir.LOCK_FILE).exists()  # released
    _CALLS.update(n=0, stop_at=None)
    table = run(definition, out=out, progress=False)
    assert table.attrs["computed_cells"] == 6 and len(table) == 12
    np.testing.assert_allclose(table["loss_ratio"], table["final_loss"] / table["initial_loss"], rtol=1e-14)
    assert rundir.read_manifest(out)["status"] == "complete"


def test_a_changed_definition_is_refused_and_a_held_directory_too(base, tmp_path):
    out = _copy(base[0], tmp_path)
    with pytest.raises(SweepMismatch, match=r"another sweep .* changed: seeds"):
        run(Sweep(**{**BASE, "seeds": [0, 1, 2, 3]}), out=out, progress=False)
    assert len(list((out / CELLS_DIR).glob("*.json"))) == 12  # nothing touched
    with rundir.DirectoryLock(out, command="another sweep"):
        with pytest.raises(rundir.DirectoryBusy, match="another sweep"):
            run(Sweep(**BASE), out=out, progress=False)


def test_definitions_are_checked_and_hash_by_content(tmp_path):
    d = Sweep(**BASE)
    assert Sweep.from_dict(d.as_dict()).hash == d.hash
    path = tmp_path / "grid.toml"
    path.write_text(TOML)
    assert Sweep.from_toml(path).hash == d.hash
    assert Sweep(**{**BASE, "t_end": 9.0}).hash != d.hash
    assert len({cell_key(c) for c in d.cells()}) == 12
    for bad, message in [
        ({"rules": ["bogus"]}, "unknown rule 'bogus'"),
        ({"rules": [{"name": "frac-ngd"}]}, "needs the parameter q"),
        ({"seeds": [0, 0]}, "seeds must be distinct"),
        ({"depths": [0]}, "positive integers"),
        ({"tasks": ["moon"]}, "a task is one of"),
        ({"integrator": {"kind": "rk4"}}, "integrator must be"),
        ({"loss_fraction": 2.0}, r"loss_fraction must be in \(0, 1\)"),
        ({"t_end": None}, "needs t_end"),
        ({"colour": "red"}, "unknown sweep setting"),
        ({"measure": lambda traj, task: 0.0}, "module-level function"),
    ]:
        with pytest.raises(ValueError, match=message):
            Sweep.from_dict({**BASE, **bad})


def _main(argv) -> int:
    try:
        return cli.main(argv)
    except SystemExit as exc:  # argparse's usage errors
        return exc.code


def test_the_command_line_runs_a_toml_sweep_and_gives_one_line_errors(base, tmp_path, capsys):
    config = tmp_path / "grid.toml"
    config.write_text(TOML)
    out = _copy(base[0], tmp_path)  # the same definition: every cell is read back
    assert _main(["sweep", str(config), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "12 cells (0 computed now, the rest read back); 12 completed" in printed
    assert load_table(out).attrs["computed_cells"] == 0
    (tmp_path / "bad.toml").write_text('rules = ["sgd"]\ncolour = "red"\n')
    assert _main(["sweep", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown sweep setting(s) colour" in err and len(err.strip().splitlines()) == 1
    changed = tmp_path / "changed.toml"
    changed.write_text(TOML.replace("t_end = 8.0", "t_end = 9.0"))
    assert _main(["sweep", str(changed), "--out", str(out)]) == 2
    assert "holds the cells of another sweep" in capsys.readouterr().err


def test_the_same_sweep_on_two_dask_worker_processes(base, tmp_path):
    """A local Dask cluster of two worker processes (localhost only): the same definition, the same
    numbers, each group computed in a worker, and the store resumable as in one process."""
    pytest.importorskip("dask.distributed", reason="the distributed extra (dask[distributed]) is not installed")
    from curvdyn.sweep import dask_executor

    out = tmp_path / "dask"
    with dask_executor(workers=2) as executor:
        table = run(Sweep(**BASE), out=out, executor=executor, progress=False)
    ref = base[1]
    assert table[NUMBERS].equals(ref[NUMBERS]) and table["cell"].equals(ref["cell"])
    pids = {json.loads(p.read_text())["computed_by"]["pid"] for p in (out / CELLS_DIR).glob("*.json")}
    assert len(pids) == 2 and os.getpid() not in pids  # one group on each worker
    assert rundir.read_manifest(out)["status"] == "complete"
