"""The monitor callback: after each TRL step, measure that step's completions.

A thin `TrainerCallback` around the pure functions of `monitors` and a held-out gold
judge (an `Evaluator`, or any gold of `tether.labels.gold_judge`: a constitution or a folder
fitted by `tether gold fit`). It works in tether's own runs and in any user's GRPOTrainer/RLOOTrainer script:

    reward = ConstitutionReward(Evaluator(judge, "examples/cheerful.yaml"))
    monitor = MonitorCallback(reward, gold=Evaluator(judge, "examples/on_topic.yaml"))
    GRPOTrainer(..., reward_funcs=[reward], callbacks=[monitor])

Its metrics join TRL's in `trainer.state.log_history` and in each step's `logs` (which the
`report_to` trackers log when they run after it: `tether.infra.trackers.trackers_last`); with a
`RunDir` they also go to metrics.jsonl (one line a step) and samples.jsonl (every completion).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from transformers import TrainerCallback

from tether.infra import atomic, progress, ranks
from tether.infra.rundir import RunDir
from tether.judge.evaluator import Evaluator
from tether.labels.gold_judge import ConstitutionGold, Gold
from tether.rewards.constitution import ConstitutionReward
from tether.watch import spotcheck
from tether.watch.detectors import DetectorConfig, check
from tether.watch.drift import EmbeddingDrift
from tether.watch.metrics import METRICS, STEP_LINE, batch_values
from tether.watch.shift import ShiftTest


@dataclass
class RewardTerm:
    """One reward function and its weight in TRL's sum (`reward_weights`).

    A term other than the constitution (a defense) keeps its latest batch's values in
    `function.last_values` and its cost in `function.last_seconds`; the monitor callback
    logs them as `defense/{name}/...` and `time/{name}`.
    """

    name: str
    weight: float
    function: object


class MonitorCallback(TrainerCallback):
    def __init__(self, reward: ConstitutionReward, gold: Gold | Evaluator | None = None, run_dir: RunDir | None = None,
                 drift: EmbeddingDrift | None = None, terms: list[RewardTerm] = (), constitution_weight: float = 1.0,
                 shift: ShiftTest | None = None, spot_check: spotcheck.SpotCheckConfig | None = None, seed: int = 0):
        if not isinstance(reward, ConstitutionReward):
            raise TypeError("MonitorCallback watches a ConstitutionReward; pass the one given to the trainer")
        if isinstance(gold, Evaluator):  # a bare evaluator judges the text the train judge does
            gold = ConstitutionGold(gold, include_prompt=reward.include_prompt)
        self.reward, self.gold, self.run_dir, self.drift, self.terms = reward, gold, run_dir, drift, list(terms)
        self.constitution_weight = constitution_weight  # its weight in TRL's sum, for the defenses' shares
        if shift is not None and drift is None:
            raise ValueError("the shift test reuses the drift monitor's embeddings; pass drift too")
        self.shift, self.spot_check, self.seed = shift, spot_check, seed
        self._last_step = -1
        self._step_start = time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_start = time.perf_counter()

    def on_log(self, args, state, control, logs=None, **kwargs):
        result = self.reward.last_result
        # TRL also logs a run summary at the end; a step is logged once, with its batch.
        if result is None or state.global_step == self._last_step:
            return
        self._last_step = state.global_step
        batch = self._whole_batch(result)  # collective: every rank takes part
        metrics = self._measure(state.global_step, logs, batch, state.max_steps) if ranks.is_main() else None
        metrics = ranks.broadcast(metrics)  # the detectors on every rank must see the same values
        if state.log_history:
            state.log_history[-1].update({k: v for k, v in metrics.items() if k not in state.log_history[-1]})
        if logs is not None:  # the trackers (report_to) run after this callback and log what `logs` holds
            logs.update({k: v for k, v in metrics.items() if k not in logs and k != "step" and _is_number(v)})

    def _whole_batch(self, result) -> list[dict]:
        """This step's completions from every process, with their train scores."""
        scores, r = result.scores(), self.reward
        totals = r.last_raw if len(r.last_raw) == len(result.texts) else result.total()  # the judges combined
        several, shaped = len(r.last_judges) > 1, r.shape.kind != "raw" and len(r.last_shaped) == len(totals)
        return ranks.gather([
            {"prompt": p, "completion": c, "text": t, "train": float(totals[i]),
             **({"paid": float(r.last_shaped[i])} if shaped else {}),
             **({"disagreement": float(r.last_disagreement[i]),
                 **{f"judge/{j}": float(r.last_judges[j, i]) for j in range(len(r.last_judges))}} if several else {}),
             **{f"train/{name}": float(scores[i, k]) for k, name in enumerate(result.names)},
             **{term.name: float(term.function.last_values[i]) for term in self.terms}}
            for i, (p, c, t) in enumerate(zip(self.reward.last_prompts, self.reward.last_completions, result.texts))
        ])

    def _measure(self, step: int, logs: dict | None, batch: list[dict], planned_steps: int = 0) -> dict:
        clock = time.perf_counter()
        completions = [row["completion"] for row in batch]
        train = np.array([row["train"] for row in batch])
        metrics = {"step": step, **(logs or {}), **batch_values(completions), "reward/train": float(train.mean()),
                   "time/train_judge": self.reward.last_seconds}
        paid = np.array([row.get("paid", row["train"]) for row in batch])
        metrics.update({"reward/raw": float(train.mean()), "reward/shaped": float(paid.mean())})
        if "disagreement" in batch[0]:  # a judge ensemble: how far its judges are apart, and each judge
            metrics["monitor/judge_disagreement"] = float(np.mean([row["disagreement"] for row in batch]))
            metrics.update({f"reward/{k}": float(np.mean([row[k] for row in batch])) for k in batch[0]
                            if k.startswith("judge/")})
        metrics.update(self._defense_metrics(paid, batch))
        metrics["time/monitors"], clock = time.perf_counter() - clock, time.perf_counter()
        if self.gold is not None:
            gold = self.gold.score([row["prompt"] for row in batch], completions)
            metrics["time/gold_judge"], clock = time.perf_counter() - clock, time.perf_counter()
            metrics["gold/score"] = float(gold.mean())
            metrics["gold/gap"] = float(train.mean() - gold.mean())
            for row, g in zip(batch, gold):
                row["gold"] = float(g)
        if self.drift is not None:
            drift = self.drift.distances([row["prompt"] for row in batch], completions)
            metrics["drift/embedding"] = float(np.nanmean(drift))
            metrics["time/drift"] = time.perf_counter() - clock
            for row, d in zip(batch, drift):
                row["drift"] = float(d)
            if self.shift is not None:  # the same vectors, embedded once
                metrics.update(self.shift.update(step, [row["prompt"] for row in batch], self.drift.last_vectors,
                                                 planned_steps or step))
                metrics["time/shift"] = time.perf_counter() - clock - metrics["time/drift"]
        metrics["time/step"] = time.perf_counter() - self._step_start  # generation, judging, update, monitors
        metrics = _jsonable(metrics)
        if self.run_dir is not None:
            self.run_dir.append("metrics.jsonl", [metrics])
            self.run_dir.append("samples.jsonl", [
                {"step": step, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items() if k != "text"}}
                for row in batch
            ])
            self._spot_check(step, batch)
        return metrics

    def _spot_check(self, step: int, batch: list[dict]) -> None:
        """Every `every` steps, k of this step's completions to a person's queue (the command printed once)."""
        if not self.spot_check or not self.spot_check.every or step % self.spot_check.every:
            return
        first = not (self.run_dir.path / spotcheck.QUEUE).exists()
        vectors = getattr(self.drift, "last_vectors", None) if self.drift is not None else None
        chosen = spotcheck.choose(batch, self.spot_check, self.seed, step, vectors)
        spotcheck.queue(self.run_dir.path, step, chosen)
        if first:
            progress.console.print(f"spot check: {len(chosen)} completions queued for you; answer them with\n  "
                                   f"{spotcheck.command(self.run_dir.path)}")

    def _defense_metrics(self, train: np.ndarray, batch: list[dict]) -> dict:
        """Each defense's mean value, its weighted part of the reward, its share of it, its cost."""
        if not self.terms:
            return {}
        means = {t.name: float(np.nanmean([row[t.name] for row in batch])) for t in self.terms}
        sizes = {t.name: t.weight * float(np.nanmean([abs(row[t.name]) for row in batch])) for t in self.terms}
        whole = self.constitution_weight * float(np.abs(train).mean()) + sum(sizes.values())
        metrics = {"reward/total": self.constitution_weight * float(train.mean())
                   + sum(t.weight * means[t.name] for t in self.terms)}
        for t in self.terms:
            metrics.update({f"defense/{t.name}/mean": means[t.name], f"defense/{t.name}/weighted": t.weight * means[t.name],
                            f"defense/{t.name}/share": sizes[t.name] / whole if whole else 0.0,
                            f"time/{t.name}": t.function.last_seconds})
            metrics.update({f"defense/{t.name}/{k}": v for k, v in getattr(t.function, "summary", dict)().items()})
        return metrics

    def on_save(self, args, state, control, **kwargs):
        if self.run_dir is not None and ranks.is_main():
            self.run_dir.event("checkpoint", step=state.global_step)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _jsonable(metrics: dict) -> dict:
    return {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in metrics.items()}


class DetectorCallback(TrainerCallback):
    """Runs the hack detectors after each step's monitors; warns, or stops the run.

    Place it after `MonitorCallback` (it reads the monitors from `state.log_history`). A
    trip is logged once per detector as an event with the step, the evidence (the
    monitor values and two sample completions) and, when stopping, the checkpoint marked
    `best`: the last policy whose own batch passed (`RunDir.last_passing_policy`: a trip at step
    k keeps checkpoint-(k - 2), since checkpoint-(k - 1) wrote the tripping batch; none, that
    is the base model, when no such checkpoint was saved). A resumed run calls `restore` so the trips,
    `best` and the metrics from before its checkpoint count as in an uninterrupted run.
    """

    def __init__(self, reward: ConstitutionReward, config: DetectorConfig | None = None,
                 action: str = "warn", run_dir: RunDir | None = None, spot_check: spotcheck.SpotCheckConfig | None = None):
        if action not in ("warn", "stop"):
            raise ValueError(f"action={action!r}: write warn or stop")
        self.reward, self.config, self.action, self.run_dir = reward, config or DetectorConfig(), action, run_dir
        self.spot_check = spot_check if spot_check and spot_check.every and run_dir is not None else None
        self._labels_problem: str | None = None
        self.tripped: dict[str, int] = {}  # detector -> first step it fired
        self.best: dict | None = None
        self.earlier: list[dict] = []  # metrics of the steps before a resumed run's checkpoint

    def restore(self, events: list[dict], metrics: list[dict]) -> None:
        """Continue from a run's rewound events.jsonl and metrics.jsonl (nothing after the checkpoint)."""
        for event in events:
            if event.get("event") == "detector":
                for trip in event.get("detectors", []):
                    self.tripped.setdefault(trip["detector"], event["step"])
                self.best = event.get("best", self.best)
        self.earlier = [m for m in metrics if "reward/train" in m and "step" in m]

    def on_log(self, args, state, control, logs=None, **kwargs):
        # The window detectors and distinct-2's first step need the whole run: what came
        # before a resume (metrics.jsonl), then this process's steps (TRL's log history).
        steps = {m["step"]: m for m in self.earlier}
        steps.update({e["step"]: e for e in state.log_history if "reward/train" in e})
        history = [steps[k] for k in sorted(steps)]
        if not history:  # every rank decides alike: the monitors were broadcast
            return
        new = [t for t in check(history, self.config, steps=state.max_steps or None, **self._person())
               if t.detector not in self.tripped]
        # For the trackers (report_to), on a step's log: how many detectors have fired so far, and which now.
        if logs is not None and state.log_history and "reward/train" in state.log_history[-1]:
            logs["detector/trips"] = len(self.tripped) + len(new)
            logs.update({f"detector/{t.detector}": 1 for t in new})
        if not new:
            return
        step = history[-1]["step"]
        for trip in new:
            self.tripped[trip.detector] = step
        evidence = {k: v for k, v in history[-1].items() if k.startswith(("monitor/", "gold/", "reward/", "kl"))}
        details = {"step": step, "detectors": [vars(t) for t in new], "evidence": evidence,
                   "samples": self.reward.last_completions[:2], "action": self.action}
        if self.action == "stop":
            control.should_training_stop = True
        if not ranks.is_main():
            return
        if self.action == "stop":
            self.best = details["best"] = self._mark_best(step)
        if self.run_dir is not None:
            self.run_dir.event("detector", **details)
        progress.console.print(f"[yellow]hack detector[/] step {step}: "
                               + ", ".join(f"{t.detector}={t.value:.3g} (limit {t.limit:.3g})" for t in new))

    def _person(self) -> dict:
        """A person's answers on the spot-check queue (RUN_DIR/labels.jsonl), read afresh each step."""
        if self.spot_check is None:
            return {}
        noes, problem = spotcheck.try_person_noes(self.run_dir.path, self.spot_check.questions) if ranks.is_main() else ([], None)
        noes = ranks.broadcast(noes)  # a file appended between two ranks' reads must not split their decision
        if problem and problem != self._labels_problem and ranks.is_main():  # warned once per distinct problem
            progress.console.print(f"[yellow]spot check:[/] {problem}; the person detector waits for a readable file")
        self._labels_problem = problem
        return {"person_no": noes, "min_no": self.spot_check.min_no}

    def _mark_best(self, trip_step: int) -> dict | None:
        if self.run_dir is None:
            return None
        saved = self.run_dir.last_passing_policy(trip_step)
        if saved is None:  # the base model is the last policy whose own batch passed
            return None
        step, path = saved  # checkpoint-`step` wrote the batch logged at step + 1, which passed
        best = {"checkpoint": str(path.relative_to(self.run_dir.path)), "step": step, "batch_step": step + 1,
                "tripped_at": trip_step}
        atomic.write_json(self.run_dir.path / "best.json", best)
        return best


class StepPrinter(TrainerCallback):
    """One readable line a step on the console, in place of the trainer's raw metric dicts."""

    SHOWN = {key: METRICS[key].label for key in STEP_LINE}

    def __init__(self, total_steps: int):
        self.total_steps = total_steps
        self._last = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        entry = state.log_history[-1] if state.log_history else {}
        if not ranks.is_main() or "reward/train" not in entry:
            return
        values = "  ".join(f"{label} {entry[key]:.3g}" for key, label in self.SHOWN.items()
                           if isinstance(entry.get(key), (int, float)))
        now = time.monotonic()
        seconds, self._last = now - self._last, now
        progress.note(f"step {state.global_step}/{self.total_steps}  {values}  ({seconds:.1f} s)")
