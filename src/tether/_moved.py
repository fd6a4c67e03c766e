"""Modules that moved, still importable under their old paths for one release, with a DeprecationWarning.

A user's script written from an older README (`from tether.callbacks import MonitorCallback`)
keeps working: importing an old path loads the module at its new home and registers it under
the old name too, so both names are the same module object. CHANGELOG.md lists each move.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

REMOVED_IN = "0.3.0"
MOVED = {
    # the first reshape into folders (0.1.0)
    "tether.callbacks": "tether.watch.callbacks",
    "tether.models": "tether.infra.models",
    "tether.evaluator": "tether.judge.evaluator",
    "tether.constitution": "tether.judge.constitution",
    "tether.detectors": "tether.watch.detectors",
    "tether.drift": "tether.watch.drift",
    "tether.monitors": "tether.watch.monitors",
    "tether.texts": "tether.infra.texts",
    "tether.tokens": "tether.infra.tokens",
    "tether.audit": "tether.judge.audit",
    "tether.report": "tether.watch.report",
    # the house read top-down (0.2.0)
    "tether.tune.rewards": "tether.rewards.constitution",
    "tether.tune.shaping": "tether.rewards.shaping",
    "tether.tune.gold_reward": "tether.rewards.gold",
    "tether.steer.reward": "tether.rewards.passage",
    "tether.judge.tokens": "tether.infra.tokens",
    "tether.judge.gold_judge": "tether.labels.gold_judge",
    "tether.judge.judges": "tether.labels.judges",
    "tether.infra.display": "tether.display",
    "tether.infra.config_reference": "tether.config_reference",
}


class _Alias(importlib.abc.Loader):
    def __init__(self, new: str):
        self.new = new

    def create_module(self, spec):
        return importlib.import_module(self.new)

    def exec_module(self, module):  # the module at its new home is already executed
        pass


class MovedFinder(importlib.abc.MetaPathFinder):
    """Finds an old path of MOVED, warns once per import, and hands back the module at its new home."""

    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        warnings.warn(
            f"{fullname} moved to {new}; the old path goes in tether {REMOVED_IN} (see CHANGELOG.md)",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.util.spec_from_loader(fullname, _Alias(new))


def install() -> None:
    if not any(isinstance(f, MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedFinder())
