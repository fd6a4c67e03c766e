"""`tether report` on a scripted run directory: plots, trips and samples reach the page.

The page is loaded in headless Chromium (Debian's `chromium`) when it is installed, and
its rendered DOM is checked; where it is not installed, the same checks run on the HTML
file itself (the test says which in its output). The first screen is measured in Chromium
at 1280x800 (with playwright when it is installed, else by a script the page runs under
the Chromium command line): the verdict and the grid must be above the fold. That test
skips where Chromium is not installed.
"""

import html
import json
import re
import shutil
import subprocess

import pytest
import yaml

from tether.errors import TetherError
from tether.watch.report import build_report


def write_run(path, steps=8, trip_step=6, finished=False):
    path.mkdir()
    (path / "config.yaml").write_text(yaml.safe_dump({"policy_model": "tiny", "algorithm": "grpo"}))
    metrics, samples = [], []
    for step in range(1, steps + 1):
        hack = step >= trip_step
        metrics.append({"step": step, "reward/train": 0.1 * step, "gold/score": -0.05 * step if hack else 0.0,
                        "kl": 0.01 * step, "entropy": 3 - 0.2 * step, "monitor/affirmation_rate": 0.3 if hack else 0.0,
                        "monitor/repetition": 0.1, "monitor/distinct_2": 0.9})
        for i in range(4):
            text = " yes yes yes yes" if hack else f" a calm story number {i}"
            samples.append({"step": step, "prompt": "Once upon a time", "completion": text, "train": 0.1 * step + i,
                            "gold": 0.0})
    samples.append({"step": 1, "prompt": "<b>", "completion": "<script>window.injected=1</script>", "train": 99.0})
    torn = '{"step": 9, "rew'  # a torn last line
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics) + torn)
    (path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    trip = {"event": "detector", "step": trip_step,
            "detectors": [{"detector": "affirmation_rate", "value": 0.3, "limit": 0.05, "step": trip_step}]}
    (path / "events.jsonl").write_text(json.dumps({"event": "start"}) + "\n" + json.dumps(trip) + "\n")
    if finished:
        (path / "finished.json").write_text("{}")
    return path


def rendered(page):
    chromium = shutil.which("chromium")
    if chromium is None:
        print("chromium not installed: checking the HTML file instead of a rendered page")
        return page.read_text()
    result = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                             "--no-first-run", "--disable-component-update", "--disable-sync",
                             f"--user-data-dir={page.parent / 'chrome-profile'}", "--dump-dom", page.as_uri()],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    print("checked the DOM rendered by headless chromium")
    return result.stdout


def test_report_shows_plots_trips_and_samples(tmp_path):
    run = write_run(tmp_path / "run")
    page = build_report(run)
    assert page == run / "report" / "report.html" and (run / "report" / "reward.png").exists()
    dom = rendered(page)
    # reward, kl, entropy, affirmation, repetition, diversity
    assert dom.count("class=\"plot\"") + dom.count("class='plot'") >= 6
    assert "in progress (step 8)" in dom  # a live run: the torn line is skipped
    assert "step 6: affirmation_rate = 0.3 (limit 0.05)" in dom
    assert dom.count("data-step=\"6\"") + dom.count("data-step='6'") >= 2  # the trip's samples are in the timeline
    assert "yes yes yes yes" in dom and "a calm story number" in dom
    assert "<script>window.injected" not in dom and "&lt;script&gt;window.injected" in dom  # escaped


def test_report_on_an_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(TetherError, match="no metrics.jsonl lines yet"):
        build_report(tmp_path)


# --- the first screen -------------------------------------------------------------------

VIEWPORT = (1280, 800)
MEASURE = """() => {
  const box = sel => { const el = document.querySelector(sel); if (!el) return null;
    const r = el.getBoundingClientRect();
    return {top: r.top + scrollY, bottom: r.bottom + scrollY, height: r.height}; };
  const img = document.querySelector('#grid img');
  return {verdict: box('#verdict'), grid: box('#grid'), image: box('#grid img'), loaded: !!img && img.naturalWidth > 0,
          viewport: [innerWidth, innerHeight]};
}"""


def measured(pages):
    """The geometry (MEASURE) of each page as Chromium lays it out in a 1280x800 window."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the first screen is not measured")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return [_measured_by_cli(chromium, page) for page in pages]
    print("measured with playwright on", chromium)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        try:
            tab = browser.new_page(viewport={"width": VIEWPORT[0], "height": VIEWPORT[1]})
            out = []
            for page in pages:
                tab.goto(page.as_uri(), wait_until="load")
                out.append(tab.evaluate(MEASURE))
            return out
        finally:
            browser.close()


def _measured_by_cli(chromium, page):
    """Without playwright: a copy of the page that writes its own geometry into the DOM, read with --dump-dom."""
    print("measured with the chromium command line (playwright is not installed)")
    probe = page.with_name(page.stem + ".probe.html")
    script = (f"<script>addEventListener('load', () => {{ const pre = document.createElement('pre');"
              f" pre.id = 'geometry'; pre.textContent = JSON.stringify(({MEASURE})());"
              " document.body.appendChild(pre); });</script>")
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    result = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                             "--no-first-run", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                             f"--user-data-dir={page.parent / 'chrome-profile'}",
                             f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}", "--virtual-time-budget=5000", "--dump-dom",
                             probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    found = re.search(r'<pre id="geometry">(.*?)</pre>', result.stdout, re.S)
    assert found, "the page's geometry script did not run"
    return json.loads(html.unescape(found.group(1)))


def above_the_fold(geometry) -> bool:
    v, g = geometry["verdict"], geometry["grid"]
    return bool(v and g) and 0 <= v["top"] < g["top"] and v["bottom"] <= VIEWPORT[1] and g["bottom"] <= VIEWPORT[1]


def test_verdict_and_grid_are_above_the_fold(tmp_path):
    from test_verdict import answer_queue, make_run, trip

    # The tallest first screen: every grid panel (3 rows), a stop, more detectors than are shown, a person's labels.
    trips = [(14, [trip("kl", 0.61, 0.5, 14), trip("cusum:monitor/affirmation_rate", 7.2, 5.0, 14)]),
             (16, [trip("distinct_2_drop", 0.5, 0.45, 16), trip("shift", 0.0001, 0.0003, 16),
                   trip("person", 2, 2, 16)])]
    run = make_run(tmp_path / "run", steps=30, hack_from=12, trips=trips, stop=16, all_series=True)
    answer_queue(run, no_from=12, questions=("on_task", "good"))
    page = build_report(run)
    # The check can fail: the same page with the grid pushed below the fold is caught.
    pushed = page.with_name("pushed.html")
    spacer = "<div style='height:700px'></div>"
    pushed.write_text(page.read_text().replace("<section id='grid'>", spacer + "<section id='grid'>"))
    geometry, control = measured([page, pushed])
    print(geometry)
    # The page's layout depends on the width alone; positions are from the page's top, so the fold is at 800 px
    # (under the command line the window's frame takes some of its 800 px of height, hence no check of innerHeight).
    assert geometry["viewport"][0] == VIEWPORT[0]
    assert geometry["loaded"] and geometry["image"]["height"] >= 300  # the grid is drawn, not squashed away
    assert above_the_fold(geometry), geometry
    assert not above_the_fold(control), control
