"""Latent steering, measured: the trade-off curve of each method over context x passage pairs.

    # the reduced run of docs/results.md ("Latent steering"): 20 pairs, 1 sample, 32 tokens
    python benchmarks/steer_bench.py generate --out bench/steer --alphas 0.1,0.2,0.3 --candidates 2,4 --max-tokens 32
    python benchmarks/steer_bench.py score --out bench/steer --gold golds/on_task --labels bench/steer/read.jsonl
    # full size: more samples and tokens, more strengths
    python benchmarks/steer_bench.py generate --out bench/steer-full --samples 4 --max-tokens 48 \
        --alphas 0.05,0.1,0.15,0.2,0.3,0.4 --candidates 2,4,8

`generate` appends one row per (pair, method, strength, sample) to OUT/generations.jsonl
(fsynced), and skips rows already there: it can be stopped and rerun, and the points done so
far are scored. Strength 0 is the unsteered policy, the same draws for both methods (a
method at α = 0 is identical to it, tests/test_steer.py). `score` measures every row:

- similarity: MiniLM cosine of the continuation to the passage;
- sentiment agreement: the cheerful judge's debiased log-odds of the continuation alone,
  signed by the passage's mood (+ for a happy passage, - for a sad one), and the share of
  continuations whose sign matches the passage's own score;
- fluency: the base model's perplexity of the continuation given the context;
- person: the share of continuations that slip into the first person (I, me, my...) of the
  passage while the context is in the third (every context here is); with --gold, the
  person-anchored gold judge's on-task log-odds (prompt = context; fit one with `tether gold fit
  examples/labels/cheerful_labels.jsonl --label on_task --features minilm --out golds/on_task`);
  with --labels, a person's yes/no "stays in the context's person and story", read before scoring.

It writes OUT/scores.jsonl and prints, per method and strength, the means: the table of
docs/results.md. The judge is the embedded Gemma, the same weights as the policy, loaded once.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

import numpy as np
import torch

from tether.infra import jsonl

FIRST_PERSON = re.compile(r"\b(I|me|my|mine|myself|we|us|our)\b")
HERE = Path(__file__).resolve().parent.parent


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def grid(args) -> list[tuple[str, float]]:
    return ([("none", 0.0)] + [("add", a) for a in floats(args.alphas) if a]
            + [("guide", float(k)) for k in floats(args.candidates) if k > 1])


def generate(args) -> None:
    from tether.steer.steerer import Steerer

    out = Path(args.out) / "generations.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["id"], r["method"], r["strength"]) for r in jsonl.read(out)}
    pairs = jsonl.read(args.pairs, missing_ok=False)[: args.pairs_limit]
    steerer = Steerer.load(args.model, device=args.device, temperature=args.temperature)
    layer = args.layer
    for pair in pairs:
        for method, strength in grid(args):
            if (pair["id"], method, strength) in done:
                continue
            start = time.perf_counter()
            common = {"n": args.samples, "max_tokens": args.max_tokens, "seed": args.seed}
            if method == "none":
                texts = steerer.unsteered(pair["context"], **common)
            elif method == "add":
                texts = steerer.add(pair["context"], pair["passage"], alpha=strength, layer=layer, **common)
            else:
                texts = steerer.guide(pair["context"], pair["passage"], candidates=int(strength),
                                      chunk_tokens=args.chunk_tokens, **common)
            seconds = time.perf_counter() - start
            jsonl.append(out, [{"id": pair["id"], "method": method, "strength": strength, "sample": i, "text": t,
                                "layer": layer, "seconds": seconds / len(texts)} for i, t in enumerate(texts)])
            print(f"{pair['id']:16} {method:5} {strength:<5} {seconds:5.1f}s | {texts[0][:90]!r}", flush=True)


@torch.inference_mode()
def perplexity(model, tokenizer, context: str, continuation: str) -> float:
    """exp(mean NLL) of the continuation's tokens given the context, under the unsteered model."""
    ctx = tokenizer(context)["input_ids"]
    ids = tokenizer(context + continuation)["input_ids"]
    if len(ids) <= len(ctx):
        return float("nan")
    x = torch.tensor([ids], device=model.device)
    logits = model(input_ids=x).logits[0, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="none")[len(ctx) - 1:]
    return float(nll.mean().exp())


def score(args) -> None:
    from tether.infra.generate import load_policy
    from tether.infra.models import embed, load_embedder
    from tether.judge.evaluator import Evaluator

    rows = jsonl.read(Path(args.out) / "generations.jsonl", missing_ok=False)
    pairs = {p["id"]: p for p in jsonl.read(args.pairs, missing_ok=False)}
    model, tokenizer = load_policy(args.model, device=args.device)
    embedder = load_embedder(device=args.device)
    judge = Evaluator(model, str(HERE / "examples/cheerful.yaml"), tokenizer=tokenizer, debias=True)
    texts = [r["text"] for r in rows]
    passages = [pairs[r["id"]]["passage"] for r in rows]
    sims = np.sum(embed(embedder, texts) * embed(embedder, passages), axis=1)
    sentiment = judge.score(texts).total()
    passage_ids = list(pairs)
    passage_sent = dict(zip(passage_ids, judge.score([pairs[i]["passage"] for i in passage_ids]).total()))
    gold = None
    if args.gold:
        from tether.labels.gold import GoldJudge

        gold = GoldJudge.load(args.gold, device=args.device).score([pairs[r["id"]]["context"] for r in rows], texts)
    # a person's reading, made before the scores were seen: {id, method, strength, stays: bool}
    read = {(x["id"], x["method"], x["strength"]): x["stays"] for x in jsonl.read(args.labels)} if args.labels else {}
    scored = []
    for k, r in enumerate(rows):
        sign = 1.0 if pairs[r["id"]]["mood"] == "+" else -1.0
        scored.append({**r, "similarity": float(sims[k]), "sentiment": float(sentiment[k]),
                       "sentiment_toward": sign * float(sentiment[k]),
                       "sentiment_agrees": bool(np.sign(sentiment[k]) == np.sign(passage_sent[r["id"]])),
                       "passage_sentiment": float(passage_sent[r["id"]]),
                       "perplexity": perplexity(model, tokenizer, pairs[r["id"]]["context"], r["text"]),
                       "first_person": bool(FIRST_PERSON.search(r["text"])),
                       **({"gold_on_task": float(gold[k])} if gold is not None else {}),
                       **({"stays_read": read[key]} if (key := (r["id"], r["method"], r["strength"])) in read else {})})
    jsonl.rewrite(Path(args.out) / "scores.jsonl", scored)
    print(table(scored))


def table(rows: list[dict]) -> str:
    keys = [("similarity", "sim to passage"), ("sentiment_toward", "sentiment toward passage"),
            ("sentiment_agrees", "sentiment agrees"), ("perplexity", "ppl (median)"),
            ("first_person", "1st person"), ("gold_on_task", "gold on-task"), ("stays_read", "stays (read)"),
            ("seconds", "s / sample")]
    keys = [(k, h) for k, h in keys if any(k in r for r in rows)]
    lines = ["| method | strength | n | " + " | ".join(h for _, h in keys) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in keys) + " |"]
    for method, strength in sorted({(r["method"], r["strength"]) for r in rows}):
        group = [r for r in rows if (r["method"], r["strength"]) == (method, strength)]
        cells = []
        for k, _ in keys:
            values = np.array([float(r[k]) for r in group if k in r])
            if k == "stays_read":
                cells.append(f"{int(values.sum())}/{len(values)}")
            else:
                cells.append(f"{np.nanmedian(values):.1f}" if k == "perplexity" else f"{np.nanmean(values):.2f}")
        lines.append(f"| {method} | {strength:g} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["generate", "score"])
    parser.add_argument("--out", default="bench/steer")
    parser.add_argument("--pairs", default=str(HERE / "examples/steer_pairs.jsonl"))
    parser.add_argument("--pairs-limit", type=int, default=None, help="only the first N pairs")
    parser.add_argument("--model", default="embedded:gemma-3-270m")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--alphas", default="0.1,0.2,0.3", help="activation-addition strengths (x residual norm)")
    parser.add_argument("--candidates", default="2,4", help="embedding-guidance strengths (candidates per chunk)")
    parser.add_argument("--layer", type=int, default=6, help="activation addition's decoder layer")
    parser.add_argument("--chunk-tokens", type=int, default=8)
    parser.add_argument("--samples", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gold", default=None, help="a gold folder (tether gold fit ... --label on_task)")
    parser.add_argument("--labels", default=None, help="a person's reading: JSONL of id, method, strength, stays")
    args = parser.parse_args()
    generate(args) if args.phase == "generate" else score(args)


if __name__ == "__main__":
    main()
