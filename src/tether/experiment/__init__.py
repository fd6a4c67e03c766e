"""`tether experiment`: arms x seeds of one task, each run tuned, evaluated alike, and summarised.

config.py (the grid: a tune config, arms as overlays, seeds, the evaluation), grid.py (runs
each arm x seed in a worker process, resumable, failures recorded), worker.py (one run: tune,
then evaluate), evaluate.py (held-out prompts, the same sampling seed for every run: train judge,
golds, monitors, token KL and drift to the base), stats.py (means, CIs, paired tests, win rates),
summary.py (results.csv/json, summary.md, plots, a page, blind pairs for a person).
"""
