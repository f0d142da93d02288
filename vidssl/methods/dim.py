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

``objective: amdim`` is AMDIM's multi-scale form (Bachman, Hjelm & Buchwalter, "Learning Representations by
Maximizing Mutual Information Across Views", NeurIPS 2019; Philip-Bachman/amdim-public ``model.py``, ``costs.py``):
two augmented views of each image; from each, the global vector (the pooled trunk output, batch-normalised as the
authors' encoder ends: AMDIM's 1x1 features, unprojected) and two local maps (``amdim_stages``: the maps after those
stages stand for AMDIM's 5x5 and 7x7 layers; 4x4 and 8x8 on the CIFAR trunk), each encoded to the global width by
1x1 convolutions with a linear shortcut (its ``FakeRKHSConvNet``). Costs across views in both directions
(``vidssl.losses.amdim_nce``: scores over sqrt(width), a 4e-2 penalty on their squares, tanh clipping at 20, InfoNCE
over the other images' locations): global -> 5x5, global -> 7x7, and one random location of the 5x5 map -> 5x5, each
the mean of its two directions, summed, plus the sum of the six penalties halved (``task_self_supervised.py``:
``loss_g2l + lgt_reg``). The authors' encoder is their own convnet (no padding, so its maps are exactly 7x7, 5x5,
1x1); here the trunk is vidssl's ResNet.

On video a sample is one random frame of a video, which is the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment
from vidssl.losses import amdim_nce, dim_loss
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
    # "local": DIM(L) above; "amdim": AMDIM's multi-scale costs across two views (local_stage, dim, hidden and
    # estimator are then unused: the locals are encoded to the trunk's output width, as AMDIM's n_rkhs)
    objective: Literal["local", "amdim"] = "local"
    amdim_stages: tuple[int, int] = (4, 3)  # the stages whose maps play AMDIM's 5x5 and 7x7 layers
    clip: float = 20.0  # AMDIM's tclip (its train.py default)
    reg_weight: float = 4.0e-2  # AMDIM's penalty on the squared scores
    jitter: tuple[float, float, float, float] | None = None  # colour jitter (AMDIM's CIFAR: 0.4, 0.4, 0.4, 0.2)
    jitter_p: float = 0.8
    grayscale_p: float = 0.0  # AMDIM's CIFAR: 0.25

    def __post_init__(self) -> None:
        if not 1 <= self.local_stage <= 4 or min(self.dim, self.hidden) < 1:
            raise ValueError("dim: local_stage in 1..4 (a stage before the global output), dim and hidden >= 1")
        if not all(1 <= k <= 4 for k in self.amdim_stages) or self.clip <= 0 or self.reg_weight < 0:
            raise ValueError("dim: amdim_stages in 1..4, clip > 0 and reg_weight >= 0")


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
        if cfg.objective == "amdim":
            self.global_norm = nn.BatchNorm1d(width)  # the authors' encoder ends in a batch norm of its 1x1 map
            self.scale_encoders = nn.ModuleList(
                _Shortcut(nn.Sequential(nn.Conv2d(stage_width(stages[k - 1]), width, 1, bias=False),
                                        nn.ReLU(inplace=True), nn.Conv2d(width, width, 1, bias=False),
                                        nn.BatchNorm2d(width)),
                          nn.Conv2d(stage_width(stages[k - 1]), width, 1))
                for k in cfg.amdim_stages)
        square = (1.0, 1.0) if cfg.crop_scale == (1.0, 1.0) else (3 / 4, 4 / 3)
        self.augment = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, ratio=square, hflip=0.5,
                                   color_jitter=cfg.jitter, jitter_p=cfg.jitter_p, grayscale_p=cfg.grayscale_p)

    def features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised images -> the local map after ``local_stage`` ``(B, C, h, w)`` and the trunk's output map."""
        h = self.backbone.stem(x)
        local = h
        for i, stage in enumerate(self.backbone.stages(), start=1):
            h = stage(h)
            if i == self.cfg.local_stage:
                local = h
        return local, h

    def scales(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Normalised images -> AMDIM's features: the global vector ``(B, W)`` and the two encoded local maps
        ``(B, P5, W)``, ``(B, P7, W)`` (``amdim_stages``)."""
        h, maps = self.backbone.stem(x), {}
        for i, stage in enumerate(self.backbone.stages(), start=1):
            h = stage(h)
            maps[i] = h
        r5, r7 = (enc(maps[k]).flatten(2).transpose(1, 2) for enc, k in zip(self.scale_encoders,
                                                                             self.cfg.amdim_stages, strict=True))
        return self.global_norm(h.mean(dim=(2, 3))), r5, r7

    def amdim_terms(self, one: tuple[Tensor, Tensor, Tensor], two: tuple[Tensor, Tensor, Tensor],
                    where: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        """AMDIM's costs from the two views' ``(r1, r5, r7)``; ``where`` the 5x5 location each image's 5 -> 5 source
        is read at in view one and in view two, ``(B,)`` each. Keys ``1t5``, ``1t7``, ``5t5``, ``reg``."""
        clip, weight = self.cfg.clip, self.cfg.reg_weight
        rows = torch.arange(one[0].shape[0], device=one[0].device)
        pairs = {"1t5": ((one[0], two[1]), (two[0], one[1])), "1t7": ((one[0], two[2]), (two[0], one[2])),
                 "5t5": ((one[1][rows, where[0]], two[1]), (two[1][rows, where[1]], one[1]))}
        terms, reg = {}, one[0].new_zeros(())
        for name, directions in pairs.items():
            (a, pa), (b, pb) = (amdim_nce(src, trg, clip, weight) for src, trg in directions)
            terms[name] = 0.5 * (a + b)
            reg = reg + 0.5 * (pa + pb)
        terms["reg"] = reg
        return terms

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        if self.cfg.objective == "amdim":
            views = [normalize_input(self.crops(batch["video"], self.augment, self.cfg.pad), "rgb") for _ in "12"]
            one, two = self.scales(views[0]), self.scales(views[1])
            n, p5 = one[1].shape[:2]
            where = (torch.randint(0, p5, (n,)).to(one[1].device), torch.randint(0, p5, (n,)).to(one[1].device))
            terms = self.amdim_terms(one, two, where)
            loss = terms["1t5"] + terms["1t7"] + terms["5t5"] + terms["reg"]
            return loss, {f"loss_{k}": v.detach() for k, v in terms.items()}
        x = normalize_input(self.crops(batch["video"], self.augment, self.cfg.pad), "rgb")
        local, out = self.features(x)
        g = self.global_encoder(out.mean(dim=(2, 3)))  # (B, dim)
        l_ = self.local_encoder(local).flatten(2).transpose(1, 2)  # (B, P, dim)
        return dim_loss(g, l_, self.cfg.estimator), {}
