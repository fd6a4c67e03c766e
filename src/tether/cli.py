"""The `tether` command: parses arguments and calls the library; no logic lives here.

    tether score examples/cheerful.yaml examples/texts.jsonl --out scores.jsonl
    tether audit examples/cheerful.yaml examples/texts.jsonl --out audit.json

Errors the user can fix print one line and exit with code 2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from tether.errors import TetherError
from tether.infra import atomic, progress
from tether.infra.models import EMBEDDED_LM

app = typer.Typer(
    help="Tune language models against a written constitution with AI feedback, and catch the reward hacking.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ConstitutionArg = Annotated[Path, typer.Argument(help="constitution YAML file (see examples/)")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="judge: a hub id, a local folder, or the embedded default")]
BatchOpt = Annotated[int, typer.Option(min=1, help="texts per forward pass")]
LongTextOpt = Annotated[
    str, typer.Option(help="a text longer than the judge's context: truncate_left (keep its end), truncate_right, or error")
]
MaxTokensOpt = Annotated[Optional[int], typer.Option(min=1, help="cap each text at this many tokens (default: 2048; raise it up to the judge's context)")]
DeviceOpt = Annotated[str, typer.Option(help="where the judge runs: auto (CUDA when present), cpu, cuda or cuda:N")]
DtypeOpt = Annotated[str, typer.Option(help="the judge's precision: float32 or bfloat16")]
RemoteOpt = Annotated[bool, typer.Option(help="allow the model's own Python code from the hub (off: safer)")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]


@app.command()
def score(
    constitution: ConstitutionArg,
    texts: Annotated[str, typer.Argument(help="texts: .jsonl (`text`, or `prompt`+`completion`), .txt (one per line), or - for stdin")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write per-text scores: .jsonl or .csv")] = Path("scores.jsonl"),
    model: ModelOpt = EMBEDDED_LM,
    debias: Annotated[Optional[bool], typer.Option("--debias/--no-debias", help="force paired-negation scoring on or off for all principles")] = None,
    combine: Annotated[Optional[str], typer.Option(help="combine principles: mean or softmin (default: as the constitution says)")] = None,
    batch_size: BatchOpt = 8,
    long_text: LongTextOpt = "truncate_left",
    max_text_tokens: MaxTokensOpt = None,
    trust_remote_code: RemoteOpt = False,
    quiet: QuietOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
):
    """Score texts against a constitution: per-principle log-odds and P(yes), and a summary table."""
    from tether.infra.display import score_table, stdout
    from tether.infra.texts import read_texts
    from tether.judge.constitution import load_constitution
    from tether.judge.evaluator import Evaluator

    progress.set_enabled(not quiet)
    if combine is not None and combine not in ("mean", "softmin"):
        raise TetherError(f"--combine {combine!r}: write mean or softmin")
    rubric = load_constitution(constitution)
    records = read_texts(texts)
    evaluator = Evaluator(model, rubric, debias=debias, combine=combine, batch_size=batch_size,
                          long_text=long_text, max_text_tokens=max_text_tokens, trust_remote_code=trust_remote_code,
                          device=device, dtype=dtype)
    result = evaluator.score([r.text for r in records], show_progress=not quiet)
    rows = [{**{k: v for k, v in r.meta.items() if k != "text"}, **row} for r, row in zip(records, result.records())]
    atomic.write_records(out, rows)
    stdout.print(score_table(result, [r.meta.get("label") for r in records]))
    truncated = int((result.truncated_tokens > 0).sum())
    if truncated:
        progress.console.print(f"[yellow]warning:[/] {truncated} text(s) were cut to {evaluator.text_budget} tokens ({long_text}); "
                               f"see `truncated_tokens`; --max-text-tokens raises the cap")
    stdout.print(f"wrote {len(rows)} rows to {out}")


@app.command()
def audit(
    constitution: ConstitutionArg,
    texts: Annotated[Optional[str], typer.Argument(help="texts to perturb (default: the constitution's few-shot examples)")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write the machine-readable report (JSON)")] = Path("audit.json"),
    model: ModelOpt = EMBEDDED_LM,
    threshold: Annotated[float, typer.Option(help="a mean score gain (log-odds) at or above this is exploitable")] = 0.2,
    min_share: Annotated[float, typer.Option(min=0, max=1, help="...and only if the score rose for at least this share of texts")] = 0.6,
    batch_size: BatchOpt = 8,
    long_text: LongTextOpt = "truncate_left",
    max_text_tokens: MaxTokensOpt = None,
    trust_remote_code: RemoteOpt = False,
    quiet: QuietOpt = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "float32",
):
    """Measure how much each principle pays for yes-injection and other judge tricks, plain and debiased."""
    from tether.infra.display import audit_tables, stdout
    from tether.infra.texts import read_texts
    from tether.judge.audit import run_audit
    from tether.judge.constitution import load_constitution
    from tether.judge.evaluator import Evaluator

    progress.set_enabled(not quiet)
    rubric = load_constitution(constitution)
    if texts is None:
        sample = list(dict.fromkeys(e.text for p in rubric.principles for e in p.examples))
        if not sample:
            raise TetherError(f"{constitution}: no few-shot examples to audit with; give a TEXTS file")
    else:
        sample = [r.text for r in read_texts(texts)]
    evaluator = Evaluator(model, rubric, with_negations=True, batch_size=batch_size, long_text=long_text,
                          max_text_tokens=max_text_tokens, trust_remote_code=trust_remote_code, device=device, dtype=dtype)
    report = run_audit(evaluator, sample, threshold=threshold, min_share=min_share, show_progress=not quiet)
    atomic.write_json(out, report.to_json())
    for table in audit_tables(report):
        stdout.print(table)
    stdout.print(f"wrote {out}")
    stdout.print(f"[bold]verdict:[/] {report.verdict()}")


@app.command()
def tune(
    config: Annotated[Optional[Path], typer.Argument(help="tune config YAML (see examples/tune_cheerful.yaml)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a config field: --set steps=5 (repeatable)")] = [],
    resume: Annotated[Optional[Path], typer.Option(help="continue the run in this directory from its last checkpoint")] = None,
    force: Annotated[bool, typer.Option(help="overwrite a run directory that already holds a run")] = False,
    quiet: QuietOpt = False,
):
    """Tune a policy against a constitution with TRL (GRPO or RLOO) and LoRA, logging a run directory."""
    from tether.infra.config import load_config
    from tether.tune.config import TuneConfig
    from tether.tune.run import resume_config, run_tune

    progress.set_enabled(not quiet)
    if (config is None) == (resume is None):
        raise TetherError("give a CONFIG file to start a run, or --resume RUN_DIR to continue one")
    settings = resume_config(resume) if resume else load_config(TuneConfig, config, set_)
    run = run_tune(settings, resume=resume is not None, force=force)
    summary = json.loads((run.path / "finished.json").read_text())
    trips = ", ".join(f"{name} at step {step}" for name, step in summary["detector_trips"].items()) or "none"
    stdout_print(f"run finished: {run.path} ({summary['steps']} steps); detector trips: {trips}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="a tether run directory (finished or in progress)")],
    steps: Annotated[Optional[str], typer.Option(help="sample steps to show, e.g. 1,10,20 (default: spread + trips)")] = None,
):
    """Write RUN_DIR/report/report.html: plots of every metric, detector trips, samples over time."""
    from tether.watch.report import build_report

    chosen = None
    if steps:
        try:
            chosen = [int(s) for s in steps.split(",")]
        except ValueError:
            raise TetherError(f"--steps {steps!r}: write step numbers separated by commas, e.g. 1,10,20") from None
    stdout_print(f"report: {build_report(run_dir, chosen)}")


@app.command()
def sample(
    config: Annotated[Path, typer.Argument(help="sample config YAML (see examples/sample_cheerful.yaml)")],
    set_: Annotated[list[str], typer.Option("--set", help="override a config field: --set search=tree (repeatable)")] = [],
    force: Annotated[bool, typer.Option(help="start the corpus directory over instead of continuing it")] = False,
    quiet: QuietOpt = False,
):
    """Rejection-sample a corpus: N candidates a prompt, judged, monitored, kept or rejected with a reason."""
    from tether.corpus.config import SampleConfig
    from tether.corpus.sample import run_sample
    from tether.corpus.summary import HEADER, summarize, table_rows
    from tether.infra.config import load_config
    from tether.infra.display import stdout

    progress.set_enabled(not quiet)
    settings = load_config(SampleConfig, config, set_)
    corpus = run_sample(settings, force=force)
    summary = summarize(corpus, settings)
    stdout.print(_table("corpus summary", HEADER, table_rows(summary)))
    stdout.print(f"{summary['kept_by_sampler']} of {summary['candidates']} candidates kept "
                 f"({100 * summary['acceptance_rate']:.0f}%); corpus: {corpus.corpus_path}")


@app.command("audit-corpus")
def audit_corpus(
    corpus_dir: Annotated[Path, typer.Argument(help="a corpus directory made by `tether sample`")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="port on 127.0.0.1 (0: any free port)")] = 8765,
    open_browser: Annotated[bool, typer.Option("--open/--no-open", help="open the page in the default browser")] = False,
):
    """Serve a page on 127.0.0.1 to accept, reject or edit each sample; decisions are saved as they are made."""
    from tether.corpus.review import serve

    serve(corpus_dir, port=port, open_browser=open_browser)


@app.command()
def sft(
    corpus_dir: Annotated[Optional[Path], typer.Argument(help="an audited corpus directory (its corpus.jsonl is the training set)")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="sft config YAML (every field has a default)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a config field: --set epochs=1 (repeatable)")] = [],
    resume: Annotated[Optional[Path], typer.Option(help="continue the run in this directory from its last checkpoint")] = None,
    force: Annotated[bool, typer.Option(help="overwrite a run directory that already holds a run")] = False,
    quiet: QuietOpt = False,
):
    """Fine-tune the policy (LoRA, TRL's SFTTrainer) on a corpus; score held-out prompts before and after."""
    from tether.corpus.config import SftConfig
    from tether.corpus.sft import run_sft
    from tether.infra.config import load_config
    from tether.infra.display import stdout

    progress.set_enabled(not quiet)
    if (corpus_dir is None) == (resume is None):
        raise TetherError("give a CORPUS_DIR to start a run, or --resume RUN_DIR to continue one")
    if resume is not None:
        from tether.infra.rundir import RunDir

        settings = RunDir(resume).settings(SftConfig, drop=("corpus", "constitution_sha256"), output_dir=resume.absolute())
    else:
        settings = load_config(SftConfig, config, set_)
    run, evaluation = run_sft(corpus_dir, settings, resume_dir=resume, force=force)
    rows = [[name, f"{e['before']:.3f}", f"{e['after']:.3f}", f"{e['after'] - e['before']:+.3f}"]
            for name, e in evaluation["mean_scores"].items()]
    rows.append(["pass rate", f"{evaluation['pass_rate']['before']:.0%}", f"{evaluation['pass_rate']['after']:.0%}", ""])
    stdout.print(_table(f"held-out prompts ({evaluation['completions']} completions)", ["score", "before", "after", "change"], rows))
    stdout.print(f"run finished: {run.path}; adapter: {run.path / 'final'}")


@app.command()
def blend(
    tuned: Annotated[Path, typer.Option(help="a run directory (its final/), a checkpoint or LoRA adapter folder, or a full model folder")],
    base: Annotated[Optional[str], typer.Option(help="the base model (default: the run's policy_model)")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="write one model: base + ALPHA * (tuned - base), ALPHA in [0, 1]")] = None,
    sweep: Annotated[Optional[str], typer.Option(help="instead, measure several: e.g. 0,0.25,0.5,0.75,1")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="the model folder (--alpha), or the sweep's folder (default: RUN_DIR/blend)")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="tune config YAML for the judges and sampling (default: the run's)")] = None,
    prompts: Annotated[Optional[Path], typer.Option(help="held-out prompts for the sweep (default: the run's, not held out)")] = None,
    completions: Annotated[int, typer.Option(min=1, help="sweep: completions per prompt at each A")] = 4,
    gold_tolerance: Annotated[float, typer.Option(min=0, help="sweep: recommend the most-tuned A within this of the best gold score")] = 0.05,
    max_kl: Annotated[Optional[float], typer.Option(min=0, help="sweep: recommend only among the A whose token KL to the base is at most this")] = None,
    save_merged: Annotated[bool, typer.Option(help="sweep: also write each A's merged model to OUT/merged-A<A>")] = False,
    force: Annotated[bool, typer.Option(help="--alpha: replace an existing --out folder")] = False,
    quiet: QuietOpt = False,
):
    """Blend tuned weights back toward the base, base + A * (tuned - base): write one A, or sweep several and recommend one."""
    from tether.defenses.blend import blend_to_folder, parse_alphas
    from tether.defenses.sweep import sweep_blends, sweep_table
    from tether.infra.display import stdout

    progress.set_enabled(not quiet)
    if (alpha is None) == (sweep is None):
        raise TetherError("give --alpha A to write one blended model, or --sweep 0,0.5,1 to compare several")
    if alpha is not None:
        if out is None:
            raise TetherError("--alpha writes a model folder: give --out DIR")
        path = blend_to_folder(tuned, alpha, out, base=base, config=config, force=force)
        stdout.print(f"wrote {path} (alpha {alpha:g}; see blend.json)")
        return
    result = sweep_blends(tuned, parse_alphas(sweep), base=base, config=config, out=out, prompts=prompts,
                          completions=completions, gold_tolerance=gold_tolerance, max_kl=max_kl,
                          save_merged=save_merged)
    stdout.print(_table(f"blend sweep ({result.settings['completions_per_prompt']} completions a prompt)", *sweep_table(result)))
    stdout.print(f"[bold]recommended:[/] A={result.recommended['alpha']:g}: {escape(result.reason)}")
    stdout.print(f"wrote {result.out}/sweep.md, sweep.csv, sweep.json, sweep.png, samples.jsonl")


@app.command()
def values(
    run_dir: Annotated[Path, typer.Argument(help="a run directory tuned with the utility function (utility.weight > 0)")],
    nearest: Annotated[int, typer.Option(min=1, help="nearest completion parts shown per value")] = 3,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="also write every value and its nearest texts as JSON")] = None,
):
    """List the utility function's values, terminal and instrumental, each with the run's nearest texts."""
    from tether.defenses.utility import read_values

    rows = read_values(run_dir, nearest)
    table = [[str(i), r["kind"], f"{r['credit']:.3f}", str(r["count"]), str(r["step"]), r["text"],
              "\n".join(f"{n['similarity']:.2f}  {n['text']}" for n in r["nearest"])] for i, r in enumerate(rows, 1)]
    stdout_print(_table(f"value store of {run_dir}", ["#", "kind", "credit", "count", "step", "value", "nearest texts"], table))
    if out is not None:
        atomic.write_json(out, rows)
        stdout_print(f"wrote {out}")


def _table(title: str, header: list[str], rows: list[list[str]]):
    from rich.table import Table

    table = Table(title=title)
    for name in header:
        table.add_column(name)
    for row in rows:
        table.add_row(*map(escape, row))
    return table


def stdout_print(message) -> None:
    from tether.infra.display import stdout

    stdout.print(message)


def main(argv: list[str] | None = None) -> None:
    """Entry point: a `TetherError` becomes one line on stderr and exit code 2."""
    try:
        app(args=argv, prog_name="tether")
    except TetherError as e:
        progress.console.print(f"[red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        progress.console.print("interrupted")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
