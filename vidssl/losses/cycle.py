"""Cycle-consistency losses of the correspondence methods: returning home on a random walk (CRW) and the drift
of a tracked patch's transform around a cycle (TimeCycle)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cycle_loss", "walk_loss"]

EPS = 1e-20  # added inside the log of the return probability, as CRW's code


def walk_loss(walks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Cross-entropy for returning to the start node, per cycle and averaged over cycles.

    Args:
        walks: ``(B, K, N, N)`` round-trip matrices (rows are probabilities), one per cycle length.
    Returns:
        ``loss`` (0-dim): the mean over the K cycles of ``mean_{b, i} -log(walks[b, k, i, i] + 1e-20)``;
        ``per_cycle`` ``(K,)``: those K means; ``accuracy`` ``(K,)``: the fraction of start nodes whose
        most likely end node is themselves (ties go to the lowest index, as ``argmax``).
    """
    if walks.dim() != 4 or walks.shape[-1] != walks.shape[-2]:
        raise ValueError(f"walk_loss: walks must be (B, K, N, N), got {tuple(walks.shape)}")
    n = walks.shape[-1]
    ret = walks.diagonal(dim1=-2, dim2=-1)  # (B, K, N): return probabilities
    per_cycle = -torch.log(ret + EPS).mean(dim=(0, 2))  # (K,)
    target = torch.arange(n, device=walks.device)
    accuracy = (walks.detach().argmax(dim=-1) == target).float().mean(dim=(0, 2))  # (K,)
    return per_cycle.mean(), per_cycle, accuracy


def cycle_loss(theta: Tensor, theta_gt: Tensor, grid: int = 20) -> Tensor:
    """Drift of a cycle: mean over the batch and a ``grid`` x ``grid`` lattice on [-1, 1]^2 of the squared
    distance between the points mapped by ``theta`` and by ``theta_gt`` (both ``(B, 2, 3)``). 0-dim; zero iff equal."""
    lin = torch.linspace(-1, 1, grid, device=theta.device, dtype=theta.dtype)
    gy, gx = torch.meshgrid(lin, lin, indexing="ij")
    pts = torch.stack([gx.flatten(), gy.flatten(), torch.ones_like(gx.flatten())])  # (3, N)
    diff = (theta - theta_gt.to(theta)) @ pts  # (B, 2, N)
    return (diff ** 2).sum(1).mean()
