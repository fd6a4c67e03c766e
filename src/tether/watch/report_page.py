"""The report's page, top to bottom: verdict, grid, samples side by side, then the detail.

    page(run, config, verdict, grid_png, columns, detail_parts)   # the whole HTML text

The first screen (1280x800) holds the verdict (`<section id="verdict">`: healthy / hacking
likely from step k / stopped at step k, the signals behind it and a person's labels) and
the grid of small multiples (`<section id="grid">`); tests/test_report.py checks that in
Chromium. Below them, the samples at the steps that matter (`key_steps`), then the detail
the page has always had. All text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import struct

from tether.watch.verdict import Verdict

e = html.escape

STYLE = """<style>
body{font-family:sans-serif;max-width:1240px;margin:0 auto;padding:0 12px;color:#222}
img{max-width:100%}
#verdict{margin:8px 0 4px;padding:6px 14px;border-left:8px solid #888;background:#f6f6f6}
#verdict.healthy{border-color:#2a8a3a;background:#eef8ef}
#verdict.hacking{border-color:#d9822b;background:#fdf3e8}
#verdict.stopped{border-color:#b00;background:#fbecec}
#verdict .run{margin:2px 0;font-size:13px;color:#555}
#verdict h1{margin:2px 0 4px;font-size:26px}
#verdict ul{margin:2px 0;padding-left:20px;font-size:14px}
#verdict p{margin:3px 0;font-size:13px}
#grid{margin:0}
#grid img{display:block;width:100%;height:auto}
#grid p{margin:0;font-size:12px;color:#555}
.columns{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:12px}
.column h3{margin:4px 0;font-size:15px}
.figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:8px}
.figures figure{margin:0}
.trip{color:#b00}
.sample{border-left:3px solid #ccc;padding-left:8px;margin:6px 0;white-space:pre-wrap;max-height:20em;overflow:auto}
td,th{padding:2px 8px;text-align:left}
</style>"""
CLASSES = {"healthy": "healthy", "hacking likely": "hacking", "stopped": "stopped"}


def page(run_name: str, run_line: str, verdict: Verdict, grid_png: bytes | None, columns: str, detail: list[str],
         no_labels_hint: str) -> str:
    """The whole page: `columns` is `samples_html`'s section, `detail` the detail's HTML parts."""
    parts = ["<!doctype html><html><head><meta charset='utf-8'>",
             f"<meta name='viewport' content='width=device-width'><title>tether report: {e(run_name)}</title>",
             STYLE, "</head><body>", verdict_html(verdict, run_line, no_labels_hint), grid_html(grid_png, verdict),
             columns, "<section id='detail'><h2>Detail</h2>", *detail, "</section></body></html>"]
    return "\n".join(parts)


def verdict_html(v: Verdict, run_line: str, no_labels_hint: str) -> str:
    headline = v.headline[:1].upper() + v.headline[1:]
    parts = [f"<section id='verdict' class='{CLASSES[v.state]}' data-state='{e(v.state)}' "
             f"data-step='{'' if v.step is None else v.step}'>",
             f"<p class='run'>{e(run_line)}</p>", f"<h1 class='headline'>{e(headline)}</h1>", "<ul class='signals'>"]
    parts += [f"<li data-signal='{e(s.name)}'>{e(s.text)}</li>" for s in v.signals]
    if v.more:
        plural = "s" if v.more > 1 else ""
        parts.append(f"<li class='more'>and {v.more} more detector{plural} (listed in the detail)</li>")
    parts.append("</ul>")
    if v.state == "stopped":
        best = (f"the checkpoint marked best is step {v.best} (best.json), the last policy whose own batch passed"
                if v.best is not None
                else "no saved checkpoint wrote a batch that passed: the base model is the one to keep")
        parts.append(f"<p class='best'>{e(best)}.</p>")
    if v.labels:
        parts.append(f"<p class='labels'>A person's labels on this run's samples: {e(v.labels_line())}.</p>")
    else:
        parts.append(f"<p class='labels'>No labels on this run's samples; {no_labels_hint}.</p>")
    parts.append("</section>")
    return "\n".join(parts)


def grid_html(png: bytes | None, v: Verdict) -> str:
    if png is None:
        return "<section id='grid'><p>No signals logged yet.</p></section>"
    marks = ("<p>red dashed: a detector tripped; red x: on the series it watches; shaded: from the first trip"
             + ("; black: the stop" if v.state == "stopped" else "") + ".</p>") if v.first_trip is not None else ""
    width, height = struct.unpack(">II", png[16:24])  # the PNG's IHDR: the page is laid out before it decodes
    return (f"<section id='grid'><img class='grid' width='{width}' height='{height}' "
            f"alt='the run&#39;s signals against step' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
            f"{marks}</section>")


def key_steps(steps: list[int], first_trip: int | None) -> list[tuple[str, int]]:
    """(label, step) for the side-by-side samples: before, at and after the first trip; else start, middle, end."""
    if not steps:
        return []
    if first_trip is None:
        picked = [("start", steps[0]), ("middle", steps[len(steps) // 2]), ("end", steps[-1])]
    else:
        before = [s for s in steps if s < first_trip]
        at = [s for s in steps if s >= first_trip]
        picked = ([("before the first trip", before[-1])] if before else []) + (
            [("at the first trip", at[0])] + ([("after it", at[-1])] if at[-1] != at[0] else []) if at else [])
    seen, out = set(), []
    for label, step in picked:
        if step not in seen:
            seen.add(step)
            out.append((label, step))
    return out


def sample_html(s: dict, step: int) -> str:
    others = "".join(f", {name} {s[name]:+.2f}" for name in ("gold", "embedding_kl", "utility")
                     if isinstance(s.get(name), (int, float)))
    return (f"<div class='sample' data-step='{step}'><b>train {s['train']:+.2f}{others}</b>\n"
            f"<i>{e(s['prompt'])}</i>{e(s['completion'])}</div>")


def samples_html(samples: list[dict], verdict: Verdict, per_step: int) -> str:
    """The run's samples side by side at `key_steps`: at each, the `per_step` the train judge paid most."""
    chosen = key_steps(sorted({s["step"] for s in samples}), verdict.first_trip)
    if not chosen:
        return "<section id='samples'><h2>Samples</h2><p>No samples logged yet.</p></section>"
    parts = ["<section id='samples'><h2>Samples, side by side (the train judge's favourites at each step)</h2>",
             "<div class='columns'>"]
    for label, step in chosen:
        rows = sorted((s for s in samples if s["step"] == step), key=lambda s: -s["train"])[:per_step]
        parts.append(f"<div class='column' data-step='{step}'><h3>step {step}: {e(label)}</h3>")
        parts += [sample_html(s, step) for s in rows]
        parts.append("</div>")
    parts.append("</div></section>")
    return "\n".join(parts)
