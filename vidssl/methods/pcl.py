"""PCL: prototypical contrastive learning, MoCo's instance loss plus ProtoNCE over k-means prototypes.

Li, Zhou, Xiong & Hoi, "Prototypical Contrastive Learning of Unsupervised Representations", ICLR 2021
(https://arxiv.org/abs/2005.04966; salesforce/PCL ``main_pcl.py``, ``pcl/builder.py``). MoCo v2 underneath
(``vidssl.methods.moco``: query and momentum key encoders, a queue of keys, InfoNCE). For the first
``warmup_epochs`` epochs the loss is MoCo's alone. From then on, before every epoch, one pass over the dataset
embeds every un-augmented sample with the momentum encoder; for each entry of ``num_clusters`` a k-means
(Euclidean on the normalised embeddings, the best of ``kmeans_restarts``, as the code's faiss ``nredo``) gives the
samples' clusters, the normalised centroids (the prototypes), and each prototype's concentration phi (the mean
distance of its members over ``log(n + 10)``; clusters of one sample take the largest; clipped to the 10th-90th
percentile and rescaled to mean ``temperature``). The loss adds the mean over clusterings of ProtoNCE
(``vidssl.losses.proto_nce``): each query against its own prototype and ``proto_negatives`` prototypes no sample of
the batch belongs to, each logit divided by its prototype's phi.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vidssl.losses import proto_nce
from vidssl.methods.base import EpochContext, Metrics, centre_view, check_clusters, follow_saved_shapes, sample_index
from vidssl.methods.moco import MoCo, MoCoConfig
from vidssl.nn.cluster import kmeans


@dataclass
class PCLConfig(MoCoConfig):
    """PCL hyper-parameters (the ``model:`` section): MoCo v2's and the clustering's. Defaults: the paper's
    ImageNet recipe (``main_pcl.py``: queue 16384, m 0.999, T 0.2, clusters 25k/50k/100k, 20 warm-up epochs)."""

    queue_size: int = 16384
    num_clusters: tuple[int, ...] = (25000, 50000, 100000)
    warmup_epochs: int = 20
    proto_negatives: int = 16384  # r: negative prototypes per batch (the code samples that many)
    kmeans_iters: int = 20
    kmeans_restarts: int = 5  # faiss nredo
    pass_batch: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.num_clusters or min(self.num_clusters) < 2:
            raise ValueError("pcl: num_clusters needs at least one entry, each >= 2")
        if min(self.warmup_epochs, self.proto_negatives) < 0 or min(self.kmeans_iters, self.kmeans_restarts,
                                                                    self.pass_batch) < 1:
            raise ValueError("pcl: warmup_epochs, proto_negatives >= 0; kmeans_iters, kmeans_restarts, "
                             "pass_batch >= 1")


def concentration(x: Tensor, centroids: Tensor, assign: Tensor, temperature: float) -> Tensor:
    """PCL's phi per cluster (``main_pcl.py`` ``run_kmeans``): ``mean_i |x_i - c| / log(n + 10)`` over a cluster's
    n > 1 members (the distances to the unnormalised centroids); clusters of at most one member take the largest
    phi; then clipped to the 10th-90th percentile and scaled so that the mean is ``temperature`` (a phi of 0, from
    coinciding members, is raised to 1e-12 first)."""
    k = centroids.shape[0]
    dist = (x - centroids[assign]).norm(dim=1).double()
    counts = torch.bincount(assign, minlength=k).double()
    sums = torch.zeros(k, dtype=torch.float64, device=x.device).index_add_(0, assign, dist)
    phi = torch.zeros(k, dtype=torch.float64, device=x.device)
    many = counts > 1
    phi[many] = sums[many] / counts[many] / torch.log(counts[many] + 10)
    phi[~many] = phi.max() if bool(many.any()) else 1.0
    phi = phi.clamp_min(1e-12)  # members that coincide give phi 0; the code's rescaling would then divide by 0
    values = phi.cpu().numpy()
    phi = phi.clamp(float(np.percentile(values, 10)), float(np.percentile(values, 90)))
    return (temperature * phi / phi.mean()).float()


class PCL(MoCo):
    """PCL (see the module docstring). ``forward(batch) -> (loss, metrics)``; reads ``batch["index"]``."""

    Config = PCLConfig
    cfg: PCLConfig
    labels: Tensor
    prototypes: Tensor
    phi: Tensor

    def __init__(self, cfg: PCLConfig) -> None:
        super().__init__(cfg)
        self.offsets = [0, *np.cumsum(cfg.num_clusters).tolist()]  # where each clustering's ids start
        # per clustering g: the samples' cluster ids offset by the clusterings before (labels[g]), every
        # clustering's normalised centroids and concentrations concatenated; empty until the first clustering
        self.register_buffer("labels", torch.full((len(cfg.num_clusters), 1), -1, dtype=torch.long))
        self.register_buffer("prototypes", torch.zeros(0, cfg.dim))
        self.register_buffer("phi", torch.zeros(0))
        follow_saved_shapes(self, "labels", "prototypes", "phi")

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        loss, q, metrics = self.contrast(batch)
        if self.prototypes.shape[0] == 0:  # the warm-up: MoCo alone
            return loss, metrics
        index = sample_index(batch, "pcl", "their clusters")
        terms = []
        for g, k in enumerate(self.cfg.num_clusters):
            pos = self.labels[g, index]
            others = torch.ones(k, dtype=torch.bool, device=q.device)
            others[pos - self.offsets[g]] = False
            pool = torch.nonzero(others).flatten() + self.offsets[g]
            neg = pool[torch.randperm(pool.numel(), device=q.device)[:self.cfg.proto_negatives]]
            terms.append(proto_nce(q, self.prototypes, pos, neg, self.phi))
        proto = torch.stack(terms).mean()
        metrics["proto_nce"] = proto.detach()
        return loss + proto, metrics

    @torch.no_grad()
    def on_epoch_start(self, ctx: EpochContext) -> None:
        c = self.cfg
        if ctx.epoch < c.warmup_epochs:
            return
        check_clusters(c.num_clusters, ctx.num_samples, "pcl")
        if ctx.start > 0 and self.labels.shape[1] == ctx.num_samples:
            return  # resumed inside an epoch: its clusters came back with the checkpoint
        self.eval()

        def embed(batch: dict[str, Tensor]) -> Tensor:  # the code's compute_features: the key encoder, eval mode
            return self.key(centre_view(batch["video"], c.crop_size))

        feats = ctx.collect(embed, c.pass_batch)
        labels, protos, phis = [], [], []
        for g, k in enumerate(c.num_clusters):
            centroids, assign = kmeans(feats, k, c.kmeans_iters, generator=ctx.generator, restarts=c.kmeans_restarts)
            phis.append(concentration(feats, centroids, assign, self.temperature))
            protos.append(F.normalize(centroids, dim=1))
            labels.append(assign + self.offsets[g])
        device = self.labels.device
        self.labels = torch.stack(labels).to(device)
        self.prototypes = torch.cat(protos).to(device)
        self.phi = torch.cat(phis).to(device)
