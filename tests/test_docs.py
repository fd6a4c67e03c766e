"""The README stays true: its config reference and its test command match the code and CI."""

from pathlib import Path

from tether.config_reference import (
    constitution_reference,
    deploy_reference,
    experiment_reference,
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
    assert experiment_reference() in readme
    assert deploy_reference() in readme


def test_ci_runs_the_readme_test_command():
    command = 'pip install torch==2.13.0 -e ".[test]" && python -m pytest'
    assert command in (ROOT / "README.md").read_text()
    assert command in (ROOT / ".ci" / "run").read_text()


def test_public_names_import_from_tether_alone_and_lazily():
    """A user's TRL script imports from `tether`; importing it (and the CLI) does not load torch."""
    import subprocess
    import sys

    code = ("import sys, tether, tether.cli; assert 'torch' not in sys.modules, 'eager import'; "
            "[getattr(tether, n) for n in tether.__all__]; print(len(tether.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) >= 20


def test_no_module_over_400_lines():
    sizes = {p.relative_to(ROOT): len(p.read_text().splitlines()) for p in (ROOT / "src" / "tether").rglob("*.py")}
    assert max(sizes.values()) <= 400, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]
