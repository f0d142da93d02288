"""The shared form of contrastive predictive coding on images (CPC, CPC v2, Greedy InfoMax): an image (or one
frame of a video) is cut into an overlapping grid of patches (``vidssl.data.augment.patch_grid``), every patch is
embedded by the trunk on its own, and the grid of embeddings ``(B, D, H, W)`` is read top to bottom by a
row-causal context network (``vidssl.nn.ContextNetwork``); the context at row ``i`` predicts the embeddings ``k``
rows below through one 1x1 convolution per offset, scored against every patch of the batch
(``vidssl.losses.cpc_loss``; chance ``ln(B H W)``, where the loss starts: the predictors are initialised near
zero). :class:`CPCHead` is that context and prediction on one grid;
:class:`GridTask` cuts and embeds the grid, so each method file keeps only what its paper changes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment, patch_grid
from vidssl.losses import cpc_loss
from vidssl.methods.frame_task import FrameTask
from vidssl.models import ResNet, build_backbone
from vidssl.nn.colour import InputSpace, normalize_input
from vidssl.nn.context import ContextNetwork

__all__ = ["PREDICTION_INIT_SCALE", "CPCHead", "GridTask", "check_grid", "grid_rows", "resnet_stages"]

PREDICTION_INIT_SCALE = 0.01  # the predictors' default initialisation times this


def grid_rows(crop_size: int, patch: int, stride: int) -> int:
    """Rows (and columns) of the grid of ``patch`` px patches at ``stride`` over a ``crop_size`` px crop."""
    return (crop_size - patch) // stride + 1 if crop_size >= patch else 0


def check_grid(where: str, crop_size: int, patch: int, stride: int, offsets: Sequence[int]) -> None:
    """An error naming ``where`` when the grid has too few rows for the largest prediction offset."""
    rows = grid_rows(crop_size, patch, stride)
    if rows < 2 or max(offsets) >= rows:
        raise ValueError(f"{where}: a {crop_size} px crop gives {rows} rows of {patch} px patches at stride "
                         f"{stride}; offsets {list(offsets)} need more")


class CPCHead(nn.Module):
    """Context and predictions on one grid of embeddings: ``(B, dim, H, W)`` -> ``(loss, accuracy)``.

    ``target_dim``: the targets (and predictions) are a 1x1 projection of the embeddings to this width (CPC v2's
    64-d), or the embeddings themselves (None, CPC v1). The context network reads the embeddings; each offset
    ``k`` has its own 1x1 convolution from the context to the target space. ``dot_scale``: the dot products are
    multiplied by it; None (the default) is ``1 / sqrt(width)``. The papers use raw products (``dot_scale: 1``),
    but with the trunk's unnormalised 512-d features one Adam step at 2e-4 from near-zero predictors moved the
    logits by tens (measured on CIFAR: the loss went from 6.7, chance, to 48 at the second step)."""

    def __init__(self, dim: int, offsets: Sequence[int], context_dim: int, blocks: int = 5,
                 target_dim: int | None = None, dot_scale: float | None = None) -> None:
        super().__init__()
        if not offsets or min(offsets) < 1:
            raise ValueError(f"CPCHead: offsets must be positive row distances, got {list(offsets)}")
        self.offsets = [int(k) for k in offsets]
        self.context = ContextNetwork(dim, context_dim, blocks)
        self.target = nn.Conv2d(dim, target_dim, 1) if target_dim is not None else nn.Identity()
        out = target_dim if target_dim is not None else dim
        self.scale = 1 / math.sqrt(out) if dot_scale is None else float(dot_scale)
        convs = [nn.Conv2d(dim, out, 1) for _ in self.offsets]
        with torch.no_grad():  # predictions start near zero, so the loss starts at chance, ln(B H W): the raw dot
            for conv in convs:  # products of unnormalised features otherwise start 10x above it (measured)
                conv.weight.mul_(PREDICTION_INIT_SCALE)
                assert conv.bias is not None
                conv.bias.zero_()
        self.predict = nn.ModuleList(convs)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        if max(self.offsets) >= z.shape[2]:
            raise ValueError(f"CPCHead: offsets {self.offsets} need a grid of more than {max(self.offsets)} rows, "
                             f"got {z.shape[2]}")
        c = self.context(z)
        return cpc_loss([p(c) for p in self.predict], self.target(z), self.offsets, self.scale)


def resnet_stages(backbone: ResNet, boundaries: Sequence[Sequence[int]]) -> list[nn.ModuleList]:
    """The trunk's residual stages grouped as ``boundaries`` (1-based stage numbers, e.g. ``[[1, 2], [3], [4]]``);
    the stem (conv1, bn1, relu, max-pool, and the input channel selection) goes with the first group. Every stage
    of the trunk must appear once, in order."""
    layers: list[Any] = [backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]
    present = [i + 1 for i, layer in enumerate(layers) if layer is not None]
    flat = [int(s) for group in boundaries for s in group]
    if flat != present or any(not group for group in boundaries):
        raise ValueError(f"stages: every residual stage of the trunk ({present}) once, in order, in non-empty "
                         f"groups; got {[list(g) for g in boundaries]}")
    return [nn.ModuleList(layers[s - 1] for s in group) for group in boundaries]


class GridTask(FrameTask):
    """A predictive-coding method on a patch grid (see the module docstring). Subclasses set ``cfg`` with
    ``crop_size``, ``pad``, ``patch``, ``patch_stride`` and ``patch_jitter`` (an area range, or None for exact
    patches), and ``self.augment`` (the image's augmentation)."""

    augment: nn.Module
    cfg: Any
    input_space: InputSpace = "rgb"

    def __init__(self, cfg: Any) -> None:
        """The config, its input, the named trunk and the image's crop and flip (all three methods' own)."""
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        self.backbone = build_backbone(cfg.backbone)
        square = (1.0, 1.0) if tuple(cfg.crop_scale) == (1.0, 1.0) else (3 / 4, 4 / 3)
        self.augment = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, ratio=square, hflip=0.5)

    def patches(self, batch: dict[str, Tensor]) -> tuple[Tensor, int, int]:
        """The batch's grids of normalised patches ``(B N, 3, p, p)`` and the grid's rows and columns."""
        cfg = self.cfg
        x = self.crops(batch["video"], self.augment, cfg.pad)[:, :, None]  # (B, 3, 1, S, S)
        jitter = tuple(cfg.patch_jitter) if cfg.patch_jitter is not None else None
        grid = patch_grid(x, cfg.patch, cfg.patch_stride, jitter=jitter)[:, :, :, 0]  # (B, N, 3, p, p)
        rows = cols = grid_rows(x.shape[-1], cfg.patch, cfg.patch_stride)
        return normalize_input(grid.flatten(0, 1), self.input_space), rows, cols

    @staticmethod
    def to_grid(features: Tensor, b: int, rows: int, cols: int) -> Tensor:
        """Pooled patch features ``(B N, D)`` -> the grid ``(B, D, rows, cols)``."""
        return features.view(b, rows, cols, -1).permute(0, 3, 1, 2)

    @staticmethod
    def pooled(maps: Tensor) -> Tensor:
        """Patch feature maps ``(B N, C, h, w)`` -> ``(B N, C)``, averaged."""
        return F.adaptive_avg_pool2d(maps, 1).flatten(1)
