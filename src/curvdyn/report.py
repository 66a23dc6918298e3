"""The reproduction report: ``report.md``, ``report.html`` (self-contained) and ``report.json``.

The report shows, for every experiment, its figure, its claims (the measured number, the
threshold, PASS/FAIL, and how it was measured), its configuration and timings, and a plain
note for every claim that fails. The numbers are taken from the claims measured on the
saved data files (see :mod:`curvdyn.reproduce`), so anyone can recompute them.

Every report states the run id, seed and resolution of each figure (from the record in its
``data.npz``) and opens with a warning when the figures are not one complete run: a run in
progress or killed, an interrupted run, a failed one, or (re-plots with ``--allow-mixed``)
figures from different runs.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from curvdyn import io
from curvdyn._version import __version__
from curvdyn.experiments.base import Claim

PAPER = "Curvature-corrected learning dynamics in deep linear neural networks"


def format_measured(value: float | None) -> str:
    """How a measured number is printed in the report (4 significant digits)."""
    if value is None or not math.isfinite(value):
        return "not finite"
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e5:
        return f"{value:.4g}"
    return f"{value:.3e}"


def result_word(claim: Claim) -> str:
    return claim.verdict


def failure_note(claim: Claim) -> str:
    """A plain sentence for a failed claim: what was measured against what was needed."""
    text = f"Measured {format_measured(claim.measured)}, but the claim needs {claim.threshold}."
    if claim.detail:
        text += " " + claim.detail
    return text


# ---------------------------------------------------------------------------------------
# shared pieces
# ---------------------------------------------------------------------------------------


def _summary(run) -> dict:
    claims = run.claims
    return {
        "n_experiments": len(run.results),
        "n_errors": sum(r.error is not None for r in run.results),
        "n_claims": len(claims),
        "n_passed": sum(c.passed for c in claims),
        "n_failed": sum(c.blocking for c in claims),
        "n_deviations": sum(c.verdict == "DISAGREES" for c in claims),
    }


def _resolution(run) -> str:
    found = run.resolutions
    if found == ["quick"]:
        return "quick (--quick: lower resolution)"
    if found == ["default"]:
        return "default resolution"
    if not found:
        return "unknown"
    return "mixed resolutions (see each experiment)"


def _seeds(run) -> str:
    return ", ".join(str(s) for s in run.seeds) if run.seeds else "?"


def _run_ids(run) -> str:
    if run.record is not None and not run.results:
        return run.record["run_id"]
    return ", ".join(run.runs) if run.results else "—"


def _figure_run(r) -> tuple[str, str, str]:
    """(run id, seeds, resolution) of one figure's data, or placeholders when it has no record."""
    if r.record is None:
        return "—", "—", "—"
    return r.record["run_id"], io.seeds_text(r.record), str(r.record["resolution"])


def _headline(run) -> str:
    """The first line of the warning at the report's top ('' for one complete run)."""
    if not run.problems:
        return ""
    return {
        "in-progress": "IN PROGRESS — incomplete",
        "interrupted": "INTERRUPTED — incomplete",
        "failed": "FAILED — incomplete",
    }.get(run.status, "NOT ONE COMPLETE RUN")


def _environment(run) -> dict | None:
    record = run.record or next((r.record for r in run.results if r.record), None)
    if record is None:
        return None
    return {k: record.get(k) for k in ("versions", "platform", "jax_backend", "jax_config")}


def _md_cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def report_dict(run) -> dict:
    """The machine-readable report (``report.json``)."""
    return {
        "paper": PAPER,
        "curvdyn_version": __version__,
        "status": run.status,
        "complete": run.complete,
        "problems": list(run.problems),
        "run": run.record,
        "seeds": run.seeds,
        "resolutions": run.resolutions,
        "replot": run.replot,
        "allow_mixed": run.allow_mixed,
        "not_run": list(run.not_run),
        "formats": list(run.formats),
        "started": run.started,
        "wall_time_s": run.wall_time_s,
        "command": run.command,
        "summary": _summary(run),
        "experiments": [
            {
                "name": r.name,
                "title": r.title,
                "run_id": r.record["run_id"] if r.record else None,
                "seeds": r.record["seeds"] if r.record else None,
                "resolution": r.record["resolution"] if r.record else None,
                "record": r.record,
                "timings": r.timings,
                "files": r.files,
                "error": r.error,
                "claims": [c.as_dict() for c in r.claims],
            }
            for r in run.results
        ],
    }


# ---------------------------------------------------------------------------------------
# markdown
# ---------------------------------------------------------------------------------------


def render_markdown(run) -> str:
    s = _summary(run)
    lines = ["# Reproduction report — curvdyn", ""]
    if run.problems:
        lines += [f"> **{_headline(run)}.**", ">"] + [f"> - {p}" for p in run.problems] + [""]
    lines += [
        f"Paper: *{PAPER}*. Generated by `curvdyn reproduce` (curvdyn {__version__}).",
        "",
        (
            f"- **Result:** {s['n_passed']} of {s['n_claims']} claims pass"
            + (f", **{s['n_failed']} fail**" if s["n_failed"] else "")
            + (f", {s['n_deviations']} disagree with the paper (documented below)" if s["n_deviations"] else "")
            + (f"; **{s['n_errors']} experiment(s) raised an error**" if s["n_errors"] else "")
            + "."
            if run.results
            else "- **Result:** no figure is finished yet."
        ),
        f"- Resolution: {_resolution(run)}; seed: {_seeds(run)}.",
        f"- Run: {_run_ids(run)}; directory status: {run.status}.",
        f"- Started {run.started} (UTC); total wall time {run.wall_time_s:.1f} s"
        + (" (re-plotted from saved data: compute times are those of the original run)" if run.replot else "")
        + ".",
    ]
    if run.not_run:
        lines.append(f"- Not written by this run: {', '.join(run.not_run)}.")
    if run.command:
        lines.append(f"- Command: `{run.command}`")
    lines += [
        "",
        "## Experiments",
        "",
        "| experiment | title | seed | run | claims passed | compute (s) | plot + claims (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in run.results:
        passed = f"{sum(c.passed for c in r.claims)} / {len(r.claims)}" if r.error is None else "ERROR"
        comp = r.timings.get("compute_s")
        rest = (r.timings.get("plot_s") or 0) + (r.timings.get("claims_s") or 0)
        run_id, seeds, _ = _figure_run(r)
        lines.append(
            f"| [{r.name}](#{r.name.lower()}) | {_md_cell(r.title)} | {seeds} | `{run_id}` | {passed} | "
            f"{'—' if comp is None else f'{comp:.1f}'} | {rest:.1f} |"
        )
    lines += [
        "",
        "## Claims",
        "",
        "| experiment | claim | statement | measured | threshold | result |",
        "|---|---|---|---|---|---|",
    ]
    for r in run.results:
        for c in r.claims:
            res = "PASS" if c.passed else f"**{c.verdict}**"
            lines.append(
                f"| {r.name} | `{c.key}` | {_md_cell(c.statement)} | {format_measured(c.measured)} | "
                f"{_md_cell(c.threshold)} | {res} |"
            )
        if r.error is not None:
            lines.append(f"| {r.name} | — | the experiment raised an error (see below) | — | — | **ERROR** |")
    failed = [(r, c) for r in run.results for c in r.claims if not c.passed]
    errors = [r for r in run.results if r.error is not None]
    if failed or errors:
        lines += [
            "",
            "## Where the measurements disagree with the paper",
            "",
            "Each of these claims was measured and did not meet its threshold; the numbers are reported as measured.",
            "",
        ]
        for r, c in failed:
            known = f" *Documented deviation:* {c.known_deviation}" if c.known_deviation else ""
            lines.append(
                f"- **{r.name} / `{c.key}`** ({c.verdict}) — {_md_cell(c.statement)} — {failure_note(c)}{known}"
            )
        for r in errors:
            lines.append(f"- **{r.name}** raised an error, so its claims were not measured (traceback below).")
    for r in run.results:
        lines += ["", f"## {r.name}", "", f"**{r.title}**", ""]
        run_id, seeds, resolution = _figure_run(r)
        lines += [f"Data from run `{run_id}`, seed {seeds}, resolution {resolution}.", ""]
        if r.description:
            lines += [r.description, ""]
        png = f"{r.name}/{r.name}.png"
        if png in r.files:
            lines += [f"![{r.name}]({png})", ""]
        if r.error is not None:
            lines += ["The experiment raised an error:", "", "```", r.error.rstrip(), "```", ""]
        if r.claims:
            lines += ["Claims, measured on the saved data:", ""]
            for c in r.claims:
                lines.append(
                    f"- `{c.key}` — **{result_word(c)}** — {c.statement} Measured **{format_measured(c.measured)}**"
                    f" (threshold {c.threshold})." + (f" {c.detail}" if c.detail else "")
                )
            lines.append("")
        if r.timings:
            t = r.timings
            lines.append(
                "Timings: "
                + ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in t.items() if v is not None)
                + "."
            )
            lines.append("")
        if r.files:
            lines.append("Files: " + ", ".join(f"[`{f}`]({f})" for f in r.files) + ".")
            lines.append("")
        if r.meta is not None:
            lines += [
                "<details><summary>Configuration (config.json)</summary>",
                "",
                "```json",
                json.dumps(r.meta.get("config"), indent=2, ensure_ascii=False),
                "```",
                "",
                "</details>",
            ]
    env = _environment(run)
    if env:
        lines += ["", "## Environment", "", "```json", json.dumps(env, indent=2), "```"]
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# html
# ---------------------------------------------------------------------------------------

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1200px;
       margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.pass { color: #176a1c; font-weight: bold; }
.fail { color: #b00020; font-weight: bold; }
img { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f7f7f7; padding: 0.7em; overflow-x: auto; font-size: 0.85em; }
code { font-size: 0.92em; }
.note { background: #fff4f4; border-left: 4px solid #b00020; padding: 0.5em 1em; }
"""


def _h(text) -> str:
    return html.escape(str(text))


def render_html(run) -> str:
    s = _summary(run)
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>curvdyn reproduction report</title><style>{_CSS}</style></head><body>",
        "<h1>Reproduction report — curvdyn</h1>",
    ]
    if run.problems:
        out += [f'<div class="note"><p><b>{_h(_headline(run))}.</b></p><ul>']
        out += [f"<li>{_h(p)}</li>" for p in run.problems]
        out += ["</ul></div>"]
    out += [
        f"<p>Paper: <em>{_h(PAPER)}</em>. Generated by <code>curvdyn reproduce</code> (curvdyn {_h(__version__)}).</p>",
        "<ul>",
        (
            f"<li><b>Result:</b> {s['n_passed']} of {s['n_claims']} claims pass"
            + (f', <span class="fail">{s["n_failed"]} fail</span>' if s["n_failed"] else "")
            + (f", {s['n_deviations']} disagree with the paper (documented below)" if s["n_deviations"] else "")
            + (f'; <span class="fail">{s["n_errors"]} experiment(s) raised an error</span>' if s["n_errors"] else "")
            + ".</li>"
            if run.results
            else "<li><b>Result:</b> no figure is finished yet.</li>"
        ),
        f"<li>Resolution: {_h(_resolution(run))}; seed: {_h(_seeds(run))}.</li>",
        f"<li>Run: <code>{_h(_run_ids(run))}</code>; directory status: {_h(run.status)}.</li>",
        f"<li>Started {_h(run.started)} (UTC); total wall time {run.wall_time_s:.1f} s"
        + (" (re-plotted from saved data)" if run.replot else "")
        + ".</li>",
    ]
    if run.not_run:
        out.append(f"<li>Not written by this run: {_h(', '.join(run.not_run))}.</li>")
    if run.command:
        out.append(f"<li>Command: <code>{_h(run.command)}</code></li>")
    out += [
        "</ul>",
        "<h2>Experiments</h2>",
        "<table><tr><th>experiment</th><th>title</th><th>seed</th><th>run</th><th>claims passed</th>"
        "<th>compute (s)</th><th>plot + claims (s)</th></tr>",
    ]
    for r in run.results:
        passed = (
            f"{sum(c.passed for c in r.claims)} / {len(r.claims)}"
            if r.error is None
            else '<span class="fail">ERROR</span>'
        )
        comp = r.timings.get("compute_s")
        rest = (r.timings.get("plot_s") or 0) + (r.timings.get("claims_s") or 0)
        run_id, seeds, _ = _figure_run(r)
        out.append(
            f'<tr><td><a href="#{_h(r.name)}">{_h(r.name)}</a></td><td>{_h(r.title)}</td><td>{_h(seeds)}</td>'
            f"<td><code>{_h(run_id)}</code></td><td>{passed}</td>"
            f'<td class="num">{"—" if comp is None else f"{comp:.1f}"}</td><td class="num">{rest:.1f}</td></tr>'
        )
    out += [
        "</table>",
        "<h2>Claims</h2>",
        "<table><tr><th>experiment</th><th>claim</th><th>statement</th>"
        "<th>measured</th><th>threshold</th><th>result</th></tr>",
    ]
    for r in run.results:
        for c in r.claims:
            cls = "pass" if c.passed else "fail"
            out.append(
                f"<tr><td>{_h(r.name)}</td><td><code>{_h(c.key)}</code></td><td>{_h(c.statement)}</td>"
                f'<td class="num">{_h(format_measured(c.measured))}</td><td>{_h(c.threshold)}</td>'
                f'<td class="{cls}">{result_word(c)}</td></tr>'
            )
        if r.error is not None:
            out.append(
                f"<tr><td>{_h(r.name)}</td><td>—</td><td>the experiment raised an error</td><td></td><td></td>"
                '<td class="fail">ERROR</td></tr>'
            )
    out.append("</table>")
    failed = [(r, c) for r in run.results for c in r.claims if not c.passed]
    errors = [r for r in run.results if r.error is not None]
    if failed or errors:
        out += ["<h2>Where the measurements disagree with the paper</h2>", '<div class="note"><ul>']
        for r, c in failed:
            known = f" <i>Documented deviation:</i> {_h(c.known_deviation)}" if c.known_deviation else ""
            out.append(
                f"<li><b>{_h(r.name)} / <code>{_h(c.key)}</code></b> ({c.verdict}) — {_h(c.statement)} — "
                f"{_h(failure_note(c))}{known}</li>"
            )
        for r in errors:
            out.append(f"<li><b>{_h(r.name)}</b> raised an error, so its claims were not measured.</li>")
        out.append("</ul></div>")
    for r in run.results:
        run_id, seeds, resolution = _figure_run(r)
        out += [
            f'<h2 id="{_h(r.name)}">{_h(r.name)}</h2>',
            f"<p><b>{_h(r.title)}</b></p>",
            f"<p>Data from run <code>{_h(run_id)}</code>, seed {_h(seeds)}, resolution {_h(resolution)}.</p>",
        ]
        if r.description:
            out.append(f"<p>{_h(r.description)}</p>")
        png = Path(run.out) / r.name / f"{r.name}.png"
        if f"{r.name}/{r.name}.png" in r.files and png.is_file():
            b64 = base64.b64encode(png.read_bytes()).decode("ascii")
            out.append(f'<p><img alt="{_h(r.name)}" src="data:image/png;base64,{b64}"></p>')
        if r.error is not None:
            out.append(f'<p class="fail">The experiment raised an error:</p><pre>{_h(r.error)}</pre>')
        if r.claims:
            out.append("<p>Claims, measured on the saved data:</p><ul>")
            for c in r.claims:
                cls = "pass" if c.passed else "fail"
                out.append(
                    f'<li><code>{_h(c.key)}</code> — <span class="{cls}">{result_word(c)}</span> — {_h(c.statement)} '
                    f"Measured <b>{_h(format_measured(c.measured))}</b> (threshold {_h(c.threshold)})."
                    + (f" {_h(c.detail)}" if c.detail else "")
                    + "</li>"
                )
            out.append("</ul>")
        if r.timings:
            out.append(
                "<p>Timings: "
                + ", ".join(f"{_h(k.removesuffix('_s'))} {v:.2f} s" for k, v in r.timings.items() if v is not None)
                + ".</p>"
            )
        if r.files:
            out.append(
                "<p>Files: " + ", ".join(f'<a href="{_h(f)}"><code>{_h(f)}</code></a>' for f in r.files) + ".</p>"
            )
        if r.meta is not None:
            out.append(
                "<details><summary>Configuration (config.json)</summary><pre>"
                + _h(json.dumps(r.meta.get("config"), indent=2, ensure_ascii=False))
                + "</pre></details>"
            )
    env = _environment(run)
    if env:
        out += ["<h2>Environment</h2>", f"<pre>{_h(json.dumps(env, indent=2))}</pre>"]
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(run) -> list[Path]:
    """Write ``report.md``, ``report.html`` and ``report.json`` into ``run.out`` (each atomically)."""
    out = Path(run.out)
    paths = [out / "report.md", out / "report.html", out / "report.json"]
    io.write_text(paths[0], render_markdown(run))
    io.write_text(paths[1], render_html(run))
    io.write_json(paths[2], report_dict(run))
    return paths
