"""kill -9 that really kills: `tether tune` is SIGKILLed at chosen moments and resumed until it finishes.

Moments are chosen by watching the run directory (right after metrics.jsonl grows, as a
checkpoint folder appears, as its trainer_state.json appears but before the value store
is in) plus seeded random delays. The finished run must hold every step exactly once,
each detector trip and checkpoint once, every trip in finished.json, and at each
checkpoint a value store that matches its `values` event.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tether.defenses.utility import ValueStore
from tether.infra import jsonl
from tether.infra.rundir import RunDir

STEPS, SAVE_EVERY, BATCH = 12, 2, 4  # long enough for every kill of PLAN to land (a float32 step is fast)
PLAN = ["metrics", "checkpoint", "trainer_state", "delay", "metrics", "checkpoint", "delay"]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def start(args: list) -> subprocess.Popen:
    env = {**ENV, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "tether.cli", "tune", *map(str, args), "-q"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def checkpoints(run: Path) -> set[str]:
    return {p.name for p in (run / "checkpoints").glob("checkpoint-*")} if (run / "checkpoints").exists() else set()


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def fired(trigger: str, run: Path, before: dict, delay: float) -> bool:
    """The moment to kill has come (polled every few milliseconds)."""
    if trigger == "metrics":  # a step's metrics line is in; its samples may be on the way
        return size(run / "metrics.jsonl") > before["metrics"]
    new = checkpoints(run) - before["checkpoints"]
    if trigger == "checkpoint":  # TRL is writing a checkpoint folder
        return bool(new)
    if trigger == "trainer_state":  # TRL has finished its part; tether's on_save has not run yet
        return any((run / "checkpoints" / n / "trainer_state.json").exists() for n in new)
    # a random moment inside a step: counted from the first step this process logs, since start-up time varies
    if size(run / "metrics.jsonl") > before["metrics"]:
        before.setdefault("stepping", time.monotonic())
        return time.monotonic() - before["stepping"] > delay
    return False


def kill_at(trigger: str, run: Path, args: list, delay: float) -> tuple[bool, int]:
    """Run until `trigger`, then SIGKILL; (killed, exit code)."""
    before = {"metrics": size(run / "metrics.jsonl"), "checkpoints": checkpoints(run)}
    proc = start(args)
    while proc.poll() is None:
        if fired(trigger, run, before, delay):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True, proc.returncode
        time.sleep(0.005)
    assert proc.returncode == 0, proc.stderr.read()[-3000:]
    return False, 0


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tune_survives_kill_9_at_any_moment(tmp_path, tiny_model_dir, examples_dir):
    config = tmp_path / "tune.yaml"
    run = tmp_path / "run"
    config.write_text(yaml.safe_dump({
        "policy_model": str(tiny_model_dir), "judge_model": str(tiny_model_dir),
        "constitution": str(examples_dir / "cheerful.yaml"), "prompts": str(examples_dir / "prompts.txt"),
        "steps": STEPS, "prompts_per_step": 1, "completions_per_prompt": BATCH, "max_completion_tokens": 6,
        "save_every": SAVE_EVERY, "output_dir": str(run), "lora_rank": 2, "lora_target_modules": ["q_proj"],
        "base_samples_per_prompt": 2,
        # a value store, learned at every checkpoint step
        "utility": {"weight": 1.0, "terminals": ["a happy sunny day"], "update_every": SAVE_EVERY, "min_credit": -1.0,
                    "window_words": 1, "min_part_words": 1, "top_fraction": 1.0},
        # the tiny random model says "yes" often: affirmation_rate trips early; drift (a 3-step window) later
        "detectors": {"affirmation_rate": 0.01, "drift_window": 3, "drift": 0.6},
    }))
    rng = random.Random(20261126)
    tried, where = 0, []
    for trigger in PLAN:
        if (run / "finished.json").exists():  # a kill landed after the run's last write: nothing left to resume
            break
        args = ["--resume", run] if (run / "config.yaml").exists() else [config]
        killed, _ = kill_at(trigger, run, args, delay=rng.uniform(0.1, 1.5))
        if not killed:
            break
        tried += 1
        whole = [s for s, _ in RunDir(run).checkpoints_by_step()] if (run / "config.yaml").exists() else []
        where.append(f"{trigger}: {len(jsonl.read(run / 'metrics.jsonl'))} "
                     f"steps logged, checkpoints {sorted(checkpoints(run))} (whole: {whole})")
    while not (run / "finished.json").exists():  # the last resume runs to the end
        killed, _ = kill_at("never", run, ["--resume", run], delay=1e9)
        assert not killed

    metrics = lines(run / "metrics.jsonl")
    samples = lines(run / "samples.jsonl")
    events = lines(run / "events.jsonl")
    steps = [m["step"] for m in metrics]
    expected = list(range(1, STEPS + 1))
    sample_steps = [s["step"] for s in samples]
    lost = len(set(expected) - set(steps)) + sum(max(0, BATCH - sample_steps.count(k)) for k in expected)
    duplicates = (len(steps) - len(set(steps))) + sum(max(0, sample_steps.count(k) - BATCH) for k in expected)
    print("\n" + "\n".join(where) + f"\nkill -9: {tried} kills tried, lines lost {lost}, duplicates {duplicates}")
    assert tried >= 5
    assert steps == expected and lost == 0 and duplicates == 0
    assert sorted(set(sample_steps)) == expected

    saves = list(range(SAVE_EVERY, STEPS + 1, SAVE_EVERY))
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == saves
    assert [e["step"] for e in events if e["event"] == "values"] == saves
    trips = [(t["detector"], e["step"]) for e in events if e["event"] == "detector" for t in e["detectors"]]
    assert trips and len({d for d, _ in trips}) == len(trips)  # each detector trips once
    assert json.loads((run / "finished.json").read_text())["detector_trips"] == dict(trips)
    assert [e["event"] for e in events].count("start") == 1
    assert 1 <= [e["event"] for e in events].count("resume") <= tried
    assert [e["event"] for e in events][-1] == "finish"

    learned = {e["step"]: e["values"] for e in events if e["event"] == "values"}
    for step in saves:  # each checkpoint's store is whole and is the one its values event describes
        store = ValueStore.load(run / "checkpoints" / f"checkpoint-{step}" / "values")
        assert len(store.entries) == len(store.embeddings) == 1 + learned[step]
    assert ValueStore.load(run / "values").entries == store.entries
    assert not [p.name for p in run.rglob(".*") if p.name != ".lock"]  # no temporaries left
