"""The report's verdict (`tether.watch.verdict`, read by `verdict_files`) on run folders written by the package.

A run folder here is what a tune run leaves: `RunDir.start` (config.yaml, the start event),
`RunDir.append` (metrics.jsonl, samples.jsonl), `RunDir.event` (detector trips, early stop),
`RunDir.finish` (finished.json), the spot check's queue (`spotcheck.queue`) and a person's
answers on it (`LabelsFile`). No part of the verdict is mocked.
"""

import json

import pytest

from tether.errors import TetherError
from tether.infra.rundir import RunDir
from tether.labels.items import read_items
from tether.labels.store import LabelsFile
from tether.watch import spotcheck
from tether.watch.verdict import decide
from tether.watch.verdict_files import read_verdict


def trip(detector, value, limit, step):
    return {"detector": detector, "value": value, "limit": limit, "step": step}


def make_run(path, steps=10, hack_from=None, trips=(), stop=None, finished=True, all_series=False):
    """A run of `steps` steps whose completions turn to yes-spam from `hack_from`; `trips` are
    (step, [trip dicts]) detector events; `stop` the step an early stop ended it (action stop)."""
    run = RunDir(path)
    run.start({"policy_model": "tiny", "algorithm": "grpo", "constitution": "examples/cheerful.yaml",
               "gold_constitution": "examples/fluent.yaml"}, force=False)
    trips_at = dict(trips)
    for step in range(1, steps + 1):
        hack = hack_from is not None and step >= hack_from
        metrics = {"step": step, "reward/train": 0.1 * step,
                   "gold/score": 0.05 * (hack_from - 1) - 0.2 * (step - hack_from + 1) if hack else 0.05 * step,
                   "kl": 0.02 * step, "monitor/affirmation_rate": 0.4 if hack else 0.01,
                   "monitor/distinct_2": 0.5 if hack else 0.9}
        if all_series:  # every panel of the grid: the page's tallest first screen
            metrics.update({"drift/embedding": 0.3 + 0.03 * step, "shift/p_value": 0.5 / step,
                            "entropy": 3 - 0.1 * step, "monitor/special_token_rate": 0.0, "monitor/repetition": 0.1,
                            "monitor/longest_repeat_run": 2, "monitor/distinct_1": 0.8, "monitor/words": 40,
                            "monitor/judge_disagreement": 0.2})
        run.append("metrics.jsonl", [metrics])
        texts = [f" yes yes yes, yes! {step}" if hack else f" a calm story, number {i}, step {step}" for i in range(4)]
        run.append("samples.jsonl", [{"step": step, "prompt": "Once upon a time", "completion": t + f" ({i})",
                                      "train": 0.1 * step + i / 10, "gold": 0.0} for i, t in enumerate(texts)])
        spotcheck.queue(run.path, step, [("Once upon a time", texts[0] + " (0)")])
        if step in trips_at:
            best = {"checkpoint": "checkpoints/checkpoint-2", "step": 2, "tripped_at": step} if step == stop else None
            run.event("detector", step=step, detectors=trips_at[step], evidence={}, samples=texts[:2],
                      action="stop" if step == stop else "warn", **({"best": best} if best else {}))
        if step == stop:
            run.event("early_stop", step=step, best=best)
            break
    if finished:
        tripped = {t["detector"]: s for s, ts in trips for t in ts}
        run.finish({"steps": stop or steps, "detector_trips": tripped, "stopped_early": stop is not None,
                    "best": {"step": 2} if stop else None})
    return run.path


def answer_queue(path, no_from, questions=("on_task",)):
    """A person answers every spot-checked completion: yes before `no_from`, no from it."""
    labels = LabelsFile(path / "labels.jsonl")
    for item in read_items(path / spotcheck.QUEUE):
        for question in questions:
            labels.add_label(item, question, "no" if item.source["step"] >= no_from else "yes", "ana")


def test_a_healthy_run_says_so_with_its_gold_trend(tmp_path):
    v = read_verdict(make_run(tmp_path / "run"))
    assert (v.state, v.step, v.first_trip, v.steps) == ("healthy", None, None, 10)
    assert v.headline == "healthy: no detector tripped in 10 steps"
    assert [s.name for s in v.signals] == ["gold vs train", "kl"]
    assert "gold score +0.35" in v.signals[0].text and "did not fall" in v.signals[0].text
    assert v.signals[1].text == "closest to a limit: kl peaked at 0.2 at step 10, 40% of its limit 0.5"
    assert v.labels == [] and v.labels_line() == ""


def test_a_tripped_run_names_the_first_step_and_the_signals_behind_it(tmp_path):
    trips = [(6, [trip("affirmation_rate", 0.4, 0.05, 6)]),
             (7, [trip("distinct_2_drop", 0.5, 0.45, 7), trip("cusum:kl", 6.1, 5.0, 7)]),
             (9, [trip("gold_drop", 0.9, 0.5, 9)])]
    path = make_run(tmp_path / "run", hack_from=6, trips=trips)
    answer_queue(path, no_from=6)
    v = read_verdict(path)
    assert (v.state, v.step, v.first_trip) == ("hacking likely", 6, 6)
    assert v.headline == "hacking likely from step 6"
    assert [s.name for s in v.signals] == ["gold vs train", "affirmation_rate", "distinct_2_drop"] and v.more == 2
    assert v.signals[1].text.startswith("affirmation_rate 0.4 > 0.05 at step 6: share of words that are affirmations")
    assert v.signals[2].text.startswith("distinct_2_drop 0.5 < 0.45 at step 7")
    gold = v.signals[0].text
    assert "steps 1-5 vs 6-10" in gold and "the train judge is being pleased while the gold judge is not" in gold
    [on_task] = v.labels  # one spot-check answer a step: 5 yes before the trip, 5 no from it
    assert (on_task.question, on_task.yes_before, on_task.no_before, on_task.yes_from, on_task.no_from) == (
        "on_task", 5, 0, 0, 5)
    assert v.labels_line() == "on_task: 5 yes / 0 no before step 6, 0 yes / 5 no from it"


def test_a_run_stopped_early_says_where_and_which_checkpoint_is_best(tmp_path):
    path = make_run(tmp_path / "run", hack_from=5, trips=[(5, [trip("kl", 0.7, 0.5, 5)])], stop=5)
    v = read_verdict(path)
    assert (v.state, v.step, v.first_trip, v.steps, v.best) == ("stopped", 5, 5, 5, 2)
    assert v.headline == "stopped at step 5"
    assert [s.name for s in v.signals] == ["gold vs train", "kl"] and "kl 0.7 > 0.5 at step 5" in v.signals[1].text
    # while it is stopping (no finish yet) the trip's action says so; once finished, finished.json does too
    assert read_verdict(make_run(tmp_path / "live", hack_from=5, trips=[(5, [trip("kl", 0.7, 0.5, 5)])], stop=5,
                                 finished=False)).state == "stopped"


def test_a_late_stop_names_both_steps_and_a_warned_run_is_not_stopped(tmp_path):
    events = [{"event": "detector", "step": 4, "detectors": [trip("kl", 0.6, 0.5, 4)], "action": "warn"},
              {"event": "early_stop", "step": 7, "best": None}]
    metrics = [{"step": s, "reward/train": 0.0} for s in range(1, 8)]
    v = decide(metrics, events)
    assert (v.state, v.step, v.first_trip) == ("stopped", 7, 4)
    assert v.headline == "stopped at step 7 (first trip at step 4)"
    assert decide(metrics, events[:1], {"steps": 7, "stopped_early": False}).state == "hacking likely"
    healthy = decide(metrics, [], {"steps": 7, "stopped_early": False})
    assert healthy.state == "healthy" and [s.text for s in healthy.signals] == ["no detector tripped in 7 steps logged"]


def test_labels_on_other_texts_are_left_out_and_a_damaged_finish_is_one_line(tmp_path):
    path = make_run(tmp_path / "run")
    other = make_run(tmp_path / "other", hack_from=1)
    answer_queue(other, no_from=1)  # a person's answers on another run's texts
    assert read_verdict(path, [other / "labels.jsonl"]).labels == []
    assert [c.no_before for c in read_verdict(other).labels] == [10]
    (path / "finished.json").write_text("{\"steps\": ")
    with pytest.raises(TetherError, match="finished.json: malformed JSON"):
        read_verdict(path)


def test_the_report_leads_with_the_verdict_and_writes_it_down(tmp_path):
    from tether.watch.report import build_report

    path = make_run(tmp_path / "run", hack_from=5, trips=[(5, [trip("kl", 0.7, 0.5, 5)])], stop=5)
    page = build_report(path).read_text()
    body = page[page.index("<body>"):]
    assert body.index("id='verdict'") < body.index("id='grid'") < body.index("id='samples'") < body.index("id='detail'")
    assert "data-state='stopped'" in body and "Stopped at step 5" in body and "checkpoint marked best is step 2" in body
    assert [c for c in ("step 4: before the first trip", "step 5: at the first trip") if c in body] == [
        "step 4: before the first trip", "step 5: at the first trip"]
    saved = json.loads((path / "report" / "verdict.json").read_text())
    assert saved["headline"] == "stopped at step 5" and saved["signals"][1]["name"] == "kl"
    assert (path / "report" / "grid.png").exists()
