"""Data-parallel training under ``torchrun``: process group, device choice and small collectives.

A plain ``stackgan train`` is a world of one process and every helper here is then a no-op, so
the training loop has no distributed branches of its own beyond "only rank 0 writes".
"""

from __future__ import annotations

import gc
import inspect
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from stackgan_cli.devices import pick_device


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size and its training device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        """True when training across more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes files and draws progress."""
        return self.rank == 0


def launched_rank() -> int:
    """This process's rank under ``torchrun`` (0 without it), known before any process group."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def init_distributed(device_choice: str) -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment (WORLD_SIZE,
    RANK, LOCAL_RANK, MASTER_ADDR/PORT), or return a single-process context without one.

    The backend is NCCL for CUDA devices and gloo for the CPU.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(0, 1, 0, pick_device(device_choice))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_choice, local_rank)
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl", device_id=device)
        else:
            dist.init_process_group("gloo")
    return DistContext(rank, world_size, local_rank, device)


def wrap_ddp(module: torch.nn.Module, ctx: DistContext) -> torch.nn.Module | None:
    """``module`` in DistributedDataParallel when training across processes, else None.

    Parameters and buffers are broadcast from rank 0 once, at construction; after that no
    buffer is synchronised in forward passes. The official D normalises its real and fake
    batches in two separate forwards, and each GPU of the official ``nn.parallel.data_parallel``
    run normalised its own slice of the batch: plain DDP without SyncBatchNorm keeps exactly
    that per-rank batch normalisation (SyncBatchNorm would change the numerics), and re-sending
    rank 0's running statistics at every forward would only overwrite buffers that train mode
    never reads. Rank 0's running statistics are the ones saved.
    """
    if not ctx.enabled:
        return None
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    parameters = inspect.signature(DistributedDataParallel).parameters
    if "forward_sync_buffers" in parameters:  # newer torch: broadcast_buffers is deprecated
        return DistributedDataParallel(module, device_ids=device_ids, forward_sync_buffers=False)
    return DistributedDataParallel(module, device_ids=device_ids, broadcast_buffers=False)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (at the end of training, on success or error).

    Call it once nothing refers to the DDP-wrapped models any more: a reducer that outlives its
    process group can abort the process when it is freed.
    """
    if ctx.enabled and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. the run directory chosen by rank 0)."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ctx.enabled:
        return [obj]
    boxes: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(boxes, obj)
    return boxes


def all_reduce_sum_(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (a NaN on any rank reaches every rank)."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def any_rank(ctx: DistContext, flag: bool) -> bool:
    """True when ``flag`` is true on at least one rank (collective: every rank must call)."""
    if not ctx.enabled:
        return flag
    box = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_collective_device(ctx))
    dist.all_reduce(box, op=dist.ReduceOp.MAX)
    return bool(box.item())


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint)."""
    if ctx.enabled:
        dist.barrier()


def _collective_device(ctx: DistContext) -> torch.device:
    return ctx.device if ctx.device.type == "cuda" else torch.device("cpu")
