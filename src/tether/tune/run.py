"""`tether tune`: RLAIF against a constitution with TRL and LoRA, logged to a run directory.

    tether tune examples/tune_cheerful.yaml                 # a fresh run
    tether tune examples/tune_cheerful.yaml --set steps=5   # any field overridden
    tether tune --resume runs/cheerful                      # continue after a crash

`run_tune` reads top to bottom as its phases: inputs checked (before the run directory is written: a typo
leaves nothing behind) -> run directory -> seed -> models and judges -> reward terms -> TRL's GRPOTrainer or
RLOOTrainer -> train -> finish. tether supplies the reward, the monitors and the bookkeeping.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from transformers import PrinterCallback

from tether.defenses.embedding_kl import EmbeddingKL
from tether.defenses.utility import InstrumentalUtility, ValueStore
from tether.defenses.utility_callback import ValueStoreCallback
from tether.errors import TetherError
from tether.infra import atomic, jsonl, progress, ranks, threads, trackers
from tether.infra.generate import check_chat_policy
from tether.infra.models import check_adapter, check_embedder, load_adapter, load_causal_lm, load_embedder
from tether.infra.rundir import RunDir
from tether.infra.texts import load_base, read_prompts
from tether.judge.constitution import load_constitution
from tether.judge.remote import RemoteEvaluator, is_remote
from tether.labels.gold_judge import GoldSpec, check_gold, load_gold
from tether.labels.judges import check_models
from tether.rewards.constitution import ConstitutionReward
from tether.rewards.gold import GoldReward
from tether.rewards.paid import load_judges
from tether.rewards.shaping import RewardShape, reference_baseline
from tether.tune.config import TuneConfig
from tether.tune.process import with_process
from tether.tune.trainer import check_batch_splits, suppressed_ids, trl_config, vllm_args
from tether.watch import spotcheck
from tether.watch.callbacks import DetectorCallback, MonitorCallback, RewardTerm, StepPrinter
from tether.watch.drift import EmbeddingDrift, sample_base, save_base
from tether.watch.metrics import is_tether_metric
from tether.watch.shift import ShiftTest


def run_tune(config: TuneConfig, *, resume: bool = False, force: bool = False, callbacks: list | None = None) -> RunDir:
    """Tune as `config` says; `callbacks` are extra TRL callbacks (a profiler, a logger of your own)."""
    from accelerate import PartialState
    from transformers import set_seed

    PartialState()  # under torchrun / accelerate launch: joins the process group (gloo on CPU)
    inputs = check_inputs(config)  # every input refused before the run directory is written
    run, checkpoint, done_steps = open_run(config, resume, force)
    set_seed(config.seed)
    parts = load_parts(config, inputs, run)
    terms, utility, refit = reward_terms(config, inputs, parts, run, checkpoint)
    extra = [*refit, threads.load_check(), *(callbacks or [])]  # load_check: one note if other work shares the cores
    trainer, detector = build_trainer(config, inputs, parts, run, terms, utility, extra)
    if resume:  # the trips and metrics from before the checkpoint (the files were rewound to it above)
        detector.restore(jsonl.read(run.path / "events.jsonl"), jsonl.read(run.path / "metrics.jsonl"))
    if ranks.is_main():
        progress.console.print(f"tuning {config.policy_model} for {config.steps} steps on "
                               f"{ranks.world_size()} process(es), {threads.describe()} -> {run.path}")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finish(config, run, trainer, detector, done_steps)
    return run


# --- 1. inputs ------------------------------------------------------------------------------


@dataclass
class Inputs:
    """What the config names, read and checked before anything is written."""

    prompts: list
    constitutions: list  # the train judge's, then a judge ensemble's others
    gold: object  # check_gold's result for gold_constitution
    paid: list  # ... for gold_reward's path and `also`
    vllm: dict
    step_judge: object = None  # check_gold's result for process.judge


def check_inputs(config: TuneConfig) -> Inputs:
    """Refuse bad inputs now, so a mistyped path leaves no run directory behind to block the next try."""
    check_batch_splits(config)
    vllm = vllm_args(config)  # refused on a machine without a GPU
    trackers.check_installed(config.report_to)  # and a tracker that is not installed
    prompts = read_prompts(config.prompts)
    check_chat_policy(config.policy_model, prompts, config.trust_remote_code)  # conversations need a chat template
    constitutions = [load_constitution(config.constitution), *(load_constitution(j.constitution) for j in config.judges)]
    for name in {config.judge_model, *(j.model for j in config.judges if j.model)}:
        if is_remote(name):  # a served judge is asked now, so a wrong URL leaves no run directory behind
            RemoteEvaluator.check(name)
    check_models(config, *(j.model for j in config.judges))  # config.json alone, before any weights load
    if config.embedder:
        check_embedder(config.embedder, trust_remote_code=config.trust_remote_code)
    if config.init_adapter is not None:
        check_adapter(config.init_adapter)  # adapter_config.json and safetensors weights, before any model loads
    gold = check_gold(config.gold_constitution, config.device)  # a constitution or a fitted gold folder
    paid = [check_gold(p, config.device) for p in [config.gold_reward.path, *config.gold_reward.also]
            ] if config.gold_reward.weight else []
    step_judge = check_gold(config.process.judge, config.device) if config.reward_mode != "outcome" else None
    return Inputs(prompts, constitutions, gold, paid, vllm, step_judge)


# --- 2. the run directory: written by the main process only ---------------------------------


def open_run(config: TuneConfig, resume: bool, force: bool) -> tuple[RunDir, Path | None, int]:
    """Start the run directory, or rewind it to its last checkpoint; every process stops on a refusal."""
    run = RunDir(config.output_dir)
    checkpoint, done_steps = (None, 0)
    if resume:
        if run.is_finished():
            raise TetherError(f"{run.path}: this run has finished; nothing to resume")
        checkpoint, done_steps = run.last_checkpoint()
    refusal = None
    if ranks.is_main():
        try:
            if resume:
                run.rewind_to(done_steps)
                if checkpoint is not None and (checkpoint / "values").is_dir():  # the run's store, as at the checkpoint
                    ValueStore.load(checkpoint / "values").save(run.path / "values")
                run.event("resume", from_step=done_steps, processes=ranks.world_size())
            else:
                run.start(config.model_dump(mode="json"), force=force)
            if config.spot_check.every:  # the spec the spot-check hint names, when the config names none
                refit = [config.gold_reward.refit_label] if config.gold_reward.refit_every else []
                spotcheck.write_spec(run.path, config.spot_check, refit)
        except TetherError as e:
            refusal = str(e)
    refusal = ranks.broadcast(refusal)  # every process stops, not only the one that writes
    if refusal:
        raise TetherError(refusal)
    return run, checkpoint, done_steps


# --- 3. models, judges and what the monitors compare against -------------------------------


@dataclass
class Parts:
    policy: object
    tokenizer: object
    reward: ConstitutionReward
    gold: object
    shared: tuple | None  # the train judge's (model, tokenizer), reused by golds on the same model
    suppress: list[int] | None
    embedder: object
    base_samples: dict | None
    drift: EmbeddingDrift | None = None
    shift: ShiftTest | None = None
    extra: list = field(default_factory=list)


def load_parts(config: TuneConfig, inputs: Inputs, run: RunDir) -> Parts:
    trust = config.trust_remote_code
    policy, tokenizer = load_causal_lm(config.policy_model, device=config.device, trust_remote_code=trust, fast_head=True)  # float32
    loaded = {} if is_remote(config.judge_model) else {  # a served judge has no local weights to share
        config.judge_model: load_causal_lm(config.judge_model, device=config.device, dtype=config.dtype,
                                           trust_remote_code=trust, fast_head=True)}
    judge, *more = load_judges(config, inputs.constitutions, loaded)
    shared = loaded.get(config.judge_model)
    reads_prompt = config.judge_reads == "conversation"
    gold = load_gold(GoldSpec.of(config), inputs.gold, shared=shared, include_prompt=reads_prompt)
    reward = ConstitutionReward(judge, include_prompt=reads_prompt, extra=more, ensemble=config.ensemble,
                                ensemble_lambda=config.ensemble_lambda)
    suppress = suppressed_ids(tokenizer, config)
    embedder = (load_embedder(config.embedder, device=config.device, trust_remote_code=trust)
                if config.embedder else None)
    base_samples = _base_samples(config, run, policy, tokenizer, inputs.prompts, suppress)
    reward.shape = RewardShape(config.reward_shape, reference_baseline(reward.raw, base_samples)
                               if config.reward_shape == "reference" else None)  # r_base: the base's mean score
    parts = Parts(policy, tokenizer, reward, gold, shared, suppress, embedder, base_samples)
    if embedder:
        parts.drift = EmbeddingDrift(embedder, base_samples)
        parts.shift = ShiftTest(parts.drift.base_vectors, config.detectors.shift_window, config.detectors.shift_alpha,
                                config.seed)
    return parts


# --- 4. the reward: the constitution, and the defenses that are on -------------------------


def reward_terms(config: TuneConfig, inputs: Inputs, parts: Parts, run: RunDir, checkpoint: Path | None):
    """(terms, the utility or None, callbacks the terms need): each term a weighted TRL reward function."""
    terms, utility, callbacks = [RewardTerm("constitution", config.constitution_weight, parts.reward)], None, []
    if config.embedding_kl.coef:
        terms.append(RewardTerm("embedding_kl", config.embedding_kl.coef, EmbeddingKL(
            parts.embedder, parts.base_samples, config.embedding_kl.distance, config.embedding_kl.bandwidth)))
    if config.utility.weight:
        stored = checkpoint / "values" if checkpoint else None  # the store as it was at the checkpoint
        utility = InstrumentalUtility(parts.embedder, config.utility,
                                      ValueStore.load(stored) if stored and stored.exists() else None,
                                      limits=config.detectors.limits())
        terms.append(RewardTerm("utility", config.utility.weight, utility))
    if config.gold_reward.weight:  # the person's labels, fitted, paid (rewards/gold.py)
        paths = [config.gold_reward.path, *config.gold_reward.also]
        paid = [load_gold(GoldSpec.of(config, p), checked, shared=parts.shared) for p, checked in zip(paths, inputs.paid)]
        terms.append(RewardTerm("gold_reward", config.gold_reward.weight, GoldReward(paid, config.gold_reward.shape)))
        if config.gold_reward.refit_every:  # the person's answers refit it as the run goes (tune/refit.py)
            from tether.tune.refit import RefitCallback

            callbacks.append(RefitCallback(terms[-1].function, config, run))
    if config.reward_mode != "outcome":  # each step judged blind to what follows (rewards/process.py)
        from tether.rewards.process import ProcessReward, step_scorer

        gold = load_gold(GoldSpec.of(config, config.process.judge), inputs.step_judge, shared=parts.shared)
        terms.append(RewardTerm("process", 0.0, ProcessReward(step_scorer(parts.reward, gold), config.process)))
    if config.passage_weight:  # the source text's "embedding of an objective" (rewards/passage.py)
        from tether.rewards.passage import PassageReward

        terms.append(RewardTerm("passage", config.passage_weight, PassageReward(parts.embedder, config.passages)))
    return terms, utility, callbacks


# --- 5. the TRL trainer ---------------------------------------------------------------------


def build_trainer(config: TuneConfig, inputs: Inputs, parts: Parts, run: RunDir, terms: list, utility, callbacks: list):
    """TRL's trainer with tether's callbacks first (values, monitors, detectors, the step line), then the caller's."""
    from datasets import Dataset
    from peft import LoraConfig

    detector = DetectorCallback(parts.reward, config.detectors, action=config.on_hack, run_dir=run,
                                spot_check=config.spot_check)
    monitor = MonitorCallback(parts.reward, gold=parts.gold, run_dir=run, drift=parts.drift, terms=terms[1:],
                              constitution_weight=config.constitution_weight, shift=parts.shift,
                              spot_check=config.spot_check, seed=config.seed)
    weights = [0.0 if config.reward_mode == "process" else t.weight for t in terms]  # process: steps alone pay
    trainer_cls, trainer_args = trl_config(config, run, suppress=parts.suppress, vllm_args=inputs.vllm, weights=weights)
    trainer_cls, process = with_process(trainer_cls, config.reward_mode, terms)  # process | both: per-token advantages
    trainer = trainer_cls(
        model=load_adapter(parts.policy, config.init_adapter, trainable=True) if config.init_adapter else parts.policy,
        reward_funcs=[t.function for t in terms],
        args=trainer_args,
        processing_class=parts.tokenizer,
        train_dataset=Dataset.from_dict({"prompt": inputs.prompts}),
        peft_config=None if config.init_adapter else LoraConfig(
            r=config.lora_rank, lora_alpha=config.lora_alpha, target_modules=config.lora_target_modules,
            task_type="CAUSAL_LM"),
        callbacks=[*([ValueStoreCallback(utility, run)] if utility else []), monitor, detector,
                   StepPrinter(config.steps), *callbacks],
        **process,
    )
    trainer.remove_callback(PrinterCallback)  # StepPrinter shows each step instead of a raw dict
    trackers.trackers_last(trainer, run.path)  # so they see the metrics tether's callbacks add to each step's logs
    return trainer, detector


# --- 6. the end -----------------------------------------------------------------------------


def finish(config: TuneConfig, run: RunDir, trainer, detector: DetectorCallback, done_steps: int) -> None:
    """The final adapter saved whole, the early stop recorded, the run marked finished."""
    _save_final(trainer, run)
    agree = _ranks_agree(trainer.state.log_history)
    if ranks.is_main():
        stopped = config.on_hack == "stop" and bool(detector.tripped)
        if stopped:
            run.event("early_stop", step=trainer.state.global_step, best=detector.best)
        run.finish({"steps": trainer.state.global_step, "resumed_from": done_steps or None,
                    "detector_trips": detector.tripped, "stopped_early": stopped, "best": detector.best,
                    "processes": ranks.world_size(), "processes_agree": agree})
    ranks.barrier()


def _save_final(trainer, run: RunDir) -> None:
    """The final adapter, whole or not at all: saved beside `final/` by every process (TRL's
    save is collective; only the main process writes), then renamed into place."""
    building = run.path / ".final.building.tmp"  # an atomic temporary: --force and resume clean it up
    if ranks.is_main():
        shutil.rmtree(building, ignore_errors=True)
    ranks.barrier()
    trainer.save_model(str(building))
    ranks.barrier()
    if ranks.is_main():
        atomic.publish(building, run.path / "final")
    ranks.barrier()


def _ranks_agree(log_history: list[dict]) -> bool:
    """Every process logged the same tether metrics (the detectors on each decided alike)."""
    mine = [{k: v for k, v in entry.items() if is_tether_metric(k)} for entry in log_history]
    return all(other == mine for other in ranks.gather([mine]))


def _base_samples(config: TuneConfig, run: RunDir, policy, tokenizer, prompts, suppress) -> dict[str, list[str]] | None:
    """The base model's completions, sampled before any training and cached in the run directory."""
    if config.embedder is None and config.reward_shape != "reference":  # drift, the defenses and r_base read them
        return None
    path = run.path / "base_samples.jsonl"
    if ranks.is_main() and not path.exists():
        samples = sample_base(policy, tokenizer, prompts, config.base_samples_per_prompt,
                              config.max_completion_tokens, config.temperature, suppress, config.seed)
        save_base(path, samples)
    ranks.barrier()
    return load_base(path)
