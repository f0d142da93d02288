"""BYOL: regress an online network's prediction onto a momentum target's projection of the other view.

Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020 (https://arxiv.org/abs/2006.07733; deepmind-research
``byol``). Online: backbone -> projector -> predictor; target: backbone -> projector, an exponential moving
average of the online ones with momentum ``1 - (1 - tau_base)(cos(pi k / K) + 1) / 2`` rising from
``tau_base`` to 1 over the K steps of the run (``total_steps`` follows ``schedule.steps``). Loss: the
normalised squared distance ``2 - 2 cos`` of each view's prediction to the target's projection of the other,
the two directions summed (``vidssl.losses.cosine_regression``); no gradient reaches the target. The views
are asymmetric (blur 1.0 / 0.1, solarisation 0 / 0.2: ``vidssl.data.augment.byol_augment``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from vidssl.data.augment import byol_augment
from vidssl.data.views import Sampler, TwoViews
from vidssl.losses import cosine_regression
from vidssl.methods.base import Metrics, SSLMethod, positive_pair
from vidssl.models import ResNet, build_backbone
from vidssl.nn import Branch, ema_update_, embedding_std, mlp, momentum_at


@dataclass
class BYOLConfig:
    """BYOL hyper-parameters (the ``model:`` section). Defaults: the paper's ImageNet recipe."""

    backbone: str = "resnet18"
    projector: tuple[int, ...] = (4096, 256)  # hidden (BN, ReLU), output
    predictor: tuple[int, ...] = (4096, 256)
    momentum: float = 0.996  # tau_base (ImageNet; 0.99 on CIFAR as solo-learn)
    total_steps: int | None = None  # the momentum schedule's length: schedule.steps unless given (None: constant)
    input: Literal["video", "images"] = "video"
    max_gap: int = 30
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    blur: bool = True  # off at 32 px

    def __post_init__(self) -> None:
        if not self.projector or not self.predictor or min(*self.projector, *self.predictor) < 1:
            raise ValueError("byol: projector and predictor sizes must be positive")
        if self.predictor[-1] != self.projector[-1]:
            raise ValueError(f"byol: the predictor's output ({self.predictor[-1]}) must match the projector's "
                             f"({self.projector[-1]})")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"byol: momentum must be in [0, 1], got {self.momentum}")
        if self.max_gap < 1 or self.crop_size < 1 or (self.total_steps is not None and self.total_steps < 1):
            raise ValueError("byol: max_gap, crop_size and total_steps must be positive")


class BYOL(SSLMethod):
    """BYOL (see the module docstring). ``forward(batch) -> (loss, metrics)``; the EMA runs in ``after_step``."""

    Config = BYOLConfig
    tau: Tensor  # the momentum of the last EMA update (a buffer: checkpoints carry it)

    def __init__(self, cfg: BYOLConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        backbone = build_backbone(cfg.backbone)
        self.online = Branch(backbone, mlp((backbone.num_features, *cfg.projector), bn=True))
        self.predictor = mlp((cfg.projector[-1], *cfg.predictor), bn=True)
        self.target = copy.deepcopy(self.online).requires_grad_(False)  # starts equal; moved only by the EMA
        self.views = TwoViews(byol_augment(cfg.crop_size, 1, cfg.crop_scale, cfg.blur), second=byol_augment(
            cfg.crop_size, 2, cfg.crop_scale, cfg.blur))
        self.register_buffer("tau", torch.tensor(cfg.momentum, dtype=torch.float64))  # the last EMA's momentum

    def sampler(self) -> Sampler:
        return positive_pair(self.input, self.cfg.max_gap)

    def encoder(self) -> ResNet:
        return self.online.backbone  # type: ignore[return-value]

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        x1, x2 = self.views(batch["video"])
        z1, z2 = self.online(torch.cat([x1, x2])).chunk(2)
        p1, p2 = self.predictor(torch.cat([z1, z2])).chunk(2)
        with torch.no_grad():
            t1, t2 = self.target(torch.cat([x1, x2])).chunk(2)
        loss = cosine_regression(p1, t2) + cosine_regression(p2, t1)
        return loss, {"embedding_std": embedding_std(z1), "tau": float(self.tau)}

    def after_step(self, step: int) -> None:
        """``target = tau target + (1 - tau) online``, tau at step ``step`` of the cosine schedule."""
        steps = self.cfg.total_steps  # None (a method built outside a run): tau stays at tau_base
        tau = momentum_at(step, steps or 1, self.cfg.momentum, 1.0, "cosine" if steps else "constant")
        ema_update_(self.target, self.online, tau)
        self.tau.fill_(tau)
