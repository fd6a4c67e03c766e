"""Where a bf16 judge's time goes on a GPU: a torch profile of `Evaluator.score`, bf16 beside fp32.

    python3 benchmarks/judge_profile.py          # on the GPU machine, gpu_assets carried (see gpu_smoke.py)

Prints each precision's texts/s, whether the fast answer-slot head is on, and the top ops by
device and host time. Made to find why the bf16 judge ran 5x slower than fp32 on an H100.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_smoke

gpu_smoke.bootstrap(gpu_smoke.ASSETS)
import torch
from torch.profiler import ProfilerActivity, profile

from tether.infra import progress
from tether.judge.evaluator import Evaluator

progress.set_enabled(False)
with tempfile.TemporaryDirectory() as tmp:
    folder = Path(tmp) / "model"
    gpu_smoke.build_model(folder, False, gpu_smoke.ASSETS)
    batch = gpu_smoke.texts(200)
    for dtype in ("float32", "bfloat16"):
        judge = Evaluator(str(folder), gpu_smoke.EXAMPLES / "cheerful.yaml", device="cuda", dtype=dtype, batch_size=16)
        judge.score(batch[:16])
        torch.cuda.synchronize()
        start = time.perf_counter()
        judge.score(batch)
        seconds = time.perf_counter() - start
        print(f"{dtype}: {200 / seconds:.1f} texts/s, fast head {judge._head_is_plain}, "
              f"attn {judge.model.config._attn_implementation}", flush=True)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            judge.score(batch[:48])
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=50))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8, max_name_column_width=50))
        del judge
