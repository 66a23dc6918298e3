"""Claims over several seeds: the aggregation (curvdyn.claimstats) against hand-computed values,
and `curvdyn reproduce --seeds` end to end — one cheap real experiment (fig2, --quick, 2 seeds,
run once for the module), and stand-in experiments for what a real one cannot show cheaply
(a claim failing on one seed, a seed-independent experiment, seeds from two runs)."""

import dataclasses
import json
import sys
import types

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
from matplotlib.figure import Figure

from curvdyn import claimstats, experiments, io, reproduce
from curvdyn.cli import main
from curvdyn.experiments.base import Claim, at_least, at_most
from curvdyn.report import format_measured

# ---------------------------------------------------------------------------------------
# the aggregation, by hand
# ---------------------------------------------------------------------------------------


def _claim(measured, passed, key="k", **kw):
    return Claim(key, "A statement.", measured, "≤ 1", passed, "how", **kw)


def test_quantiles_are_numpy_linear_over_the_finite_values():
    # linear interpolation between order statistics: position p·(n − 1)
    assert claimstats.quantiles([4.0, 1.0, 3.0, 2.0]) == pytest.approx((1.15, 2.5, 3.85), rel=1e-15)
    assert claimstats.quantiles([5.0]) == (5.0, 5.0, 5.0)
    assert claimstats.quantiles([1.0, float("nan"), 3.0, float("inf")]) == pytest.approx((1.1, 2.0, 2.9), rel=1e-15)
    assert claimstats.quantiles([float("nan")]) == (None, None, None)
    # 20 seeds 0.0, ..., 19.0: the 5 % point is at 0.95, the 95 % point at 18.05
    assert claimstats.quantiles(np.arange(20.0)) == pytest.approx((0.95, 9.5, 18.05), rel=1e-14)


@pytest.mark.parametrize(
    "n_passed,n_seeds,kw,expected",
    [
        (1, 1, {}, "PASS"),
        (0, 1, {}, "FAIL"),
        (0, 1, {"known_deviation": "why"}, "DISAGREES"),
        (3, 3, {}, "REPRODUCED"),
        (3, 3, {"known_deviation": "why"}, "REPRODUCED"),
        (2, 3, {}, "SEED-DEPENDENT"),
        (0, 3, {}, "FAIL"),
        (2, 3, {"known_deviation": "why"}, "DISAGREES"),
        (0, 3, {"known_deviation": "why"}, "DISAGREES"),
        (8, 10, {"min_pass_fraction": 0.8}, "REPRODUCED"),
        (7, 10, {"min_pass_fraction": 0.8}, "SEED-DEPENDENT"),
        (2, 3, {"min_pass_fraction": 2 / 3}, "REPRODUCED"),  # 2 ≥ (2/3)·3 despite rounding
    ],
)
def test_verdicts(n_passed, n_seeds, kw, expected):
    assert claimstats.verdict(n_passed, n_seeds, **kw) == expected
    blocking = expected in ("FAIL", "SEED-DEPENDENT")
    assert (expected not in claimstats.NOT_BLOCKING) is blocking


def test_verdict_refuses_impossible_counts():
    for bad in ((4, 3), (-1, 3), (0, 0)):
        with pytest.raises(ValueError, match="n_passed"):
            claimstats.verdict(*bad)


def test_one_seed_verdict_is_the_claims_own():
    for passed, dev, word in ((True, "", "PASS"), (False, "", "FAIL"), (False, "known", "DISAGREES")):
        c = _claim(0.5, passed, known_deviation=dev)
        (st,) = claimstats.aggregate({7: [c]})
        assert c.verdict == st.verdict == word and st.seeds == (7,) and st.n_seeds == 1


def test_aggregate_counts_lists_and_orders():
    by_seed = {
        0: [_claim(0.5, True, "a"), _claim(2.0, False, "b")],
        1: [_claim(0.7, True, "a"), _claim(0.9, True, "b")],
        2: [_claim(1.5, False, "a"), _claim(0.1, True, "b"), _claim(0.2, True, "c")],  # c: only seed 2 makes it
    }
    a, b, c = claimstats.aggregate(by_seed)
    assert [a.key, b.key, c.key] == ["a", "b", "c"]
    assert (a.n_passed, a.n_seeds, a.failing_seeds, a.verdict) == (2, 3, [2], "SEED-DEPENDENT")
    assert (a.q05, a.median, a.q95) == pytest.approx((0.52, 0.7, 1.42), rel=1e-14)  # 0.5 + 0.1·0.2, 0.7 + 0.9·0.8
    assert (b.n_passed, b.failing_seeds, b.verdict, b.median) == (2, [0], "SEED-DEPENDENT", pytest.approx(0.9))
    assert (c.seeds, c.verdict) == ((2,), "PASS")
    summary = claimstats.summary([a, b, c])
    assert summary == {"n_claims": 3, "n_passed": 1, "n_failed": 2, "n_seed_dependent": 2, "n_deviations": 0}
    d = a.as_dict()
    assert d["verdict"] == "SEED-DEPENDENT" and d["n_passed"] == 2 and d["failing_seeds"] == [2]
    assert d["measured"] == [0.5, 0.7, 1.5] and d["passed"] == [True, True, False]
    json.dumps(d)


def test_aggregate_refuses_a_claim_that_changes_between_seeds():
    with pytest.raises(ValueError, match="statement differs between seeds"):
        claimstats.aggregate({0: [_claim(1, True)], 1: [Claim("k", "Another.", 1, "≤ 1", True)]})
    with pytest.raises(ValueError, match="known_deviation differs between seeds"):
        claimstats.aggregate({0: [_claim(1, True)], 1: [_claim(1, True, known_deviation="why")]})
    # a bound from each seed's own numerics may differ: both are kept
    (st,) = claimstats.aggregate({0: [_claim(1, True)], 1: [Claim("k", "A statement.", 1, "≤ 2", True)]})
    assert st.threshold == "per seed: 0: ≤ 1; 1: ≤ 2" and st.thresholds == ("≤ 1", "≤ 2")
    with pytest.raises(ValueError, match="appears twice on seed 0"):
        claimstats.aggregate({0: [_claim(1, True), _claim(2, True)]})


def test_a_stated_fraction_needs_its_reason():
    with pytest.raises(ValueError, match="needs its reason"):
        _claim(1, True, min_pass_fraction=0.9)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"in \(0, 1\]"):
            _claim(1, True, min_pass_fraction=bad, fraction_reason="r")
    c = at_most("k", "s", 0.5, 1.0, "d", min_pass_fraction=0.9, fraction_reason="a draw can violate the hypothesis")
    assert c.passed and c.as_dict()["min_pass_fraction"] == 0.9
    runs = {s: [at_least("k", "s", m, 1.0, "d", min_pass_fraction=0.9, fraction_reason="r")] for s, m in
            enumerate([2.0] * 9 + [0.5])}  # fmt: skip
    (st,) = claimstats.aggregate(runs)
    assert (st.n_passed, st.verdict, st.failing_seeds) == (9, "REPRODUCED", [9])


# ---------------------------------------------------------------------------------------
# one cheap real experiment on two seeds
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fig2_two_seeds(tmp_path_factory):
    out = tmp_path_factory.mktemp("seeds-fig2")
    code = main(["reproduce", "fig2", "--quick", "--seeds", "2", "--jobs", "1", "--no-progress", "--out", str(out)])
    return out, code


def test_two_seed_run_stores_every_seed_and_lists_them(fig2_two_seeds):
    out, code = fig2_two_seeds
    manifest = json.loads((out / "manifest.json").read_text())
    record = manifest["run"]
    assert manifest["status"] == "complete" and record["seeds"] == [0, 1]
    assert manifest["figures"]["fig2"] == {"status": "complete", "run_id": record["run_id"], "seeds": [0, 1],
                                           "resolution": "quick"}  # fmt: skip
    # the first seed where a one-seed run keeps it, the second in seed-1/, each with the run record
    for where, seed in ((out / "fig2", 0), (out / "fig2" / "seed-1", 1)):
        assert reproduce.load_record(where / "data.npz") == record
        meta = json.loads((where / "config.json").read_text())
        assert meta["seed"] == seed and meta["run"] == record and meta["wall_time_s"] > 0
    assert (out / "fig2" / "fig2.png").is_file()
    # the two seeds' data differ (the full-matrix target is drawn from the seed)
    a = reproduce.load_data(out / "fig2" / "data.npz")["full_target"]
    b = reproduce.load_data(out / "fig2" / "seed-1" / "data.npz")["full_target"]
    assert not np.allclose(a, b)
    report = json.loads((out / "report.json").read_text())
    assert report["seeds"] == [0, 1] and report["summary"]["n_seeds"] == 2
    assert code == 0 and report["summary"]["n_errors"] == 0  # no --check: 0 unless an experiment raised


def test_every_claim_is_measured_on_every_seed_from_its_files(fig2_two_seeds):
    out, _ = fig2_two_seeds
    saved = json.loads((out / "fig2" / "claims.json").read_text())
    assert saved["seeds"] == [0, 1]
    by_seed = {e["seed"]: e["claims"] for e in saved["by_seed"]}
    for seed in (0, 1):
        assert [c.as_dict() for c in reproduce.recompute_claims(out, "fig2", seed)] == by_seed[seed]
    assert saved["claims"] == by_seed[0]
    stats = reproduce.recompute_stats(out, "fig2")
    assert [s.as_dict() for s in stats] == saved["summary"]
    report = json.loads((out / "report.json").read_text())
    assert report["experiments"][0]["summary"] == saved["summary"]
    # the table: one row per claim with k/N, median, 5–95 %, failing seeds and verdict, as aggregated
    md = (out / "report.md").read_text()
    assert "| passes (k/N) | median | 5–95 % | threshold | failing seeds | result |" in md
    for st in stats:
        (row,) = [line for line in md.splitlines() if line.startswith(f"| fig2 | `{st.key}` |")]
        q05, med, q95 = claimstats.quantiles([c["measured"] for c in (by_seed[0] + by_seed[1]) if c["key"] == st.key])
        assert f"| {st.n_passed}/2 | {format_measured(med)} | [{format_measured(q05)}, {format_measured(q95)}] |" in row
        assert row.rstrip().endswith(f"{st.verdict if st.holds else '**' + st.verdict + '**'} |")


def test_replot_re_measures_every_seed(fig2_two_seeds, capsys):
    out, _ = fig2_two_seeds
    before = (out / "fig2" / "claims.json").read_text()
    data_before = (out / "fig2" / "seed-1" / "data.npz").read_bytes()
    code = main(["reproduce", "fig2", "--replot", "--jobs", "1", "--no-progress", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert (out / "fig2" / "claims.json").read_text() == before
    assert (out / "fig2" / "seed-1" / "data.npz").read_bytes() == data_before
    report = json.loads((out / "report.json").read_text())
    (exp,) = report["experiments"]
    assert "fig2/seed-1/data.npz" in exp["files"] and [e["seed"] for e in exp["by_seed"]] == [0, 1]
    assert "over 2 seeds (0, 1)" in stdout


# ---------------------------------------------------------------------------------------
# stand-in experiments
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StandIn:
    quick: bool = False


def _module(name, *, value_of_seed=lambda seed: 1.0, seed_dependent=True, spread_plot=False):
    module = types.ModuleType(f"curvdyn.experiments.{name}")
    module.NAME, module.TITLE = name, f"stand-in {name}"
    module.DEFAULT = StandIn()
    module.QUICK = StandIn(quick=True)
    if not seed_dependent:
        module.SEED_DEPENDENT = False

    def compute(settings, *, seed, progress):
        return {"value": np.array(value_of_seed(seed)), "seed": np.array(seed)}, {}

    def plot(data, config):  # a Figure, not pyplot: nothing stays open
        fig = Figure(figsize=(2, 1.5))
        fig.add_subplot().plot([0, 1], [0, float(data["value"])])
        return fig

    def plot_seeds(datas, configs, seeds):
        fig = Figure(figsize=(2, 1.5))
        fig.add_subplot().plot(seeds, [float(d["value"]) for d in datas], "o")
        return fig

    def claims(data, config):
        return [at_least("big", "The value is at least 0.5 (stand-in).", float(data["value"]), 0.5, "value")]

    module.compute, module.plot, module.claims = compute, plot, claims
    if spread_plot:
        module.plot_seeds = plot_seeds
    return module


@pytest.fixture
def registry(monkeypatch):
    def install(*modules):
        for m in modules:
            monkeypatch.setitem(sys.modules, f"curvdyn.experiments.{m.NAME}", m)
        monkeypatch.setattr(experiments, "_MODULES", tuple(m.NAME for m in modules))

    return install


def _cli(capsys, *args):
    try:
        code = main(["reproduce", "--jobs", "1", "--no-progress", *args])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_a_claim_failing_on_one_seed_is_seed_dependent_and_fails_check(registry, tmp_path, capsys):
    registry(_module("wobbly", value_of_seed=lambda s: 0.2 if s == 7 else 1.0, spread_plot=True))
    out = tmp_path / "o"
    code, stdout, _ = _cli(capsys, "--seeds", "3,7,11", "--check", "--out", str(out))
    assert code == 1
    assert "SEED-DEPENDENT" in stdout and "2/3" in stdout and "failing seeds 7" in stdout
    md = (out / "report.md").read_text()
    assert "**1 seed-dependent**" in md and "Passes on 2 of 3 seeds (failing seeds: 7)" in md
    assert (out / "wobbly" / "wobbly-seeds.png").is_file() and "wobbly/wobbly-seeds.png" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "SEED-DEPENDENT" in html
    assert sorted(p.name for p in (out / "wobbly").iterdir() if p.is_dir()) == ["seed-11", "seed-7"]
    # --replot measures seed 7 from its own file: make seed 11 fail too, in its data alone
    path = out / "wobbly" / "seed-11" / "data.npz"
    data, record, _ = io.load_npz(path)
    io.save_npz(path, dict(data, value=np.array(0.1)), record=record)
    code, stdout, _ = _cli(capsys, "--replot", "--out", str(out))
    assert code == 0 and "failing seeds 7, 11" in stdout  # without --check: the report only
    saved = json.loads((out / "wobbly" / "claims.json").read_text())
    assert saved["summary"][0]["failing_seeds"] == [7, 11] and saved["summary"][0]["median"] == pytest.approx(0.2)


def test_a_seed_independent_experiment_runs_once(registry, tmp_path, capsys):
    calls = []
    registry(_module("fixed", value_of_seed=lambda s: calls.append(s) or 1.0, seed_dependent=False), _module("var"))
    out = tmp_path / "o"
    code, stdout, _ = _cli(capsys, "--seeds", "2", "--check", "--out", str(out))
    assert code == 0 and calls == [0]
    assert "fixed: stand-in fixed [seed-independent: computed once]" in stdout and "var: stand-in var\n" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run"]["seeds"] == [0, 1]
    assert manifest["figures"]["fixed"]["seeds"] == [0] and manifest["figures"]["var"]["seeds"] == [0, 1]
    assert not (out / "fixed" / "seed-1").exists() and (out / "var" / "seed-1" / "data.npz").is_file()
    report = json.loads((out / "report.json").read_text())
    fixed, var = report["experiments"]
    assert fixed["seeds"] == [0] and fixed["summary"][0]["n_seeds"] == 1 and var["summary"][0]["n_seeds"] == 2
    assert fixed["seed_dependent"] is False and var["seed_dependent"] is True
    assert "| 0 (seed-independent: computed once) |" in (out / "report.md").read_text()
    assert _cli(capsys, "--replot", "--check", "--out", str(out))[0] == 0


def test_one_seed_reads_as_before(registry, tmp_path, capsys):
    registry(_module("solo"))
    out = tmp_path / "o"
    code, stdout, _ = _cli(capsys, "--seed", "4", "--out", str(out))
    assert code == 0 and "PASS" in stdout and "REPRODUCED" not in stdout
    md = (out / "report.md").read_text()
    assert "| experiment | claim | statement | measured | threshold | result |" in md and "seed: 4." in md
    assert not [p for p in (out / "solo").iterdir() if p.is_dir()]
    assert json.loads((out / "manifest.json").read_text())["run"]["seeds"] == [4]


def test_default_seeds_are_the_constant(registry, tmp_path, capsys):
    registry(_module("plain"))
    out = tmp_path / "o"
    assert _cli(capsys, "--out", str(out))[0] == 0
    assert json.loads((out / "manifest.json").read_text())["run"]["seeds"] == list(reproduce.DEFAULT_SEEDS)
    assert len(reproduce.DEFAULT_SEEDS) > 1


def test_seeds_from_two_runs_are_refused_on_replot(registry, tmp_path, capsys):
    registry(_module("alpha"), _module("beta"))
    a, b = tmp_path / "a", tmp_path / "b"
    assert _cli(capsys, "--seeds", "2", "--out", str(a))[0] == 0
    assert _cli(capsys, "--seeds", "2", "--out", str(b))[0] == 0
    run_a = json.loads((a / "manifest.json").read_text())["run"]["run_id"]
    run_b = json.loads((b / "manifest.json").read_text())["run"]["run_id"]
    for fname in ("data.npz", "config.json"):  # seed 1 of alpha from the other run
        (a / "alpha" / "seed-1" / fname).write_bytes((b / "alpha" / "seed-1" / fname).read_bytes())
    code, _, err = _cli(capsys, "--replot", "--out", str(a))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "refusing to report figures from different runs" in err
    assert f"run {run_a} (seed 0, 1, default): alpha, beta" in err and f"run {run_b} (seed 0, 1, default): alpha" in err
    # asked to report it anyway: that figure is an error, naming both runs
    code, _, _ = _cli(capsys, "--replot", "--allow-mixed", "--out", str(a))
    assert code == 1
    alpha = json.loads((a / "report.json").read_text())["experiments"][0]
    assert f"seed 1's data are from run {run_b} but seed 0's from run {run_a}" in alpha["error"]


def test_library_seed_arguments(registry, tmp_path):
    registry(_module("x"))
    with pytest.raises(ValueError, match="not both"):
        reproduce.reproduce(out=tmp_path / "o", seed=1, seeds=[1, 2])
    for bad, message in (([], "no seeds"), ([1, 1], "given more than once"), ([-2], "non-negative"), ([True], "non")):
        with pytest.raises(ValueError, match=message):
            reproduce.reproduce(out=tmp_path / "o", seeds=bad)
    assert not (tmp_path / "o").exists()
    run = reproduce.reproduce(out=tmp_path / "o", seeds=[5, 2])
    assert run.seeds == [2, 5] and run.results[0].seeds == [5, 2] and run.ok


# ---------------------------------------------------------------------------------------
# Fig. S2's draw: the hypothesis a seed could violate is drawn, not tuned
# ---------------------------------------------------------------------------------------


def test_straight_map_path_invertibility():
    from curvdyn.experiments.common import straight_map_path_invertible

    target = np.diag([3.0, -1.0])  # det < 0
    assert straight_map_path_invertible(0.01 * target, target)  # W(0) on the ray of W*
    assert not straight_map_path_invertible(0.01 * np.eye(2), target)  # det signs differ: the path crosses 0
    # same det sign, but W*⁻¹W(0) has two negative eigenvalues: the path is singular twice
    assert not straight_map_path_invertible(-0.01 * target, target)
    rot = np.array([[0.0, -1.0], [1.0, 0.0]])  # eigenvalues ±i: the path passes no singular map
    assert straight_map_path_invertible(0.01 * target @ rot, target)
    s = np.linspace(0.0, 1.0, 100001)[:, None, None]  # and by brute force along the lines
    for w0, ok in ((0.01 * np.eye(2), False), (0.01 * target @ rot, True)):
        dets = np.linalg.det((1 - s) * target + s * w0)
        assert bool(np.all(dets < 0)) is ok


def test_figS2_draws_weights_with_an_invertible_path():
    import jax

    from curvdyn.experiments import figS2
    from curvdyn.experiments.common import random_target, straight_map_path_invertible
    from curvdyn.init import init_random

    s = figS2.QUICK
    k_target, k_init = jax.random.split(jax.random.PRNGKey(0))  # seed 0: its first draw's path is singular
    target = random_target(k_target, s.target_singular_values)
    first = init_random(k_init, s.widths, s.init_scale)
    ws, draws = figS2.init_with_invertible_path(k_init, s.widths, s.init_scale, target, s.max_draws)
    product = lambda w: np.asarray(w[2] @ w[1] @ w[0])
    assert not straight_map_path_invertible(product(first), target)
    assert draws > 1 and straight_map_path_invertible(product(ws), target)
    for w in ws:  # still init_random's scale
        assert np.linalg.norm(np.asarray(w), 2) == pytest.approx(s.init_scale, rel=1e-12)
    with pytest.raises(RuntimeError, match="invertible straight map path in 1 draws"):
        figS2.init_with_invertible_path(k_init, s.widths, s.init_scale, target, 1)


def test_band_over_seeds_by_hand():
    from curvdyn.experiments.common import band_over_seeds

    t = np.array([1.0, 10.0, 100.0])
    curves = [(t, np.array([1.0, 1.0, 1.0])), (t, np.array([3.0, 3.0, 3.0])), (t[:2], np.array([2.0, 4.0]))]
    lo, med, hi = band_over_seeds(t, curves)
    # at t = 1: {1, 3, 2}; at t = 10: {1, 3, 4}; at t = 100 the third curve has ended: {1, 3}
    np.testing.assert_allclose(lo, [1.1, 1.2, 1.1], rtol=1e-14)
    np.testing.assert_allclose(med, [2.0, 3.0, 2.0], rtol=1e-14)
    np.testing.assert_allclose(hi, [2.9, 3.9, 2.9], rtol=1e-14)
    # interpolation is linear in log t: halfway between 1 and 100 in log is t = 10
    lo, med, hi = band_over_seeds(np.array([10.0]), [(np.array([1.0, 100.0]), np.array([[0.0, 2.0], [4.0, 6.0]]))])
    np.testing.assert_allclose(med, [[2.0, 4.0]], rtol=1e-14)


def test_claims_that_cannot_be_aggregated_fail_that_figure_only(registry, tmp_path, capsys):
    def claims(data, config):  # the statement changes with the seed: not one claim
        return [at_least("k", f"Statement {int(data['seed'])}.", 1.0, 0.5, "d")]

    bad = _module("bad")
    bad.claims = claims
    registry(bad, _module("good"))
    out = tmp_path / "o"
    code, stdout, _ = _cli(capsys, "--seeds", "2", "--out", str(out))
    assert code == 1 and "good: stand-in good" in stdout
    report = json.loads((out / "report.json").read_text())
    assert "statement differs between seeds" in report["experiments"][0]["error"]
    assert (
        report["experiments"][1]["error"] is None
        and json.loads((out / "manifest.json").read_text())["status"] == "failed"
    )
