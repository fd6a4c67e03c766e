"""The baselines a user tries before tuning, evaluated exactly as a tuned run is.

    prompted:   {kind: prompted, instruction: "Here is a happy, cheerful story."}
    best_of_16: {kind: best_of_n, n: 16, reward_of: recipe}

Each samples the base model (or `model: ARM`, that arm's final model of the same seed) on the
held-out prompts with the experiment's sampling seed before each prompt, as the sweep samples a
tuned run, and is judged by the same judges and golds on (prompt, completion): the instruction a
prompted arm was given is never shown to a judge, gold or reader.

- prompted: the instruction, a space, then the prompt. Its KL from the base is measured exactly:
  KL(p(. | instruction, prompt, y<t) || base(. | prompt, y<t)) summed over the completion's positions.
- best_of_n: n draws per evaluated text, the one kept that `reward_of`'s reward (rewards/paid.py:
  that arm's terms, weights and shape) scores highest. Its KL from the sampled model is at most
  log n - (n - 1)/n per completion (the standard bound; recorded as `kl_bound`), plus the sampled
  model's own KL when it is an arm.

Every evaluated text also records its inference cost: tokens generated and texts judged for it.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import torch

from tether.experiment.config import ExperimentConfig
from tether.infra import atomic, progress


class _Base:
    """The base model where the sweep expects a blend: it is its own reference."""

    alpha = 0.0

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    @contextlib.contextmanager
    def base(self):
        yield self.model


def shown_prompt(instruction: str | None, prompt):
    """What the model is given: the instruction before the prompt (in a conversation: before the first user turn)."""
    if not instruction:
        return prompt
    if isinstance(prompt, str):
        return f"{instruction.strip()} {prompt}"
    first = next(i for i, m in enumerate(prompt) if m["role"] == "user")
    return [*prompt[:first], {**prompt[first], "content": f"{instruction.strip()} {prompt[first]['content']}"},
            *prompt[first + 1:]]


@torch.inference_mode()
def prompted_kl(policy, prompted_ids: list[int], plain_ids: list[int], branches) -> list[float]:
    """Per completion: sum over its positions of KL(policy | instruction + prompt || base | prompt)."""
    out = []
    for b in branches:
        positions = len(b.ids) + b.finished
        p = _logprobs(policy.model, prompted_ids, b.ids, positions)
        with policy.base() as base:
            q = _logprobs(base, plain_ids, b.ids, positions)
        out.append(float((p.exp() * (p - q)).sum()))
    return out


def _logprobs(model, prefix: list[int], ids: list[int], positions: int) -> torch.Tensor:
    """log p(. | prefix, ids[:t]) for t in 0..positions-1: the distributions that predicted the completion."""
    row = torch.tensor([prefix + ids], device=model.device)
    logits = model(input_ids=row, attention_mask=torch.ones_like(row)).logits[0].float()
    return torch.log_softmax(logits[len(prefix) - 1 : len(prefix) - 1 + positions], dim=-1)


def evaluate_baseline(config: ExperimentConfig, arm: str, seed: int, out: Path) -> dict:
    """Sample, pick and judge a baseline arm; writes out/samples.jsonl and out/result.json as `evaluate` does."""
    from tether.defenses.blend import Blend, find_tuned
    from tether.defenses.sweep import drift_reference, score_drawn, train_judge
    from tether.experiment.config import tune_config
    from tether.experiment.evaluate import MEASURES, gold_key, score_golds
    from tether.infra.generate import Generator
    from tether.infra.models import load_causal_lm
    from tether.infra.texts import plain_text, read_prompts
    from tether.labels.judges import Judges
    from tether.rewards.paid import load_reward

    choice = config.arms[arm]
    settings = tune_config(config, arm, seed).model_copy(update={"seed": config.eval_seed})
    reward = None
    if choice.kind == "best_of_n":
        paid = tune_config(config, choice.reward_of, seed) if choice.reward_of else settings
        reward = load_reward(paid, f"arm {arm}: reward_of: {choice.reward_of or config.tune}")
    if choice.model == "base":
        policy = _Base(*load_causal_lm(settings.policy_model, device=settings.device,
                                       trust_remote_code=settings.trust_remote_code, fast_head=True))
    else:
        policy = Blend(find_tuned(config.run_dir(choice.model, seed)), settings.policy_model, settings.device,
                       settings.trust_remote_code)
    gen = Generator(policy.model, policy.tokenizer, temperature=settings.temperature,
                    suppress_special_tokens=settings.suppress_special_tokens)
    prompts = list({plain_text(p): p for p in read_prompts(config.eval_prompts)}.values())
    _share_base_samples(config, out)
    drift = drift_reference(settings, policy, gen, prompts, out)
    drawn = []
    for i, prompt in enumerate(progress.track(prompts, f"{arm}: sampling", total=len(prompts))):
        drawn += _draw(config, choice, policy, gen, settings, reward, i, prompt)
    judges = Judges(settings, settings.constitution)
    row = score_drawn(drawn, settings, judges, drift, train_judge(settings, judges))
    score_golds(config, settings, drawn)
    for i, d in enumerate(drawn):
        d["draw"] = i
    atomic.write_records(out / "samples.jsonl", drawn)
    result = {k: row[k] for k in MEASURES if k in row}
    result.update({gold_key(g): float(np.mean([d[gold_key(g)] for d in drawn])) for g in config.golds})
    result.update({"alpha": None, "samples": len(drawn), "model": choice.model, "kind": choice.kind,
                   **_inference_cost(choice, drawn)})
    atomic.write_json(out / "result.json", result)
    return result


def _draw(config, choice, policy, gen, settings, reward, index: int, prompt) -> list[dict]:
    """One prompt's evaluated texts: `eval_completions` of them, each the best of n draws for best_of_n."""
    from tether.defenses.sweep import token_kl
    from tether.infra.generate import Branch
    from tether.infra.seeds import item_seed
    from tether.infra.texts import plain_text

    n = choice.n or 1
    torch.manual_seed(item_seed(config.eval_seed, index))
    plain_ids = gen.prompt_ids(prompt)
    ids = gen.prompt_ids(shown_prompt(choice.instruction, prompt))
    branches = gen.extend(ids, Branch([]), config.eval_completions * n, settings.max_completion_tokens)
    texts = [gen.text(b) for b in branches]
    shown = plain_text(prompt)
    scores = reward([shown] * len(texts), texts) if reward is not None else np.zeros(len(texts))
    kept = [g * n + int(np.argmax(scores[g * n:(g + 1) * n])) for g in range(config.eval_completions)]
    chosen = [branches[k] for k in kept]
    if choice.instruction:
        kls = prompted_kl(policy, ids, plain_ids, chosen)
    elif isinstance(policy, _Base):
        kls = [0.0] * len(chosen)
    else:  # an arm's model: its own KL, per completion
        kls = [kl * (len(b.ids) + b.finished) for b, kl in zip(chosen, token_kl(policy, ids, chosen))]
    out = []
    for k, b, kl in zip(kept, chosen, kls):
        positions = max(len(b.ids) + b.finished, 1)
        record = {"alpha": None, "prompt_index": index, "prompt": shown, "completion": texts[k], "kl": kl / positions,
                  "kl_completion": kl, "tokens": len(b.ids)}
        if reward is not None:
            group = scores[(k // n) * n:(k // n + 1) * n]
            record.update({"reward": float(scores[k]), "reward_of_n": [round(float(s), 4) for s in group],
                           "kl_bound": math.log(n) - (n - 1) / n,
                           "tokens_drawn": sum(len(x.ids) for x in branches[(k // n) * n:(k // n + 1) * n])})
        out.append(record)
    return out


def _share_base_samples(config: ExperimentConfig, out: Path) -> None:
    """The drift reference the tuned runs use (OUTPUT_DIR/base/base_samples.jsonl), when it exists."""
    import shutil

    shared = config.output_dir / "base" / "base_samples.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    if shared.exists() and not (out / "base_samples.jsonl").exists():
        shutil.copyfile(shared, out / "base_samples.jsonl")


def _inference_cost(choice, drawn: list[dict]) -> dict:
    """Per evaluated text: tokens generated and texts judged to produce it; best-of-n's KL bound."""
    n = choice.n or 1
    tokens = np.mean([d.get("tokens_drawn", d["tokens"]) for d in drawn])
    cost = {"inference_tokens": float(tokens), "inference_judged": n if choice.kind == "best_of_n" else 0,
            "train_steps": 0, "train_tokens": 0, "train_seconds": 0.0}
    if choice.kind == "best_of_n":
        cost["kl_bound"] = math.log(n) - (n - 1) / n
    return cost
