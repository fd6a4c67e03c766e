"""`tether blend` and `tether values`: the defenses that act on a finished run's weights and store.

Registered on the `tether` app by `cli.py`; like it, they only parse and call (tether/defenses/
does the work). Every input is checked before a model loads; a run's stored config never turns
`--trust-remote-code` on for these commands, only their own flag (or a --config file) does.

    tether blend --tuned runs/cheerful --alpha 0.5 --out models/cheerful-half
    tether blend --tuned runs/cheerful --sweep 0,0.25,0.5,0.75,1 --prompts examples/prompts_heldout.txt
    tether values runs/utility
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tether.cli_gold import stdout_print
from tether.cli_options import QuietOpt, RemoteOpt
from tether.errors import TetherError
from tether.infra import atomic, progress


def blend(
    tuned: Annotated[Path, typer.Option(help="a run directory (its final/), a checkpoint or LoRA adapter folder, or a full model folder")],
    base: Annotated[str | None, typer.Option(help="the base model (default: the run's policy_model)")] = None,
    alpha: Annotated[float | None, typer.Option(help="write one model: base + ALPHA * (tuned - base), ALPHA in [0, 1]")] = None,
    sweep: Annotated[str | None, typer.Option(help="instead, measure several: e.g. 0,0.25,0.5,0.75,1")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="the model folder (--alpha), or the sweep's folder (default: RUN_DIR/blend)")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="tune config YAML for the judges and sampling (default: the run's)")] = None,
    prompts: Annotated[Path | None, typer.Option(help="held-out prompts for the sweep (default: the run's, not held out)")] = None,
    completions: Annotated[int, typer.Option(min=1, help="sweep: completions per prompt at each A")] = 4,
    gold_tolerance: Annotated[float, typer.Option(min=0, help="sweep: recommend the most-tuned A within this of the best gold score")] = 0.05,
    max_kl: Annotated[float | None, typer.Option(min=0, help="sweep: recommend only among the A whose token KL to the base is at most this")] = None,
    save_merged: Annotated[bool, typer.Option(help="sweep: also write each A's merged model to OUT/merged-A<A>")] = False,
    force: Annotated[bool, typer.Option(help="--alpha: replace an existing --out folder")] = False,
    trust_remote_code: RemoteOpt = False,
    quiet: QuietOpt = False,
):
    """Blend tuned weights back toward the base, base + A * (tuned - base): write one A, or sweep several and recommend one."""
    progress.set_enabled(not quiet)
    if (alpha is None) == (sweep is None):
        raise TetherError("give --alpha A to write one blended model, or --sweep 0,0.5,1 to compare several")
    if alpha is not None and out is None:
        raise TetherError("--alpha writes a model folder: give --out DIR")
    from tether.defenses.blend import blend_to_folder, parse_alphas
    from tether.display import stdout, table

    if alpha is not None:
        path = blend_to_folder(tuned, alpha, out, base=base, config=config, force=force,
                               trust_remote_code=trust_remote_code)
        stdout.print(f"wrote {path} (alpha {alpha:g}; see blend.json)")
        return
    from tether.defenses.sweep import sweep_blends, sweep_table
    from tether.tune.config import tuned_settings

    alphas = parse_alphas(sweep)
    settings = tuned_settings(tuned, config, trust_remote_code)  # the run's stored config never trusts remote code
    result = sweep_blends(tuned, alphas, settings, base=base, out=out, prompts=prompts,
                          completions=completions, gold_tolerance=gold_tolerance, max_kl=max_kl,
                          save_merged=save_merged)
    stdout.print(table(f"blend sweep ({result.settings['completions_per_prompt']} completions a prompt)", *sweep_table(result)))
    stdout.print(f"[bold]recommended:[/] A={result.recommended['alpha']:g}: {escape(result.reason)}")
    stdout.print(f"wrote {result.out}/sweep.md, sweep.csv, sweep.json, sweep.png, samples.jsonl")


def values(
    run_dir: Annotated[Path, typer.Argument(help="a run directory tuned with the utility function (utility.weight > 0)")],
    nearest: Annotated[int, typer.Option(min=1, help="nearest completion parts shown per value")] = 3,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="also write every value and its nearest texts as JSON")] = None,
    trust_remote_code: RemoteOpt = False,
):
    """List the utility function's values, terminal and instrumental, each with the run's nearest texts."""
    from tether.infra.checks import check_out, check_value_run

    check_value_run(run_dir)
    if out is not None:
        check_out(out, (".json",))
    from tether.defenses.utility import read_values
    from tether.display import values_table

    rows = read_values(run_dir, nearest, trust_remote_code)
    stdout_print(values_table(rows, run_dir))
    if out is not None:
        atomic.write_json(out, rows)
        stdout_print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.command()(blend)
    app.command()(values)
