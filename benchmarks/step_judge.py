"""The cost of judging a completion step by step (process supervision) against judging it whole once.

    python benchmarks/step_judge.py                      # 24 completions of 48 tokens, 8 steps each, 3 rounds
    python benchmarks/step_judge.py --completions 8 --rounds 1

Judge: the embedded Gemma 3 270M (float32, CPU), constitution examples/cheerful.yaml. The completions are
the base model's own continuations of the held-out openings (examples/prompts_heldout.txt), cut into at
most 8 steps of 6 tokens' worth of words each (`re:` steps), so every completion has 8 steps. Whole:
`Evaluator.score` on prompt + completion. Steps, afresh: `judge.steps.score_steps` with a plain scorer (prompt +
steps 1..k judged from scratch for each k, one call). Steps, grown: the same with `constitution_scorer`, whose
cache grows along each completion (`judge/prefixes.py`: only each step's new tokens and the question's
tail run). All three are timed in turn, round after round, in one process; the figures are ratios of the
medians. Target (issue 26): steps <= 2x whole. `--constitution` picks the judge (the question-first template of
examples/cheerful_question_first.yaml has a 3-token tail, cheerful.yaml's a whole question).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--completions", type=int, default=24)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--constitution", default="cheerful.yaml", help="a constitution in examples/")
    args = parser.parse_args()

    import torch

    from tether.infra.generate import Branch, Generator
    from tether.infra.models import EMBEDDED_LM, load_causal_lm
    from tether.infra.texts import read_prompts
    from tether.judge.evaluator import Evaluator
    from tether.judge.steps import constitution_scorer, score_steps

    model, tokenizer = load_causal_lm(EMBEDDED_LM, fast_head=True)
    gen = Generator(model, tokenizer, temperature=1.0)
    prompts = read_prompts(ROOT / "examples" / "prompts_heldout.txt")
    torch.manual_seed(0)
    pairs = []
    while len(pairs) < args.completions:
        prompt = prompts[len(pairs) % len(prompts)]
        branch = gen.extend(gen.prompt_ids(prompt), Branch([]), 1, args.tokens)[0]
        pairs.append((prompt, gen.text(branch)))
    judge = Evaluator(model, str(ROOT / "examples" / args.constitution), tokenizer=tokenizer, batch_size=8)
    scorer = constitution_scorer(judge)
    split = "re:(?:\\S+\\s*){1,5}"  # about 6 tokens a step: 8 steps in 48 tokens
    ps, cs = [p for p, _ in pairs], [c for _, c in pairs]
    whole, steps, grown, counts = [], [], [], []
    afresh = lambda p, c: judge.score([a + b for a, b in zip(p, c)]).total()  # noqa: E731
    for _ in range(args.rounds):
        start = time.perf_counter()
        judge.score([p + c for p, c in pairs])
        whole.append(time.perf_counter() - start)
        start = time.perf_counter()
        out = score_steps(afresh, ps, cs, split, max_steps=8)
        steps.append(time.perf_counter() - start)
        start = time.perf_counter()
        fast = score_steps(scorer, ps, cs, split, max_steps=8)
        grown.append(time.perf_counter() - start)
        counts = [len(s) for s in out]
        gap = max(abs(a["score"] - b["score"]) for x, y in zip(out, fast) for a, b in zip(x, y))
    w, s, g = statistics.median(whole), statistics.median(steps), statistics.median(grown)
    print(f"{len(pairs)} completions of {args.tokens} tokens, {statistics.mean(counts):.1f} steps each, "
          f"{args.rounds} rounds, {torch.get_num_threads()} threads")
    print(f"whole once: {w:.2f} s  ({w / len(pairs) * 1000:.0f} ms a completion)")
    print(f"step by step, afresh: {s:.2f} s  ({s / len(pairs) * 1000:.0f} ms a completion): {s / w:.2f}x whole")
    print(f"step by step, grown cache: {g:.2f} s  ({g / len(pairs) * 1000:.0f} ms a completion): {g / w:.2f}x whole "
          f"(target <= 2x), {s / g:.2f}x faster than afresh; largest score difference {gap:.1e}")


if __name__ == "__main__":
    main()
