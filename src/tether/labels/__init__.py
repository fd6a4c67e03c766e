"""A person's labels on the policy's own samples: the ground truth the judges are checked against.

`spec` (the questions asked, a small YAML) -> `items` (the samples to label, read from a run
directory, a corpus, a blend sweep or any JSONL, each with a stable id and its hidden source)
-> `store` (the labels file: one JSONL line per answer, appended and fsynced, source included
for later joins) -> `server` + `page.html` (the local page: label one sample at a time, or
compare two completions of one prompt, sources hidden). Then `agreement` checks judges against
the labels file (the judges by spec are `watch.signals`), `gold` fits a judge to it (its README.md:
`gold_readme`), `gold_judge`
reads a gold (a constitution or a fitted folder) and `judges` pairs a train judge with its gold.
"""
