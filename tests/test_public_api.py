"""The public API, pinned: `tether.__all__`, the documented import paths, and the old paths of moved modules.

A user's TRL script written from an older README must keep working for a release, with a
DeprecationWarning naming the new path; a name dropped from `__all__` by accident fails here.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import tether
from tether import _moved

PUBLIC = [line for line in (Path(__file__).parent / "public_api.txt").read_text().splitlines()
          if line and not line.startswith("#")]
DOCUMENTED = {  # module path -> names the README and docs import from it
    "tether.rewards": ["ConstitutionReward", "GoldReward", "PassageReward", "RewardShape"],
    "tether.watch.callbacks": ["MonitorCallback", "DetectorCallback", "RewardTerm", "StepPrinter"],
    "tether.infra.models": ["load_causal_lm", "load_embedder", "EMBEDDED_LM"],
    "tether.judge.evaluator": ["Evaluator", "ScoreResult"],
    "tether.verl": ["compute_score"],
}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def test_all_is_pinned_and_every_name_resolves():
    assert sorted(tether.__all__) == sorted(PUBLIC), "a change to tether.__all__ is an API change: update CHANGELOG.md"
    for name in tether.__all__:
        assert getattr(tether, name) is not None


@pytest.mark.parametrize("module", sorted(DOCUMENTED))
def test_documented_paths_import_without_warning(module):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        mod = importlib.import_module(module)
        for name in DOCUMENTED[module]:
            assert getattr(mod, name) is not None


@pytest.mark.parametrize("old", sorted(_moved.MOVED))
def test_a_moved_module_keeps_its_old_path_with_a_warning(old):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {_moved.MOVED[old]}"):
        mod = importlib.import_module(old)
    assert mod is importlib.import_module(_moved.MOVED[old])  # one module, two names: no second copy of its state


def test_a_script_from_the_old_readme_still_trains(tmp_path, tiny_model_dir, examples_dir):
    """examples/trl_grpo_script.py with last month's imports: trains 2 steps, logs, and is told where things went."""
    source = (examples_dir / "trl_grpo_script.py").read_text()
    start, end = source.index("from tether import ("), source.index(")\n", source.index("from tether import (")) + 2
    old_imports = (
        "from tether.rewards import ConstitutionReward\n"
        "from tether.callbacks import DetectorCallback, MonitorCallback, RewardTerm\n"
        "from tether.models import EMBEDDED_LM, load_causal_lm, load_embedder\n"
        "from tether.evaluator import Evaluator\n"
        "from tether.texts import read_prompts\n"
        "from tether.drift import sample_base\n"
        "from tether import EmbeddingKL\n"
    )
    script = tmp_path / "old_script.py"
    script.write_text(source[:start] + old_imports + source[end:])
    result = subprocess.run([sys.executable, "-W", "always::DeprecationWarning", str(script), "--policy",
                             str(tiny_model_dir), "--judge", str(tiny_model_dir), "--steps", "2",
                             "--output-dir", str(tmp_path / "out")],
                            capture_output=True, text=True, env=ENV, timeout=600, cwd=examples_dir.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 1: reward" in result.stdout and "step 2: reward" in result.stdout
    for old in ("tether.callbacks", "tether.models", "tether.evaluator"):
        assert f"{old} moved to" in result.stderr
