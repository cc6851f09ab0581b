"""Ranks of a `torch.distributed` run: joining it, the shard of each rank, the two meetings.

`explain` runs unchanged in one process or under `torchrun` (one or several nodes). Under
`torchrun` the environment names the rank and the world size; when no process group
exists yet one is created (gloo on CPU, nccl on CUDA) and destroyed at the end. Ranks meet
twice: at the start (rank 0 has created or checked the store and tells everyone which
chunks are missing) and at the end (every rank reports what it did).

Shards are deterministic and disjoint: the missing chunks, in order, dealt round-robin,
`missing[rank::world]`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["Ranks", "abandon", "gather", "join", "leave", "local_rank", "shard", "share"]


@dataclasses.dataclass(frozen=True)
class Ranks:
    """Where this process stands: its rank, the world size, its local rank (the GPU it
    uses), and whether `join` created the process group (then `leave` destroys it)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def join(device: torch.device) -> Ranks:
    """This process's place in the run; creates the process group under `torchrun`."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), local_rank(), owns_group=False)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Ranks()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank(), owns_group=True)


def shard(missing: Sequence[int], ranks: Ranks) -> list[int]:
    """The chunks this rank writes: every `world`-th missing chunk from the `rank`-th."""
    return list(missing[ranks.rank :: ranks.world])


def share(value: Any, ranks: Ranks) -> Any:
    """Rank 0's `value`, on every rank (the meeting at the start)."""
    if not ranks.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any, ranks: Ranks) -> list[Any]:
    """Every rank's `value`, in rank order, on rank 0 (the meeting at the end); `[value]`
    on the other ranks and in a single process."""
    if not ranks.distributed:
        return [value]
    values: list[Any] = [None] * ranks.world
    dist.all_gather_object(values, value)
    return values if ranks.rank == 0 else [value]


def abandon(ranks: Ranks) -> None:
    """After an error: destroy the process group if `join` created it, without waiting
    for the other ranks (which may never arrive)."""
    if ranks.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def leave(ranks: Ranks) -> None:
    """Wait for every rank, then destroy the process group if `join` created it."""
    if ranks.distributed:
        dist.barrier()
    if ranks.owns_group:
        dist.destroy_process_group()
