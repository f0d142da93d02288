"""Contrastive Predictive Coding on images: predict the embeddings of patches below from the context above.

van den Oord, Li & Vinyals, "Representation Learning with Contrastive Predictive Coding", 2018
(https://arxiv.org/abs/1807.03748). The image is cut into a grid of overlapping patches (ImageNet: 7x7 of 64 px
at stride 32 from 256 px; the CIFAR config scales it by 1/8: 8 px at stride 4 from 32 px), each patch embedded by
the trunk and mean-pooled, the grid read top to bottom by a PixelCNN-style context network (row-causal
convolutions, ``vidssl.nn.ContextNetwork``), and the context at row ``i`` predicts the embedding of the patch
``k`` rows below (``offsets``; the paper: up to 5) through one linear map per ``k``, scored by InfoNCE against
every patch of the batch (``vidssl.losses.cpc_loss``; chance ``ln(B H W)``). No patch augmentation (CPC v2 adds
it, ``cpc_v2``). The encoder is the patch trunk; ``vidssl eval knn --patches 8 4`` reads it on the patch grid
it trained on (each patch embedded, the embeddings averaged), without ``--patches`` on whole images.

On video a sample is one random frame of a video, which is the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from vidssl.methods.base import Metrics
from vidssl.methods.predictive import CPCHead, GridTask, check_grid


@dataclass
class CPCConfig:
    """CPC hyper-parameters (the ``model:`` section). Defaults: the CIFAR scale of the ImageNet grid."""

    backbone: str = "resnet18_cifar"
    input: Literal["video", "images"] = "images"
    crop_size: int = 32
    pad: int = 4  # RandomCrop(S, padding=pad) first
    crop_scale: tuple[float, float] = (1.0, 1.0)
    patch: int = 8
    patch_stride: int = 4
    patch_jitter: tuple[float, float] | None = None
    offsets: tuple[int, ...] = (1, 2, 3, 4, 5)
    context_dim: int = 256
    context_blocks: int = 5
    dot_scale: float | None = None  # None: 1 / sqrt(width); 1.0: the paper's raw dot products
    target_dim: int | None = None

    def __post_init__(self) -> None:
        check_grid("cpc", self.crop_size, self.patch, self.patch_stride, self.offsets)


class CPC(GridTask):
    """CPC on images (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = CPCConfig

    def __init__(self, cfg: CPCConfig) -> None:
        super().__init__(cfg)
        self.head = CPCHead(self.backbone.num_features, cfg.offsets, cfg.context_dim, cfg.context_blocks,
                            cfg.target_dim, cfg.dot_scale)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        patches, rows, cols = self.patches(batch)
        z = self.to_grid(self.backbone(patches), batch["video"].shape[0], rows, cols)
        loss, acc = self.head(z)
        return loss, {"acc": acc}
