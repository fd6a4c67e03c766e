"""Infrastructure every part of tether stands on; nothing here knows about judging or tuning.

- `atomic`: write a file or folder so a crash never leaves it half-written.
- `files`: a file's bytes or UTF-8 text, or one line naming the path and the problem.
- `jsonl`: the one reader and appender of JSON lines (split on \n only; torn tail skipped, fsync, lock).
- `config`: the one config loader (YAML, `--set`, paths, errors naming file, line and field).
- `texts`: read texts and prompts (.jsonl, .txt, stdin) with errors naming file and line.
- `tokens`: untrusted text never becomes control tokens (every tokenizer call on model-written text).
- `models`: load causal LMs and embedders offline-first, safetensors only, on one device; check a
  model from its config.json alone before any weights load.
- `loading`: the offline-first path every load takes, and one line saying why a load failed
  (not found, or there but broken: its config, its weights, its architecture, memory).
- `embedded`: the embedded Gemma's cache (verified GGUF, de-quantized once, safetensors).
- `rundir`: a run directory's life: start, force, resume, rewind, finish.
- `seeds`: the one formula that derives a per-item seed.
- `progress`: Rich progress on stderr (tables on stdout are `tether.display`, above everything).
- `ranks`: the few collectives data-parallel runs need.
- `threads`: torch's thread count from the cores a process may use; one note when others share them.
- `trackers`: `report_to` (TensorBoard, wandb, trackio) for TRL's trainers, run after tether's callbacks.
"""
