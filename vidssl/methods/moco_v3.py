"""MoCo v3: momentum contrast without a queue, a predictor on the query side, the loss symmetrised.

Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021
(https://arxiv.org/abs/2104.02057; facebookresearch/moco-v3 ``builder.py``, ``MoCo_ResNet``). A separate file
from ``moco.py`` (v1 / v2) because the idea changed: the negatives are the other keys of the global batch
(gathered, ``vidssl.losses.batch_info_nce``), not a queue; the query branch gains a predictor; the momentum
rises from ``momentum`` to 1 on a cosine over the run. Projector: 2 linear layers without bias, BN and ReLU
between, BN without affine parameters at the end; predictor: 2 layers, BN and ReLU between.
``loss = ctr(q1, k2) + ctr(q2, k1)``, each ``ctr`` times ``2 T`` as the code.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from vidssl.data.augment import byol_augment
from vidssl.data.views import Sampler, TwoViews
from vidssl.losses import batch_info_nce
from vidssl.methods.base import Metrics, SSLMethod, positive_pair
from vidssl.models import ResNet, build_backbone
from vidssl.nn import Branch, ema_update_, embedding_std, mlp, momentum_at


@dataclass
class MoCoV3Config:
    """MoCo v3 hyper-parameters (the ``model:`` section). Defaults: the code's ResNet-50 recipe."""

    backbone: str = "resnet18"
    mlp_dim: int = 4096  # hidden width of projector and predictor
    dim: int = 256
    temperature: float = 1.0  # the code's ResNet-50 value (ViT: 0.2)
    momentum: float = 0.99  # rising to 1 (cosine), --moco-m-cos
    total_steps: int | None = None  # schedule.steps unless given (None: constant momentum)
    input: Literal["video", "images"] = "video"
    max_gap: int = 30
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    blur: bool = True  # BYOL's asymmetric pair, as the code's augmentation

    def __post_init__(self) -> None:
        if min(self.mlp_dim, self.dim, self.max_gap, self.crop_size) < 1:
            raise ValueError("moco_v3: mlp_dim, dim, max_gap and crop_size must be positive")
        if self.temperature <= 0 or not 0 <= self.momentum <= 1:
            raise ValueError("moco_v3: temperature must be positive and momentum in [0, 1]")


class MoCoV3(SSLMethod):
    """MoCo v3 (see the module docstring). ``forward(batch) -> (loss, metrics)``; the EMA runs in ``after_step``."""

    Config = MoCoV3Config

    def __init__(self, cfg: MoCoV3Config) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        backbone = build_backbone(cfg.backbone)
        head = mlp((backbone.num_features, cfg.mlp_dim, cfg.dim), bn=True, last_bn=True, last_bn_affine=False,
                   bias=False)
        self.query = Branch(backbone, head)
        self.predictor = mlp((cfg.dim, cfg.mlp_dim, cfg.dim), bn=True, bias=False)
        self.key = copy.deepcopy(self.query).requires_grad_(False)
        self.views = TwoViews(byol_augment(cfg.crop_size, 1, cfg.crop_scale, cfg.blur), second=byol_augment(
            cfg.crop_size, 2, cfg.crop_scale, cfg.blur))

    def sampler(self) -> Sampler:
        return positive_pair(self.input, self.cfg.max_gap)

    def encoder(self) -> ResNet:
        return self.query.backbone  # type: ignore[return-value]

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        x1, x2 = self.views(batch["video"])
        z1, z2 = self.query(torch.cat([x1, x2])).chunk(2)
        q1, q2 = self.predictor(torch.cat([z1, z2])).chunk(2)
        with torch.no_grad():
            k1, k2 = self.key(torch.cat([x1, x2])).chunk(2)
        t = self.cfg.temperature
        loss = batch_info_nce(q1, k2, t) + batch_info_nce(q2, k1, t)
        return loss, {"embedding_std": embedding_std(q1)}

    def after_step(self, step: int) -> None:
        steps = self.cfg.total_steps
        m = momentum_at(step, steps or 1, self.cfg.momentum, 1.0, "cosine" if steps else "constant")
        ema_update_(self.key, self.query, m)
