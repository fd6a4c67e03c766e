"""`tether label`'s work: which samples (all, or `--pick N --by ...`), then the page or `--list`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tether.errors import TetherError


def label_command(sources: list[str], out: Path | None, spec: Path | None, mode: str, who: str | None, port: int,
                  open_browser: bool, limit: int | None, seed: int, n: int | None, by: str, gold: Path | None,
                  list_only: bool) -> None:
    from tether.infra.checks import check_out
    from tether.labels.server import Session, person, serve
    from tether.labels.spec import load_spec

    if out is not None and not list_only:
        check_out(out, (".jsonl",))  # never over a file tether did not write as labels, before anything else
    loaded = load_spec(spec) if spec is not None else None
    if n is None and (list_only or gold is not None):
        raise TetherError("--list and --gold choose what to read with --pick N; add --pick")
    if n is not None:
        from tether.labels.pick import check_pick

        if mode != "label":
            raise TetherError("--pick chooses single samples to label; it does not apply to --mode compare")
        check_pick(n, by, gold, loaded.names() if loaded is not None else None)
    if list_only:
        _list(sources, n, by, gold, seed)
        return
    if out is None:
        raise TetherError("--out FILE.jsonl: where the answers go (or --pick N --list to write the picked samples)")
    session = Session(sources, out, loaded, mode, person(who), seed, limit,
                      choose=(lambda items: _picked(items, n, by, gold, seed)) if n is not None else None)
    serve(session, port=port, open_browser=open_browser)


def _picked(items, n: int, by: str, gold: Path | None, seed: int):
    from tether.labels.pick import pick

    return pick(items, n, by, gold, seed=seed)


def _list(sources: list[str], n: int, by: str, gold: Path | None, seed: int) -> None:
    from tether.labels.items import read_items

    items = [i for s in sources for i in read_items(s)]
    for item in _picked(items, n, by, gold, seed):
        chosen = item.source["pick"]
        sys.stdout.write(json.dumps({"prompt": item.prompt, "completion": item.completion, "why": chosen["why"],
                                 "p_yes": chosen.get("p_yes"), "rank": chosen["rank"], "by": by}, ensure_ascii=False)
                         + "\n")
