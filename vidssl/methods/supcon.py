"""SupCon: supervised contrastive learning, the labelled reference row of the image methods' table.

Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020 (https://arxiv.org/abs/2004.11362;
HobbitLong/SupContrast ``main_supcon.py``, ``losses.SupConLoss``). SimCLR's two views and projector (an MLP
without BN, as the authors' ``SupConResNet``: ``Linear -> ReLU -> Linear`` to 128), the loss pulling together
every view of one class (``vidssl.losses.supcon``, the paper's L_out with its ``T / base_T`` factor). Needs
labels, so still images only (the ImageFolder datasets give ``batch["label"]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from vidssl.data.augment import simclr_augment
from vidssl.data.views import TwoViews
from vidssl.losses import supcon
from vidssl.methods.base import Metrics, TwoViewMethod
from vidssl.models import build_backbone
from vidssl.nn import Branch, embedding_std, mlp


@dataclass
class SupConConfig:
    """SupCon hyper-parameters (the ``model:`` section). Defaults: the authors' CIFAR recipe."""

    backbone: str = "resnet18_cifar"
    projector: tuple[int, ...] = (512, 128)  # hidden (= the trunk's width in the authors' head), output
    temperature: float = 0.1
    base_temperature: float = 0.07
    input: Literal["images"] = "images"  # labels: no video form
    crop_size: int = 32
    crop_scale: tuple[float, float] = (0.2, 1.0)  # the authors' CIFAR crop
    blur_p: float = 0.0

    def __post_init__(self) -> None:
        if not self.projector or min(self.projector) < 1 or self.crop_size < 1:
            raise ValueError("supcon: projector sizes and crop_size must be positive")
        if self.temperature <= 0 or self.base_temperature <= 0:
            raise ValueError("supcon: temperatures must be positive")


class SupCon(TwoViewMethod):
    """SupCon (see the module docstring). ``forward(batch) -> (loss, metrics)``; reads ``batch["label"]``."""

    Config = SupConConfig

    def __init__(self, cfg: SupConConfig) -> None:
        backbone = build_backbone(cfg.backbone)
        super().__init__(Branch(backbone, mlp((backbone.num_features, *cfg.projector))),
                         TwoViews(simclr_augment(cfg.crop_size, cfg.crop_scale, 1.0, cfg.blur_p)), cfg.input, 1)
        self.cfg = cfg

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        if "label" not in batch or bool((batch["label"] < 0).any()):
            raise ValueError("supcon: needs class labels (batch['label'] >= 0): train it on an ImageFolder dataset")
        _, _, z1, z2 = self.embed_views(batch)
        loss = supcon(z1, z2, batch["label"], self.cfg.temperature, self.cfg.base_temperature)
        return loss, {"embedding_std": embedding_std(z1)}
