"""IIC: invariant information clustering, the mutual information of the cluster assignments of paired views.

Ji, Henriques & Vedaldi, "Invariant Information Clustering for Unsupervised Image Classification and
Segmentation", ICCV 2019 (https://arxiv.org/abs/1807.06653; xu-ji/IIC ``IID_losses.py``, the CIFAR-10 two-head
script). Backbone -> head B (``sub_heads`` softmax classifiers over ``num_clusters``, the classes) and head A
(``sub_heads`` over ``overcluster`` clusters, the auxiliary over-clustering; 0: none). A sample's pair is the image
``x`` (resized, flipped at random) and its perturbation ``g(x)`` (random crop, flip, colour jitter), or two frames
of one video at most ``max_gap`` apart; every sub-head's loss is ``vidssl.losses.iic_loss`` (minus the mutual
information of the joint over the global batch), averaged over sub-heads, and the two heads' losses are summed in
every step (the code alternates whole epochs: two of head B, one of head A). ``mi_over_lnK``: the mean sub-head
mutual information of head B over ln K (1: a one-to-one pairing over equal clusters; 0: collapse or independence).
The code feeds CIFAR through Sobel filters (2 grey-gradient channels); vidssl's trunks take RGB, so it does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment
from vidssl.data.views import Sampler, TwoViews
from vidssl.losses import iic_loss
from vidssl.methods.base import Metrics, SSLMethod, positive_pair
from vidssl.models import ResNet, build_backbone


@dataclass
class IICConfig:
    """IIC hyper-parameters (the ``model:`` section). Defaults: the CIFAR-10 two-head recipe (RECIPES.md)."""

    backbone: str = "resnet18"
    num_clusters: int = 10  # head B: the classes
    overcluster: int = 70  # head A; 0: no auxiliary over-clustering head
    sub_heads: int = 5
    lamb: float = 1.0  # the code's weight of the marginal entropies
    input: Literal["video", "images"] = "images"
    max_gap: int = 30
    crop_size: int = 32
    crop_scale: tuple[float, float] = (0.4, 1.0)  # g(x)'s random crop (the code: 20 of 32 px, area about 0.4)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.125)  # g(x)'s colour jitter, as the code

    def __post_init__(self) -> None:
        if self.num_clusters < 2 or self.overcluster < 0 or self.overcluster == 1 or self.sub_heads < 1:
            raise ValueError("iic: num_clusters >= 2, overcluster 0 or >= 2, sub_heads >= 1")
        if self.lamb <= 0 or self.max_gap < 1 or self.crop_size < 1:
            raise ValueError("iic: lamb, max_gap and crop_size must be positive")


class IIC(SSLMethod):
    """IIC (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = IICConfig

    def __init__(self, cfg: IICConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        self.backbone = build_backbone(cfg.backbone)
        f = self.backbone.num_features
        self.head_b = nn.ModuleList([nn.Linear(f, cfg.num_clusters) for _ in range(cfg.sub_heads)])
        n_a = cfg.sub_heads if cfg.overcluster else 0
        self.head_a = nn.ModuleList([nn.Linear(f, cfg.overcluster) for _ in range(n_a)])
        self.views = TwoViews(ClipAugment(size=cfg.crop_size, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.5),
                              second=ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, color_jitter=cfg.jitter,
                                                 jitter_p=1.0, hflip=0.5))

    def sampler(self) -> Sampler:
        return positive_pair(self.input, self.cfg.max_gap)

    def encoder(self) -> ResNet:
        return self.backbone

    def _head_loss(self, heads: nn.ModuleList, f1: Tensor, f2: Tensor) -> Tensor:
        return torch.stack([iic_loss(h(f1).softmax(dim=1), h(f2).softmax(dim=1), self.cfg.lamb)
                            for h in heads]).mean()

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        x1, x2 = self.views(batch["video"])
        f1, f2 = self.backbone(torch.cat([x1, x2])).chunk(2)
        loss_b = self._head_loss(self.head_b, f1, f2)
        loss = loss_b + (self._head_loss(self.head_a, f1, f2) if len(self.head_a) else 0.0)
        return loss, {"mi_over_lnK": -loss_b.detach() / math.log(self.cfg.num_clusters)}
