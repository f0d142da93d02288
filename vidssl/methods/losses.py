"""Pure loss functions shared by methods: tensors in, tensors out, no state.

State (queues, momentum encoders, memory banks) lives in the method modules that call these.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["info_nce", "info_nce_logits", "top1_positive"]


def _check(q: Tensor, k: Tensor, queue: Tensor) -> None:
    if q.dim() != 2 or k.shape != q.shape:
        raise ValueError(f"info_nce: q and k must both be (B, D), got {tuple(q.shape)} and {tuple(k.shape)}")
    if queue.dim() != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"info_nce: queue must be (K, D) with D={q.shape[1]}, got {tuple(queue.shape)}")


def info_nce_logits(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo's logits: the positive ``q_i . k_i`` in column 0, then ``q_i . queue_j``, all over ``temperature``.

    Args:
        q: ``(B, D)`` queries, L2-normalised by the caller (this function does not normalise).
        k: ``(B, D)`` positive keys, L2-normalised, normally without gradient.
        queue: ``(K, D)`` negative keys, L2-normalised; never receives a gradient.
        temperature: ``t > 0``.
    Returns:
        ``(B, 1 + K)`` logits; the target class of every row is 0.
    """
    _check(q, k, queue)
    if temperature <= 0:
        raise ValueError(f"info_nce: temperature must be positive, got {temperature}")
    pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
    neg = q @ queue.detach().to(q.dtype).t()  # (B, K)
    return torch.cat([pos, neg], dim=1) / temperature


def info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """InfoNCE with a queue of negatives (Oord et al. 2018; He et al. 2020), mean over the batch.

    ``loss = -mean_i log( exp(q_i.k_i / t) / (exp(q_i.k_i / t) + sum_j exp(q_i.queue_j / t)) )``.
    Shapes and normalisation as :func:`info_nce_logits` (inputs L2-normalised by the caller). Returns a
    0-dim tensor.
    """
    logits = info_nce_logits(q, k, queue, temperature)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def top1_positive(logits: Tensor) -> Tensor:
    """Fraction of rows ``(B, 1 + K)`` whose positive (column 0) scores strictly above every negative. 0-dim."""
    return (logits[:, 0] > logits[:, 1:].amax(dim=1)).float().mean()
