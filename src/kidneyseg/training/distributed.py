"""Data-parallel training across processes (``torchrun``), with torch.distributed.

``kidneyseg train`` started by ``torchrun --nproc_per_node N`` finds ``WORLD_SIZE``,
``RANK`` and ``LOCAL_RANK`` in its environment (torchrun's interface), joins a process group
(NCCL on CUDA, one GPU per process; gloo on CPU) and wraps the network in
``DistributedDataParallel``, which averages gradients across processes at every step. Each
process draws its own batches, so one step sees ``N x batch_size`` patches; only rank 0
writes files. Started without torchrun, nothing changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``world_size`` processes, this one is ``rank``."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[DistributedContext, torch.device]:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1).

    Returns:
        ``(context, device)``; on CUDA the device becomes ``cuda:LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistributedContext(), device
    import torch.distributed as dist

    ctx = DistributedContext(world, int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return ctx, device


def wrap(network: torch.nn.Module, ctx: DistributedContext, device: torch.device) -> torch.nn.Module:
    """``DistributedDataParallel(network)`` when distributed, else ``network``."""
    if not ctx.enabled:
        return network
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(network: torch.nn.Module) -> torch.nn.Module:
    """The plain network inside a ``DistributedDataParallel`` wrapper."""
    return getattr(network, "module", network)


def ranks_in_sync(network: torch.nn.Module, ctx: DistributedContext) -> bool:
    """True when every process holds exactly rank 0's parameters and buffers (checked by
    broadcasting rank 0's tensors and comparing; all ranks get the same answer)."""
    if not ctx.enabled:
        return True
    import torch.distributed as dist

    same = True
    for t in list(unwrap(network).state_dict().values()):
        ref = t.detach().clone()
        dist.broadcast(ref, src=0)
        same &= bool(torch.equal(ref, t.detach()))
    flag = torch.tensor([1 if same else 0], device=next(unwrap(network).parameters()).device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def barrier(ctx: DistributedContext) -> None:
    """Wait for every process (no-op when not distributed)."""
    if ctx.enabled:
        import torch.distributed as dist

        dist.barrier()


def shutdown(ctx: DistributedContext) -> None:
    """Leave the process group."""
    if ctx.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["DistributedContext", "barrier", "init_distributed", "ranks_in_sync", "shutdown", "unwrap", "wrap"]
