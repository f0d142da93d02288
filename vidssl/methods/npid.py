"""NPID: non-parametric instance discrimination, every image its own class, against a memory bank.

Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", CVPR 2018
(https://arxiv.org/abs/1805.01978; zhirongw/lemniscate.pytorch ``lib/NCEAverage.py``, ``lib/NCECriterion.py``).
Backbone -> linear layer to 128 -> L2 normalisation. A memory bank holds one entry per training sample
(``vidssl.nn.MemoryBank``, momentum 0.5, gathered across processes); sample i scores its own entry and K entries
drawn uniformly, ``exp(v . f / T) / Z``, and the noise-contrastive loss tells them apart (``vidssl.losses.nce``):
the normalising constant Z is estimated once, from the first batch, as the authors' code (``Z = mean(exp(s /
T)) N``), and then kept (a buffer: checkpoints carry it). ``loss: infonce`` is the softmax form over the same
K + 1 scores (the option the paper's follow-ups use). The bank's entries move after each step (``after_step``);
they start as random vectors (the authors' code) or, with ``bank_init: features``, as the initial network's
features of every sample, one pass before the first step (``vidssl.methods.base.fill_banks``).

Positives are instances: on video a sample is one frame of one video, its index the video's (a video is its own
class, as frame-level instance discrimination); ``bank_size`` must be the dataset's size (checked each epoch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment, to_float
from vidssl.data.views import Sampler
from vidssl.methods.base import BankNCE, EpochContext, Metrics, SSLMethod, fill_banks, instance_frame, sample_index
from vidssl.models import ResNet, build_backbone
from vidssl.nn import Branch, MemoryBank, embedding_std
from vidssl.nn.colour import normalize_input


@dataclass
class NPIDConfig:
    """NPID hyper-parameters (the ``model:`` section). Defaults: the authors' CIFAR script (``cifar.py``)."""

    backbone: str = "resnet18_cifar"
    dim: int = 128
    bank_size: int = 50000  # one entry per training sample: the dataset's size
    negatives: int = 4096  # K
    temperature: float = 0.1  # CIFAR (ImageNet: 0.07)
    momentum: float = 0.5  # of the memory bank
    loss: Literal["nce", "infonce"] = "nce"
    bank_init: Literal["random", "features"] = "random"  # the authors' random vectors, or the initial features
    input: Literal["video", "images"] = "images"
    crop_size: int = 32
    crop_scale: tuple[float, float] = (0.2, 1.0)
    hflip: float = 0.0  # the authors' CIFAR transform has no flip (RECIPES.md section 2)

    def __post_init__(self) -> None:
        if min(self.dim, self.bank_size, self.negatives, self.crop_size) < 1:
            raise ValueError("npid: dim, bank_size, negatives and crop_size must be positive")
        if self.temperature <= 0 or not 0 <= self.momentum < 1:
            raise ValueError("npid: temperature must be positive and momentum in [0, 1)")


class NPID(SSLMethod):
    """NPID (see the module docstring). ``forward(batch) -> (loss, metrics)``; reads ``batch["index"]``."""

    Config = NPIDConfig

    def __init__(self, cfg: NPIDConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        backbone = build_backbone(cfg.backbone)
        self.net = Branch(backbone, nn.Linear(backbone.num_features, cfg.dim))
        self.nce = BankNCE(cfg.bank_size, cfg.dim, cfg.negatives, cfg.temperature, cfg.momentum, cfg.loss,
                            cfg.bank_init)
        # the authors' CIFAR augmentation: crop (0.2, 1), jitter 0.4 x 4 always, grayscale 0.2
        self.augment = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, color_jitter=(0.4, 0.4, 0.4, 0.4),
                                   jitter_p=1.0, grayscale_p=0.2, hflip=cfg.hflip)

    @property
    def bank(self) -> MemoryBank:
        return self.nce.bank

    @property
    def z(self) -> Tensor:
        return self.nce.z

    def sampler(self) -> Sampler:
        """One frame: of a still image, or a random one of a video (the video is the instance)."""
        return instance_frame(self.input)

    def encoder(self) -> ResNet:
        return self.net.backbone  # type: ignore[return-value]

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        index = sample_index(batch, "npid", "the memory bank's rows")
        self.nce.check(index, "npid")
        f = self.embed(batch)
        loss = self.nce.loss(self.nce.scores(index, f))  # (B, 1 + K) scores; the first batch fixes Z
        if self.training:
            self.bank.stage(index, f)
        return loss, {"embedding_std": embedding_std(f), "log_z": math.log(max(float(self.z), 1e-300))}

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """``(B, dim)`` normalised features of an augmented view of each sample."""
        x = normalize_input(self.augment(to_float(batch["video"][:, :, :1]))[:, :, 0], "rgb")
        return F.normalize(self.net(x), dim=1)

    def after_step(self, step: int) -> None:
        self.bank.commit()

    def on_epoch_start(self, ctx: EpochContext) -> None:
        self.nce.check_dataset(ctx.num_samples, "npid")
        fill_banks(ctx, self.embed, self.nce)
