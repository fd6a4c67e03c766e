"""Data-parallel runs: the few collective operations tether's callbacks need.

Under `torchrun` / `accelerate launch` every process generates and scores its own share of
the batch. The monitors must see the whole batch, every rank must log the same metrics
(the detectors decide to stop from them, and a stop on one rank alone would hang the
others), and only one process may write the run directory. Without a process group
these functions are the identity, so single-process runs pay nothing.
"""

from __future__ import annotations

import torch.distributed as dist


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if _active() else 1


def is_main() -> bool:
    return not _active() or dist.get_rank() == 0


def barrier() -> None:
    if _active():
        dist.barrier()


def gather(items: list) -> list:
    """Every rank's list, concatenated in rank order, on every rank."""
    if not _active():
        return list(items)
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(items))
    return [item for part in parts for item in part]


def broadcast(obj):
    """Rank 0's object, on every rank."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
