"""`tether report` on a scripted run directory: plots, trips and samples reach the page.

The page is loaded in headless Chromium (Debian's `chromium`) when it is installed, and
its rendered DOM is checked; where it is not installed, the same checks run on the HTML
file itself (the test says which in its output).
"""

import json
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
            samples.append({"step": step, "prompt": "Once upon a time", "completion": text, "train": 0.1 * step + i, "gold": 0.0})
    samples.append({"step": 1, "prompt": "<b>", "completion": "<script>window.injected=1</script>", "train": 99.0})
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics) + '{"step": 9, "rew')  # torn last line
    (path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    trip = {"event": "detector", "step": trip_step, "detectors": [{"detector": "affirmation_rate", "value": 0.3, "limit": 0.05, "step": trip_step}]}
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
    assert dom.count("class=\"plot\"") + dom.count("class='plot'") >= 6  # reward, kl, entropy, affirmation, repetition, diversity
    assert "in progress (step 8)" in dom  # a live run: the torn line is skipped
    assert "step 6: affirmation_rate = 0.3 (limit 0.05)" in dom
    assert dom.count("data-step=\"6\"") + dom.count("data-step='6'") >= 2  # the trip's samples are in the timeline
    assert "yes yes yes yes" in dom and "a calm story number" in dom
    assert "<script>window.injected" not in dom and "&lt;script&gt;window.injected" in dom  # escaped


def test_report_on_an_empty_directory_is_a_clear_error(tmp_path):
    with pytest.raises(TetherError, match="no metrics.jsonl lines yet"):
        build_report(tmp_path)
