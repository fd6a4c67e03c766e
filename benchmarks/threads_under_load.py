"""A LoRA step's forward + backward on the embedded Gemma with 1 and with all torch threads, alternated.

    python benchmarks/threads_under_load.py --rounds 2

Why: on a shared CPU, torch's OpenMP threads wait for each other at every parallel op, so
when other work takes a core, a 2-thread step can run slower than a 1-thread one. The
rounds alternate the thread counts in one process, so both see the same neighbours; the
load average is printed beside each figure. Shape: 8 sequences x 60 tokens (the README
tune's batch: 8 completions of 32 tokens after a short prompt), LoRA r=16 on all linear layers.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from peft import LoraConfig, get_peft_model

from tether.infra.models import load_causal_lm


def lora_step():
    """One LoRA forward + backward of the embedded Gemma, as a function that runs it and returns its seconds."""
    model, _ = load_causal_lm("embedded:gemma-3-270m", device="cpu")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.train()
    ids = torch.randint(10, 1000, (8, 60), generator=torch.Generator().manual_seed(0))

    def step() -> float:
        start = time.perf_counter()
        model(input_ids=ids).logits[:, -32:].float().log_softmax(-1).mean().backward()
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    step = lora_step()
    most = torch.get_num_threads()
    step()  # warm-up
    print("| threads | forward + backward (s) | load average |\n| ---: | ---: | ---: |")
    for _ in range(args.rounds):
        for threads in sorted({1, most}):
            torch.set_num_threads(threads)
            seconds = step()
            print(f"| {threads} | {seconds:.1f} | {os.getloadavg()[0]:.1f} |", flush=True)


if __name__ == "__main__":
    main()
