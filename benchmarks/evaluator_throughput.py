"""Throughput of tether's Evaluator against the naive way, same model, same texts, one run.

    python benchmarks/evaluator_throughput.py            # 200 texts, batch 8, writes docs/benchmarks.md
    python benchmarks/evaluator_throughput.py --texts 40 --out /tmp/bench.md

Judge: the embedded Gemma 3 270M (float32, CPU); constitution: examples/cheerful.yaml.
Naive = per text, one full forward of prefix + text + tail at batch size 1, no cache,
logits at every position (no `logits_to_keep`), then log-odds at the last position.
tether = `Evaluator.score` (prefix KV cache computed once, length-sorted batches, vocabulary
head on the answer slot only). A fresh Evaluator is timed, so its prefix forward counts.

FLOPs executed = 2 * non-embedding params * tokens run + 2 * vocab * hidden * positions whose
logits are computed; attention score/value FLOPs are not counted (estimated separately).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone

import numpy as np
import torch
import transformers

from tether.infra import progress
from tether.infra.atomic import write_text
from tether.infra.models import load_causal_lm
from tether.judge.evaluator import Evaluator

CONSTITUTION = "examples/cheerful.yaml"


def build_texts(n: int) -> list[str]:
    base = [json.loads(line)["text"] for line in open("examples/texts.jsonl", encoding="utf-8") if line.strip()]
    return [f"Story {i + 1}: {base[i % len(base)]}" for i in range(n)]


def naive_log_odds(ev: Evaluator, text: str) -> float:
    probe = ev.probes[0]
    ids = list(probe.prefix_ids) + ev.safe.encode_untrusted(ev.lead + text) + list(probe.tail_ids)
    logits = ev.model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]  # all positions computed
    logp = torch.log_softmax(logits.float(), dim=-1)
    return float(torch.logsumexp(logp[ev.yes_ids], -1) - torch.logsumexp(logp[ev.no_ids], -1))


def matmul_peak(n: int = 4096, runs: int = 5) -> float:
    """Best fp32 torch.matmul rate on n x n matrices, GFLOP/s."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)  # warm-up
    best = min(_timed(lambda: torch.matmul(a, b))[1] for _ in range(runs))
    return 2 * n**3 / best / 1e9


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def work(ev: Evaluator, texts: list[str], batch_size: int) -> dict:
    """Tokens run, logit positions and attention query-key pairs for both methods."""
    probe = ev.probes[0]
    p, t = len(probe.prefix_ids), len(probe.tail_ids)
    rows = sorted((len(ev.safe.encode_untrusted(ev.lead + x)) + t for x in texts), reverse=True)
    naive_lens = [p + r for r in rows]
    batches = [rows[s : s + batch_size] for s in range(0, len(rows), batch_size)]
    return {
        "naive": dict(tokens=sum(naive_lens), logits=sum(naive_lens), pairs=sum(n * (n + 1) // 2 for n in naive_lens)),
        "tether": dict(
            tokens=p + sum(len(b) * max(b) for b in batches),  # prefix once + padded batches
            logits=1 + len(rows),  # prefix with logits_to_keep=1, then one answer slot per row
            pairs=p * (p + 1) // 2 + sum(len(b) * max(b) * (p + max(b)) for b in batches),  # masked SDPA
            padding=sum(len(b) * max(b) - sum(b) for b in batches),
        ),
        "prefix": p,
        "mean_row": sum(rows) / len(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", default="docs/benchmarks.md")
    args = parser.parse_args()
    progress.set_enabled(False)
    torch.manual_seed(0)

    model, tok = load_causal_lm()
    texts = build_texts(args.texts)
    cfg = model.config
    params = sum(w.numel() for w in model.parameters()) - model.get_input_embeddings().weight.numel()
    head = 2 * cfg.vocab_size * cfg.hidden_size
    attn = 4 * cfg.num_attention_heads * cfg.head_dim * cfg.num_hidden_layers  # per query-key pair

    with torch.inference_mode():
        warm = Evaluator(model, CONSTITUTION, tokenizer=tok, batch_size=args.batch_size)
        warm.score(texts[: args.batch_size])  # warm-up, tether
        naive_log_odds(warm, texts[0])  # warm-up, naive
        ev = Evaluator(model, CONSTITUTION, tokenizer=tok, batch_size=args.batch_size)  # fresh: no prefix cache yet
        assert len(ev.probes) == 1, "the naive baseline and FLOP count assume one question"
        result, t_tether = _timed(lambda: ev.score(texts))
        naive, t_naive = _timed(lambda: np.array([naive_log_odds(ev, x) for x in texts]))
        peak = matmul_peak()

    max_diff = float(np.max(np.abs(naive - result.log_odds[:, 0])))
    w = work(ev, texts, args.batch_size)
    rows = []
    for name, seconds in (("naive", t_naive), ("tether", t_tether)):
        c = w[name]
        flops = 2 * params * c["tokens"] + head * c["logits"]
        rows.append(dict(method=name, seconds=seconds, tps=len(texts) / seconds, tokens=c["tokens"], logits=c["logits"],
                         gflop=flops / 1e9, gflops=flops / seconds / 1e9, attn_share=attn * c["pairs"] / flops))
    naive_row, tether_row = rows
    speedup = t_naive / t_tether

    table = ["| method | wall s | texts/s | tokens run | logit positions | GFLOP executed | GFLOP/s | % of matmul peak |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        table.append(f"| {r['method']} | {r['seconds']:.1f} | {r['tps']:.2f} | {r['tokens']:,} | {r['logits']:,} | "
                     f"{r['gflop']:,.0f} | {r['gflops']:.1f} | {100 * r['gflops'] / peak:.0f}% |")
    table = "\n".join(table)
    print(table)
    print(f"speed-up tether/naive: {speedup:.1f}x   fp32 matmul peak: {peak:.1f} GFLOP/s   max |log-odds diff|: {max_diff:.2e}")

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    doc = f"""# Benchmarks

## Evaluator throughput

Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with `python benchmarks/evaluator_throughput.py --texts {args.texts} --batch-size {args.batch_size}`.
Machine: {len(os.sched_getaffinity(0))} CPU cores (`nproc`), {cpu}; torch {torch.__version__} ({torch.get_num_threads()} threads),
transformers {transformers.__version__}, Python {platform.python_version()}.

Judge: the embedded Gemma 3 270M in float32 on CPU ({params / 1e6:.1f}M non-embedding parameters,
{cfg.vocab_size:,}-word vocabulary × {cfg.hidden_size} hidden); constitution `{CONSTITUTION}` (one principle,
a {w['prefix']}-token prefix of preamble and eight few-shot examples); {args.texts} distinct texts (the 40 of
`examples/texts.jsonl`, cycled, each prefixed "Story N: "), {w['mean_row']:.1f} tokens each with the question tail.
Both methods run in the same process, under `torch.inference_mode()`, after one warm-up call each.

{table}

**tether is {speedup:.1f}× faster than the naive way** ({tether_row['tps']:.2f} vs {naive_row['tps']:.2f} texts/s).
The two agree: the largest log-odds difference over the {args.texts} texts is {max_diff:.1e}.
Peak fp32 `torch.matmul` on 4096×4096 matrices, best of 5, on this machine: **{peak:.1f} GFLOP/s**.

How the FLOPs are counted: 2 × non-embedding parameters × tokens run, plus 2 × vocabulary × hidden
({head / 1e6:.0f} MFLOP) per position whose logits are computed. Naive: every position of every full
prompt. tether: the prefix once (logits of its last position only), then the padded batches
({w['tether']['padding']:,} pad tokens included), with logits at one answer slot per text. Attention
score and value products are not counted; estimated at 4 × heads × head dim × layers per query-key
pair they would add about {100 * naive_row['attn_share']:.0f}% (naive) and {100 * tether_row['attn_share']:.0f}% (tether, whose short rows
attend to the whole prefix) to the counts above.
The two methods do not do the same work: tether executes {naive_row['gflop'] / tether_row['gflop']:.0f}× fewer FLOPs for the
same {args.texts} answers, so its GFLOP/s is a rate of work actually done, not of useful work. Counted
at the naive method's FLOPs, tether delivers the same answers at an effective
{naive_row['gflop'] / t_tether:.0f} GFLOP/s.

Where the speed-up comes from: from doing less work, not from doing it faster. *Prefix KV
reuse*: the preamble and few-shot examples ({w['prefix']} tokens) are the same for every text, so tether
runs them once and copies their KV cache into each batch; each text then costs its own
{w['mean_row']:.0f} tokens instead of ~{w['prefix'] + w['mean_row']:.0f}. *Answer-slot-only vocabulary head*: the {cfg.vocab_size:,} × {cfg.hidden_size}
output projection has more parameters than the rest of the model together, and the naive forward
applies it at every position ({100 * head * naive_row['logits'] / (naive_row['gflop'] * 1e9):.0f}% of its FLOPs); tether applies it at one position per
text. *Batching*: with the prefix cached a text is a short row, and {args.batch_size} length-sorted rows per
forward keep the matrix products wide; even so tether runs at {100 * tether_row['gflops'] / peak:.0f}% of the matmul peak against
the naive method's {100 * naive_row['gflops'] / peak:.0f}% (whose ~{w['prefix'] + w['mean_row']:.0f}-token prompts are already wide), the gap
being the uncounted attention over the prefix, the per-batch cache copy and padding.
"""
    write_text(args.out, doc)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
