"""Where a `tether tune` step's time goes: generation, judges, drift, monitors, defenses, update.

    python benchmarks/tune_step_phases.py --steps 6 --out docs/benchmarks.md
    python benchmarks/tune_step_phases.py --config examples/tune_utility.yaml --set embedding_kl.coef=1 --steps 6

Runs the README's tune (examples/tune_cheerful.yaml, embedded Gemma 3 270M + LoRA, 8
completions x 32 tokens, gold judge and drift on) for a few steps. Generation is timed by
wrapping `GenerationMixin.generate` during each step; the judges, drift and text monitors
log their own seconds (`time/...` in metrics.jsonl); the policy update is what remains of
the step. Step 1 is a warm-up and is left out of the means. The target: tether's own
additions (judges, drift, monitors) cost at most 25% of a step.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from transformers import GenerationMixin, TrainerCallback

from tether.infra.atomic import write_text
from tether.infra.config import load_config
from tether.tune.config import TuneConfig
from tether.tune.run import run_tune

GENERATION_SECONDS: dict[int, float] = {}  # step -> seconds inside generate()


class StepClock(TrainerCallback):
    step = None

    def on_step_begin(self, args, state, control, **kwargs):
        StepClock.step = state.global_step + 1

    def on_step_end(self, args, state, control, **kwargs):
        StepClock.step = None


def timed(generate):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return generate(*args, **kwargs)
        finally:
            if StepClock.step is not None:
                GENERATION_SECONDS[StepClock.step] = GENERATION_SECONDS.get(StepClock.step, 0) + time.perf_counter() - start
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--config", default="examples/tune_cheerful.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override a config field")
    parser.add_argument("--out", type=Path, help="append the table to this Markdown file")
    args = parser.parse_args()

    GenerationMixin.generate = timed(GenerationMixin.generate)
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(TuneConfig, args.config, [*args.overrides, f"steps={args.steps}",
                                                      f"output_dir={tmp}/run", "save_every=1000"])
        run = run_tune(config, callbacks=[StepClock()])
        metrics = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]

    rows = [m for m in metrics if m["step"] > 1]
    step = np.array([m["time/step"] for m in rows])
    phases = {
        "generation (TRL, policy)": np.array([GENERATION_SECONDS.get(m["step"], 0.0) for m in rows]),
        "train judge (tether)": np.array([m["time/train_judge"] for m in rows]),
        "gold judge (tether)": np.array([m.get("time/gold_judge", 0.0) for m in rows]),
        "embedding drift (tether)": np.array([m.get("time/drift", 0.0) for m in rows]),
        "text monitors (tether)": np.array([m["time/monitors"] for m in rows]),
        "embedding KL defense (tether)": np.array([m.get("time/embedding_kl", 0.0) for m in rows]),
        "utility defense (tether)": np.array([m.get("time/utility", 0.0) for m in rows]),
    }
    phases = {k: v for k, v in phases.items() if v.any() or "defense" not in k}
    phases["policy update and TRL bookkeeping (rest)"] = step - sum(phases.values())
    tether_share = sum(v.mean() for k, v in phases.items() if "(tether)" in k) / step.mean()
    monitoring_share = sum(v.mean() for k, v in phases.items() if "(tether)" in k and "defense" not in k) / step.mean()

    command = " ".join(["benchmarks/tune_step_phases.py", f"--config {args.config}",
                        *(f"--set {o}" for o in args.overrides), f"--steps {args.steps}"])
    lines = [f"### Tune step phases ({datetime.now(UTC):%Y-%m-%d}, `{command}`)",
             "", f"Embedded Gemma 3 270M policy + LoRA r16, GRPO, 8 completions x 32 tokens, CPU, {torch.get_num_threads()} threads;",
             f"mean over steps 2-{args.steps}.", "",
             "| phase | seconds / step | share of step |", "| --- | ---: | ---: |"]
    for name, values in phases.items():
        lines.append(f"| {name} | {values.mean():.2f} | {values.mean() / step.mean():.0%} |")
    lines += [f"| **whole step** | **{step.mean():.2f}** | 100% |", "",
              f"tether's judges, drift and monitors: **{monitoring_share:.0%}** of a step (target: at most 25%); "
              f"with the defenses that are on: **{tether_share:.0%}**.", ""]
    table = "\n".join(lines)
    print(table)
    if args.out:
        previous = args.out.read_text() if args.out.exists() else ""
        write_text(args.out, previous.rstrip("\n") + "\n\n" + table)


if __name__ == "__main__":
    main()
