"""Torch threads from the cores a process may use, divided among `experiment --jobs`, and one note when shared."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from types import SimpleNamespace

import pytest
import torch

from tether.errors import TetherError
from tether.infra import progress, threads

CGROUP_QUOTA = threads.cgroup_quota  # the fixture below replaces it


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """No user setting, 8 cores, no quota, and torch's thread count put back afterwards."""
    before = torch.get_num_threads()
    for name in (threads.ENV, "OMP_NUM_THREADS"):
        monkeypatch.setenv(name, "0")  # so the value configure writes is taken away again afterwards
        monkeypatch.delenv(name)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr(threads, "cgroup_quota", lambda: None)
    monkeypatch.setattr(threads, "_choice", {})
    monkeypatch.setattr(threads, "_wrote", None)
    monkeypatch.setattr(threads, "_cpu", {})
    monkeypatch.setattr(threads, "_state", {"warned": False, "scanned": float("-inf")})
    yield
    torch.set_num_threads(before)


def test_jobs_divide_the_cores():
    assert threads.configure() == 8 and torch.get_num_threads() == 8 and os.environ["OMP_NUM_THREADS"] == "8"
    assert threads.describe() == "8 threads (8 cores)"
    assert threads.configure(jobs=3) == 2 and torch.get_num_threads() == 2  # its own OMP_NUM_THREADS is not the user's
    assert threads.describe() == "2 threads (8 cores / 3 jobs)"
    assert threads.configure(jobs=16) == 1 and threads.describe().startswith("1 thread ")


def test_a_cgroup_quota_caps_the_cores(tmp_path, monkeypatch):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert CGROUP_QUOTA(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert CGROUP_QUOTA(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert CGROUP_QUOTA(tmp_path) == 3.0
    monkeypatch.setattr(threads, "cgroup_quota", lambda: 1.5)
    assert threads.cores_available() == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(threads, "cgroup_quota", lambda: 4.0)
    assert threads.cores_available() == 2  # the affinity is the tighter limit


def test_the_users_setting_is_respected(monkeypatch):
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.configure(jobs=2) == 3 and torch.get_num_threads() == 3 and os.environ["OMP_NUM_THREADS"] == "3"
    assert threads.describe() == f"3 threads ({threads.ENV})"
    monkeypatch.delenv(threads.ENV)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(5)  # OpenMP read the user's value when torch loaded: configure leaves torch alone
    assert threads.configure(jobs=4) == 1 and torch.get_num_threads() == 5 and os.environ["OMP_NUM_THREADS"] == "1"
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(threads.ENV, bad)
        with pytest.raises(TetherError, match=f"{threads.ENV}='{bad}'"):
            threads.configure()


def test_every_command_configures_before_it_runs(monkeypatch, capsys):
    from tether.cli import main

    calls = []
    monkeypatch.setattr(threads, "configure", lambda jobs=1: calls.append(jobs))
    with pytest.raises(SystemExit):
        main(["report", "/no/such/run"])
    assert calls == [1]


def test_experiment_workers_share_the_cores(tmp_path, monkeypatch, capsys):
    from tether.experiment import grid

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert threads.worker_env(2)[threads.ENV] == "2" and threads.worker_env(8)[threads.ENV] == "1"
    started = []

    class Done:
        def __init__(self, argv, env, **kwargs):
            started.append(env)
            self.returncode = 0

        def poll(self):
            return 0

    monkeypatch.setattr(grid.subprocess, "Popen", Done)
    config = SimpleNamespace(
        output_dir=tmp_path,
        jobs=1,
        arms={"a": SimpleNamespace(of=None)},
        runs=lambda: [("a", 0), ("a", 1)],
        needs=lambda arm: None,
        run_dir=lambda arm, seed: tmp_path / f"{arm}-s{seed}",
    )
    assert grid.run_grid(tmp_path / "experiment.yaml", config, jobs=2) == {("a", 0): "done", ("a", 1): "done"}
    assert [env[threads.ENV] for env in started] == ["2", "2"] and started[0]["PATH"] == os.environ["PATH"]
    assert "2 at a time, 2 torch thread(s) each" in capsys.readouterr().err
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's choice: each worker keeps it
    assert threads.ENV not in threads.worker_env(2)


def test_a_command_line_names_tether(tmp_path):
    for pid, argv, named in [
        (1, ["python", "-m", "tether.cli", "tune", "x.yaml"], True),
        (2, ["/venv/bin/python", "/venv/bin/tether", "sample", "s.yaml"], True),
        (3, ["python", "-m", "tether.experiment.worker", "e.yaml", "a", "0"], True),
        (4, ["python", "-m", "pytest", "tests/test_tether.py"], False),
        (5, ["vim", "src/tether/cli.py"], False),
    ]:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        assert threads._is_tether(pid, tmp_path) is named, argv


@pytest.fixture
def dummies():
    """Starts python processes named `tether-dummy-<id>`, orphaned (not this test's descendants) unless own=True."""
    marker, pids = f"tether-dummy-{uuid.uuid4().hex[:8]}", []
    busy = "import time\nt = time.time()\nwhile time.time() - t < 30: pass"  # ends itself if the test dies

    def start(work: str = "busy", own: bool = False) -> int:
        code = busy if work == "busy" else "import time; time.sleep(30)"
        if own:
            pid = subprocess.Popen([sys.executable, "-c", code, marker]).pid
        else:
            line = f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} {marker} >/dev/null 2>&1 & echo $!"
            pid = int(subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True).stdout)
        pids.append(pid)
        return pid

    start.marker = marker
    yield start
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _cpu_seconds(pid: int) -> float:
    stat = threads._stat(pid, threads.PROC)
    return stat[1] if stat else 0.0


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_only_busy_tether_processes_outside_this_ones_family_are_neighbours(dummies):
    busy, idle, child = dummies("busy"), dummies("sleep"), dummies("busy", own=True)
    deadline = time.monotonic() + 30

    def idle_share() -> float:  # its start-up (imports) amortised: under load it can take a second or two
        uptime = float((threads.PROC / "uptime").read_text().split()[0])
        share = threads._share(idle, threads.PROC, uptime)
        return share[0] if share else 0.0

    while (min(_cpu_seconds(busy), _cpu_seconds(child)) < 0.3 or idle_share() >= threads.BUSY / 2) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    found = {n.pid: n for n in threads.neighbours()}
    assert busy in found and found[busy].cores >= threads.BUSY and found[busy].threads == 1
    assert idle not in found  # a tether process that waits (a server, a finished sample) takes no core
    assert child not in found and os.getpid() not in found  # its own children (and itself) are not others


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_warn_once_warns_once_and_only_beside_another_tether(dummies, monkeypatch, capsys):
    real = threads._is_tether

    def mine(pid, proc):
        try:
            return real(pid, proc) and dummies.marker.encode() in (proc / str(pid) / "cmdline").read_bytes()
        except OSError:  # gone since
            return False

    monkeypatch.setattr(threads, "_is_tether", mine)  # other people's tether processes on this machine do not count
    monkeypatch.setattr(threads, "other_load", lambda proc=None: 0.0)
    monkeypatch.setattr(threads, "_threads_now", lambda: 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(progress, "_enabled", True)

    assert threads.warn_once() is False and capsys.readouterr().err == ""  # alone
    scanned = threads._state["scanned"]
    assert threads.warn_once() is False and threads._state["scanned"] == scanned  # no new scan within RESCAN_S
    other = dummies("busy")
    while _cpu_seconds(other) < 0.2:
        time.sleep(0.1)
    threads._state["scanned"] = float("-inf")
    assert threads.warn_once() is True
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "note: 1 other tether process shares these 2 cores; steps will be slow" in err
    assert f"{threads.ENV}=1 tether" in err
    threads._state["scanned"] = float("-inf")
    assert threads.warn_once() is False and capsys.readouterr().err == ""  # once


def test_warn_once_is_never_fatal(monkeypatch):
    def broken(proc=None):
        raise OSError("no /proc here")

    monkeypatch.setattr(threads, "oversubscribed", broken)
    assert threads.warn_once() is False


def test_the_load_average_counts_when_no_tether_is_near(monkeypatch):
    monkeypatch.setattr(threads, "neighbours", lambda proc=None: [])
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(threads, "other_load", lambda proc=None: 2.6)
    assert "other work keeps about 2.6 of these 2 cores busy" in threads.oversubscribed(threads=2)
    assert threads.oversubscribed(threads=1) is None  # one thread: nothing fewer to suggest
    monkeypatch.setattr(threads, "other_load", lambda proc=None: 0.3)
    assert threads.oversubscribed(threads=2) is None


def test_workers_that_divide_the_cores_fit_beside_each_other(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(threads, "other_load", lambda proc=None: 0.0)
    monkeypatch.setattr(threads, "neighbours", lambda proc=None: [threads.Neighbour(1, 0.4, 1)])  # starved, busy
    assert threads.oversubscribed(threads=1) is None  # `experiment --jobs 2`: one thread each
    assert "1 other tether process shares these 2 cores" in threads.oversubscribed(threads=2)
