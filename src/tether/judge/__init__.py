"""How to judge: a constitution of yes/no questions, answered by a judge model.

`constitution` (what to judge: principles, few-shot examples, negations) -> `prompts` (the
judge's prompt around a text; `chat` builds it as turns of the judge's chat template)
(untrusted text is tokenized by `infra.tokens`)
-> `evaluator` (log-odds of yes over no, prefix-cached; `remote`: the same asked of an
OpenAI-compatible server) -> `combine` (principles into one score, judges into one reward) -> `audit` (how much each principle pays for judge tricks) and `habits` (and for a
run's own habits). The gold judges, fitted to a person's labels, are `labels/`'s.
"""
