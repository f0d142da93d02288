"""Regression of one view's embedding onto another's: the negative-free objective of BYOL and SimSiam."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["cosine_regression", "negative_cosine"]


def cosine_regression(prediction: Tensor, target: Tensor) -> Tensor:
    """``mean_i || p_i / |p_i| - z_i / |z_i| ||^2 = mean_i (2 - 2 cos(p_i, z_i))`` with the target detached.

    BYOL (Grill et al. 2020) regresses the online predictor's output onto the momentum target's projection;
    SimSiam (Chen & He 2021) onto the same network's projection under a stop-gradient, and writes its loss as
    ``-cos`` (= this / 2 - 1: the same gradients up to the factor 2). ``(B, D)`` x2 -> 0-dim: 0 when aligned,
    2 when orthogonal, 4 when opposite. No gradient reaches ``target``.
    """
    if prediction.dim() != 2 or prediction.shape != target.shape:
        raise ValueError(f"cosine_regression: need two (B, D) tensors, got {tuple(prediction.shape)} and "
                         f"{tuple(target.shape)}")
    cos = F.cosine_similarity(prediction, target.detach(), dim=1)
    return (2 - 2 * cos).mean()


def negative_cosine(prediction: Tensor, target: Tensor) -> Tensor:
    """SimSiam's ``D(p, z) = -mean_i cos(p_i, stopgrad(z_i))`` (Chen & He 2021, algorithm 1). ``(B, D)`` x2 ->
    0-dim: -1 when aligned, 0 when orthogonal, 1 when opposite. No gradient reaches ``target``."""
    if prediction.dim() != 2 or prediction.shape != target.shape:
        raise ValueError(f"negative_cosine: need two (B, D) tensors, got {tuple(prediction.shape)} and "
                         f"{tuple(target.shape)}")
    return -F.cosine_similarity(prediction, target.detach(), dim=1).mean()
