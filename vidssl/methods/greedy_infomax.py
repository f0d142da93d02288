"""Greedy InfoMax: the trunk cut into gradient-isolated modules, each trained by its own CPC loss.

Löwe, O'Connor & Veeling, "Putting An End to End-to-End: Gradient-Isolated Learning of Representations",
NeurIPS 2019 (https://arxiv.org/abs/1905.11786; loeweX/Greedy_InfoMax). The trunk's residual stages are grouped
into modules (``stages``; the paper: a ResNet-50 in 3 modules on STL-10); every patch of the grid passes the
modules in turn, each module's output is mean-pooled per patch into its own grid of embeddings and scored by its
own context network and predictions (a ``CPCHead`` per module, ``vidssl.losses.cpc_loss``), and the next module
reads that output *detached*: no gradient crosses a module boundary, so each module learns greedily from its own
loss (the sum of the module losses is one backward pass, the same as separate ones). The encoder is the whole
trunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from vidssl.methods.base import Metrics
from vidssl.methods.predictive import CPCHead, GridTask, check_grid, resnet_stages
from vidssl.models.resnet import stage_width


@dataclass
class GreedyInfoMaxConfig:
    """Greedy InfoMax hyper-parameters (the ``model:`` section). Defaults: the CIFAR grid, a ResNet-18 in 3 modules."""

    backbone: str = "resnet18_cifar"
    input: Literal["video", "images"] = "images"
    stages: list[list[int]] = field(default_factory=lambda: [[1, 2], [3], [4]])
    crop_size: int = 32
    pad: int = 4
    crop_scale: tuple[float, float] = (1.0, 1.0)
    patch: int = 8
    patch_stride: int = 4
    patch_jitter: tuple[float, float] | None = None
    offsets: tuple[int, ...] = (1, 2, 3, 4, 5)
    context_dim: int = 256
    dot_scale: float | None = None  # None: 1 / sqrt(width); 1.0: the paper's raw dot products
    context_blocks: int = 1  # the paper's per-module autoregressor is small: one masked block per module here

    def __post_init__(self) -> None:
        check_grid("greedy_infomax", self.crop_size, self.patch, self.patch_stride, self.offsets)


class GreedyInfoMax(GridTask):
    """Greedy InfoMax (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = GreedyInfoMaxConfig

    def __init__(self, cfg: GreedyInfoMaxConfig) -> None:
        super().__init__(cfg)
        self.modules_ = resnet_stages(self.backbone, cfg.stages)
        widths = [stage_width(group[-1]) for group in self.modules_]
        self.heads = nn.ModuleList(CPCHead(w, cfg.offsets, cfg.context_dim, cfg.context_blocks,
                                           dot_scale=cfg.dot_scale) for w in widths)

    def module_outputs(self, patches: Tensor) -> list[Tensor]:
        """Each module's feature maps of ``(B N, 3, p, p)`` patches; every module reads its predecessor detached."""
        x, outs = self.backbone.stem(patches), []
        for i, group in enumerate(self.modules_):
            if i > 0:
                x = x.detach()  # the gradient isolation
            for stage in group:
                x = stage(x)
            outs.append(x)
        return outs

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        patches, rows, cols = self.patches(batch)
        b = batch["video"].shape[0]
        losses, metrics = [], {}
        for i, (maps, head) in enumerate(zip(self.module_outputs(patches), self.heads, strict=True)):
            loss, acc = head(self.to_grid(self.pooled(maps), b, rows, cols))
            losses.append(loss)
            metrics[f"loss_module{i + 1}"], metrics[f"acc_module{i + 1}"] = loss.detach(), acc
        return torch.stack(losses).sum(), metrics
