"""CPC v2: contrastive predictive coding with layer norm, patch augmentation and more predictions.

Hénaff, Srinivas, De Fauw, Razavi, Doersch, Eslami & van den Oord, "Data-Efficient Image Recognition with
Contrastive Predictive Coding", ICML 2020 (https://arxiv.org/abs/1905.09272). What changes from ``cpc``: layer
normalisation instead of batch normalisation in the patch encoder (batch statistics let patches of one image
exchange information, a shortcut across the grid: ``backbone: resnet18_cifar_ln``), every patch augmented on its
own (a random sub-crop, 60 of 64 px in the paper, ``patch_jitter``; and colour dropping: two of the three
channels replaced by noise, ``colour_drop``), a masked-convolution context network, a 64-d target projection
(``target_dim``), predictions for the rows 2 to 4 below (``offsets``, as ``../shared/RECIPES.md`` gives them) and
every patch of the batch as a negative (chance ``ln(B H W)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from vidssl.data.augment import remove_chroma
from vidssl.methods.base import Metrics
from vidssl.methods.predictive import CPCHead, GridTask, check_grid
from vidssl.nn.colour import imagenet_denormalize, imagenet_normalize


@dataclass
class CPCv2Config:
    """CPC v2 hyper-parameters (the ``model:`` section). Defaults: the paper's ImageNet grid scaled to CIFAR."""

    backbone: str = "resnet18_cifar_ln"
    input: Literal["video", "images"] = "images"
    crop_size: int = 32
    pad: int = 4
    crop_scale: tuple[float, float] = (1.0, 1.0)
    patch: int = 8
    patch_stride: int = 4
    patch_jitter: tuple[float, float] | None = (0.8, 0.95)  # (60 / 64)^2 = 0.88 of the patch's area
    colour_drop: float = 0.5  # probability that a patch keeps one colour channel (the others noise)
    offsets: tuple[int, ...] = (2, 3, 4)
    context_dim: int = 256
    context_blocks: int = 5
    dot_scale: float | None = None  # None: 1 / sqrt(width); 1.0: the paper's raw dot products
    target_dim: int = 64

    def __post_init__(self) -> None:
        check_grid("cpc_v2", self.crop_size, self.patch, self.patch_stride, self.offsets)
        if not 0 <= self.colour_drop <= 1:
            raise ValueError(f"cpc_v2: colour_drop is a probability, got {self.colour_drop}")


class CPCv2(GridTask):
    """CPC v2 (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = CPCv2Config

    def __init__(self, cfg: CPCv2Config) -> None:
        super().__init__(cfg)
        self.head = CPCHead(self.backbone.num_features, cfg.offsets, cfg.context_dim, cfg.context_blocks,
                            cfg.target_dim, cfg.dot_scale)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        patches, rows, cols = self.patches(batch)
        if self.cfg.colour_drop > 0:  # per patch, on RGB in [0, 1]
            rgb = imagenet_denormalize(patches)
            dropped = remove_chroma(rgb, "drop")
            pick = (torch.rand(rgb.shape[0], 1, 1, 1) < self.cfg.colour_drop).to(rgb.device)
            patches = imagenet_normalize(torch.where(pick, dropped, rgb))
        z = self.to_grid(self.backbone(patches), batch["video"].shape[0], rows, cols)
        loss, acc = self.head(z)
        return loss, {"acc": acc}
