"""MoCo v1 and v2: momentum contrast with a queue of negative keys, on video frames or still images.

- MoCo v1: He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020,
  https://arxiv.org/abs/1911.05722 (linear head, temperature 0.07).
- MoCo v2: Chen et al., "Improved Baselines with Momentum Contrastive Learning", 2020,
  https://arxiv.org/abs/2003.04297 (2-layer MLP head, temperature 0.2, blur and stronger colour jitter).

The structure follows the authors' ``moco/builder.py``: a query encoder trained by the optimiser, a key
encoder that is its exponential moving average, a queue of the last K normalised keys as negatives and
InfoNCE with the positive at index 0. Two deliberate orderings differ from the authors' single ``forward``
without changing the maths: the EMA update and the enqueue run in ``after_step`` (after the optimiser), which
is the authors' "update at the start of the next forward" moved one call earlier.

On raw video the positive pair is two frames of one video at most ``max_gap`` apart (frame-level MoCo);
on still images (``input: images``, 1-frame clips) it is two augmentations of the same image.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment, imagenet_normalize, to_float
from vidssl.data.samplers import gap_tuple
from vidssl.engine.distributed import all_gather_no_grad, shuffle_batch, unshuffle_batch
from vidssl.methods.losses import info_nce_logits, top1_positive
from vidssl.models.resnet import ResNet, build_backbone


@dataclass
class MoCoConfig:
    """MoCo hyper-parameters (the ``model:`` section of a run config). Defaults: MoCo v2 on ImageNet-size input."""

    version: Literal[1, 2] = 2
    backbone: str = "resnet18"  # any name in vidssl.models.resnet.BACKBONES
    dim: int = 128  # embedding size, as in the paper
    queue_size: int = 65536  # K; 4096 for CIFAR (PROTOCOLS.md section 3)
    momentum: float = 0.999  # m of the key encoder's EMA; 0.99 for CIFAR
    temperature: float | None = None  # None: the paper's value for the version (v1 0.07, v2 0.2)
    # shuffle-BN across processes (on one process only a local permutation: use split there), split BN, or plain
    bn: Literal["shuffle", "split", "none"] = "shuffle"
    num_splits: int = 8  # sub-batches of split BN (the MoCo CIFAR demo uses 8)
    input: Literal["video", "images"] = "video"
    max_gap: int = 30  # largest frame distance of a video positive pair (about one second at 30 fps)
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.2, 1.0)  # RandomResizedCrop area range, as in both papers
    blur_p: float = 0.5  # v2's Gaussian blur probability; 0 for 32 px images (as the CIFAR recipes)

    def __post_init__(self) -> None:
        if self.version not in (1, 2):
            raise ValueError(f"moco: version must be 1 or 2, got {self.version!r}")
        if self.queue_size < 1 or self.dim < 1 or self.max_gap < 1 or self.num_splits < 1 or self.crop_size < 1:
            raise ValueError("moco: queue_size, dim, max_gap, num_splits and crop_size must be positive")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"moco: momentum must be in [0, 1), got {self.momentum}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"moco: temperature must be positive, got {self.temperature}")


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d that, in training, normalises ``num_splits`` contiguous sub-batches separately.

    Simulates the per-GPU statistics of multi-GPU training on one device (the MoCo CIFAR demo's trick), so
    the query and the (shuffled) key batch do not share BN statistics, which would leak the positive.
    Running statistics are updated with the mean over sub-batches; evaluation is plain BatchNorm2d. A
    subclass with the same parameters and buffers, so state-dict names stay torchvision's.
    """

    def __init__(self, num_features: int, num_splits: int, **kwargs: object) -> None:
        super().__init__(num_features, **kwargs)  # type: ignore[arg-type]
        self.num_splits = num_splits

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, C, H, W)``; N must divide into ``num_splits`` in training."""
        if not self.training:
            return super().forward(x)
        n, c, h, w = x.shape
        s = self.num_splits
        if n % s:
            raise ValueError(f"SplitBatchNorm: batch of {n} does not divide into num_splits={s}")
        xs = x.float().view(s, n // s, c, h * w)  # statistics in fp32 also under autocast, as cuDNN's BN
        mean = xs.mean(dim=(1, 3), keepdim=True)  # (S, 1, C, 1)
        var = xs.var(dim=(1, 3), unbiased=False, keepdim=True)
        y = ((xs - mean) * torch.rsqrt(var + self.eps)).view(n, c, h, w)
        if self.affine:
            y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        y = y.to(x.dtype)
        tracked = self.num_batches_tracked
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                assert tracked is not None
                tracked.add_(1)
                mom = self.momentum if self.momentum is not None else 1.0 / float(tracked)
                count = (n // s) * h * w
                unbiased = var.view(s, c) * (count / max(count - 1, 1))  # BatchNorm keeps the unbiased variance
                self.running_mean.lerp_(mean.view(s, c).mean(0), mom)
                self.running_var.lerp_(unbiased.mean(0), mom)
        return y


def convert_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every ``BatchNorm2d`` in ``module`` (in place) by a :class:`SplitBatchNorm` with its state."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, SplitBatchNorm):
            split = SplitBatchNorm(
                child.num_features, num_splits, eps=child.eps, momentum=child.momentum,
                affine=child.affine, track_running_stats=child.track_running_stats,
            )
            split.load_state_dict(child.state_dict())
            setattr(module, name, split)
        else:
            convert_split_bn(child, num_splits)
    return module


def frame_pair(num_frames: int, rng: np.random.Generator, max_gap: int) -> np.ndarray:
    """Two increasing frame indices whose distance is uniform in ``1..max_gap``. ``(2,)`` int64.

    Videos shorter than ``max_gap + 1`` frames follow the samplers' default short-video policy (clamp).
    """
    gaps = np.arange(1, max_gap + 1)
    return gap_tuple(num_frames, rng, size=2, gaps=gaps.tolist(), probs=np.full(max_gap, 1.0 / max_gap).tolist())


def single_frame(num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Frame 0 (still images are 1-frame clips). ``(1,)`` int64."""
    return np.zeros(1, dtype=np.int64)


class _Encoder(nn.Module):
    """Backbone -> projection head -> L2 normalisation: ``(B, 3, H, W)`` -> ``(B, dim)``."""

    def __init__(self, backbone: ResNet, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.head(self.backbone(x)), dim=1)


class MoCo(nn.Module):
    """MoCo v1/v2 (see the module docstring). ``forward(batch) -> (loss, metrics)``; EMA and queue in ``after_step``."""

    Config = MoCoConfig

    queue: Tensor
    queue_ptr: Tensor
    queue_seen: Tensor

    def __init__(self, cfg: MoCoConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input = cfg.input
        self.temperature = cfg.temperature if cfg.temperature is not None else (0.07 if cfg.version == 1 else 0.2)
        backbone = build_backbone(cfg.backbone)
        if cfg.bn == "split":
            convert_split_bn(backbone, cfg.num_splits)
        nf = backbone.num_features
        head: nn.Module = (
            nn.Linear(nf, cfg.dim) if cfg.version == 1  # v1: the fc layer of the ResNet
            else nn.Sequential(nn.Linear(nf, nf), nn.ReLU(inplace=True), nn.Linear(nf, cfg.dim))  # v2: MLP head
        )
        self.query = _Encoder(backbone, head)
        self.key = copy.deepcopy(self.query)  # starts equal to the query encoder, as in the paper
        self.key.requires_grad_(False)  # trained only by the EMA in after_step
        self.register_buffer("queue", F.normalize(torch.randn(cfg.queue_size, cfg.dim), dim=1))  # (K, dim)
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("queue_seen", torch.zeros((), dtype=torch.long))  # keys enqueued so far
        if cfg.version == 1:
            # MoCo v1: crop, grayscale 0.2, jitter (0.4, 0.4, 0.4, 0.4) always, flip. (v1 applies grayscale
            # before jitter; here jitter comes first, which only differs for the grayscale 20%.)
            self.augment = ClipAugment(
                size=cfg.crop_size, scale=cfg.crop_scale, color_jitter=(0.4, 0.4, 0.4, 0.4), jitter_p=1.0,
                grayscale_p=0.2, hflip=0.5,
            )
        else:  # MoCo v2 / SimCLR augmentation
            self.augment = ClipAugment(
                size=cfg.crop_size, scale=cfg.crop_scale, color_jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8,
                grayscale_p=0.2, blur_p=cfg.blur_p, blur_sigma=(0.1, 2.0), hflip=0.5,
            )
        self._pending: list[Tensor] = []  # keys of this step's training forwards (micro-batches), for after_step

    def sampler(self) -> Callable[[int, np.random.Generator], np.ndarray]:
        """Two frames at most ``max_gap`` apart for video; frame 0 for still images."""
        if self.input == "images":
            return single_frame
        return partial(frame_pair, max_gap=self.cfg.max_gap)

    def encoder(self) -> ResNet:
        """The query backbone (the one to export and evaluate)."""
        return self.query.backbone

    def views(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 ``(B, C, T, H, W)`` -> normalised views ``(B, C, s, s)`` from frame 0 and frame 1 (or 0 if T = 1)."""
        if video.dim() != 5 or video.dtype != torch.uint8:
            got = f"{video.dtype} {tuple(video.shape)}"
            raise ValueError(f"moco: batch['video'] must be uint8 (B, C, T, H, W), got {got}")
        b, t = video.shape[0], video.shape[2]
        frames = torch.cat([video[:, :, :1], video[:, :, min(1, t - 1)].unsqueeze(2)])  # (2B, C, 1, H, W)
        x = imagenet_normalize(self.augment(to_float(frames))[:, :, 0])  # independent draws per view
        return x[:b], x[b:]

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

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor | float]]:
        x_q, x_k = self.views(batch["video"])
        q = self.query(x_q)  # (B, dim)
        k = self._keys(x_k)  # (B, dim)
        logits = info_nce_logits(q, k, self.queue, self.temperature)  # (B, 1 + K), positive at 0
        loss = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))
        if self.training:
            self._pending.append(k.detach())
        fill = min(int(self.queue_seen), self.cfg.queue_size) / self.cfg.queue_size
        return loss, {"top1": top1_positive(logits.detach()), "queue_fill": fill}

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """EMA of the key encoder, ``k = m k + (1 - m) q``, then enqueue the keys of this step's forwards."""
        m = self.cfg.momentum
        for pk, pq in zip(self.key.parameters(), self.query.parameters(), strict=True):
            pk.copy_(m * pk + (1.0 - m) * pq.detach())
        if self._pending:
            self.enqueue(all_gather_no_grad(torch.cat(self._pending)))  # every process's keys, rank order
            self._pending = []

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` ``(N, dim)`` at the pointer, wrapping around; any N (more than K keeps the last K)."""
        size = self.queue.shape[0]
        n = keys.shape[0]
        start = int(self.queue_ptr)
        if n > size:  # only the newest K survive
            start, keys = start + n - size, keys[-size:]
        idx = (start + torch.arange(keys.shape[0], device=self.queue.device)) % size
        self.queue[idx] = keys.to(self.queue.dtype)
        self.queue_ptr.fill_((int(self.queue_ptr) + n) % size)
        self.queue_seen.add_(n)
