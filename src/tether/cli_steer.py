"""`tether steer CONTEXT PASSAGE`: continue CONTEXT with the policy, steered toward PASSAGE.

Registered on the `tether` app by `cli.py`; it only parses and calls (tether.steer holds the work).

    tether steer "A little girl was walking her dog on a clear day." @examples/rain.txt
    tether steer @context.txt @rain.txt --method add --alpha 0.05 --samples 3
    tether steer "..." "..." --alpha 0 --seed 1      # α = 0: exactly the unsteered continuation

CONTEXT and PASSAGE are literal texts, or `@PATH` for a UTF-8 file (`@@...` is a literal text
starting with @). Each continuation is printed, separated by a blank line; `--out` also writes
them as JSON with the settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tether.cli_options import RemoteOpt
from tether.infra.models import EMBEDDED_EMBEDDER, EMBEDDED_LM

METHOD_HELP = "add: activation addition (a steering vector in the residual stream); guide: embedding guidance (tree search by similarity to the passage)"


def steer(
    context: Annotated[str, typer.Argument(help="the text to continue: literal, or @PATH")],
    passage: Annotated[str, typer.Argument(help="the text whose content and mood to steer toward: literal, or @PATH")],
    method: Annotated[str, typer.Option(help=METHOD_HELP)] = "guide",
    alpha: Annotated[float, typer.Option(help="add: strength, as a fraction of the layer's mean residual norm (0 = unsteered; 0.05 keeps the story, 0.15 carries the mood but slips into the passage's person, 0.25 breaks the text: docs/results.md)")] = 0.05,
    layer: Annotated[int | None, typer.Option(help="add: the decoder layer whose output is steered (default: a third of the way up)")] = None,
    baseline: Annotated[str | None, typer.Option(help="add: the neutral text subtracted from the passage (literal or @PATH; default: a moodless sentence)")] = None,
    candidates: Annotated[int, typer.Option(min=1, help="guide: continuations sampled per chunk, the most similar kept (1 = unsteered; 4 was the best trade-off, at 4x the tokens)")] = 4,
    chunk_tokens: Annotated[int, typer.Option(min=1, help="guide: tokens per chunk between two choices")] = 8,
    max_tokens: Annotated[int, typer.Option(min=1, help="new tokens per continuation")] = 48,
    samples: Annotated[int, typer.Option(min=1, help="continuations to draw, each from its own seed")] = 1,
    temperature: Annotated[float, typer.Option(min=0.01, help="the policy's sampling temperature")] = 1.0,
    seed: Annotated[int, typer.Option(help="seed: the same seed at α = 0 gives the unsteered continuation")] = 0,
    model: Annotated[str, typer.Option("--model", "-m", help="the policy: hub id, local folder or embedded name")] = EMBEDDED_LM,
    adapter: Annotated[Path | None, typer.Option(help="a LoRA adapter folder to merge into the policy (e.g. runs/cheerful/final)")] = None,
    embedder: Annotated[str, typer.Option(help="guide: the sentence embedder")] = EMBEDDED_EMBEDDER,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="also write the continuations and settings as JSON")] = None,
    device: Annotated[str, typer.Option(help="where models run: auto (CUDA when present), cpu, cuda or cuda:N")] = "auto",
    trust_remote_code: RemoteOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
):
    """Continue CONTEXT with the policy while steering it toward PASSAGE's content and mood."""
    from tether.infra import progress
    from tether.infra.texts import read_text_arg
    from tether.steer.inputs import check_steer

    progress.set_enabled(not quiet)
    context_text, passage_text = read_text_arg(context, "CONTEXT"), read_text_arg(passage, "PASSAGE")
    baseline_text = read_text_arg(baseline, "--baseline") if baseline is not None else None
    if out is not None:
        from tether.infra.checks import check_out

        check_out(out, (".json",), inputs=[])
    check_steer(method, model, layer=layer, adapter=adapter, embedder=embedder if method == "guide" else None,
                max_tokens=max_tokens, trust_remote_code=trust_remote_code)  # all of it before a model loads

    from tether.infra import atomic
    from tether.steer.steerer import Steerer
    from tether.steer.vector import DEFAULT_BASELINE

    baseline_text = DEFAULT_BASELINE if baseline_text is None else baseline_text
    steerer = Steerer.load(model, adapter, embedder if method == "guide" else None, device=device,
                           temperature=temperature, trust_remote_code=trust_remote_code)
    common = {"n": samples, "max_tokens": max_tokens, "seed": seed}
    if method == "add":
        texts = steerer.add(context_text, passage_text, alpha=alpha, layer=layer, baseline=baseline_text, **common)
    else:
        texts = steerer.guide(context_text, passage_text, candidates=candidates, chunk_tokens=chunk_tokens, **common)
    from tether.display import stdout

    for i, text in enumerate(texts):
        stdout.print(("\n" if i else "") + context_text + text, markup=False, highlight=False, emoji=False)
    if out is not None:
        specific = ({"alpha": alpha, "layer": layer, "baseline": baseline_text} if method == "add" else
                    {"candidates": candidates, "chunk_tokens": chunk_tokens, "embedder": embedder})
        settings = {"method": method, "model": model, "adapter": str(adapter) if adapter else None, "seed": seed,
                    "max_tokens": max_tokens, "temperature": temperature, **specific}
        atomic.write_json(out, {"context": context_text, "passage": passage_text, "settings": settings,
                                "continuations": texts})


def register(app: typer.Typer) -> None:
    app.command("steer")(steer)
