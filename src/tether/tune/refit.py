"""The source text's loop, in one run: a person labels what the policy writes now, the gold reward is refit, training goes on.

    gold_reward: {path: golds/good, weight: 1.0, refit_every: 5, refit_labels: labels.jsonl}
    spot_check: {every: 5, k: 8}

`path`'s gold is the one refit (on `refit_label`'s answers); golds in `also` are paid unchanged.

Every `refit_every` steps, after the spot check has queued k of the step's completions, the run
waits (up to `refit_wait` seconds) until a person has answered each of them on the labeling page
(`tether label RUN/spotcheck.jsonl --out RUN/labels.jsonl`), then fits a new gold on the starting
labels plus every answer so far (the same fit as `tether gold fit`: grouped cross-validation,
logistic regression on text features) and pays it from the next step on. Each round is kept
(RUN/refit/round-N/: the labels it used, and the gold with its cross-validated AUC) and logged as
a `refit` event with the labels it cost, so a reader of the run can see what each gold knew.
A round whose answers do not arrive in time is skipped with a warning: a run is never stuck.
A resumed run pays the gold of the last round at or before the step it resumes from.

Refits that count: the regularization is chosen by grouped cross-validation (labels/gold_fit.py); each
answer given during the run weighs `refit_recent_weight` starting labels (the policy's current texts
count most); and the new gold replaces the paid one only when it predicts this round's answers, which
the paid gold never saw, better: its out-of-fold log-loss on them below the paid gold's. The event
records both losses (and AUCs when the round has both answers) and whether the gold was replaced;
a gold that lost is kept in its round folder, never paid.
"""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from tether.infra import jsonl, progress, ranks
from tether.infra.rundir import RunDir
from tether.watch import spotcheck


class RefitCallback(TrainerCallback):
    def __init__(self, reward, config, run: RunDir, poll_seconds: float = 2.0):
        self.reward, self.config, self.run, self.poll = reward, config, run, poll_seconds
        self.rounds = len([e for e in jsonl.read(run.path / "events.jsonl") if e.get("event") == "refit"])
        self.done_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        """On resume, the gold the run was paying at its checkpoint: the last round refit at or before that step."""
        rounds = [e for e in jsonl.read(self.run.path / "events.jsonl")  # the refits that replaced the paid gold
                  if e.get("event") == "refit" and e["step"] <= state.global_step and "gold" in e]
        if rounds:
            last = rounds[-1]
            self._pay(self.run.path / last["gold"])
            self.done_step = last["step"]
            progress.console.print(f"resumed at step {state.global_step}: paying the gold refit at step {last['step']} "
                                   f"(round {last['round']})", highlight=False)

    def on_log(self, args, state, control, logs=None, **kwargs):
        """After the monitor callback's (it queues the spot check in its on_log); once a step."""
        every = self.config.gold_reward.refit_every
        if not every or state.global_step % every or state.global_step == self.done_step:
            return
        if state.global_step >= state.max_steps:  # a gold refit after the last step would pay nothing
            return
        self.done_step = state.global_step
        step, label = state.global_step, self.config.gold_reward.refit_label
        # Under torchrun / accelerate only the main process waits, fits and writes; the others wait
        # here for the new gold's folder and load it, so every process pays the same gold.
        gold = self._round(step, label) if ranks.is_main() else None
        gold = ranks.broadcast(gold)
        if gold is not None and not ranks.is_main():
            self.rounds += 1
            self._pay(self.run.path / gold)

    def _round(self, step: int, label: str) -> str | None:
        """Wait for the answers and refit (main process): the new gold's folder in the run, or None."""
        queued = [r for r in jsonl.read(self.run.path / spotcheck.QUEUE) if r.get("step") == step]
        if not queued:
            return None
        progress.console.print(f"step {step}: waiting for a person's `{label}` answers to {len(queued)} completions "
                               f"({spotcheck.command(self.run.path)})", highlight=False, soft_wrap=True)
        deadline = time.monotonic() + self.config.gold_reward.refit_wait
        while (missing := self._unanswered(queued, label)) and time.monotonic() < deadline:
            time.sleep(self.poll)
        if missing:
            self.run.event("refit_skipped", step=step, unanswered=missing)
            progress.console.print(f"[yellow]warning:[/] step {step}: {missing} completions unanswered after "
                                   f"{self.config.gold_reward.refit_wait:g} s; the gold reward is not refit this round")
            return None
        return self._refit(step, label)

    def _pay(self, gold: Path) -> None:
        """Pay this gold folder in place of `path`'s gold (the first; `also` golds stay)."""
        from tether.labels.gold import GoldJudge
        from tether.labels.gold_judge import FolderGold

        self.reward.golds[0] = FolderGold(GoldJudge.load(gold, self.config.device, self.config.trust_remote_code))

    def _unanswered(self, queued: list[dict], label: str) -> int:
        answered = {(r["source"].get("step"), r["source"].get("prompt"), r["source"].get("completion"))
                    for r in jsonl.read(self.run.path / spotcheck.LABELS)
                    if r.get("kind") == "label" and r.get("question") == label and r.get("answer") in ("yes", "no")}
        return sum((r["step"], r["prompt"], r["completion"]) not in answered for r in queued)

    def _refit(self, step: int, label: str) -> str | None:
        from tether.labels.gold import fit_gold, save_gold

        self.rounds += 1
        folder = self.run.path / "refit" / f"round-{self.rounds}"
        folder.mkdir(parents=True, exist_ok=True)
        start = [r for path in self.config.gold_reward.refit_labels for r in jsonl.read(path)]
        theirs = list(jsonl.read(self.run.path / spotcheck.LABELS))
        jsonl.rewrite(folder / "labels.jsonl", start + theirs)
        recent = self.config.gold_reward.refit_recent_weight
        meta = fit_gold(folder / "labels.jsonl", label, self.config.gold_reward.refit_features,
                        device=self.config.device, trust_remote_code=self.config.trust_remote_code,
                        weight=lambda s: recent if self._is_run_label(s) else 1.0, keep_oof=True)
        held = self._held_out(meta.pop("oof"), meta.pop("oof_sources"), meta.pop("oof_labels"), step)
        save_gold(meta, folder / "gold", force=True)
        replaced = held["loss_after"] < held["loss_before"] if held["n"] else True
        gold = str(Path("refit") / f"round-{self.rounds}" / "gold")
        if replaced:
            self._pay(folder / "gold")
        new = sum(1 for r in theirs if r.get("kind") == "label" and r.get("question") == label)
        self.run.event("refit", step=step, round=self.rounds, labels=meta["n"], person_labels=new,
                       cv_auc=meta["cv"]["auc"], C=meta["C"], recent_weight=recent, replaced=replaced, **held,
                       **({"gold": gold} if replaced else {"kept": gold}))
        verdict = "paid from the next step" if replaced else "kept, not paid: the previous gold predicts them better"
        progress.console.print(f"step {step}: gold refit (round {self.rounds}) on {meta['n']} labels, {new} of them "
                               f"this run's; on this round's {held['n']} answers, log-loss {held['loss_before']:.3f} -> "
                               f"{held['loss_after']:.3f}: {verdict}", highlight=False, soft_wrap=True)
        return gold if replaced else None

    def _is_run_label(self, source: dict) -> bool:
        """An answer given during this run (to its spot check), not one of the starting labels."""
        return Path(str(source.get("file", ""))).resolve() == (self.run.path / spotcheck.QUEUE).resolve()

    def _held_out(self, oof: list[float], sources: list[dict], labels: list[bool], step: int) -> dict:
        """The paid gold against the refit's out-of-fold scores on this round's answers (the paid gold never saw
        them): mean log-loss each, and AUC when both answers occur."""
        import numpy as np

        from tether.labels.agreement import auc

        rows = [i for i, s in enumerate(sources) if self._is_run_label(s) and s.get("step") == step]
        if not rows:
            return {"n": 0, "loss_before": float("nan"), "loss_after": float("nan")}
        y = np.array([labels[i] for i in rows], dtype=bool)
        before = np.asarray(self.reward.golds[0].score([sources[i].get("prompt") or "" for i in rows],
                                                       [sources[i]["completion"] for i in rows]), dtype=float)
        after = np.asarray([oof[i] for i in rows], dtype=float)
        sign = np.where(y, 1.0, -1.0)
        out = {"n": len(rows), "loss_before": float(np.mean(np.logaddexp(0, -sign * before))),
               "loss_after": float(np.mean(np.logaddexp(0, -sign * after)))}
        if 0 < y.sum() < len(y):
            out.update({"auc_before": float(auc(before, y)), "auc_after": float(auc(after, y))})
        return out
