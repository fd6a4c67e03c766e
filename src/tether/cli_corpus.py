"""`tether sample`, `tether audit-corpus`, `tether sft`: a corpus sampled, audited by a person, trained on.

Registered on the `tether` app by `cli.py`; like it, they only parse and call (tether/corpus/ does
the work), and every input is checked before a model loads.

    tether sample examples/sample_cheerful.yaml
    tether audit-corpus corpus/cheerful --open
    tether sft corpus/cheerful --set output_dir=runs/sft-cheerful
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tether.cli_options import QuietOpt, RemoteOpt, remote_set
from tether.errors import TetherError
from tether.infra import progress


def sample(
    config: Annotated[Path, typer.Argument(help="sample config YAML (see examples/sample_cheerful.yaml)")],
    set_: Annotated[list[str], typer.Option("--set", help="override a config field: --set search=tree (repeatable)")] = [],
    force: Annotated[bool, typer.Option(help="start the corpus directory over instead of continuing it")] = False,
    trust_remote_code: RemoteOpt = False,
    quiet: QuietOpt = False,
):
    """Rejection-sample a corpus: N candidates a prompt, judged, monitored, kept or rejected with a reason."""
    from tether.corpus.config import SampleConfig
    from tether.infra.config import load_config

    progress.set_enabled(not quiet)
    settings = load_config(SampleConfig, config, [*set_, *remote_set(trust_remote_code)])
    from tether.corpus.sample import run_sample
    from tether.corpus.summary import summarize
    from tether.display import corpus_line, corpus_table, stdout

    corpus = run_sample(settings, force=force)
    summary = summarize(corpus, settings)
    stdout.print(corpus_table(summary))
    stdout.print(corpus_line(summary, corpus.corpus_path))


def audit_corpus(
    corpus_dir: Annotated[Path, typer.Argument(help="a corpus directory made by `tether sample`")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="port on 127.0.0.1 (0: any free port)")] = 8765,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="open the page in the default browser")] = False,
):
    """Serve a page on 127.0.0.1 to accept, reject or edit each sample; decisions are saved as they are made."""
    from tether.corpus.review import serve

    serve(corpus_dir, port=port, open_browser=open_browser)


def sft(
    corpus_dir: Annotated[Path | None, typer.Argument(help="an audited corpus directory (its corpus.jsonl is the training set)")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="sft config YAML (every field has a default)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a config field: --set epochs=1 (repeatable)")] = [],
    resume: Annotated[Path | None, typer.Option(help="continue the run in this directory from its last checkpoint")] = None,
    force: Annotated[bool, typer.Option(help="overwrite a run directory that already holds a run")] = False,
    trust_remote_code: RemoteOpt = False,
    quiet: QuietOpt = False,
):
    """Fine-tune the policy (LoRA, TRL's SFTTrainer) on a corpus; score held-out prompts before and after."""
    from tether.corpus.config import SftConfig
    from tether.infra.config import load_config

    progress.set_enabled(not quiet)
    if (corpus_dir is None) == (resume is None):
        raise TetherError("give a CORPUS_DIR to start a run, or --resume RUN_DIR to continue one")
    if resume is not None:
        from tether.infra.rundir import RunDir

        # a resumed run trusts remote code only if this command is told to, whatever the stored config says
        settings = RunDir(resume).settings(SftConfig, drop=("corpus", "constitution_sha256"), output_dir=resume.absolute(),
                                           trust_remote_code=trust_remote_code)
    else:
        settings = load_config(SftConfig, config, [*set_, *remote_set(trust_remote_code)])
    if corpus_dir is not None:
        from tether.corpus.store import CorpusDir

        CorpusDir(corpus_dir).require()  # before the slow imports
    from tether.corpus.sft import run_sft
    from tether.display import sft_table, stdout

    run, evaluation = run_sft(corpus_dir, settings, resume_dir=resume, force=force)
    stdout.print(sft_table(evaluation))
    stdout.print(f"run finished: {run.path}; adapter: {run.path / 'final'}")


def register(app: typer.Typer) -> None:
    app.command()(sample)
    app.command("audit-corpus")(audit_corpus)
    app.command()(sft)
