"""RotNet: predict which of four rotations (0, 90, 180, 270 degrees) an image was turned by.

Gidaris, Singh & Komodakis, "Unsupervised Representation Learning by Predicting Image Rotations", ICLR 2018
(https://arxiv.org/abs/1803.07728; gidariss/FeatureLearningRotNet). Every image of the batch is fed in all four
rotations at once (the paper found this better than one random rotation per image), so a step sees 4B inputs with
balanced labels; the trunk's pooled features go to a linear 4-way classifier and the loss is the cross-entropy
(ln 4 at chance). The CIFAR recipe's crop is torchvision's ``RandomCrop(32, padding=4)`` and a flip
(``vidssl.data.augment.pad_crop``), the ImageNet one a random crop and a flip. RotNet's features transfer best from
an intermediate block (block 2 of its CIFAR network): read one with ``vidssl eval knn --layers 2``.

On video a sample is one random frame of a video, which is the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment
from vidssl.methods.frame_task import PretextClassifier
from vidssl.models import build_backbone
from vidssl.nn.colour import normalize_input


def rotations(x: Tensor) -> tuple[Tensor, Tensor]:
    """Every image of ``(B, C, S, S)`` in the four rotations: ``(4B, C, S, S)`` (all images at 0 degrees, then all at
    90 counter-clockwise, 180, 270) and the labels ``(4B,)`` k = 0..3, the multiple of 90 degrees."""
    if x.dim() != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotations: need square images (B, C, S, S), got {tuple(x.shape)}")
    out = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    return out, torch.arange(4, device=x.device).repeat_interleave(x.shape[0])


@dataclass
class RotationConfig:
    """RotNet hyper-parameters (the ``model:`` section). Defaults: the CIFAR-10 recipe."""

    backbone: str = "resnet18_cifar"
    input: Literal["video", "images"] = "images"
    crop_size: int = 32
    pad: int = 4  # first RandomCrop(S, padding=pad) at the image's size S (a shift of up to pad px); 0: none
    crop_scale: tuple[float, float] = (1.0, 1.0)  # then a random resized crop of this area (1, 1: the whole)
    hflip: float = 0.5

    def __post_init__(self) -> None:
        if self.crop_size < 1 or self.pad < 0 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError("rotation: crop_size >= 1, pad >= 0 and 0 < crop_scale[0] <= crop_scale[1] <= 1")


class Rotation(PretextClassifier):
    """RotNet (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = RotationConfig
    num_classes = 4

    def __init__(self, cfg: RotationConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        self.backbone = build_backbone(cfg.backbone)
        self.classifier = nn.Linear(self.backbone.num_features, 4)
        square = (1.0, 1.0) if cfg.crop_scale == (1.0, 1.0) else (3 / 4, 4 / 3)
        self.augment = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, ratio=square, hflip=cfg.hflip)

    def task(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        x, target = rotations(normalize_input(self.crops(batch["video"], self.augment, self.cfg.pad), "rgb"))
        return self.classifier(self.backbone(x)), target
