"""Integration: `tether tune` on the real embedded Gemma 3 270M, two steps with every part on.

Policy, judge and gold judge are the embedded Gemma; drift and the embedding-KL defense use
the embedded MiniLM. Small batches keep it to about a minute on 2 CPU cores.
"""

import json

import numpy as np
import pytest
import yaml
from test_cli import tether

pytestmark = pytest.mark.gemma


def test_two_real_steps_on_gemma(tmp_path, examples_dir, two_prompts):
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump({
        "constitution": str(examples_dir / "cheerful.yaml"), "gold_constitution": str(examples_dir / "fluent.yaml"),
        "prompts": str(two_prompts), "steps": 2, "completions_per_prompt": 4, "max_completion_tokens": 12,
        "base_samples_per_prompt": 2, "embedding_kl": {"coef": 1.0}, "save_every": 2,
        "output_dir": str(tmp_path / "run"),
    }))
    result = tether("tune", config, "-q")
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "run"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert metrics[1]["kl"] > 0  # the adapter moved after one update
    for m in metrics:
        for key in ("reward/train", "gold/score", "drift/embedding", "defense/embedding_kl/mean", "entropy"):
            assert np.isfinite(m[key]), key
        assert -10 < m["reward/train"] < 10 and 0 <= m["drift/embedding"] <= 2
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 8
    assert all(s["completion"].strip() and "<start_of_image>" not in s["completion"] for s in samples)
    assert (run / "final" / "adapter_config.json").exists() and (run / "finished.json").exists()
