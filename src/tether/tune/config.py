"""The `tether tune` config: every field documented, validated, saved resolved in the run.

Write it as YAML (see examples/tune_cheerful.yaml); override any field on the command line
with `--set field=value` (the value is read as YAML: `--set steps=5`, `--set lora_target_modules=[q_proj,v_proj]`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tether.defenses.embedding_kl import EmbeddingKLConfig
from tether.defenses.utility import UtilityConfig
from tether.infra.models import DEVICE_PATTERN, EMBEDDED_LM
from tether.infra.rundir import RunDir
from tether.infra.trackers import ReportTo
from tether.labels.gold_judge import GoldPath
from tether.rewards.process import ProcessConfig
from tether.watch.detectors import DetectorConfig
from tether.watch.spotcheck import SpotCheckConfig


class GoldRewardConfig(BaseModel):
    """A gold judge (a folder from `tether gold fit`, or a constitution) paid as a reward term."""

    model_config = ConfigDict(extra="forbid")
    path: GoldPath = Field(None, description="the gold folder (or constitution YAML) whose log-odds the term pays")
    also: list[GoldPath] = Field(default_factory=list, description="more gold folders paid beside `path`, summed "
                                 "(e.g. on_task and cheerful fitted apart); relative to the working directory")
    shape: Literal["raw", "log_sigmoid"] = Field("raw", description="what each gold pays: raw log-odds, or "
                                                 "log_sigmoid = log P(yes), so the sum over golds is log of "
                                                 "the product of their probabilities (bounded above by 0)")
    weight: float = Field(0.0, ge=0, description="its weight in the reward sum; 0 = off")
    refit_every: int = Field(0, ge=0, description="refit the gold every N steps on a person's answers to the spot "
                             "check (needs spot_check.every = N); 0 = never (tune/refit.py). `path`'s gold is "
                             "refit; `also` golds are paid unchanged")
    refit_labels: list[Path] = Field(default_factory=list, description="the labels file(s) the first gold was fitted "
                                     "on (relative to the working directory); each refit fits on them plus every answer of the run so far")
    refit_label: str = Field("good", description="the question the refit gold predicts")
    refit_features: str = Field("minilm", description="the refit gold's features: minilm or hidden:MODEL")
    refit_wait: float = Field(3600.0, gt=0, description="seconds to wait for the answers before skipping a round")
    refit_recent_weight: float = Field(3.0, ge=1, description="each answer given during the run weighs this many "
                                       "starting labels in a refit: the policy's current texts count most")

    @model_validator(mode="after")
    def _path_when_weighted(self):
        if self.weight and self.path is None:
            raise ValueError("gold_reward.weight is set but gold_reward.path is not: name a gold folder")
        if self.refit_every and not self.weight:
            raise ValueError("gold_reward.refit_every needs a gold reward to refit: set gold_reward.weight")
        for labels in self.refit_labels:
            if not labels.is_file():
                raise ValueError(f"gold_reward.refit_labels: {labels}: no such file")
        return self

    @field_validator("refit_labels", mode="before")
    @classmethod
    def _one_or_more(cls, value):
        return [] if value is None else [value] if isinstance(value, (str, Path)) else value


class JudgeSpec(BaseModel):
    """One more train judge: a constitution on a model, scored beside the main one (tune/rewards.py)."""

    model_config = ConfigDict(extra="forbid")
    constitution: Path = Field(description="its constitution YAML (another constitution, or a paraphrase of the main one)")
    model: str | None = Field(None, description="its model (default: judge_model); `openai:URL#MODEL` for a served one")


class TuneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # --- what to tune, against what -----------------------------------------------------
    policy_model: str = Field(EMBEDDED_LM, description="the model to tune: hub id, local folder or embedded name")
    constitution: Path = Field(description="the train judge's constitution YAML: the reward")
    judge_model: str = Field(EMBEDDED_LM, description="the train judge's model")
    judge_reads: Literal["conversation", "reply"] = Field(
        "conversation", description="what the judges read: the prompt and completion together (a conversation's turns "
        "shown as 'User: ...' and 'Assistant: ...'), or the reply alone"
    )
    gold_constitution: GoldPath = Field(
        None, description="the held-out gold judge, never trained against, to tell progress from hacking: a constitution "
        "YAML, or a folder with gold.json fitted to your labels by `tether gold fit`"
    )
    gold_model: str | None = Field(None, description="a gold constitution's model (default: judge_model; a gold folder ignores it)")
    gold_debias: bool = Field(
        True, description="score a gold constitution debiased, so it does not pay for yes-spam itself (a gold folder ignores it)"
    )
    prompts: Path = Field(description="prompts: .txt (one per line) or .jsonl (field `prompt`)")

    # --- several judges, and what their verdict pays (tune/shaping.py, docs/judges.md) ----
    judges: list[JudgeSpec] = Field(
        default_factory=list, description="more train judges beside `constitution`, each `{constitution: PATH, model: "
        "ID or null}`; their totals are combined by `ensemble`"
    )
    ensemble: Literal["mean", "min", "mean_minus_disagreement"] = Field(
        "mean", description="how the judges' totals combine: their mean, their minimum, or their mean minus "
        "`ensemble_lambda` x their standard deviation (logged as monitor/judge_disagreement)"
    )
    ensemble_lambda: float = Field(1.0, ge=0, description="lambda of mean_minus_disagreement")
    reward_shape: Literal["raw", "log_sigmoid", "reference"] = Field(
        "raw", description="what the combined log-odds r pay: r (raw), log sigmoid(r) (bounded above by 0), or "
        "sigmoid(r - r_base) with r_base the base model's mean score on the same prompt (reference)"
    )
    judge_top_k: int = Field(20, ge=1, description="logprobs asked per answer of a served judge (`openai:URL#MODEL`)")

    # --- the RL algorithm (TRL) ---------------------------------------------------------
    algorithm: Literal["grpo", "rloo"] = Field("grpo", description="TRL trainer: grpo (GRPOTrainer) or rloo (RLOOTrainer)")
    steps: int = Field(30, ge=1, description="optimizer steps; each step generates and scores one batch")
    prompts_per_step: int = Field(1, ge=1, description="distinct prompts per step")
    completions_per_prompt: int = Field(8, ge=2, description="completions per prompt; the group a GRPO advantage is relative to")
    max_completion_tokens: int = Field(32, ge=1, description="tokens generated per completion")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the policy")
    learning_rate: float = Field(1e-4, gt=0, description="AdamW learning rate of the LoRA weights")
    kl_coef: float = Field(
        0.04, ge=0, description="KL penalty to the base model (TRL's beta); GRPO's default 0 would not log KL at all"
    )
    suppress_special_tokens: bool = Field(
        True, description="forbid the policy's special and unused tokens (except end-of-text): the judge pays for them"
    )

    vllm: Literal["off", "colocate", "server"] = Field(
        "off", description="generate with TRL's vLLM on a GPU: colocate (in the training process) or server (`trl vllm-serve`)"
    )
    vllm_gpu_memory: float = Field(0.3, gt=0, le=1, description="share of GPU memory vLLM may take when colocated")

    # --- monitors -----------------------------------------------------------------------
    embedder: str | None = Field(
        "embedded:all-minilm-l6-v2",
        description="sentence embedder for the drift monitor and the embedding defenses; null switches drift off",
    )
    base_samples_per_prompt: int = Field(
        8, ge=2, description="base-model completions per prompt, sampled once: what drift and embedding KL measure against"
    )

    # --- defenses: reward terms beside the constitution (docs/design-defenses.md) -------
    constitution_weight: float = Field(
        1.0, ge=0, description="the constitution's weight in the reward; 0 lets the utility replace it (still scored and monitored)"
    )
    embedding_kl: EmbeddingKLConfig = Field(
        default_factory=EmbeddingKLConfig, description="KL in an embedding space, a penalty in the reward (see below)"
    )
    utility: UtilityConfig = Field(
        default_factory=UtilityConfig, description="an instrumental utility function, a reward term (see below)"
    )
    gold_reward: GoldRewardConfig = Field(
        default_factory=GoldRewardConfig, description="a gold fitted to a person's labels as a reward term (see below)"
    )
    passages: list[str] = Field(
        default_factory=list, description="texts of what the completions should be about and feel like; `'@PATH'` (quoted in "
        "YAML) reads a file, relative to the working directory: the passage reward's objective"
    )
    passage_weight: float = Field(
        0.0, ge=0, description="weight of the passage reward, MiniLM cosine of a completion to the passages' mean "
        "embedding (the source text's embedding of an objective); 0 switches it off"
    )
    reward_mode: Literal["outcome", "process", "both"] = Field(
        "outcome", description="outcome: the reward terms pay each completion; process: each step is judged blind to "
        "what follows and pays its own tokens (GRPO only; tune/process.py); both: the two advantages added")
    process: ProcessConfig = Field(default_factory=ProcessConfig, description="steps and process advantages (see below)")

    # --- hack detectors ------------------------------------------------------------------
    on_hack: Literal["warn", "stop"] = Field(
        "warn", description="when a detector trips: log a warning event, or stop and mark `best` the last checkpoint "
        "whose own batch passed (a trip at step k: checkpoint k-2, since checkpoint k-1 wrote the batch that tripped)"
    )
    detectors: DetectorConfig = Field(default_factory=DetectorConfig, description="detector thresholds (see below)")
    spot_check: SpotCheckConfig = Field(
        default_factory=SpotCheckConfig, description="a person's spot check: completions queued every N steps, "
        "a `no` answer counts as a detector (see below)"
    )

    # --- LoRA -------------------------------------------------------------------------
    lora_rank: int = Field(16, ge=1, description="LoRA rank r")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha; the update is scaled by alpha / r")
    init_adapter: Path | None = Field(None, description="a LoRA adapter (safetensors) to start from instead of fresh "
                                      "LoRA weights; the KL anchor stays the base (`tether deploy`'s learner)")
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"], description="module names that get LoRA adapters"
    )

    # --- the run ------------------------------------------------------------------------
    seed: int = Field(0, description="seed for sampling, LoRA initialisation and data order")
    output_dir: Path = Field(Path("runs/cheerful"), description="the run directory")
    save_every: int = Field(10, ge=1, description="save a LoRA checkpoint every N steps (and at the end)")
    judge_batch_size: int = Field(16, ge=1, description="texts per judge forward pass")
    device: str = Field(
        "auto", pattern=DEVICE_PATTERN,
        description="where the policy, judges and embedder run: auto (CUDA when present), cpu, cuda or cuda:N",
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="the judges' precision: auto is bfloat16 where the hardware has bf16 units (a GPU; a CPU "
        "with AMX or AVX512-BF16), float32 elsewhere")
    trust_remote_code: bool = Field(False, description="let the policy, judges, golds and embedder run Python code of "
                                    "their own from the hub (`--trust-remote-code`; off: safer)")
    report_to: ReportTo = Field(
        "none", description="experiment trackers that get TRL's and tether's metrics each step: tensorboard (RUN/tb), "
        "wandb (offline, RUN/wandb), trackio, a list of them, or none"
    )


    @field_validator("passages")
    @classmethod
    def _read_passages(cls, value: list[str]) -> list[str]:
        from tether.errors import TetherError
        from tether.infra.texts import read_text_arg

        try:  # @files are read now: the saved config holds the texts the run was rewarded for
            return [read_text_arg(text, f"passages[{i}]") for i, text in enumerate(value)]
        except TetherError as e:
            raise ValueError(str(e)) from None

    @model_validator(mode="after")
    def _defenses_are_complete(self) -> TuneConfig:
        on = [name for name, weight in (("embedding_kl", self.embedding_kl.coef), ("utility", self.utility.weight),
                                        ("passage_weight", self.passage_weight)) if weight]
        if on and self.embedder is None:
            raise ValueError(f"{' and '.join(on)} need a sentence embedder; set embedder (e.g. embedded:all-minilm-l6-v2)")
        if self.utility.weight and not self.utility.terminals:
            raise ValueError("utility.weight > 0 needs utility.terminals: texts of what you want")
        if self.passage_weight and not self.passages:
            raise ValueError("passage_weight > 0 needs passages: texts (or @files) of what the completions should be about")
        if self.reward_mode != "outcome" and self.algorithm != "grpo":
            raise ValueError(f"reward_mode {self.reward_mode} needs algorithm: grpo (per-token advantages)")
        if self.reward_mode == "outcome" and not (self.constitution_weight or self.utility.weight or self.passage_weight
                                                  or self.gold_reward.weight):
            raise ValueError("nothing pays: set constitution_weight, utility.weight, passage_weight or "
                             "gold_reward.weight above 0")
        if self.spot_check.by != "random" and self.gold_constitution is None:
            raise ValueError(f"spot_check.by {self.spot_check.by} ranks by the gold judge: set gold_constitution")
        if (every := self.gold_reward.refit_every) and (not self.spot_check.every or every % self.spot_check.every):
            raise ValueError(f"gold_reward.refit_every {every} needs the spot check to queue completions at those "
                             f"steps: set spot_check.every to {every} (or a divisor of it)")
        if every and self.spot_check.spec is not None:  # the refit reads the answers to its question
            from tether.labels.spec import load_spec
            if self.gold_reward.refit_label not in load_spec(self.spot_check.spec).names():
                raise ValueError(f"gold_reward.refit_label {self.gold_reward.refit_label!r}: not a question of "
                                 f"spot_check.spec {self.spot_check.spec}")
        return self

    @model_validator(mode="after")
    def _served_judge_is_not_the_gold(self) -> TuneConfig:
        golds = [self.gold_constitution, self.gold_reward.path if self.gold_reward.weight else None]
        needs_model = any(g is not None and Path(g).suffix in (".yaml", ".yml") for g in golds)  # a folder needs none
        if self.judge_model.startswith("openai:") and self.gold_model is None and needs_model:
            raise ValueError("judge_model is served (openai:...) and a gold constitution loads a local model: set gold_model")
        return self


def resume_config(run_dir: str | Path, trust_remote_code: bool = False) -> TuneConfig:
    """The config a run was started with, for `--resume`: always continuing `run_dir` itself, whatever
    output_dir its config.yaml names (a copied run must not finish the original); `trust_remote_code` is
    the resuming command's own, never the stored one."""
    return RunDir(run_dir).settings(TuneConfig, output_dir=Path(run_dir).absolute(),
                                    trust_remote_code=trust_remote_code)


def trusting(settings, trust_remote_code: bool | None, stored: bool = True):
    """`settings` with the command's --trust-remote-code: a run's stored config never turns it on for another
    command (`stored`: the settings came from a run directory), a config file the user passes may; None keeps it."""
    if trust_remote_code is None or (not trust_remote_code and not stored):
        return settings
    return settings.model_copy(update={"trust_remote_code": trust_remote_code})


def run_settings(run_dir: str | Path, config: str | Path | None = None, overrides=(),
                 trust_remote_code: bool | None = None) -> TuneConfig:
    """A run's TuneConfig (or FILE's), with --set overrides, for replaying its detectors; the gold
    judge is not needed, so not checked."""
    from tether.errors import TetherError
    from tether.infra.config import load_config

    run = RunDir(run_dir)
    if config is not None:
        return trusting(load_config(TuneConfig, config, overrides), trust_remote_code, stored=False)
    if not (run.path / "config.yaml").exists():
        raise TetherError(f"{run.path}: no run here (no config.yaml); give a tether run directory")
    data = {k: v for k, v in run.config().items() if k != "gold_constitution"}
    if trust_remote_code is not None:  # the command's own flag, under its --set overrides; never the run's
        data["trust_remote_code"] = trust_remote_code
    return load_config(TuneConfig, data=data, overrides=overrides, where=str(run.path / "config.yaml"))


def tuned_settings(tuned_path: str | Path, config: str | Path | None = None,
                   trust_remote_code: bool | None = None) -> TuneConfig:
    """The tune settings of tuned weights (`tether blend`): the `config` file if given, else the
    config.yaml of the run directory around them; `trust_remote_code` as `trusting` says."""
    from tether.defenses.blend import find_tuned
    from tether.errors import TetherError
    from tether.infra.config import load_config

    if config is not None:
        return trusting(load_config(TuneConfig, config), trust_remote_code, stored=False)
    tuned = find_tuned(tuned_path)
    if tuned.run_dir is None:
        raise TetherError(f"{tuned.folder}: not inside a run directory; pass --config TUNE.yaml for the judges and "
                          f"sampling settings")
    return trusting(RunDir(tuned.run_dir).settings(TuneConfig, output_dir=tuned.run_dir), trust_remote_code)
