"""SimCLR: contrast two views of each sample against the other samples of the global batch.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020
(https://arxiv.org/abs/2002.05709); v2's deeper projector (Chen et al. 2020, https://arxiv.org/abs/2006.10029)
is a config (``projector: [2048, 2048, 128]``). Backbone -> MLP projector (BN on the hidden layers, as the
authors' code and solo-learn) -> NT-Xent over the 2N views of the global batch, the other processes' views
gathered inside the loss with rank-offset labels (``vidssl.losses.nt_xent``).

Positives (``vidssl.data.views``): two augmentations of one image, or two frames of one video at most
``max_gap`` apart, each augmented.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from vidssl.data.augment import simclr_augment
from vidssl.data.views import TwoViews
from vidssl.losses import nt_xent
from vidssl.methods.base import Metrics, TwoViewMethod
from vidssl.models import build_backbone
from vidssl.nn import Branch, embedding_std, mlp


@dataclass
class SimCLRConfig:
    """SimCLR hyper-parameters (the ``model:`` section). Defaults: the paper's ImageNet recipe (v1 head)."""

    backbone: str = "resnet18"
    projector: tuple[int, ...] = (2048, 128)  # hidden sizes, then the output (v2: 2048, 2048, 128)
    temperature: float = 0.1  # ImageNet at large batches; CIFAR 0.5 (the paper's appendix B.9, lightly)
    input: Literal["video", "images"] = "video"  # follows data.kind
    max_gap: int = 30  # largest frame distance of a video positive pair
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    strength: float = 1.0  # colour-jitter strength s (0.5 on CIFAR in the paper)
    blur_p: float = 0.5  # 0 at 32 px

    def __post_init__(self) -> None:
        if not self.projector or min(self.projector) < 1 or self.max_gap < 1 or self.crop_size < 1:
            raise ValueError("simclr: projector sizes, max_gap and crop_size must be positive")
        if self.temperature <= 0:
            raise ValueError(f"simclr: temperature must be positive, got {self.temperature}")


class SimCLR(TwoViewMethod):
    """SimCLR (see the module docstring). ``forward(batch) -> (loss, metrics)``; no state besides the network."""

    Config = SimCLRConfig

    def __init__(self, cfg: SimCLRConfig) -> None:
        backbone = build_backbone(cfg.backbone)
        super().__init__(Branch(backbone, mlp((backbone.num_features, *cfg.projector), bn=True)),
                         TwoViews(simclr_augment(cfg.crop_size, cfg.crop_scale, cfg.strength, cfg.blur_p)),
                         cfg.input, cfg.max_gap)
        self.cfg = cfg


    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        _, _, z1, z2 = self.embed_views(batch)
        return nt_xent(z1, z2, self.cfg.temperature), {"embedding_std": embedding_std(z1)}
