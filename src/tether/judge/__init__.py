"""How to judge: a constitution of yes/no questions, answered by a judge model.

`constitution` (what to judge: principles, few-shot examples, negations) -> `prompts` (the
judge's prompt around a text) and `tokens` (untrusted text never becomes control tokens)
-> `evaluator` (log-odds of yes over no, prefix-cached) -> `combine` (principles into one
score) -> `audit` (how much each principle pays for judge tricks) and `judges` (a train
judge with its optional gold judge, as tune, sample and blend use them).
"""
