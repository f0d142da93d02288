"""Momentum targets and memories: the EMA update with its schedule, a queue of keys, a memory bank.

State lives in these modules (buffers, so checkpoints carry it); the maths that reads it lives in
``vidssl.losses``. Both memories are written once per optimiser step: a method stages what its training
forwards produced (``stage``) and commits in its ``after_step`` (``commit``), which gathers every process's
entries in rank order first, so all processes hold the same memory.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.engine.distributed import all_gather_no_grad

__all__ = ["MemoryBank", "Queue", "ema_update_", "momentum_at"]


def momentum_at(
    step: int, total_steps: int, base: float, final: float = 1.0, schedule: Literal["constant", "cosine"] = "constant"
) -> float:
    """The EMA momentum at ``step`` of ``total_steps``.

    ``constant``: ``base`` (MoCo). ``cosine``: ``final - (final - base) (cos(pi step / total) + 1) / 2``, from
    ``base`` at step 0 to ``final`` at the end (BYOL's 0.996 -> 1, DINO's teacher), held there afterwards.
    """
    if not 0.0 <= base <= 1.0 or not 0.0 <= final <= 1.0:
        raise ValueError(f"momentum_at: momenta are in [0, 1], got base={base}, final={final}")
    if schedule == "constant":
        return base
    if schedule != "cosine":
        raise ValueError(f"momentum_at: schedule must be 'constant' or 'cosine', got {schedule!r}")
    if total_steps < 1:
        raise ValueError(f"momentum_at: total_steps must be >= 1, got {total_steps}")
    frac = min(max(step, 0), total_steps) / total_steps
    return final - (final - base) * (math.cos(math.pi * frac) + 1.0) / 2.0


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``t = m t + (1 - m) o`` for every parameter pair (in place; buffers are left to their own forwards)."""
    for pt, po in zip(target.parameters(), online.parameters(), strict=True):
        pt.copy_(momentum * pt + (1.0 - momentum) * po.detach())


class Queue(nn.Module):
    """A ring buffer of the newest ``size`` keys ``(size, dim)`` (MoCo's negatives), starting as random unit
    vectors. ``keys``, the write pointer ``ptr`` and the count ``seen`` are buffers."""

    keys: Tensor
    ptr: Tensor
    seen: Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"Queue: size and dim must be positive, got {size}, {dim}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))  # keys pushed so far
        self._staged: list[Tensor] = []

    @property
    def fill(self) -> float:
        """The fraction of the queue holding real keys (1 once it has wrapped)."""
        return min(int(self.seen), self.keys.shape[0]) / self.keys.shape[0]

    @torch.no_grad()
    def push(self, keys: Tensor) -> None:
        """Write ``keys`` ``(N, dim)`` at the pointer, wrapping around; more than ``size`` keeps the newest."""
        size, n = self.keys.shape[0], keys.shape[0]
        start = int(self.ptr)
        if n > size:  # only the newest K survive
            start, keys = start + n - size, keys[-size:]
        idx = (start + torch.arange(keys.shape[0], device=self.keys.device)) % size
        self.keys[idx] = keys.to(self.keys.dtype)
        self.ptr.fill_((int(self.ptr) + n) % size)
        self.seen.add_(n)

    def stage(self, keys: Tensor) -> None:
        """Hold this step's keys ``(B, dim)`` (one call per micro-batch) until :meth:`commit`."""
        self._staged.append(keys.detach())

    @torch.no_grad()
    def commit(self) -> None:
        """Push the staged keys of every process, in rank order (once per optimiser step)."""
        if self._staged:
            self.push(all_gather_no_grad(torch.cat(self._staged)))
            self._staged = []


class MemoryBank(nn.Module):
    """One ``(size, dim)`` entry per dataset sample (NPID's memory): entry i moves towards the feature of
    sample i, ``v_i <- normalise(m v_i + (1 - m) f_i)``, once per step.

    Entries start uniform in ``[-s, s]`` with ``s = 1 / sqrt(dim / 3)`` (expected norm 1), as the authors'
    ``NCEAverage``.
    """

    bank: Tensor

    def __init__(self, size: int, dim: int, momentum: float = 0.5) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"MemoryBank: size and dim must be positive, got {size}, {dim}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"MemoryBank: momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        s = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("bank", torch.rand(size, dim) * (2 * s) - s)
        self._staged: list[tuple[Tensor, Tensor]] = []

    def forward(self, index: Tensor) -> Tensor:
        """The entries of ``index`` (any shape ``S``) -> ``(*S, dim)``, without gradient."""
        return self.bank[index].detach()

    def negatives(self, batch: int, k: int, generator: torch.Generator | None = None) -> Tensor:
        """``(batch, k)`` indices drawn uniformly from the bank (NPID's noise distribution)."""
        device = generator.device if generator is not None else self.bank.device
        return torch.randint(0, self.bank.shape[0], (batch, k), generator=generator, device=device).to(self.bank.device)

    @torch.no_grad()
    def update(self, index: Tensor, features: Tensor) -> None:
        """Move entries ``index`` ``(N,)`` towards ``features`` ``(N, dim)`` now (a repeated index: the last wins)."""
        order = torch.arange(index.shape[0], device=index.device)
        last = torch.full((self.bank.shape[0],), -1, dtype=torch.long, device=index.device)
        keep = last.scatter_reduce(0, index, order, "amax")[index] == order  # the last occurrence of each index
        index, features = index[keep], features[keep]
        old = self.bank[index]
        self.bank[index] = F.normalize(self.momentum * old + (1.0 - self.momentum) * features.to(old.dtype), dim=1)

    def stage(self, index: Tensor, features: Tensor) -> None:
        """Hold this step's ``(B,)`` indices and ``(B, dim)`` features until :meth:`commit`."""
        self._staged.append((index.detach(), features.detach()))

    @torch.no_grad()
    def commit(self) -> None:
        """Apply every process's staged updates, in rank order (once per optimiser step)."""
        if self._staged:
            index = all_gather_no_grad(torch.cat([i for i, _ in self._staged]).to(self.bank.device))
            feats = all_gather_no_grad(torch.cat([f for _, f in self._staged]).to(self.bank.device))
            self.update(index, feats)
            self._staged = []
