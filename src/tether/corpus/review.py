"""`tether audit-corpus`: a local page where a person accepts, rejects or edits each sample.

    tether audit-corpus corpus/cheerful --port 8765     # then open http://127.0.0.1:8765/

The server is `infra/localpage`'s (127.0.0.1 only, Host checked, JSON bodies of checked size,
strict CSP). Persistence: every decision is
appended to decisions.jsonl (fsynced, under the corpus lock) and corpus.jsonl is rebuilt
before the request returns, so closing the browser or the server loses nothing; with two
tabs open, the later decision on a sample wins. The page (review_page.html) is static and
fetches the samples as JSON; it shows all sample text through `textContent`, so HTML in a
sample is displayed, never run.
"""

from __future__ import annotations

from http.server import ThreadingHTTPServer
from importlib import resources
from pathlib import Path

from tether.corpus.store import CorpusDir
from tether.infra import localpage, progress


def make_server(corpus_dir: str | Path, port: int = 0) -> ThreadingHTTPServer:
    """A server for one corpus on 127.0.0.1 (port 0: any free one); call serve_forever()."""
    corpus = CorpusDir(corpus_dir).require()
    corpus.check_constitution(corpus.constitution())
    corpus.heal()  # apply a decision a kill left logged but not yet in corpus.jsonl
    samples_payload(corpus)  # a damaged candidates.jsonl or decisions.jsonl: one line now, not a page that fails
    page = resources.files("tether.corpus").joinpath("review_page.html").read_bytes()

    def decide(body: dict) -> dict:
        decision = corpus.decide(str(body.get("id")), str(body.get("action")), body.get("text"),
                                 str(body.get("note") or ""))
        progress.console.print(f"{decision['action']}: {decision['id']}")
        return {"decision": decision, "in_corpus": len(corpus.corpus())}

    return localpage.make_server(page, {"/api/samples": lambda: samples_payload(corpus)}, {"/api/decision": decide}, port)


def samples_payload(corpus: CorpusDir) -> dict:
    """Every candidate with its latest decision, and the principles to filter by."""
    decisions = corpus.decisions()
    samples = [{**c, "decision": decisions.get(c["id"])} for c in corpus.candidates()]
    meta = corpus.meta()
    return {"corpus": str(corpus.path), "constitution": meta["constitution"], "principles": meta["principles"],
            "samples": samples}


def serve(corpus_dir: str | Path, port: int = 8765, open_browser: bool = False) -> None:
    localpage.serve(make_server(corpus_dir, port), f"auditing {corpus_dir}", open_browser)
