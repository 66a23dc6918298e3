"""`curvdyn reproduce`: the quick run with --check (as in CI), every file written, and the
report's numbers recomputable from the saved data files.

The quick reproduction runs once per test session, in-process (compiled simulations are
shared with the rest of the session), on every experiment registered at test time.
"""

import base64
import dataclasses
import json
import re
import sys
import types

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from curvdyn import experiments, io, reproduce
from curvdyn.cli import main
from curvdyn.experiments.base import Claim, at_least
from curvdyn.report import format_measured

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(quick_reproduce):
    return quick_reproduce  # the session's one `reproduce --quick --check` (conftest.py)


def test_quick_check_passes(quick_run):
    report = json.loads((quick_run["out"] / "report.json").read_text())
    failed = [
        f"{e['name']}/{c['key']}: measured {c['measured']} needs {c['threshold']}"
        for e in report["experiments"]
        for c in e["claims"]
        if not c["passed"] and not c["known_deviation"]
    ]
    errors = [f"{e['name']}: {e['error']}" for e in report["experiments"] if e["error"]]
    assert quick_run["code"] == 0, "\n".join(failed + errors)
    assert report["summary"]["n_failed"] == 0 and report["summary"]["n_errors"] == 0


def test_every_file_is_written(quick_run):
    out = quick_run["out"]
    for name in ("report.md", "report.html", "report.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    for name in experiments.names():
        exp = out / name
        for fname in ("data.npz", "config.json", "claims.json", f"{name}.png"):
            assert (exp / fname).is_file(), f"{exp / fname} missing"
        assert (exp / f"{name}.png").read_bytes()[:8] == PNG_MAGIC


def test_every_file_carries_the_one_run_record(quick_run):
    """config.json, claims.json, data.npz, the reports and the manifest name the same run."""
    import curvdyn

    out = quick_run["out"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and not (out / "curvdyn.lock").exists()
    record = manifest["run"]
    assert record["seeds"] == [0] and record["resolution"] == "quick"
    assert record["versions"]["curvdyn"] == curvdyn.__version__
    assert set(io.VERSIONED) <= set(record["versions"]) and all(record["versions"][k] for k in ("jax", "numpy"))
    assert record["jax_config"]["jax_enable_x64"] is True
    assert set(record["jax_config"]) == set(io.JAX_SETTINGS)
    report = json.loads((out / "report.json").read_text())
    assert report["run"] == record and report["complete"] and report["problems"] == []
    for name in experiments.names():
        meta = json.loads((out / name / "config.json").read_text())
        assert meta["experiment"] == name and meta["run"] == record
        assert meta["wall_time_s"] > 0
        assert isinstance(meta["config"], dict) and meta["config"]
        assert json.loads((out / name / "claims.json").read_text())["run"] == record
        assert reproduce.load_record(out / name / "data.npz") == record
        assert manifest["figures"][name] == {
            "status": "complete",
            "run_id": record["run_id"],
            "seeds": [0],
            "resolution": "quick",
        }
    by_name = {e["name"]: e for e in report["experiments"]}
    assert all(by_name[n]["run_id"] == record["run_id"] and by_name[n]["seeds"] == [0] for n in experiments.names())


def test_report_numbers_come_from_the_data_files(quick_run):
    """Claims recomputed from data.npz + config.json equal claims.json, report.json and report.md."""
    out = quick_run["out"]
    report = json.loads((out / "report.json").read_text())
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    by_name = {e["name"]: e for e in report["experiments"]}
    for name in experiments.names():
        recomputed = [c.as_dict() for c in reproduce.recompute_claims(out, name)]
        assert recomputed, f"{name} measured no claims"
        saved = json.loads((out / name / "claims.json").read_text())["claims"]
        assert recomputed == saved
        assert recomputed == by_name[name]["claims"]
        for c in recomputed:
            shown = format_measured(c["measured"])
            row = [line for line in md.splitlines() if line.startswith(f"| {name} | `{c['key']}` |")]
            assert len(row) == 1, f"no unique report.md row for {name}/{c['key']}"
            assert f"| {shown} |" in row[0]
            verdict = "PASS" if c["passed"] else ("**DISAGREES**" if c["known_deviation"] else "**FAIL**")
            assert row[0].rstrip().endswith(f"{verdict} |")
            assert shown in html


def test_html_report_is_self_contained(quick_run):
    out = quick_run["out"]
    html = (out / "report.html").read_text()
    images = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(images) == len(experiments.names())
    for src, name in zip(images, experiments.names()):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == (out / name / f"{name}.png").read_bytes()


def test_markdown_report_embeds_figures_and_config(quick_run):
    md = (quick_run["out"] / "report.md").read_text()
    for name in experiments.names():
        assert f"![{name}]({name}/{name}.png)" in md
    assert "Configuration (config.json)" in md
    assert "quick" in md and "seed: 0" in md


@pytest.mark.parametrize("name", ["fig3", "relu", "digits"])
def test_spread_over_seeds_figures_draw_from_saved_data(quick_run, name):
    """plot_seeds from the saved files alone (the one seed twice, the second perturbed: tests/test_seeds.py
    runs several real seeds end to end on a cheaper experiment)."""
    import io as _io

    module = experiments.get(name)
    out = quick_run["out"] / name
    data = reproduce.load_data(out / "data.npz")
    config = reproduce.load_config(module, io.read_json(out / "config.json"))
    other = {k: (v * 1.01 if k.endswith(("loss", "__modes")) else v) for k, v in data.items()}
    fig = module.plot_seeds([data, other], [config, config], [0, 1])
    try:
        buf = _io.BytesIO()
        fig.savefig(buf, format="png", dpi=40)
        assert buf.getbuffer().nbytes > 10_000 and len(fig.axes) >= 2
        assert "2 seeds" in fig._suptitle.get_text()
    finally:
        plt.close(fig)


def test_replot_reuses_the_saved_data(quick_run, tmp_path):
    out = quick_run["out"]
    before = {n: (out / n / "data.npz").read_bytes() for n in experiments.names()}
    claims_before = {n: (out / n / "claims.json").read_text() for n in experiments.names()}
    code = main(["reproduce", "--replot", "--jobs", "1", "--no-progress", "--out", str(out)])
    assert code == 0
    for n in experiments.names():
        assert (out / n / "data.npz").read_bytes() == before[n]
        assert (out / n / "claims.json").read_text() == claims_before[n]


# ---------------------------------------------------------------------------------------
# the runner's behaviour with small stand-in experiments
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StandInSettings:
    quick: bool = False


def _fake_module(name, *, measured=1.0, bound=0.5, raise_in=None):
    module = types.ModuleType(f"curvdyn.experiments.{name}")
    module.NAME = name
    module.TITLE = f"stand-in experiment {name}"
    module.DEFAULT = StandInSettings()
    module.QUICK = dataclasses.replace(module.DEFAULT, quick=True)

    def compute(settings, *, seed, progress):
        if raise_in == "compute":
            raise RuntimeError("boom in compute")
        x = np.linspace(0.0, 1.0, 5)
        return {"x": x, "y": x * measured}, {"measured": measured, "quick": settings.quick}

    def plot(data, config):
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot(data["x"], data["y"])
        return fig

    def claims(data, config):
        value = float(data["y"][-1])
        return [at_least("value", "The value is large (stand-in).", value, bound, "Last entry of y.")]

    module.compute, module.plot, module.claims = compute, plot, claims
    return module


@pytest.fixture
def fake_registry(monkeypatch):
    def install(*modules):
        for m in modules:
            monkeypatch.setitem(sys.modules, f"curvdyn.experiments.{m.NAME}", m)
        monkeypatch.setattr(experiments, "_MODULES", tuple(m.NAME for m in modules))

    return install


def test_check_fails_on_a_failed_claim_and_the_report_says_why(fake_registry, tmp_path, capsys):
    fake_registry(_fake_module("good", measured=1.0, bound=0.5), _fake_module("bad", measured=0.1, bound=0.5))
    out = tmp_path / "o"
    # Stand-in modules exist only in this process: --jobs 1.
    one = ["--seed", "0"]  # the one-seed report (PASS/FAIL); tests/test_seeds.py checks several seeds
    assert main(["reproduce", *one, "--jobs", "1", "--no-progress", "--out", str(out)]) == 0  # no --check: report only
    assert (
        main(["reproduce", *one, "--jobs", "1", "--check", "--no-progress", "--out", str(out), "--format", "png,pdf"])
        == 1
    )
    md = (out / "report.md").read_text()
    assert "1 of 2 claims pass" in md and "**1 fail**" in md
    assert "Where the measurements disagree with the paper" in md
    assert "Measured 0.1, but the claim needs ≥ 0.5" in md
    assert (out / "bad" / "bad.pdf").read_bytes()[:4] == b"%PDF"
    assert "FAIL" in capsys.readouterr().out


def test_an_experiment_that_raises_is_reported_and_fails(fake_registry, tmp_path):
    fake_registry(_fake_module("crash", raise_in="compute"), _fake_module("fine"))
    out = tmp_path / "o"
    assert main(["reproduce", "--jobs", "1", "--no-progress", "--out", str(out)]) == 1
    report = json.loads((out / "report.json").read_text())
    crash, fine = report["experiments"]
    assert "boom in compute" in crash["error"] and crash["claims"] == []
    assert fine["error"] is None and fine["claims"][0]["passed"]
    md = (out / "report.md").read_text()
    assert "raised an error" in md
    assert "FAILED — incomplete" in md.split("Paper:")[0] and "crash raised an error" in md.split("Paper:")[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["figures"]["crash"]["status"] == "failed" and manifest["figures"]["fine"]["status"] == "complete"
    assert report["complete"] is False


def test_selected_figures_run_in_registry_order(fake_registry, tmp_path):
    fake_registry(_fake_module("a"), _fake_module("b"), _fake_module("c"))
    run = reproduce.reproduce(["c", "a"], out=tmp_path / "o")
    assert [r.name for r in run.results] == ["a", "c"]
    assert not (tmp_path / "o" / "b").exists()


def test_data_files_hold_plain_arrays_only(tmp_path):
    record = io.run_record(seeds=[3], resolution="quick")
    with pytest.raises(TypeError, match="dtype object"):
        reproduce.save_data(tmp_path / "d.npz", {"x": np.array([{"a": 1}], dtype=object)}, record)
    with pytest.raises(ValueError, match="not starting with '__'"):
        reproduce.save_data(tmp_path / "d.npz", {"__run__": np.arange(3.0)}, record)
    assert not (tmp_path / "d.npz").exists()
    reproduce.save_data(tmp_path / "d.npz", {"x": np.arange(3.0), "label": np.array(["sgd", "ngd"])}, record)
    back = reproduce.load_data(tmp_path / "d.npz")
    assert sorted(back) == ["label", "x"]  # the record is checked and stripped
    assert back["x"].tolist() == [0.0, 1.0, 2.0] and back["label"].tolist() == ["sgd", "ngd"]
    assert reproduce.load_record(tmp_path / "d.npz") == record
    # the kinds of arrays the experiments save come back bit for bit (the experiment tests read
    # the session's reproduce run from these files: tests/quick_runs.py)
    kinds = {
        "f64": np.array([[1.0, np.nan], [np.inf, -0.0]]),
        "f32": np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3),
        "scalar": np.array(2.5),
        "ints": np.arange(4, dtype=np.int64),
        "flags": np.array([True, False]),
        "empty": np.zeros((0, 3)),
    }
    reproduce.save_data(tmp_path / "k.npz", kinds, record)
    back = reproduce.load_data(tmp_path / "k.npz")
    assert sorted(back) == sorted(kinds)
    for key, value in kinds.items():
        assert back[key].dtype == value.dtype and back[key].shape == value.shape, key
        assert back[key].tobytes() == value.tobytes(), key
    # a data file without a record (an older curvdyn, or not curvdyn) is refused by name
    np.savez(tmp_path / "old.npz", x=np.arange(3.0))
    with pytest.raises(io.RecordError, match=r"old\.npz has no run record"):
        reproduce.load_data(tmp_path / "old.npz")


def test_registry_lists_modules_in_figure_order():
    names = experiments.names()
    assert len(names) == len(set(names)) and names
    for name in names:
        module = experiments.get(name)
        assert module.NAME == name and module.TITLE
    with pytest.raises(KeyError, match="registered experiments"):
        experiments.get("nope")


def test_claim_helpers_record_non_finite_as_failure():
    c = at_least("k", "s", float("nan"), 1.0)
    assert not c.passed and c.as_dict()["measured"] is None
    assert isinstance(c, Claim)
