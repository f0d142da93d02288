"""Normalisation layers: batch norm over sub-batches, which simulates per-GPU statistics on one device."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["SplitBatchNorm", "convert_split_bn"]


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d that, in training, normalises ``num_splits`` contiguous sub-batches separately.

    Simulates the per-GPU statistics of multi-GPU training on one device (the MoCo CIFAR demo's trick), so
    the query and the (shuffled) key batch do not share BN statistics, which would leak the positive.
    Running statistics are updated with the mean over sub-batches; evaluation is plain BatchNorm2d. A
    subclass with the same parameters and buffers, so state-dict names stay torchvision's.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs: object) -> None:
        super().__init__(num_features, **kwargs)  # type: ignore[arg-type]
        self.num_splits = num_splits

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, C, H, W)``; N must divide into ``num_splits`` in training."""
        if not self.training:
            return super().forward(x)
        n, c, h, w = x.shape
        s = self.num_splits
        if n % s:
            raise ValueError(f"SplitBatchNorm: batch of {n} does not divide into num_splits={s}")
        xs = x.float().view(s, n // s, c, h * w)  # statistics in fp32 also under autocast, as cuDNN's BN
        mean = xs.mean(dim=(1, 3), keepdim=True)  # (S, 1, C, 1)
        var = xs.var(dim=(1, 3), unbiased=False, keepdim=True)
        y = ((xs - mean) * torch.rsqrt(var + self.eps)).view(n, c, h, w)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        y = y.to(x.dtype)
        tracked = self.num_batches_tracked
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                assert tracked is not None
                tracked.add_(1)
                mom = self.momentum if self.momentum is not None else 1.0 / float(tracked)
                count = (n // s) * h * w
                unbiased = var.view(s, c) * (count / max(count - 1, 1))  # BatchNorm keeps the unbiased variance
                self.running_mean.lerp_(mean.view(s, c).mean(0), mom)
                self.running_var.lerp_(unbiased.mean(0), mom)
        return y


def convert_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` (in place) by a :class:`SplitBatchNorm` with its state."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SplitBatchNorm):
            split = SplitBatchNorm(
                child.num_features, num_splits, eps=child.eps, momentum=child.momentum,
                affine=child.affine, track_running_stats=child.track_running_stats,
            )
            split.load_state_dict(child.state_dict())
            setattr(module, name, split)
        else:
            convert_split_bn(child, num_splits)
    return module
