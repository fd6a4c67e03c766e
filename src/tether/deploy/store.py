"""The deployment folder: what was served, what users said, the versions, and which one is live.

    deploy.yaml         the config the deployment started with (marks the folder as tether's)
    interactions.jsonl  one line per reply, appended and fsynced before the reply is sent: id, time,
                        version, kind, prompt, completion, the judge's scores, the monitors
    feedback.jsonl      one line per feedback: its id, the interaction's id (`of`), thumb / answers / comment
    live.json           the version being served: {version, since, why}; written atomically
    events.jsonl        the timeline: start, live, rejected, rollback, detector, update, stop
    versions/vN/        one folder per version, immutable once published (atomic rename):
                        version.json (parent, status passed|failed, why), adapter/, data.jsonl (what it
                        learned from), gate.json and canary.jsonl (its audit), train/ (the TRL run)

Several processes write here (the server, the learner, `tether deploy rollback`): lines are
appended under a lock in one fsynced write, and `live.json` and version folders are replaced
whole, so a kill at any moment leaves either the old state or the new one.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

from tether.errors import TetherError
from tether.infra import atomic, jsonl

MARKER = "deploy.yaml"
CANARY = "canary.jsonl"  # the gate's fixed canary prompts, frozen at the first update
CANARY_BASE = "canary_base.jsonl"  # the base's samples on them, drawn once
VERSION_RE = re.compile(r"^v(\d+)$")


def now() -> str:
    """UTC, to the second (the report places events among interactions by it)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


def new_id(prefix: str) -> str:
    """A fresh id; random, so a restarted server never hands out an id twice."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class Store:
    """Reads and writes one deployment folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # --- the folder ----------------------------------------------------------------------

    def create(self, config_yaml: str) -> None:
        """Start a deployment folder (a new or empty one), with version v0: the policy as configured."""
        if self.path.exists() and not self.path.is_dir():
            raise TetherError(f"{self.path}: not a folder; give output_dir a folder for the deployment")
        if self.exists():
            return
        if self.path.exists() and any(self.path.iterdir()):
            raise TetherError(f"{self.path}: holds files tether did not write; give output_dir an empty or new folder")
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "versions").mkdir(exist_ok=True)
        with atomic.folder(self.version_dir("v0")) as building:
            atomic.write_json(building / "version.json", {
                "version": "v0", "parent": None, "status": "passed", "adapter": None, "created": now(),
                "why": "the policy as configured (policy_model and adapter)"})
        atomic.write_text(self.path / MARKER, config_yaml)
        self.set_live("v0", "the deployment started")

    def exists(self) -> bool:
        return (self.path / MARKER).is_file()

    def check(self) -> None:
        if not self.exists():
            raise TetherError(f"{self.path}: not a deployment folder (no {MARKER}); start one with `tether deploy CONFIG`")

    # --- interactions and feedback -------------------------------------------------------

    def record(self, rows: list[dict]) -> None:
        """Interactions, appended in one fsynced write: after this returns they are on disk."""
        with jsonl.locked(self.path, ".interactions.lock"):
            jsonl.append(self.path / "interactions.jsonl", rows)

    def interactions(self) -> list[dict]:
        return jsonl.read(self.path / "interactions.jsonl")

    def add_feedback(self, row: dict) -> dict:
        """A feedback line; one sent again with the same `key` is answered with the first, not stored twice."""
        with jsonl.locked(self.path, ".feedback.lock"):
            key = row.get("key")
            if key is not None:
                for old in jsonl.read(self.path / "feedback.jsonl"):
                    if old.get("key") == key:
                        return old
            jsonl.append(self.path / "feedback.jsonl", [row])
        return row

    def feedback(self) -> list[dict]:
        return jsonl.read(self.path / "feedback.jsonl")

    # --- the timeline --------------------------------------------------------------------

    def event(self, kind: str, **details) -> dict:
        row = {"time": now(), "event": kind, **details}
        with jsonl.locked(self.path, ".events.lock"):
            jsonl.append(self.path / "events.jsonl", [row])
        return row

    def events(self) -> list[dict]:
        return jsonl.read(self.path / "events.jsonl")

    # --- versions ------------------------------------------------------------------------

    def version_dir(self, name: str) -> Path:
        return self.path / "versions" / name

    def versions(self) -> list[dict]:
        """Every published version's version.json, oldest first (a folder being built is not one)."""
        found = []
        for folder in (self.path / "versions").iterdir() if (self.path / "versions").is_dir() else []:
            m = VERSION_RE.match(folder.name)
            if m and (folder / "version.json").is_file():
                found.append((int(m.group(1)), json.loads((folder / "version.json").read_text(encoding="utf-8"))))
        return [v for _, v in sorted(found, key=lambda x: x[0])]

    def version(self, name: str) -> dict:
        if not VERSION_RE.match(name):
            raise TetherError(f"version {name!r}: write a version name such as v3 (see GET /v1/models)")
        path = self.version_dir(name) / "version.json"
        if not path.is_file():
            raise TetherError(f"{self.path}: no version {name}; versions here: "
                              f"{', '.join(v['version'] for v in self.versions())}")
        return json.loads(path.read_text(encoding="utf-8"))

    def next_version(self) -> str:
        numbers = [int(VERSION_RE.match(v["version"]).group(1)) for v in self.versions()]
        return f"v{max(numbers, default=-1) + 1}"

    def live(self) -> dict:
        try:
            return json.loads((self.path / "live.json").read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"version": "v0", "since": None, "why": "no live.json yet"}

    def set_live(self, name: str, why: str, *, event: str = "live", **details) -> dict:
        """Serve `name` from now on: a passed version only. The server sees live.json change and swaps."""
        version = self.version(name)
        if version["status"] != "passed":
            raise TetherError(f"version {name} failed its gate ({version.get('why', 'no reason recorded')}); "
                              f"a failed version is never served")
        with jsonl.locked(self.path, ".live.lock"):
            before = self.live().get("version") if (self.path / "live.json").exists() else None
            record = {"version": name, "since": now(), "why": why}
            atomic.write_json(self.path / "live.json", record)
        self.event(event, version=name, previous=before, why=why, **details)
        return record

    def model_name(self, version: str) -> str:
        return f"tether-{version}"
