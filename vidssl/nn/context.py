"""Autoregressive context networks over a grid of patch embeddings (CPC's PixelCNN-style context, CPC v2's masked
convolutions): the context at row ``i`` depends on rows ``<= i`` only, so a prediction for a row below never
sees its target."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ContextNetwork", "RowCausalConv2d"]


class RowCausalConv2d(nn.Conv2d):
    """A ``kernel x kernel`` convolution whose output at row ``i`` sees input rows ``i - kernel + 1 .. i``: padded by
    ``kernel - 1`` rows above and none below (the masked convolution of a PixelCNN restricted to whole rows), and
    by ``kernel // 2`` columns on each side. Shapes are kept: ``(B, C, H, W)`` -> ``(B, out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3) -> None:
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"RowCausalConv2d: kernel must be odd and positive, got {kernel}")
        super().__init__(in_channels, out_channels, kernel, padding=0)
        self.kernel = kernel

    def forward(self, x: Tensor) -> Tensor:
        k = self.kernel
        return super().forward(F.pad(x, (k // 2, k // 2, k - 1, 0)))


class ContextNetwork(nn.Module):
    """``blocks`` residual blocks ``x + conv1x1(relu(causal(relu(x))))`` over ``(B, dim, H, W)``: CPC's context
    ``c`` (the same shape), ``c[:, :, i]`` a function of rows ``<= i`` of the input."""

    def __init__(self, dim: int, hidden: int, blocks: int = 5, kernel: int = 3) -> None:
        super().__init__()
        if blocks < 1 or dim < 1 or hidden < 1:
            raise ValueError(f"ContextNetwork: dim, hidden and blocks must be positive, got {dim}, {hidden}, {blocks}")
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), RowCausalConv2d(dim, hidden, kernel), nn.ReLU(), nn.Conv2d(hidden, dim, 1))
            for _ in range(blocks))

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x
