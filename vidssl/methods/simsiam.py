"""SimSiam: a siamese network whose prediction regresses the other view's projection under a stop-gradient.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021 (https://arxiv.org/abs/2011.10566;
facebookresearch/simsiam). Backbone -> projector (3 layers with BN, the last BN without affine parameters) ->
predictor (a bottleneck 2048 -> 512 -> 2048, BN on the hidden layer); ``loss = D(p1, z2) / 2 + D(p2, z1) / 2``
with ``D(p, z) = -cos(p, stopgrad(z))`` (``vidssl.losses.negative_cosine``): no momentum encoder, no
negatives. The paper keeps the predictor's learning rate fixed (``fix_pred_lr``); the run's schedule applies
to all parameters here. Collapse shows as ``embedding_std`` -> 0 while the loss sits at -1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from vidssl.data.augment import simclr_augment
from vidssl.data.views import TwoViews
from vidssl.losses import negative_cosine
from vidssl.methods.base import Metrics, TwoViewMethod
from vidssl.models import build_backbone
from vidssl.nn import Branch, embedding_std, mlp


@dataclass
class SimSiamConfig:
    """SimSiam hyper-parameters (the ``model:`` section). Defaults: the paper's ImageNet recipe."""

    backbone: str = "resnet18"
    projector: tuple[int, ...] = (2048, 2048, 2048)  # BN on every layer, the last without affine
    predictor: tuple[int, ...] = (512, 2048)  # bottleneck, output
    input: Literal["video", "images"] = "video"
    max_gap: int = 30
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.2, 1.0)  # the paper's; CIFAR recipes use (0.08, 1)
    blur_p: float = 0.5

    def __post_init__(self) -> None:
        if not self.projector or not self.predictor or min(*self.projector, *self.predictor) < 1:
            raise ValueError("simsiam: projector and predictor sizes must be positive")
        if self.predictor[-1] != self.projector[-1]:
            raise ValueError(f"simsiam: the predictor's output ({self.predictor[-1]}) must match the projector's "
                             f"({self.projector[-1]})")
        if self.max_gap < 1 or self.crop_size < 1:
            raise ValueError("simsiam: max_gap and crop_size must be positive")


class SimSiam(TwoViewMethod):
    """SimSiam (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = SimSiamConfig

    def __init__(self, cfg: SimSiamConfig) -> None:
        backbone = build_backbone(cfg.backbone)
        head = mlp((backbone.num_features, *cfg.projector), bn=True, last_bn=True, last_bn_affine=False)
        views = TwoViews(simclr_augment(cfg.crop_size, cfg.crop_scale, 0.5, cfg.blur_p))  # jitter 0.4/0.1
        super().__init__(Branch(backbone, head), views, cfg.input, cfg.max_gap)
        self.cfg = cfg
        self.predictor = mlp((cfg.projector[-1], *cfg.predictor), bn=True)


    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        _, _, z1, z2 = self.embed_views(batch)
        p1, p2 = self.predictor(torch.cat([z1, z2])).chunk(2)
        loss = negative_cosine(p1, z2) / 2 + negative_cosine(p2, z1) / 2
        return loss, {"embedding_std": embedding_std(z1)}
