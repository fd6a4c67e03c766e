"""`tether report DEPLOYMENT`: one page with the deployment's timeline, read top to bottom.

    DEPLOYMENT/report/report.html   the verdict line, the timeline figure, the events, one section a version
    DEPLOYMENT/report/timeline.png  per live-monitor window: the judge's mean and the thumbs-up rate, with the
                                     moments versions went live (green), were rejected (grey) or rolled back (red)

Per version it shows what keeps an interpretation of the model current: its gate (canary
judge and gold means beside the base's, drift from the base and from the version it replaced,
the audit's verdict), how often the judge agreed with the users' thumbs on the version's own
replies, what the live detectors saw, and samples (canary and served).
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from tether.deploy.store import Store
from tether.infra import atomic

e = html.escape


def version_stats(store: Store) -> dict[str, dict]:
    """Per version: replies served, thumbs, the thumbs-up rate, and the judge's agreement with the thumbs."""
    rows = store.interactions()
    thumbs: dict[str, str] = {}
    for f in store.feedback():
        if "thumb" in f:
            thumbs[f["of"]] = f["thumb"]  # the latest thumb on a reply
    stats: dict[str, dict] = {}
    for r in rows:
        s = stats.setdefault(r["version"], {"served": 0, "up": 0, "down": 0, "agree": 0, "judged": 0})
        s["served"] += 1
        thumb = thumbs.get(r["id"])
        if thumb is None:
            continue
        s[thumb] += 1
        if r.get("scores"):
            s["judged"] += 1
            s["agree"] += int((r["scores"]["total"] > 0) == (thumb == "up"))
    for s in stats.values():
        rated = s["up"] + s["down"]
        s["up_rate"] = s["up"] / rated if rated else None
        s["judge_agreement"] = s["agree"] / s["judged"] if s["judged"] else None
    return stats


def build_deploy_report(folder: str | Path) -> Path:
    store = Store(folder)
    store.check()
    out = store.path / "report"
    out.mkdir(exist_ok=True)
    events, versions = store.events(), store.versions()
    stats = version_stats(store)
    live = store.live()
    rollbacks = [x for x in events if x["event"] == "rollback"]
    rejected = [x for x in events if x["event"] == "rejected"]
    trips = [x for x in events if x["event"] == "detector"]
    headline = (f"{live['version']} is live ({live.get('why', '')}); {len(versions)} version(s), "
                f"{len(rejected)} rejected by the gate, {len(rollbacks)} rollback(s), {len(trips)} live detector trip(s)")
    png = _timeline(store, events)
    atomic.write_bytes(out / "timeline.png", png)
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>tether deployment: "
             f"{e(store.path.name)}</title><style>body{{font-family:sans-serif;max-width:1240px;margin:0 auto;"
             "padding:0 12px}} td,th{padding:2px 8px;text-align:left;vertical-align:top} .sample{border-left:3px solid "
             "#ccc;padding-left:8px;margin:4px 0;white-space:pre-wrap} .bad{color:#b00} img{max-width:100%}</style>"
             "</head><body>",
             f"<section id='verdict'><h1>{e(headline)}</h1><p>{e(str(store.path))}</p></section>",
             "<section id='timeline'><img alt='timeline' src='timeline.png'></section>",
             "<h2>Events</h2><table><tr><th>time</th><th>event</th><th>version</th><th>why</th></tr>"]
    shown = [x for x in events if x["event"] not in ("window",)]
    for x in shown:
        cls = " class='bad'" if x["event"] in ("rollback", "rejected", "detector", "update_failed") else ""
        why = x.get("why") or x.get("error") or ", ".join(d.get("detector", "") for d in x.get("detectors", []))
        parts.append(f"<tr{cls}><td>{e(x['time'])}</td><td>{e(x['event'])}</td><td>{e(str(x.get('version', '')))}</td>"
                     f"<td>{e(str(why or ''))}</td></tr>")
    parts.append("</table><h2>Versions</h2>")
    parts += _versions_html(store, versions, stats, live["version"])
    parts.append("</body></html>")
    atomic.write_text(out / "report.html", "\n".join(parts))
    return out / "report.html"


def _versions_html(store: Store, versions: list[dict], stats: dict, live: str) -> list[str]:
    """One section a version, newest first: status and why, served and thumbs, gate, audit, samples."""
    from tether.infra import jsonl
    from tether.infra.texts import plain_text

    parts, served = [], {}
    for r in store.interactions():
        served.setdefault(r["version"], []).append(r)
    for v in reversed(versions):
        name = v["version"]
        s = stats.get(name, {})
        gate = v.get("gate") or {}
        parts.append(f"<section class='version' id='{e(name)}'><h3>{e(name)} ({e(v['status'])}"
                     f"{', live' if name == live else ''}) from {e(str(v.get('parent')))}</h3>"
                     f"<p>{e(v.get('why', ''))}</p>")
        facts = {"served": s.get("served", 0), "thumbs up / down": f"{s.get('up', 0)} / {s.get('down', 0)}",
                 "judge agrees with thumbs": _pct(s.get("judge_agreement")),
                 **{k: (f"{val:+.3f}" if isinstance(val, float) else val) for k, val in gate.items()}}
        parts.append("<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(str(val))}</td></tr>" for k, val in facts.items())
                     + "</table>")
        gate_file = store.version_dir(name) / "gate.json"
        audit = json.loads(gate_file.read_text(encoding="utf-8")).get("audit") if gate_file.is_file() else None
        if audit:
            parts.append(f"<p>audit: {e(audit['verdict'])}</p>")
        canary = store.version_dir(name) / "canary.jsonl"
        samples = [("canary", r["prompt"], c) for r in jsonl.read(canary)[:2] for c in r["completions"][:1]]
        samples += [("served", r["prompt"], r["completion"]) for r in served.get(name, [])[-2:]]
        parts += [f"<div class='sample'><b>{kind}</b> {e(plain_text(prompt))}<i>{e(text)}</i></div>"
                  for kind, prompt, text in samples]
        parts.append("</section>")
    return parts


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _timeline(store: Store, events: list[dict]) -> bytes:
    """Per window of the live monitors: the judge's mean reward; thumbs-up rate per 16 replies; version marks."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = store.interactions()
    index = {r["id"]: i for i, r in enumerate(rows)}
    thumbs = {f["of"]: f["thumb"] for f in store.feedback() if "thumb" in f}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 4.6), sharex=True)
    judged = [(i, r["scores"]["total"]) for i, r in enumerate(rows) if r.get("scores")]
    if judged:
        x, y = zip(*judged)
        k = 16
        smooth = np.convolve(y, np.ones(k) / k, mode="valid") if len(y) >= k else np.array(y)
        top.plot(x[len(x) - len(smooth):], smooth, color="#36c")
    top.set_ylabel("judge (mean of 16)")
    rated = [(index[i], t == "up") for i, t in thumbs.items() if i in index]
    rated.sort()
    if rated:
        x, y = zip(*rated)
        k = min(16, len(y))
        bottom.plot(x[k - 1:], np.convolve(np.array(y, dtype=float), np.ones(k) / k, mode="valid"), color="#c63")
    bottom.set_ylabel("thumbs up (of 16)")
    bottom.set_xlabel("interaction")
    when = _event_positions(rows, events)
    for ax in (top, bottom):
        for pos, kind, version in when:
            color = {"live": "#2a8a3a", "rejected": "#999", "rollback": "#b00"}[kind]
            ax.axvline(pos, color=color, lw=1, ls="--" if kind == "rejected" else "-")
            if ax is top:
                ax.text(pos, ax.get_ylim()[1], f" {version}", color=color, fontsize=8, va="top")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def _event_positions(rows: list[dict], events: list[dict]) -> list[tuple[int, str, str]]:
    """Where in the stream of interactions each version went live, was rejected or rolled back (by time)."""
    import datetime as dt

    times = [r["time"] for r in rows]
    found = []
    for x in events:
        if x["event"] not in ("live", "rejected", "rollback"):
            continue
        t = dt.datetime.strptime(x["time"], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC).timestamp()
        found.append((int(np.searchsorted(times, t)), x["event"], x.get("version", "")))
    return found
