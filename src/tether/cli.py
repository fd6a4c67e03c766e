"""The `tether` command: parses arguments and calls the library; no logic lives here.

    tether score examples/cheerful.yaml examples/texts.jsonl --out scores.jsonl
    tether audit examples/cheerful.yaml examples/texts.jsonl --out audit.json

Errors the user can fix, and command-line mistakes, print one line and exit with code 2.
Each command checks its input before it imports torch or loads a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tether.cli_gold import agreement, gold_app, stdout_print
from tether.cli_options import QuietOpt, RemoteOpt, remote_set
from tether.errors import TetherError
from tether.infra import atomic, progress, threads
from tether.infra.models import EMBEDDED_LM

app = typer.Typer(
    help="Tune language models against a written constitution with AI feedback, and catch the reward hacking.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.callback()(threads.configure_command)  # torch's threads from this process's cores (infra/threads.py)

LONG_TEXT = ("truncate_left", "truncate_right", "error")


def _one_of(value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(allowed)}")
    return value


ConstitutionArg = Annotated[Path, typer.Argument(help="constitution YAML file (see examples/)")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="judge: a hub id, a local folder, or the embedded default")]
BatchOpt = Annotated[int, typer.Option(min=1, help="texts per forward pass")]
LongTextOpt = Annotated[
    str, typer.Option(callback=lambda v: _one_of(v, LONG_TEXT), help="a text longer than the judge's context: truncate_left (keep its end), truncate_right, or error")
]
MaxTokensOpt = Annotated[int | None, typer.Option(min=1, help="cap each text at this many tokens (default: 2048; raise it up to the judge's context)")]
DeviceOpt = Annotated[str, typer.Option(help="where the judge runs: auto (CUDA when present), cpu, cuda or cuda:N")]
DtypeOpt = Annotated[str, typer.Option(help="the judge's precision: auto (bfloat16 where the hardware has bf16 units, else float32), float32 or bfloat16")]


@app.command()
def score(
    constitution: ConstitutionArg,
    texts: Annotated[str, typer.Argument(help="texts: .jsonl (`text`, or `prompt`+`completion`), .txt (one per line), or - for stdin")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write per-text scores: .jsonl or .csv; never over "
                                      "tether's own files in a run or corpus directory (config, logs, checkpoints)")] = Path("scores.jsonl"),
    model: ModelOpt = EMBEDDED_LM,
    debias: Annotated[bool | None, typer.Option("--debias/--no-debias", help="force paired-negation scoring on or off for all principles")] = None,
    combine: Annotated[str | None, typer.Option(help="combine principles: mean or softmin (default: as the constitution says)")] = None,
    batch_size: BatchOpt = 8,
    long_text: LongTextOpt = "truncate_left",
    max_text_tokens: MaxTokensOpt = None,
    steps: Annotated[str | None, typer.Option("--steps", help="also judge each step blind to what follows: sentences, lines, re:PATTERN or python:MODULE:FUNCTION (a `steps` list per text)")] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", min=1, help="--steps: at most this many a text (the rest merged into the last)")] = None,
    trust_remote_code: RemoteOpt = False,
    quiet: QuietOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
):
    """Score texts against a constitution: per-principle log-odds and P(yes), and a summary table."""
    from tether.infra.checks import check_out
    from tether.infra.texts import output_rows, read_texts
    from tether.judge.constitution import load_constitution

    progress.set_enabled(not quiet)
    if combine is not None and combine not in ("mean", "softmin"):
        raise TetherError(f"--combine {combine!r}: write mean or softmin")
    rubric = load_constitution(constitution)
    records = read_texts(texts)
    check_out(out, (".jsonl", ".csv"), inputs=[texts])
    if steps is not None:
        from tether.infra.steps import check_how

        check_how(steps)
        if out.suffix.lower() != ".jsonl":
            raise TetherError(f"--out {out}: --steps writes a list per text; use a .jsonl file")
    from tether.display import score_table, stdout
    from tether.judge.evaluator import Evaluator

    evaluator = Evaluator(model, rubric, debias=debias, combine=combine, batch_size=batch_size,
                          long_text=long_text, max_text_tokens=max_text_tokens, trust_remote_code=trust_remote_code,
                          device=device, dtype=dtype)
    result = evaluator.score([r.text for r in records], show_progress=not quiet)
    table = score_table(result, [r.meta.get("label") for r in records])  # built first: a failure writes nothing
    rows = output_rows(records, result.records())
    if steps is not None:
        from tether.cli_steps import add_steps

        table = add_steps(evaluator, records, rows, steps, max_steps, table)
    atomic.write_records(out, rows)
    stdout.print(table)
    truncated = int((result.truncated_tokens > 0).sum())
    if truncated:
        progress.console.print(f"[yellow]warning:[/] {truncated} text(s) were cut to {evaluator.text_budget} tokens ({long_text}); "
                               f"see `truncated_tokens`; --max-text-tokens raises the cap")
    stdout.print(f"wrote {len(rows)} rows to {out}")


@app.command()
def audit(
    constitution: ConstitutionArg,
    texts: Annotated[str | None, typer.Argument(help="texts to perturb (default: the constitution's few-shot examples, or with --run the run's base samples)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write the machine-readable report (JSON)")] = Path("audit.json"),
    run: Annotated[Path | None, typer.Option(help="a run directory: also price its habits, its late samples against its base samples (samples.jsonl, base_samples.jsonl)")] = None,
    late: Annotated[int | None, typer.Option(min=1, help="--run: the last N steps count as late (default: the last third)")] = None,
    top: Annotated[int, typer.Option(min=1, help="--run: how many of the run's habits to price")] = 8,
    constant: Annotated[str | None, typer.Option(help="the constant answer, one text for every input (default: a generic pleasantry)")] = None,
    model: ModelOpt = EMBEDDED_LM,
    threshold: Annotated[float, typer.Option(help="a mean score gain (log-odds) at or above this is exploitable")] = 0.2,
    min_share: Annotated[float, typer.Option(min=0, max=1, help="...and only if the score rose for at least this share of texts")] = 0.6,
    batch_size: BatchOpt = 8,
    long_text: LongTextOpt = "truncate_left",
    max_text_tokens: MaxTokensOpt = None,
    trust_remote_code: RemoteOpt = False,
    quiet: QuietOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
):
    """Measure how much each principle pays for yes-injection, master keys, a constant answer and a run's own habits."""
    from tether.infra.checks import check_out
    from tether.judge.audit import audit_texts, perturbations
    from tether.judge.constitution import load_constitution
    from tether.judge.habits import read_run

    progress.set_enabled(not quiet)
    rubric = load_constitution(constitution)
    if constant is not None:
        perturbations(constant)  # a blank --constant fails before the model loads
    if late is not None and run is None:
        raise TetherError("--late counts the steps of a run: give --run RUN_DIR too")
    run_texts = read_run(run, late) if run is not None else None
    sample = audit_texts(rubric, texts, constitution) if texts is not None or run is None else None
    check_out(out, (".json",), inputs=[texts] if texts else [])
    from tether.display import audit_tables, stdout
    from tether.judge.evaluator import Evaluator
    from tether.judge.habits import audit_all

    evaluator = Evaluator(model, rubric, with_negations=True, batch_size=batch_size, long_text=long_text,
                          max_text_tokens=max_text_tokens, trust_remote_code=trust_remote_code, device=device, dtype=dtype)
    report = audit_all(evaluator, sample, run_texts, top=top, constant=constant, threshold=threshold,
                       min_share=min_share, show_progress=not quiet)
    atomic.write_json(out, report.to_json())
    for table in audit_tables(report):
        stdout.print(table)
    stdout.print(f"wrote {out}")
    stdout.print(f"[bold]verdict:[/] {escape(report.verdict())}")
    if report.habits is not None:
        stdout.print(f"[bold]habits:[/] {escape(report.habits.verdict())}")


@app.command()
def tune(
    config: Annotated[Path | None, typer.Argument(help="tune config YAML (see examples/tune_cheerful.yaml)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a config field: --set steps=5 (repeatable)")] = [],
    resume: Annotated[Path | None, typer.Option(help="continue the run in this directory from its last checkpoint")] = None,
    force: Annotated[bool, typer.Option(help="overwrite a run directory that already holds a run")] = False,
    trust_remote_code: RemoteOpt = False,
    quiet: QuietOpt = False,
):
    """Tune a policy against a constitution with TRL (GRPO or RLOO) and LoRA, logging a run directory."""
    from tether.infra.checks import check_config_file
    from tether.infra.rundir import RunDir

    progress.set_enabled(not quiet)
    if (config is None) == (resume is None):
        raise TetherError("give a CONFIG file to start a run, or --resume RUN_DIR to continue one")
    if resume:
        RunDir(resume).config()  # a missing or malformed stored config: one line, before the slow imports
    else:
        check_config_file(config, set_)
    from tether.display import tune_line
    from tether.infra.config import load_config
    from tether.tune.config import TuneConfig, resume_config

    settings = (resume_config(resume, trust_remote_code) if resume else  # validated before torch loads
                load_config(TuneConfig, config, [*set_, *remote_set(trust_remote_code)]))
    from tether.tune.run import run_tune

    run = run_tune(settings, resume=resume is not None, force=force)
    stdout_print(tune_line(run.path))


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a tether run directory (finished or in progress), or a deployment folder")],
    steps: Annotated[str | None, typer.Option(help="sample steps to show, e.g. 1,10,20 (default: spread + trips)")] = None,
    labels: Annotated[list[Path], typer.Option("--labels", help="a labels file (JSONL) from `tether label` on this run's samples (repeatable; RUN_DIR/labels.jsonl is always read)")] = [],
):
    """Write RUN_DIR/report/report.html: plots of every metric, detector trips, samples over time, agreement with your labels."""
    if (run_dir / "deploy.yaml").is_file():  # a deployment (`tether deploy`): its timeline
        from tether.deploy.report import build_deploy_report

        stdout_print(f"report: {build_deploy_report(run_dir)}")
        return
    from tether.watch.report import build_report, parse_steps
    from tether.watch.report_agreement import printed_summary

    page = build_report(run_dir, parse_steps(steps), labels=labels)
    for line in printed_summary(page.parent):
        stdout_print(line)
    stdout_print(f"report: {page}")


@app.command()
def detect(
    run_dir: Annotated[Path, typer.Argument(help="a tether run directory (finished or in progress)")],
    config: Annotated[Path | None, typer.Option(help="a tune config YAML whose detectors to replay (default: the run's own config.yaml)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a config field: --set detectors.shift_alpha=0.05 (repeatable)")] = [],
    as_json: Annotated[bool, typer.Option("--json", help='print only {"trips": {"<detector>": <first step>, ...}}')] = False,
    trust_remote_code: RemoteOpt = False,
):
    """Replay the hack detectors over a run's logs, without its models, and print each detector's first trip."""
    from tether.tune.config import run_settings
    from tether.watch.replay import detect as replay
    from tether.watch.replay import printed

    settings = run_settings(run_dir, config, set_, trust_remote_code)  # this flag's trust, never the run's
    typer.echo(printed(*replay(run_dir, settings), as_json=as_json))


@app.command()
def label(
    sources: Annotated[list[str], typer.Argument(help="what to label: a run, blend sweep or corpus folder, or a JSONL of prompt + completion; PATH@step=21-30 (or @arm=base, @alpha=0.5) keeps a part")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="the labels file (JSONL): each answer is appended as given; the same command resumes from it")] = None,
    spec: Annotated[Path | None, typer.Option(help="label spec YAML: the questions asked (see examples/labels_cheerful.yaml); optional in compare mode")] = None,
    mode: Annotated[str, typer.Option(callback=lambda v: _one_of(v, ("label", "compare")), help="label: one sample at a time, yes/no/skip per question; compare: the first two sources' completions of one prompt, pick left/right/tie")] = "label",
    who: Annotated[str | None, typer.Option(help="who is labeling: written with each answer, seeds their order (default: the OS user name)")] = None,
    port: Annotated[int, typer.Option(min=0, max=65535, help="port on 127.0.0.1 (0: any free port)")] = 8766,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="open the page in the default browser")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="at most N samples (compare: N pairs), the same N for every person")] = None,
    seed: Annotated[int, typer.Option(help="seeds the subset, each person's order and the compare sides")] = 0,
    pick_: Annotated[int | None, typer.Option("--pick", help="show only the N samples that teach the gold most (labels/pick.py)")] = None,
    by: Annotated[str, typer.Option(help="--pick by: uncertain (gold least sure), disagree (judge vs gold), flagged (detector steps) or random")] = "uncertain",
    gold: Annotated[Path | None, typer.Option(help="--pick: the gold folder whose P(yes) ranks the samples")] = None,
    list_: Annotated[bool, typer.Option("--list", help="--pick: write the picked samples to stdout as JSONL (prompt, completion, why, p_yes) instead of serving the page")] = False,
    steps: Annotated[str | None, typer.Option(help="label each sample one step at a time, later steps hidden (process supervision's step labels): sentences, lines, re:PATTERN or python:MODULE:FUNCTION")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="--steps: at most this many steps a sample; the rest merge into the last")] = None,
):
    """Serve a page on 127.0.0.1 where a person labels samples blind to their source; answers are saved as given."""
    from tether.cli_label import label_command
    from tether.labels.server import Choice

    label_command(sources, out, spec, mode, who, port, open_browser, limit, seed, list_,
                  Choice(pick_, by, gold, seed, steps, max_steps))


# A person's labels against the judges: `tether agreement`, `tether gold fit|score` (in cli_gold.py).
app.command()(agreement)
app.add_typer(gold_app, name="gold")
# Commands that live in their own files (cli_*.py), each adding itself with `register(app)`.
from tether import cli_corpus, cli_defenses, cli_deploy, cli_experiment, cli_serve, cli_steer  # noqa: E402

for _more in (cli_corpus, cli_defenses, cli_experiment, cli_serve, cli_deploy, cli_steer):
    _more.register(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: a `TetherError` or a command-line mistake becomes one line on stderr and exit code 2."""
    try:
        code = app(args=argv, prog_name="tether", standalone_mode=False)
    except typer.TyperException as e:  # usage errors: unknown option, bad value, missing argument
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":
            typer.echo(ctx.get_help())
            raise SystemExit(2) from None
        where = f"{ctx.command_path}: " if ctx is not None else ""
        hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        _error(f"{where}{e.format_message()}{hint}", e.exit_code)
    except TetherError as e:
        _error(str(e), 2)
    except (KeyboardInterrupt, typer.Abort):
        progress.console.print("interrupted")
        raise SystemExit(130) from None
    if isinstance(code, int) and code:
        raise SystemExit(code)


def _error(message: str, code: int) -> None:
    progress.console.print(f"[red]error:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)
    raise SystemExit(code) from None


if __name__ == "__main__":
    main()
