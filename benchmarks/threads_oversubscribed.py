"""Two processes side by side on one machine: torch's default threads each, against the cores divided between them.

    python benchmarks/threads_oversubscribed.py --workload matmul --steps 20 --rounds 2
    python benchmarks/threads_oversubscribed.py --workload lora --steps 3 --rounds 1

Why: a tune beside a `tether sample` on a 2-core machine, two OpenMP threads each, took 95-130 s a
step instead of 17 s. *old* starts two processes with torch's default thread count (every core,
each); *new* starts them as tether now runs `experiment --jobs 2`, and as its note advises
(TETHER_THREADS = cores // 2, applied by `tether.infra.threads.configure` before torch loads).
Both processes load and warm up, then start their timed steps together; the figure is the median
seconds a step over both. The rounds alternate old and new, so both see the same neighbours; the
1-minute load average (which includes these processes) is printed beside each.

Workloads: `matmul`, a fixed float32 chain shaped like one layer of the embedded Gemma over the
README tune's batch, 8 times over (480 x 640 activations, a 640 x 2048 MLP, element-wise ops
between: many small parallel regions, where waiting OpenMP threads cost most); `lora`, the LoRA
forward + backward of benchmarks/threads_under_load.py (loads the embedded Gemma in each process).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def matmul_step():
    import torch

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(480, 640, generator=g)
    up, down = torch.randn(640, 2048, generator=g) / 25, torch.randn(2048, 640, generator=g) / 45

    def step() -> float:
        start, x = time.perf_counter(), x0
        for _ in range(8):  # a layer's worth of ops, 8 times
            a = x @ up
            h = torch.nn.functional.gelu(a) * a.sigmoid()
            x = torch.nn.functional.layer_norm(x + h @ down, (640,))
        return time.perf_counter() - start

    return step


def child(workload: str, steps: int) -> None:
    """One of the two processes: build, warm up, say ready, wait for go, time `steps` steps, print them."""
    if os.environ.get("TETHER_THREADS"):
        from tether.infra import threads

        threads.configure()  # before torch loads, as the CLI does
    if workload == "lora":
        sys.path.insert(0, str(HERE))
        from threads_under_load import lora_step

        step = lora_step()
    else:
        step = matmul_step()
    import torch

    step()  # warm-up
    print("ready", flush=True)
    sys.stdin.readline()
    times = [step() for _ in range(steps)]
    print(json.dumps({"threads": torch.get_num_threads(), "seconds": times}), flush=True)


def pair(workload: str, steps: int, each: int | None) -> dict:
    """Two children side by side; each: None for torch's default, else TETHER_THREADS."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "TETHER_THREADS", "MKL_NUM_THREADS")}
    if each:
        env["TETHER_THREADS"] = str(each)
    argv = [sys.executable, __file__, "--child", "--workload", workload, "--steps", str(steps)]
    procs = [
        subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    for p in procs:
        assert p.stdout.readline().strip() == "ready", "a child failed to start"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        p.wait()
    seconds = [s for r in results for s in r["seconds"]]
    return {"threads": results[0]["threads"], "median": statistics.median(seconds), "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=("matmul", "lora"), default="matmul")
    parser.add_argument("--steps", type=int, default=20, help="timed steps in each process")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.workload, args.steps)
    from tether.infra.threads import cores_available

    cores = cores_available()
    print(f"{args.workload}, 2 processes on {cores} cores, {args.steps} steps each\n")
    print(
        "| round | setting | threads each | seconds a step (median) | load average |\n"
        "| ---: | --- | ---: | ---: | ---: |"
    )
    old, new = [], []
    for r in range(1, args.rounds + 1):
        for name, each, out in (("old: torch's default", None, old), ("new: cores // 2", max(1, cores // 2), new)):
            result = pair(args.workload, args.steps, each)
            out.append(result["median"])
            print(f"| {r} | {name} | {result['threads']} | {result['median']:.3f} | {result['load']:.1f} |", flush=True)
    print(f"\nold / new: {statistics.median(old) / statistics.median(new):.2f}x (medians over rounds)")


if __name__ == "__main__":
    main()
