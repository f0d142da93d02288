"""The backbone contract every encoder in vidssl keeps, and the one place a clip's time is folded into the batch.

- :class:`Backbone` (2D, images ``(B, 3, H, W)``): ``forward_features(x) -> (B, C, h, w)`` with
  ``h = ceil(H / stride)``, ``num_features`` = C, ``forward(x) -> (B, C)`` the pooled embedding, and
  ``config``: the plain dict that rebuilds it (its ``arch`` key names the architecture;
  ``vidssl.models.backbone_from_config``). Label propagation, the probes, export and every method use it.
- :class:`VideoBackbone` (3D, clips ``(B, 3, T, H, W)``): ``forward_features(clip) -> (B, C, t, h, w)`` and a
  pooled ``(B, C)`` embedding; ``temporal_stride`` is T / t. :class:`ClipEncoder` applies a 2D backbone to
  every frame of a clip.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

__all__ = ["Backbone", "ClipEncoder", "VideoBackbone", "feature_size"]


@runtime_checkable
class Backbone(Protocol):
    """An image trunk (see the module docstring)."""

    stride: int
    num_features: int
    config: dict[str, Any]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class VideoBackbone(Protocol):
    """A clip trunk (see the module docstring)."""

    stride: int
    temporal_stride: int
    num_features: int
    config: dict[str, Any]

    def forward_features(self, clip: torch.Tensor) -> torch.Tensor: ...

    def __call__(self, clip: torch.Tensor) -> torch.Tensor: ...


def feature_size(n: int, stride: int) -> int:
    """Cells along an axis of ``n`` pixels after a trunk of ``stride``: every stride-2 stage rounds up, so
    ``ceil(n / stride)`` for the power-of-two strides of a ResNet."""
    for _ in range(int(math.log2(stride))):
        n = (n + 1) // 2
    return n


class ClipEncoder(nn.Module):
    """Applies a 2D backbone to every frame of a clip by folding time into the batch (the only place vidssl
    folds T into B): ``forward_features`` as a clip trunk's at temporal stride 1, ``forward`` the pooled
    embedding of every frame."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        if not isinstance(backbone, Backbone):
            raise TypeError(f"ClipEncoder: {type(backbone).__name__} does not keep the Backbone contract")
        self.backbone = backbone
        self.stride = backbone.stride
        self.temporal_stride = 1
        self.num_features = backbone.num_features
        self.config = backbone.config

    def forward_features(self, clip: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> ``(B, num_features, T, h, w)``."""
        if clip.dim() != 5:
            raise ValueError(f"expected a clip (B, C, T, H, W), got shape {tuple(clip.shape)}")
        b, c, t, h, w = clip.shape
        frames = clip.transpose(1, 2).reshape(b * t, c, h, w)
        feats = self.backbone.forward_features(frames)
        return feats.reshape(b, t, *feats.shape[1:]).transpose(1, 2)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> the backbone's pooled embedding of every frame, ``(B, T, num_features)``."""
        if clip.dim() != 5:
            raise ValueError(f"expected a clip (B, C, T, H, W), got shape {tuple(clip.shape)}")
        b, c, t, h, w = clip.shape
        return self.backbone(clip.transpose(1, 2).reshape(b * t, c, h, w)).view(b, t, -1)
