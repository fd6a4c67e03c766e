"""The commands that check judges against a person's labels: `tether agreement`, `tether gold fit|score`.

Registered on the `tether` app by `cli.py` (kept apart so that each file stays short); like
`cli.py`, they only parse and call, and import nothing heavy before the input is checked.

    tether agreement labels.jsonl --judge constitution:examples/cheerful.yaml --judge field:train
    tether gold fit labels.jsonl --label good --out golds/good
    tether gold score golds/good samples.jsonl --out gold_scores.jsonl
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tether.cli_options import RemoteOpt
from tether.infra import atomic, progress

DeviceOpt = Annotated[str, typer.Option(help="where models run: auto (CUDA when present), cpu, cuda or cuda:N")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]
gold_app = typer.Typer(help="A gold judge fitted to a person's labels: fit it, score texts with it.", no_args_is_help=True)


def agreement(
    labels: Annotated[Path, typer.Argument(help="a labels file (JSONL) written by the labeling page")],
    judge: Annotated[list[str], typer.Option("--judge", "-j", help="constitution:PATH[@MODEL], gold:DIR, monitor:NAME, field:NAME, similarity:prompt (MiniLM cosine to the prompt) or similarity:base=RUN/base_samples.jsonl (minus the drift) (repeatable)")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="also write the report as JSON")] = None,
    who: Annotated[str | None, typer.Option(help="only this person's answers (default: everyone's, by majority)")] = None,
    resamples: Annotated[int, typer.Option(min=100, help="bootstrap resamples for the 95% CIs")] = 2000,
    seed: Annotated[int, typer.Option(help="the bootstrap's seed")] = 0,
    device: DeviceOpt = "auto",
    trust_remote_code: RemoteOpt = False,
    quiet: QuietOpt = False,
):
    """Check judges against a person's labels on the policy's own samples: AUC per question, pairwise agreement, a verdict."""
    from tether.labels.agreement import (
        agreement_report,
        read_labels,
        report_table,
    )
    from tether.watch.signals import parse_judge

    progress.set_enabled(not quiet)
    data = read_labels(labels, who)
    if out is not None:
        from tether.infra.checks import check_out

        check_out(out, (".json",), inputs=[labels])
    judges = [parse_judge(spec, device, data.sha256, trust_remote_code) for spec in judge]
    result = agreement_report(data, judges, resamples, seed)
    stdout_print(report_table(result))
    for entry in result["judges"]:
        note = f" [dim]({escape(entry['note'])})[/]" if entry["note"] else ""
        stdout_print(f"[bold]verdict:[/] {escape(entry['verdict'])}{note}")
    if out is not None:
        atomic.write_json(out, result)
        stdout_print(f"wrote {out}")


@gold_app.command("fit")
def gold_fit(
    labels: Annotated[Path, typer.Argument(help="a labels file (JSONL) written by the labeling page")],
    label: Annotated[str, typer.Option(help="the question to fit, e.g. good or on_task")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the gold judge's folder (gold.json, README.md)")],
    features: Annotated[str, typer.Option(help="minilm (MiniLM embeddings) or hidden:MODEL (a causal LM's mean-pooled last hidden state)")] = "minilm",
    folds: Annotated[int, typer.Option(min=2, help="cross-validation folds, stratified and grouped by prompt")] = 5,
    seed: Annotated[int, typer.Option(help="the folds' and the bootstrap's seed")] = 0,
    who: Annotated[str | None, typer.Option(help="only this person's answers (default: everyone's, by majority)")] = None,
    force: Annotated[bool, typer.Option(help="replace a gold judge already in --out")] = False,
    device: DeviceOpt = "auto",
    trust_remote_code: RemoteOpt = False,
    quiet: QuietOpt = False,
):
    """Fit a gold judge (logistic regression on text features) to one question of a person's labels; report its CV AUC."""
    from tether.labels.gold import check_features, check_out_dir, fit_gold, save_gold

    progress.set_enabled(not quiet)
    check_features(features)
    check_out_dir(out, force)
    meta = fit_gold(labels, label, features, folds, seed, who, device, trust_remote_code)
    save_gold(meta, out, force)
    cv = meta["cv"]
    stdout_print(f"gold judge for {escape(label)!r}: cross-validated AUC {cv['auc']:.3f} (95% CI {cv['ci'][0]:.3f}-{cv['ci'][1]:.3f}; "
                 f"{folds} folds grouped by prompt, {meta['n']} items: {meta['yes']} yes, {meta['no']} no); wrote {out}")


@gold_app.command("score")
def gold_score(
    gold_dir: Annotated[Path, typer.Argument(help="a gold judge folder made by `tether gold fit`")],
    texts: Annotated[Path, typer.Argument(help=".jsonl rows with `prompt` and `completion`")],
    out: Annotated[Path, typer.Option("--out", "-o", help="where to write the rows with a `score` (log-odds, higher is better): .jsonl or .csv")],
    device: DeviceOpt = "auto",
    trust_remote_code: RemoteOpt = False,
    quiet: QuietOpt = False,
):
    """Score texts with a fitted gold judge."""
    from tether.labels.gold import score_file

    progress.set_enabled(not quiet)
    stdout_print(f"wrote {score_file(gold_dir, texts, out, device, trust_remote_code)} rows to {out}")


def stdout_print(message) -> None:
    from tether.display import stdout

    stdout.print(message, emoji=False)  # "field:train: agrees" must not become a train emoji
