"""Process rewards in TRL: per-token advantages from step scores, in a subclass of TRL's GRPOTrainer.

TRL (>= 1.x) computes one advantage per completion and accepts a subclass that hands its loss a
(completions, tokens) tensor instead. `ProcessGRPOTrainer` lets TRL generate, score and normalize as
usual, then replaces (`process`) or adds to (`both`) each completion's outcome advantage:

1. The step scores of every completion of a prompt's group (the `num_generations` completions of one
   prompt) are normalized together: r~ = (r - mean) / (std + 1e-4), over all the group's steps.
2. A token takes the normalized score of the step its first character falls in (`advantage: step`),
   or the sum over that step and every later step of its completion (`advantage: to_go`, as in
   DeepSeekMath's process supervision). A token before the first step takes the first step's; one
   after the last step (the end-of-text token, trailing spaces) the last step's; a completion with no
   step gets 0.
3. `both`: the outcome advantage (per completion) + `process.weight` x the process advantage.

Step scores are logged per position (`process/step_K`), so a report can show where bad steps sit.
Nothing else changes: the loss, the KL anchor, the monitors and the detectors are TRL's and tether's.
"""

from __future__ import annotations

import numpy as np


def group_advantages(steps: list[list[dict]], group: int, mode: str = "step") -> list[list[float]]:
    """Per completion, per step: the advantage of that step's tokens (see the module docstring)."""
    out = []
    for g in range(0, len(steps), group):
        members = steps[g:g + group]
        scores = np.array([s["score"] for m in members for s in m], dtype=float)
        mean, std = (scores.mean(), scores.std()) if len(scores) else (0.0, 0.0)
        for m in members:
            normal = [(s["score"] - mean) / (std + 1e-4) for s in m]
            out.append([float(sum(normal[k:])) for k in range(len(normal))] if mode == "to_go" else normal)
    return out


def token_steps(tokenizer, ids: list[int], steps: list[dict]) -> list[int]:
    """The step index of each token (-1: the completion has no step), from each token's first character
    in the decoded completion (decoded as TRL decodes it: special tokens skipped)."""
    if not steps:
        return [-1] * len(ids)
    out, ends = [], [s["end"] for s in steps]
    for j in range(len(ids)):
        first = len(tokenizer.decode(ids[:j], skip_special_tokens=True))
        out.append(next((k for k, end in enumerate(ends) if first < end), len(steps) - 1))
    return out


def with_process(trainer_cls, reward_mode: str, terms: list) -> tuple[type, dict]:
    """(the trainer class, its extra arguments): TRL's own for `outcome`, the process subclass otherwise."""
    if reward_mode == "outcome":
        return trainer_cls, {}
    reward = next(t.function for t in terms if t.name == "process")
    return make_process_trainer(trainer_cls), {"process_reward": reward, "reward_mode": reward_mode}


def make_process_trainer(base_cls):
    """A subclass of TRL's GRPOTrainer whose advantages come (also) from `process_reward`'s step scores."""

    class ProcessGRPOTrainer(base_cls):
        def __init__(self, *args, process_reward, reward_mode: str, **kwargs):
            super().__init__(*args, **kwargs)
            self.process_reward, self.reward_mode = process_reward, reward_mode

        def _generate_and_score_completions(self, inputs):
            import torch
            from accelerate.utils import gather_object

            output = super()._generate_and_score_completions(inputs)
            config = self.process_reward.config
            steps = gather_object(list(self.process_reward.last_steps))  # every process's, for the groups
            advantages = group_advantages(steps, self.num_generations, config.advantage)
            local = len(self.process_reward.last_steps)
            mine = advantages[self.accelerator.process_index * local:(self.accelerator.process_index + 1) * local]
            mine_steps = steps[self.accelerator.process_index * local:(self.accelerator.process_index + 1) * local]
            ids, mask = output["completion_ids"], output["completion_mask"]
            per_token = torch.zeros(ids.shape, dtype=torch.float32, device=ids.device)
            for i, (row, adv) in enumerate(zip(ids.tolist(), mine)):
                n = int(mask[i].sum())
                index = token_steps(self.processing_class, row[:n], mine_steps[i])
                per_token[i, :n] = torch.tensor([adv[k] if k >= 0 else 0.0 for k in index], dtype=torch.float32)
            outcome = output["advantages"]
            output["advantages"] = (outcome.unsqueeze(1) + config.weight * per_token if self.reward_mode == "both"
                                    else per_token)
            self._log_positions(steps)
            return output

        def _log_positions(self, steps: list[list[dict]]) -> None:
            mode = "train" if self.model.training else "eval"
            for k in range(max((len(s) for s in steps), default=0)):
                values = [s[k]["score"] for s in steps if len(s) > k]
                self._metrics[mode][f"process/step_{k + 1}"].append(float(np.mean(values)))

    return ProcessGRPOTrainer
