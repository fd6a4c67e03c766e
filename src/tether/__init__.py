"""tether: tune language models against a written constitution with AI feedback, and see
and stop the reward hacking that follows.

The flow, one module a concept: `constitution` (what to judge) -> `evaluator` (how to judge)
-> `audit` (how the judge can be gamed).
"""

from tether.constitution import Constitution, Principle, load_constitution
from tether.errors import TetherError
from tether.evaluator import Evaluator, ScoreResult

__all__ = ["Constitution", "Evaluator", "Principle", "ScoreResult", "TetherError", "load_constitution"]
__version__ = "0.1.0"
