"""Barlow Twins: make the cross-correlation of two views' embeddings the identity.

Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", ICML 2021
(https://arxiv.org/abs/2103.03230; facebookresearch/barlowtwins ``main.py``). Backbone -> projector (linear
layers without bias, BN and ReLU between them, as the authors') -> ``vidssl.losses.barlow_twins_loss``: each
dimension standardised over the global batch, on-diagonal terms pulled to 1 and the off-diagonal ones
weighted by ``lambd``. ``loss_scale`` multiplies the loss (solo-learn's CIFAR recipe uses 0.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from vidssl.data.augment import byol_augment
from vidssl.data.views import TwoViews
from vidssl.losses import barlow_twins_loss
from vidssl.methods.base import Metrics, TwoViewMethod
from vidssl.models import build_backbone
from vidssl.nn import Branch, embedding_std, mlp


@dataclass
class BarlowTwinsConfig:
    """Barlow Twins hyper-parameters (the ``model:`` section). Defaults: the paper's ImageNet recipe."""

    backbone: str = "resnet18"
    projector: tuple[int, ...] = (8192, 8192, 8192)  # CIFAR: 2048 x 3
    lambd: float = 0.0051
    loss_scale: float = 1.0
    input: Literal["video", "images"] = "video"
    max_gap: int = 30
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    blur: bool = True  # the paper's augmentation is BYOL's asymmetric pair; off at 32 px

    def __post_init__(self) -> None:
        if not self.projector or min(self.projector) < 1 or self.max_gap < 1 or self.crop_size < 1:
            raise ValueError("barlow_twins: projector sizes, max_gap and crop_size must be positive")
        if self.lambd < 0 or self.loss_scale <= 0:
            raise ValueError("barlow_twins: lambd must be >= 0 and loss_scale > 0")


class BarlowTwins(TwoViewMethod):
    """Barlow Twins (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = BarlowTwinsConfig

    def __init__(self, cfg: BarlowTwinsConfig) -> None:
        backbone = build_backbone(cfg.backbone)
        views = TwoViews(byol_augment(cfg.crop_size, 1, cfg.crop_scale, cfg.blur), second=byol_augment(
            cfg.crop_size, 2, cfg.crop_scale, cfg.blur))
        net = Branch(backbone, mlp((backbone.num_features, *cfg.projector), bn=True, bias=False))
        super().__init__(net, views, cfg.input, cfg.max_gap)
        self.cfg = cfg


    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        _, _, z1, z2 = self.embed_views(batch)
        loss = self.cfg.loss_scale * barlow_twins_loss(z1, z2, self.cfg.lambd)
        return loss, {"embedding_std": embedding_std(z1)}
