"""Embedding drift: how far the policy's completions have moved from the base model's.

The base model's completions for each prompt are sampled once, before training, and
cached in the run directory (`base_samples.jsonl`); the base does not change, so
resampling it every step, as the source text does, would only add cost and noise. Each
step, a completion's drift is the cosine distance between its embedding and the mean
embedding of the base completions for the same prompt. The base never reads the policy's
text, so it cannot normalise a deviant habit the way a token KL does. The base is sampled
on its model's device (`model.device`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tether.infra import jsonl, progress
from tether.infra.generate import prompt_ids
from tether.infra.models import embed
from tether.infra.texts import plain_text


def sample_base(model, tokenizer, prompts: Sequence, n: int, max_new_tokens: int, temperature: float,
                suppress: list[int] | None, seed: int) -> dict[str, list[str]]:
    """n completions per prompt from the untuned model, with the run's sampling settings; a conversation's
    through the chat template (as TRL prompts the policy), keyed by its rendered text."""
    torch.manual_seed(seed)
    out = {}
    unique = list({plain_text(p): p for p in prompts}.items())  # keyed as the monitors see a prompt: rendered
    for key, prompt in progress.track(unique, "Sampling the base model", total=len(unique)):
        ids = torch.tensor([prompt_ids(tokenizer, prompt)], device=model.device)
        with torch.inference_mode():
            generated = model.generate(
                ids.repeat(n, 1), attention_mask=torch.ones(n, ids.shape[1], dtype=torch.long, device=model.device),
                do_sample=True, top_k=0, top_p=1.0,  # as TRL samples the policy: transformers' default top_k 50
                # would draw the reference from a narrower distribution, and the shift test would fire on the difference
                temperature=temperature, max_new_tokens=max_new_tokens, suppress_tokens=suppress,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            )
        out[key] = tokenizer.batch_decode(generated[:, ids.shape[1]:], skip_special_tokens=True)
    return out


def save_base(path: Path, samples: dict[str, list[str]]) -> None:
    jsonl.rewrite(path, [{"prompt": p, "completions": c} for p, c in samples.items()])


class EmbeddingDrift:
    """Cosine distance of completions to the base completions' mean embedding, per prompt."""

    def __init__(self, embedder, base_samples: dict[str, list[str]]):
        self.embedder = embedder
        self.centres, self.base_vectors = {}, {}  # the vectors are kept for the shift test (watch/shift.py)
        self.last_vectors: np.ndarray | None = None  # the latest `distances` call's embeddings, reused likewise
        for prompt, completions in base_samples.items():
            self.base_vectors[prompt] = embed(embedder, completions)
            mean = self.base_vectors[prompt].mean(axis=0)
            self.centres[prompt] = mean / np.linalg.norm(mean)

    def distances(self, prompts: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        """(n,) cosine distances in [0, 2]; NaN for a prompt with no base samples."""
        vectors = self.last_vectors = embed(self.embedder, completions)
        return np.array([1 - float(v @ self.centres[p]) if p in self.centres else np.nan
                         for p, v in zip(prompts, vectors)])
