"""`tether tune`: RLAIF against a constitution with TRL and LoRA, logged to a run directory.

    tether tune examples/tune_cheerful.yaml                 # a fresh run
    tether tune examples/tune_cheerful.yaml --set steps=5   # any field overridden
    tether tune --resume runs/cheerful                      # continue after a crash

Reads top to bottom: config -> run directory -> seed -> models -> judges -> data -> TRL
trainer -> train -> final adapter. The RL engine is TRL's GRPOTrainer or RLOOTrainer;
tether supplies the reward (the constitution), the monitors and the bookkeeping.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tether import progress
from tether.callbacks import DetectorCallback, MonitorCallback
from tether.errors import TetherError
from tether.evaluator import Evaluator
from tether.drift import EmbeddingDrift, load_base, sample_base, save_base
from tether.models import load_causal_lm, load_embedder
from tether.rewards import ConstitutionReward
from tether.rundir import RunDir
from tether.texts import read_prompts
from tether.tokens import SafeTokenizer
from tether.tune_config import TuneConfig


def run_tune(config: TuneConfig, *, resume: bool = False, force: bool = False) -> RunDir:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import set_seed

    # --- run directory ------------------------------------------------------------------
    run = RunDir(config.output_dir)
    checkpoint, done_steps = (None, 0)
    if resume:
        if run.is_finished():
            raise TetherError(f"{run.path}: this run has finished; nothing to resume")
        checkpoint, done_steps = run.last_checkpoint()
        run.rewind_to(done_steps)
        run.event("resume", from_step=done_steps)
    else:
        run.start(config.model_dump(mode="json"), force=force)

    # --- seed, in one place -------------------------------------------------------------
    set_seed(config.seed)

    # --- models and judges --------------------------------------------------------------
    prompts = read_prompts(config.prompts)
    policy, tokenizer = load_causal_lm(config.policy_model)
    judge_model, judge_tokenizer = load_causal_lm(config.judge_model)
    judge = Evaluator(judge_model, config.constitution, tokenizer=judge_tokenizer, batch_size=config.judge_batch_size)
    gold = None
    if config.gold_constitution is not None:
        gold_model, gold_tokenizer = (judge_model, judge_tokenizer)
        if config.gold_model not in (None, config.judge_model):
            gold_model, gold_tokenizer = load_causal_lm(config.gold_model)
        gold = Evaluator(gold_model, config.gold_constitution, tokenizer=gold_tokenizer,
                         debias=config.gold_debias, batch_size=config.judge_batch_size)
    reward = ConstitutionReward(judge)
    suppress = _suppressed_ids(tokenizer, config)
    drift = _embedding_drift(config, run, policy, tokenizer, prompts, suppress)

    # --- the TRL trainer ----------------------------------------------------------------
    detector = DetectorCallback(reward, config.detectors, action=config.on_hack, run_dir=run)
    trainer_cls, trainer_args = _trl_config(config, run, suppress=suppress)
    trainer = trainer_cls(
        model=policy,
        reward_funcs=[reward],
        args=trainer_args,
        processing_class=tokenizer,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        peft_config=LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha,
                               target_modules=config.lora_target_modules, task_type="CAUSAL_LM"),
        callbacks=[MonitorCallback(reward, gold=gold, run_dir=run, drift=drift), detector],
    )
    progress.console.print(f"tuning {config.policy_model} for {config.steps} steps -> {run.path}")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    # --- the end ------------------------------------------------------------------------
    trainer.save_model(str(run.path / "final"))
    stopped = config.on_hack == "stop" and bool(detector.tripped)
    if stopped:
        run.event("early_stop", step=trainer.state.global_step, best=detector.best)
    run.finish({"steps": trainer.state.global_step, "resumed_from": done_steps or None,
                "detector_trips": detector.tripped, "stopped_early": stopped, "best": detector.best})
    return run


def _embedding_drift(config: TuneConfig, run: RunDir, policy, tokenizer, prompts, suppress) -> EmbeddingDrift | None:
    """Base completions are sampled before any training and cached in the run directory."""
    if config.embedder is None:
        return None
    path = run.path / "base_samples.jsonl"
    if not path.exists():
        samples = sample_base(policy, tokenizer, prompts, config.base_samples_per_prompt,
                              config.max_completion_tokens, config.temperature, suppress, config.seed)
        save_base(path, samples)
    return EmbeddingDrift(load_embedder(config.embedder), load_base(path))


def _suppressed_ids(tokenizer, config: TuneConfig) -> list[int] | None:
    """Special and unused tokens, except end-of-text: the judge would pay for them."""
    if not config.suppress_special_tokens:
        return None
    return sorted(SafeTokenizer(tokenizer).control_ids - {tokenizer.eos_token_id})


def _trl_config(config: TuneConfig, run: RunDir, suppress: list[int] | None):
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    trainer_cls, config_cls = (GRPOTrainer, GRPOConfig) if config.algorithm == "grpo" else (RLOOTrainer, RLOOConfig)
    args = config_cls(
        output_dir=str(run.checkpoints),
        max_steps=config.steps,
        per_device_train_batch_size=config.prompts_per_step * config.completions_per_prompt,
        num_generations=config.completions_per_prompt,
        max_completion_length=config.max_completion_tokens,
        temperature=config.temperature,
        learning_rate=config.learning_rate,
        beta=config.kl_coef,
        generation_kwargs={"suppress_tokens": suppress} if suppress else None,
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_every,
        report_to=[],
        seed=config.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
    )
    return trainer_cls, args


def resume_config(run_dir: str | Path) -> TuneConfig:
    """The config a run was started with, for `--resume`."""
    return TuneConfig.model_validate(RunDir(run_dir).config())
