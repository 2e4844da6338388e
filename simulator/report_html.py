"""The run's report as one self-contained HTML page (``--report DIR`` writes DIR/index.html).

No scripts, fonts or images are fetched: the style is inline and the plots are inline SVG. The
page holds the run's seed and mode, the fleet table, every step with its checks (and, for a
failed step, the devices' verdicts and console tails), a timeline of faults, events and
attestation results per device, and, for each guard burst, the guard's combined score of every
input against its calibrated threshold. Every string from the run is escaped. Pure: results
in, text out.
"""

from __future__ import annotations

import math
from html import escape

from edgeward.simulator.results import GuardBurst, RunResult

LEVEL = {"ok": "#1a7f37", "info": "#57606a", "warning": "#bf8700", "bad": "#cf222e"}
KIND = {"clean": "#1a7f37", "ood": "#bf8700", "adversarial": "#cf222e"}
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1f2328;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #d0d7de;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#f6f8fa}.pass{color:#1a7f37;font-weight:600}
.fail{color:#cf222e;font-weight:600}pre{background:#f6f8fa;padding:6px;font-size:12px;
max-height:240px;overflow:auto;white-space:pre-wrap}.muted{color:#57606a}svg{background:#fff;
border:1px solid #d0d7de}
"""


def _t(x: object) -> str:
    return escape(str(x), quote=True)


def _timeline_svg(result: RunResult) -> str:
    rows = ["fleet", *[d.name for d in result.devices]]
    events = [e for e in result.timeline if e.t >= -5]
    if not events:
        return "<p class=muted>no events</p>"
    t_max = max(max(e.t for e in events), 1.0)
    left, width, row_h = 130, 1000, 28
    height = row_h * len(rows) + 30
    scale = (width - left - 20) / t_max
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="timeline">']
    for i, r in enumerate(rows):
        y = 15 + i * row_h
        parts.append(f'<text x="4" y="{y + 4}" font-size="12">{_t(r)}</text>'
                     f'<line x1="{left}" x2="{width - 10}" y1="{y}" y2="{y}" stroke="#d0d7de"/>')
    step = max(1, int(t_max / 10))
    for s in range(0, int(t_max) + 1, step):
        x = left + s * scale
        parts.append(f'<text x="{x:.1f}" y="{height - 4}" font-size="10" '
                     f'text-anchor="middle">{s}s</text>')
    for e in events:
        row = rows.index(e.device) if e.device in rows else 0
        x, y = left + max(e.t, 0) * scale, 15 + row * row_h
        square = e.kind == "attestation"
        shape = (f'<rect x="{x - 4:.1f}" y="{y - 4}" width="8" height="8"' if square
                 else f'<circle cx="{x:.1f}" cy="{y}" r="4"')
        parts.append(f'{shape} fill="{LEVEL.get(e.level, "#57606a")}" class="ev-{_t(e.kind)}">'
                     f'<title>{e.t:.1f} s {_t(e.kind)}: {_t(e.text)}</title>'
                     f'{"</rect>" if e.kind == "attestation" else "</circle>"}')
    parts.append("</svg>")
    return "".join(parts)


def _guard_svg(g: GuardBurst) -> str:
    width, height, pad = 640, 260, 40
    finite = [s["combined"] for s in g.samples if math.isfinite(s["combined"])]
    thr = g.threshold if math.isfinite(g.threshold) and g.threshold > 0 else 1.0
    top = min(max([thr * 1.5, *finite]), thr * 20)
    n = max(len(g.samples), 1)

    def y(v: float) -> float:
        v = top if not math.isfinite(v) else min(v, top)
        return height - pad - (v / top) * (height - 2 * pad)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'role="img" aria-label="guard scores on {_t(g.device)}" class="guard-plot">',
             f'<line x1="{pad}" x2="{width - 10}" y1="{y(g.threshold):.1f}" '
             f'y2="{y(g.threshold):.1f}" stroke="#cf222e" stroke-dasharray="6 4"/>',
             f'<text x="{width - 12}" y="{y(g.threshold) - 4:.1f}" font-size="11" '
             f'text-anchor="end" fill="#cf222e">threshold {g.threshold:.2f}</text>',
             f'<line x1="{pad}" x2="{pad}" y1="{pad / 2}" y2="{height - pad}" stroke="#57606a"/>',
             f'<text x="4" y="{pad / 2 + 4}" font-size="10">{top:.1f}</text>',
             f'<text x="{width / 2}" y="{height - 8}" font-size="11" text-anchor="middle">'
             "input, in the order sent (score capped at the top of the plot)</text>"]
    for i, s in enumerate(g.samples):
        x = pad + 8 + i * (width - pad - 24) / n
        parts.append(f'<circle cx="{x:.1f}" cy="{y(s["combined"]):.1f}" r="3.5" '
                     f'fill="{KIND.get(s["kind"], "#57606a")}" class="sample-{_t(s["kind"])}">'
                     f'<title>{_t(s["kind"])}: score {s["combined"]:.2f}, '
                     f'{_t(s["severity"])}</title></circle>')
    for j, (k, c) in enumerate(KIND.items()):
        parts.append(f'<circle cx="{pad + 20 + j * 110}" cy="12" r="4" fill="{c}"/>'
                     f'<text x="{pad + 28 + j * 110}" y="16" font-size="11">{k}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render(result: RunResult) -> str:
    ok = result.exit_code == 0
    h = ["<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
         "<title>edgeward simulator report</title>",
         f"<style>{CSS}</style></head><body>",
         "<h1>edgeward simulator report</h1>",
         f'<p id=verdict class="{"pass" if ok else "fail"}">{result.passed} of '
         f"{len(result.steps)} steps passed; exit code {result.exit_code}</p>",
         f"<p>Seed <b id=seed>{result.seed}</b> · mode <b>{_t(result.mode)}</b> "
         f"({_t(result.mode_reason)}) · board <b>{_t(result.board)}</b> · scenarios "
         f"{_t(', '.join(result.scenarios))} · {result.duration:.1f} s</p>"]
    if result.setup_error:
        h.append(f"<p class=fail>The simulator could not run: {_t(result.setup_error)}</p>")
    h.append("<h2>Fleet</h2><table id=fleet><tr><th>device</th><th>board</th><th>state</th>"
             "<th>status</th><th>attestation</th><th>hardware</th><th>messages</th>"
             "<th>highest seq</th><th>missing</th><th>by type</th></tr>")
    for d in result.devices:
        types = ", ".join(f"{k} {v}" for k, v in sorted(d.counts.items()))
        h.append(f"<tr><td>{_t(d.name)}</td><td>{_t(d.board)}</td><td>{_t(d.state)}</td>"
                 f"<td>{_t(d.status)}</td><td>{_t(d.attestation)}</td><td>{d.hardware}</td>"
                 f"<td>{d.messages}</td><td>{d.highest}</td><td>{_t(d.missing)}</td>"
                 f"<td>{_t(types)}</td></tr>")
    h.append("</table><h2>Scenarios</h2><table id=steps><tr><th>scenario</th><th>step</th>"
             "<th>device</th><th>result</th><th>time</th><th>checks</th></tr>")
    for s in result.steps:
        checks = "<br>".join(f'<span class="{"pass" if c.ok else "fail"}">'
                             f'{"✓" if c.ok else "✗"}</span> {_t(c.device)}: {_t(c.detail)}'
                             for c in s.checks)
        if s.output:
            checks = f"<i>{_t(s.output)}</i><br>" + checks
        if s.error:
            checks += f"<br><span class=fail>{_t(s.error)}</span>"
        for v in s.devices:
            checks += f"<br><b>{_t(v.device)}</b>: {_t(v.verdict)}<pre>{_t(v.console)}</pre>"
        h.append(f"<tr><td>{_t(s.scenario)}</td><td>{_t(s.step)}</td><td>{_t(s.target or '')}"
                 f'</td><td class="{"pass" if s.ok else "fail"}">{"pass" if s.ok else "FAIL"}'
                 f"</td><td>{s.duration:.1f} s</td><td>{checks}</td></tr>")
    h.append("</table><h2>Timeline</h2>")
    h.append("<p class=muted>Circles: faults, steps and events; squares: attestation results "
             "(green affirming, amber warning, red contraindicated or a failed step). Hover for "
             "details.</p>")
    h.append(_timeline_svg(result))
    h.append("<table id=timeline><tr><th>t</th><th>device</th><th>kind</th><th>what</th></tr>")
    for e in result.timeline:
        h.append(f'<tr><td>{e.t:.1f} s</td><td>{_t(e.device or "fleet")}</td><td>{_t(e.kind)}'
                 f'</td><td style="color:{LEVEL.get(e.level)}">{_t(e.text)}</td></tr>')
    h.append("</table><h2>Inference guard</h2>")
    if not result.guard:
        h.append("<p class=muted>No guard burst in this run.</p>")
    for g in result.guard:
        flagged = {k: (sum(s["flagged"] for s in g.samples if s["kind"] == k),
                       sum(s["kind"] == k for s in g.samples)) for k in KIND}
        h.append(f"<h3>{_t(g.device)}: {_t(g.step)}</h3><p>"
                 + ", ".join(f"{k}: {a} of {b} flagged" for k, (a, b) in flagged.items())
                 + "</p>" + _guard_svg(g))
    h.append("</body></html>")
    return "\n".join(h)
