"""Dynamic batching: requests that arrive together are judged in one evaluator call.

Every request becomes a job on a thread-safe queue. One worker thread owns the evaluator
(a torch model is not to be shared between threads): it takes the first waiting job, then
keeps gathering until `max_batch` texts or `max_wait_ms` have passed, judges all their texts
in one `Evaluator.score` call (which sorts them by length and pads them together), logs the
batch (appended and fsynced: acknowledged = logged), and only then answers each job on its
event loop. Under load the queue fills while the judge is busy, so batches grow without
any wait; when idle, `max_wait_ms` is the most a lone request waits for company.

A batch the judge fails on is retried one job at a time, so one bad request fails alone;
that is safe because nothing of it was logged yet. Once a batch's samples are appended they
are never judged or appended again: a failure of the append itself answers the batch's jobs
with an error (the run's count follows whatever landed), and a failure after it (the window's
metrics line, the detectors) is reported while every job still gets its logged rows.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from dataclasses import dataclass, field

from tether.judge.evaluator import Evaluator
from tether.serve.runlog import ServeRun


@dataclass
class Job:
    prompts: list[str]
    completions: list[str]
    texts: list[str]  # what the judge reads: prompt + completion, or the completion alone
    labels: list | None
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


@dataclass
class Stats:
    """Counters for /metrics and the load benchmark; written by the worker, read by anyone."""

    jobs: int = 0
    texts: int = 0
    batches: int = 0
    largest: int = 0
    failed_jobs: int = 0
    judge_seconds: float = 0.0
    sizes: dict[int, int] = field(default_factory=dict)  # texts in a batch -> how many batches


class Batcher:
    def __init__(self, evaluator: Evaluator, run: ServeRun | None = None, max_batch: int = 64, max_wait_ms: float = 10.0):
        self.evaluator, self.run = evaluator, run
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.names = [p.name for p in evaluator.constitution.principles]
        self.stats = Stats()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="tether-judge", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the jobs already queued, then end the worker."""
        self._queue.put(None)
        self._thread.join()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    async def submit(self, prompts: list[str], completions: list[str], texts: list[str], labels: list | None) -> list[dict]:
        """The judged rows of these texts, once they are logged."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(Job(prompts, completions, texts, labels, future, loop))
        return await future

    # --- the worker thread --------------------------------------------------------------

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            jobs, size = [job], len(job.texts)
            deadline = time.monotonic() + self.max_wait
            while size < self.max_batch and (left := deadline - time.monotonic()) > 0:
                try:
                    more = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if more is None:  # stop after this batch
                    self._queue.put(None)
                    break
                jobs.append(more)
                size += len(more.texts)
            self._run(jobs)

    def _run(self, jobs: list[Job]) -> None:
        start = time.perf_counter()
        try:
            rows = self._judge(jobs)
        except Exception:  # noqa: BLE001 - nothing is logged yet: retried alone, so the failing job is the only one told
            if len(jobs) == 1:
                self._answer(jobs[0], error=_failure())
                return
            for job in jobs:
                self._run([job])
            return
        if self.run is not None:
            try:
                rows = self.run.append(rows)  # fsynced before any answer: acknowledged = logged
            except Exception:  # noqa: BLE001 - not one request's fault, and some lines may have landed: no retry
                error = _failure("the run log could not be written")
                for job in jobs:
                    self._answer(job, error=error)
                return
        # Logged: from here on nothing is judged or appended again; each job gets its rows.
        self._after_logging(jobs, len(rows), time.perf_counter() - start)
        at = 0
        for job in jobs:
            self._answer(job, rows[at : at + len(job.texts)])
            at += len(job.texts)

    def _judge(self, jobs: list[Job]) -> list[dict]:
        """The judged rows of every job's texts, in order; nothing is logged here."""
        texts = [t for job in jobs for t in job.texts]
        result = self.evaluator.score(texts)
        totals, scores = result.total(), result.scores()
        rows = []
        for job in jobs:
            for i in range(len(job.texts)):
                k = len(rows)
                row = {"prompt": job.prompts[i], "completion": job.completions[i], "train": float(totals[k]),
                       **{f"train/{name}": float(scores[k, j]) for j, name in enumerate(self.names)}}
                if job.labels is not None:
                    row["label"] = job.labels[i]
                rows.append(row)
        return rows

    def _after_logging(self, jobs: list[Job], texts: int, seconds: float) -> None:
        """The counters and the windows the batch filled; a failure is reported, never retried by re-judging."""
        s = self.stats
        s.judge_seconds += seconds
        s.jobs, s.texts, s.batches, s.largest = s.jobs + len(jobs), s.texts + texts, s.batches + 1, max(s.largest, texts)
        s.sizes[texts] = s.sizes.get(texts, 0) + 1
        if self.run is not None:
            try:
                self.run.close_windows()
            except Exception as e:  # noqa: BLE001 - the samples are logged; the window waits for the next batch
                self.run.warn("closing a window (metrics line, detectors)", e)

    def _answer(self, job: Job, rows: list[dict] | None = None, error: JudgeFailed | None = None) -> None:
        if error is not None:
            self.stats.failed_jobs += 1

        def settle() -> None:
            if job.future.done():  # the client went away
                return
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(rows)

        try:
            job.loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop is closed: the server is gone
            pass


class JudgeFailed(Exception):
    """The judge could not score a request: 400 when the input is at fault (a TetherError), else 500."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def _failure(doing: str | None = None) -> JudgeFailed:
    """The exception being handled as a JudgeFailed: the judge's (400 for a TetherError), or `doing`'s (500)."""
    import sys

    from tether.errors import TetherError

    e = sys.exc_info()[1]
    if doing is None and isinstance(e, TetherError):
        return JudgeFailed(" ".join(str(e).split())[:300], 400)
    return JudgeFailed(" ".join(f"{doing or 'the judge failed'}: {type(e).__name__}: {e}".split())[:300], 500)
