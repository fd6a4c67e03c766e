"""The README stays true: its config reference and its test command match the code and CI."""

from pathlib import Path

from tether.infra.config_reference import (
    constitution_reference,
    sample_reference,
    sft_reference,
    tune_reference,
)

ROOT = Path(__file__).resolve().parent.parent


def test_readme_has_the_current_config_references():
    readme = (ROOT / "README.md").read_text()
    assert constitution_reference() in readme
    assert tune_reference() in readme
    assert sample_reference() in readme
    assert sft_reference() in readme


def test_ci_runs_the_readme_test_command():
    command = 'pip install torch==2.13.0 -e ".[test]" && python -m pytest'
    assert command in (ROOT / "README.md").read_text()
    assert command in (ROOT / ".ci" / "run").read_text()
