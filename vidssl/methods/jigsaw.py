"""Jigsaw puzzles: which of P fixed permutations shuffled the 3 x 3 tiles of an image.

Noroozi & Favaro, "Unsupervised Learning of Visual Representations by Solving Jigsaw Puzzles", ECCV 2016
(https://arxiv.org/abs/1603.09246; MehdiNoroozi/JigsawPuzzleSolver). A crop (the paper: 225 px, cells of 75 px;
the widely used PyTorch port: 255 px, 85 px cells) is cut into 3 x 3 cells and each tile is a ``tile`` px window
at a random position inside its cell (64 px: the gap and jitter that stop tiles being matched by their edges,
``vidssl.data.augment.jigsaw_tiles``). A permutation drawn uniformly from the stored set reorders the tiles;
each tile is normalised on its own to zero mean and unit variance per channel (against the low-level statistics
that give neighbours away), passes one shared trunk and a per-tile layer (``tile_dim``, the paper's fc6), and
the nine concatenated in their shuffled order pass a hidden layer (fc7) to the P-way classifier (fc8; chance
ln P). The permutation set is the one ``tools/jigsaw_permutations.py`` stored next to the configs (maximal
Hamming distance; 100 or 1000 permutations), checked when it is read. ``grayscale_p`` turns whole images grey
(the paper's remedy against chromatic aberration, with per-tile colour jitter).

On video a sample is one random frame of a video, which is the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment, jigsaw_tiles, normalize_tiles
from vidssl.data.permutations import load_permutations
from vidssl.methods.frame_task import PretextClassifier
from vidssl.models import build_backbone
from vidssl.paths import REPO_ROOT


@dataclass
class JigsawConfig:
    """Jigsaw hyper-parameters (the ``model:`` section). Defaults: the paper's ImageNet values, 1000 permutations."""

    backbone: str = "resnet18"
    input: Literal["video", "images"] = "images"
    # a stored set (tools/jigsaw_permutations.py): a path, tried from the working directory, then the repository
    permutations: str = "configs/jigsaw_permutations_1000.json"
    crop_size: int = 255
    crop_scale: tuple[float, float] = (0.5, 1.0)
    tile_size: int = 64
    tile_dim: int = 512  # the per-tile layer (the paper's fc6: 1024)
    hidden: int = 4096  # on the nine concatenated (fc7)
    grayscale_p: float = 0.3
    tile_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # per-tile colour jitter
    tile_jitter_p: float = 0.8

    def __post_init__(self) -> None:
        if min(self.crop_size, self.tile_size, self.tile_dim, self.hidden) < 1:
            raise ValueError("jigsaw: crop_size, tile_size, tile_dim and hidden must be positive")
        if self.tile_size > self.crop_size // 3:
            raise ValueError(f"jigsaw: tile_size={self.tile_size} exceeds a cell of the {self.crop_size} px crop "
                             f"({self.crop_size // 3} px)")


class Jigsaw(PretextClassifier):
    """Jigsaw puzzles (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = JigsawConfig
    perms: Tensor

    def __init__(self, cfg: JigsawConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        given = Path(cfg.permutations)
        path = given if given.is_absolute() or given.is_file() else REPO_ROOT / given
        self.register_buffer("perms", torch.from_numpy(load_permutations(path)), persistent=True)
        self.num_classes = int(self.perms.shape[0])
        self.backbone = build_backbone(cfg.backbone)
        self.tile_head = nn.Sequential(nn.Linear(self.backbone.num_features, cfg.tile_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Linear(9 * cfg.tile_dim, cfg.hidden), nn.ReLU(inplace=True),
                                        nn.Linear(cfg.hidden, self.num_classes))
        self.augment = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, hflip=0.5, grayscale_p=cfg.grayscale_p)
        self.tile_colour = ClipAugment(size=cfg.tile_size, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0,
                                       color_jitter=cfg.tile_jitter, jitter_p=cfg.tile_jitter_p)

    def shuffle(self, tiles: Tensor, target: Tensor) -> Tensor:
        """``(B, 9, ...)`` tiles in row-major order -> position i holds tile ``perms[target][i]``."""
        order = self.perms[target]  # (B, 9)
        return tiles[torch.arange(tiles.shape[0], device=tiles.device)[:, None], order]

    def task(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        crop = self.crops(batch["video"], self.augment)[:, :, None]  # (B, C, 1, S, S)
        tiles = jigsaw_tiles(crop, 3, self.cfg.tile_size)  # (B, 9, C, 1, s, s)
        b = tiles.shape[0]
        tiles = self.tile_colour(tiles.flatten(0, 1))[:, :, 0]  # (9B, C, s, s), jittered tile by tile
        tiles = normalize_tiles(tiles).view(b, 9, *tiles.shape[1:])
        target = torch.randint(0, self.num_classes, (b,)).to(tiles.device)
        shuffled = self.shuffle(tiles, target)
        per_tile = self.tile_head(self.backbone(shuffled.flatten(0, 1))).view(b, -1)  # (B, 9 tile_dim)
        return self.classifier(per_tile), target
