"""`tether experiment`: arms x seeds of one task, tuned, evaluated alike on held-out prompts, summarised.

    tether experiment examples/experiment_cheerful.yaml              # run (or continue) the grid
    tether experiment examples/experiment_cheerful.yaml --jobs 2     # two runs side by side
    tether experiment examples/experiment_cheerful.yaml --summary    # only rewrite the summary
    tether experiment examples/experiment_cheerful.yaml --pairs      # blind pairs for a person
    tether experiment examples/experiment_baselines.yaml --register  # pre-register, before anything runs
    tether experiment examples/experiment_baselines.yaml --read      # reading batches; later, take the answers

Like cli.py, it only parses and calls (tether/experiment/ does the work).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tether.cli_options import RemoteOpt, remote_set


def experiment(
    config: Annotated[Path, typer.Argument(help="experiment YAML (see examples/experiment_cheerful.yaml)")],
    set_: Annotated[list[str], typer.Option("--set", help="override a field: --set seeds=[0,1] (repeatable)")] = [],
    jobs: Annotated[int | None, typer.Option(min=1, help="runs side by side (default: the config's jobs)")] = None,
    summary: Annotated[bool, typer.Option("--summary", help="only rewrite results, summary and plots from what exists")] = False,
    pairs: Annotated[bool, typer.Option("--pairs", help="write blind pairs (each arm against the base) for `tether label --mode compare`")] = False,
    read: Annotated[bool, typer.Option("--read", help="build the blind reading's batches (every arm and the base in each); run again to take the readers' answers")] = False,
    register_: Annotated[bool, typer.Option("--register", help="write registration.json (hypotheses, measures, analysis, arms, hashes) and exit, before anything runs")] = False,
    trust_remote_code: RemoteOpt = False,
):
    """Run every arm x seed (resumable; finished runs skipped, failures recorded), evaluate each, and summarise."""
    from tether.experiment.config import load_experiment
    from tether.experiment.evaluate import check_golds
    from tether.experiment.leaks import check_no_leak, experiment_golds
    from tether.experiment.summary import export_pairs, summarize
    from tether.infra import progress

    set_ = [*set_, *remote_set(trust_remote_code)]  # every run's tune config, and each worker, get it
    settings = load_experiment(config, set_)
    check_golds(settings)
    check_no_leak(settings.eval_prompts, experiment_golds(settings))  # an evaluation prompt a gold has seen: refused
    if register_:
        from tether.experiment.registration import register as write_registration

        progress.console.print(f"registered: {write_registration(settings)}", highlight=False)
        return
    from tether.experiment.registration import changes_since

    registered, changed = changes_since(settings)  # an edited registration: refused here
    if changed:
        progress.note(f"changed since registration ({registered['time']}): {', '.join(changed)}")
    if read:
        _read(settings)
        return
    if pairs:
        for command in export_pairs(settings):
            progress.console.print(command, highlight=False, soft_wrap=True)
        return
    if not summary:
        from tether.experiment.config import save_settings
        from tether.experiment.grid import run_grid

        save_settings(settings)  # experiment.yaml: the settings as run (--summary and --pairs only read)
        run_grid(config, settings, set_, jobs)
    page = summarize(settings)
    from tether.cli_gold import stdout_print

    stdout_print(page.read_text())
    stdout_print(f"summary: {page}  page: {page.parent / 'index.html'}")


def _read(settings) -> None:
    from tether.experiment import reading
    from tether.infra import progress

    out = reading.folder(settings)
    if not (out / "key.json").exists():
        reading.build(settings)
        batches = len(list((out / "batches").glob("*.jsonl")))
        progress.console.print(f"reading: {batches} batches in {out / 'batches'}; instructions {out / 'README.md'} and "
                               f"docs/reading.md; answers go to {out / 'answers'}/NN.jsonl", highlight=False, soft_wrap=True)
        return
    taken, missing = reading.take_answers(settings)
    progress.console.print(f"reading: {taken} new answer(s) taken into {out / 'labels.jsonl'}"
                           + (f"; batches without answers: {', '.join(missing)}" if missing else "; every batch answered"),
                           highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command()(experiment)
