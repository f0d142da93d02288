"""Exemplar: every training image is its own surrogate class, seen through random transformations.

Dosovitskiy, Fischer, Springenberg, Riedmiller & Brox, "Discriminative Unsupervised Feature Learning with
Exemplar Convolutional Neural Networks", NIPS 2014 / TPAMI 2016 (https://arxiv.org/abs/1406.6909). A seed patch
and its random transformations (translation, scale, rotation: ``vidssl.data.augment.random_affine``; colour and
contrast: colour jitter; a flip) form one class; here the seed patch is the whole training image (the paper's
32 px patches are CIFAR's size; larger images are resized to ``crop_size`` first), on video a random frame of the
video, the video being the instance. Two forms, by ``loss``:

- ``classify`` (the paper): a linear classifier over the ``num_classes`` surrogate classes, one per training
  sample (the dataset's size, checked every epoch), softmax cross-entropy (ln N at chance).
- ``triplet`` (VTAB's Exemplar, Kolesnikov, Zhai & Beyer 2019): ``copies`` transformed copies of each image in the
  batch, embedded by a linear layer to ``dim`` and L2-normalised, the batch-hard triplet loss with ``margin``
  (``vidssl.losses.batch_hard_triplet``; over this process's batch).

``vidssl eval pretext`` scores both forms the same way on held-out images: two transformed copies of each, and
whether the nearest (cosine) of the other copies in the batch is its own (chance 1 / batch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment, centre_crop_clip, random_affine, to_float
from vidssl.losses import batch_hard_triplet
from vidssl.methods.base import EpochContext, Metrics, sample_index
from vidssl.methods.frame_task import FrameTask
from vidssl.models import build_backbone
from vidssl.nn.colour import normalize_input


@dataclass
class ExemplarConfig:
    """Exemplar hyper-parameters (the ``model:`` section). Defaults: the paper's transformations at 32 px."""

    backbone: str = "resnet18_cifar"
    loss: Literal["classify", "triplet"] = "classify"
    num_classes: int = 50000  # classify: one surrogate class per training sample (the dataset's size, checked)
    copies: int = 8  # triplet: transformed copies of each image in the batch (VTAB: 8)
    dim: int = 1000  # triplet: the embedding (unverified)
    margin: float = 0.5  # triplet (unverified)
    input: Literal["video", "images"] = "images"
    crop_size: int = 32
    degrees: float = 20.0  # rotation (the paper: +-20 degrees)
    translate: float = 0.2  # of the size (the paper: +-0.2)
    scale: tuple[float, float] = (0.7, 1.4)  # (the paper: a factor between 0.7 and 1.4)
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # for the paper's contrast and colour steps
    jitter_p: float = 0.8

    def __post_init__(self) -> None:
        if min(self.num_classes, self.dim, self.crop_size) < 1 or self.copies < 2 or self.margin < 0:
            raise ValueError("exemplar: num_classes, dim, crop_size >= 1, copies >= 2, margin >= 0")


class Exemplar(FrameTask):
    """Exemplar (see the module docstring). ``forward(batch) -> (loss, metrics)``; ``classify`` reads
    ``batch["index"]``."""

    Config = ExemplarConfig

    def __init__(self, cfg: ExemplarConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        self.backbone = build_backbone(cfg.backbone)
        f = self.backbone.num_features
        self.head = nn.Linear(f, cfg.num_classes if cfg.loss == "classify" else cfg.dim)
        self.colour = ClipAugment(size=cfg.crop_size, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.5,
                                  color_jitter=cfg.jitter, jitter_p=cfg.jitter_p)

    def transform(self, video: Tensor, copies: int) -> Tensor:
        """``copies`` transformed copies of frame 0 of each sample: ``(copies B, 3, S, S)`` normalised, copy-major."""
        s = self.cfg.crop_size
        frame = to_float(video[:, :, :1]).repeat(copies, 1, 1, 1, 1)
        if frame.shape[-2:] != (s, s):  # the seed patch: the image's centre square at the crop size
            frame = centre_crop_clip(frame, s)
        x = random_affine(self.colour(frame)[:, :, 0], self.cfg.degrees, self.cfg.translate, self.cfg.scale)
        return normalize_input(x, "rgb")

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        b = batch["video"].shape[0]
        if self.cfg.loss == "classify":
            index = sample_index(batch, "exemplar", "the surrogate classes")
            if int(index.max()) >= self.cfg.num_classes:
                raise ValueError(f"exemplar: sample index {int(index.max())} outside model.num_classes="
                                 f"{self.cfg.num_classes} (set it to the dataset's size)")
            logits = self.head(self.backbone(self.transform(batch["video"], 1)))
            loss = F.cross_entropy(logits, index)
            return loss, {"acc": (logits.detach().argmax(dim=1) == index).float().mean()}
        z = F.normalize(self.head(self.backbone(self.transform(batch["video"], self.cfg.copies))), dim=1)
        ids = torch.arange(b, device=z.device).repeat(self.cfg.copies)
        return batch_hard_triplet(z, ids, self.cfg.margin), {"retrieval": _retrieval(z[:b], z[b:2 * b]).mean()}

    def on_epoch_start(self, ctx: EpochContext) -> None:
        if self.cfg.loss == "classify" and ctx.num_samples != self.cfg.num_classes:
            raise ValueError(f"exemplar: the dataset has {ctx.num_samples} samples but model.num_classes is "
                             f"{self.cfg.num_classes}: set model.num_classes={ctx.num_samples}")

    @torch.no_grad()
    def pretext_scores(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        b = batch["video"].shape[0]
        x = self.transform(batch["video"], 2)
        f = self.backbone(x) if self.cfg.loss == "classify" else self.head(self.backbone(x))
        f = F.normalize(f, dim=1)
        return {"score": _retrieval(f[:b], f[b:]), "chance": torch.full((b,), 1 / b, device=f.device)}


def _retrieval(a: Tensor, b: Tensor) -> Tensor:
    """``(B,)`` 1.0 where row i of ``a`` has row i of ``b`` as its nearest (largest dot product), else 0.0."""
    return ((a @ b.T).argmax(dim=1) == torch.arange(a.shape[0], device=a.device)).float()
