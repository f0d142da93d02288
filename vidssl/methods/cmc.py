"""CMC: contrastive multiview coding, the L and ab channels of Lab as two views, each against the other's memory.

Tian, Krishnan & Isola, "Contrastive Multiview Coding", ECCV 2020 (https://arxiv.org/abs/1906.05849;
HobbitLong/CMC ``train_CMC.py``, ``NCE/NCEAverage.py``). One augmented crop in Lab; an L trunk reads channel 0
and an ab trunk channels 1 and 2 (``vidssl.models.ResNet(channels=...)``: the paper splits a ResNet's width
between the two), each followed by a linear layer to ``dim`` and L2 normalisation. A memory bank per view
(``vidssl.methods.base.BankNCE``: one entry per sample, momentum 0.5, its own Z estimated from the first batch):
the L embedding is scored against the ab memory and the ab embedding against the L memory (its own sample
positive, ``negatives`` drawn uniformly, T 0.07), and the loss is the sum of the two NCE terms (``loss: infonce``:
the code's ``--softmax``). Each memory then moves towards its own view's embeddings; both start as random vectors
(the code) or, with ``bank_init: features``, as the initial trunks' embeddings of every sample (``fill_banks``).

``encoder()`` is what the paper's linear probes read: both trunks side by side (``vidssl.models.Concat``: the L and
the ab features concatenated, fed Lab), or the L trunk alone with ``encoder: l`` (as vidssl exported before);
``l_encoder()`` and ``ab_encoder()`` give each trunk. vidssl's Lab input is
MAST's normalisation (``vidssl.nn.colour``), the code's is each channel's range mapped to [-1, 1].
On video a sample is one random frame of a video, the video its instance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment, to_float
from vidssl.data.views import Sampler
from vidssl.methods.base import BankNCE, EpochContext, Metrics, SSLMethod, fill_banks, instance_frame, sample_index
from vidssl.models import Concat, ResNet, build_backbone
from vidssl.nn import embedding_std
from vidssl.nn.colour import InputSpace, normalize_input


@dataclass
class CMCConfig:
    """CMC hyper-parameters (the ``model:`` section). Defaults: the paper's ImageNet recipe (``train_CMC.py``)."""

    backbone: str = "resnet18"  # each view's trunk (the paper: half a ResNet-50 each)
    dim: int = 128  # feat_dim
    bank_size: int = 1281167  # one entry per training sample: the dataset's size (checked each epoch)
    negatives: int = 16384  # nce_k
    temperature: float = 0.07  # nce_t
    momentum: float = 0.5  # nce_m
    loss: Literal["nce", "infonce"] = "nce"
    bank_init: Literal["random", "features"] = "random"  # the code's random vectors, or the initial features
    input: Literal["video", "images"] = "images"
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.2, 1.0)  # the code's RandomResizedCrop(scale=(0.2, 1.))
    encoder: Literal["both", "l"] = "both"  # the exported encoder: L and ab concatenated (the paper's probe), or L

    def __post_init__(self) -> None:
        if min(self.dim, self.bank_size, self.negatives, self.crop_size) < 1:
            raise ValueError("cmc: dim, bank_size, negatives and crop_size must be positive")
        if self.temperature <= 0 or not 0 <= self.momentum < 1:
            raise ValueError("cmc: temperature must be positive and momentum in [0, 1)")


class CMC(SSLMethod):
    """CMC (see the module docstring). ``forward(batch) -> (loss, metrics)``; reads ``batch["index"]``."""

    Config = CMCConfig
    encoder_input: InputSpace = "lab"

    def __init__(self, cfg: CMCConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        config = build_backbone(cfg.backbone).config
        self.l_net = ResNet.from_config({**config, "channels": (0,)})
        self.ab_net = ResNet.from_config({**config, "channels": (1, 2)})
        self.l_head = nn.Linear(self.l_net.num_features, cfg.dim)
        self.ab_head = nn.Linear(self.ab_net.num_features, cfg.dim)
        # memory_l holds the L embeddings (the ab view's targets), memory_ab the ab ones (the L view's)
        self.memory_l = BankNCE(cfg.bank_size, cfg.dim, cfg.negatives, cfg.temperature, cfg.momentum, cfg.loss,
                                 cfg.bank_init)
        self.memory_ab = BankNCE(cfg.bank_size, cfg.dim, cfg.negatives, cfg.temperature, cfg.momentum, cfg.loss,
                                 cfg.bank_init)
        self.augment = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, hflip=0.5)

    def sampler(self) -> Sampler:
        return instance_frame(self.input)

    def encoder(self) -> nn.Module:
        return Concat([self.l_net, self.ab_net]) if self.cfg.encoder == "both" else self.l_net

    def l_encoder(self) -> ResNet:
        return self.l_net

    def ab_encoder(self) -> ResNet:
        return self.ab_net

    def embed(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The L and ab embeddings ``(B, dim)`` each, normalised, of one augmented view of each sample."""
        x = normalize_input(self.augment(to_float(batch["video"][:, :, :1]))[:, :, 0], "lab")
        return F.normalize(self.l_head(self.l_net(x)), dim=1), F.normalize(self.ab_head(self.ab_net(x)), dim=1)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        index = sample_index(batch, "cmc", "the memory banks' rows")
        self.memory_l.check(index, "cmc")
        z_l, z_ab = self.embed(batch)
        loss = self.memory_ab.loss(self.memory_ab.scores(index, z_l)) + \
            self.memory_l.loss(self.memory_l.scores(index, z_ab))
        if self.training:
            self.memory_l.bank.stage(index, z_l)
            self.memory_ab.bank.stage(index, z_ab)
        return loss, {"embedding_std_l": embedding_std(z_l), "embedding_std_ab": embedding_std(z_ab)}

    def after_step(self, step: int) -> None:
        self.memory_l.bank.commit()
        self.memory_ab.bank.commit()

    def on_epoch_start(self, ctx: EpochContext) -> None:
        self.memory_l.check_dataset(ctx.num_samples, "cmc")
        fill_banks(ctx, lambda batch: torch.cat(self.embed(batch), dim=1), self.memory_l, self.memory_ab)
