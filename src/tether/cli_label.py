"""`tether label`'s work: which samples (all, or `--pick N --by ...`; whole, or `--steps` one step at a time),
then the page or `--list`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tether.errors import TetherError


def label_command(sources: list[str], out: Path | None, spec: Path | None, mode: str, who: str | None, port: int,
                  open_browser: bool, limit: int | None, seed: int, list_only: bool, choice) -> None:
    """`choice`: a labels.server.Choice (--pick, --by, --gold, --steps, --max-steps)."""
    from tether.infra.checks import check_out
    from tether.labels.server import Session, person, serve
    from tether.labels.spec import load_spec

    if out is not None and not list_only:
        check_out(out, (".jsonl",))  # never over a file tether did not write as labels, before anything else
    loaded = load_spec(spec) if spec is not None else None
    if choice.n is None and (list_only or choice.gold is not None):
        raise TetherError("--list and --gold choose what to read with --pick N; add --pick")
    if choice.steps is not None:
        from tether.infra.steps import check_how

        check_how(choice.steps)
        if mode != "label":
            raise TetherError("--steps shows one sample's steps in turn; it does not apply to --mode compare")
    elif choice.max_steps is not None:
        raise TetherError("--max-steps caps --steps; add --steps sentences (or lines, re:PATTERN, python:MODULE:FUNCTION)")
    if choice.n is not None:
        from tether.labels.pick import check_pick

        if mode != "label":
            raise TetherError("--pick chooses single samples to label; it does not apply to --mode compare")
        check_pick(choice.n, choice.by, choice.gold, loaded.names() if loaded is not None else None)
    if list_only:
        _list(sources, choice)
        return
    if out is None:
        raise TetherError("--out FILE.jsonl: where the answers go (or --pick N --list to write the picked samples)")
    session = Session(sources, out, loaded, mode, person(who), seed, limit,
                      choose=choice if choice.n is not None or choice.steps is not None else None)
    serve(session, port=port, open_browser=open_browser)


def _list(sources: list[str], choice) -> None:
    from tether.labels.items import read_items

    items = [i for s in sources for i in read_items(s)]
    for item in choice(items):
        chosen, step = item.source["pick"], item.source.get("steps")
        sys.stdout.write(json.dumps({"prompt": item.prompt, "completion": item.completion, "why": chosen["why"],
                                     "p_yes": chosen.get("p_yes"), "rank": chosen["rank"], "by": choice.by,
                                     **({"step": step} if step else {})}, ensure_ascii=False) + "\n")
