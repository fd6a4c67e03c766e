"""The TRL side of `tether tune`: the trainer's arguments, the batch split, vLLM, suppressed tokens.

`run.py` composes a run from these; nothing here writes a file.
"""

from __future__ import annotations

import torch

from tether.errors import TetherError
from tether.infra import ranks, trackers
from tether.infra.models import checkpointing_args, precision_args, resolve_device
from tether.infra.rundir import RunDir
from tether.infra.tokens import SafeTokenizer
from tether.tune.config import TuneConfig


def check_batch_splits(config: TuneConfig) -> None:
    """prompts_per_step x completions_per_prompt is the whole step's batch, split over processes."""
    batch, n = config.prompts_per_step * config.completions_per_prompt, ranks.world_size()
    if batch % n:
        raise TetherError(f"prompts_per_step x completions_per_prompt = {batch} completions a step cannot be split "
                          f"evenly over {n} processes; make it a multiple of {n}")


def suppressed_ids(tokenizer, config: TuneConfig) -> list[int] | None:
    """Special and unused tokens, except end-of-text: the judge would pay for them."""
    if not config.suppress_special_tokens:
        return None
    return sorted(SafeTokenizer(tokenizer).control_ids - {tokenizer.eos_token_id})


def trl_config(config: TuneConfig, run: RunDir, suppress: list[int] | None, vllm_args: dict, weights: list[float]):
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
        generation_kwargs=suppression(suppress, vllm=bool(vllm_args)),
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


def suppression(suppress: list[int] | None, vllm: bool) -> dict | None:
    """Forbidden tokens, said the way the generator understands: transformers or vLLM's SamplingParams."""
    if not suppress:
        return None
    return {"logit_bias": {i: -100.0 for i in suppress}} if vllm else {"suppress_tokens": suppress}


def vllm_args(config: TuneConfig) -> dict:
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
