"""`tether sample`: extend a corpus by rejection sampling against the constitution.

    tether sample examples/sample_cheerful.yaml              # sample, or continue after a crash
    tether sample examples/sample_cheerful.yaml --set search=tree --set output_dir=corpus/tree

For each prompt: draw N candidates from the policy, judge them (prompt followed by
completion, as `tether score` does), run the monitors, and decide which are kept
(`tether.corpus.selection`). A conversation prompt goes through the policy's chat template;
the judge and the corpus see it as "User: ...\n\nAssistant: " (its turns kept in `messages`).
Two ways to draw candidates at the same generation budget:

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

import numpy as np
import torch

from tether.corpus.config import SampleConfig
from tether.corpus.selection import decide, monitor_values
from tether.corpus.store import CorpusDir
from tether.corpus.summary import write_summary
from tether.errors import TetherError
from tether.infra import progress, threads
from tether.infra.generate import (
    Branch,
    Generator,
    check_chat_policy,
    independent,
    load_policy,
)
from tether.infra.models import check_adapter
from tether.infra.seeds import item_seed
from tether.infra.texts import Prompt, plain_text, read_prompts
from tether.judge.constitution import load_constitution
from tether.labels.gold_judge import check_gold
from tether.labels.judges import Judges, check_models


def tree_search(gen: Generator, judge, prompt: Prompt, n: int, max_tokens: int, chunk: int, width: int,
                temperature: float, rng: np.random.Generator) -> list[str]:
    """Weave-style search: exactly N leaves at the generation budget of N whole completions.

    Each round the kept branches have n children between them (the root all n): a branch
    that ended is carried forward as one child, and the open branches share the rest, as
    evenly as integers allow. The judge scores the children as prompt + partial text, and
    `width` are kept by sampling without replacement with probability softmax(score /
    temperature). The last round's children are the leaves. Exactly n, always: a rerun
    counts a prompt with fewer as unfinished and would draw it again every time.
    """
    prompt_ids, shown = gen.prompt_ids(prompt), plain_text(prompt)  # the judge reads a conversation with roles
    frontier, children = [Branch([])], []
    for start in range(0, max_tokens, chunk):
        tokens = min(chunk, max_tokens - start)
        children = [child for b, share in zip(frontier, shares(frontier, n)) for child in
                    ([b] * share if b.finished else gen.extend(prompt_ids, b, share, tokens) if share else [])]
        children = [Branch(list(c.ids), c.finished) for c in children]  # carried copies are branches of their own
        totals = judge([shown + gen.text(c) for c in children])
        for child, total in zip(children, totals):
            child.score = float(total)
        if start + chunk >= max_tokens:
            break
        weights = np.exp((np.array([c.score for c in children]) - max(c.score for c in children)) / temperature)
        keep = rng.choice(len(children), size=min(width, len(children)), replace=False, p=weights / weights.sum())
        frontier = [children[i] for i in sorted(keep)]
    assert len(children) == n, (len(children), n)
    return [gen.text(c) for c in children]


def shares(frontier: list[Branch], n: int) -> list[int]:
    """Children per frontier branch, summing to n: one for a finished branch (carried as it is), the rest
    split evenly over the open ones; when every branch has finished, they share all n as copies."""
    open_ = [i for i, b in enumerate(frontier) if not b.finished] or list(range(len(frontier)))
    out = [0 if i in open_ else 1 for i in range(len(frontier))]
    rest = n - sum(out)
    for k, i in enumerate(open_):
        out[i] = rest // len(open_) + (k < rest % len(open_))
    return out


def draw(config: SampleConfig, gen: Generator, judges: Judges, prompt: Prompt, n: int, seed: int) -> list[str]:
    """n candidate completions for one prompt, by the configured search."""
    torch.manual_seed(seed)
    if config.search == "tree":
        return tree_search(gen, judges.totals, prompt, n, config.max_completion_tokens, config.tree_chunk_tokens,
                           config.tree_width, config.tree_temperature, np.random.default_rng(seed))
    return independent(gen, prompt, n, config.max_completion_tokens)


def run_sample(config: SampleConfig, *, force: bool = False) -> CorpusDir:
    constitution = load_constitution(config.constitution)
    check_gold(config.gold_constitution, config.device)  # a missing or bad gold: refused before the corpus is started
    unknown = set(config.principle_thresholds) - {p.name for p in constitution.principles}
    if unknown:
        raise TetherError(f"principle_thresholds: no principle {', '.join(sorted(unknown))} in {config.constitution}")
    if config.search == "tree" and config.completions_per_prompt % config.tree_width:
        raise TetherError(f"tree search: completions_per_prompt ({config.completions_per_prompt}) must be a multiple "
                          f"of tree_width ({config.tree_width})")
    check_models(config)  # the policy's, judge's and gold's config.json, before any weights load
    if config.adapter is not None:
        check_adapter(config.adapter)
    prompts = read_prompts(config.prompts)
    check_chat_policy(config.policy_model, prompts, config.trust_remote_code)  # conversations need a chat template
    shown = [plain_text(p) for p in prompts]  # what the judge and the review page read
    corpus = CorpusDir(config.output_dir)
    job = config.model_dump(mode="json", exclude={"trust_remote_code"})  # a permission, not part of the corpus's job
    resuming = corpus.start(job, constitution, config.constitution, force)

    groups: dict[int, list[dict]] = {}
    for c in corpus.candidates():
        groups.setdefault(c["prompt_index"], []).append(c)
    for i, group in groups.items():
        if i >= len(prompts) or group[0]["prompt"] != shown[i]:
            raise TetherError(f"{config.prompts}: prompt {i + 1} differs from the one this corpus was sampled with; "
                              f"pass --force to start over")
    todo = [i for i in range(len(prompts)) if len(groups.get(i, [])) < config.completions_per_prompt]
    if resuming:
        progress.console.print(f"continuing {corpus.path}: {len(prompts) - len(todo)} of {len(prompts)} prompts done")

    if todo:
        policy, tokenizer = load_policy(config.policy_model, config.adapter, device=config.device, dtype=config.dtype,
                                        trust_remote_code=config.trust_remote_code)
        gen = Generator(policy, tokenizer, temperature=config.temperature,
                        suppress_special_tokens=config.suppress_special_tokens)
        judges = Judges(config, constitution)
        for i in progress.track(todo, "Sampling", total=len(todo)):
            threads.warn_once()  # one note if other work shares the cores (reads /proc at most once a minute)
            existing = groups.get(i, [])
            # The whole group is drawn again from its seed; only the draws not yet written are kept.
            completions = draw(config, gen, judges, prompts[i], config.completions_per_prompt,
                               item_seed(config.seed, i))[len(existing):]
            new = [{"id": f"p{i}-s{len(existing) + k}", "prompt_index": i, "sample_index": len(existing) + k,
                    "prompt": shown[i], **({"messages": prompts[i]} if isinstance(prompts[i], list) else {}),
                    "completion": text, "search": config.search, **scores, "monitors": monitor_values(text)}
                   for k, (text, scores) in enumerate(zip(completions, judges.records(shown[i], completions)))]
            group = decide(existing + new, config)
            if existing:
                corpus.replace_group(i, group)
            else:
                corpus.append_candidates(group)
    corpus.rebuild()
    with corpus.lock():  # under the lock, like every corpus file a kill may leave a temporary copy of
        write_summary(corpus, config)
    return corpus

