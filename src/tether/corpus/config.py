"""The configs of `tether sample` and `tether sft`: every field documented, validated, saved.

Written as YAML (see examples/sample_cheerful.yaml); any field can be overridden on the
command line with `--set field=value` (read as YAML), like `tether tune`'s config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from tether.infra.models import DEVICE_PATTERN, EMBEDDED_LM
from tether.infra.trackers import ReportTo
from tether.labels.gold_judge import GoldPath


class MonitorLimits(BaseModel):
    """A candidate that trips any of these is rejected, whatever its score; the reason is recorded.

    Each limit is named as its monitor (`tether.watch.metrics`), as the detectors' are; the
    names before 0.2 (`max_repetition`, `min_words`, ...) are still read.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)
    affirmation_rate: float = Field(0.1, ge=0, validation_alias=AliasChoices("affirmation_rate", "max_affirmation_rate"),
                                    description="most affirmation words (yes, sure, ...) per word")
    special_token_rate: float = Field(0.0, ge=0, validation_alias=AliasChoices("special_token_rate", "max_special_token_rate"),
                                      description="most special-token strings (`<eos>`, ...) per word")
    repetition: float = Field(0.3, ge=0, le=1, validation_alias=AliasChoices("repetition", "max_repetition"),
                              description="most word 3-grams that repeat an earlier one")
    longest_repeat_run: int = Field(3, ge=1, validation_alias=AliasChoices("longest_repeat_run", "max_repeat_run"),
                                    description="most back-to-back repeats of a 1-4 word unit")
    words: int = Field(3, ge=0, validation_alias=AliasChoices("words", "min_words"),
                       description="fewest words in a completion")


class SampleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # --- what to sample, judged by what ------------------------------------------------
    policy_model: str = Field(EMBEDDED_LM, description="the model to sample from: hub id, local folder or embedded name")
    adapter: Path | None = Field(None, description="a LoRA adapter on top of policy_model, e.g. an sft run's `final/`")
    constitution: Path = Field(description="the constitution the samples are scored and filtered with")
    judge_model: str = Field(EMBEDDED_LM, description="the judge's model")
    gold_constitution: GoldPath = Field(
        None, description="a gold judge, scored for reference, never filtered on: a second constitution YAML, "
        "or a folder with gold.json fitted to your labels by `tether gold fit`"
    )
    gold_model: str | None = Field(None, description="a gold constitution's model (default: judge_model; a gold folder ignores it)")
    gold_debias: bool = Field(True, description="score a gold constitution debiased (a gold folder ignores it)")
    prompts: Path = Field(description="prompts: .txt (one per line) or .jsonl (field `prompt`)")

    # --- generation ---------------------------------------------------------------------
    search: Literal["independent", "tree"] = Field(
        "independent", description="independent: N whole completions a prompt; tree: weave-style search in chunks"
    )
    completions_per_prompt: int = Field(8, ge=1, description="N: candidates a prompt (tree: the leaves of the last round)")
    max_completion_tokens: int = Field(32, ge=1, description="tokens generated per completion")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the policy")
    suppress_special_tokens: bool = Field(
        True, description="forbid the policy's special and unused tokens (except end-of-text): the judge pays for them"
    )
    tree_chunk_tokens: int = Field(8, ge=1, description="tree: tokens generated per branch per round")
    tree_width: int = Field(2, ge=1, description="tree: branches kept and expanded each round")
    tree_temperature: float = Field(
        0.5, gt=0, description="tree: branches are kept by sampling softmax(score / this); small keeps the best"
    )

    # --- filtering ----------------------------------------------------------------------
    keep: Literal["best", "threshold"] = Field(
        "threshold", description="best: the top keep_best of each prompt; threshold: every one above the thresholds"
    )
    keep_best: int = Field(1, ge=1, description="best: candidates kept a prompt")
    threshold: float = Field(0.0, description="minimum score (signed log-odds) on every principle to pass")
    principle_thresholds: dict[str, float] = Field(
        default_factory=dict, description="per-principle minimum scores, overriding `threshold`"
    )
    monitors: MonitorLimits = Field(default_factory=MonitorLimits, description="monitor limits (see below)")

    # --- the run ------------------------------------------------------------------------
    seed: int = Field(0, description="seed for sampling")
    output_dir: Path = Field(Path("corpus/cheerful"), description="the corpus directory")
    judge_batch_size: int = Field(16, ge=1, description="texts per judge forward pass")
    device: str = Field(
        "auto", pattern=DEVICE_PATTERN, description="where the policy and judges run: auto (CUDA when present), cpu, cuda or cuda:N"
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="the policy's and judges' precision: auto is bfloat16 where the hardware has bf16 units, "
        "float32 elsewhere")
    trust_remote_code: bool = Field(False, description="let the policy and judges run Python code of their own from "
                                    "the hub (`--trust-remote-code`; off: safer)")

    def threshold_for(self, principle: str) -> float:
        return self.principle_thresholds.get(principle, self.threshold)


class SftConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    policy_model: str | None = Field(None, description="the model to tune (default: the corpus's policy_model)")
    heldout_prompts: Path | None = Field(
        None, description="prompts scored before and after tuning (default: the corpus's prompts, not held out)"
    )
    eval_completions_per_prompt: int = Field(4, ge=1, description="completions a held-out prompt, before and after")
    max_completion_tokens: int | None = Field(None, description="tokens per evaluation completion (default: the corpus's)")
    epochs: float = Field(3.0, gt=0, description="passes over the corpus")
    batch_size: int = Field(4, ge=1, description="corpus examples per optimizer step")
    learning_rate: float = Field(2e-4, gt=0, description="AdamW learning rate of the LoRA weights")
    max_length: int = Field(256, ge=8, description="tokens of prompt + completion kept for training")
    lora_rank: int = Field(16, ge=1, description="LoRA rank r")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha; the update is scaled by alpha / r")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], description="module names that get LoRA adapters"
    )
    seed: int = Field(0, description="seed for LoRA initialisation, data order and evaluation sampling")
    output_dir: Path = Field(Path("runs/sft"), description="the run directory")
    device: str | None = Field(
        None, pattern=DEVICE_PATTERN, description="where the policy and judge run: auto, cpu, cuda or cuda:N (default: the corpus's)"
    )
    dtype: Literal["auto", "float32", "bfloat16"] | None = Field(
        None, description="the judge's precision (default: the corpus's); the policy trains in float32"
    )
    trust_remote_code: bool = Field(False, description="let the policy and the judge run Python code of their own "
                                    "from the hub (`--trust-remote-code`; off: safer)")
    report_to: ReportTo = Field(
        "none", description="experiment trackers that get TRL's metrics and the held-out evaluation: tensorboard (RUN/tb), "
        "wandb (offline, RUN/wandb), trackio, a list of them, or none"
    )

