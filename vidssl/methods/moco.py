"""MoCo v1 and v2: momentum contrast with a queue of negative keys, on video frames or still images.

- MoCo v1: He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020,
  https://arxiv.org/abs/1911.05722 (linear head, temperature 0.07).
- MoCo v2: Chen et al., "Improved Baselines with Momentum Contrastive Learning", 2020,
  https://arxiv.org/abs/2003.04297 (2-layer MLP head, temperature 0.2, blur and stronger colour jitter).

As the authors' ``moco/builder.py``: a query encoder trained by the optimiser, a key encoder that is its
exponential moving average, a queue of the last K normalised keys as negatives, InfoNCE with the positive at
index 0. The EMA update and the enqueue run in ``after_step`` (after the optimiser step): the authors'
"update at the start of the next forward" moved one call earlier, the same maths.

Positives (``vidssl.data.views``): on raw video two frames of one video at most ``max_gap`` apart
(frame-level MoCo); on still images two augmentations of one image.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import moco_v1_augment, moco_v2_augment
from vidssl.data.samplers import frame_pair
from vidssl.data.views import FrameSampler, Sampler, StillFrame, TwoViews
from vidssl.engine.distributed import shuffle_batch, unshuffle_batch
from vidssl.losses import info_nce_logits, top1_positive
from vidssl.methods.base import Metrics, SSLMethod
from vidssl.models import ResNet, build_backbone
from vidssl.nn import Queue, convert_split_bn, ema_update_, embedding_std, key_gaps, mlp


@dataclass
class MoCoConfig:
    """MoCo hyper-parameters (the ``model:`` section of a run config). Defaults: MoCo v2 on ImageNet-size input."""

    version: Literal[1, 2] = 2
    backbone: str = "resnet18"  # any name in vidssl.models.BACKBONES
    dim: int = 128  # embedding size, as in the paper
    queue_size: int = 65536  # K; 4096 for CIFAR (PROTOCOLS.md section 3)
    momentum: float = 0.999  # m of the key encoder's EMA; 0.99 for CIFAR
    temperature: float | None = None  # None: the paper's value for the version (v1 0.07, v2 0.2)
    # shuffle-BN across processes (on one process only a local permutation: use split there), split BN, or plain
    bn: Literal["shuffle", "split", "none"] = "shuffle"
    num_splits: int = 8  # sub-batches of split BN (the MoCo CIFAR demo uses 8)
    input: Literal["video", "images"] = "video"  # follows data.kind unless given
    max_gap: int = 30  # largest frame distance of a video positive pair (about one second at 30 fps)
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.2, 1.0)  # RandomResizedCrop area range, as in both papers
    blur_p: float = 0.5  # v2's Gaussian blur probability; 0 for 32 px images (as the CIFAR recipes)
    # vidssl's, not the authors': the step's other keys (all processes') join the queue as negatives, so that telling
    # this step's keys from the queue's older ones stops paying (docs/results.md, "Why MoCo v2 sat below random")
    batch_negatives: bool = False

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise ValueError(f"moco: version must be 1 or 2, got {self.version!r}")
        if self.queue_size < 1 or self.dim < 1 or self.max_gap < 1 or self.num_splits < 1 or self.crop_size < 1:
            raise ValueError("moco: queue_size, dim, max_gap, num_splits and crop_size must be positive")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"moco: momentum must be in [0, 1), got {self.momentum}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"moco: temperature must be positive, got {self.temperature}")


class _Encoder(nn.Module):
    """Backbone -> projection head -> L2 normalisation: ``(B, 3, H, W)`` -> ``(B, dim)``."""

    def __init__(self, backbone: ResNet, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=1)


class MoCo(SSLMethod):
    """MoCo v1/v2 (see the module docstring). ``forward(batch) -> (loss, metrics)``; EMA and queue in ``after_step``."""

    Config = MoCoConfig

    def __init__(self, cfg: MoCoConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        self.temperature = cfg.temperature if cfg.temperature is not None else (0.07 if cfg.version == 1 else 0.2)
        backbone = build_backbone(cfg.backbone)
        if cfg.bn == "split":
            convert_split_bn(backbone, cfg.num_splits)
        nf = backbone.num_features
        head = mlp((nf, cfg.dim)) if cfg.version == 1 else mlp((nf, nf, cfg.dim))  # v1: linear; v2: 2-layer MLP
        self.query = _Encoder(backbone, head)
        self.key = copy.deepcopy(self.query).requires_grad_(False)  # starts equal; trained only by the EMA
        self.queue = Queue(cfg.queue_size, cfg.dim)
        self.views = TwoViews(moco_v1_augment(cfg.crop_size, cfg.crop_scale) if cfg.version == 1
                              else moco_v2_augment(cfg.crop_size, cfg.crop_scale, cfg.blur_p))

    def sampler(self) -> Sampler:
        """Two frames at most ``max_gap`` apart for video; frame 0 for still images."""
        return StillFrame() if self.input == "images" else FrameSampler(frame_pair, {"max_gap": self.cfg.max_gap})

    def encoder(self) -> ResNet:
        """The query backbone (the one to export and evaluate)."""
        return self.query.backbone

    @torch.no_grad()
    def _keys(self, x: Tensor) -> Tensor:
        """Key embeddings ``(B, dim)``; the batch is shuffled around the key encoder so BN cannot cheat."""
        if self.cfg.bn == "shuffle":
            xs, idx = shuffle_batch(x)  # across processes; a local permutation on one
            return unshuffle_batch(self.key(xs), idx)
        if self.cfg.bn == "split":
            perm = torch.randperm(x.shape[0], device=x.device)
            return self.key(x[perm])[torch.argsort(perm)]
        return self.key(x)

    def contrast(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Metrics]:
        """The instance loss: ``(InfoNCE, q, metrics)``, ``q`` the ``(B, dim)`` normalised queries; stages the
        keys for the queue (PCL adds its prototype term to the same queries)."""
        x_q, x_k = self.views(batch["video"])
        q, k = self.query(x_q), self._keys(x_k)  # (B, dim) each
        logits = info_nce_logits(q, k, self.queue.keys, self.temperature, self.cfg.batch_negatives)  # positive at 0
        loss = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
        if self.training:
            self.queue.stage(k)
        return loss, q, {"top1": top1_positive(logits.detach()), "queue_fill": self.queue.fill, **self._monitors(
            q.detach(), k, logits.detach()[:, -self.queue.keys.shape[0]:] * self.temperature)}

    @staticmethod
    def _monitors(q: Tensor, k: Tensor, queue_sim: Tensor) -> Metrics:
        """Collapse and shortcut monitors (:func:`vidssl.nn.key_gaps`), the queue's similarities read off the logits."""
        if q.shape[0] < 2:
            return {}
        return {"embedding_std": embedding_std(q), **key_gaps(q @ k.t(), queue_sim)}

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        loss, _, metrics = self.contrast(batch)
        return loss, metrics

    def after_step(self, step: int) -> None:
        """EMA of the key encoder, ``k = m k + (1 - m) q``, then enqueue every process's keys of this step."""
        ema_update_(self.key, self.query, self.cfg.momentum)
        self.queue.commit()
