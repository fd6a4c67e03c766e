"""The TRL callback of the utility defense: learn instrumental values every `update_every` steps, keep the store.

Apart from `utility` so that reading a config (which names `UtilityConfig`) never imports transformers' trainer.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from tether.defenses.utility import InstrumentalUtility
from tether.infra import ranks
from tether.infra.rundir import RunDir


class ValueStoreCallback(TrainerCallback):
    """Learns instrumental values every `update_every` steps; saves the store with the run.

    The store lives in RUN_DIR/values/ (values.json: each value's kind, text, credit, count
    and source episodes; values.safetensors: the embeddings) and is copied into every TRL
    checkpoint, so `--resume` continues with the store as it was at that step. A checkpoint
    without its `values/` is incomplete (`RunDir.is_complete`): resume goes to the one before.
    """

    def __init__(self, utility: InstrumentalUtility, run_dir: RunDir | None = None):
        self.utility, self.run_dir = utility, run_dir

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.utility.config.update_every:
            return
        episodes = ranks.gather(self.utility.episodes)  # every process learns the same store
        outcome = self.utility.update(state.global_step, episodes)
        if self.run_dir is not None and ranks.is_main():
            self.utility.store.save(self.run_dir.path / "values")
            self.run_dir.event("values", step=state.global_step, **outcome)

    def on_save(self, args, state, control, **kwargs):
        if ranks.is_main():
            self.utility.store.save(Path(args.output_dir) / f"checkpoint-{state.global_step}" / "values")
