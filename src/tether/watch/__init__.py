"""What went wrong, and what a person sees.

`metrics` (the catalogue of metric keys and the monitor registry) -> `monitors` (pure
functions of a batch of completions) and `drift` (embedding distance from the base model's
completions) -> `detectors` (rules over the per-step metrics) -> `callbacks` (the TRL
callbacks that run them each step) -> `report` (the HTML page of a run; `report_agreement`
adds how the run's signals agree with a person's labels on its samples).
"""
