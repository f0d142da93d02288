"""Redundancy-reduction losses over the embedding dimensions: Barlow Twins and VICReg.

Both read statistics of the *global* batch (a per-dimension standardisation, a cross-correlation or a
covariance matrix), so the embeddings of every process are gathered here with their gradients
(``vidssl.engine.distributed.all_gather_with_grad``): each process computes the global batch's loss, and the
gradients DDP averages are those of the global loss (a two-process test checks value and gradient). The
authors' Barlow Twins code all-reduces the cross-correlation without a gradient instead, which leaves each
process 1/world of the gradient (lightly #1977 shipped the same).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vidssl.engine.distributed import all_gather_with_grad

__all__ = ["barlow_twins_loss", "off_diagonal", "vicreg_loss"]


def off_diagonal(m: Tensor) -> Tensor:
    """The off-diagonal entries of a square ``(D, D)`` matrix, flattened ``(D * (D - 1),)``."""
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"off_diagonal: need a square matrix, got {tuple(m.shape)}")
    d = m.shape[0]
    return m.flatten()[:-1].view(d - 1, d + 1)[:, 1:].flatten()


def _check_pair(z1: Tensor, z2: Tensor, where: str) -> None:
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"{where}: z1 and z2 must both be (B, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")


def barlow_twins_loss(z1: Tensor, z2: Tensor, lambd: float = 0.0051, eps: float = 1e-5) -> Tensor:
    """Barlow Twins (Zbontar et al. 2021, https://arxiv.org/abs/2103.03230; facebookresearch/barlowtwins).

    Each dimension is standardised over the global batch of N (batch norm without affine parameters, biased
    variance, ``eps``), ``C = z1n^T z2n / N``, and ``loss = sum_i (1 - C_ii)^2 + lambd sum_{i != j} C_ij^2``.
    ``(B, D)`` x2 on each process -> 0-dim, the same on every process. Constant embeddings give ``D``.
    """
    _check_pair(z1, z2, "barlow_twins_loss")
    z1, z2 = all_gather_with_grad(z1), all_gather_with_grad(z2)
    n = z1.shape[0]
    c = F.batch_norm(z1, None, None, training=True, eps=eps).t() @ F.batch_norm(z2, None, None, training=True, eps=eps)
    c = c / n
    on = (torch.diagonal(c) - 1).pow(2).sum()
    return on + lambd * off_diagonal(c).pow(2).sum()


def vicreg_loss(
    z1: Tensor, z2: Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0,
    eps: float = 1e-4, average_variance: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """VICReg (Bardes et al. 2022, https://arxiv.org/abs/2105.04906; facebookresearch/vicreg ``main_vicreg.py``).

    Invariance: ``mse(z1, z2)`` over this process's batch (its mean over processes is the global one). Over the
    gathered global batch of N, centred: variance ``mean_d relu(1 - sqrt(var_d + eps))`` per view (unbiased
    variance), the two views averaged (``average_variance``, the official code) or summed (solo-learn, twice
    the weight); covariance ``sum_{i != j} Cov_ij^2 / D`` per view, ``Cov = z^T z / (N - 1)``, summed over the views.
    Returns ``(loss, {"invariance", "variance", "covariance"})``, the terms unweighted. Constant embeddings:
    ``25 (1 - 0.01) = 24.75`` averaged, 49.5 summed.
    """
    _check_pair(z1, z2, "vicreg_loss")
    invariance = F.mse_loss(z1, z2)
    x, y = all_gather_with_grad(z1), all_gather_with_grad(z2)
    n, d = x.shape
    if n < 2:
        raise ValueError("vicreg_loss: the variance and covariance terms need a global batch of at least 2")
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    std_x, std_y = torch.sqrt(x.var(dim=0) + eps), torch.sqrt(y.var(dim=0) + eps)
    variance = F.relu(1 - std_x).mean() + F.relu(1 - std_y).mean()
    if average_variance:
        variance = variance / 2
    cov_x, cov_y = x.t() @ x / (n - 1), y.t() @ y / (n - 1)
    covariance = off_diagonal(cov_x).pow(2).sum() / d + off_diagonal(cov_y).pow(2).sum() / d
    loss = sim_coeff * invariance + std_coeff * variance + cov_coeff * covariance
    return loss, {"invariance": invariance.detach(), "variance": variance.detach(), "covariance": covariance.detach()}
