"""Torch's thread count from the cores this process may use, and one note when other work shares them.

On a shared CPU torch's OpenMP threads wait for each other at every operation: a tune beside a
`tether sample` on a 2-core machine, two threads each, took 95-130 s a step instead of 17 s
(docs/benchmarks.md). `configure` gives torch the cores this process may run on (its CPU
affinity, capped by a cgroup CPU quota), divided among `jobs` processes side by side, unless
TETHER_THREADS or OMP_NUM_THREADS says otherwise; every `tether` command calls it before torch
loads. `warn_once` prints one note when busy tether processes or other work already fill the
cores; it reads /proc at most once a minute and never raises.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tether.errors import TetherError
from tether.infra import progress

ENV = "TETHER_THREADS"
PROC = Path("/proc")
RESCAN_S = 60.0  # warn_once reads /proc at most this often
BUSY = 0.1  # a process using less of a core than this is idle (a server waiting, a `tail -f`)
SLACK = 0.5  # cores of demand over the machine's before it counts as oversubscribed
# A busy neighbour wants at least a core, however little it gets: on a full machine it is starved, not idle.

_choice: dict = {}  # what configure chose: threads, why
_wrote: str | None = None  # the OMP_NUM_THREADS value configure wrote, so a later call tells it from the user's
_cpu: dict[tuple[int, float], tuple[float, float]] = {}  # (pid, start) -> (cpu seconds, monotonic time) last scan
_state = {"warned": False, "scanned": -math.inf}


def cores_available() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = cgroup_quota()
    return max(1, min(cores, int(quota)) if quota else cores)


def cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """Cores a cgroup CPU quota allows (v2 cpu.max, or v1 cpu.cfs_quota_us); None when unlimited or unreadable."""
    v1 = root / "cpu"
    for quota_file, period_file in ((root / "cpu.max", None), (v1 / "cpu.cfs_quota_us", v1 / "cpu.cfs_period_us")):
        try:
            fields = quota_file.read_text().split()
            period = fields[1] if period_file is None else period_file.read_text().strip()
            if fields[0] not in ("max", "-1"):
                return int(fields[0]) / int(period)
        except (OSError, ValueError, IndexError, ZeroDivisionError):
            continue
    return None


def _explicit() -> tuple[int, str] | None:
    """(threads, variable) when the user chose: TETHER_THREADS first, then OMP_NUM_THREADS (not configure's own)."""
    value = os.environ.get(ENV, "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise TetherError(f"{ENV}={value!r}: give a whole number of threads, 1 or more")
        return int(value), ENV
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp and omp != _wrote:
        first = omp.split(",")[0].strip()  # OpenMP also takes a list, one count per nesting level
        return (int(first) if first.isdigit() and int(first) > 0 else cores_available()), "OMP_NUM_THREADS"
    return None


def configure(jobs: int = 1) -> int:
    """Sets torch's threads for this process, one of `jobs` side by side, and returns the count.

    TETHER_THREADS, when set, is the count; a user's OMP_NUM_THREADS is left to OpenMP. Otherwise
    the cores are divided among the jobs. Before torch loads this only sets OMP_NUM_THREADS (read
    as torch starts, so `tether --help` stays fast); after, it also calls torch.set_num_threads.
    """
    global _wrote
    cores = cores_available()
    shared = f"{cores} cores" + (f" / {jobs} jobs" if jobs > 1 else "")
    threads, why = _explicit() or (max(1, cores // max(1, jobs)), shared)
    if why != "OMP_NUM_THREADS":
        os.environ["OMP_NUM_THREADS"] = _wrote = str(threads)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(threads)
    _choice.update(threads=threads, why=why)
    return threads


def configure_command() -> None:
    # the `tether` app's callback: every command, before its own options are read (a docstring would be the app's help)
    configure()


def describe() -> str:
    """'2 threads (2 cores)': torch's thread count now, and why configure chose it."""
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else _choice.get("threads", cores_available())
    return f"{threads} thread{'' if threads == 1 else 's'}" + (f" ({_choice['why']})" if _choice else "")


def worker_env(jobs: int) -> dict[str, str]:
    """The environment for one of `jobs` worker processes: TETHER_THREADS the cores divided among them,
    unless the user chose the threads (TETHER_THREADS or OMP_NUM_THREADS), which each worker then keeps."""
    env = dict(os.environ)
    if _explicit() is None:
        env[ENV] = str(max(1, cores_available() // max(1, jobs)))
    return env


@dataclass
class Neighbour:
    pid: int
    cores: float  # the cores it used lately: since the last scan, or since it started
    threads: int


def _stat(pid: int, proc: Path) -> tuple[int, float, float, int] | None:
    """(parent pid, cpu seconds, start in seconds after boot, threads) from /proc/PID/stat."""
    try:
        rest = (proc / str(pid) / "stat").read_text().rpartition(")")[2].split()  # the name may hold spaces
        hz = os.sysconf("SC_CLK_TCK")
        return int(rest[1]), (int(rest[11]) + int(rest[12])) / hz, int(rest[19]) / hz, int(rest[17])
    except (OSError, ValueError, IndexError):
        return None


def _lineage(pid: int, proc: Path) -> set[int]:
    """The process and its ancestors."""
    seen: set[int] = set()
    while pid > 1 and pid not in seen and len(seen) < 64:
        seen.add(pid)
        stat = _stat(pid, proc)
        if stat is None:
            break
        pid = stat[0]
    return seen


def _is_tether(pid: int, proc: Path) -> bool:
    """A command line naming tether: the `tether` script, `-m tether.cli`, `tether.experiment.worker`, ..."""
    try:
        argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")[:8]
    except OSError:
        return False
    return any(os.path.basename(arg.decode(errors="replace")).startswith("tether") for arg in argv)


def _share(pid: int, proc: Path, uptime: float) -> tuple[float, int] | None:
    """(cores used lately, threads): since the last scan of this process, else since it started."""
    stat = _stat(pid, proc)
    if stat is None:
        return None
    _, cpu, start, threads = stat
    now, before = time.monotonic(), _cpu.get((pid, start))
    _cpu[pid, start] = (cpu, now)
    if before and now - before[1] > 1:
        return (cpu - before[0]) / (now - before[1]), threads
    return cpu / max(uptime - start, 0.1), threads


def neighbours(proc: Path = PROC) -> list[Neighbour]:
    """Other busy tether processes: not this one, nor its ancestors (an experiment's grid) or descendants."""
    me = os.getpid()
    mine, uptime, found = _lineage(me, proc), float((proc / "uptime").read_text().split()[0]), []
    for entry in os.scandir(proc):
        if not entry.name.isdigit() or int(entry.name) in mine or not _is_tether(int(entry.name), proc):
            continue
        pid = int(entry.name)
        share = _share(pid, proc, uptime)
        if share and share[0] >= BUSY and me not in _lineage(pid, proc):
            found.append(Neighbour(pid, round(share[0], 2), share[1]))
    return found


def _threads_now() -> int:
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch else _choice.get("threads", cores_available())


def oversubscribed(proc: Path = PROC, threads: int | None = None) -> str | None:
    """What keeps this process's cores busy besides it, in words, or None when its `threads` fit beside it."""
    cores, threads = cores_available(), threads or _threads_now()
    others = neighbours(proc)
    if others and sum(max(1.0, n.cores) for n in others) + threads > cores + SLACK:
        each, many = max(1, cores // (len(others) + 1)), len(others) > 1
        return (
            f"{len(others)} other tether process{'es share' if many else ' shares'} these {cores} cores; "
            f"steps will be slow. Run one at a time, or give each fewer threads: {ENV}={each} tether ..."
        )
    load = other_load(proc)
    if threads > 1 and load >= 1 and load + threads > cores + SLACK:
        return (
            f"other work keeps about {load:.1f} of these {cores} cores busy; steps will be slow. "
            f"Give tether fewer threads: {ENV}={max(1, cores - math.ceil(load))} tether ..."
        )
    return None


def other_load(proc: Path = PROC) -> float:
    """Runnable work besides this process: the smaller of the 1-minute load average less this process's
    recent share and the runnable count now less this reader, so neither a spike nor a fading average counts alone."""
    fields = (proc / "loadavg").read_text().split()
    own = _share(os.getpid(), proc, float((proc / "uptime").read_text().split()[0]))
    return max(0.0, min(float(fields[0]) - (own[0] if own else 0.0), float(fields[3].split("/")[0]) - 1))


def warn_once(proc: Path = PROC) -> bool:
    """One yellow note on stderr the first time the cores are found oversubscribed; True then.

    Reads /proc at most once a RESCAN_S (call it every step), only on the main process of a
    data-parallel run; silent under --quiet; never raises."""
    now = time.monotonic()
    if _state["warned"] or now - _state["scanned"] < RESCAN_S or os.environ.get("RANK", "0") != "0":
        return False
    _state["scanned"] = now
    try:
        why = oversubscribed(proc)
    except Exception:  # a /proc that reads oddly (or none: not Linux) never stops a run
        return False
    if why:
        _state["warned"] = True
        progress.note(f"[yellow]note:[/] {why}", soft_wrap=True)
    return bool(why)


def load_check():
    """A transformers TrainerCallback that calls `warn_once` as training starts and after each step."""
    from transformers import TrainerCallback

    class LoadCheck(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            warn_once()

        def on_step_end(self, args, state, control, **kwargs):
            warn_once()

    return LoadCheck()
