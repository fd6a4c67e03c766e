"""Input checks a command runs first, before minutes of model loading; imports nothing heavy.

`check_out` is the rule for every `--out` file: not a folder, a format tether writes, not
the input it reads, and never one of the files tether keeps in a run or corpus directory
(its config, logs, checkpoints, report): a score written over a run's metrics.jsonl would
destroy the run's record. Any other name in such a directory is allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tether.errors import TetherError

# The files and folders tether writes in a run directory (tune, sft) or a corpus directory (sample).
OWN_FILES = frozenset({
    "config.yaml", "events.jsonl", "metrics.jsonl", "samples.jsonl", "finished.json", "best.json", "eval.json",
    "base_samples.jsonl", "constitution.yaml", "meta.json", "candidates.jsonl", "decisions.jsonl", "corpus.jsonl",
    "summary.json", "summary.md", "scores.png", ".lock",
})
OWN_FOLDERS = frozenset({"checkpoints", "final", "report", "values", "blend"})


def tether_dir(folder: Path) -> str | None:
    """'run' or 'corpus' when tether made this folder, else None."""
    if not (folder / "config.yaml").is_file():
        return None
    if (folder / "meta.json").exists() or (folder / "candidates.jsonl").exists():
        return "corpus"
    if any((folder / name).exists() for name in ("events.jsonl", "metrics.jsonl", "finished.json")):
        return "run"
    return None


def check_out(out: str | Path, suffixes: Sequence[str] = (), inputs: Sequence[str | Path] = ()) -> None:
    """Refuse an --out that is a folder, of a format not written, one of `inputs`, or tether's own file."""
    path = Path(out)
    if path.is_dir():
        raise TetherError(f"{path}: is a folder; --out takes a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise TetherError(f"{path}: unknown output format '{path.suffix}'; use {' or '.join(suffixes)}")
    for source in inputs:
        if str(source) != "-" and path.exists() and Path(source).exists() and path.samefile(source):
            raise TetherError(f"{path}: --out is the TEXTS file; write the output to another file")
    kind = tether_dir(path.absolute().parent)
    if kind and path.name in OWN_FILES:
        raise TetherError(f"{path}: tether's own file of the {kind} in {path.parent}; write --out to another name")
    for folder in path.parents:
        if folder.name in OWN_FOLDERS and (kind := tether_dir(folder.absolute().parent)):
            raise TetherError(f"{path}: inside {folder}, a folder tether keeps for the {kind} in {folder.parent}; "
                              f"write --out elsewhere")


def check_config_file(path: str | Path, overrides: Sequence[str]) -> None:
    """Read the YAML and apply the --set overrides: the file and syntax errors, without the config model."""
    from tether.infra.config import apply_overrides, parse_yaml
    from tether.infra.texts import read_utf8

    apply_overrides(parse_yaml(read_utf8(path), str(path)), overrides)


def check_value_run(run_dir: str | Path) -> None:
    """`tether values`: a value store and a readable config, before the embedder loads."""
    from tether.infra.rundir import RunDir

    run = RunDir(run_dir)
    if not (run.path / "values" / "values.json").is_file():
        raise TetherError(f"{run.path}: no value store (values/values.json); it is written by runs with utility.weight > 0")
    run.config()
