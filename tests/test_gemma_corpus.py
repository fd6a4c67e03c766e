"""Integration: `tether sample` on the real embedded Gemma 3 270M, a handful of completions."""

import json

import pytest
import yaml
from test_cli import tether

pytestmark = pytest.mark.gemma


def test_sample_on_gemma(tmp_path, examples_dir, two_prompts):
    config = tmp_path / "sample.yaml"
    config.write_text(yaml.safe_dump({
        "constitution": str(examples_dir / "cheerful.yaml"), "prompts": str(two_prompts), "completions_per_prompt": 3,
        "max_completion_tokens": 16, "output_dir": str(tmp_path / "corpus"),
    }))
    run = tether("sample", config, "-q")
    assert run.returncode == 0, run.stderr[-3000:]
    candidates = [json.loads(line) for line in (tmp_path / "corpus" / "candidates.jsonl").read_text().splitlines()]
    assert len(candidates) == 6
    for c in candidates:
        assert c["completion"].strip() and "<start_of_image>" not in c["completion"]
        assert c["status"] in ("kept", "rejected") and c["reason"]
        assert -20 < c["scores"]["cheerful"] < 20
    kept = [c["id"] for c in candidates if c["status"] == "kept"]
    corpus = [json.loads(line) for line in (tmp_path / "corpus" / "corpus.jsonl").read_text().splitlines()]
    assert [r["id"] for r in corpus] == kept
    assert "candidates kept" in run.stdout
