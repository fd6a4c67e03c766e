"""The grid: every arm x seed run by a worker process, `jobs` at a time, resumable, failures recorded.

A run is *done* when its evaluation is written (runs/ARM-sSEED/eval/result.json); a rerun of the
experiment skips done runs, resumes unfinished ones from their last checkpoint, and retries failed
ones. A failure is recorded in failures.jsonl (exit code, the log's last lines) and the grid goes
on. An arm with `of:` starts after its source run. Each worker's output goes to logs/ARM-sSEED.log.
Progress: runs done, running and left, and an estimate of the time left from the runs finished so far.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tether.experiment.config import ExperimentConfig
from tether.infra import jsonl, progress, threads


@dataclass
class Job:
    arm: str
    seed: int
    process: subprocess.Popen | None = None
    log: Path | None = None
    started: float = field(default_factory=time.monotonic)


def status(config: ExperimentConfig) -> dict[tuple[str, int], str]:
    """done, failed (last attempt failed), started (a run folder, no evaluation) or todo, per run."""
    failed = {(r["arm"], r["seed"]) for r in jsonl.read(config.output_dir / "failures.jsonl") if not r.get("cleared")}
    out = {}
    for arm, seed in config.runs():
        folder = config.run_dir(arm, seed)
        out[arm, seed] = ("done" if (folder / "eval" / "result.json").exists() else "failed" if (arm, seed) in failed
                          else "started" if folder.exists() else "todo")
    return out


def run_grid(config_path: Path, config: ExperimentConfig, overrides: list[str] = (), jobs: int | None = None) -> dict:
    """Run every run not done; returns {(arm, seed): 'done' | 'failed'} for this call."""
    jobs = jobs or config.jobs
    todo = [run for run, state in status(config).items() if state != "done"]
    total, finished, durations, outcome = len(config.runs()), len(config.runs()) - len(todo), [], {}
    logs = config.output_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    running: list[Job] = []
    env = threads.worker_env(jobs)  # the cores divided among the workers (TETHER_THREADS), unless the user chose
    each = env.get(threads.ENV) or env.get("OMP_NUM_THREADS")
    progress.console.print(f"experiment {config.output_dir}: {total} runs, {finished} done, {len(todo)} to run, "
                           f"{jobs} at a time" + (f", {each} torch thread(s) each" if each else ""), highlight=False)
    while todo or running:
        while len(running) < jobs:
            waiting = {(j.arm, j.seed) for j in running} | set(todo)
            ready = [r for r in todo if (config.needs(r[0]), r[1]) not in waiting]  # after the runs they read
            if not ready:
                break
            arm, seed = ready[0]
            todo.remove((arm, seed))
            log = logs / f"{arm}-s{seed}.log"
            handle = open(log, "ab")
            process = subprocess.Popen([sys.executable, "-m", "tether.experiment.worker", str(config_path), arm, str(seed),
                                        *overrides], stdout=handle, stderr=subprocess.STDOUT,
                                       env=env)
            handle.close()
            running.append(Job(arm, seed, process, log))
        time.sleep(0.5)
        for job in [j for j in running if j.process.poll() is not None]:
            running.remove(job)
            code, minutes = job.process.returncode, (time.monotonic() - job.started) / 60
            if code == 0:
                finished += 1
                durations.append(minutes)
                outcome[job.arm, job.seed] = "done"
                _clear_failure(config, job.arm, job.seed)
            else:
                outcome[job.arm, job.seed] = "failed"
                tail = job.log.read_text(errors="replace").strip().splitlines()[-5:]
                jsonl.append(config.output_dir / "failures.jsonl", [{
                    "arm": job.arm, "seed": job.seed, "exit_code": code, "minutes": round(minutes, 2),
                    "log": str(job.log), "tail": tail, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}])
            left = len(todo) + len(running)
            eta = (f", about {sum(durations) / len(durations) * left / jobs:.0f} min left" if durations and left else "")
            verdict = "done" if code == 0 else f"FAILED (exit {code}; see {job.log})"
            progress.console.print(f"{job.arm} seed {job.seed}: {verdict} in {minutes:.1f} min  [{finished}/{total} done, "
                                   f"{len(running)} running, {len(todo)} left{eta}]", highlight=False, soft_wrap=True)
    return outcome


def _clear_failure(config: ExperimentConfig, arm: str, seed: int) -> None:
    """A run that succeeds on a retry is no longer failed (the record stays, marked cleared)."""
    path = config.output_dir / "failures.jsonl"
    records = jsonl.read(path)
    if any(r["arm"] == arm and r["seed"] == seed and not r.get("cleared") for r in records):
        jsonl.rewrite(path, [{**r, "cleared": True} if r["arm"] == arm and r["seed"] == seed else r for r in records])
