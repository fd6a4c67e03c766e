"""The defenses against reward hacking from the source text, one module each.

Early stopping, the first and weakest, lives with the hack detectors (`tether.watch.callbacks`,
`on_hack: stop`). The others:

- `blend`: checkpoint blending, base + A * (tuned - base), and a sweep over A;
- `embedding_kl`: a reward term, the distance in embedding space from the base model's own
  completions for the same prompt (the base never reads the policy's text);
- `utility`: an instrumental utility function, an embedding reward built from terminal
  objectives and the instrumental values inferred from the run's own good episodes.
"""
