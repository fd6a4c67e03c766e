"""The run directory: everything a person needs to understand a run a month later.

    config.yaml      the resolved config (every field, defaults included)
    metrics.jsonl    one line a step: TRL's metrics and tether's monitors
    samples.jsonl    every completion: step, prompt, text, train and gold scores
    spotcheck.jsonl  with spot_check.every: the completions queued for a person (watch/spotcheck.py)
    events.jsonl     start, resume, checkpoints, warnings, finish
    checkpoints/     TRL checkpoints (LoRA adapter + optimizer state) every N steps
    final/           the LoRA adapter at the end
    best.json        when a detector stopped the run: the last checkpoint whose own batch passed (last_passing_policy)
    finished.json    written last; its presence means the run completed

Lines are appended and fsynced as they happen, so a crash (kill -9 included) loses at most
the step in flight. On resume, the logs and events.jsonl are rewound to the last complete
checkpoint and checkpoints after it are removed, so no step, trip or checkpoint appears
twice. `--force` deletes only what tether writes (RUN_FILES) and refuses when the folder
holds anything else.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import yaml

from tether.errors import TetherError
from tether.infra import atomic, jsonl

LOGS = ("metrics.jsonl", "samples.jsonl", "spotcheck.jsonl")
# Everything a run writes in its folder: tune/run.py, watch/report.py, defenses (sweep, utility), corpus/sft.py.
RUN_FILES = ("config.yaml", "metrics.jsonl", "samples.jsonl", "events.jsonl", "checkpoints", "final", "best.json",
             "finished.json", "base_samples.jsonl", "values", "report", "blend", "eval.json", ".lock",
             "spotcheck.jsonl")
# Events that belong to a step: on resume, those after the checkpoint are produced again.
STEP_EVENTS = ("detector", "checkpoint", "values", "early_stop")


def clear_owned(folder: Path, owned: tuple[str, ...], what: str, marker: str) -> None:
    """Empty `folder` of what tether wrote there (`owned` names and their atomic-write temporaries).

    Refuses, deleting nothing, when the folder holds anything else or holds no `marker` (it
    is not a `what`). Symlinks are removed as links, never followed.
    """
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir():
        raise TetherError(f"{folder}: not a folder; --force replaces only {what} folder")
    entries = sorted(os.listdir(folder))
    if not entries:
        return
    foreign = [name for name in entries if not _owned(name, owned)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise TetherError(f"{folder}: --force would delete files tether did not write ({shown}); "
                          f"move them away or choose another folder")
    if marker not in entries:
        raise TetherError(f"{folder}: holds no {what} (no {marker}); --force replaces only {what}, "
                          f"choose another folder")
    for name in entries:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def check_new_folder(folder: Path, owned: tuple[str, ...], option: str, what: str) -> None:
    """Refuse to start `what` in `folder` when it is a file, or holds anything but `owned` names (and their
    temporaries): a new run or corpus must not land beside (and overwrite) files tether did not write there."""
    folder = Path(folder)
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir():
        raise TetherError(f"{folder}: not a folder; give {option} a folder for {what}")
    foreign = sorted(name for name in os.listdir(folder) if not _owned(name, owned))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise TetherError(f"{folder}: holds files tether did not write ({shown}); give {option} an empty or new folder")


def _owned(name: str, owned: tuple[str, ...]) -> bool:
    """One of `owned`, or a temporary of atomic.write_* / atomic.folder (.NAME.XXXX.tmp, .NAME.XXXX.old)."""
    if name in owned:
        return True
    return any(name.startswith(f".{o}.") and name.endswith((".tmp", ".old")) for o in owned if not o.startswith("."))


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
        """Begin a fresh run here; with `force`, a run already here is replaced (only tether's files go)."""
        if self.has_run() and not force:
            state = "a finished run" if self.is_finished() else "an unfinished run (continue it with --resume)"
            raise TetherError(f"{self.path}: already holds {state}; pass --force to overwrite it")
        if force:
            clear_owned(self.path, RUN_FILES, "a run", marker="config.yaml")
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

    def checkpoints_by_step(self, complete: bool = True) -> list[tuple[int, Path]]:
        """TRL checkpoint folders, oldest first: only complete ones unless `complete=False`."""
        found = []
        for folder in self.checkpoints.glob("checkpoint-*"):
            match = re.fullmatch(r"checkpoint-(\d+)", folder.name)
            if match and folder.is_dir() and (not complete or self.is_complete(folder)):
                found.append((int(match.group(1)), folder))
        return sorted(found)

    def last_passing_policy(self, trip_step: int) -> tuple[int, Path] | None:
        """The newest complete checkpoint whose own batch passed the detectors, or None for the base model.

        The rule (TRL's GRPO and RLOO with tether's settings: one generation per optimizer step,
        `num_iterations` 1): the batch logged at step k was written by the weights after k - 1
        updates, and checkpoint-j holds the weights after j updates, so checkpoint-(k - 1) wrote
        step k's batch (the base model, checkpoint-0, wrote step 1's). A first trip at step
        `trip_step` = k condemns checkpoint-(k - 1), the policy whose samples tripped; the last
        policy whose own batch passed wrote step k - 1's batch: checkpoint-(k - 2), or with
        `save_every` > 1 the newest checkpoint saved at or before step k - 2 (each earlier one wrote
        a batch that passed too). None when there is none: the base model, whose step-1 batch
        passed when k >= 2; at k = 1 the detector fired on the base model's own text (a threshold
        that flags the base, not a hack) and the base is still all there is to keep.
        tests/test_early_stop.py checks the offset on a real run.
        """
        saved = [(s, p) for s, p in self.checkpoints_by_step() if s <= trip_step - 2]
        return saved[-1] if saved else None

    def first_trip(self) -> int | None:
        """The step at which a hack detector first fired (events.jsonl), or None."""
        return min((e["step"] for e in jsonl.read(self.path / "events.jsonl") if e.get("event") == "detector"), default=None)

    def is_complete(self, checkpoint: Path) -> bool:
        """All that resuming needs is there. TRL writes trainer_state.json last, but before the
        callbacks' `on_save` add the value store, and not atomically: it must parse."""
        if not (checkpoint / "adapter_config.json").exists() or not (checkpoint / "adapter_model.safetensors").exists():
            return False
        try:
            json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return not self._has_values() or (checkpoint / "values" / "values.json").exists()

    def _has_values(self) -> bool:
        """The run keeps a value store (utility.weight > 0), so each checkpoint must hold one."""
        utility = self.config().get("utility") if self.has_run() else None
        return isinstance(utility, dict) and bool(utility.get("weight"))

    def last_checkpoint(self) -> tuple[Path | None, int]:
        """The newest complete checkpoint and its step, or (None, 0)."""
        found = self.checkpoints_by_step()
        return (found[-1][1], found[-1][0]) if found else (None, 0)

    def rewind_to(self, step: int) -> None:
        """Go back to the checkpoint at `step`: what came after it will be produced again.

        Drops log lines and step events after `step` (and a `finish` a kill cut short), adds
        the checkpoint's own event when a kill came between the save and its event, and
        removes the checkpoint folders after `step` (incomplete ones a kill left).
        """
        for name in LOGS:
            path = self.path / name
            if path.exists():
                jsonl.rewrite(path, [row for row in jsonl.read(path) if row.get("step", 0) <= step])
        path = self.path / "events.jsonl"
        events = [e for e in jsonl.read(path) if e.get("event") != "finish"
                  and not (e.get("event") in STEP_EVENTS and e.get("step", 0) > step)]
        if step and not any(e.get("event") == "checkpoint" and e.get("step") == step for e in events):
            events.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": "checkpoint", "step": step})
        jsonl.rewrite(path, events)
        for later, folder in self.checkpoints_by_step(complete=False):
            if later > step:
                shutil.rmtree(folder)
        for name in os.listdir(self.path):  # temporaries of atomic writes a kill interrupted
            if name not in RUN_FILES and _owned(name, RUN_FILES):
                shutil.rmtree(self.path / name) if (self.path / name).is_dir() else (self.path / name).unlink()

    def append(self, name: str, records: list[dict]) -> None:
        jsonl.append(self.path / name, records)

    def event(self, kind: str, **details) -> None:
        self.append("events.jsonl", [{"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": kind, **details}])

    def finish(self, summary: dict) -> None:
        self.event("finish", **summary)
        atomic.write_json(self.path / "finished.json", summary)
