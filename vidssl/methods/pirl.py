"""PIRL: pretext-invariant representations, an image and its shuffled jigsaw tiles matched through a memory bank.

Misra & van der Maaten, "Self-Supervised Learning of Pretext-Invariant Representations", CVPR 2020
(https://arxiv.org/abs/1912.01991; VISSL's ``pirl`` configs and ``nce_loss_with_memory``). Two views of a sample:
the image ``I`` (augmented) and the jigsaw view ``I^t`` (another augmented crop cut into 3 x 3 tiles,
``vidssl.data.augment.jigsaw_tiles``, shuffled). ``f``: the trunk, then a linear layer to ``dim``; ``g``: the trunk on
every tile, a shared linear layer to ``dim`` per tile, the 9 concatenated in their shuffled order, a linear layer to
``dim``; both L2-normalised. A memory bank (``vidssl.methods.base.BankNCE``, momentum 0.5) holds each sample's
``f(I)``; the loss is ``weight NCE(m_I, g(I^t)) + (1 - weight) NCE(m_I, f(I))`` with ``negatives`` entries drawn
uniformly and T 0.07, one normalising constant Z for both terms estimated from the first batch (VISSL's one
criterion). ``loss: infonce`` swaps NCE for the softmax over the same scores. ``bank_init: features`` starts the
bank from the initial network's ``f`` of every sample instead of random vectors (``fill_banks``).

On video a sample is one random frame of a video, the video its instance (as NPID's video config).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment, jigsaw_tiles, to_float
from vidssl.data.views import Sampler
from vidssl.methods.base import BankNCE, EpochContext, Metrics, SSLMethod, fill_banks, instance_frame, sample_index
from vidssl.models import ResNet, build_backbone
from vidssl.nn import MemoryBank, embedding_std
from vidssl.nn.colour import normalize_input


@dataclass
class PIRLConfig:
    """PIRL hyper-parameters (the ``model:`` section). Defaults: the paper's ImageNet recipe (VISSL)."""

    backbone: str = "resnet18"
    dim: int = 128
    bank_size: int = 1281167  # one entry per training sample: the dataset's size (checked each epoch)
    negatives: int = 32000
    temperature: float = 0.07
    momentum: float = 0.5
    weight: float = 0.5  # of the jigsaw term (lambda)
    loss: Literal["nce", "infonce"] = "nce"
    bank_init: Literal["random", "features"] = "random"  # VISSL's random vectors, or the initial features
    input: Literal["video", "images"] = "images"
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    jigsaw_size: int = 255  # the crop the 3 x 3 tiles are cut from
    tile_size: int = 64
    jitter: float = 0.4  # colour-jitter strength of both views (brightness, contrast, saturation; hue / 4)
    grayscale_p: float = 0.2

    def __post_init__(self) -> None:
        if min(self.dim, self.bank_size, self.negatives, self.crop_size, self.jigsaw_size, self.tile_size) < 1:
            raise ValueError("pirl: dim, bank_size, negatives and the crop and tile sizes must be positive")
        if self.tile_size > self.jigsaw_size // 3:
            raise ValueError(f"pirl: tile_size={self.tile_size} exceeds a cell of the {self.jigsaw_size} px crop "
                             f"({self.jigsaw_size // 3} px)")
        if not 0 <= self.weight <= 1 or self.temperature <= 0 or not 0 <= self.momentum < 1:
            raise ValueError("pirl: weight in [0, 1], temperature > 0, momentum in [0, 1)")


class PIRL(SSLMethod):
    """PIRL (see the module docstring). ``forward(batch) -> (loss, metrics)``; reads ``batch["index"]``."""

    Config = PIRLConfig

    def __init__(self, cfg: PIRLConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        self.backbone = build_backbone(cfg.backbone)
        f = self.backbone.num_features
        self.image_head = nn.Linear(f, cfg.dim)
        self.tile_head = nn.Linear(f, cfg.dim)  # each tile's projection, shared
        self.jigsaw_head = nn.Linear(9 * cfg.dim, cfg.dim)
        self.nce = BankNCE(cfg.bank_size, cfg.dim, cfg.negatives, cfg.temperature, cfg.momentum, cfg.loss,
                            cfg.bank_init)
        j = cfg.jitter
        jitter = (j, j, j, j / 4)
        self.image_view = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, color_jitter=jitter,
                                      grayscale_p=cfg.grayscale_p, hflip=0.5)
        self.jigsaw_view = ClipAugment(size=cfg.jigsaw_size, scale=cfg.crop_scale, color_jitter=jitter,
                                       grayscale_p=cfg.grayscale_p, hflip=0.5)

    @property
    def bank(self) -> MemoryBank:
        return self.nce.bank

    def sampler(self) -> Sampler:
        return instance_frame(self.input)

    def encoder(self) -> ResNet:
        return self.backbone

    def embed_jigsaw(self, tiles: Tensor, order: Tensor) -> Tensor:
        """``g``: ``(B, 9, 3, s, s)`` tiles, shuffled by ``order`` ``(B, 9)`` -> ``(B, dim)`` normalised."""
        b = tiles.shape[0]
        shuffled = tiles[torch.arange(b, device=tiles.device)[:, None], order]
        per_tile = self.tile_head(self.backbone(shuffled.flatten(0, 1))).view(b, -1)  # (B, 9 dim), shuffled order
        return F.normalize(self.jigsaw_head(per_tile), dim=1)

    def embed_image(self, frame: Tensor) -> Tensor:
        """``f``: ``(B, 3, 1, H, W)`` float frames -> ``(B, dim)`` normalised features of an augmented view."""
        x = normalize_input(self.image_view(frame)[:, :, 0], "rgb")
        return F.normalize(self.image_head(self.backbone(x)), dim=1)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        index = sample_index(batch, "pirl", "the memory bank's rows")
        self.nce.check(index, "pirl")
        frame = to_float(batch["video"][:, :, :1])
        f = self.embed_image(frame)
        tiles = jigsaw_tiles(self.jigsaw_view(frame), 3, self.cfg.tile_size)[:, :, :, 0]  # (B, 9, 3, s, s)
        tiles = normalize_input(tiles.flatten(0, 1), "rgb").view_as(tiles)
        order = torch.argsort(torch.rand(index.shape[0], 9, device=index.device), dim=1)
        g = self.embed_jigsaw(tiles, order)
        s_jigsaw, s_image = self.nce.scores(index, g), self.nce.scores(index, f)
        self.nce.estimate_z(torch.cat([s_jigsaw, s_image]))
        w = self.cfg.weight
        loss = w * self.nce.loss(s_jigsaw) + (1 - w) * self.nce.loss(s_image)
        if self.training:
            self.bank.stage(index, f)
        return loss, {"embedding_std": embedding_std(f), "jigsaw_image_cos": (f * g).sum(dim=1).mean().detach()}

    def after_step(self, step: int) -> None:
        self.bank.commit()

    def on_epoch_start(self, ctx: EpochContext) -> None:
        self.nce.check_dataset(ctx.num_samples, "pirl")
        fill_banks(ctx, lambda batch: self.embed_image(to_float(batch["video"][:, :, :1])), self.nce)
