"""A run's lifecycle: --force deletes only tether's files, resume rewinds logs, events and trips, checkpoints are whole."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from transformers import TrainerControl, TrainerState

from tether.corpus.store import CorpusDir
from tether.errors import TetherError
from tether.infra.rundir import RunDir
from tether.judge.constitution import load_constitution
from tether.watch.callbacks import DetectorCallback
from tether.watch.detectors import DetectorConfig

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def tune(*args):
    return subprocess.run([sys.executable, "-m", "tether.cli", "tune", *map(str, args), "-q"], check=False, capture_output=True,
                          text=True, env=ENV, timeout=600)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_lines(path: Path, rows: list[dict], torn: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + torn)


def a_run(path: Path, config: dict | None = None) -> RunDir:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config or {"steps": 4}))
    write_lines(path / "metrics.jsonl", [{"step": 1}])
    (path / "final").mkdir()
    (path / "final" / "adapter_config.json").write_text("{}")
    (path / ".metrics.jsonl.x1y2.tmp").write_text("")  # an atomic write a kill interrupted
    return RunDir(path)


# --- 1. --force deletes only what tether wrote -------------------------------------------------


def test_force_replaces_a_run_but_never_a_users_files(tmp_path):
    run = a_run(tmp_path / "run")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (run.path / "report").symlink_to(outside, target_is_directory=True)  # an owned name, as a link: unlinked only
    run.start({"steps": 2}, force=True)
    assert sorted(p.name for p in run.path.iterdir()) == ["config.yaml", "events.jsonl"]
    assert yaml.safe_load((run.path / "config.yaml").read_text()) == {"steps": 2}
    assert (outside / "keep.txt").read_text() == "mine"

    (run.path / "thesis").mkdir()
    (run.path / "thesis" / "chapter1.txt").write_text("a year of work")
    with pytest.raises(TetherError, match=r"run: --force would delete files tether did not write \(thesis\)"):
        run.start({"steps": 3}, force=True)
    assert (run.path / "thesis" / "chapter1.txt").read_text() == "a year of work"
    assert yaml.safe_load((run.path / "config.yaml").read_text()) == {"steps": 2}  # nothing deleted

    for name in ("a.txt", "b.txt", "c.txt", "d.txt"):
        (run.path / name).write_text("")
    with pytest.raises(TetherError, match=r"\(a\.txt, b\.txt, c\.txt and 2 more\)"):
        run.start({}, force=True)


def test_force_refuses_a_folder_that_holds_no_run(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("")  # tether's name, but no run here
    with pytest.raises(TetherError, match="holds no a run"):
        RunDir(folder).start({}, force=True)
    assert (folder / "metrics.jsonl").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    RunDir(empty).start({}, force=True)
    assert (empty / "config.yaml").exists()


def test_corpus_force_deletes_only_the_corpus(tmp_path, examples_dir):
    constitution_file = examples_dir / "cheerful.yaml"
    constitution = load_constitution(constitution_file)
    corpus = CorpusDir(tmp_path / "corpus")
    assert corpus.start({"n": 1}, constitution, constitution_file, force=False) is False
    write_lines(corpus.candidates_path, [{"id": "a"}], torn='{"id": "b"')
    (corpus.path / ".corpus.jsonl.abc.tmp").write_text("")
    (corpus.path / "thesis.txt").write_text("mine")
    with pytest.raises(TetherError, match=r"corpus: --force would delete files tether did not write \(thesis\.txt\)"):
        corpus.start({"n": 2}, constitution, constitution_file, force=True)
    assert corpus.candidates_path.exists()
    (corpus.path / "thesis.txt").unlink()
    assert corpus.start({"n": 2}, constitution, constitution_file, force=True) is False
    assert sorted(p.name for p in corpus.path.iterdir()) == ["config.yaml", "constitution.yaml", "meta.json"]


def test_tune_force_refuses_and_bad_inputs_write_nothing(tmp_path, tiny_model_dir, examples_dir):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter1.txt").write_text("a year of work")
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({
        "policy_model": str(tiny_model_dir), "judge_model": str(tiny_model_dir), "embedder": None,
        "constitution": str(examples_dir / "cheerful.yaml"), "prompts": str(examples_dir / "prompts.txt"),
        "steps": 1, "output_dir": str(tmp_path / "run"),
    }))
    result = tune(config, "--set", f"output_dir={thesis}", "--force")
    assert result.returncode == 2 and "--force would delete files tether did not write (chapter1.txt)" in result.stderr
    assert "Traceback" not in result.stderr and (thesis / "chapter1.txt").read_text() == "a year of work"

    # A mistyped prompts path or a broken constitution is refused before the run directory exists.
    result = tune(config, "--set", f"prompts={tmp_path / 'promts.txt'}")
    assert result.returncode == 2 and "promts.txt" in result.stderr and not (tmp_path / "run").exists()
    (tmp_path / "bad.yaml").write_text("principles: [")
    result = tune(config, "--set", f"constitution={tmp_path / 'bad.yaml'}")
    assert result.returncode == 2 and "bad.yaml" in result.stderr and not (tmp_path / "run").exists()


# --- 3, 4, 5. resume: rewound logs and events, whole checkpoints -------------------------------


def a_checkpoint(run: RunDir, step: int, values: bool = True) -> Path:
    folder = run.checkpoints / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (folder / name).write_text("{}")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if values:
        (folder / "values").mkdir()
        (folder / "values" / "values.json").write_text("[]")
    return folder


def test_a_checkpoint_counts_only_when_whole(tmp_path):
    run = a_run(tmp_path / "run", {"steps": 8, "utility": {"weight": 1.0}})
    a_checkpoint(run, 2)
    a_checkpoint(run, 4, values=False)  # TRL wrote trainer_state.json; the value store never came
    (a_checkpoint(run, 6) / "trainer_state.json").write_text('{"global_step": ')  # torn
    (a_checkpoint(run, 8) / "adapter_model.safetensors").unlink()
    assert [s for s, _ in run.checkpoints_by_step()] == [2]
    assert run.last_checkpoint() == (run.checkpoints / "checkpoint-2", 2)
    no_utility = a_run(tmp_path / "plain", {"steps": 4})
    a_checkpoint(no_utility, 2, values=False)
    assert no_utility.last_checkpoint()[1] == 2


def test_rewind_drops_later_lines_events_and_checkpoints(tmp_path):
    run = a_run(tmp_path / "run")
    write_lines(run.path / "metrics.jsonl", [{"step": s} for s in (1, 2, 3)], torn='{"step": 4, "lo')
    write_lines(run.path / "samples.jsonl", [{"step": s} for s in (1, 1, 2, 2, 3)])
    write_lines(run.path / "events.jsonl", [
        {"event": "start"}, {"event": "detector", "step": 1, "detectors": [{"detector": "kl"}]},
        {"event": "values", "step": 2}, {"event": "checkpoint", "step": 2}, {"event": "resume", "from_step": 2},
        {"event": "detector", "step": 3, "detectors": [{"detector": "repetition"}]}, {"event": "values", "step": 4},
        {"event": "finish", "steps": 4},
    ], torn='{"event": "checkp')
    a_checkpoint(run, 2)
    a_checkpoint(run, 4, values=False)
    run.rewind_to(2)
    assert [m["step"] for m in lines(run.path / "metrics.jsonl")] == [1, 2]
    assert [m["step"] for m in lines(run.path / "samples.jsonl")] == [1, 1, 2, 2]
    assert [(e["event"], e.get("step")) for e in lines(run.path / "events.jsonl")] == [
        ("start", None), ("detector", 1), ("values", 2), ("checkpoint", 2), ("resume", None)]
    assert not (run.checkpoints / "checkpoint-4").exists() and not (run.path / ".metrics.jsonl.x1y2.tmp").exists()

    # Killed after checkpoint 4 was whole but before its event: the event is written once, on resume.
    a_checkpoint(run, 4)
    run.rewind_to(4)
    run.rewind_to(4)
    assert [e["step"] for e in lines(run.path / "events.jsonl") if e["event"] == "checkpoint"] == [2, 4]

    # Damage in the middle of a log is not a crash's trace: one line naming the file and the line.
    (run.path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(TetherError, match=r"metrics\.jsonl: line 2: malformed JSON"):
        run.rewind_to(2)


def test_detectors_continue_a_resumed_run(tmp_path):
    """Trips before the checkpoint are kept, not repeated; distinct-2 is measured against the run's first step."""
    config = DetectorConfig(distinct_2_drop=0.5, affirmation_rate=0.05)
    before = [{"step": 1, "reward/train": 0.0, "monitor/distinct_2": 1.0, "monitor/affirmation_rate": 0.2},
              {"step": 2, "reward/train": 0.0, "monitor/distinct_2": 0.9, "monitor/affirmation_rate": 0.2}]
    events = [{"event": "start"}, {"event": "detector", "step": 1, "best": None,
                                   "detectors": [{"detector": "affirmation_rate", "step": 1}]}]
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    detector = DetectorCallback(SimpleNamespace(last_completions=["a", "b"]), config, run_dir=run)
    detector.restore(events, before)
    assert detector.tripped == {"affirmation_rate": 1}
    state = TrainerState()
    state.log_history = [{"step": 3, "reward/train": 0.0, "monitor/distinct_2": 0.3, "monitor/affirmation_rate": 0.3}]
    detector.on_log(None, state, TrainerControl())
    assert detector.tripped == {"affirmation_rate": 1, "distinct_2_drop": 3}
    trips = [(t["detector"], e["step"]) for e in lines(run.path / "events.jsonl") for t in e["detectors"]]
    assert trips == [("distinct_2_drop", 3)]  # the affirmation trip is not logged again


# --- 2, 3, 4 end to end: resume a copied run with a torn line ------------------------------------


def tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_resuming_a_copy_continues_the_copy_and_keeps_each_trip_once(tmp_path, tiny_model_dir, examples_dir):
    config = tmp_path / "tune.yaml"
    original = tmp_path / "A"
    config.write_text(yaml.safe_dump({
        "policy_model": str(tiny_model_dir), "judge_model": str(tiny_model_dir), "embedder": None,
        "constitution": str(examples_dir / "cheerful.yaml"), "prompts": str(examples_dir / "prompts.txt"),
        "steps": 4, "completions_per_prompt": 4, "max_completion_tokens": 6, "save_every": 2,
        "output_dir": str(original), "lora_rank": 2, "lora_target_modules": ["q_proj"],
        "detectors": {"affirmation_rate": 0.01},  # the tiny random model says "yes": trips at once
    }))
    result = tune(config)
    assert result.returncode == 0, result.stderr[-3000:]
    trips = json.loads((original / "finished.json").read_text())["detector_trips"]
    assert trips and min(trips.values()) <= 2  # a trip before the checkpoint we resume from

    # B is a copy of A killed after step 4 was logged (half of a line written) but before checkpoint 4.
    copy = tmp_path / "B"
    shutil.copytree(original, copy)
    for gone in ("finished.json", "final", "checkpoints/checkpoint-4"):
        shutil.rmtree(copy / gone) if (copy / gone).is_dir() else (copy / gone).unlink()
    events = [e for e in lines(copy / "events.jsonl") if e["event"] != "finish"]
    write_lines(copy / "events.jsonl", events)
    with open(copy / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "reward/tr')
    before = tree(original)

    resumed = tune("--resume", copy)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert tree(original) == before  # the original, named in the copy's config.yaml, is untouched
    assert (copy / "finished.json").exists() and (copy / "final").exists()
    assert [m["step"] for m in lines(copy / "metrics.jsonl")] == [1, 2, 3, 4]
    events = lines(copy / "events.jsonl")
    logged = [(t["detector"], e["step"]) for e in events if e["event"] == "detector" for t in e["detectors"]]
    assert len(logged) == len({d for d, _ in logged})  # each trip once
    assert [e["step"] for e in events if e["event"] == "checkpoint"] == [2, 4]
    summary = json.loads((copy / "finished.json").read_text())
    assert summary["detector_trips"] == dict(logged) and summary["resumed_from"] == 2
    assert set(trips) - {d for d, s in trips.items() if s > 2} <= set(summary["detector_trips"])
