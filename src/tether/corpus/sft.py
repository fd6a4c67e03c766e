"""`tether sft`: tune the policy on an audited corpus, and show whether it moved where the corpus points.

    tether sft corpus/cheerful --set output_dir=runs/sft-cheerful
    tether sft --resume runs/sft-cheerful

Reads top to bottom: corpus -> run directory -> held-out evaluation of the untuned policy
-> TRL's SFTTrainer with a LoRA adapter on the prompt/completion pairs (loss on the
completion only; the corpus's own adapter, continued, when it was sampled with one) -> the same evaluation of the tuned policy -> eval.json. The evaluation
samples each held-out prompt as `tether sample` would and scores it with the corpus's own
constitution, reporting mean scores and the pass rate under the corpus's thresholds and
monitors: the acceptance rate a next round of sampling would see.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tether.corpus.config import SampleConfig, SftConfig
from tether.corpus.selection import decide, monitor_values
from tether.corpus.store import CorpusDir
from tether.errors import TetherError
from tether.infra import atomic, progress, trackers
from tether.infra.generate import Generator, check_chat_policy, independent, load_policy
from tether.infra.models import (
    check_adapter,
    check_model,
    checkpointing_args,
    load_adapter,
    load_causal_lm,
    precision_args,
    resolve_device,
)
from tether.infra.rundir import RunDir
from tether.infra.seeds import item_seed
from tether.infra.texts import plain_text, read_prompts
from tether.judge.evaluator import Evaluator


def run_sft(corpus_dir: str | Path | None, config: SftConfig, *, resume_dir: Path | None = None,
            force: bool = False) -> tuple[RunDir, dict]:
    from transformers import set_seed

    run, corpus, examples, sampled, heldout, device, checkpoint = _open_run(corpus_dir, config, resume_dir, force)
    constitution = corpus.constitution()

    # --- the policy and the held-out evaluation before tuning ---------------------------------
    set_seed(config.seed)
    policy, tokenizer, lora = trainable_policy(config.policy_model or sampled.policy_model, sampled.adapter, config)
    policy.to(device)  # the trainer keeps it there: use_cpu follows the device
    judge_model, judge_tokenizer = load_causal_lm(sampled.judge_model, device=str(device), dtype=config.dtype or
                                                  sampled.dtype, trust_remote_code=config.trust_remote_code, fast_head=True)
    judge = Evaluator(judge_model, constitution, tokenizer=judge_tokenizer, batch_size=sampled.judge_batch_size)
    evaluate = HeldOut(judge, heldout, sampled, config)
    before = evaluate(policy, tokenizer, "before")

    # --- SFT with TRL -----------------------------------------------------------------------------
    trainer = _trainer(run, config, device, policy, tokenizer, lora, examples)
    progress.console.print(f"tuning on {len(examples)} corpus examples for {config.epochs:g} epochs -> {run.path}")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    with atomic.folder(run.path / "final") as building:  # whole or not at all
        trainer.save_model(str(building))

    # --- the same evaluation after, and the end --------------------------------------------------
    after = evaluate(trainer.model.eval(), tokenizer, "after")
    parent = str(sampled.adapter) if sampled.adapter else None
    evaluation = {"parent_adapter": parent, **compare(before, after, config, heldout)}
    atomic.write_json(run.path / "eval.json", evaluation)
    moved = {f"heldout/pass_rate/{when}": v for when, v in evaluation["pass_rate"].items()}
    moved.update({f"heldout/score/{name}/{when}": v for name, by in evaluation["mean_scores"].items() for when, v in by.items()})
    trackers.log_after_training(trainer, moved)  # the trackers' last step: where the held-out evaluation moved
    run.finish({"steps": trainer.state.global_step, "examples": len(examples), "parent_adapter": parent,
                "eval": evaluation["pass_rate"]})
    return run, evaluation


def _open_run(corpus_dir, config: SftConfig, resume_dir: Path | None, force: bool):
    """The corpus checked and the run directory started or rewound: (run, corpus, examples, the corpus's sample
    settings, held-out prompts, device, checkpoint or None). Every input is refused before anything is written."""
    run = RunDir(resume_dir or config.output_dir)
    checkpoint = None
    if resume_dir is not None:
        stored = run.config()
        corpus_dir = stored["corpus"]
        if run.is_finished():
            raise TetherError(f"{run.path}: this run has finished; nothing to resume")
    trackers.check_installed(config.report_to)  # before anything is written or loaded
    corpus = CorpusDir(corpus_dir).require()
    constitution = corpus.constitution()
    corpus.check_constitution(constitution)
    corpus.heal()
    examples = corpus.corpus()
    if not examples:
        raise TetherError(f"{corpus.corpus_path}: empty; nothing to train on (accept some samples first)")
    sampled = corpus.settings()
    heldout, device = _check_inputs(config, sampled, examples)  # before the run directory is written
    if resume_dir is not None:
        if stored["constitution_sha256"] != constitution.fingerprint():
            raise TetherError(f"{corpus.path}: its constitution changed since {run.path} started; start a new run")
        checkpoint, done_steps = run.last_checkpoint()
        run.rewind_to(done_steps)
        run.event("resume", from_step=done_steps)
    else:
        run.start({**config.model_dump(mode="json"), "corpus": str(corpus.path),
                   "constitution_sha256": constitution.fingerprint()}, force=force)
        run.event("parent_adapter", path=str(sampled.adapter) if sampled.adapter else None)
    return run, corpus, examples, sampled, heldout, device, checkpoint


def _trainer(run: RunDir, config: SftConfig, device, policy, tokenizer, lora, examples: list[dict]):
    """TRL's SFTTrainer on the corpus, logging each step to metrics.jsonl."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    class LogMetrics(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            run.append("metrics.jsonl", [{"step": state.global_step, **(logs or {})}])

    trainer = SFTTrainer(
        model=policy,
        args=SFTConfig(
            output_dir=str(run.checkpoints), num_train_epochs=config.epochs, per_device_train_batch_size=config.batch_size,
            learning_rate=config.learning_rate, max_length=config.max_length, logging_steps=1, save_strategy="epoch",
            seed=config.seed, use_cpu=device.type == "cpu",
            **checkpointing_args(SFTConfig),  # TRL's default, by the name this transformers knows
            **precision_args(device),  # never TRL's default bf16 autocast on a CPU (10x slower there)
            **trackers.trl_args(config.report_to, run.path),
        ),
        train_dataset=Dataset.from_list([training_pair(e) for e in examples]),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[LogMetrics()],
    )
    trackers.trackers_last(trainer, run.path)
    return trainer


def _check_inputs(config: SftConfig, sampled: SampleConfig, examples: list[dict]):
    """(held-out prompts, device): read and checked, with the adapter and the chat template, before any model loads."""
    heldout = read_prompts(config.heldout_prompts or sampled.prompts)
    policy, device = config.policy_model or sampled.policy_model, config.device or sampled.device
    trust = config.trust_remote_code
    check_model(policy, device=device, trust_remote_code=trust,  # its config.json alone: no weights yet
                lora_targets=config.lora_target_modules if sampled.adapter is None else ())  # an adapter has its own
    check_model(sampled.judge_model, device=device, dtype=config.dtype or sampled.dtype, trust_remote_code=trust)
    chats = [e["messages"] for e in examples if "messages" in e]
    check_chat_policy(policy, [*chats, *heldout], trust)
    if sampled.adapter is not None:
        check_adapter(sampled.adapter)  # the corpus was sampled with it: its training continues it
    return heldout, resolve_device(device)


def training_pair(example: dict) -> dict:
    """A corpus row for TRL: text, or for a chat prompt (`messages`) the conversational form, which
    SFTTrainer puts through the policy's chat template as the sampler did."""
    if "messages" in example:
        return {"prompt": example["messages"], "completion": [{"role": "assistant", "content": example["completion"]}]}
    return {"prompt": example["prompt"], "completion": example["completion"]}


def trainable_policy(policy_model: str, adapter: Path | None, config: SftConfig):
    """The policy to tune, and the LoRA config for TRL to add (None: the model already has its adapter).

    A corpus sampled with an adapter (round N's `final/`) is trained by continuing that adapter,
    loaded trainable, so the new `final/` on the base alone carries every round; merging it and
    training a fresh LoRA on top would save only the last round's delta. Its rank and targets are
    the adapter's own; `lora_*` apply to a corpus sampled from the base.
    """
    from peft import LoraConfig

    trust = config.trust_remote_code
    if adapter is None:
        model, tokenizer = load_policy(policy_model, device="cpu", trust_remote_code=trust)  # moved by the caller
        return model, tokenizer, LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha,
                                            target_modules=config.lora_target_modules, task_type="CAUSAL_LM")
    if not (Path(adapter) / "adapter_config.json").exists():
        raise TetherError(f"{adapter}: no LoRA adapter here (no adapter_config.json); the corpus was sampled with it")
    model, tokenizer = load_causal_lm(policy_model, device="cpu", trust_remote_code=trust, fast_head=True)
    return load_adapter(model, adapter, trainable=True), tokenizer, None


class HeldOut:
    """Completions for the held-out prompts, judged and filtered as `tether sample` would."""

    def __init__(self, judge: Evaluator, prompts: list[str], sampled: SampleConfig, config: SftConfig):
        self.judge, self.prompts, self.config = judge, prompts, config
        self.rules = sampled.model_copy(update={"keep": "threshold"})
        self.tokens = config.max_completion_tokens or sampled.max_completion_tokens

    def __call__(self, model, tokenizer, label: str) -> list[dict]:
        gen = Generator(model, tokenizer, temperature=self.rules.temperature,
                        suppress_special_tokens=self.rules.suppress_special_tokens)
        rows = []
        for i, prompt in enumerate(progress.track(self.prompts, f"Held-out prompts ({label})", total=len(self.prompts))):
            torch.manual_seed(item_seed(self.config.seed, i))  # the same draws before and after
            completions = independent(gen, prompt, self.config.eval_completions_per_prompt, self.tokens)
            shown = plain_text(prompt)  # a conversation with its roles, as the sampler judged it
            result = self.judge.score([shown + c for c in completions])
            group = [{"prompt": shown, "completion": c, "total": float(t), "scores": dict(zip(result.names, map(float, s))),
                      "monitors": monitor_values(c)} for c, t, s in zip(completions, result.total(), result.scores())]
            rows += decide(group, self.rules)
        return rows


def compare(before: list[dict], after: list[dict], config: SftConfig, prompts: list[str]) -> dict:
    names = list(before[0]["scores"]) + ["total"]

    def mean(rows, name):
        return float(np.mean([r["total"] if name == "total" else r["scores"][name] for r in rows]))

    def passed(rows):
        return sum(r["status"] == "kept" for r in rows) / len(rows)

    return {
        "prompts": len(prompts), "completions": len(before), "heldout_prompts": str(config.heldout_prompts or "(corpus prompts)"),
        "mean_scores": {n: {"before": round(mean(before, n), 4), "after": round(mean(after, n), 4)} for n in names},
        "pass_rate": {"before": round(passed(before), 4), "after": round(passed(after), 4)},
        "samples": {"before": before, "after": after},
    }
