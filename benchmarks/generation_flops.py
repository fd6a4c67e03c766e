"""The generation phase of a tune step against its FLOP limit: 8 completions x 32 tokens, as TRL generates them.

    python benchmarks/generation_flops.py                  # embedded Gemma 3 270M + LoRA r16, 3 rounds

Variants, interleaved round after round so they share the machine's load: TRL's way (the PEFT model in
train mode, LoRA unmerged, tether's suppressed special tokens), and the same without suppression, and in eval
mode. FLOP limit = 2 x non-embedding params x tokens run (prompt once per row,
then each new token) + 2 x vocab x hidden per position whose logits are sampled.

Memory limit: each new token of a batch of n rows runs every weight once, so a decoding step reads all
non-embedding weights (decoder and vocabulary head, float32) from memory whatever n is; at n = 8 that is
about 1 GB a token for the embedded Gemma, against ~4 GFLOP of work, so the bound that binds is memory
bandwidth (measured here as the rate of summing a 1 GiB tensor), not the matmul peak.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from peft import LoraConfig, get_peft_model

from tether.infra import progress
from tether.infra.models import load_causal_lm
from tether.infra.tokens import SafeTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    progress.set_enabled(False)
    base, tok = load_causal_lm(device="cpu")
    cfg = base.config
    params = sum(w.numel() for w in base.parameters()) - base.get_input_embeddings().weight.numel()
    head = 2 * cfg.vocab_size * cfg.hidden_size
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    suppress = sorted(SafeTokenizer(tok).control_ids - {tok.eos_token_id})
    prompt = open("examples/prompts.txt", encoding="utf-8").readline().strip()
    ids = tok([prompt] * args.n, return_tensors="pt")
    common = dict(do_sample=True, max_new_tokens=args.tokens, min_new_tokens=args.tokens, temperature=1.0, top_k=0,
                  top_p=1.0, pad_token_id=tok.pad_token_id)

    def run(name):
        model.train(name != "eval mode")
        kwargs = dict(common, suppress_tokens=None if name == "no suppression" else suppress)
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(**ids, **kwargs)
        return time.perf_counter() - start

    names = ["TRL's way", "no suppression", "eval mode"]
    seconds = {n: [] for n in names}
    run(names[0])  # warm-up
    for _ in range(args.rounds):
        for n in names:
            seconds[n].append(run(n))
    p = ids["input_ids"].shape[1]
    flops = 2 * params * args.n * (p + args.tokens) + head * args.n * args.tokens
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.matmul(a, b)
    t = min(_t(lambda: torch.matmul(a, b)) for _ in range(3))
    peak = 2 * 2048**3 / t
    big = torch.ones(256 * 2**20)  # 1 GiB of float32
    big.sum()
    bandwidth = 4 * big.numel() / min(_t(lambda: big.sum()) for _ in range(3))
    weight_bytes = 4 * (params + cfg.vocab_size * cfg.hidden_size)  # decoder + head, read once per decoding step
    memory_limit = weight_bytes * args.tokens / bandwidth
    print(f"{args.n} x {args.tokens} tokens, prompt {p} tokens; FLOP limit {flops / 1e9:.0f} GFLOP = "
          f"{flops / peak:.2f} s at this machine's fp32 matmul peak ({peak / 1e9:.0f} GFLOP/s, {torch.get_num_threads()} "
          f"threads); load average {os.getloadavg()[0]:.1f}")
    print(f"memory limit: {weight_bytes / 1e9:.2f} GB of weights read per decoding step x {args.tokens} steps at "
          f"{bandwidth / 1e9:.1f} GB/s (a 1 GiB sum) = {memory_limit:.2f} s")
    print("| variant | median s | x the FLOP limit | x the memory limit |\n|---|---:|---:|---:|")
    for n in names:
        m = np.median(seconds[n])
        print(f"| {n} | {m:.2f} | {m / (flops / peak):.1f} | {m / memory_limit:.1f} |")


def _t(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
