"""Sampling from a policy: continuations of a prompt, special and unused tokens suppressed.

One generator serves the corpus sampler (independent draws and tree search), sft's held-out
evaluation and the blend sweep; `load_policy` loads a model with an optional LoRA adapter.
The prompt ids go to `model.device`, wherever the model is (a trainer may have moved it).
A prompt is text, or a conversation (a list of {role, content}) put through the policy's chat
template with the assistant's turn opened, as TRL does for conversational datasets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tether.errors import TetherError
from tether.infra.models import EMBEDDED_LM, load_adapter, load_causal_lm
from tether.infra.tokens import SafeTokenizer


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

    def prompt_ids(self, prompt: str | list[dict]) -> list[int]:
        return prompt_ids(self.tokenizer, prompt)

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


def prompt_ids(tokenizer, prompt: str | list[dict]) -> list[int]:
    """A prompt's ids for the policy: a conversation through its chat template, opening the assistant's turn."""
    if isinstance(prompt, str):
        return tokenizer(prompt)["input_ids"]
    if not tokenizer.chat_template:
        raise TetherError(no_chat_template(getattr(tokenizer, "name_or_path", "the policy")))
    return list(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])


def no_chat_template(policy: str) -> str:
    return (f"conversational prompts (`messages`) need a policy with a chat template, and {policy}'s tokenizer has "
            f"none; use an instruct (chat) model, or plain-text prompts")


def check_chat_policy(policy_model: str, prompts: list, trust_remote_code: bool = False) -> None:
    """Conversational prompts need the policy's chat template: checked on its tokenizer alone, before a
    run or corpus directory is written or a model loads."""
    if not any(isinstance(p, list) for p in prompts):
        return
    from transformers import AutoTokenizer

    from tether.infra.models import _offline_first, embedded_gemma_dir

    source = str(embedded_gemma_dir()) if policy_model == EMBEDDED_LM else policy_model
    kwargs = {"trust_remote_code": trust_remote_code}
    if not _offline_first(AutoTokenizer.from_pretrained, source, policy_model, kwargs).chat_template:
        raise TetherError(no_chat_template(policy_model))


def independent(gen: Generator, prompt: str | list[dict], n: int, max_tokens: int) -> list[str]:
    """N whole completions."""
    return [gen.text(b) for b in gen.extend(gen.prompt_ids(prompt), Branch([]), n, max_tokens)]


def load_policy(policy_model: str, adapter: Path | None = None, *, device: str = "auto", dtype: str = "float32",
                trust_remote_code: bool = False):
    model, tokenizer = load_causal_lm(policy_model, device=device, dtype=dtype, trust_remote_code=trust_remote_code, fast_head=True)
    if adapter is not None:
        model = load_adapter(model, adapter).merge_and_unload()
    return model.eval(), tokenizer
