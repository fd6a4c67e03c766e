"""The served policy: versions loaded and swapped live, requests generated in batches, every reply logged.

One worker thread owns the models (torch is not shared between threads). It takes the first
waiting request, gathers more until `max_batch` or `max_wait_ms`, and for the batch:

1. takes the live version's model *once* (a swap between batches never splits one);
2. generates every reply (left-padded together; requests of one temperature share a call);
3. has the judge score prompt + reply and computes the text monitors;
4. appends the interactions to `interactions.jsonl` (fsynced), and only then answers.

A watcher thread polls `live.json`; when the learner, a rollback or a person names another
version, it loads that version beside the serving one and swaps the reference between two
batches: no request is dropped, and each reply names the version that wrote it.

Live monitors: every `window` replies of a version become one metrics line (the monitors and
the judge's mean) checked by the detectors (`watch/detectors.check`); a trip of a detector
in `rollback_on` puts the version's parent live again (an automatic rollback, in the timeline).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from tether.deploy.config import DeployConfig
from tether.deploy.policy import Loaded, encode_prompt, load_version
from tether.deploy.store import CANARY_BASE, Store, new_id
from tether.infra import progress
from tether.infra.texts import plain_text
from tether.watch.detectors import check
from tether.watch.lexical import lexical_shift
from tether.watch.metrics import Trip, batch_values, text_values


@dataclass
class Request:
    kind: str  # completion | chat
    prompt: str | list[dict]
    max_tokens: int
    temperature: float
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    user: str | None = None


@dataclass
class Stats:
    requests: int = 0
    batches: int = 0
    failed: int = 0
    swaps: int = 0
    tokens: int = 0
    largest: int = 0
    by_version: dict[str, int] = field(default_factory=dict)


class Policy:
    """The worker: batches, generates, judges, logs, answers; swaps versions; watches and rolls back."""

    def __init__(self, config: DeployConfig, store: Store, judge=None):
        self.config, self.store, self.judge = config, store, judge
        self.stats = Stats()
        self.known = {row["id"] for row in store.interactions()}  # what feedback may name
        self.live: Loaded | None = None
        self._queue: queue.Queue[Request | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="tether-policy", daemon=True)
        self._watcher = threading.Thread(target=self._watch, name="tether-live", daemon=True)
        self._stop = threading.Event()
        self._windows: dict[str, list[dict]] = {}  # version -> replies of its open window
        self._history: dict[str, list[dict]] = {}  # version -> its metrics lines
        self._tripped: dict[str, set[str]] = {}
        self._base_texts: list[str] = []
        self._base_final = False

    # --- life ----------------------------------------------------------------------------

    def start(self) -> None:
        self.live = load_version(self.config, self.store, self.store.live()["version"])
        self._worker.start()
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._worker.join()
        self._watcher.join(timeout=5)

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    async def submit(self, kind: str, prompt, max_tokens: int, temperature: float, user: str | None = None) -> dict:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(Request(kind, prompt, max_tokens, temperature, future, loop, user))
        return await future

    # --- versions ------------------------------------------------------------------------

    def _watch(self) -> None:
        """Poll live.json; load a newly named version beside the serving one, then swap the reference."""
        while not self._stop.wait(0.25):
            try:
                name = self.store.live()["version"]
            except (OSError, ValueError):  # read between two writers: the next poll sees the file whole
                continue
            if self.live is not None and name != self.live.version:
                try:
                    loaded = load_version(self.config, self.store, name)
                except Exception as e:  # noqa: BLE001 - the serving version stays; the timeline says why
                    self.store.event("swap_failed", version=name, error=" ".join(str(e).split())[:300])
                    time.sleep(2)
                    continue
                previous, self.live = self.live.version, loaded  # one reference: the next batch takes the new one
                self.stats.swaps += 1
                self.store.event("swapped", version=name, previous=previous)
                progress.note(f"deploy: now serving {name} (was {previous})")

    # --- the worker ----------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, deadline = [first], time.monotonic() + self.config.max_wait_ms / 1000
            while len(batch) < self.config.max_batch:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                batch.append(nxt)
            self._serve(batch)

    def _serve(self, batch: list[Request]) -> None:
        loaded = self.live  # the whole batch is written by one version
        try:
            rows = self._generate(loaded, batch)
            self.store.record(rows)  # on disk before anyone is answered
        except Exception as e:  # noqa: BLE001 - every request of the batch gets the one line
            self.stats.failed += len(batch)
            message = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            for r in batch:
                r.loop.call_soon_threadsafe(_settle, r.future, None, RuntimeError(message))
            return
        self.stats.requests += len(batch)
        self.stats.batches += 1
        self.stats.largest = max(self.stats.largest, len(batch))
        self.stats.by_version[loaded.version] = self.stats.by_version.get(loaded.version, 0) + len(batch)
        self.known.update(row["id"] for row in rows)
        for r, row in zip(batch, rows):
            r.loop.call_soon_threadsafe(_settle, r.future, row, None)
        try:
            self._monitor(loaded.version, rows)
        except Exception as e:  # noqa: BLE001 - a monitor failure never fails a served request
            self.store.event("error", doing="live monitors", error=" ".join(str(e).split())[:300])

    @torch.inference_mode()
    def _generate(self, loaded: Loaded, batch: list[Request]) -> list[dict]:
        texts: list[str | None] = [None] * len(batch)
        finish: list[str] = ["length"] * len(batch)
        counts: list[int] = [0] * len(batch)
        prompt_tokens: list[int] = [0] * len(batch)
        groups: dict[float, list[int]] = {}
        for i, r in enumerate(batch):
            groups.setdefault(r.temperature, []).append(i)
        gen = loaded.generator
        for temperature, members in groups.items():
            ids = [encode_prompt(loaded, batch[i].prompt) for i in members]
            for i, x in zip(members, ids):
                prompt_tokens[i] = len(x)
            width = max(map(len, ids))
            pad = gen.pad
            input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in ids], device=loaded.model.device)
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=loaded.model.device)
            sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else dict(do_sample=False)
            out = loaded.model.generate(input_ids, attention_mask=mask, max_new_tokens=max(batch[i].max_tokens for i in members),
                                        suppress_tokens=gen.suppress, pad_token_id=pad, **sampling)
            for row, i in zip(out[:, width:].tolist(), members):
                row = row[: batch[i].max_tokens]
                stop = next((k for k, t in enumerate(row) if t in gen.eos), None)
                kept = row if stop is None else row[:stop]
                finish[i] = "stop" if stop is not None else "length"
                counts[i] = len(kept)
                texts[i] = loaded.tokenizer.decode(kept, skip_special_tokens=True)
        self.stats.tokens += sum(counts)
        scores = self._judge(batch, texts)
        rows = []
        for i, r in enumerate(batch):
            rows.append({"id": new_id("cmpl" if r.kind == "completion" else "chatcmpl"), "time": time.time(),
                         "version": loaded.version, "kind": r.kind, "prompt": r.prompt, "completion": texts[i],
                         "finish_reason": finish[i], "prompt_tokens": prompt_tokens[i], "completion_tokens": counts[i],
                         "max_tokens": r.max_tokens, "temperature": r.temperature, "user": r.user,
                         "scores": scores[i], "monitors": text_values(texts[i])})
        return rows

    def _judge(self, batch: list[Request], texts: list[str]) -> list[dict | None]:
        if self.judge is None:
            return [None] * len(batch)
        result = self.judge.score([plain_text(r.prompt) + t for r, t in zip(batch, texts)])
        total, per = result.total(), result.scores()
        return [{"total": round(float(total[i]), 4), **{n: round(float(per[i, k]), 4) for k, n in enumerate(result.names)}}
                for i in range(len(batch))]

    # --- live monitors and the automatic rollback ----------------------------------------

    def _monitor(self, version: str, rows: list[dict]) -> None:
        window = self._windows.setdefault(version, [])
        window.extend(rows)
        while len(window) >= self.config.window:
            served, self._windows[version] = window[: self.config.window], window[self.config.window :]
            window = self._windows[version]
            history = self._history.setdefault(version, [])
            completions = [r["completion"] for r in served]
            line = {"step": len(history) + 1, **batch_values(completions)}
            judged = [r["scores"]["total"] for r in served if r.get("scores")]
            if judged:
                line["reward/train"] = float(np.mean(judged))
            history.append(line)
            self.store.event("window", version=version, window=line["step"], metrics=line)
            tripped = self._tripped.setdefault(version, set())
            found = check(history, self.config.detectors) + self._habit(version, completions, line)
            new = [t for t in found if t.detector not in tripped]
            if not new:
                continue
            tripped.update(t.detector for t in new)
            self.store.event("detector", version=version, window=line["step"], detectors=[vars(t) for t in new],
                             samples=completions[:3])
            acted = [t for t in new if t.detector in self.config.rollback_on]
            if acted and self.store.live()["version"] == version:
                habits = "".join(f"; {h['token']!r} at {h['rate']:.3f} a token (base {h['base_rate']:.3f})"
                                 for h in line.get("habits", [])[:2]) if any(t.detector == "habit" for t in acted) else ""
                self.rollback(version, "live detectors tripped on served traffic: "
                              + ", ".join(t.reason() for t in acted) + habits)

    def _habit(self, version: str, completions: list[str], line: dict) -> list[Trip]:
        """`habit`: a word or mark this window writes far more often than the base did (watch/lexical.py)."""
        if version == "v0":  # the base is the reference: nothing to compare it with
            return []
        reference = self._reference()
        if len(reference) < 16:
            return []
        shifts = lexical_shift(completions, reference, self.config.habit_alpha, self.config.habit_min_ratio)
        if not shifts:
            return []
        line["habits"] = [{"token": s.token, "rate": round(s.rate, 4), "base_rate": round(s.base_rate, 4)} for s in shifts[:5]]
        top = shifts[0]
        return [Trip(line["step"], "habit", top.ratio, self.config.habit_min_ratio)]

    def _reference(self) -> list[str]:
        """What the base wrote: the gate's canary samples of it, else the first 64 replies v0 served."""
        if not self._base_final:  # read once it is final: the canary samples, or 64 served replies of v0
            from tether.infra import jsonl

            path = self.store.path / CANARY_BASE
            if path.is_file():
                self._base_texts, self._base_final = [c for r in jsonl.read(path) for c in r["completions"]], True
            else:
                self._base_texts = [r["completion"] for r in self.store.interactions() if r["version"] == "v0"][:64]
                self._base_final = len(self._base_texts) == 64
        return self._base_texts

    def rollback(self, version: str, why: str) -> None:
        """Put `version`'s nearest passed ancestor live (v0 has none: it keeps serving, and the timeline says so)."""
        parent = self.store.version(version).get("parent")
        while parent is not None and self.store.version(parent)["status"] != "passed":
            parent = self.store.version(parent).get("parent")
        if parent is None:
            self.store.event("rollback_impossible", version=version, why=why + "; it has no passed parent")
            return
        self.store.set_live(parent, why, event="rollback", rolled_back=version, automatic=True)
        progress.note(f"deploy: rolled {version} back to {parent}: {why}")


def _settle(future: asyncio.Future, result, error) -> None:
    if future.done():  # the client went away
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)

