"""Corpus extension with a person auditing the synthetic data.

`config` (sample and sft configs) -> `sample` (draw candidates, independent or tree search)
-> `selection` (monitors first, then the constitution, decide what is kept) -> `store` (the
corpus directory: candidates, decisions, corpus) -> `review` (the local page where a person
accepts, rejects or edits) -> `sft` (tune on the audited corpus) ; `summary` for the tables.
"""
