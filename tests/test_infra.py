"""The one JSONL module and the one config loader: torn lines, line and column, paths."""

from pathlib import Path

import pytest

from tether.corpus.config import SampleConfig, SftConfig
from tether.errors import TetherError
from tether.infra import jsonl
from tether.infra.config import load_config
from tether.infra.seeds import base_samples_seed, item_seed
from tether.tune.config import TuneConfig


def test_a_torn_last_line_is_skipped_and_cut_by_the_next_append(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_bytes(b'{"step": 1}\n{"step": 2}\n{"step": 3, "lo')  # kill -9 mid-append
    assert jsonl.read(log) == [{"step": 1}, {"step": 2}]
    jsonl.append(log, [{"step": 3}])
    assert log.read_bytes() == b'{"step": 1}\n{"step": 2}\n{"step": 3}\n'
    assert jsonl.read(log) == [{"step": 1}, {"step": 2}, {"step": 3}]


def test_a_bad_line_inside_is_damage_named_by_file_and_line(tmp_path):
    log = tmp_path / "samples.jsonl"
    log.write_bytes(b'{"step": 1}\n{"step": 2, oops}\n{"step": 3}\n')
    with pytest.raises(TetherError, match=r"samples.jsonl: line 2: malformed JSON"):
        jsonl.read(log)
    log.write_bytes(b'{"step": 1}\n[1, 2]\n')
    with pytest.raises(TetherError, match=r"line 2: expected a JSON object, got list"):
        jsonl.read(log)
    log.write_bytes(b'{"step": 1}\n\xff\xfe\n')
    with pytest.raises(TetherError, match=r"line 2: not UTF-8"):
        jsonl.read(log)
    assert jsonl.read(tmp_path / "absent.jsonl") == []
    with pytest.raises(TetherError, match="no such file"):
        jsonl.read(tmp_path / "absent.jsonl", missing_ok=False)


def test_rewrite_is_whole_or_nothing(tmp_path):
    log = tmp_path / "events.jsonl"
    jsonl.append(log, [{"event": "start"}, {"event": "checkpoint", "step": 2}])
    jsonl.rewrite(log, [row for row in jsonl.read(log) if row.get("step", 0) <= 1])
    assert jsonl.read(log) == [{"event": "start"}]
    assert [p.name for p in tmp_path.iterdir()] == ["events.jsonl"]  # no temporary file left


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_config_errors_carry_line_column_field_value_and_fix(tmp_path):
    cfg = _write(tmp_path / "tune.yaml", "constitution: c.yaml\nprompts: p.txt\nsteps: many\n")
    with pytest.raises(TetherError, match=r"tune.yaml: line 3, column 8: steps: 'many': .*integer.*expected optimizer steps"):
        load_config(TuneConfig, cfg)
    cfg = _write(tmp_path / "tune.yaml", "constitution: c.yaml\nprompts: p.txt\ndetectors:\n  kl: 0.3\n  klx: 1\n")
    with pytest.raises(TetherError, match=r"line 5, column 8: detectors.klx: unknown field; valid fields: affirmation_rate"):
        load_config(TuneConfig, cfg)
    cfg = _write(tmp_path / "bad.yaml", "constitution: [c.yaml\n")
    with pytest.raises(TetherError, match=r"bad.yaml: line \d+, column \d+: malformed YAML"):
        load_config(TuneConfig, cfg)
    with pytest.raises(TetherError, match=r"expected a mapping of config fields"):
        load_config(TuneConfig, _write(tmp_path / "list.yaml", "- a\n- b\n"))


def test_set_errors_are_one_line(tmp_path):
    cfg = _write(tmp_path / "tune.yaml", "constitution: c.yaml\nprompts: p.txt\n")
    with pytest.raises(TetherError, match=r"--set 'lora_target_modules=\[q_proj': the value is not valid YAML"):
        load_config(TuneConfig, cfg, ["lora_target_modules=[q_proj"])
    with pytest.raises(TetherError, match=r"--set 'nonsense': write field=value"):
        load_config(TuneConfig, cfg, ["nonsense"])
    with pytest.raises(TetherError, match=r"--set 'steps.x=1': steps is not a group of fields"):
        load_config(TuneConfig, cfg, ["steps=3", "steps.x=1"])
    with pytest.raises(TetherError, match=r"steps: -1: Input should be greater than or equal to 1"):
        load_config(TuneConfig, cfg, ["steps=-1"])
    with pytest.raises(TetherError, match=r"--set: epoch: unknown field"):
        load_config(SftConfig, None, ["epoch=2"])


def test_paths_are_absolute_from_the_file_or_from_here(tmp_path, monkeypatch):
    folder = tmp_path / "cfg"
    folder.mkdir()
    cfg = _write(folder / "sample.yaml", "constitution: c.yaml\nprompts: p.txt\noutput_dir: corpus/x\n")
    here = tmp_path / "work"
    here.mkdir()
    monkeypatch.chdir(here)
    config = load_config(SampleConfig, cfg, ["adapter=adapters/a"])
    assert config.constitution == folder / "c.yaml" and config.prompts == folder / "p.txt"  # beside the file
    assert config.output_dir == here / "corpus/x"  # outputs: from where the command runs
    assert config.adapter == here / "adapters/a"  # --set: from where the command runs
    stored = load_config(SampleConfig, data=config.model_dump(mode="json"))  # a stored config means the same anywhere
    monkeypatch.chdir(tmp_path)
    assert load_config(SampleConfig, data=stored.model_dump(mode="json")) == stored


def test_one_seed_formula():
    assert item_seed(0, 5) == 5 and item_seed(1, 0) == 100_003
    assert len({item_seed(s, i) for s in range(3) for i in range(1000)}) == 3000
    assert base_samples_seed(0) not in {item_seed(0, i) for i in range(10_000)}
