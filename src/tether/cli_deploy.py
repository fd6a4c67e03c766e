"""`tether deploy CONFIG [--learn]` and `tether deploy rollback VERSION`: a served policy that learns, gated.

Registered on the `tether` app by `cli.py`; it only parses and calls (tether/deploy/).

    tether deploy examples/deploy.yaml --port 8000 --learn
    curl -s localhost:8000/v1/completions -H 'Content-Type: application/json' -d '{"prompt": "Once upon a time"}'
    tether deploy rollback v1 --deployment runs/deploy
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from tether.errors import TetherError


def deploy(
    target: Annotated[str, typer.Argument(metavar="CONFIG | rollback", help="the deploy config YAML (examples/deploy.yaml), or `rollback`")],
    version: Annotated[str | None, typer.Argument(help="with rollback: the version to serve again (v0, v1, ...)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a config field: --set port=8001 (repeatable)")] = [],  # noqa: B006
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="port (default: the config's)")] = None,
    learn: Annotated[bool, typer.Option(help="run the learner beside the server: new versions every learn.every interactions, gated")] = False,
    token: Annotated[str | None, typer.Option(help="bearer token clients must send (default: $TETHER_SERVE_TOKEN); required off loopback")] = None,
    deployment: Annotated[Path, typer.Option("--deployment", "-d", help="with rollback: the deployment folder")] = Path("runs/deploy"),
    why: Annotated[str, typer.Option(help="with rollback: the reason, kept in the timeline")] = "rolled back by hand",
):
    """Serve a policy behind an OpenAI-compatible API that logs every reply and takes feedback; --learn turns them into gated versions."""
    if target == "rollback":
        return rollback(version, deployment, why)
    if version is not None:
        raise TetherError(f"tether deploy {target} {version}: a second argument only follows `rollback`")
    from tether.infra.checks import check_config_file
    from tether.infra.config import load_config

    config_path = Path(target)
    check_config_file(config_path, set_)
    from tether.deploy.config import DeployConfig

    config = load_config(DeployConfig, config_path, [*set_, *([f"port={port}"] if port else [])])
    serve_deployment(config, learn=learn, token=token or os.environ.get("TETHER_SERVE_TOKEN") or None)


def serve_deployment(config, *, learn: bool, token: str | None) -> None:
    import yaml

    from tether.deploy.store import Store
    from tether.infra import progress
    from tether.infra.http import LOOPBACK, ServeSettings, check_port
    from tether.infra.models import check_model
    from tether.judge.constitution import load_constitution

    if config.host not in LOOPBACK and not token:
        raise TetherError(f"host {config.host}: off loopback the deployment needs a bearer token; pass --token or set TETHER_SERVE_TOKEN")
    load_constitution(config.constitution)
    check_model(config.policy_model, device=config.device, trust_remote_code=config.trust_remote_code)
    check_port(config.host, config.port)
    store = Store(config.output_dir)
    store.create(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    from tether.deploy.app import build_app
    from tether.deploy.serving import Policy
    from tether.infra.http import make_server
    from tether.judge.evaluator import Evaluator

    judge = Evaluator(config.judge_model, config.constitution, device=config.device, trust_remote_code=config.trust_remote_code)
    settings = ServeSettings(host=config.host, port=config.port, token=token)
    server = make_server(build_app(Policy(config, store, judge), settings), settings)
    learner = None
    if learn:
        log = open(store.path / "learner.log", "ab")  # noqa: SIM115 (the child keeps it)
        learner = subprocess.Popen([sys.executable, "-m", "tether.deploy.learner", str(store.path)], stdout=log,
                                   stderr=subprocess.STDOUT)
        log.close()
    where = f"http://{config.host}:{config.port}"
    progress.note(f"serving {store.live()['version']} at {where}/v1/completions and /v1/chat/completions; feedback: "
                  f"{where}/v1/feedback; logging to {store.path}" + ("; learner beside it (learner.log)" if learn else ""))
    try:
        server.run()
    finally:
        if learner is not None:
            learner.terminate()
            learner.wait(timeout=30)
    if server.interrupted:
        raise KeyboardInterrupt


def rollback(version: str | None, deployment: Path, why: str) -> None:
    from tether.deploy.store import Store
    from tether.infra import progress

    if version is None:
        raise TetherError("tether deploy rollback VERSION: name the version to serve (see GET /v1/models)")
    store = Store(deployment)
    store.check()
    before = store.live()["version"]
    store.set_live(version, why, event="rollback", rolled_back=before, automatic=False)
    progress.note(f"{deployment}: {version} is live (was {before}); a running server swaps within a second")


def register(app: typer.Typer) -> None:
    app.command()(deploy)
