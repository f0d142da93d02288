"""Process-group helpers: every collective in vidssl goes through here and is a no-op on one process.

``setup()`` initialises from the ``torchrun`` environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``): gloo on CPU, NCCL on GPU. Without those variables vidssl runs as a
single process and every helper below returns its input (or the local answer).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def is_distributed() -> bool:
    """True when a process group with more than zero members is initialised."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without a group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (1 without a group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0: the process that logs, writes checkpoints and shows progress."""
    return rank() == 0


def local_rank() -> int:
    """The GPU index on this node (``LOCAL_RANK`` from torchrun, else 0)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def setup(device: str = "auto", backend: str = "auto") -> torch.device:
    """Initialise the process group when launched by torchrun and pick this process's device.

    Args:
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        backend: ``auto`` (NCCL with CUDA, gloo on CPU), ``nccl`` or ``gloo``.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for but CUDA is not available")
    if use_cuda:
        torch.cuda.set_device(local_rank())
        dev = torch.device("cuda", local_rank())
    else:
        dev = torch.device("cpu")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not is_distributed():
        chosen = backend if backend != "auto" else ("nccl" if use_cuda else "gloo")
        dist.init_process_group(backend=chosen, device_id=dev if use_cuda else None)
    return dev


def cleanup() -> None:
    """Destroy the process group if this process created one."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (no-op on one)."""
    if is_distributed():
        dist.barrier()


def wrap_model(model: nn.Module, device: torch.device, *, sync_bn: bool = False) -> nn.Module:
    """``model`` in DistributedDataParallel when a group exists (optionally with SyncBatchNorm).

    ``find_unused_parameters`` stays off (it costs a graph traversal per step); a method whose forward
    skips trainable parameters must not register them as trainable.
    """
    if not is_distributed():
        return model
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's picklable ``obj`` in rank order (``[obj]`` without a group)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def all_gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` on each rank -> ``(world * B, ...)`` concatenated in rank order, without gradients.

    Every rank must pass the same shape.
    """
    if not is_distributed():
        return x.detach()
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward returns each rank the gradient of its own slice, summed over ranks.

    Every rank's loss depends on every slice, so rank r's slice gradient is the sum over ranks of
    d loss_k / d slice_r: an all-reduce (sum) of the full gradient, then keep this rank's slice.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad)
        n = grad.shape[0] // dist.get_world_size()
        return grad[dist.get_rank() * n:(dist.get_rank() + 1) * n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """``(B, ...)`` -> ``(world * B, ...)`` in rank order; gradients flow back to each rank's slice."""
    if not is_distributed():
        return x
    return _GatherWithGrad.apply(x)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over ranks (a new tensor; ``x`` itself without a group). No gradient."""
    if not is_distributed():
        return x
    out = x.detach().clone()
    dist.all_reduce(out)
    return out


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    """The elementwise maximum of ``x`` over ranks (a new tensor; ``x`` itself without a group). No gradient."""
    if not is_distributed():
        return x
    out = x.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over ranks (a new tensor; ``x`` itself without a group). No gradient."""
    if not is_distributed():
        return x
    out = x.detach().clone()
    dist.all_reduce(out)
    return out / world_size()


def broadcast_flag(flag: bool, device: torch.device | str = "cpu") -> bool:
    """Rank 0's ``flag`` on every rank (``device`` must suit the backend: CUDA for NCCL)."""
    if not is_distributed():
        return flag
    out = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(out, src=0)
    return bool(out.item())


@torch.no_grad()
def shuffle_batch(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Shuffle a batch across all processes for MoCo's shuffle-BN.

    Args:
        x: ``(B, ...)`` local batch (same B on every rank).
    Returns:
        ``(x_shuffled (B, ...), unshuffle_idx (world * B,))``: this rank's share of a random permutation
        of the global batch, and the index that undoes it in ``unshuffle_batch``. On one process this is
        a random permutation of the local batch.
    """
    b = x.shape[0]
    gathered = all_gather_no_grad(x)
    perm = torch.randperm(gathered.shape[0], device=x.device)
    if is_distributed():
        dist.broadcast(perm, src=0)  # every rank must use rank 0's permutation
    unshuffle = torch.argsort(perm)
    mine = perm.view(world_size(), b)[rank()]
    return gathered[mine], unshuffle


@torch.no_grad()
def unshuffle_batch(x: torch.Tensor, unshuffle_idx: torch.Tensor) -> torch.Tensor:
    """Undo ``shuffle_batch``: ``(B, ...)`` shuffled local results -> ``(B, ...)`` in the original order."""
    b = x.shape[0]
    gathered = all_gather_no_grad(x)
    mine = unshuffle_idx.view(world_size(), b)[rank()]
    return gathered[mine]
