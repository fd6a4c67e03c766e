"""The TRL wiring: `config` (the tune config, and a run's stored settings), `trainer` (TRL's
arguments, vLLM, suppressed tokens), `refit` (the gold refit on a person's answers during a
run), `run` (`tether tune`: inputs -> run directory -> models and judges -> reward terms ->
TRL trainer -> finish). What pays is `rewards/`.
"""
