"""`tether serve CONSTITUTION`: the constitution as a remote reward model, with tether watching the run.

Registered on the `tether` app by `cli.py`; it only parses and calls, and checks its input
(the constitution, the run folder, the token rule) before it loads the judge.

    tether serve examples/cheerful.yaml --out runs/served --port 5000
    # OpenRLHF: --remote_rm_url http://127.0.0.1:5000/get_reward ; afterwards: tether report runs/served
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from tether.cli_options import RemoteOpt
from tether.errors import TetherError
from tether.infra.models import EMBEDDED_LM, check_model


def serve(
    constitution: Annotated[Path, typer.Argument(help="the constitution YAML: the reward")],
    out: Annotated[Path, typer.Option("--out", "-o", help="the run folder: every judged sample, metrics per window, detector trips (continued after a restart)")] = Path("runs/serve"),
    model: Annotated[str, typer.Option("--model", "-m", help="judge: a hub id, a local folder, or the embedded default")] = EMBEDDED_LM,
    host: Annotated[str, typer.Option(help="address to bind; anything but loopback needs --token")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port (OpenRLHF's serve_rm uses 5000 too)")] = 5000,
    token: Annotated[str | None, typer.Option(help="bearer token clients must send (default: $TETHER_SERVE_TOKEN); required off loopback")] = None,
    window: Annotated[int | None, typer.Option(min=1, help="judged samples per logged step (default 64, or the folder's own when continuing)")] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="most texts gathered into one judge call")] = 64,
    max_wait_ms: Annotated[float, typer.Option(min=0, help="most a request waits for others to share its judge call")] = 10.0,
    batch_size: Annotated[int, typer.Option(min=1, help="texts per forward pass inside a judge call")] = 16,
    completion_only: Annotated[bool, typer.Option(help="judge the response alone, not prompt + response")] = False,
    debias: Annotated[bool | None, typer.Option("--debias/--no-debias", help="force paired-negation scoring on or off for all principles")] = None,
    strip: Annotated[list[str], typer.Option(help="a string cut from both ends of every response, e.g. the policy's '<pad>' or '<|endoftext|>' (repeatable)")] = [],  # noqa: B006
    reject_special_tokens: Annotated[bool, typer.Option(help="answer 400 to texts holding the judge's control-token strings (default: judge them as plain text)")] = False,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="largest request body, in MiB")] = 4.0,
    force: Annotated[bool, typer.Option(help="start the run folder afresh (only tether's files go)")] = False,
    device: Annotated[str, typer.Option(help="where the judge runs: auto (CUDA when present), cpu, cuda or cuda:N")] = "auto",
    dtype: Annotated[str, typer.Option(help="the judge's precision: float32 or bfloat16")] = "float32",
    trust_remote_code: RemoteOpt = False,
):
    """Serve the constitution as an OpenRLHF remote reward model (POST /get_reward), logging a run tether can report on."""
    from tether.infra import progress
    from tether.infra.http import LOOPBACK, ServeSettings, check_port
    from tether.judge.constitution import load_constitution

    token = token or os.environ.get("TETHER_SERVE_TOKEN") or None
    if host not in LOOPBACK and not token:
        raise TetherError(f"--host {host}: off loopback the service needs a bearer token; pass --token or set TETHER_SERVE_TOKEN")
    if dtype not in ("float32", "bfloat16"):
        raise TetherError(f"--dtype {dtype}: write float32 or bfloat16")
    load_constitution(constitution)  # a typo is one line before the judge loads
    check_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)  # before the run folder
    check_port(host, port)
    settings = ServeSettings(host=host, port=port, token=token, include_prompt=not completion_only,
                             max_body_bytes=int(max_body_mb * 2**20), strip=tuple(strip),
                             reject_special=reject_special_tokens)
    from tether.serve.runlog import ServeRun

    run = ServeRun(out, constitution, model, window, settings.include_prompt, force=force)
    try:
        from tether.judge.evaluator import Evaluator
        from tether.serve.app import build_app, make_server
        from tether.serve.batching import Batcher

        evaluator = Evaluator(model, constitution, debias=debias, batch_size=batch_size, device=device, dtype=dtype,
                              trust_remote_code=trust_remote_code)
        batcher = Batcher(evaluator, run, max_batch=max_batch, max_wait_ms=max_wait_ms)
        server = make_server(build_app(batcher, settings), settings)
        where = f"http://{host}:{port}"
        progress.note(f"serving {where}/get_reward (health: {where}/health); logging to {out} "
                      f"({run.count} samples so far, {run.window} a step); stop with Ctrl-C")
        server.run()
    finally:
        run.close()
    if server.interrupted:  # Ctrl-C: exit 130 as any interrupted command (cli.py), however asyncio ended the loop
        raise KeyboardInterrupt


def register(app: typer.Typer) -> None:
    app.command()(serve)
