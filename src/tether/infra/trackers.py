"""`report_to`: TRL's experiment trackers (TensorBoard, wandb, trackio), set up the tether way.

Three things transformers does not do for us: refuse a tracker that is not installed in one
line before any model loads; keep what a tracker writes inside the run directory (RUN/tb,
RUN/wandb) with wandb offline unless the user chose otherwise; and run the trackers *after*
tether's callbacks, so the monitors, gold, drift, defenses and detector trips that those
callbacks add to each step's `logs` reach the trackers beside TRL's own metrics
(transformers puts the trackers' callbacks before the ones a trainer is given).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator

from tether.errors import TetherError

Tracker = Literal["tensorboard", "wandb", "trackio", "none"]
MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "trackio": ("trackio",)}
_ours: dict[str, str] = {}  # environment values tether set, so a later run in this process may replace them


def trackers(report_to: str | list[str]) -> list[str]:
    """The trackers asked for, in order, without `none`; a bad mix is a ValueError (pydantic shows it)."""
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    if "none" in names and len(names) > 1:
        raise ValueError(f"report_to: none cannot be combined with {', '.join(n for n in names if n != 'none')}")
    return list(dict.fromkeys(n for n in names if n != "none"))


def _mix(value):
    trackers(value)  # `none` alone
    return value


ReportTo = Annotated[Tracker | list[Tracker], AfterValidator(_mix)]  # the configs' report_to field


def check_installed(report_to: str | list[str]) -> list[str]:
    """The trackers, each importable; otherwise one line naming the missing package."""
    wanted = trackers(report_to)
    for name in wanted:
        if not any(importlib.util.find_spec(m) for m in MODULES[name]):
            raise TetherError(f"report_to: {name} is not installed; pip install {MODULES[name][0]}, "
                              f"or remove it from report_to")
    return wanted


def trl_args(report_to: str | list[str], run_dir: Path) -> dict:
    """TrainingArguments for TRL's configs; also points wandb at RUN/wandb, offline unless the user set WANDB_MODE."""
    wanted = trackers(report_to)
    if "wandb" in wanted:
        _set_env("WANDB_MODE", "offline")
        _set_env("WANDB_DIR", str(run_dir))  # wandb adds its own wandb/ folder inside
        _set_env("WANDB_PROJECT", "tether")
    return {"report_to": wanted, **({"run_name": run_dir.name} if wanted else {})}


def trackers_last(trainer, run_dir: Path) -> None:
    """Move the trackers' callbacks after tether's, and send TensorBoard to RUN/tb (unless TENSORBOARD_LOGGING_DIR is set)."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        TensorBoardCallback,
    )

    kinds = tuple(INTEGRATION_TO_CALLBACK.values())
    for callback in [c for c in trainer.callback_handler.callbacks if isinstance(c, kinds)]:
        trainer.callback_handler.remove_callback(callback)
        trainer.callback_handler.add_callback(callback)
        if isinstance(callback, TensorBoardCallback) and not os.environ.get("TENSORBOARD_LOGGING_DIR"):
            callback.logging_dir = str(run_dir / "tb")


def _set_env(name: str, value: str) -> None:
    """Set `name` unless the user did (a value tether set for an earlier run is replaced)."""
    if name not in os.environ or _ours.get(name) == os.environ[name]:
        os.environ[name] = _ours[name] = value


def log_after_training(trainer, logs: dict) -> None:
    """Numbers measured after `train()` (sft's held-out evaluation), to the trackers only, then closed again."""
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    for callback in [c for c in trainer.callback_handler.callbacks if isinstance(c, tuple(INTEGRATION_TO_CALLBACK.values()))]:
        callback.on_log(trainer.args, trainer.state, trainer.control, logs=dict(logs), model=trainer.model)
        callback.on_train_end(trainer.args, trainer.state, trainer.control, model=trainer.model)
