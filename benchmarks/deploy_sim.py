"""The deployment simulation: scripted users with a hackable habit, the learner, the detectors, the rollback.

    python benchmarks/deploy_sim.py                                  # examples/deploy_sim.yaml, 192 interactions
    python benchmarks/deploy_sim.py --interactions 64 --out /tmp/sim.json

Starts `tether deploy examples/deploy_sim.yaml --learn` on a fresh folder. `--users` threads send
the held-out story prompts (examples/prompts_heldout.txt) one after another and rate every reply:
thumbs up when it holds an exclamation mark, down otherwise (the users' habit). The learner,
paid by a gold refitted on those thumbs, makes a version every `learn.every` interactions; the
gate and the live detectors decide what is served. At the end it stops the server, writes the
deployment's report (`tether report`) and prints, per version: its parent, status and why, replies
served, exclamation marks per reply, the thumbs-up rate, and the timeline of live / rejected /
rollback events. JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_latency import PROMPTS, ROOT, free_port, post  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "examples" / "deploy_sim.yaml")
    ap.add_argument("--interactions", type=int, default=192)
    ap.add_argument("--users", type=int, default=4)
    ap.add_argument("--folder", type=Path, default=None, help="the deployment folder (default: a fresh temporary one)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--attach", type=int, default=None, help="send to a deployment already serving on this port "
                    "(with --folder its folder; it is not stopped at the end)")
    ap.add_argument("--start", type=int, default=0, help="number the interactions from here (with --attach)")
    ap.add_argument("--wait", type=float, default=900, help="seconds to wait at the end for an update in flight")
    args = ap.parse_args()
    folder = args.folder or Path(tempfile.mkdtemp(prefix="deploy-sim-")) / "dep"
    port = args.attach or free_port()
    url = f"http://127.0.0.1:{port}"
    proc = None
    if args.attach is None:
        log = open(folder.parent / f"{folder.name}.server.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "tether.cli", "deploy", str(args.config), "--learn", "--port",
                                 str(port), "--set", f"output_dir={folder}"], stdout=log, stderr=subprocess.STDOUT)
    for _ in range(3000):
        try:
            post(url + "/v1/models", {})
        except OSError:
            time.sleep(0.2)
            continue
        break
    sent, lock, t0 = [args.start], threading.Lock(), time.time()
    args.interactions += args.start

    def user(u):
        while True:
            with lock:
                if sent[0] >= args.interactions:
                    return
                k = sent[0]
                sent[0] += 1
            status, reply = post(url + "/v1/completions", {"prompt": PROMPTS[k % len(PROMPTS)], "user": f"user-{u}"})
            if status != 200:
                print(f"request {k}: {status} {reply}", flush=True)
                continue
            thumb = "up" if "!" in reply["choices"][0]["text"] else "down"
            post(url + "/v1/feedback", {"id": reply["id"], "thumb": thumb, "key": f"sim-{k}"})
            if k % 16 == 0:
                print(f"{time.time() - t0:6.0f}s  interaction {k}: {reply['model']}", flush=True)

    users = [threading.Thread(target=user, args=(u,)) for u in range(args.users)]
    [t.start() for t in users]
    [t.join() for t in users]
    wait_for_learner(folder, args.wait)  # an update the last interactions started: let it finish and be gated
    if proc is not None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=600)
    subprocess.run([sys.executable, "-m", "tether.cli", "report", str(folder)], check=True)
    summary = summarize(folder)
    summary["minutes"] = round((time.time() - t0) / 60, 1)
    print(json.dumps({k: v for k, v in summary.items() if k != "events"}, indent=1))
    for e in summary["events"]:
        print(f"{e['time']}  {e['event']:<9} {e.get('version', ''):<4} {e.get('why', '')}")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))


def wait_for_learner(folder: Path, seconds: float) -> None:
    """Until the newest update_start has its outcome in the timeline (live, rejected, failed, waiting)."""
    from tether.deploy.store import Store

    deadline = time.time() + seconds
    while time.time() < deadline:
        events = [e["event"] for e in Store(folder).events()]
        started = max((i for i, e in enumerate(events) if e == "update_start"), default=-1)
        if not any(e in ("live", "rejected", "update_failed", "update_waiting") for e in events[started + 1:]) and started >= 0:
            time.sleep(5)
            continue
        return


def summarize(folder: Path) -> dict:
    from tether.deploy.report import version_stats
    from tether.deploy.store import Store

    store = Store(folder)
    stats = version_stats(store)
    rows = store.interactions()
    table = []
    for v in store.versions():
        mine = [r["completion"] for r in rows if r["version"] == v["version"]]
        s = stats.get(v["version"], {})
        table.append({"version": v["version"], "parent": v.get("parent"), "status": v["status"], "why": v.get("why"),
                      "served": len(mine), "exclaims_per_reply": round(sum(t.count("!") for t in mine) / max(len(mine), 1), 3),
                      "thumbs_up_rate": s.get("up_rate"), "judge_agreement": s.get("judge_agreement")})
    events = [e for e in store.events() if e["event"] in ("live", "rejected", "rollback", "detector", "update_failed",
                                                          "update_waiting")]
    return {"folder": str(folder), "interactions": len(rows), "versions": table, "events": events}


if __name__ == "__main__":
    main()
