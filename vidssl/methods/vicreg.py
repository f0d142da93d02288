"""VICReg: invariance between two views, with variance and covariance terms that keep the embedding spread.

Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for Self-Supervised Learning",
ICLR 2022 (https://arxiv.org/abs/2105.04906; facebookresearch/vicreg ``main_vicreg.py``). Backbone -> expander
(3 linear layers, BN and ReLU between) -> ``vidssl.losses.vicreg_loss`` with the weights 25 / 25 / 1 and the
official averaging of the two views' variance terms (``average_variance: false`` sums them, as solo-learn,
which doubles their weight). The variance and covariance terms read the global batch (gathered).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from vidssl.data.augment import byol_augment
from vidssl.data.views import TwoViews
from vidssl.losses import vicreg_loss
from vidssl.methods.base import Metrics, TwoViewMethod
from vidssl.models import build_backbone
from vidssl.nn import Branch, embedding_std, mlp


@dataclass
class VICRegConfig:
    """VICReg hyper-parameters (the ``model:`` section). Defaults: the paper's ImageNet recipe."""

    backbone: str = "resnet18"
    projector: tuple[int, ...] = (8192, 8192, 8192)  # CIFAR: 2048 x 3
    sim_coeff: float = 25.0
    std_coeff: float = 25.0
    cov_coeff: float = 1.0
    average_variance: bool = True  # the official code; false: summed (solo-learn)
    input: Literal["video", "images"] = "video"
    max_gap: int = 30
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    blur: bool = True  # the paper's augmentation is BYOL's asymmetric pair; off at 32 px

    def __post_init__(self) -> None:
        if not self.projector or min(self.projector) < 1 or self.max_gap < 1 or self.crop_size < 1:
            raise ValueError("vicreg: projector sizes, max_gap and crop_size must be positive")
        if min(self.sim_coeff, self.std_coeff, self.cov_coeff) < 0:
            raise ValueError("vicreg: the coefficients must not be negative")


class VICReg(TwoViewMethod):
    """VICReg (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = VICRegConfig

    def __init__(self, cfg: VICRegConfig) -> None:
        backbone = build_backbone(cfg.backbone)
        views = TwoViews(byol_augment(cfg.crop_size, 1, cfg.crop_scale, cfg.blur), second=byol_augment(
            cfg.crop_size, 2, cfg.crop_scale, cfg.blur))
        net = Branch(backbone, mlp((backbone.num_features, *cfg.projector), bn=True))
        super().__init__(net, views, cfg.input, cfg.max_gap)
        self.cfg = cfg


    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        _, _, z1, z2 = self.embed_views(batch)
        c = self.cfg
        loss, terms = vicreg_loss(z1, z2, c.sim_coeff, c.std_coeff, c.cov_coeff, average_variance=c.average_variance)
        return loss, {**terms, "embedding_std": embedding_std(z1)}
