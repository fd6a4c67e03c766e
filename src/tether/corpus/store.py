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

import hashlib
import json
import time
from pathlib import Path

import yaml

from tether.errors import TetherError
from tether.infra import atomic, jsonl
from tether.infra.rundir import check_new_folder, clear_owned
from tether.judge.constitution import Constitution, load_constitution

ACTIONS = ("accept", "reject", "edit")
CORPUS_FILES = ("config.yaml", "constitution.yaml", "meta.json", "candidates.jsonl", "decisions.jsonl", "corpus.jsonl",
                "summary.json", "summary.md", "scores.png", ".lock")
META_FIELDS = {"constitution_sha256": str, "constitution": str, "principles": list}
CANDIDATE_FIELDS = ("id", "prompt_index", "prompt", "completion", "status", "total", "scores")
DECISION_FIELDS = ("id", "action", "note")
LOCKED_FILES = ("candidates.jsonl", "corpus.jsonl", "summary.json", "summary.md", "scores.png")  # written under the lock


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
        if force:  # deletes only what `tether sample` and the audit wrote; refuses beside anything else
            clear_owned(self.path, CORPUS_FILES, "a corpus", marker="meta.json")
        else:  # a new corpus never lands beside files it did not write (a tune run's config.yaml, a person's notes)
            check_new_folder(self.path, CORPUS_FILES, "output_dir", "the corpus")
        self.path.mkdir(parents=True, exist_ok=True)
        copy = constitution_file.read_text(encoding="utf-8")
        if constitution.chat_template is not None:  # a template file named relative to the original: inlined, so it travels
            copy = f"# {constitution_file}, its chat template inlined\n" + yaml.safe_dump(constitution.model_dump(mode="json"),
                                                                                      sort_keys=False, allow_unicode=True)
        atomic.write_text(self.path / "constitution.yaml", copy)
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
        """meta.json, checked: a damaged file is one line naming it, never a traceback."""
        path = self.require().path / "meta.json"
        try:
            meta = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            problem = f"{e.msg} at line {e.lineno}, column {e.colno}" if isinstance(e, json.JSONDecodeError) else "not UTF-8"
            raise TetherError(f"{path}: malformed JSON ({problem}); restore it or sample a new corpus") from None
        except OSError as e:
            raise TetherError(f"{path}: cannot read ({e.strerror})") from None
        missing = [k for k in META_FIELDS if not isinstance(meta, dict) or not isinstance(meta.get(k), META_FIELDS[k])]
        if missing:
            raise TetherError(f"{path}: not a corpus's meta.json ({', '.join(missing)} missing or of the wrong type); "
                              f"restore it or sample a new corpus")
        return meta

    def config(self) -> dict:
        from tether.infra.config import parse_yaml
        from tether.infra.texts import read_utf8

        path = self.path / "config.yaml"
        if not path.is_file():
            raise TetherError(f"{path}: missing; this corpus is damaged (sample a new one, or pass --force)")
        return parse_yaml(read_utf8(path), str(path))

    def settings(self):
        """The stored `tether sample` config, validated."""
        from tether.corpus.config import SampleConfig
        from tether.infra.config import load_config

        return load_config(SampleConfig, data=self.config(), where=str(self.path / "config.yaml"))

    def constitution(self) -> Constitution:
        return load_constitution(self.path / "constitution.yaml")

    def check_constitution(self, constitution: Constitution) -> None:
        meta = self.meta()
        stored = meta["constitution_sha256"]
        # Corpora made before the fingerprint left out the name hashed it too; meta.json kept that name.
        legacy = constitution.model_dump() | {"name": meta["constitution"]}
        legacy = hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()
        if stored not in (constitution.fingerprint(), legacy):
            raise TetherError(
                f"{self.path}: this corpus was built with a different constitution ({meta['constitution']}, "
                f"sha256 {stored[:12]}) than {constitution.name} (sha256 {constitution.fingerprint()[:12]}); "
                f"use a new corpus directory or pass --force to start over")

    # --- candidates (written by the sampler) ---------------------------------------------------

    def candidates(self) -> list[dict]:
        return _checked(jsonl.read(self.candidates_path), self.candidates_path, CANDIDATE_FIELDS)

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
        return {d["id"]: d for d in _checked(jsonl.read(self.decisions_path), self.decisions_path, DECISION_FIELDS)}

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

    def heal(self) -> None:
        """Rebuild corpus.jsonl if there is one: a kill between a decision's append and the rebuild
        leaves the decision logged but not yet applied, and readers of the corpus start here."""
        if self.corpus_path.exists():
            self.rebuild()

    def corpus(self) -> list[dict]:
        if not self.corpus_path.exists():
            raise TetherError(f"{self.path}: no corpus.jsonl yet; run `tether sample` to the end first")
        return jsonl.read(self.corpus_path)

    def _rebuild(self) -> list[dict]:
        self._sweep()
        decisions, rows = self.decisions(), []
        for c in self.candidates():
            d = decisions.get(c["id"])
            action = d["action"] if d else None
            if action == "reject" or (action is None and c["status"] != "kept"):
                continue
            source = {"accept": "accepted", "edit": "edited", None: "sampler"}[action]
            rows.append({"id": c["id"], "prompt": c["prompt"], "completion": d["text"] if action == "edit" else c["completion"],
                         "total": c["total"], "scores": c["scores"], "source": source, "note": d["note"] if d else "",
                         **({"messages": c["messages"]} if "messages" in c else {})})  # a chat prompt's turns, for sft
        jsonl.rewrite(self.corpus_path, rows)
        return rows

    def lock(self):
        return jsonl.locked(self.path)

    def _sweep(self) -> None:
        """Remove the temporary files (`.NAME.XXXXXXXX.tmp`, see infra.atomic) a kill left mid-write.
        Only those of files written under the lock, which the caller holds: none is in flight."""
        for name in LOCKED_FILES:
            for tmp in self.path.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)


def _checked(records: list[dict], path: Path, fields: tuple[str, ...]) -> list[dict]:
    """The records, if each has the fields readers index; else one line naming the file and record."""
    for n, record in enumerate(records, 1):
        missing = [f for f in fields if f not in record]
        if missing:
            raise TetherError(f"{path}: record {n} lacks {', '.join(missing)}; tether did not write it so; "
                              f"fix or remove that line")
    return records
