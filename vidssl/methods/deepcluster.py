"""DeepCluster: k-means of the dataset's features every epoch, the cluster indices the next epoch's class labels.

v1 (``version: 1``): Caron et al., "Deep Clustering for Unsupervised Learning of Visual Features", ECCV 2018
(https://arxiv.org/abs/1807.05520; facebookresearch/deepcluster ``main.py``, ``clustering.py``). Before every
epoch one pass over the dataset computes each sample's feature (the backbone, then the optional ``projector``
MLP, on the un-augmented image, in eval mode as the code's ``compute_features``); the features are PCA-whitened
to ``pca_dim``, L2-normalised (``preprocess_features``) and clustered into ``num_clusters`` by k-means
(``vidssl.nn.cluster.kmeans``, faiss's algorithm). The top layer (a linear classifier over the clusters) is
re-initialised (weights N(0, 0.01), bias 0) and its optimiser state dropped, and the epoch trains backbone and
top layer by cross-entropy on the cluster labels of augmented crops. The code draws the epoch's samples
uniformly over clusters (``UnifLabelSampler``); here each sample's loss is weighted by ``N / (k |C|)``
(``balancing_weights``), which has the same expected gradient without changing the data order.

v2 (``version: 2``, ``configs/deepcluster_v2_*.yaml``): Caron et al. 2020, the SwAV paper's DeepCluster-v2
(facebookresearch/swav ``main_deepclusterv2.py``): backbone -> projector (BN, ReLU) -> L2 normalisation -> one
prototype layer per entry of ``num_clusters`` (3 x 3000), scores over ``temperature``. A memory holds every
sample's embedding of each crop in ``crops_for_assign`` from the last epoch (filled by a first pass before epoch
0, as the code's ``init_memory``); before every epoch, head j's spherical k-means runs on crop ``j mod 2``'s
memory, its centroids become head j's prototypes (never trained: ``before_step`` drops their gradient) and its
assignments the labels; the loss is the cross-entropy of every crop against them, averaged over crops and heads.

Both record the clustering's health in the metrics: ``cluster_entropy`` (the entropy of the cluster sizes over
ln k: 1 for equal clusters, near 0 when one cluster takes everything, the collapse that balancing prevents) and
``nmi_previous`` (NMI between this epoch's and the last epoch's assignments, the paper's stability curve).
On video a sample is one random frame of a video (v1) or two frames at most ``max_gap`` apart (v2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment, simclr_augment, to_float
from vidssl.data.views import MultiCrop, Sampler
from vidssl.methods.base import (
    EpochContext,
    Metrics,
    SSLMethod,
    centre_view,
    check_clusters,
    follow_saved_shapes,
    instance_frame,
    positive_pair,
    sample_index,
)
from vidssl.models import ResNet, build_backbone
from vidssl.nn import MemoryBank, embedding_std, mlp
from vidssl.nn.cluster import balancing_weights, kmeans, nmi, pca_whiten
from vidssl.nn.colour import normalize_input


@dataclass
class DeepClusterConfig:
    """DeepCluster hyper-parameters (the ``model:`` section). Defaults: v1's ImageNet recipe on a ResNet-18."""

    version: Literal[1, 2] = 1
    backbone: str = "resnet18"
    projector: tuple[int, ...] = ()  # v1: MLP sizes after the backbone (() = the pooled features); v2: (2048, 128)
    num_clusters: tuple[int, ...] = (10000,)  # v1: one k; v2: one k per prototype head
    kmeans_iters: int = 20  # v1: DeepCluster's run_kmeans (faiss niter); v2: 10
    pca_dim: int = 256  # v1 only
    temperature: float = 0.1  # v2 only
    crops_for_assign: tuple[int, ...] = (0, 1)  # v2: the crops whose memory is clustered
    pass_batch: int = 256  # samples per batch of the epoch pass
    input: Literal["video", "images"] = "images"
    max_gap: int = 30  # v2 on video
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    num_local: int = 0  # v2: multi-crop's small crops (the paper: 6 of 96 px)
    local_size: int = 96
    local_scale: tuple[float, float] = (0.05, 0.14)
    strength: float = 1.0  # v2's colour-jitter strength (v1 has none: crop and flip only, as the code)
    blur_p: float = 0.5  # v2

    def __post_init__(self) -> None:
        if not self.num_clusters or min(self.num_clusters) < 2:
            raise ValueError("deepcluster: num_clusters needs at least one entry, each >= 2")
        if self.version == 1 and len(self.num_clusters) != 1:
            raise ValueError(f"deepcluster: v1 has one clustering, got num_clusters={self.num_clusters}")
        if self.version == 2 and not self.projector:
            raise ValueError("deepcluster: v2 needs a projector (the paper: [2048, 128])")
        if self.kmeans_iters < 1 or self.pca_dim < 1 or self.pass_batch < 1 or self.temperature <= 0:
            raise ValueError("deepcluster: kmeans_iters, pca_dim, pass_batch and temperature must be positive")
        if not self.crops_for_assign or any(c not in (0, 1) for c in self.crops_for_assign):
            raise ValueError(f"deepcluster: crops_for_assign names global crops 0 and 1, got {self.crops_for_assign}")
        if min(self.projector, default=1) < 1 or self.max_gap < 1 or self.num_local < 0:
            raise ValueError("deepcluster: projector sizes and max_gap must be positive, num_local >= 0")


class DeepCluster(SSLMethod):
    """DeepCluster v1 or v2 (see the module docstring). ``forward(batch) -> (loss, metrics)``; reads the index."""

    Config = DeepClusterConfig
    labels: Tensor
    weights: Tensor
    stats: Tensor

    def __init__(self, cfg: DeepClusterConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        self.backbone = build_backbone(cfg.backbone)
        dims = (self.backbone.num_features, *cfg.projector)
        feat = dims[-1]
        if cfg.version == 1:
            self.head: nn.Module = mlp(dims) if cfg.projector else nn.Identity()
            self.top = nn.Linear(feat, cfg.num_clusters[0])
            self.augment: nn.Module = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, hflip=0.5)
        else:
            self.head = mlp(dims, bn=True)
            self.prototypes = nn.ModuleList([nn.Linear(feat, k, bias=False) for k in cfg.num_clusters])
            aug = simclr_augment(cfg.crop_size, cfg.crop_scale, cfg.strength, cfg.blur_p)
            self.augment = MultiCrop(aug, simclr_augment(cfg.local_size, cfg.local_scale, cfg.strength, cfg.blur_p),
                                     2, cfg.num_local)
            self.memory = nn.ModuleList([MemoryBank(1, feat, 0.0) for _ in cfg.crops_for_assign])
        # the samples' cluster labels per head (-1: not clustered yet), v1's balancing weights, and the
        # last clustering's (cluster entropy, NMI with the one before; -1 until measured, finite as every saved
        # tensor must be): buffers, so a resumed run keeps them
        self.register_buffer("labels", torch.full((len(cfg.num_clusters), 1), -1, dtype=torch.long))
        self.register_buffer("weights", torch.ones(1))
        self.register_buffer("stats", torch.tensor([-1.0, -1.0]))
        follow_saved_shapes(self, "labels", "weights", "memory.*.bank")

    def sampler(self) -> Sampler:
        if self.cfg.version == 2:
            return positive_pair(self.input, self.cfg.max_gap)
        return instance_frame(self.input)

    def encoder(self) -> ResNet:
        return self.backbone

    def _embed(self, x: Tensor) -> Tensor:
        z = self.head(self.backbone(x))
        return F.normalize(z, dim=1) if self.cfg.version == 2 else z

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        index = sample_index(batch, "deepcluster", "their cluster labels")
        if self.labels.shape[1] == 1 or int(self.labels[0, index].min()) < 0:
            raise RuntimeError("deepcluster: no cluster labels yet; the training loop clusters in on_epoch_start")
        if self.cfg.version == 1:
            x = normalize_input(self.augment(to_float(batch["video"][:, :, :1]))[:, :, 0], "rgb")
            z = self._embed(x)
            logits = self.top(F.relu(z) if self.cfg.projector else z)
            per_sample = F.cross_entropy(logits, self.labels[0, index], reduction="none")
            loss = (per_sample * self.weights[index]).mean()
            std = embedding_std(z)
        else:
            crops = self.augment(batch["video"])
            b = crops[0].shape[0]
            parts = [self.backbone(torch.cat(crops[:2]))]
            if self.cfg.num_local:
                parts.append(self.backbone(torch.cat(crops[2:])))
            z = F.normalize(self.head(torch.cat(parts)), dim=1)
            terms = []
            for j, proto in enumerate(self.prototypes):
                target = self.labels[j, index].repeat(len(crops))
                terms.append(F.cross_entropy(proto(z) / self.cfg.temperature, target))
            loss = torch.stack(terms).mean()
            if self.training:
                for bank, crop in zip(self.memory, self.cfg.crops_for_assign, strict=True):
                    assert isinstance(bank, MemoryBank)
                    bank.stage(index, z[crop * b:(crop + 1) * b])
            std = embedding_std(z[:b])
        metrics: Metrics = {"embedding_std": std}
        if float(self.stats[0]) >= 0:
            metrics["cluster_entropy"] = float(self.stats[0])
        if float(self.stats[1]) >= 0:  # from the second clustering on
            metrics["nmi_previous"] = float(self.stats[1])
        return loss, metrics

    def before_step(self, step: int) -> None:
        """v2's prototypes are the k-means centroids, never trained (the code cancels their gradient)."""
        if self.cfg.version == 2:
            for proto in self.prototypes:
                assert isinstance(proto, nn.Linear)
                proto.weight.grad = None

    def after_step(self, step: int) -> None:
        if self.cfg.version == 2:
            for bank in self.memory:
                assert isinstance(bank, MemoryBank)
                bank.commit()

    @torch.no_grad()
    def on_epoch_start(self, ctx: EpochContext) -> None:
        c = self.cfg
        if ctx.start > 0 and self.labels.shape[1] == ctx.num_samples and int(self.labels.min()) >= 0:
            return  # resumed inside an epoch: its clusters came back with the checkpoint
        check_clusters(c.num_clusters, ctx.num_samples, "deepcluster")
        self.eval()
        if c.version == 1:
            def features(batch: dict[str, Tensor]) -> Tensor:
                return self._embed(centre_view(batch["video"], c.crop_size))

            # at most D axes, and at most N - 1 carry variance (a dataset smaller than pca_dim)
            dim = max(1, min(c.pca_dim, self.top.in_features, ctx.num_samples - 1))
            feats = pca_whiten(ctx.collect(features, c.pass_batch), dim)
            _, assign = kmeans(feats, c.num_clusters[0], c.kmeans_iters, generator=ctx.generator)
            new = assign[None]
            self.weights = balancing_weights(assign, c.num_clusters[0]).to(self.labels.device)
            self.top.weight.normal_(0, 0.01)
            self.top.bias.zero_()
            ctx.forget(self.top.parameters())
        else:
            memory = [bank for bank in self.memory if isinstance(bank, MemoryBank)]
            if memory[0].bank.shape[0] != ctx.num_samples:  # the first epoch: the code's init_memory pass
                def crops(batch: dict[str, Tensor]) -> Tensor:
                    views = self.augment(batch["video"])
                    return torch.stack([self._embed(views[crop]) for crop in c.crops_for_assign], dim=1)

                filled = ctx.collect(crops, c.pass_batch)
                for i, bank in enumerate(memory):
                    bank.bank = F.normalize(filled[:, i], dim=1).to(bank.bank.device)
            rows = []
            for j, (k, proto) in enumerate(zip(c.num_clusters, self.prototypes, strict=True)):
                assert isinstance(proto, nn.Linear)
                centroids, assign = kmeans(memory[j % len(memory)].bank, k, c.kmeans_iters, spherical=True,
                                           generator=ctx.generator)
                proto.weight.copy_(centroids)
                rows.append(assign)
            new = torch.stack(rows)
        new = new.to(self.labels.device)
        previous = self.labels[0] if self.labels.shape[1] == ctx.num_samples else None
        sizes = torch.bincount(new[0], minlength=c.num_clusters[0]).double() / ctx.num_samples
        entropy = float(-(sizes[sizes > 0] * sizes[sizes > 0].log()).sum()) / math.log(c.num_clusters[0])
        self.stats = torch.tensor([entropy, nmi(previous, new[0]) if previous is not None else -1.0])
        self.labels = new
