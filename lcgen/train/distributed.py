"""Data-parallel training across processes, on torch.distributed.

``torchrun --nproc_per_node N -m lcgen train ...`` starts N copies of the trainer and sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment; the
trainer then joins one process group (gloo on CPU, nccl on CUDA) and wraps its model in
:class:`torch.nn.parallel.DistributedDataParallel`. Without those variables everything here is
the identity and training is the single-process loop.

How the ranks share the work, so that N processes compute what one process computes:

- every rank walks the same global batch order (a function of ``(seed, epoch)`` only) and reads
  only its contiguous share of each global batch (:func:`lcgen.train.data.batch_share`): the global batch is the
  configured ``batch_size`` whatever N is;
- every rank draws the random numbers of the whole global batch's masks from the same seeded
  generator and keeps its rows, so a sample's mask does not depend on N either;
- the loss is pooled over the positions of the global batch: each rank scales its own sums by
  the global counts (one :func:`all_sum` of four numbers per step) and by N, and DDP's gradient
  average over ranks then gives exactly the gradient of the global loss.

Rank 0 alone writes the run directory, checkpoints, history and console lines.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from lcgen.errors import LcgenError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank among ``world_size`` (``local_rank`` on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes and prints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def from_env() -> Dist:
    """The place torchrun (or any ``env://`` launcher) gave this process; one process without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return Dist(rank=rank, world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", rank)))


def backend_for(device: torch.device) -> str:
    """nccl for CUDA tensors, gloo for CPU tensors."""
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(place: Dist, device: torch.device) -> Iterator[None]:
    """Join the job's process group for the duration (a no-op for one process)."""
    if not place.enabled or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), rank=place.rank, world_size=place.world_size,
                            device_id=device if device.type == "cuda" else None)
    try:
        yield
    finally:
        dist.destroy_process_group()


def all_sum(tensor: torch.Tensor, place: Dist) -> torch.Tensor:
    """Sum ``tensor`` over all ranks, in place (and returned); the identity for one process."""
    if place.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast(obj: Any, place: Dist) -> Any:
    """Rank 0's ``obj`` on every rank (any picklable Python value)."""
    if not place.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, place: Dist) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
    if not place.enabled:
        return [obj]
    out: list[Any] = [None] * place.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(place: Dist) -> None:
    if place.enabled:
        dist.barrier()


def on_main(fn: Callable[[], T], place: Dist) -> T:
    """``fn()`` run on rank 0 alone, its result on every rank.

    An :class:`LcgenError` raised on rank 0 (a run directory that exists, say) is raised on
    every rank, so no rank waits for one that has stopped.
    """
    if not place.enabled:
        return fn()
    out = None
    if place.main:
        try:
            out = ("ok", fn())
        except LcgenError as exc:
            out = ("error", str(exc))
    status, value = broadcast(out, place)
    if status == "error":
        raise LcgenError(value)
    return value
