"""The corpus directory: synthetic training data a person can read, audit and correct.

    config.yaml        the resolved `tether sample` config
    constitution.yaml  a copy of the constitution the samples were judged with
    meta.json          its sha256 fingerprint and principle names
    candidates.jsonl   every sample: prompt, completion, scores, monitors, status, reason
    decisions.jsonl    a person's audit decisions (accept / reject / edit, note), in order
    corpus.jsonl       the training set: kept samples with the audit applied (rebuilt)
    summary.json/.md   acceptance and score distributions; scores.png beside them

candidates.jsonl and decisions.jsonl are append-only, each write fsynced, so a crash
loses no written line; a torn last line (a crash mid-write) is skipped by readers and cut
off by the next writer. corpus.jsonl is derived from the two and replaced atomically; for the same
sample, the last decision wins. Writers take an exclusive lock on `.lock`, so two
processes (two audit tabs, a sampler) never interleave.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import yaml

from tether.errors import TetherError
from tether.infra import atomic, jsonl
from tether.judge.constitution import Constitution, load_constitution

ACTIONS = ("accept", "reject", "edit")


class CorpusDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.candidates_path = self.path / "candidates.jsonl"
        self.decisions_path = self.path / "decisions.jsonl"
        self.corpus_path = self.path / "corpus.jsonl"

    # --- creation and identity ------------------------------------------------------------

    def exists(self) -> bool:
        return (self.path / "meta.json").exists()

    def start(self, config: dict, constitution: Constitution, constitution_file: Path, force: bool) -> bool:
        """Begin a corpus here, or check that the one here is the same job. True if resuming."""
        if self.exists() and not force:
            self.check_constitution(constitution)
            old = self.config()
            changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            if changed:
                raise TetherError(f"{self.path}: holds a corpus sampled with another config ({', '.join(changed)} "
                                  f"differ); pass --force to start over, or choose another output_dir")
            return True
        if force and self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        atomic.write_text(self.path / "constitution.yaml", constitution_file.read_text(encoding="utf-8"))
        atomic.write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        atomic.write_json(self.path / "meta.json", {
            "constitution_sha256": constitution.fingerprint(), "constitution": constitution.name,
            "principles": [p.name for p in constitution.principles], "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
        return False

    def require(self) -> CorpusDir:
        if not self.exists():
            raise TetherError(f"{self.path}: not a corpus directory (no meta.json); make one with `tether sample`")
        return self

    def meta(self) -> dict:
        return json.loads(self.require().path.joinpath("meta.json").read_text())

    def config(self) -> dict:
        from tether.infra.config import parse_yaml
        from tether.infra.texts import read_utf8

        return parse_yaml(read_utf8(self.path / "config.yaml"), str(self.path / "config.yaml"))

    def settings(self):
        """The stored `tether sample` config, validated."""
        from tether.corpus.config import SampleConfig
        from tether.infra.config import load_config

        return load_config(SampleConfig, data=self.config(), where=str(self.path / "config.yaml"))

    def constitution(self) -> Constitution:
        return load_constitution(self.path / "constitution.yaml")

    def check_constitution(self, constitution: Constitution) -> None:
        stored = self.meta()["constitution_sha256"]
        if constitution.fingerprint() != stored:
            raise TetherError(
                f"{self.path}: this corpus was built with a different constitution ({self.meta()['constitution']}, "
                f"sha256 {stored[:12]}) than {constitution.name} (sha256 {constitution.fingerprint()[:12]}); "
                f"use a new corpus directory or pass --force to start over")

    # --- candidates (written by the sampler) ---------------------------------------------------

    def candidates(self) -> list[dict]:
        return jsonl.read(self.candidates_path)

    def append_candidates(self, records: list[dict]) -> None:
        with self.lock():
            jsonl.append(self.candidates_path, records)

    def replace_group(self, prompt_index: int, records: list[dict]) -> None:
        """Rewrite one prompt's candidates (finishing a group a crash cut short), atomically."""
        with self.lock():
            others = [c for c in self.candidates() if c["prompt_index"] != prompt_index]
            jsonl.rewrite(self.candidates_path, others + records)

    # --- decisions (written by the audit page) ---------------------------------------------------

    def decisions(self) -> dict[str, dict]:
        """The last decision for each sample id."""
        return {d["id"]: d for d in jsonl.read(self.decisions_path)}

    def decide(self, sample_id: str, action: str, text: str | None = None, note: str = "") -> dict:
        """Record a person's decision, then rebuild corpus.jsonl; both under the lock."""
        if action not in ACTIONS:
            raise TetherError(f"decision {action!r}: write one of {', '.join(ACTIONS)}")
        if action == "edit" and not (isinstance(text, str) and text.strip()):
            raise TetherError("an edit needs the edited text")
        with self.lock():
            if sample_id not in {c["id"] for c in self.candidates()}:
                raise TetherError(f"{self.path}: no sample {sample_id!r} in candidates.jsonl")
            decision = {"id": sample_id, "action": action, "note": note, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
            if action == "edit":
                decision["text"] = text
            jsonl.append(self.decisions_path, [decision])
            self._rebuild()
        return decision

    # --- the training set ----------------------------------------------------------------------

    def rebuild(self) -> list[dict]:
        with self.lock():
            return self._rebuild()

    def corpus(self) -> list[dict]:
        if not self.corpus_path.exists():
            raise TetherError(f"{self.path}: no corpus.jsonl yet; run `tether sample` to the end first")
        return jsonl.read(self.corpus_path)

    def _rebuild(self) -> list[dict]:
        decisions, rows = self.decisions(), []
        for c in self.candidates():
            d = decisions.get(c["id"])
            action = d["action"] if d else None
            if action == "reject" or (action is None and c["status"] != "kept"):
                continue
            source = {"accept": "accepted", "edit": "edited", None: "sampler"}[action]
            rows.append({"id": c["id"], "prompt": c["prompt"], "completion": d["text"] if action == "edit" else c["completion"],
                         "total": c["total"], "scores": c["scores"], "source": source, "note": d["note"] if d else ""})
        jsonl.rewrite(self.corpus_path, rows)
        return rows

    def lock(self):
        return jsonl.locked(self.path)
