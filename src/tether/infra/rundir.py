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

import re
import shutil
import time
from pathlib import Path

import yaml

from tether.errors import TetherError
from tether.infra import atomic, jsonl

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
        """The stored config as a mapping (read with the one config parser: errors name line and column)."""
        from tether.infra.config import parse_yaml
        from tether.infra.texts import read_utf8

        if not self.has_run():
            raise TetherError(f"{self.path}: no run here (no config.yaml) to resume")
        return parse_yaml(read_utf8(self.path / "config.yaml"), str(self.path / "config.yaml"))

    def settings(self, model, drop: tuple[str, ...] = (), **replace):
        """The stored config validated as `model` (fields in `drop` left out, `replace` applied)."""
        from tether.infra.config import load_config

        data = {k: v for k, v in self.config().items() if k not in drop}
        return load_config(model, data={**data, **{k: str(v) if isinstance(v, Path) else v for k, v in replace.items()}},
                           where=str(self.path / "config.yaml"))

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
                jsonl.rewrite(path, [row for row in jsonl.read(path) if row.get("step", 0) <= step])

    def append(self, name: str, records: list[dict]) -> None:
        jsonl.append(self.path / name, records)

    def event(self, kind: str, **details) -> None:
        self.append("events.jsonl", [{"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": kind, **details}])

    def finish(self, summary: dict) -> None:
        self.event("finish", **summary)
        atomic.write_json(self.path / "finished.json", summary)
