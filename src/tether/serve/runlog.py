"""The folder a reward service writes: a run like `tether tune`'s, so `tether report` and `tether detect` read it.

    config.yaml    a tune config naming the constitution and judge (what `tether detect` loads)
    serve.json     the service's settings: window, judged text, started; marks a served run
    samples.jsonl  every judged sample: step, sample number, prompt, completion, train scores, label
    metrics.jsonl  one line per window of `window` samples (a "step"): reward/train, principle/NAME, monitors
    events.jsonl   start, resume, stop, detector trips

The trainer (OpenRLHF, verl) owns the policy, so there is no KL, gold judge or checkpoint
here: the monitors over the completions, the train reward and the detectors on them are
tether's view of the run. Samples are appended and fsynced before their request is answered;
a window's metrics line follows its last sample. Logging samples (`append`) and closing the
windows they fill (`close_windows`) are two steps, so a failure in the second never makes a
caller log the samples again: a window that could not be closed waits, in order, for the
next call (or `close`). After a kill, the next start continues the
folder: the partial window is read back from samples.jsonl, a window whose samples were all
logged but whose metrics line was not is completed, so nothing acknowledged is lost and no
step appears twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from pathlib import Path

import numpy as np

from tether.errors import TetherError
from tether.infra import atomic, jsonl, progress
from tether.infra.rundir import clear_owned
from tether.watch.detectors import DetectorConfig, check
from tether.watch.metrics import batch_values

SERVE_FILES = ("config.yaml", "serve.json", "metrics.jsonl", "samples.jsonl", "events.jsonl", "report", ".lock")
MARKER = "serve.json"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


class ServeRun:
    """The run folder of one service; `record` is called from one thread (the judge worker) only."""

    def __init__(self, path: str | Path, constitution: Path, judge_model: str, window: int | None,
                 include_prompt: bool, detectors: DetectorConfig | None = None, force: bool = False):
        self.path = Path(path)
        self.detectors = detectors or DetectorConfig()
        self.tripped: set[str] = set()
        self.history: list[dict] = []
        self.current: list[dict] = []  # the samples of the window being filled
        self.backlog: list[tuple[int, list[dict]]] = []  # filled windows whose metrics line is not written yet
        self.count = 0  # samples logged so far
        self._lock_handle = None
        self._prepare(force)
        self._lock()
        if (self.path / MARKER).exists():
            self._continue(window, include_prompt)
        else:
            self._start(Path(constitution).absolute(), judge_model, window or 64, include_prompt)

    # --- life ---------------------------------------------------------------------------

    def _prepare(self, force: bool) -> None:
        """Refuse a folder that holds anything but a served run; with `force`, empty a served one."""
        if self.path.exists() and not self.path.is_dir():
            raise TetherError(f"{self.path}: not a folder; give --out a folder for the service's run")
        if (self.path / "config.yaml").exists() and not (self.path / MARKER).exists():
            raise TetherError(f"{self.path}: holds a `tether tune` run; give --out another folder")
        if force:
            clear_owned(self.path, SERVE_FILES, "a served run", marker=MARKER)
        elif self.path.exists() and not (self.path / MARKER).exists() and any(self.path.iterdir()):
            raise TetherError(f"{self.path}: holds files tether did not write; give --out an empty or new folder")
        self.path.mkdir(parents=True, exist_ok=True)

    def _lock(self) -> None:
        """One service per folder: two writers would number the same samples twice. A kill releases it."""
        self._lock_handle = open(self.path / ".lock", "a")  # noqa: SIM115 (held for the service's life)
        try:
            fcntl.flock(self._lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_handle.close()
            raise TetherError(f"{self.path}: another `tether serve` is writing this folder; stop it or give --out "
                              f"another folder") from None

    def _start(self, constitution: Path, judge_model: str, window: int, include_prompt: bool) -> None:
        from tether.infra.config import load_config
        from tether.tune.config import TuneConfig

        config = {"policy_model": "remote (tether serve)", "constitution": str(constitution),
                  "judge_model": judge_model, "prompts": str((self.path / "samples.jsonl").absolute()),
                  "embedder": None, "detectors": self.detectors.model_dump()}
        load_config(TuneConfig, data=config, where=str(self.path / "config.yaml"))  # what `tether detect` will load
        import yaml

        atomic.write_text(self.path / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        self.settings = {"window": window, "include_prompt": include_prompt, "constitution": str(constitution),
                         "judge_model": judge_model, "started": _now()}
        atomic.write_json(self.path / MARKER, self.settings)
        self.event("start", window=window)

    def _continue(self, window: int | None, include_prompt: bool) -> None:
        """Pick up a folder a stopped or killed service left: its windows, trips and partial window."""
        import json

        self.settings = json.loads((self.path / MARKER).read_text(encoding="utf-8"))
        stored = self.settings["window"]
        if window is not None and window != stored:
            raise TetherError(f"{self.path}: served with --window {stored}; pass the same, or --force to start afresh")
        if include_prompt != self.settings["include_prompt"]:
            raise TetherError(f"{self.path}: served {'with' if self.settings['include_prompt'] else 'without'} the "
                              f"prompt in the judged text; pass the same --completion-only setting, or --force")
        samples = jsonl.read(self.path / "samples.jsonl")
        steps = {m["step"]: m for m in jsonl.read(self.path / "metrics.jsonl") if "step" in m}
        self.history = [steps[k] for k in sorted(steps)]
        for e in jsonl.read(self.path / "events.jsonl"):
            if e.get("event") == "detector":
                self.tripped.update(d["detector"] for d in e.get("detectors", []))
        self.count = len(samples)
        last = self.history[-1]["step"] if self.history else 0
        by_step: dict[int, list[dict]] = {}
        for row in samples:
            by_step.setdefault(row["step"], []).append(row)
        for step in sorted(s for s in by_step if s > last):
            if len(by_step[step]) >= self.window:  # logged in full; the kill came before its metrics line
                self._detect(self._close_window(step, by_step[step]), by_step[step])
        partial = self.count // self.window + 1
        self.current = by_step.get(partial, []) if partial not in steps else []
        self.event("resume", samples=self.count, step=self.history[-1]["step"] if self.history else 0)

    @property
    def window(self) -> int:
        return int(self.settings["window"])

    @property
    def step(self) -> int:
        """The step the next sample belongs to."""
        return self.count // self.window + 1

    def close(self, reason: str = "stop") -> None:
        if self._lock_handle is not None and not self._lock_handle.closed:
            try:
                self.close_windows()  # a window a failure left waiting
            except Exception as e:  # noqa: BLE001 - the next start completes a window logged in full
                self.warn("closing the last windows", e)
            self.event(reason, samples=self.count)
            self._lock_handle.close()

    def warn(self, doing: str, error: Exception) -> None:
        """A failure the service lives through, on the console and, when it can be written, as an event."""
        from rich.markup import escape

        message = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        progress.console.print(f"[yellow]tether serve[/]: {doing} failed: {escape(message)}", highlight=False)
        with contextlib.suppress(Exception):  # the console line has told it
            self.event("error", doing=doing, error=message)

    # --- samples and windows ------------------------------------------------------------

    def record(self, rows: list[dict]) -> list[dict]:
        """Log judged samples, then close the windows they fill (`append`, then `close_windows`)."""
        logged = self.append(rows)
        self.close_windows()
        return logged

    def append(self, rows: list[dict]) -> list[dict]:
        """Number judged samples and log them (appended and fsynced in one write); nothing more.

        The count follows the file: if the write raises after some lines landed (an fsync
        error), those are taken as logged before the error goes on, so no number is given
        twice. The caller must not append these rows again either way."""
        logged = [{"step": (self.count + i) // self.window + 1, "sample": self.count + i, **row}
                  for i, row in enumerate(rows)]
        try:
            jsonl.append(self.path / "samples.jsonl", logged)
        except Exception:
            self._take(jsonl.read(self.path / "samples.jsonl")[self.count :])
            raise
        self._take(logged)
        return logged

    def _take(self, logged: list[dict]) -> None:
        """Count logged samples into the window being filled; a filled window joins the backlog."""
        self.count += len(logged)
        for row in logged:
            self.current.append(row)
            if len(self.current) == self.window:
                self.backlog.append((row["step"], self.current))
                self.current = []

    def close_windows(self) -> None:
        """Write each filled window's metrics line, in order, then run the detectors on it.

        A window whose line could not be written stays first in the backlog (retried on the
        next call); once its line is written it leaves the backlog, so no step is written twice."""
        while self.backlog:
            step, rows = self.backlog[0]
            metrics = self._close_window(step, rows)
            del self.backlog[0]
            self._detect(metrics, rows)

    def _close_window(self, step: int, rows: list[dict]) -> dict:
        """A window's metrics line, written and added to the history."""
        completions = [r["completion"] for r in rows]
        names = [k.removeprefix("train/") for k in rows[0] if k.startswith("train/")]
        metrics = {"step": step, "reward/train": float(np.mean([r["train"] for r in rows])),
                   **{f"principle/{name}": float(np.mean([r[f'train/{name}'] for r in rows])) for name in names},
                   **batch_values(completions), "serve/samples": len(rows), "time": _now()}
        jsonl.append(self.path / "metrics.jsonl", [metrics])
        self.history.append(metrics)
        return metrics

    def _detect(self, metrics: dict, rows: list[dict]) -> None:
        """The detectors over every metrics line so far; a new trip is an event and a console line."""
        step, completions = metrics["step"], [r["completion"] for r in rows]
        new = [t for t in check(self.history, self.detectors) if t.detector not in self.tripped]
        if new:
            self.tripped.update(t.detector for t in new)
            evidence = {k: v for k, v in metrics.items() if k.startswith(("monitor/", "reward/", "principle/"))}
            self.event("detector", step=step, detectors=[vars(t) for t in new], evidence=evidence,
                       samples=completions[:2], action="warn")
            progress.console.print(f"[yellow]hack detector[/] step {step}: "
                                   + ", ".join(f"{t.detector}={t.value:.3g} (limit {t.limit:.3g})" for t in new))

    def event(self, kind: str, **details) -> None:
        jsonl.append(self.path / "events.jsonl", [{"time": _now(), "event": kind, **details}])
