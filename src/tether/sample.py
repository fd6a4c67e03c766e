"""`tether sample`: extend a corpus by rejection sampling against the constitution.

    tether sample examples/sample_cheerful.yaml              # sample, or continue after a crash
    tether sample examples/sample_cheerful.yaml --set search=tree --set output_dir=corpus/tree

For each prompt: draw N candidates from the policy, judge them (prompt followed by
completion, as `tether score` does), run the monitors, and decide which are kept
(`tether.selection`). Two ways to draw them at the same generation budget:

- independent: N whole completions (best-of-N / rejection sampling);
- tree (as MiniHF's weave): grow branches `tree_chunk_tokens` at a time; after each round
  the judge scores every partial branch and `tree_width` of them are kept by *sampling*
  softmax(score / tree_temperature) without replacement, so the search leans toward good
  branches without collapsing onto one; each kept branch gets N / tree_width children.

Each prompt's group is appended to candidates.jsonl (fsynced) as soon as it is judged, and
sampling is seeded per prompt, so a rerun after a crash continues at the first unfinished
prompt and draws what an uninterrupted run would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from tether import progress
from tether.constitution import load_constitution
from tether.corpus import CorpusDir
from tether.corpus_summary import write_summary
from tether.errors import TetherError
from tether.evaluator import Evaluator
from tether.models import load_causal_lm
from tether.sample_config import SampleConfig
from tether.selection import decide, monitor_values
from tether.texts import read_prompts
from tether.tokens import SafeTokenizer

if TYPE_CHECKING:
    from tether.tune_config import TuneConfig


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
        ids = torch.tensor([prompt_ids + branch.ids]).repeat(n, 1)
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


def tree_search(gen: Generator, judge, prompt: str, n: int, max_tokens: int, chunk: int, width: int,
                temperature: float, rng: np.random.Generator) -> list[str]:
    """Weave-style search: N leaves at the generation budget of N whole completions.

    Each round every kept branch gets n / width children of `chunk` more tokens (the root
    gets all n), the judge scores them as prompt + partial text, and `width` are kept by
    sampling without replacement with probability softmax(score / temperature). A branch
    that ended is carried forward as it is. The last round's children are the leaves.
    """
    prompt_ids = gen.prompt_ids(prompt)
    frontier, children = [Branch([])], []
    for start in range(0, max_tokens, chunk):
        tokens, per_branch = min(chunk, max_tokens - start), n // len(frontier)
        children = [child for b in frontier for child in
                    ([b] if b.finished else gen.extend(prompt_ids, b, per_branch, tokens))]
        totals = judge([prompt + gen.text(c) for c in children])
        for child, total in zip(children, totals):
            child.score = float(total)
        if start + chunk >= max_tokens:
            break
        weights = np.exp((np.array([c.score for c in children]) - max(c.score for c in children)) / temperature)
        keep = rng.choice(len(children), size=min(width, len(children)), replace=False, p=weights / weights.sum())
        frontier = [children[i] for i in sorted(keep)]
    return [gen.text(c) for c in children]


class Judges:
    """The constitution (and the optional gold judge) applied to prompt + completion.

    `config` is a sample or a tune config: both name judge_model, gold_constitution,
    gold_model, gold_debias and judge_batch_size.
    """

    def __init__(self, config: SampleConfig | TuneConfig, constitution):
        model, tokenizer = load_causal_lm(config.judge_model)
        self.judge = Evaluator(model, constitution, tokenizer=tokenizer, batch_size=config.judge_batch_size)
        self.gold = None
        if config.gold_constitution is not None:
            if config.gold_model not in (None, config.judge_model):
                model, tokenizer = load_causal_lm(config.gold_model)
            self.gold = Evaluator(model, config.gold_constitution, tokenizer=tokenizer, debias=config.gold_debias,
                                  batch_size=config.judge_batch_size)

    def totals(self, texts: list[str]) -> np.ndarray:
        return self.judge.score(texts).total()

    def records(self, prompt: str, completions: list[str]) -> list[dict]:
        texts = [prompt + c for c in completions]
        result = self.judge.score(texts)
        rows = [{"total": round(float(t), 4), "scores": dict(zip(result.names, np.round(s, 4).tolist()))}
                for t, s in zip(result.total(), result.scores())]
        if self.gold is not None:
            gold = self.gold.score(texts)
            for row, t, s in zip(rows, gold.total(), gold.scores()):
                row["gold_total"], row["gold_scores"] = round(float(t), 4), dict(zip(gold.names, np.round(s, 4).tolist()))
        return rows


def load_policy(config: SampleConfig):
    model, tokenizer = load_causal_lm(config.policy_model)
    if config.adapter is not None:
        from peft import PeftModel

        if not (config.adapter / "adapter_config.json").exists():
            raise TetherError(f"{config.adapter}: no LoRA adapter here (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, str(config.adapter)).merge_and_unload()
    return model.eval(), tokenizer


def draw(config: SampleConfig, gen: Generator, judges: Judges, prompt: str, n: int, seed: int) -> list[str]:
    """n candidate completions for one prompt, by the configured search."""
    torch.manual_seed(seed)
    if config.search == "tree":
        return tree_search(gen, judges.totals, prompt, n, config.max_completion_tokens, config.tree_chunk_tokens,
                           config.tree_width, config.tree_temperature, np.random.default_rng(seed))
    return independent(gen, prompt, n, config.max_completion_tokens)


def run_sample(config: SampleConfig, *, force: bool = False) -> CorpusDir:
    constitution = load_constitution(config.constitution)
    unknown = set(config.principle_thresholds) - {p.name for p in constitution.principles}
    if unknown:
        raise TetherError(f"principle_thresholds: no principle {', '.join(sorted(unknown))} in {config.constitution}")
    if config.search == "tree" and config.completions_per_prompt % config.tree_width:
        raise TetherError(f"tree search: completions_per_prompt ({config.completions_per_prompt}) must be a multiple "
                          f"of tree_width ({config.tree_width})")
    prompts = read_prompts(config.prompts)
    corpus = CorpusDir(config.output_dir)
    resuming = corpus.start(config.model_dump(mode="json"), constitution, config.constitution, force)

    groups: dict[int, list[dict]] = {}
    for c in corpus.candidates():
        groups.setdefault(c["prompt_index"], []).append(c)
    for i, group in groups.items():
        if i >= len(prompts) or group[0]["prompt"] != prompts[i]:
            raise TetherError(f"{config.prompts}: prompt {i + 1} differs from the one this corpus was sampled with; "
                              f"pass --force to start over")
    todo = [i for i in range(len(prompts)) if len(groups.get(i, [])) < config.completions_per_prompt]
    if resuming:
        progress.console.print(f"continuing {corpus.path}: {len(prompts) - len(todo)} of {len(prompts)} prompts done")

    if todo:
        policy, tokenizer = load_policy(config)
        gen = Generator(policy, tokenizer, temperature=config.temperature,
                        suppress_special_tokens=config.suppress_special_tokens)
        judges = Judges(config, constitution)
        for i in progress.track(todo, "Sampling", total=len(todo)):
            existing = groups.get(i, [])
            # The whole group is drawn again from its seed; only the draws not yet written are kept.
            completions = draw(config, gen, judges, prompts[i], config.completions_per_prompt,
                               config.seed * 100_003 + i)[len(existing):]
            new = [{"id": f"p{i}-s{len(existing) + k}", "prompt_index": i, "sample_index": len(existing) + k,
                    "prompt": prompts[i], "completion": text, "search": config.search, **scores,
                    "monitors": monitor_values(text)}
                   for k, (text, scores) in enumerate(zip(completions, judges.records(prompts[i], completions)))]
            group = decide(existing + new, config)
            if existing:
                corpus.replace_group(i, group)
            else:
                corpus.append_candidates(group)
    corpus.rebuild()
    write_summary(corpus, config)
    return corpus

