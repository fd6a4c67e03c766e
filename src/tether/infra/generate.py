"""Sampling from a policy: continuations of a prompt, special and unused tokens suppressed.

One generator serves the corpus sampler (independent draws and tree search), sft's held-out
evaluation and the blend sweep; `load_policy` loads a model with an optional LoRA adapter.
The prompt ids go to `model.device`, wherever the model is (a trainer may have moved it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tether.infra.models import load_adapter, load_causal_lm
from tether.judge.tokens import SafeTokenizer


@dataclass
class Branch:
    ids: list[int]  # completion tokens so far
    finished: bool = False  # ended with end-of-text
    score: float = 0.0


class Generator:
    """Samples continuations of a prompt, with special and unused tokens suppressed."""

    def __init__(self, model, tokenizer, *, temperature: float, suppress_special_tokens: bool = True):
        self.model, self.tokenizer, self.temperature = model, tokenizer, temperature
        eos = model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
        self.eos.discard(None)
        self.suppress = sorted(SafeTokenizer(tokenizer).control_ids - self.eos) if suppress_special_tokens else None
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.generated_tokens = 0  # the generation budget spent, for comparisons

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt)["input_ids"]

    @torch.inference_mode()
    def extend(self, prompt_ids: list[int], branch: Branch, n: int, tokens: int) -> list[Branch]:
        """n children of a branch, each up to `tokens` tokens longer."""
        ids = torch.tensor([prompt_ids + branch.ids], device=self.model.device).repeat(n, 1)
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=self.temperature,
                                  top_k=0, top_p=1.0, max_new_tokens=tokens, suppress_tokens=self.suppress,
                                  pad_token_id=self.pad)
        children = []
        for row in out[:, ids.shape[1]:].tolist():
            stop = next((i for i, t in enumerate(row) if t in self.eos), None)
            new = row if stop is None else row[:stop]
            self.generated_tokens += len(new) + (stop is not None)
            children.append(Branch(branch.ids + new, finished=stop is not None))
        return children

    def text(self, branch: Branch) -> str:
        return self.tokenizer.decode(branch.ids, skip_special_tokens=True)


def independent(gen: Generator, prompt: str, n: int, max_tokens: int) -> list[str]:
    """N whole completions."""
    return [gen.text(b) for b in gen.extend(gen.prompt_ids(prompt), Branch([]), n, max_tokens)]


def load_policy(policy_model: str, adapter: Path | None = None, *, device: str = "auto", dtype: str = "float32"):
    model, tokenizer = load_causal_lm(policy_model, device=device, dtype=dtype)
    if adapter is not None:
        model = load_adapter(model, adapter).merge_and_unload()
    return model.eval(), tokenizer
