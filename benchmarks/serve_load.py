"""Load and faults against `tether serve`, on loopback: throughput, latency, batching, correctness, no loss.

    python benchmarks/serve_load.py                                    # 8 and 32 clients, 30 s each, embedded Gemma
    python benchmarks/serve_load.py --clients 1,8,32,64 --seconds 60 --out /tmp/serve_load.json
    python benchmarks/serve_load.py --model /path/to/tiny --seconds 5  # a smoke run

Starts `tether serve` (a subprocess, a fresh run folder), then for each client count N runs
N client threads for a bounded time, each posting OpenRLHF-shaped requests (`--per-request`
prompt + response texts drawn from a pool of distinct texts) back to back. Reports throughput
(texts/s), request latency p50/p99, and the batching achieved (texts per judge call, from
/metrics). Every answer is checked against direct scoring of the pool with `Evaluator.score`
in this process (|difference| <= --tolerance; wrong and dropped, meaning no 200 answer, are
counted). During the first phase a fault client sends malformed JSON, wrong field types, an
empty list, a 10 MB body and special-token strings, and checks each answer. During the last
phase the service is killed with SIGKILL and restarted; afterwards every acknowledged sample
must be in samples.jsonl. Results: JSON to --out, a markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [line for line in (ROOT / "examples" / "prompts.txt").read_text().splitlines() if line.strip()]
REPLIES = [json.loads(line)["text"] for line in (ROOT / "examples" / "texts.jsonl").read_text().splitlines() if line.strip()]


def post(url: str, body: bytes, kind: str = "application/json", timeout: float = 600) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": kind})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def metrics(base: str) -> dict[str, float]:
    with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
        return {k: float(v) for k, v in (line.split() for line in r.read().decode().splitlines() if not line.startswith("#"))}


def start(args, run_dir: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "tether.cli", "serve", args.constitution, "-m", args.model, "--out", str(run_dir),
               "--port", str(port), "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
               "--device", args.device]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(6000):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"tether serve exited with {proc.returncode}")
            time.sleep(0.1)
    raise SystemExit("tether serve did not start")


FAULTS = [  # (name, body, content type, expected status)
    ("malformed JSON", b'{"query": ["a"', "application/json", 400),
    ("wrong field type", b'{"query": [1, 2]}', "application/json", 400),
    ("query not a list", b'{"query": "a"}', "application/json", 400),
    ("empty list", b'{"query": []}', "application/json", 400),
    ("10 MB body", json.dumps({"query": ["x" * 10_000_000]}).encode(), "application/json", 400),
    ("lone surrogate", b'{"query": ["a\\ud800"]}', "application/json", 400),
    ("form post", b"query=a", "application/x-www-form-urlencoded", 400),
    ("special-token strings (judged as text)", json.dumps({"query": ["<start_of_image>" * 20 + "<eos><bos>"]}).encode(),
     "application/json", 200),
]


def phase(url: str, pool: list[tuple[str, str]], clients: int, seconds: float, per_request: int, seed: int,
          faults: bool = False, kill=None) -> dict:
    """N clients for `seconds`; returns latencies, answers (text -> rewards) and what went wrong."""
    stop_at = time.monotonic() + seconds
    latencies, answers, dropped, retried, fault_results = [], [], [0], [0], []
    lock = threading.Lock()

    def client(c: int):
        rng = random.Random(seed * 1000 + c)
        while time.monotonic() < stop_at:
            chosen = [pool[rng.randrange(len(pool))] for _ in range(per_request)]
            body = json.dumps({"query": [p + r for p, r in chosen], "prompts": [p for p, _ in chosen]}).encode()
            t0 = time.perf_counter()
            status, answer = 0, {}
            while time.monotonic() < stop_at + 120:  # retried until answered, as OpenRLHF's client does
                try:
                    status, answer = post(url, body)
                    break
                except OSError:  # the service is down (killed): its answer never came, so nothing was acknowledged
                    retried[0] += 1
                    time.sleep(0.2)
            with lock:
                if status == 200:
                    latencies.append(time.perf_counter() - t0)
                    answers.append((chosen, answer["rewards"]))
                else:
                    dropped[0] += 1

    def fault_client():
        for name, body, kind, want in FAULTS:
            status, answer = post(url, body, kind)
            error = answer.get("error", "")
            fault_results.append({"input": name, "status": status, "expected": want,
                                  "one_line": status == 200 or (bool(error) and "\n" not in error), "message": error[:120]})

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    if faults:
        threads.append(threading.Thread(target=fault_client))
    [t.start() for t in threads]
    if kill is not None:
        time.sleep(seconds / 3)
        kill()
    [t.join() for t in threads]
    return {"latencies": latencies, "answers": answers, "dropped": dropped[0], "retried": retried[0], "faults": fault_results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--constitution", default=str(ROOT / "examples" / "cheerful.yaml"))
    parser.add_argument("--model", default="embedded:gemma-3-270m")
    parser.add_argument("--clients", default="8,32", help="client counts, one phase each (up to 64)")
    parser.add_argument("--seconds", type=float, default=30.0, help="each phase's length")
    parser.add_argument("--per-request", type=int, default=4, help="texts in one request (an OpenRLHF micro-batch)")
    parser.add_argument("--pool", type=int, default=48, help="distinct texts the requests draw from")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest |service - direct| counted as right")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-kill", action="store_true", help="skip the kill -9 and restart in the last phase")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    if max(counts) > 64:
        raise SystemExit("--clients: at most 64")

    rng = random.Random(0)
    pool = [(PROMPTS[i % len(PROMPTS)] + " ", REPLIES[rng.randrange(len(REPLIES))]) for i in range(args.pool)]
    run_dir = Path(tempfile.mkdtemp(prefix="serve-load-")) / "run"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base, url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/get_reward"
    t0 = time.perf_counter()
    proc = start(args, run_dir, port)
    startup = time.perf_counter() - t0

    from tether.judge.evaluator import Evaluator

    direct = Evaluator(args.model, args.constitution, device=args.device)
    truth = dict(zip(pool, direct.score([p + r for p, r in pool]).total().tolist()))
    acknowledged: list[tuple[str, str]] = []
    results = []
    for n, clients in enumerate(counts):
        last = n == len(counts) - 1
        before = metrics(base)
        state = {"proc": proc}

        def kill():
            os.kill(state["proc"].pid, signal.SIGKILL)
            state["proc"].wait()
            state["killed_at"] = time.perf_counter()
            state["proc"] = start(args, run_dir, port)
            state["restart_s"] = time.perf_counter() - state["killed_at"]

        t = time.perf_counter()
        out = phase(url, pool, clients, args.seconds, args.per_request, seed=n, faults=n == 0,
                    kill=kill if last and not args.no_kill else None)
        wall = time.perf_counter() - t
        proc = state["proc"]
        after = metrics(base)
        texts = sum(len(chosen) for chosen, _ in out["answers"])
        diffs = [abs(r - truth[c]) for chosen, rewards in out["answers"] for c, r in zip(chosen, rewards)]
        killed = "killed_at" in state
        batches = after["tether_serve_batches_total"] - (0 if killed else before["tether_serve_batches_total"])
        judged = after["tether_serve_samples_total"] - (0 if killed else before["tether_serve_samples_total"])
        lat = np.array(out["latencies"]) * 1000
        for chosen, _ in out["answers"]:
            acknowledged += chosen
        results.append({
            "clients": clients, "seconds": round(wall, 1), "requests": len(out["answers"]), "texts": texts,
            "texts_per_s": round(texts / wall, 2), "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
            "texts_per_judge_call": round(judged / batches, 2) if batches else None,
            "wrong": sum(d > args.tolerance for d in diffs), "max_abs_diff": float(max(diffs, default=0.0)),
            "dropped": out["dropped"], "retried_connections": out["retried"], "faults": out["faults"],
            **({"killed_and_restarted": True, "restart_s": round(state["restart_s"], 1)} if killed else {}),
        })
        print(json.dumps({k: v for k, v in results[-1].items() if k != "faults"}), flush=True)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)

    from tether.infra import jsonl

    logged = {(r["prompt"], r["completion"]) for r in jsonl.read(run_dir / "samples.jsonl")}
    lost = [a for a in acknowledged if a not in logged]
    summary = {"machine": f"{platform.node()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
               "model": args.model, "per_request": args.per_request, "max_batch": args.max_batch,
               "max_wait_ms": args.max_wait_ms, "startup_s": round(startup, 1), "phases": results,
               "acknowledged_samples": len(acknowledged), "acknowledged_not_logged": len(lost), "run_dir": str(run_dir)}
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1))
    print("\n| clients | s | requests | texts/s | p50 ms | p99 ms | texts per judge call | wrong | dropped |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        note = " (killed + restarted)" if r.get("killed_and_restarted") else ""
        print(f"| {r['clients']}{note} | {r['seconds']} | {r['requests']} | {r['texts_per_s']} | {r['p50_ms']} | "
              f"{r['p99_ms']} | {r['texts_per_judge_call']} | {r['wrong']} | {r['dropped']} |")
    print("\n| fault | status | expected | one line | message |\n| --- | --- | --- | --- | --- |")
    for f in results[0]["faults"]:
        print(f"| {f['input']} | {f['status']} | {f['expected']} | {f['one_line']} | {f['message']} |")
    print(f"\nacknowledged samples: {len(acknowledged)}, not in samples.jsonl after the kill: {len(lost)}; "
          f"{summary['machine']}")


if __name__ == "__main__":
    main()
