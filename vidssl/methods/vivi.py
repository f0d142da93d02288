"""VIVI: an image representation learned from the hierarchy of video, frames within shots within videos.

Tschannen, Djolonga, Ritter, Mahendran, Houlsby, Gelly & Lucic, "Self-Supervised Learning of Video-Induced Visual
Invariances", CVPR 2020 (https://arxiv.org/abs/1912.02783). No public code exists: what the paper's abstract and
introduction confirm is the hierarchy and what each level is for (frame level: invariance to colour and contrast;
shot level: to object pose and lighting; video level: the relations of scenes across shots); every constant below
is unverified (``../shared/RECIPES.md`` section 4), marked so in the config.

A sample is ``num_shots`` consecutive shots of a video with ``frames_per_shot`` frames each
(``vidssl.data.views.ShotSequence``; a video without enough cuts is split into pseudo-shots of
``pseudo_shot_len`` frames). Every frame is augmented twice (SimCLR's augmentation) and embedded by the trunk and a
projection head. Three losses, each weighted (0 switches a level off, the ablation):

- frame level: the two views of a frame are positives, every other frame view of the batch a negative (NT-Xent);
- shot level: a shot embedding is the pooled (``mean``, or ``attention``: a learned softmax over its frames)
  embedding of its frames; the first and the second half of a shot's frames give two shot embeddings, positives
  for each other, every other shot of the batch (other videos' and the same video's) a negative (NT-Xent);
- video level: ``order``: the shot sequence shown forward or reversed (``order_classes: 2``) or in any of its
  ``num_shots!`` orders (``order_classes: 0``), classified by an MLP on the concatenated shot embeddings;
  ``predict``: an MLP on the first ``num_shots - 1`` shot embeddings predicts the last one's, scored against every
  other video's last shot (InfoNCE); ``none``.

Co-training with labelled images (the paper's VIVI-Co): with a ``cotrain:`` section in the run config (an
ImageFolder, its own batch size and weight) every batch also carries labelled images, ``batch["cotrain"]``; they
are cropped and flipped (the supervised ImageNet augmentation: a random resized crop at scale 0.08-1 and a flip),
embedded by the same trunk and classified by a linear layer, and ``cotrain_weight`` times their cross-entropy is
added to the total. ``cotrain_classes`` and ``cotrain_weight`` follow the cotrain section; the paper's mix of the
two losses is unverified. The encoder is the trunk, an image encoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import permutations
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment, simclr_augment, to_float
from vidssl.data.views import Sampler, ShotSequence
from vidssl.losses import nt_xent
from vidssl.methods.base import Metrics, SSLMethod
from vidssl.models import build_backbone
from vidssl.nn import mlp
from vidssl.nn.colour import normalize_input


@dataclass
class VIVIConfig:
    """VIVI hyper-parameters (the ``model:`` section). Every default is unverified (no public code)."""

    backbone: str = "resnet18"
    input: Literal["video"] = "video"
    num_shots: int = 4
    frames_per_shot: int = 2
    pseudo_shot_len: int | None = 30
    crop_size: int = 128
    crop_scale: tuple[float, float] = (0.2, 1.0)
    projector: tuple[int, ...] = (512, 128)
    pooling: Literal["mean", "attention"] = "mean"
    temperature: float = 0.1
    video_level: Literal["order", "predict", "none"] = "order"
    order_classes: int = 2  # 2: forward or reversed; 0: all num_shots! orders
    frame_weight: float = 1.0
    shot_weight: float = 1.0
    video_weight: float = 1.0
    # VIVI-Co: both follow the run config's cotrain section (0 classes: no co-training, no classifier)
    cotrain_classes: int = 0
    cotrain_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.num_shots < 2 or self.frames_per_shot < 2:
            raise ValueError("vivi: num_shots >= 2 (a video level) and frames_per_shot >= 2 (two halves of a shot)")
        if self.order_classes not in (0, 2):
            raise ValueError(f"vivi: order_classes is 2 (forward / reversed) or 0 (every order), got "
                             f"{self.order_classes}")
        if min(self.frame_weight, self.shot_weight, self.video_weight, self.cotrain_weight) < 0 \
                or self.temperature <= 0 or self.cotrain_classes < 0:
            raise ValueError("vivi: loss weights and cotrain_classes must be >= 0 and temperature > 0")


class VIVI(SSLMethod):
    """VIVI (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = VIVIConfig
    orders: Tensor

    def __init__(self, cfg: VIVIConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        self.backbone = build_backbone(cfg.backbone)
        self.projector = mlp((self.backbone.num_features, *cfg.projector))
        dim = cfg.projector[-1]
        self.attention = nn.Linear(dim, 1) if cfg.pooling == "attention" else None
        k = cfg.num_shots
        orders = [tuple(range(k)), tuple(range(k))[::-1]] if cfg.order_classes == 2 else list(permutations(range(k)))
        self.register_buffer("orders", torch.tensor(orders), persistent=False)
        self.order_head = mlp((k * dim, 512, len(orders))) if cfg.video_level == "order" else None
        self.predictor = mlp(((k - 1) * dim, 512, dim)) if cfg.video_level == "predict" else None
        self.augment = simclr_augment(cfg.crop_size, scale=cfg.crop_scale)
        self.classifier = nn.Linear(self.backbone.num_features, cfg.cotrain_classes) if cfg.cotrain_classes else None
        self.supervised_augment = ClipAugment(size=cfg.crop_size, scale=(0.08, 1.0), hflip=0.5)

    def sampler(self) -> Sampler:
        return ShotSequence(self.cfg.num_shots, self.cfg.frames_per_shot, self.cfg.pseudo_shot_len)

    def encoder(self) -> nn.Module:
        return self.backbone

    def pool(self, frames: Tensor) -> Tensor:
        """Frame embeddings ``(..., F, D)`` -> shot embeddings ``(..., D)``: their mean, or attention weights."""
        if self.attention is None:
            return frames.mean(dim=-2)
        weights = self.attention(frames).softmax(dim=-2)  # (..., F, 1)
        return (weights * frames).sum(dim=-2)

    def video_loss(self, shots: Tensor) -> tuple[Tensor, Tensor]:
        """Shot embeddings ``(B, K, D)`` in temporal order -> the video level's loss and accuracy."""
        b = shots.shape[0]
        if self.order_head is not None:
            target = torch.randint(0, len(self.orders), (b,)).to(shots.device)
            shown = shots[torch.arange(b, device=shots.device)[:, None], self.orders[target]]
            logits = self.order_head(shown.flatten(1))
            return F.cross_entropy(logits, target), (logits.detach().argmax(1) == target).float().mean()
        assert self.predictor is not None
        pred = F.normalize(self.predictor(shots[:, :-1].flatten(1)), dim=1)
        last = F.normalize(shots[:, -1], dim=1)
        logits = pred @ last.t() / self.cfg.temperature
        target = torch.arange(b, device=shots.device)
        return F.cross_entropy(logits, target), (logits.detach().argmax(1) == target).float().mean()

    def cotrain_loss(self, images: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Labelled images ``{"video": (B, 3, 1, H, W) uint8, "label": (B,)}`` -> their cross-entropy under the
        linear classifier on the trunk, and its accuracy."""
        if self.classifier is None:
            raise ValueError("vivi: the batch carries co-training images but model.cotrain_classes is 0 (add a "
                             "cotrain section to the run config; the classes follow it)")
        label = images["label"].long()
        if int(label.min()) < 0 or int(label.max()) >= self.cfg.cotrain_classes:
            raise ValueError(f"vivi: co-training labels must lie in [0, {self.cfg.cotrain_classes}), got "
                             f"{int(label.min())}..{int(label.max())}")
        views = normalize_input(self.supervised_augment(to_float(images["video"]))[:, :, 0], "rgb")
        logits = self.classifier(self.backbone(views))
        return F.cross_entropy(logits, label), (logits.detach().argmax(1) == label).float().mean()

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        cfg = self.cfg
        video = batch["video"]
        k, f = cfg.num_shots, cfg.frames_per_shot
        if video.shape[2] != k * f:
            raise ValueError(f"vivi: needs {k} shots of {f} frames from its sampler, got {video.shape[2]} frames")
        b = video.shape[0]
        frames = to_float(video).transpose(1, 2).reshape(b * k * f, 3, 1, *video.shape[-2:])  # each frame a clip
        views = normalize_input(self.augment(torch.cat([frames, frames]))[:, :, 0], "rgb")  # (2 B K F, 3, S, S)
        z = self.projector(self.backbone(views))  # (2 B K F, D)
        z1, z2 = z.chunk(2)
        metrics: Metrics = {}
        loss = z.new_zeros(())
        if cfg.frame_weight > 0:
            frame = nt_xent(z1, z2, cfg.temperature)
            loss, metrics["loss_frame"] = loss + cfg.frame_weight * frame, frame.detach()
        per_shot = z1.view(b, k, f, -1)  # the first views, (B, K, F, D)
        if cfg.shot_weight > 0:
            half = f // 2
            first, second = self.pool(per_shot[:, :, :half]), self.pool(per_shot[:, :, half:])
            shot = nt_xent(first.flatten(0, 1), second.flatten(0, 1), cfg.temperature)
            loss, metrics["loss_shot"] = loss + cfg.shot_weight * shot, shot.detach()
        if cfg.video_level != "none" and cfg.video_weight > 0:
            vid, acc = self.video_loss(self.pool(per_shot))
            loss, metrics["loss_video"], metrics["acc_video"] = loss + cfg.video_weight * vid, vid.detach(), acc
        if "cotrain" in batch:
            sup, acc = self.cotrain_loss(batch["cotrain"])  # type: ignore[arg-type]
            loss = loss + cfg.cotrain_weight * sup
            metrics["loss_cotrain"], metrics["acc_cotrain"] = sup.detach(), acc
            metrics["chance_cotrain"] = math.log(cfg.cotrain_classes)
        if not metrics:
            raise ValueError("vivi: every level is switched off (all weights 0)")
        metrics["chance_video"] = math.log(len(self.orders)) if cfg.video_level == "order" else math.log(b)
        return loss, metrics
