"""Multi-process training under torchrun: who this process is, and the few collectives used.

One process per device (NCCL on GPUs, gloo on CPUs). The global batch, the budget and the
data order do not depend on the number of processes: every rank builds the same global batch
and trains its own rows of it, gradients are averaged by DistributedDataParallel, and rank 0
alone measures throughput, writes logs and checkpoints. A plain `python` run is world size 1
and touches none of this.

The process group is joined once, by the command that trains or evaluates (`join_world`), and
the `World` it returns is passed down: no library function starts it behind the caller's back.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from languini.errors import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def device(self, requested: str) -> str:
        """Each rank's own GPU; CPU ranks share the CPU."""
        if self.active and torch.cuda.is_available() and requested in ("auto", "cuda"):
            return f"cuda:{self.local_rank}"
        return requested

    def rows(self, batch_size: int) -> slice:
        """This rank's rows of the global batch."""
        if batch_size % self.size:
            raise UserError(f"The batch size {batch_size} does not divide among {self.size} processes.")
        per = batch_size // self.size
        return slice(self.rank * per, (self.rank + 1) * per)


def join_world() -> World:
    """This process's place; under torchrun (WORLD_SIZE > 1) it joins the process group first
    (once: a second call finds it joined). A plain process is a world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier(w: World) -> None:
    if w.active:
        dist.barrier()


def broadcast(obj: Any, w: World) -> Any:
    """Rank 0's object, on every rank."""
    if not w.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, w: World) -> list[Any]:
    """Every rank's object, in rank order, on every rank."""
    if not w.active:
        return [obj]
    out: list[Any] = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool, w: World) -> bool:
    """True on every rank if it is true on one: decisions (stop, checkpoint) must agree."""
    if not w.active:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean(value: torch.Tensor, w: World) -> torch.Tensor:
    if not w.active:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / w.size


def sum_arrays(a: np.ndarray, w: World) -> np.ndarray:
    """Element-wise sum over ranks: ranks fill disjoint positions of zeroed arrays."""
    if not w.active:
        return a
    t = torch.from_numpy(np.ascontiguousarray(a))
    dist.all_reduce(t)
    return t.numpy()


@contextlib.contextmanager
def main_only(w: World, cm: contextlib.AbstractContextManager) -> Iterator[None]:
    """Enter `cm` (a lock, say) on rank 0 only."""
    if w.is_main:
        with cm:
            yield
    else:
        yield
