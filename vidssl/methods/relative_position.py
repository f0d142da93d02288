"""Context prediction: which of its eight neighbours a second patch is, relative to a centre patch.

Doersch, Gupta & Efros, "Unsupervised Visual Representation Learning by Context Prediction", ICCV 2015
(https://arxiv.org/abs/1505.05192; cdoersch/deepcontext). From a 3 x 3 layout of ``patch`` px patches ``gap`` px
apart, each position jittered by up to ``jitter`` px (the paper: 96 px patches, a 48 px gap, 7 px jitter), the
centre patch and one neighbour drawn uniformly are embedded by one shared trunk; their pooled features,
concatenated (centre first), go through a hidden layer to an 8-way classifier (the paper's fc6 per patch, fc7 on
the pair, fc8; chance ln 8). The gap and the jitter stop the task being solved from edges and lines that run
across the patches. Chromatic aberration, the shortcut the paper found (a lens shifts green against magenta
towards the image border, which tells where a patch is), is removed by ``aberration``: ``project`` (the paper's
projection away from the green-magenta axis) or ``drop`` (two of the three channels replaced by noise; both in
``vidssl.data.augment.remove_chroma``), or left in with ``none``.

On video a sample is one random frame of a video, which is the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment, remove_chroma
from vidssl.methods.frame_task import PretextClassifier
from vidssl.models import build_backbone
from vidssl.nn.colour import normalize_input

# the eight neighbours of the centre (1, 1) of a 3 x 3 grid, row-major: label k is NEIGHBOURS[k] = (row, column)
NEIGHBOURS = ((0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (2, 2))


def layout_size(patch: int, gap: int, jitter: int) -> int:
    """The side of the square a 3 x 3 layout needs: three patches, two gaps and the jitter on both sides."""
    return 3 * patch + 2 * gap + 2 * jitter


def relative_patches(x: Tensor, neighbour: Tensor, patch: int, gap: int, jitter: int,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """The centre patch and neighbour ``neighbour[b]`` (an index into :data:`NEIGHBOURS`) of each image of ``(B, C,
    H, W)``: two ``(B, C, patch, patch)`` crops. The layout's origin is uniform over the positions where it fits
    and every patch moves by its own uniform integer jitter in ``[-jitter, jitter]`` on each axis."""
    b, _, h, w = x.shape
    need = layout_size(patch, gap, jitter)
    if h < need or w < need:
        raise ValueError(f"relative_patches: a {h}x{w} image is smaller than the {need} px layout of 3 x 3 patches of "
                         f"{patch} px, {gap} px gaps and {jitter} px jitter")
    span = 3 * patch + 2 * gap
    origin = torch.stack([torch.randint(jitter, h - span - jitter + 1, (b,), generator=generator),
                          torch.randint(jitter, w - span - jitter + 1, (b,), generator=generator)], dim=1)  # (B, 2)
    cells = torch.tensor(NEIGHBOURS)[neighbour.cpu()]  # (B, 2) row, column of the neighbour
    shake = torch.randint(-jitter, jitter + 1, (2, b, 2), generator=generator)
    centre = origin + (patch + gap) + shake[0]
    other = origin + cells * (patch + gap) + shake[1]
    return _crop(x, centre.to(x.device), patch), _crop(x, other.to(x.device), patch)


def _crop(x: Tensor, top_left: Tensor, size: int) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, C, size, size)`` windows at ``top_left`` ``(B, 2)`` (row, column) per image."""
    r = torch.arange(size, device=x.device)
    rows = (top_left[:, 0, None] + r)[:, None, :, None]  # (B, 1, s, 1)
    cols = (top_left[:, 1, None] + r)[:, None, None, :]
    bi = torch.arange(x.shape[0], device=x.device)[:, None, None, None]
    ci = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return x[bi, ci, rows, cols]


@dataclass
class RelativePositionConfig:
    """Context-prediction hyper-parameters (the ``model:`` section). Defaults: the paper's ImageNet values."""

    backbone: str = "resnet18"
    input: Literal["video", "images"] = "images"
    patch: int = 96
    gap: int = 48
    jitter: int = 7
    crop_scale: tuple[float, float] = (0.5, 1.0)  # of the image, resized to the layout's size
    hidden: int = 4096  # the pair's hidden layer (the paper's fc7)
    aberration: Literal["project", "drop", "none"] = "project"
    grayscale_p: float = 0.0

    def __post_init__(self) -> None:
        if self.patch < 1 or self.gap < 0 or self.jitter < 0 or self.hidden < 1:
            raise ValueError("relative_position: patch and hidden >= 1, gap and jitter >= 0")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError("relative_position: 0 < crop_scale[0] <= crop_scale[1] <= 1")


class RelativePosition(PretextClassifier):
    """Context prediction (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = RelativePositionConfig
    num_classes = 8

    def __init__(self, cfg: RelativePositionConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        self.backbone = build_backbone(cfg.backbone)
        f = self.backbone.num_features
        self.classifier = nn.Sequential(nn.Linear(2 * f, cfg.hidden), nn.ReLU(inplace=True),
                                        nn.Linear(cfg.hidden, 8))
        size = layout_size(cfg.patch, cfg.gap, cfg.jitter)
        self.augment = ClipAugment(size=size, scale=cfg.crop_scale, hflip=0.5, grayscale_p=cfg.grayscale_p)

    def task(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        c = self.cfg
        x = normalize_input(self.crops(batch["video"], self.augment), "rgb")
        target = torch.randint(0, 8, (x.shape[0],)).to(x.device)
        centre, other = relative_patches(x, target, c.patch, c.gap, c.jitter)
        both = remove_chroma(torch.cat([centre, other]), c.aberration)
        f_centre, f_other = self.backbone(both).chunk(2)
        return self.classifier(torch.cat([f_centre, f_other], dim=1)), target
