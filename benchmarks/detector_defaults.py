"""Where the detectors' defaults come from: each detector's statistic on base-vs-base noise.

    HF_HUB_OFFLINE=1 python benchmarks/detector_defaults.py --steps 60 --out /tmp/detector-null
    python benchmarks/detector_defaults.py --steps 120 --shift-runs 200 --split   # docs/detectors.md's figures

Samples the untuned base policy (the main job's, `examples/tune_cheerful.yaml`: its prompts,
`max_completion_tokens`, temperature and suppressed tokens) as a tune step samples it: tether's
`Generator`, whose settings are TRL's (top_k 0, top_p 1), `--steps` steps' worth of completions,
`--chunk` rows a seeded generate call. The base samples a run measures drift and shift against
come from the package's `sample_base` with another seed (`--base-draws` run-sized sets per prompt).
Both are cached in OUT (null_steps_TAG.jsonl, base_TAG_*.jsonl; TAG names the policy and sampling settings):
a rerun samples only what is missing.

From these, `--runs` null runs of the config's `steps` (benchmarks/detector_null.py): the
monitors, drift and shift measured with the package's functions, the detectors replayed at the
defaults. Printed (and written to OUT/summary.json): per detector the current default, the share
of null runs it trips in, and the derived value: the `--quantile` of the run's maximum (minimum
for distinct_2_drop), so that a base-like run trips over its whole length with probability at
most 1 - quantile; `--split` derives them again from each half of the samples. `torch` runs on one
thread by default: on a shared 2-core machine two threads sampled 7x slower than one (oversubscription).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import detector_null as null  # run as a script: benchmarks/ is on the path
import numpy as np
import torch

from tether.infra import jsonl
from tether.infra.config import load_config
from tether.infra.generate import Generator, independent, load_policy
from tether.infra.models import load_embedder
from tether.infra.texts import load_base, plain_text, read_prompts
from tether.tune.config import TuneConfig
from tether.tune.trainer import suppressed_ids
from tether.watch.drift import sample_base, save_base

ROOT = Path(__file__).resolve().parent.parent
SERIES = [
    "monitor/affirmation_rate",
    "monitor/special_token_rate",
    "monitor/repetition",
    "monitor/longest_repeat_run",
    "monitor/distinct_2",
    "drift/embedding",
    "drift/matched",
]


def sample_pool(gen: Generator, prompts: list, per_prompt: int, chunk: int, tokens: int, path: Path) -> dict:
    """`per_prompt` completions of each prompt, `chunk` rows a generate call seeded by (prompt, call),
    round-robin over the prompts; calls already in `path` are read back instead of sampled."""
    done = {(r["prompt"], r["seed"]): r["completions"] for r in jsonl.read(path) if len(r["completions"]) == chunk}
    pool: dict[str, list[str]] = {plain_text(p): [] for p in prompts}
    for call in range(math.ceil(per_prompt / chunk)):
        for i, prompt in enumerate(prompts):
            key, seed = plain_text(prompt), 1000 * (i + 1) + call
            if (key, seed) not in done:
                started = time.perf_counter()
                torch.manual_seed(seed)
                done[key, seed] = independent(gen, prompt, chunk, tokens)
                jsonl.append(path, [{"prompt": key, "seed": seed, "completions": done[key, seed]}])
                print(
                    f"  sampled {chunk} x prompt {i} (call {call}) in {time.perf_counter() - started:.0f} s", flush=True
                )
            pool[key] += done[key, seed]
    return pool


def cache_tag(config: TuneConfig) -> str:
    """Names the cached samples by what they depend on beyond the prompts (which key their records)."""
    key = [config.policy_model, config.max_completion_tokens, config.temperature, config.suppress_special_tokens]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:8]


def sample_all(config: TuneConfig, args) -> tuple[dict, dict]:
    """The null pool (the policy's sampler) and the base pool (`sample_base`, as a run caches it)."""
    prompts = read_prompts(config.prompts)
    model, tokenizer = load_policy(config.policy_model, device="cpu")
    gen = Generator(model, tokenizer, temperature=config.temperature)
    gen.suppress = suppressed_ids(tokenizer, config)  # the list the trainer passes to TRL
    per_step = config.prompts_per_step * config.completions_per_prompt
    per_prompt, tag = math.ceil(args.steps * per_step / len(prompts)), cache_tag(config)
    pool = sample_pool(
        gen, prompts, per_prompt, args.chunk, config.max_completion_tokens, args.out / f"null_steps_{tag}.jsonl"
    )
    n = config.base_samples_per_prompt * args.base_draws
    path = args.out / f"base_{tag}_seed{args.base_seed}_n{n}.jsonl"
    if not path.exists():
        save_base(
            path,
            sample_base(
                model,
                tokenizer,
                prompts,
                n,
                config.max_completion_tokens,
                config.temperature,
                gen.suppress,
                args.base_seed,
            ),
        )
    return pool, load_base(path)


def null_runs(config: TuneConfig, pool: dict, base: dict, embedder, runs: int, shift_runs: int, seed: int):
    """`runs` null runs (the first `shift_runs` with the shift tests): their histories and first trips."""
    shape = null.Shape(
        config.steps, config.prompts_per_step, config.completions_per_prompt, config.base_samples_per_prompt
    )
    rng = np.random.default_rng(seed)
    histories, trips = [], []
    for r in range(runs):
        shift = r < shift_runs
        histories.append(null.null_run(pool, base, embedder, shape, config.detectors, rng, seed=r, shift=shift))
        trips.append(null.first_trips(histories[-1], config.detectors, config.steps))
    return histories, trips


def halves(config: TuneConfig, pool: dict, base: dict, embedder, args) -> list[dict]:
    """The derived values again from each half of the null pool (the first and the second half of every
    prompt's completions, `runs` / 2 runs each, no shift tests): how much they rest on the samples drawn."""
    out = []
    for half in (0, 1):
        part = {p: c[: len(c) // 2] if half == 0 else c[len(c) // 2 :] for p, c in pool.items()}
        histories, _ = null_runs(config, part, base, embedder, args.runs // 2, 0, args.seed + 1 + half)
        out.append(null.derived_limits([null.run_statistics(h, config.detectors) for h in histories], args.quantile))
    return out


def summarise(config: TuneConfig, histories: list, trips: list, quantile: float) -> dict:
    detectors = config.detectors
    stats = [null.run_statistics(h, detectors) for h in histories]
    derived = null.derived_limits(stats, quantile)
    rows = {}
    for name in [*null.UP, *null.DOWN]:
        default = getattr(detectors, "drift" if name.startswith("drift") else name)
        values = np.array([s[name] for s in stats])
        limit = default * np.array([h[0]["monitor/distinct_2"] for h in histories]) if name in null.DOWN else default
        tripped = values < limit if name in null.DOWN else values > limit
        rows[name] = {
            "default": default,
            "null_runs_tripped_at_default": float(tripped.mean()),
            "derived": derived[name],
            "run_statistic_median": float(np.median(values)),
            "run_statistic_extreme": float(values.min() if name in null.DOWN else values.max()),
        }
    return {
        "runs": len(histories),
        "steps": config.steps,
        "quantile": quantile,
        "detectors": rows,
        "fired": fired(histories, trips),
        "shift": shift_summary(histories, detectors.shift_alpha, config.steps),
        "per_step": null.step_summary(histories, SERIES),
    }


def fired(histories: list, trips: list) -> dict:
    """Per detector replayed at the defaults: the share of null runs it fired in and its median first step
    (the shift detectors over the runs that ran their tests)."""
    tested = [i for i, h in enumerate(histories) if "shift/p_value" in h[0]]
    out = {}
    for name in sorted({d for t in trips for d in t} | {"shift", "shift (matched sampler)"}):
        runs = tested if name.startswith("shift") else range(len(histories))
        steps = [trips[i][name] for i in runs if name in trips[i]]
        out[name] = {
            "runs": len(runs),
            "share": len(steps) / max(len(runs), 1),
            "median_step": float(np.median(steps or [0])),
        }
    plain = [any(not d.startswith("shift") for d in t) for t in trips]
    out["any detector but shift"] = {"runs": len(trips), "share": float(np.mean(plain)), "median_step": 0.0}
    return out


def shift_summary(histories: list, alpha: float, steps: int) -> dict:
    """The shift p-values on null runs: at step 1 (the policy is still the base) and over all steps."""
    out = {}
    for name, key in [("sample_base", "shift/p_value"), ("matched sampler", "shift/matched_p")]:
        first = np.array([h[0][key] for h in histories if key in h[0] and np.isfinite(h[0][key])])
        every = np.array([m[key] for h in histories for m in h if key in m and np.isfinite(m[key])])
        out[name] = {
            "runs": len(first),
            "step1_median_p": float(np.median(first)) if len(first) else None,
            "step1_share_p_le_0.05": float(np.mean(first <= 0.05)) if len(first) else None,
            "steps_share_p_le_0.05": float(np.mean(every <= 0.05)) if len(every) else None,
            "steps_share_p_le_level": float(np.mean(every <= alpha / steps)) if len(every) else None,
        }
    return out


def markdown(summary: dict) -> str:
    q, steps = summary["quantile"], summary["steps"]
    lines = [
        f"{summary['runs']} null runs of {steps} steps; derived = the {q:.0%} quantile of the run's maximum "
        f"(distinct_2_drop: the {1 - q:.0%} quantile of its minimum ratio to step 1)",
        "",
        "| detector | current default | null runs tripped at default | run statistic: median | most extreme | derived "
        "| derived on each half |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in summary["detectors"].items():
        split = " / ".join(f"{v:.3g}" for v in row.get("derived_halves", [])) or "-"
        lines.append(
            f"| {name} | {row['default']:g} | {row['null_runs_tripped_at_default']:.1%} | "
            f"{row['run_statistic_median']:.3g} | {row['run_statistic_extreme']:.3g} | {row['derived']:.3g} | {split} |"
        )
    lines += ["", "| detector (replayed with check / cusum) | null runs | fired in | median first step |"]
    lines.append("| --- | ---: | ---: | ---: |")
    for name, row in summary["fired"].items():
        lines.append(f"| {name} | {row['runs']} | {row['share']:.1%} | {row['median_step']:g} |")
    lines += ["", "| shift against | runs | step 1: median p | step 1: p <= 0.05 | all steps: p <= 0.05 | p <= level |"]
    lines.append("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, row in summary["shift"].items():
        cells = " | ".join("-" if v is None else f"{v:.3g}" for v in row.values())
        lines.append(f"| {name} | {cells} |")
    lines += ["", "| series (per null step) | mean | sd | max |", "| --- | ---: | ---: | ---: |"]
    for key, s in summary["per_step"].items():
        lines.append(f"| {key} | {s['mean']:.4g} | {s['sd']:.3g} | {s['max']:.4g} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "tune_cheerful.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override the config")
    parser.add_argument("--steps", type=int, default=60, help="null steps' worth of completions to sample (cached)")
    parser.add_argument("--chunk", type=int, default=64, help="rows a generate call (more rows cost little more)")
    parser.add_argument("--base-draws", type=int, default=4, help="run-sized base sets per prompt, sampled at once")
    parser.add_argument("--base-seed", type=int, default=1, help="sample_base's seed (a run uses its own seed)")
    parser.add_argument("--runs", type=int, default=1000, help="null runs formed from the samples")
    parser.add_argument("--shift-runs", type=int, default=100, help="of these, runs with the shift tests (costly)")
    parser.add_argument("--split", action="store_true", help="derive again from each half of the null pool")
    parser.add_argument("--quantile", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=0, help="seed of the null runs' draws")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=Path("/tmp/detector-null"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    config = load_config(TuneConfig, args.config, args.set)
    started = time.perf_counter()
    pool, base = sample_all(config, args)
    sampled = time.perf_counter()
    texts = [t for texts in [*pool.values(), *base.values()] for t in texts]
    embedder = null.CachedEmbedder(load_embedder(config.embedder, device="cpu"), texts)
    histories, trips = null_runs(config, pool, base, embedder, args.runs, args.shift_runs, args.seed)
    summary = summarise(config, histories, trips, args.quantile)
    if args.split:
        split = halves(config, pool, base, embedder, args)
        for name, row in summary["detectors"].items():
            row["derived_halves"] = [half[name] for half in split]
    summary["seconds"] = {"sampling": round(sampled - started), "null_runs": round(time.perf_counter() - sampled)}
    summary["completions"] = {"null": sum(map(len, pool.values())), "base": sum(map(len, base.values()))}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(markdown(summary))
    print(
        f"\nsampling {summary['seconds']['sampling']} s, null runs {summary['seconds']['null_runs']} s; "
        f"{summary['completions']}"
    )


if __name__ == "__main__":
    main()
