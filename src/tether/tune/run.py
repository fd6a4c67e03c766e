"""`tether tune`: RLAIF against a constitution with TRL and LoRA, logged to a run directory.

    tether tune examples/tune_cheerful.yaml                 # a fresh run
    tether tune examples/tune_cheerful.yaml --set steps=5   # any field overridden
    tether tune --resume runs/cheerful                      # continue after a crash

Reads top to bottom: config -> inputs (prompts, constitutions) -> run directory -> seed ->
models -> judges -> TRL trainer -> train -> final adapter. Inputs are read before the run
directory is written, so a mistyped path leaves nothing behind to block the next try. The RL engine is TRL's GRPOTrainer or RLOOTrainer;
tether supplies the reward (the constitution), the monitors and the bookkeeping.
"""

from __future__ import annotations

import shutil

import torch
from transformers import PrinterCallback

from tether.defenses.embedding_kl import EmbeddingKL
from tether.defenses.utility import InstrumentalUtility, ValueStore
from tether.errors import TetherError
from tether.infra import atomic, jsonl, progress, ranks, trackers
from tether.infra.generate import check_chat_policy
from tether.infra.models import (
    checkpointing_args,
    load_causal_lm,
    load_embedder,
    precision_args,
    resolve_device,
)
from tether.infra.rundir import RunDir
from tether.infra.texts import read_prompts
from tether.judge.constitution import load_constitution
from tether.judge.evaluator import Evaluator
from tether.judge.gold_judge import check_gold, load_gold
from tether.judge.remote import RemoteEvaluator, is_remote, make_evaluator
from tether.judge.tokens import SafeTokenizer
from tether.tune.config import TuneConfig
from tether.tune.gold_reward import GoldReward
from tether.tune.rewards import ConstitutionReward
from tether.tune.shaping import RewardShape, reference_baseline
from tether.watch.callbacks import (
    DetectorCallback,
    MonitorCallback,
    RewardTerm,
    StepPrinter,
    ValueStoreCallback,
)
from tether.watch.drift import EmbeddingDrift, load_base, sample_base, save_base
from tether.watch.metrics import is_tether_metric
from tether.watch.shift import ShiftTest


def run_tune(config: TuneConfig, *, resume: bool = False, force: bool = False, callbacks: list | None = None) -> RunDir:
    """Tune as `config` says; `callbacks` are extra TRL callbacks (a profiler, a logger of your own)."""
    from accelerate import PartialState
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import set_seed

    PartialState()  # under torchrun / accelerate launch: joins the process group (gloo on CPU)
    _check_batch_splits(config)
    vllm_args = _vllm_args(config)  # refused before anything is written, on a machine without a GPU
    trackers.check_installed(config.report_to)  # and a tracker that is not installed
    prompts = read_prompts(config.prompts)  # bad inputs, too, are refused before the run directory is written
    check_chat_policy(config.policy_model, prompts)  # conversations need the policy's chat template
    constitution = load_constitution(config.constitution)
    more_constitutions = [load_constitution(j.constitution) for j in config.judges]  # a judge ensemble's others
    for name in {config.judge_model, *(j.model for j in config.judges if j.model)}:
        if is_remote(name):  # a served judge is asked now, so a wrong URL leaves no run directory behind
            RemoteEvaluator.check(name)
    gold_checked = check_gold(config.gold_constitution, config.device)  # a constitution or a fitted gold folder
    paid_checked = [check_gold(p, config.device) for p in [config.gold_reward.path, *config.gold_reward.also]
                    ] if config.gold_reward.weight else []

    # --- run directory: written by the main process only ---------------------------------
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
        except TetherError as e:
            refusal = str(e)
    refusal = ranks.broadcast(refusal)  # every process stops, not only the one that writes
    if refusal:
        raise TetherError(refusal)

    # --- seed, in one place -------------------------------------------------------------
    set_seed(config.seed)

    # --- models and judges --------------------------------------------------------------
    policy, tokenizer = load_causal_lm(config.policy_model, device=config.device)  # trains in float32
    loaded = {} if is_remote(config.judge_model) else {  # a served judge has no local weights to share
        config.judge_model: load_causal_lm(config.judge_model, device=config.device, dtype=config.dtype)}
    judge, *more = _judges(config, [constitution, *more_constitutions], loaded)
    judge_model, judge_tokenizer = loaded.get(config.judge_model, (None, None))
    shared = (judge_model, judge_tokenizer) if judge_model is not None else None
    reads_prompt = config.judge_reads == "conversation"
    gold = load_gold(config, gold_checked, shared=shared, include_prompt=reads_prompt)
    reward = ConstitutionReward(judge, include_prompt=reads_prompt, extra=more, ensemble=config.ensemble,
                                ensemble_lambda=config.ensemble_lambda)
    suppress = _suppressed_ids(tokenizer, config)
    embedder = load_embedder(config.embedder, device=config.device) if config.embedder else None
    base_samples = _base_samples(config, run, policy, tokenizer, prompts, suppress)
    reward.shape = RewardShape(config.reward_shape, reference_baseline(reward.raw, base_samples)
                               if config.reward_shape == "reference" else None)  # r_base: the base's mean score
    drift = EmbeddingDrift(embedder, base_samples) if embedder else None
    shift = ShiftTest(drift.base_vectors, config.detectors.shift_window, config.detectors.shift_alpha,
                      config.seed) if drift else None

    # --- the reward: the constitution, and the defenses that are on ---------------------
    terms = [RewardTerm("constitution", config.constitution_weight, reward)]
    if config.embedding_kl.coef:
        terms.append(RewardTerm("embedding_kl", config.embedding_kl.coef, EmbeddingKL(
            embedder, base_samples, config.embedding_kl.distance, config.embedding_kl.bandwidth)))
    utility = None
    if config.utility.weight:
        stored = checkpoint / "values" if checkpoint else None  # the store as it was at the checkpoint
        utility = InstrumentalUtility(embedder, config.utility,
                                      ValueStore.load(stored) if stored and stored.exists() else None,
                                      limits=config.detectors.limits())
        terms.append(RewardTerm("utility", config.utility.weight, utility))
    if config.gold_reward.weight:  # the person's labels, fitted, paid (tune/gold_reward.py)
        paid = [load_gold(config.model_copy(update={"gold_constitution": p}), checked, shared=shared)
                for p, checked in zip([config.gold_reward.path, *config.gold_reward.also], paid_checked)]
        terms.append(RewardTerm("gold_reward", config.gold_reward.weight, GoldReward(paid, config.gold_reward.shape)))
        if config.gold_reward.refit_every:  # the person's answers refit it as the run goes (tune/refit.py)
            from tether.tune.refit import RefitCallback

            callbacks = [*(callbacks or []), RefitCallback(terms[-1].function, config, run)]
    if config.passage_weight:  # the source text's "embedding of an objective" (tether/steer/reward.py)
        from tether.steer.reward import PassageReward

        terms.append(RewardTerm("passage", config.passage_weight, PassageReward(embedder, config.passages)))

    # --- the TRL trainer ----------------------------------------------------------------
    detector = DetectorCallback(reward, config.detectors, action=config.on_hack, run_dir=run,
                                spot_check=config.spot_check)
    if resume:  # the trips and metrics from before the checkpoint (the files were rewound to it above)
        detector.restore(jsonl.read(run.path / "events.jsonl"), jsonl.read(run.path / "metrics.jsonl"))
    trainer_cls, trainer_args = _trl_config(config, run, suppress=suppress, vllm_args=vllm_args,
                                            weights=[t.weight for t in terms])
    trainer = trainer_cls(
        model=policy,
        reward_funcs=[t.function for t in terms],
        args=trainer_args,
        processing_class=tokenizer,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        peft_config=LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha,
                               target_modules=config.lora_target_modules, task_type="CAUSAL_LM"),
        callbacks=[*([ValueStoreCallback(utility, run)] if utility else []),
                   MonitorCallback(reward, gold=gold, run_dir=run, drift=drift, terms=terms[1:],
                                   constitution_weight=config.constitution_weight, shift=shift,
                                   spot_check=config.spot_check, seed=config.seed), detector,
                   StepPrinter(config.steps), *(callbacks or [])],
    )
    trainer.remove_callback(PrinterCallback)  # StepPrinter shows each step instead of a raw dict
    trackers.trackers_last(trainer, run.path)  # so they see the metrics tether's callbacks add to each step's logs
    if ranks.is_main():
        progress.console.print(f"tuning {config.policy_model} for {config.steps} steps on "
                               f"{ranks.world_size()} process(es) -> {run.path}")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)

    # --- the end ------------------------------------------------------------------------
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
    return run


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


def _check_batch_splits(config: TuneConfig) -> None:
    """prompts_per_step x completions_per_prompt is the whole step's batch, split over processes."""
    batch, n = config.prompts_per_step * config.completions_per_prompt, ranks.world_size()
    if batch % n:
        raise TetherError(f"prompts_per_step x completions_per_prompt = {batch} completions a step cannot be split "
                          f"evenly over {n} processes; make it a multiple of {n}")


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


def _judges(config: TuneConfig, constitutions: list, loaded: dict) -> list[Evaluator]:
    """The train judge, then `judges`' others; a model named twice is loaded once (`loaded`: name -> (model, tokenizer))."""
    models = [config.judge_model, *[j.model or config.judge_model for j in config.judges]]
    out = []
    for name, constitution in zip(models, constitutions):
        if not is_remote(name) and name not in loaded:
            loaded[name] = load_causal_lm(name, device=config.device, dtype=config.dtype)
        out.append(make_evaluator(name, constitution, batch_size=config.judge_batch_size, shared=loaded.get(name),
                                  top_k=config.judge_top_k))
    return out


def _suppressed_ids(tokenizer, config: TuneConfig) -> list[int] | None:
    """Special and unused tokens, except end-of-text: the judge would pay for them."""
    if not config.suppress_special_tokens:
        return None
    return sorted(SafeTokenizer(tokenizer).control_ids - {tokenizer.eos_token_id})


def _trl_config(config: TuneConfig, run: RunDir, suppress: list[int] | None, vllm_args: dict, weights: list[float]):
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    trainer_cls, config_cls = (GRPOTrainer, GRPOConfig) if config.algorithm == "grpo" else (RLOOTrainer, RLOOConfig)
    args = config_cls(
        output_dir=str(run.checkpoints),
        max_steps=config.steps,
        per_device_train_batch_size=config.prompts_per_step * config.completions_per_prompt // ranks.world_size(),
        num_generations=config.completions_per_prompt,
        max_completion_length=config.max_completion_tokens,
        temperature=config.temperature,
        learning_rate=config.learning_rate,
        beta=config.kl_coef,
        reward_weights=weights,
        generation_kwargs=_suppression(suppress, vllm=bool(vllm_args)),
        logging_steps=1,
        save_strategy="steps",
        save_steps=config.save_every,
        seed=config.seed,
        use_cpu=resolve_device(config.device).type == "cpu",
        **checkpointing_args(config_cls),  # TRL's default, by the name this transformers knows
        **precision_args(config.device),  # never TRL's default bf16 autocast on a CPU (10x slower there)
        disable_tqdm=True,
        **vllm_args,
        **trackers.trl_args(config.report_to, run.path),
    )
    return trainer_cls, args


def _suppression(suppress: list[int] | None, vllm: bool) -> dict | None:
    """Forbidden tokens, said the way the generator understands: transformers or vLLM's SamplingParams."""
    if not suppress:
        return None
    return {"logit_bias": {i: -100.0 for i in suppress}} if vllm else {"suppress_tokens": suppress}


def _vllm_args(config: TuneConfig) -> dict:
    """TRL's vLLM generation (GPU only): colocated in the training process, or a `trl vllm-serve` server."""
    if config.vllm == "off":
        return {}
    if not torch.cuda.is_available():
        raise TetherError(f"vllm: {config.vllm}: vLLM generation needs a GPU; set vllm: off on this machine")
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise TetherError("vllm: vLLM is not installed; pip install vllm (on a GPU machine), or set vllm: off") from None
    return {"use_vllm": True, "vllm_mode": config.vllm, "vllm_gpu_memory_utilization": config.vllm_gpu_memory}
