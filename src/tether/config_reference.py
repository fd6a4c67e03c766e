"""Config references for the README, built from the same field descriptions pydantic uses.

tests/test_docs.py fails when the README's tables drift from the code.
"""

from __future__ import annotations

import json

from pydantic import BaseModel

from tether.corpus.config import MonitorLimits, SampleConfig, SftConfig
from tether.defenses.embedding_kl import EmbeddingKLConfig
from tether.defenses.utility import UtilityConfig
from tether.judge.constitution import Constitution, Example, Principle
from tether.rewards.process import ProcessConfig
from tether.tune.config import GoldRewardConfig, JudgeSpec, TuneConfig
from tether.watch.detectors import DetectorConfig
from tether.watch.spotcheck import SpotCheckConfig


def field_table(models: list[tuple[type[BaseModel], str]]) -> str:
    lines = ["| field | default | meaning |", "| --- | --- | --- |"]
    for model, prefix in models:
        lines += [f"| `{prefix}{name}` | {_default(f)} | {f.description} |" for name, f in model.model_fields.items()]
    return "\n".join(lines)


def constitution_reference() -> str:
    return field_table([(Constitution, ""), (Principle, "principles[]."), (Example, "principles[].examples[].")])


def tune_reference() -> str:
    return field_table([(TuneConfig, ""), (JudgeSpec, "judges[]."), (DetectorConfig, "detectors."), (SpotCheckConfig, "spot_check."),
                        (EmbeddingKLConfig, "embedding_kl."),
                        (UtilityConfig, "utility."), (GoldRewardConfig, "gold_reward."), (ProcessConfig, "process.")])


def experiment_reference() -> str:
    from tether.experiment.config import Arm, ExperimentConfig, Reading, Registration

    return field_table([(ExperimentConfig, ""), (Arm, "arms.NAME."), (Reading, "reading."),
                        (Registration, "registration.")])


def deploy_reference() -> str:
    from tether.deploy.config import DeployConfig, GateConfig, LearnConfig

    return field_table([(DeployConfig, ""), (LearnConfig, "learn."), (GateConfig, "gate.")])


def sample_reference() -> str:
    return field_table([(SampleConfig, ""), (MonitorLimits, "monitors.")])


def sft_reference() -> str:
    return field_table([(SftConfig, "")])


def _default(field) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory else field.default
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{json.dumps(value, default=str)}`" if value not in (None, "") else "—"
