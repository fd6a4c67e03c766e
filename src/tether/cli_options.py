"""Options several `tether` commands share, declared once so that each reads the same everywhere.

`--trust-remote-code` is off by default on every command that loads a model a user names; a command
configured by a YAML file (tune, sample, sft, experiment) turns it into the config field
`trust_remote_code`, so the run's saved config says whether its models ran code of their own.
"""

from __future__ import annotations

from typing import Annotated

import typer

RemoteOpt = Annotated[bool, typer.Option(help="allow the models' own Python code from the hub (off: safer)")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")]


def remote_set(trust_remote_code: bool) -> list[str]:
    """The flag as a config override (`--set trust_remote_code=true`), for the commands configured by a file."""
    return ["trust_remote_code=true"] if trust_remote_code else []
