"""The gate a new version passes before it is served: its own samples on a fixed canary set.

The canary prompts are fixed for the deployment's life (`canary`, or the first 8
distinct prompts it served, frozen at the first update in `canary.jsonl`), and the base's
samples on them are drawn once (`canary_base.jsonl`), so every version is read against the
same yardstick. A candidate fails when, on its canary samples:

- a text monitor breaks its limit (`detectors`: yes-spam, special tokens, repetition, loops);
- its mean embedding drift from the base's samples passes `gate.max_drift`;
- the gold (`gold`, a fitted gold or a constitution) falls more than `gate.max_gold_drop` below the base's;
- a word or mark is far more frequent than in the base's samples (`habit`, watch/lexical.py).

It also records what a person reads later: the judge's and gold's means beside the base's
and the serving version's, the drift from the serving version, and the judge's gameability
audit on these very samples (`judge/audit.run_audit`; recorded, never blocking: a gameable
judge is a fact about the judge, not the candidate).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tether.deploy.config import DeployConfig
from tether.deploy.store import CANARY, CANARY_BASE, Store
from tether.infra import jsonl
from tether.infra.texts import plain_text, read_prompts
from tether.watch.metrics import batch_values, trips


def canary_prompts(config: DeployConfig, store: Store) -> list:
    """The fixed canary prompts: the config's file, else the first 8 distinct served prompts, frozen once."""
    frozen = store.path / CANARY
    if frozen.is_file():
        return [row["prompt"] for row in jsonl.read(frozen)]
    if config.canary is not None:
        prompts = list(read_prompts(config.canary))
    else:
        seen: dict[str, object] = {}
        for row in store.interactions():
            seen.setdefault(plain_text(row["prompt"]), row["prompt"])
            if len(seen) == 8:
                break
        prompts = list(seen.values())
    jsonl.rewrite(frozen, [{"prompt": p} for p in prompts])
    return prompts


def sample(model, tokenizer, prompts: list, draws: int, max_tokens: int, seed: int) -> list[dict]:
    """`draws` completions of each prompt, seeded, the serving generator's way (untrusted text stays text)."""
    from tether.deploy.policy import Loaded, encode_prompt
    from tether.infra.generate import Branch, Generator
    from tether.infra.tokens import SafeTokenizer

    gen = Generator(model, tokenizer, temperature=1.0)
    loaded = Loaded("gate", model, tokenizer, gen, SafeTokenizer(tokenizer))
    torch.manual_seed(seed)
    rows = []
    for prompt in prompts:
        branches = gen.extend(encode_prompt(loaded, prompt), Branch([]), draws, max_tokens)
        rows.append({"prompt": prompt, "completions": [gen.text(b) for b in branches]})
    return rows


def base_samples(config: DeployConfig, store: Store, prompts: list, loader) -> list[dict]:
    """The base's canary samples, drawn once for the deployment (v0 as configured)."""
    path = store.path / CANARY_BASE
    if path.is_file():
        return jsonl.read(path)
    model, tokenizer = loader("v0")
    rows = sample(model, tokenizer, prompts, config.gate.draws, config.learn.max_completion_tokens, config.seed)
    jsonl.rewrite(path, rows)
    return rows


def run_gate(config: DeployConfig, store: Store, candidate: tuple, parent: str, judge, embedder, gold,
             loader, out: Path) -> dict:
    """The gate's verdict on a candidate (model, tokenizer): {passed, reasons, metrics}; canary.jsonl written to `out`."""
    prompts = canary_prompts(config, store)
    base = base_samples(config, store, prompts, loader)
    rows = sample(*candidate, prompts, config.gate.draws, config.learn.max_completion_tokens, config.seed)
    jsonl.rewrite(out / "canary.jsonl", rows)
    parent_file = store.version_dir(parent) / "canary.jsonl"
    serving = jsonl.read(parent_file) if parent_file.is_file() else base

    def flat(samples):
        return [r["prompt"] for r in samples for _ in r["completions"]], [c for r in samples for c in r["completions"]]

    p, texts = flat(rows)
    bp, btexts = flat(base)
    metrics: dict = {"canary_prompts": len(prompts), "canary_texts": len(texts), **batch_values(texts)}
    reasons = []
    if config.gate.monitors:
        reasons += [f"monitor {t.reason()}" for t in trips(metrics, config.detectors.limits())]
    if config.gate.habit:
        from tether.watch.lexical import lexical_shift

        shifts = lexical_shift(texts, btexts, config.habit_alpha, config.habit_min_ratio)
        reasons += [f"habit {s.token!r} at {s.rate:.3f} a token (base {s.base_rate:.3f})" for s in shifts[:2]]
    judged = lambda ps, ts: judge.score([plain_text(a) + b for a, b in zip(ps, ts)]).total()  # noqa: E731
    metrics["judge"] = float(np.mean(judged(p, texts)))
    metrics["judge_base"] = float(np.mean(judged(bp, btexts)))
    if embedder is not None:
        from tether.watch.drift import EmbeddingDrift

        keys = [plain_text(x) for x in p]
        from_base = EmbeddingDrift(embedder, {plain_text(r["prompt"]): r["completions"] for r in base})
        from_serving = EmbeddingDrift(embedder, {plain_text(r["prompt"]): r["completions"] for r in serving})
        metrics["drift_base"] = float(np.nanmean(from_base.distances(keys, texts)))
        metrics["drift_serving"] = float(np.nanmean(from_serving.distances(keys, texts)))
        if metrics["drift_base"] > config.gate.max_drift:
            reasons.append(f"drift from the base {metrics['drift_base']:.3f} > {config.gate.max_drift}")
    if gold is not None:
        metrics["gold"] = float(np.mean(gold.score([plain_text(x) for x in p], texts)))
        metrics["gold_base"] = float(np.mean(gold.score([plain_text(x) for x in bp], btexts)))
        if metrics["gold_base"] - metrics["gold"] > config.gate.max_gold_drop:
            reasons.append(f"gold fell {metrics['gold_base'] - metrics['gold']:.2f} below the base's "
                           f"(limit {config.gate.max_gold_drop})")
    audit = None
    if config.gate.audit:
        audit = _audit(config, judge, p, texts)
    return {"passed": not reasons, "reasons": reasons, "metrics": metrics, "audit": audit}


def _audit(config: DeployConfig, judge, prompts: list, texts: list[str]) -> dict:
    """The judge's gameability audit on the candidate's own samples (needs the negated questions asked)."""
    from tether.judge.audit import run_audit
    from tether.judge.evaluator import Evaluator

    asking = Evaluator(judge.model, judge.constitution, tokenizer=judge.tokenizer, with_negations=True)
    report = run_audit(asking, texts, prompts=[plain_text(x) for x in prompts])
    return {"verdict": report.verdict(), "exploitable": {m: report.exploitable(m) for m in ("plain", "debiased")}}
