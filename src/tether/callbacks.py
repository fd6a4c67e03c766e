"""The monitor callback: after each TRL step, measure that step's completions.

A thin `TrainerCallback` around the pure functions of `monitors` and a held-out gold
judge. It works in tether's own runs and in any user's GRPOTrainer/RLOOTrainer script:

    reward = ConstitutionReward(Evaluator(judge, "examples/cheerful.yaml"))
    monitor = MonitorCallback(reward, gold=Evaluator(judge, "examples/on_topic.yaml"))
    GRPOTrainer(..., reward_funcs=[reward], callbacks=[monitor])

Its metrics join TRL's in `trainer.state.log_history`; with a `RunDir` they also go to
metrics.jsonl (one line a step) and samples.jsonl (every completion).
"""

from __future__ import annotations

import numpy as np
from transformers import TrainerCallback

from tether.evaluator import Evaluator
from tether.monitors import text_monitors
from tether.rewards import ConstitutionReward
from tether.rundir import RunDir


class MonitorCallback(TrainerCallback):
    def __init__(self, reward: ConstitutionReward, gold: Evaluator | None = None, run_dir: RunDir | None = None):
        if not isinstance(reward, ConstitutionReward):
            raise TypeError("MonitorCallback watches a ConstitutionReward; pass the one given to the trainer")
        self.reward, self.gold, self.run_dir = reward, gold, run_dir
        self._last_step = -1

    def on_log(self, args, state, control, logs=None, **kwargs):
        result = self.reward.last_result
        # TRL also logs a run summary at the end; a step is logged once, with its batch.
        if result is None or state.global_step == self._last_step or not state.is_world_process_zero:
            return
        self._last_step = state.global_step
        metrics = {"step": state.global_step, **(logs or {}), **text_monitors(self.reward.last_completions)}
        train = result.total()
        metrics["reward/train"] = float(train.mean())
        gold = None
        if self.gold is not None:
            gold = self.gold.score(result.texts).total()
            metrics["gold/score"] = float(gold.mean())
            metrics["gold/gap"] = float(train.mean() - gold.mean())
        if state.log_history:
            state.log_history[-1].update({k: v for k, v in metrics.items() if k not in state.log_history[-1]})
        if self.run_dir is not None:
            self.run_dir.append("metrics.jsonl", [_jsonable(metrics)])
            self.run_dir.append("samples.jsonl", self._samples(state.global_step, result, gold))

    def _samples(self, step: int, result, gold) -> list[dict]:
        scores = result.scores()
        return [
            {
                "step": step,
                "prompt": prompt,
                "completion": completion,
                "train": round(float(result.total()[i]), 4),
                **{f"train/{name}": round(float(scores[i, k]), 4) for k, name in enumerate(result.names)},
                **({"gold": round(float(gold[i]), 4)} if gold is not None else {}),
            }
            for i, (prompt, completion) in enumerate(zip(self.reward.last_prompts, self.reward.last_completions))
        ]

    def on_save(self, args, state, control, **kwargs):
        if self.run_dir is not None and state.is_world_process_zero:
            self.run_dir.event("checkpoint", step=state.global_step)


def _jsonable(metrics: dict) -> dict:
    return {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in metrics.items()}
