"""Clip trunks: torchvision's 3D ResNets (Tran et al. 2018) behind the ``VideoBackbone`` contract.

``r3d_18`` (3D convolutions throughout) and ``r2plus1d_18`` ((2+1)D factorised convolutions): 18 layers,
512-d features at spatial stride 16 and temporal stride 8 (a 16-frame 112 px clip gives a 2x7x7 map).
Parameter names are torchvision's (``stem``, ``layer1``..``layer4``), so weights load both ways.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torchvision
from torch import nn

__all__ = ["VIDEO_ARCHS", "VideoResNet"]

VIDEO_ARCHS: dict[str, Callable[..., nn.Module]] = {
    "r3d_18": torchvision.models.video.r3d_18,
    "r2plus1d_18": torchvision.models.video.r2plus1d_18,
}


class VideoResNet(nn.Module):
    """A torchvision video ResNet trunk (no classifier): ``(B, 3, T, H, W)`` -> ``(B, 512, T/8, H/16, W/16)``."""

    def __init__(self, name: str = "r3d_18") -> None:
        super().__init__()
        if name not in VIDEO_ARCHS:
            raise ValueError(f"video backbone must be one of {', '.join(VIDEO_ARCHS)}, got {name!r}")
        net: Any = VIDEO_ARCHS[name](weights=None)
        self.stem, self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.stem, net.layer1, net.layer2, net.layer3, net.layer4)
        self.config: dict[str, Any] = {"arch": "video_resnet", "name": name}
        self.stride, self.temporal_stride, self.num_features = 16, 8, 512

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> VideoResNet:
        return cls(str(config["name"]))

    def forward_features(self, clip: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> ``(B, 512, t, h, w)``."""
        if clip.dim() != 5:
            raise ValueError(f"expected a clip (B, C, T, H, W), got shape {tuple(clip.shape)}")
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(clip)))))

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> pooled embedding ``(B, 512)``."""
        return self.forward_features(clip).mean(dim=(2, 3, 4))
