"""Tree search (weave-style) against best-of-N at equal generation budget, on the embedded Gemma.

    OMP_NUM_THREADS=1 python benchmarks/tree_vs_best_of_n.py examples/sample_cheerful.yaml

Both draw N = completions_per_prompt candidates a prompt of max_completion_tokens each, so
both generate at most N x max tokens a prompt; the tree also spends judge calls on the
partial branches. Reported per method: the mean judge total of the best candidate of each
prompt (what `keep: best` puts in the corpus), the mean of all candidates, the share that
passes the thresholds and monitors, tokens generated, texts judged, and wall time.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tether.corpus.config import SampleConfig
from tether.corpus.sample import Generator, Judges, draw, load_policy
from tether.corpus.selection import decide, monitor_values
from tether.infra.config import load_config
from tether.infra.texts import read_prompts
from tether.judge.constitution import load_constitution


def run(config: SampleConfig, gen: Generator, judges: Judges, prompts: list[str]) -> dict:
    judged, counted = [0], judges.totals

    def totals(texts):
        judged[0] += len(texts)
        return counted(texts)

    judges.totals = totals
    gen.generated_tokens = 0
    best, every, passed, start = [], [], 0, time.perf_counter()
    for i, prompt in enumerate(prompts):
        completions = draw(config, gen, judges, prompt, config.completions_per_prompt, config.seed * 100_003 + i)
        group = [{"completion": c, **r, "monitors": monitor_values(c)}
                 for c, r in zip(completions, judges.records(prompt, completions))]
        judged[0] += len(group)
        every += [c["total"] for c in group]
        best.append(max(c["total"] for c in group))
        passed += sum(c["status"] == "kept" for c in decide(group, config.model_copy(update={"keep": "threshold"})))
    judges.totals = counted
    return {"best": float(np.mean(best)), "all": float(np.mean(every)), "pass_rate": passed / len(every),
            "tokens": gen.generated_tokens, "judged": judged[0], "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    args = parser.parse_args()
    config = load_config(SampleConfig, args.config, args.overrides)
    prompts = read_prompts(config.prompts)
    policy, tokenizer = load_policy(config)
    gen = Generator(policy, tokenizer, temperature=config.temperature)
    judges = Judges(config.model_copy(update={"gold_constitution": None}), load_constitution(config.constitution))
    results = {search: run(config.model_copy(update={"search": search}), gen, judges, prompts)
               for search in ("independent", "tree")}
    print(f"{len(prompts)} prompts, N = {config.completions_per_prompt}, {config.max_completion_tokens} tokens; "
          f"tree: chunks of {config.tree_chunk_tokens}, width {config.tree_width}, temperature {config.tree_temperature}")
    print("| method | best of each prompt (mean) | all candidates (mean) | pass rate | tokens generated | texts judged | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for search, r in results.items():
        name = "best-of-N" if search == "independent" else "tree search"
        print(f"| {name} | {r['best']:.3f} | {r['all']:.3f} | {r['pass_rate']:.0%} | {r['tokens']} | {r['judged']} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
