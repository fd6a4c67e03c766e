"""`tether label`: a local page where a person labels the policy's samples, blind to where they came from.

    tether label runs/cheerful --spec examples/labels_cheerful.yaml --out labels.jsonl --who ana
    tether label runs/a runs/b --mode compare --spec examples/labels_cheerful.yaml --out labels.jsonl

Same guarantees as the corpus audit page (corpus/review.py): bound to 127.0.0.1, requests
answered only when addressed to that host (no DNS rebinding), POST bodies only as JSON with a
checked Content-Length (no cross-site form posts, no unbounded reads), every answer appended
and fsynced to the labels file before the reply, all sample text put on the page through
`textContent`. The page receives only ids and texts; sources (run, step, arm, scores) stay here
and go into the labels file. The order is random, seeded per person, and stable across reloads,
so a reload resumes where the person stopped.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from importlib import resources
from pathlib import Path

from tether.errors import TetherError
from tether.infra import localpage, progress
from tether.labels.items import Item, Pair, compare_pairs, label_order, read_items
from tether.labels.spec import DEFAULT_COMPARE, LabelSpec
from tether.labels.store import LabelsFile


def person(who: str | None) -> str:
    """The name written with each answer: --who, or the OS user name."""
    if who is None:
        try:
            who = getpass.getuser()
        except (OSError, KeyError):
            raise TetherError("no OS user name to write with the answers: give --who NAME") from None
    if not who.strip() or who != " ".join(who.split()):
        raise TetherError(f"--who {who!r}: write a name on one line, without leading or trailing spaces")
    return who


@dataclass(frozen=True)
class Choice:
    """What a person reads of the pool: N picked samples (or all), whole or as their steps."""

    n: int | None = None
    by: str = "uncertain"
    gold: Path | None = None
    seed: int = 0
    steps: str | None = None
    max_steps: int | None = None

    def __call__(self, items):
        if self.n is not None:
            from tether.labels.pick import pick

            items = pick(items, self.n, self.by, self.gold, seed=self.seed)
        if self.steps is not None:
            from tether.labels.items import step_items

            items = step_items(items, self.steps, self.max_steps)
        return items


class Session:
    """One person's labeling session: the items or pairs in their order, and the labels file."""

    def __init__(self, sources: list[str | Path], out: str | Path, spec: LabelSpec | None, mode: str = "label",
                 who: str = "", seed: int = 0, limit: int | None = None, choose=None):
        if mode not in ("label", "compare"):
            raise TetherError(f"--mode {mode!r}: write label or compare")
        if mode == "label" and spec is None:
            raise TetherError("label mode asks the spec's questions: give --spec SPEC.yaml")
        if mode == "compare" and len(sources) < 2:
            raise TetherError("compare mode needs two sources, e.g. RUN_A RUN_B, or RUN@step=1-5 RUN@step=26-30")
        self.mode, self.who, self.spec = mode, who, spec
        self.labels = LabelsFile(out)
        self.labels.records()  # a damaged labels file is reported now, not on the first answer
        read = [read_items(s) for s in (sources if mode == "label" else sources[:2])]
        if str(self.labels.path.absolute()) in {i.source["file"] for items in read for i in items}:
            raise TetherError(f"{out}: --out is a SOURCE file; write the labels to another file")
        if mode == "label":
            pool = [i for items in read for i in items]
            pool = choose(pool) if choose is not None else pool  # --pick: the samples that teach most
            self.items: list[Item] = label_order(pool, who, seed, limit)
            self.by_id = {i.id: i for i in self.items}
        else:
            self.pairs: list[Pair] = compare_pairs(read[0], read[1], who, seed, limit)
            self.by_pair = {p.id: p for p in self.pairs}

    def state(self) -> dict:
        if self.mode == "label":
            answers = self.labels.answers_of(self.who)
            return {"mode": "label", "who": self.who, "questions": [q.model_dump() for q in self.spec.questions],
                    "items": [{**i.shown(), "answers": answers.get(i.id, {})} for i in self.items]}
        done = self.labels.compared(self.who)
        return {"mode": "compare", "who": self.who, "compare": self.spec.compare if self.spec else DEFAULT_COMPARE,
                "pairs": [{"id": p.id, "prompt": p.prompt, "left": {"id": p.left.id, "completion": p.left.completion},
                           "right": {"id": p.right.id, "completion": p.right.completion},
                           "choice": done.get(frozenset((p.left.id, p.right.id)))} for p in self.pairs]}

    def answer(self, body: dict) -> dict:
        """Append one answer from the page; the reply names what was saved, never the source."""
        if self.mode == "label":
            item, question, answer = (str(body.get(k, "")) for k in ("item", "question", "answer"))
            if item not in self.by_id:
                raise TetherError(f"item {item!r}: not one of this session's samples")
            if question not in self.spec.names():
                raise TetherError(f"question {question!r}: not in the spec; questions: {', '.join(self.spec.names())}")
            record = self.labels.add_label(self.by_id[item], question, answer, self.who)
            left = len(self.labels.unanswered(self.items, self.spec.names(), self.who))
            progress.console.print(f"{answer}: {question} on {item}")
            return {"saved": {k: record[k] for k in ("item", "question", "answer", "time")},
                    "done": len(self.items) - left, "total": len(self.items)}
        pair, choice = str(body.get("pair", "")), str(body.get("choice", ""))
        if pair not in self.by_pair:
            raise TetherError(f"pair {pair!r}: not one of this session's pairs")
        p = self.by_pair[pair]
        record = self.labels.add_compare(p.prompt, p.left, p.right, choice, self.who)
        done = self.labels.compared(self.who)
        progress.console.print(f"{choice}: pair {pair}")
        return {"saved": {"pair": pair, "choice": choice, "time": record["time"]},
                "done": sum(frozenset((q.left.id, q.right.id)) in done for q in self.pairs), "total": len(self.pairs)}


def make_server(session: Session, port: int = 0) -> ThreadingHTTPServer:
    """A server for one session on 127.0.0.1 (port 0: any free one); call serve_forever()."""
    page = resources.files("tether.labels").joinpath("page.html").read_bytes()
    return localpage.make_server(page, {"/api/state": session.state}, {"/api/answer": session.answer}, port,
                                 malformed="malformed JSON: send an object")


def serve(session: Session, port: int = 8766, open_browser: bool = False) -> None:
    count = f"{len(session.items)} samples" if session.mode == "label" else f"{len(session.pairs)} pairs"
    localpage.serve(make_server(session, port),
                    f"labeling ({session.mode}, {count}) as {session.who} into {session.labels.path}", open_browser)
