"""The summary's sections on the blind reading, the costs and the registration (markdown lines)."""

from __future__ import annotations

import math

from tether.experiment.config import ExperimentConfig


def _pct(rate: tuple) -> str:
    mean, low, high, n = rate
    return f"{mean:.2f} [{low:.2f}, {high:.2f}] (n={n})"


def reading_lines(config: ExperimentConfig, result: dict) -> list[str]:
    if not result:
        return ["", "## The blind reading", "", f"No readings yet: `tether experiment {config.output_dir}/experiment.yaml "
                "--read` builds the batches, and takes the readers' answers once they are written."]
    ref = result["reference"]
    rates = result["rates"]
    names = list(rates["good"])
    shown = ["good", *(q for q in rates if q != "good" and not q.startswith("good among")),
             *(q for q in rates if q.startswith("good among"))]
    lines = ["", "## The blind reading", "",
             f"Readers: LLM agents given written instructions ({config.reading.instructions}), one fresh reader a batch, blind to "
             "the source; every batch mixes every arm and the base on the same prompts. Each cell: the share read "
             "yes [95% cluster bootstrap over prompts and seeds] (texts). Each text counts once, with its first reading.",
             "", "| source | " + " | ".join(shown) + " |", "|" + "---|" * (len(shown) + 1)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(_pct(rates[q][n]) if n in rates.get(q, {}) else "-" for q in shown) + " |")
    if result["diffs"]:
        lines += ["", f"### `{ref}` minus each source on good (paired by prompt; Holm across sources)", "",
                  "| source | difference [95% CI] | p | Holm p |", "|---|---|---|---|"]
        lines += [f"| {n} | {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] | {d[3]:.3g} | {d[4]:.3g} |"
                  for n, d in result["diffs"].items()]
    gee = result["gee"]
    lines += ["", f"### Adjusted: odds of good, `{ref}` over each source (logistic GEE, reader fixed, clustered by "
              "prompt)", ""]
    if isinstance(gee, str):
        lines.append(gee)
    else:
        lines += ["| source | odds ratio [95% CI] |", "|---|---|"]
        lines += [f"| {n} | {v} |" if isinstance(v, str) else f"| {n} | {v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}] |"
                  for n, v in gee.items()]
    lines += ["", "### Readers", "", "Re-read agreement (a second reader on the same text): " + ", ".join(
        f"{q} {a}/{t}" + (f" ({a / t:.0%})" if t else "") for q, (a, t) in result["agreement"].items()), "",
        "| reader | first readings | good rate | leniency (rate minus all readers') |", "|---|---|---|---|"]
    lines += [f"| {w} | {n} | {rate:.2f} | {lean:+.2f} |" for w, (n, rate, lean) in result["readers"].items()]
    if result["pairs"]:
        lines += ["", f"### Pairwise: `{ref}` against each source (same prompt, sides shuffled, one answer a pair)", "",
                  "| source | pairs | `" + ref + "` preferred [95% Wilson] | sign test p |", "|---|---|---|---|"]
        lines += [f"| {n} | {w.n} | {w.mean:.2f} [{w.low:.2f}, {w.high:.2f}] | {w.p:.2g} |"
                  for n, w in result["pairs"].items()]
    return lines


def cost_lines(config: ExperimentConfig, rows: list[dict], base: dict | None) -> list[str]:
    """Per arm: what it cost to train and to write one evaluated text, and its KL from the base per completion."""
    lines = ["", "## Cost and distance from the base", "",
             "Training: GRPO steps, tokens generated, seconds (mean over seeds). Inference: tokens generated and texts "
             "judged per evaluated text. KL: nats per completion from the base (best-of-n: at most the bound "
             "log n - (n-1)/n above its sampled model's).", "",
             "| source | train steps | train tokens | train seconds | inference tokens | texts judged | KL per completion |",
             "|---|---|---|---|---|---|---|"]
    if base is not None:
        lines.append(f"| base | 0 | 0 | 0 | {base.get('tokens', float('nan')):.0f} | 0 | 0 |")
    for arm, choice in config.arms.items():
        done = [r for r in rows if r["arm"] == arm and r["status"] == "done"]
        if not done:
            continue
        def mean(k: str, done=done) -> float:
            return sum(r.get(k) or 0 for r in done) / len(done)

        kl = f"{mean('kl_completion'):.2f}"
        if choice.kind == "best_of_n":
            kl = f"≤ {mean('kl_completion') + math.log(choice.n) - (choice.n - 1) / choice.n:.2f}"
        lines.append(f"| {arm} | {mean('train_steps'):.0f} | {mean('train_tokens'):.0f} | {mean('train_seconds'):.0f} | "
                     f"{mean('inference_tokens'):.0f} | {mean('inference_judged'):.0f} | {kl} |")
    return lines


def registration_lines(config: ExperimentConfig) -> list[str]:
    from tether.experiment.registration import changes_since

    registered, changed = changes_since(config)
    if registered is None:
        return ["", "## Registration", "", "Not registered (`--register` before running commits the analysis)."]
    lines = ["", "## Registration", "", f"Registered {registered['time']} (registration.json).",
             f"Primary measure: {registered.get('primary', '-')}.", ""]
    lines += [f"- {h}" for h in registered.get("hypotheses", [])]
    lines += ["", f"Analysis: {registered.get('analysis', '-')}", "",
              ("Changed since registration: " + ", ".join(changed) + ".") if changed else "Nothing changed since."]
    return lines
