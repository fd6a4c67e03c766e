"""The run directory: everything a person needs to understand a run a month later.

    config.yaml      the resolved config (every field, defaults included)
    metrics.jsonl    one line a step: TRL's metrics and tether's monitors
    samples.jsonl    every completion: step, prompt, text, train and gold scores
    events.jsonl     start, resume, checkpoints, warnings, finish
    checkpoints/     TRL checkpoints (LoRA adapter + optimizer state) every N steps
    final/           the LoRA adapter at the end
    best.json        when a detector stopped the run: the last checkpoint before the trip
    finished.json    written last; its presence means the run completed

Lines are appended and flushed as they happen, so a crash loses at most the step in
flight; on resume, lines after the last checkpoint are dropped so no step appears twice.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import yaml

from tether import atomic
from tether.errors import TetherError

LOGS = ("metrics.jsonl", "samples.jsonl")


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def is_finished(self) -> bool:
        return (self.path / "finished.json").exists()

    def has_run(self) -> bool:
        return (self.path / "config.yaml").exists()

    def start(self, config: dict, force: bool) -> None:
        """Begin a fresh run here; an existing run is replaced only with `force`."""
        if self.has_run() and not force:
            state = "a finished run" if self.is_finished() else "an unfinished run (continue it with --resume)"
            raise TetherError(f"{self.path}: already holds {state}; pass --force to overwrite it")
        if force and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        self.event("start")

    def config(self) -> dict:
        if not self.has_run():
            raise TetherError(f"{self.path}: no run here (no config.yaml) to resume")
        return yaml.safe_load((self.path / "config.yaml").read_text())

    def checkpoints_by_step(self) -> list[tuple[int, Path]]:
        """Complete TRL checkpoint folders, oldest first."""
        found = []
        for folder in self.checkpoints.glob("checkpoint-*"):
            match = re.fullmatch(r"checkpoint-(\d+)", folder.name)
            if match and (folder / "trainer_state.json").exists():
                found.append((int(match.group(1)), folder))
        return sorted(found)

    def last_checkpoint(self) -> tuple[Path | None, int]:
        """The newest complete checkpoint and its step, or (None, 0)."""
        found = self.checkpoints_by_step()
        return (found[-1][1], found[-1][0]) if found else (None, 0)

    def rewind_to(self, step: int) -> None:
        """Drop log lines after `step`: they will be produced again from the checkpoint."""
        for name in LOGS:
            path = self.path / name
            if path.exists():
                kept = [line for line in path.read_text().splitlines(keepends=True)
                        if line.strip() and json.loads(line)["step"] <= step]
                atomic.write_text(path, "".join(kept))

    def append(self, name: str, records: list[dict]) -> None:
        with open(self.path / name, "a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def event(self, kind: str, **details) -> None:
        self.append("events.jsonl", [{"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": kind, **details}])

    def finish(self, summary: dict) -> None:
        self.event("finish", **summary)
        atomic.write_json(self.path / "finished.json", summary)
