"""Infrastructure every part of tether stands on; nothing here knows about judging or tuning.

- `atomic`: write a file or folder so a crash never leaves it half-written.
- `jsonl`: the one reader and appender of JSON-lines logs (torn tail skipped, fsync, lock).
- `config`: the one config loader (YAML, `--set`, paths, errors naming file, line and field).
- `texts`: read texts and prompts (.jsonl, .txt, stdin) with errors naming file and line.
- `models`: load causal LMs and embedders offline-first, safetensors only, on one device.
- `rundir`: a run directory's life: start, force, resume, rewind, finish.
- `seeds`: the one formula that derives a per-item seed.
- `progress`, `display`: Rich progress on stderr, tables on stdout.
- `ranks`: the few collectives data-parallel runs need.
- `trackers`: `report_to` (TensorBoard, wandb, trackio) for TRL's trainers, run after tether's callbacks.
- `config_reference`: the README's config tables, built from the field descriptions.
"""
