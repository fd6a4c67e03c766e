"""`tether deploy`'s config: the policy served, the judge that reads every reply, the learner and its gate.

    tether deploy examples/deploy.yaml              # serve the policy; every interaction logged
    tether deploy examples/deploy.yaml --learn      # ... and learn from them beside it, version by version

Loaded by the one config loader (`infra/config.load_config`): relative paths against the
file's folder, `--set field=value` overrides, one-line errors naming the field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tether.infra.models import DEVICE_PATTERN, EMBEDDED_EMBEDDER, EMBEDDED_LM
from tether.watch.detectors import MONITOR_LIMITS, DetectorConfig


class LearnConfig(BaseModel):
    """When and how the learner makes a new version (`--learn`): an online GRPO update with TRL."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    every: int = Field(32, ge=1, description="new interactions that start an update")
    every_minutes: float | None = Field(
        None, gt=0, description="...or this many minutes since the last update, once there is at least one new interaction")
    recent: int = Field(64, ge=1, description="the latest interactions whose prompts an update learns on")
    steps: int = Field(4, ge=1, description="GRPO steps per update (TRL's GRPOTrainer)")
    completions_per_prompt: int = Field(4, ge=2, description="completions per prompt; the group a GRPO advantage is relative to")
    max_completion_tokens: int = Field(32, ge=1, description="tokens generated per completion while learning")
    learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate of the LoRA weights")
    kl_coef: float = Field(0.04, ge=0, description="KL penalty to the base model (TRL's beta): the anchor every version keeps")
    pay: Literal["judge", "feedback", "both"] = Field(
        "judge", description="what pays an update: the judge's constitution, a gold refitted on the users' feedback so "
        "far (thumbs and answers; `labels/gold_fit`), or both")
    feedback_weight: float = Field(1.0, gt=0, description="the feedback gold's weight in the reward (pay: feedback or both)")
    min_feedback: int = Field(8, ge=2, description="thumbs needed (some up, some down) before a feedback gold is fitted")
    pick: int = Field(0, ge=0, description="after each update with a feedback gold, queue this many served replies "
                      "for a person to read (versions/vN/to_read.jsonl): those the gold is least sure of, spread across "
                      "prompts (labels/pick.py); their answers (`tether label ... --out DEPLOYMENT/labels.jsonl`) join "
                      "the next refit. 0: none")
    continue_from_live: bool = Field(
        True, description="start each update from the serving version's adapter (online), or afresh from the base")
    lora_rank: int = Field(16, ge=1, description="LoRA rank r of a version's adapter")


class GateConfig(BaseModel):
    """What a new version must pass before it is served: its own samples on a fixed canary set."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    draws: int = Field(2, ge=1, description="completions per canary prompt")
    max_gold_drop: float = Field(0.5, ge=0, description="largest fall of the canaries' mean gold score from the base's (log-odds)")
    max_drift: float = Field(0.72, gt=0, description="largest mean embedding drift of the canary completions from the base's")
    monitors: bool = Field(True, description="the text monitors' limits (`detectors`) must hold on the canaries")
    habit: bool = Field(True, description="refuse a candidate whose canary text shows a `habit` against the base's "
                        "canary samples (the live detector's test, `habit_alpha` and `habit_min_ratio`)")
    audit: bool = Field(True, description="run the judge's gameability audit on the version's own samples (recorded; "
                        "a gameable judge is named in the version's audit, it does not block)")


class DeployConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # --- what is served ------------------------------------------------------------------
    policy_model: str = Field(EMBEDDED_LM, description="the base policy: any causal LM (hub id, local folder, embedded name)")
    adapter: Path | None = Field(None, description="a LoRA adapter on the base served as version v0 (null: the base as shipped)")
    constitution: Path = Field(
        description="the judge's constitution: every reply is scored before it is sent, the gate reads the canaries "
        "with it, and the learner is paid by it (unless learn.pay: feedback)")
    judge_model: str = Field(EMBEDDED_LM, description="the judge's model")
    output_dir: Path = Field(Path("runs/deploy"), description="the deployment folder: interactions, feedback, versions, timeline")
    host: str = Field("127.0.0.1", description="address to bind; anything but loopback needs a token")
    port: int = Field(8000, ge=1, le=65535, description="port")
    max_new_tokens: int = Field(64, ge=1, le=4096, description="a request's default (and largest allowed is 8x) max_tokens")
    temperature: float = Field(1.0, ge=0, description="a request's default temperature (0: greedy)")
    max_batch: int = Field(8, ge=1, description="most requests generated together")
    max_wait_ms: float = Field(10.0, ge=0, description="most a request waits for others to share its batch")
    canary: Path | None = Field(
        None, description="the gate's fixed canary prompts (.txt, one a line; .jsonl with `prompt`), sampled from every "
        "new version; null: the deployment's first 8 distinct prompts, frozen at the first update")
    gold: Path | None = Field(
        None, description="a gold folder (`tether gold fit`) that reads the canaries: a version's mean must not fall more "
        "than gate.max_gold_drop below the base's")
    embedder: str | None = Field(EMBEDDED_EMBEDDER, description="sentence embedder for drift (gate and live); null: off")

    # --- what is watched -------------------------------------------------------------------
    window: int = Field(16, ge=2, description="served replies per live-monitor window (a version's 'step')")
    detectors: DetectorConfig = Field(default_factory=DetectorConfig, description="limits the live monitors and the gate use")
    habit_alpha: float = Field(
        1e-3, gt=0, lt=1, description="`habit`: a word or mark a version writes far more often than the base did "
        "(`watch/lexical.py`: binomial test per token, Bonferroni over the tokens, at this level); checked each window")
    habit_min_ratio: float = Field(3.0, gt=1, description="`habit`: ...and at least this many times the base's rate")
    rollback_on: list[str] = Field(
        default_factory=lambda: [*MONITOR_LIMITS, "distinct_2_drop", "habit"],
        description="live detectors that roll the serving version back to its parent when they trip on served traffic "
        "([] never rolls back by itself)")

    # --- what learns ---------------------------------------------------------------------
    learn: LearnConfig = Field(default_factory=LearnConfig, description="the learner (`--learn`), see below")
    gate: GateConfig = Field(default_factory=GateConfig, description="the gate every new version passes, see below")

    seed: int = Field(0, description="seed of the learner's updates and the canary samples")
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="where the models run: auto, cpu, cuda or cuda:N")
    trust_remote_code: bool = Field(False, description="let the models run Python code of their own from the hub")

    @model_validator(mode="after")
    def _something_pays(self) -> DeployConfig:
        from tether.watch.detectors import detector_names

        known = [*detector_names(self.detectors), "habit"]
        for name in self.rollback_on:
            if name not in known:
                raise ValueError(f"rollback_on: {name!r} is not a detector; write one of {', '.join(known[:8])}, ...")
        return self
