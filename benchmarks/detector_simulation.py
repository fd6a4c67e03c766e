"""The simulation figures of docs/detectors.md ("Detectors on what changed"), reproduced.

    python benchmarks/detector_simulation.py            # about a minute on one core
    python benchmarks/detector_simulation.py --trials 2000 --seed 1

`shift` (watch/shift.py): synthetic unit vectors, three prompts, 8 completions a prompt on each
side (the base's cached samples; the window's completions), each prompt's vectors scattered around
its own centre (spread 0.3, as tests/test_detect.py draws them), in 16 and in 32 dimensions; the
package's `mmd_test` with the run's permutation count for alpha 0.01 over 30 steps and the
within-prompt strata. Reported: the share of p <= 0.05 on draws from the base itself, and the share
caught at the per-step level 0.01/30 when all, half or a quarter of each prompt's completions are
moved to another centre (a new kind of text).

`cusum` (watch/changepoint.py): two-sided CUSUMs on N(0, 1) noise: a fixed reference (mean and sd
of the first 5 steps, k 0.5, h 5) against the package's self-starting `cusum` (warmup 3, k 0.75,
h 5) on 200-step series; and the self-starting one's delay on a 30-step series with a jump of 5 or
3 sd at index 10 (delay = firing index - 10; a firing before the jump is counted apart).
"""

from __future__ import annotations

import argparse

import numpy as np

from tether.watch.changepoint import cusum
from tether.watch.shift import level, mmd_test, permutations_for

PER_PROMPT, PROMPTS, SPREAD = 8, 3, 0.3


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def cloud(rng: np.random.Generator, centre: np.ndarray, n: int) -> np.ndarray:
    """n unit vectors scattered around `centre`: one prompt's completions in embedding space."""
    return unit(centre + SPREAD * rng.normal(size=(n, len(centre))))


def shift_trial(rng: np.random.Generator, dim: int, moved: int, seed: int) -> float:
    """One test's p-value: `moved` of each prompt's 8 window completions drawn around another centre."""
    centres, elsewhere = unit(rng.normal(size=(PROMPTS, dim))), unit(rng.normal(size=dim))
    base = np.concatenate([cloud(rng, c, PER_PROMPT) for c in centres])
    step = np.concatenate([np.r_[cloud(rng, c, PER_PROMPT - moved), cloud(rng, elsewhere, moved)] for c in centres])
    groups = np.repeat(np.arange(PROMPTS), PER_PROMPT)
    return mmd_test(base, step, permutations_for(0.01, 30), seed, (groups, groups))[1]


def shift_table(trials_null: int, trials_shift: int, seed: int) -> list[str]:
    need = level(0.01, 30)
    rows = [
        "| dims | base vs base: p <= 0.05 | all moved: caught | half moved | a quarter moved |",
        "|---|---:|---:|---:|---:|",
    ]
    for dim in (16, 32):
        rng = np.random.default_rng([seed, dim])
        null = np.array([shift_trial(rng, dim, 0, i) for i in range(trials_null)])
        caught = {}
        for moved in (PER_PROMPT, PER_PROMPT // 2, PER_PROMPT // 4):
            p = np.array([shift_trial(rng, dim, moved, i) for i in range(trials_shift)])
            caught[moved] = f"{int((p <= need).sum())}/{trials_shift}"
        rows.append(
            f"| {dim} | {np.mean(null <= 0.05):.1%} ({trials_null} draws) | {caught[PER_PROMPT]} | "
            f"{caught[PER_PROMPT // 2]} | {caught[PER_PROMPT // 4]} |"
        )
    return rows


def fixed_reference_cusum(x: np.ndarray, reference: int = 5, k: float = 0.5, h: float = 5.0) -> int | None:
    """The design brief's CUSUM: standardized by the mean and sd of the first `reference` steps."""
    mean, sd = x[:reference].mean(), x[:reference].std(ddof=1)
    up = down = 0.0
    for t in range(reference, len(x)):
        z = (x[t] - mean) / sd
        up, down = max(0.0, up + z - k), max(0.0, down - z - k)
        if max(up, down) > h:
            return t
    return None


def cusum_table(trials: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(trials, 200))
    fixed = np.mean([fixed_reference_cusum(x) is not None for x in noise])
    selfstart = np.mean([cusum(x, warmup=3, k=0.75, h=5.0) is not None for x in noise])
    rows = [
        f"200-step N(0, 1) noise, {trials} series: fixed reference (first 5 steps, k 0.5, h 5) fired on {fixed:.1%}; "
        f"self-starting (warmup 3, k 0.75, h 5) on {selfstart:.1%}.",
        "",
        "| jump at index 10 (30 steps) | caught | median delay | largest delay | fired before the jump |",
        "|---|---:|---:|---:|---:|",
    ]
    for size in (5.0, 3.0):
        delays, early = [], 0
        for _ in range(trials):
            x = rng.normal(size=30)
            x[10:] += size
            at = cusum(x, warmup=3, k=0.75, h=5.0)
            if at is not None and at < 10:
                early += 1
            elif at is not None:
                delays.append(at - 10)
        caught = len(delays) / trials
        rows.append(f"| {size:g} sd | {caught:.1%} | {np.median(delays):g} | {max(delays)} | {early / trials:.1%} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=1000, help="CUSUM series per figure")
    parser.add_argument("--null-draws", type=int, default=200, help="shift: base-vs-base draws per dimension")
    parser.add_argument("--shift-trials", type=int, default=50, help="shift: trials per kind of move")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print("\n".join(shift_table(args.null_draws, args.shift_trials, args.seed)))
    print()
    print("\n".join(cusum_table(args.trials, args.seed)))


if __name__ == "__main__":
    main()
