"""Latency of `tether deploy` under load, and requests failed during a hot swap.

    python benchmarks/deploy_latency.py                       # 1, 8, 64 clients, 32-token completions, embedded Gemma
    python benchmarks/deploy_latency.py --clients 1,8 --requests 16 --out /tmp/deploy_latency.json

Starts `tether deploy examples/deploy.yaml` (a subprocess on a fresh folder, no learner), then for
each client count N runs N threads that each send `--requests` completions of `--tokens` tokens
back to back; reports p50 and p99 latency, replies per second, and failures. Last, with 64 clients
sending, it publishes a version v1 (a LoRA adapter of small random weights on the same base, as the
learner would) and puts it live: it counts failed requests (must be 0) and checks that every
reply's `model` names the version that interactions.jsonl says wrote it. JSON to --out, a table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [line for line in (ROOT / "examples" / "prompts_heldout.txt").read_text().splitlines() if line.strip()]


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=600) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(config: Path, out: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "tether.cli", "deploy", str(config), "--port", str(port),
                             "--set", f"output_dir={out}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for _ in range(3000):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stdout.read().decode())
            time.sleep(0.2)
    raise RuntimeError("tether deploy did not start")


def load(url: str, clients: int, requests: int, tokens: int, on_start=None) -> dict:
    latencies, failures, replies = [], [], []
    lock = threading.Lock()

    def client(c):
        for i in range(requests):
            t0 = time.perf_counter()
            try:
                status, body = post(url + "/v1/completions", {"prompt": PROMPTS[(c + i) % len(PROMPTS)],
                                                               "max_tokens": tokens})
            except OSError as e:
                status, body = 0, {"error": str(e)}
            with lock:
                latencies.append(time.perf_counter() - t0)
                (replies if status == 200 else failures).append(body)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, c) for c in range(clients)]
        if on_start:
            on_start()
        [f.result() for f in futures]
    wall = time.perf_counter() - t0
    lat = np.array(latencies)
    return {"clients": clients, "requests": len(lat), "failed": len(failures), "p50_s": float(np.percentile(lat, 50)),
            "p99_s": float(np.percentile(lat, 99)), "replies_per_s": len(replies) / wall, "wall_s": wall,
            "replies": replies, "failures": failures[:3]}


def publish_random_version(folder: Path) -> None:
    """v1: a LoRA adapter of small random weights on the embedded Gemma, published as the learner does."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tether.deploy.store import Store
    from tether.infra import atomic
    from tether.infra.models import EMBEDDED_LM, load_causal_lm

    model, _ = load_causal_lm(EMBEDDED_LM, device="cpu")
    torch.manual_seed(0)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=1e-3)
    store = Store(folder)
    with atomic.folder(store.version_dir("v1")) as building:
        peft.save_pretrained(building / "adapter", safe_serialization=True)
        atomic.write_json(building / "version.json", {"version": "v1", "parent": "v0", "status": "passed",
                                                       "adapter": True, "why": "benchmark swap", "learned_through": 0})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "examples" / "deploy.yaml")
    ap.add_argument("--clients", default="1,8,64")
    ap.add_argument("--requests", type=int, default=4, help="requests per client at each level")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="deploy-latency-")) / "dep"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(args.config, folder, port)
    results = {"cpu_count": os.cpu_count(), "tokens": args.tokens, "levels": []}
    try:
        for n in [int(x) for x in args.clients.split(",")]:
            r = load(url, n, args.requests, args.tokens)
            results["levels"].append({k: v for k, v in r.items() if k != "replies"})
            print(f"{n} clients: p50 {r['p50_s']:.2f}s p99 {r['p99_s']:.2f}s, {r['replies_per_s']:.2f} replies/s, "
                  f"{r['failed']} failed", flush=True)
        publish_random_version(folder)

        def swap():
            time.sleep(2.0)
            from tether.deploy.store import Store

            Store(folder).set_live("v1", "benchmark swap")

        r = load(url, 64, args.requests, args.tokens, on_start=lambda: threading.Thread(target=swap).start())
        logged = {row["id"]: row["version"] for row in map(json.loads, (folder / "interactions.jsonl").open())}
        wrong = sum(logged.get(b["id"]) != b["model"].removeprefix("tether-") for b in r["replies"])
        versions = sorted({b["model"] for b in r["replies"]})
        results["swap"] = {"clients": 64, "requests": r["requests"], "failed": r["failed"], "wrong_version": wrong,
                           "versions_seen": versions, "p50_s": r["p50_s"], "p99_s": r["p99_s"]}
        print(f"hot swap under 64 clients: {r['failed']} failed of {r['requests']}, {wrong} replies naming the wrong "
              f"version; versions answering: {versions}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
