"""Video Clip Order Prediction: which of the 3! orders three shuffled clips are in.

Xu, Xiao, Zhao, Shao, Xie & Zhuang, "Self-supervised Spatiotemporal Learning via Video Clip Order Prediction", CVPR
2019 (https://arxiv.org/abs/1904.00781; xudejing/video-clip-order-prediction). Three consecutive clips of
``clip_len`` frames, ``gap`` frames apart (``clip_sequence``; the paper: 16 frames, gap 8, inside one shot here),
are shuffled by one of the 3! = 6 permutations (the label, in ``itertools.permutations`` order) and each is encoded
by a clip trunk: torchvision's ``r3d_18`` (``backbone: r3d_18``, the paper's strongest: UCF101 64.9) or the 2D trunk
on each frame with the features averaged over the clip (``backbone: resnet18``, which ``vidssl eval davis`` and
``vidssl eval knn`` then accept). The pairwise head (``vidssl.nn.PairwiseHead``): each pair of clip features
concatenated through one shared layer (512, ReLU), the three pair features concatenated, dropout 0.5, and the
6-way classifier (chance ln 6 = 1.7918). All frames of a sample share one crop and flip.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import permutations

import torch
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment
from vidssl.data.samplers import clip_sequence
from vidssl.methods.temporal import TemporalConfig, TemporalTask
from vidssl.models.registry import VIDEO_BACKBONES
from vidssl.nn import PairwiseHead
from vidssl.nn.colour import normalize_input


@dataclass
class VCOPConfig(TemporalConfig):
    """VCOP hyper-parameters (the ``model:`` section). Defaults: the authors' code, with the 2D trunk."""

    num_clips: int = 3
    clip_len: int = 16
    stride: int = 1
    gap: int = 8
    crop_size: int = 112
    pair_dim: int = 512
    dropout: float = 0.5

    def __post_init__(self) -> None:
        self.check("vcop")
        if not 2 <= self.num_clips <= 5 or self.clip_len < 1 or self.stride < 1 or self.gap < 0:
            raise ValueError("vcop: 2 <= num_clips <= 5 (num_clips! classes), clip_len, stride >= 1, gap >= 0")


class VCOP(TemporalTask):
    """VCOP (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = VCOPConfig
    orders: Tensor

    def __init__(self, cfg: VCOPConfig) -> None:
        clip_trunk = cfg.backbone in VIDEO_BACKBONES
        super().__init__(cfg, image_trunk=not clip_trunk)
        self.clip_trunk = VIDEO_BACKBONES[cfg.backbone]() if clip_trunk else None
        self.register_buffer("orders", torch.tensor(list(permutations(range(cfg.num_clips)))), persistent=False)
        self.num_classes = int(self.orders.shape[0])
        self.use_sampler(clip_sequence, num_clips=cfg.num_clips, length=cfg.clip_len, stride=cfg.stride, gap=cfg.gap)
        self.augment = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, hflip=cfg.hflip)
        dim = self.clip_trunk.num_features if self.clip_trunk is not None else self.backbone.num_features
        self.head = PairwiseHead(dim, cfg.pair_dim, cfg.num_clips, self.num_classes, dropout=cfg.dropout)

    def encoder(self) -> nn.Module:  # type: ignore[override]
        """The clip trunk (``r3d_18``) or the 2D trunk."""
        return self.clip_trunk if self.clip_trunk is not None else self.backbone

    def clip_features(self, clips: Tensor) -> Tensor:
        """Clips ``(B, K, 3, L, S, S)`` in [0, 1] -> ``(B, K, D)``."""
        b, k = clips.shape[:2]
        if self.clip_trunk is not None:
            feats: Tensor = self.clip_trunk(normalize_input(clips.flatten(0, 1), "rgb"))
            return feats.view(b, k, -1)
        frames = clips.transpose(2, 3).flatten(1, 2)  # (B, K L, 3, S, S)
        return self.embed(frames).view(b, k, clips.shape[3], -1).mean(2)

    def task(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        video = batch["video"]
        k, length = self.cfg.num_clips, self.cfg.clip_len
        if video.shape[2] != k * length:
            raise ValueError(f"vcop: needs {k} clips of {length} frames from its sampler, got {video.shape[2]}")
        x = self.augment(self.frames(video))  # (B, 3, K L, S, S)
        b = x.shape[0]
        clips = x.view(b, 3, k, length, *x.shape[3:]).transpose(1, 2)  # (B, K, 3, L, S, S) in temporal order
        target = torch.randint(0, self.num_classes, (b,)).to(x.device)
        order = self.orders[target]  # position i shows clip order[i]
        shown = clips[torch.arange(b, device=x.device)[:, None], order]
        return self.head(self.center(self.clip_features(shown))), target
