"""SeLa: self-labelling by optimal transport, the labels equipartitioned over the clusters, then classification.

Asano, Rupprecht & Vedaldi, "Self-labelling via simultaneous clustering and representation learning", ICLR 2020
(https://arxiv.org/abs/1911.05371; yukimasano/self-label ``cifar.py``, ``scripts/cifar.sh``). Backbone -> ``heads``
linear classifiers over ``num_clusters`` each; the loss is the cross-entropy of every head against its labels,
averaged over heads. Every head's labels start as a random equipartition (sample i gets ``i mod K``, permuted),
as the code's; with ``label_init: features`` every head is instead relabelled from the initial network before the
first step (one pass; the code leaves head ``h`` on its random labels until epoch ``h``, which is nothing in 400
epochs and most of a few-epoch budget: fitting random labels is what a network does worst for its features).
Before every ``label_every``-th epoch one head, in turn (the code's ``nh = epoch % hc``), is relabelled: one pass
over the dataset with the training augmentation and the model in training mode under no gradient (as the code,
which labels from inside its training loop) gives every sample's softmax P over that head's clusters, and
``vidssl.losses.self_label`` solves the transport problem on ``P^lam`` by Sinkhorn-Knopp in float64 to SeLa's
tolerance; each sample's label is the arg-max of its column of the solution.

The metrics record the last relabelling: ``sinkhorn_iterations`` and ``nmi_previous`` (NMI between the head's
new and previous labels). Every process holds the ``(N, K)`` probabilities of one head (float64 while Sinkhorn
runs): full CIFAR at K 128 is 51 MB; ImageNet at K 3000 would need 31 GB, beyond this implementation.
On video a sample is one random frame of a video.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment, to_float
from vidssl.data.views import Sampler
from vidssl.losses import self_label
from vidssl.methods.base import (
    EpochContext,
    Metrics,
    SSLMethod,
    check_clusters,
    follow_saved_shapes,
    instance_frame,
    sample_index,
)
from vidssl.models import ResNet, build_backbone
from vidssl.nn.cluster import nmi
from vidssl.nn.colour import normalize_input


@dataclass
class SeLaConfig:
    """SeLa hyper-parameters (the ``model:`` section). Defaults: the authors' CIFAR script (``scripts/cifar.sh``)."""

    backbone: str = "resnet18"
    heads: int = 10  # hc
    num_clusters: int = 128  # ncl, per head
    lam: float = 10.0  # the code's --lamb (the paper's ImageNet runs: 25)
    tolerance: float = 1e-2  # Sinkhorn's stopping error, as cifar.py
    label_every: int = 1  # epochs between relabellings (cifar.sh: nopts = epochs, once per epoch)
    pass_batch: int = 256
    label_init: Literal["random", "features"] = "random"  # the code's random equipartitions, or every head's own
    input: Literal["video", "images"] = "images"
    crop_size: int = 32
    crop_scale: tuple[float, float] = (0.2, 1.0)
    jitter: float = 0.4  # ColorJitter(0.4, 0.4, 0.4, 0.4), always applied, as cifar.py
    grayscale_p: float = 0.2

    def __post_init__(self) -> None:
        if self.heads < 1 or self.num_clusters < 2 or self.label_every < 1 or self.pass_batch < 1:
            raise ValueError("sela: heads, label_every and pass_batch must be positive, num_clusters >= 2")
        if self.label_init not in ("random", "features"):
            raise ValueError(f"sela: label_init must be 'random' or 'features', got {self.label_init!r}")
        if self.lam <= 0 or self.tolerance <= 0 or self.crop_size < 1:
            raise ValueError("sela: lam, tolerance and crop_size must be positive")


class SeLa(SSLMethod):
    """SeLa (see the module docstring). ``forward(batch) -> (loss, metrics)``; reads ``batch["index"]``."""

    Config = SeLaConfig
    labels: Tensor
    stats: Tensor

    def __init__(self, cfg: SeLaConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        self.backbone = build_backbone(cfg.backbone)
        self.heads = nn.ModuleList([nn.Linear(self.backbone.num_features, cfg.num_clusters) for _ in range(cfg.heads)])
        j = cfg.jitter
        self.augment = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, color_jitter=(j, j, j, min(j, 0.5)),
                                   jitter_p=1.0, grayscale_p=cfg.grayscale_p, hflip=0.5)
        # labels per head (-1: not labelled yet) and the last relabelling's (iterations, NMI with the labels before;
        # -1 until the first, finite as every saved tensor must be)
        self.register_buffer("labels", torch.full((cfg.heads, 1), -1, dtype=torch.long))
        self.register_buffer("stats", torch.tensor([-1.0, -1.0]))
        follow_saved_shapes(self, "labels")

    def sampler(self) -> Sampler:
        return instance_frame(self.input)

    def encoder(self) -> ResNet:
        return self.backbone

    def _features(self, video: Tensor) -> Tensor:
        return self.backbone(normalize_input(self.augment(to_float(video[:, :, :1]))[:, :, 0], "rgb"))

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        index = sample_index(batch, "sela", "their self-labels")
        if self.labels.shape[1] == 1 or int(self.labels[:, index].min()) < 0:
            raise RuntimeError("sela: no self-labels yet; the training loop assigns them in on_epoch_start")
        f = self._features(batch["video"])
        loss = torch.stack([F.cross_entropy(head(f), self.labels[h, index])
                            for h, head in enumerate(self.heads)]).mean()
        metrics: Metrics = {}
        if float(self.stats[0]) >= 0:
            metrics = {"sinkhorn_iterations": float(self.stats[0]), "nmi_previous": float(self.stats[1])}
        return loss, metrics

    @torch.no_grad()
    def on_epoch_start(self, ctx: EpochContext) -> None:
        c = self.cfg
        check_clusters([c.num_clusters], ctx.num_samples, "sela")
        if self.labels.shape[1] != ctx.num_samples:  # a random equipartition per head, as the code starts
            rows = [(torch.arange(ctx.num_samples) % c.num_clusters)[torch.randperm(ctx.num_samples,
                                                                                     generator=ctx.generator)]
                    for _ in range(c.heads)]
            self.labels = torch.stack(rows).to(self.labels.device)
            if c.label_init == "features" and ctx.step == 0:
                self._relabel(ctx, range(c.heads))  # every head, head 0 included: this epoch's turn is taken
                return
        elif ctx.start > 0:
            return  # resumed inside an epoch: this epoch's labels came back with the checkpoint
        if ctx.epoch % c.label_every:
            return
        self._relabel(ctx, [(ctx.epoch // c.label_every) % c.heads])

    def _relabel(self, ctx: EpochContext, heads: Iterable[int]) -> None:
        """Relabel ``heads`` from one pass over the dataset (the backbone's features once, then each head's
        softmax, as the code's ``opt_sk``); ``stats``: the last head's Sinkhorn iterations, the mean NMI of the
        new labels with the previous ones."""
        c = self.cfg
        self.train()  # as the code: labelled from inside its training loop (augmented, BN in training mode)
        features = ctx.collect(lambda batch: self._features(batch["video"]), c.pass_batch)
        iterations, nmis = 0, []
        for h in heads:
            log_p = F.log_softmax(self.heads[h](features), dim=1)
            new, iterations = self_label(log_p, c.lam, c.tolerance)
            new = new.to(self.labels.device)
            nmis.append(nmi(self.labels[h], new))
            self.labels[h] = new
        self.stats = torch.tensor([float(iterations), sum(nmis) / len(nmis)])
