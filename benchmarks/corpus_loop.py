"""One round of the corpus loop on the embedded Gemma: sample, audit, SFT, sample again.

    OMP_NUM_THREADS=1 python benchmarks/corpus_loop.py examples/sample_cheerful.yaml --out runs/loop

Round 1 samples from the base policy into OUT/round1; the scripted audit rejects every kept
sample the gold judge calls off topic (gold total below --gold-floor), as a person
reading the page might; `tether sft` tunes a LoRA adapter on the rest (OUT/sft, held-out
prompts scored before and after); round 2 samples the same prompts from the tuned policy
into OUT/round2 with the same thresholds. Prints the acceptance rates and scores of both.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tether.corpus.config import SampleConfig, SftConfig
from tether.corpus.sample import run_sample
from tether.corpus.sft import run_sft
from tether.corpus.summary import summarize
from tether.infra.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--out", type=Path, default=Path("runs/loop"))
    parser.add_argument("--heldout", type=Path, default=Path("examples/prompts_heldout.txt"))
    parser.add_argument("--epochs", type=float, default=3.0)
    parser.add_argument("--gold-floor", type=float, default=-1.0)
    args = parser.parse_args()
    config = load_config(SampleConfig, args.config)
    timings = {}

    start = time.perf_counter()
    round1 = run_sample(config.model_copy(update={"output_dir": args.out / "round1"}), force=True)
    timings["round 1 sample"] = time.perf_counter() - start
    rejected = [c["id"] for c in round1.candidates()
                if c["status"] == "kept" and c.get("gold_total", 0.0) < args.gold_floor]
    for sample_id in rejected:
        round1.decide(sample_id, "reject", note=f"scripted audit: gold (on topic) below {args.gold_floor}")

    start = time.perf_counter()
    sft = SftConfig(heldout_prompts=args.heldout, epochs=args.epochs, output_dir=args.out / "sft")
    run, evaluation = run_sft(round1.path, sft, force=True)
    timings["sft + held-out eval"] = time.perf_counter() - start

    start = time.perf_counter()
    round2 = run_sample(config.model_copy(update={"output_dir": args.out / "round2", "adapter": run.path / "final"}),
                        force=True)
    timings["round 2 sample"] = time.perf_counter() - start

    first, second = summarize(round1, config), summarize(round2, config)
    report = {
        "round1": {k: first[k] for k in ("candidates", "kept_by_sampler", "acceptance_rate", "in_corpus", "monitor_rejections")},
        "audit_rejections": len(rejected),
        "round2": {k: second[k] for k in ("candidates", "kept_by_sampler", "acceptance_rate", "monitor_rejections")},
        "mean_total": {"round1": first["principles"]["total"]["all"]["mean"], "round2": second["principles"]["total"]["all"]["mean"]},
        "heldout": {k: evaluation[k] for k in ("prompts", "completions", "mean_scores", "pass_rate")},
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    (args.out / "loop.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
