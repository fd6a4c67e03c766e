"""The README.md written beside a gold judge's gold.json: what it was fitted on, how, and how well."""

from __future__ import annotations


def readme(meta: dict) -> str:
    cv = meta["cv"]
    space = ("all-MiniLM-L6-v2: the same space as the embedding-KL defense and the utility function, so this gold "
             "shares their blind spots (text that games MiniLM games all three); fit one with "
             "`--features hidden:MODEL` for a judge in another space"
             if meta["features"] == "minilm" else f"the mean-pooled last hidden state of `{meta['features'][7:]}`")
    return f"""# Gold judge for "{meta['label']}"

Fitted by `tether gold fit` on {meta['labels']['path']} (sha256 `{meta['labels']['sha256'][:16]}…`) at {meta['time']}.

- **Labels**: {meta['n']} items ({meta['yes']} yes, {meta['no']} no) on {meta['prompts']} prompts.
- **Features**: {space}. Per item: the completion's vector, the prompt's, their elementwise
  product and their cosine similarity ({len(meta['coef'])} numbers).
- **Model**: {meta['model']}, C = {meta['C']:g} chosen by {meta['cv']['inner_folds']}-fold grouped inner
  cross-validation from {', '.join(f'{c:g}' for c in meta['Cs'])}.
- **Cross-validated AUC**: {cv['auc']:.3f} (95% bootstrap CI {cv['ci'][0]:.3f}-{cv['ci'][1]:.3f}), {cv['folds']} folds
  stratified and grouped by prompt: a prompt's items are never on both the train and the test side.
- **Score**: log-odds of "yes", higher is better. `tether gold score DIR TEXTS --out FILE`, or
  `GoldJudge.load(DIR).score(prompts, completions)`.

`gold.json` holds everything needed to score (coefficients, intercept, scaler means and
scales) as plain numbers; nothing is pickled.
"""
