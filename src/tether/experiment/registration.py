"""Pre-registration: what an experiment will test and how, written before anything runs or is read.

    tether experiment examples/experiment_baselines.yaml --register

writes OUTPUT_DIR/registration.json (the config's `registration:` block: hypotheses, primary and
secondary measures, the analysis; the arms, seeds and golds; hashes of the evaluation prompts and
the tune config; the time) and exits. It carries a hash of its own body, so an edit made after it was
written is seen and refused. Later runs and summaries compare the experiment as it now stands with it
and name every change made after registration (`changes_since`).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from tether.errors import TetherError
from tether.experiment.config import ExperimentConfig
from tether.infra import atomic

FILE = "registration.json"


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def plan(config: ExperimentConfig) -> dict:
    """What is registered: every field that decides the result (not the output folder or jobs)."""
    block = config.registration.model_dump(mode="json") if config.registration else {}
    return {**block,
            "arms": {name: arm.model_dump(mode="json", exclude_defaults=True) for name, arm in config.arms.items()},
            "seeds": config.seeds, "eval_completions": config.eval_completions, "eval_seed": config.eval_seed,
            "golds": [str(g) for g in config.golds], "eval_prompts": str(config.eval_prompts),
            "eval_prompts_sha256": _sha(config.eval_prompts), "tune": str(config.tune), "tune_sha256": _sha(config.tune)}


def _body_hash(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def register(config: ExperimentConfig) -> Path:
    """Write registration.json; refused when one exists that says otherwise (register again in a new folder)."""
    path = config.output_dir / FILE
    body = plan(config)
    if path.exists():
        old = read(config)
        if {k: v for k, v in old.items() if k not in ("time", "sha256")} == body:
            return path  # registered already, identically
        raise TetherError(f"{path}: this experiment was registered on {old.get('time')} with other settings "
                          f"({', '.join(changes(old, body))}); a new registration needs a new output_dir")
    if config.output_dir.is_dir() and any((config.output_dir / "runs").glob("*/eval/result.json")):
        raise TetherError(f"{config.output_dir}: runs have been evaluated already; register before anything runs "
                          f"(a new output_dir)")
    atomic.write_json(path, {**body, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sha256": _body_hash(body)})
    return path


def read(config: ExperimentConfig) -> dict | None:
    """The registration, checked against its own hash; None when the experiment was not registered."""
    path = config.output_dir / FILE
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TetherError(f"{path}: not a registration tether wrote ({e})") from None
    body = {k: v for k, v in stored.items() if k not in ("time", "sha256")} if isinstance(stored, dict) else None
    if body is None or stored.get("sha256") != _body_hash(body):
        raise TetherError(f"{path}: edited after it was written (its hash does not match its content); a registration "
                          f"cannot change after the fact: register anew in a new output_dir")
    return stored


def changes(registered: dict, now: dict) -> list[str]:
    """The fields that differ, by name (arms one by one)."""
    out = []
    for key in sorted(set(registered) | set(now)):
        if key in ("time", "sha256"):
            continue
        if key == "arms":
            a, b = registered.get("arms", {}), now.get("arms", {})
            out += [f"arm {arm} {'added' if arm not in a else 'removed' if arm not in b else 'changed'}"
                    for arm in sorted(set(a) | set(b)) if a.get(arm) != b.get(arm)]
        elif registered.get(key) != now.get(key):
            out.append(key)
    return out


def changes_since(config: ExperimentConfig) -> tuple[dict | None, list[str]]:
    """(the registration or None, what changed since)."""
    registered = read(config)
    return registered, ([] if registered is None else changes(registered, plan(config)))
