"""Deep InfoMax: maximise the mutual information between an image's global feature and its local features.

Hjelm, Fedorov, Lavoie-Marchildon, Grewal, Bachman, Trischler & Bengio, "Learning Deep Representations by Mutual
Information Estimation and Maximization", ICLR 2019 (https://arxiv.org/abs/1808.06670; rdevon/DIM). The trunk's
feature map after stage ``local_stage`` gives the local features (every position of it), the pooled output of the
whole trunk the global one; both are encoded into one ``dim``-wide space (the paper's "encode and dot product"
architecture: 1x1 convolutions with a linear shortcut for the locals, an MLP with a linear shortcut for the
global), and every global vector is scored against every local feature of the batch
(``vidssl.losses.dim_loss``): its own image's positions are the positives, every other image's the negatives,
with the Jensen-Shannon estimator (``jsd``, the paper's choice for DIM(L); ``2 ln 2`` at zero scores) or InfoNCE
(``infonce``; ``ln(1 + (N - 1) P)`` at zero scores). The paper's prior matching and global-global terms are left
out (its best CIFAR numbers are DIM(L), the local objective alone). The encoder is the trunk.

On video a sample is one random frame of a video, which is the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from vidssl.data.augment import ClipAugment
from vidssl.losses import dim_loss
from vidssl.methods.base import Metrics
from vidssl.methods.frame_task import FrameTask
from vidssl.models import build_backbone
from vidssl.models.resnet import stage_width
from vidssl.nn.colour import normalize_input


@dataclass
class DIMConfig:
    """DIM hyper-parameters (the ``model:`` section). Defaults: DIM(L) on CIFAR-10 with a ResNet-18."""

    backbone: str = "resnet18_cifar"
    input: Literal["video", "images"] = "images"
    crop_size: int = 32
    pad: int = 4
    crop_scale: tuple[float, float] = (1.0, 1.0)
    local_stage: int = 3  # the local features: the map after this residual stage (8x8 at 32 px on the CIFAR trunk)
    dim: int = 64
    hidden: int = 512
    estimator: Literal["jsd", "infonce"] = "jsd"

    def __post_init__(self) -> None:
        if not 1 <= self.local_stage <= 4 or min(self.dim, self.hidden) < 1:
            raise ValueError("dim: local_stage in 1..4 (a stage before the global output), dim and hidden >= 1")


class _Shortcut(nn.Module):
    """``net(x) + linear(x)``: the paper's encoders of global and local features (a block and a linear shortcut)."""

    def __init__(self, net: nn.Module, linear: nn.Module) -> None:
        super().__init__()
        self.net, self.linear = net, linear

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x) + self.linear(x)
        return out


class DIM(FrameTask):
    """Deep InfoMax, the local objective (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = DIMConfig

    def __init__(self, cfg: DIMConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        self.backbone = build_backbone(cfg.backbone)
        stages = self.backbone.stages()
        if cfg.local_stage >= len(stages) + 1:
            raise ValueError(f"dim: local_stage {cfg.local_stage} must come before the last of the trunk's "
                             f"{len(stages)} stages")
        local_width = stage_width(stages[cfg.local_stage - 1])
        self.local_encoder = _Shortcut(
            nn.Sequential(nn.Conv2d(local_width, cfg.hidden, 1), nn.ReLU(inplace=True),
                          nn.Conv2d(cfg.hidden, cfg.dim, 1)),
            nn.Conv2d(local_width, cfg.dim, 1))
        width = self.backbone.num_features
        self.global_encoder = _Shortcut(
            nn.Sequential(nn.Linear(width, cfg.hidden), nn.ReLU(inplace=True), nn.Linear(cfg.hidden, cfg.dim)),
            nn.Linear(width, cfg.dim))
        square = (1.0, 1.0) if cfg.crop_scale == (1.0, 1.0) else (3 / 4, 4 / 3)
        self.augment = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, ratio=square, hflip=0.5)

    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised images -> the local map after ``local_stage`` ``(B, C, h, w)`` and the trunk's output map."""
        h = self.backbone.stem(x)
        local = h
        for i, stage in enumerate(self.backbone.stages(), start=1):
            h = stage(h)
            if i == self.cfg.local_stage:
                local = h
        return local, h

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        x = normalize_input(self.crops(batch["video"], self.augment, self.cfg.pad), "rgb")
        local, out = self.features(x)
        g = self.global_encoder(out.mean(dim=(2, 3)))  # (B, dim)
        l_ = self.local_encoder(local).flatten(2).transpose(1, 2)  # (B, P, dim)
        return dim_loss(g, l_, self.cfg.estimator), {}
