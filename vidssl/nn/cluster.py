"""Clustering a dataset's features: k-means (Euclidean or spherical), PCA whitening, balancing weights, NMI.

The offline clustering methods share these (DeepCluster v1 and v2, PCL); they are tensor functions on whatever
device the features live on, deterministic given a ``torch.Generator``. Every process calls them on the same full
``(N, D)`` matrix (``EpochContext.collect`` gathers it), so every process reaches the same clusters without a
collective inside the iterations.

``kmeans`` follows faiss's ``Clustering`` as DeepCluster v1 calls it (``run_kmeans``: random distinct points as
the initial centroids, Lloyd iterations, an empty cluster re-seeded by splitting a large one with faiss's
``1 / 1024`` perturbation) or, ``spherical=True``, DeepCluster v2's (``main_deepclusterv2.py``
``cluster_memory``: dot-product assignment, centroids renormalised, an empty cluster keeping its centroid).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["balancing_weights", "kmeans", "nmi", "pca_whiten"]

_SPLIT_EPS = 1.0 / 1024  # faiss's perturbation of a split centroid


def _assign(x: Tensor, c: Tensor, spherical: bool, chunk: int) -> Tensor:
    """The nearest centroid of every row: the largest dot product (spherical) or the smallest Euclidean distance
    (``|x|^2`` is the same for every centroid, so ``argmax 2 x.c - |c|^2``), in chunks of rows."""
    bias = None if spherical else (c * c).sum(dim=1)
    out = []
    for part in x.split(chunk):
        score = part @ c.t()
        if bias is not None:
            score = 2 * score - bias
        out.append(score.argmax(dim=1))
    return torch.cat(out)


def _split_empty(c: Tensor, counts: Tensor, generator: torch.Generator | None) -> None:
    """faiss's handling of empty clusters, in place: each empty centroid becomes a copy of a cluster drawn with
    probability proportional to its size minus one, the pair pushed apart by ``1 +- 1/1024`` on alternate
    coordinates, the donor's count halved between them."""
    for j in torch.nonzero(counts == 0).flatten().tolist():
        p = (counts - 1).clamp_min(0).double()
        if p.sum() <= 0:
            return
        donor = int(torch.multinomial(p.cpu(), 1, generator=generator))
        sign = torch.ones(c.shape[1], dtype=c.dtype, device=c.device)
        sign[1::2] = -1
        c[j] = c[donor] * (1 + _SPLIT_EPS * sign)
        c[donor] = c[donor] * (1 - _SPLIT_EPS * sign)
        half = counts[donor] // 2
        counts[j], counts[donor] = half, counts[donor] - half


@torch.no_grad()
def kmeans(x: Tensor, k: int, iters: int = 20, *, spherical: bool = False, generator: torch.Generator | None = None,
           restarts: int = 1, chunk: int = 65536) -> tuple[Tensor, Tensor]:
    """k-means of the ``(N, D)`` rows of ``x`` -> ``(centroids (k, D), assignments (N,))``.

    Starts from ``k`` distinct rows drawn with ``generator``; ``iters`` Lloyd iterations (assign, then move each
    centroid to its members' mean; ``spherical``: assign by dot product and renormalise the centroids, for
    L2-normalised rows). An emptied cluster is re-seeded by splitting a large one (Euclidean, as faiss) or keeps
    its centroid (spherical, as DeepCluster v2). The assignments returned are to the final centroids.
    ``restarts`` > 1: the best of that many runs (faiss's ``nredo``: the lowest sum of squared distances, or the
    highest sum of dot products when spherical).
    """
    if x.dim() != 2 or k < 1 or x.shape[0] < k or iters < 0 or restarts < 1:
        raise ValueError(f"kmeans: need (N, D) rows with N >= k = {k}, iters >= 0 and restarts >= 1, got "
                         f"{tuple(x.shape)}, {iters}, {restarts}")
    x = x.float()
    best: tuple[float, Tensor, Tensor] | None = None
    for _ in range(restarts):
        c, assign = _lloyd(x, k, iters, spherical, generator, chunk)
        fit = (x * c[assign]).sum() if spherical else -((x - c[assign]) ** 2).sum()
        if best is None or float(fit) > best[0]:
            best = (float(fit), c, assign)
    assert best is not None
    return best[1], best[2]


def _lloyd(x: Tensor, k: int, iters: int, spherical: bool, generator: torch.Generator | None,
           chunk: int) -> tuple[Tensor, Tensor]:
    """One k-means run from ``k`` random distinct rows (see :func:`kmeans`)."""
    perm = torch.randperm(x.shape[0], generator=generator)[:k].to(x.device)
    c = x[perm].clone()
    for _ in range(iters):
        assign = _assign(x, c, spherical, chunk)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        filled = counts > 0
        new = c.clone()
        new[filled] = sums[filled] / counts[filled, None].to(x.dtype)
        if spherical:
            new = F.normalize(new, dim=1)
        else:
            _split_empty(new, counts, generator)
        c = new
    return c, _assign(x, c, spherical, chunk)


@torch.no_grad()
def pca_whiten(x: Tensor, dim: int, eps: float = 0.0) -> Tensor:
    """DeepCluster v1's ``preprocess_features``: the ``(N, D)`` rows centred, projected on their ``dim`` principal
    axes, each axis divided by the square root of its eigenvalue (+ ``eps``; faiss's ``PCAMatrix`` with
    ``eigen_power=-0.5``), then every row L2-normalised. Computed in float64 -> ``(N, dim)`` float32."""
    if x.dim() != 2 or not 1 <= dim <= x.shape[1] or x.shape[0] < 2:
        raise ValueError(f"pca_whiten: need (N >= 2, D) rows and 1 <= dim <= D, got {tuple(x.shape)} and {dim}")
    xd = x.double()
    centred = xd - xd.mean(dim=0)
    values, vectors = torch.linalg.eigh(centred.t() @ centred / x.shape[0])  # ascending
    values, vectors = values.flip(0)[:dim], vectors.flip(1)[:, :dim]
    scale = (values.clamp_min(values[0].clamp_min(1e-300) * 1e-12) + eps).rsqrt()
    return F.normalize(centred @ vectors * scale, dim=1).float()


def balancing_weights(assign: Tensor, k: int) -> Tensor:
    """``(N,)`` weights ``N / (k' |C(i)|)`` (``k'`` the non-empty clusters): a loss averaged with them has the
    expectation of DeepCluster's ``UnifLabelSampler`` (a cluster drawn uniformly, then a member uniformly); mean 1."""
    counts = torch.bincount(assign, minlength=k).to(torch.float64)
    nonempty = int((counts > 0).sum())
    return (assign.numel() / (nonempty * counts[assign])).float()


def nmi(a: Tensor, b: Tensor) -> float:
    """Normalised mutual information ``I(a; b) / sqrt(H(a) H(b))`` of two labellings (DeepCluster's stability
    monitor, NMI between consecutive epochs' clusters); 1 for identical partitions, 0 for independent ones."""
    if a.shape != b.shape or a.dim() != 1 or a.numel() == 0:
        raise ValueError(f"nmi: need two labellings of the same length, got {tuple(a.shape)} and {tuple(b.shape)}")
    _, a = torch.unique(a, return_inverse=True)
    _, b = torch.unique(b, return_inverse=True)
    joint = torch.zeros(int(a.max()) + 1, int(b.max()) + 1, dtype=torch.float64)
    joint.index_put_((a.cpu(), b.cpu()), torch.ones(a.numel(), dtype=torch.float64), accumulate=True)
    joint /= a.numel()
    pa, pb = joint.sum(1), joint.sum(0)
    nz = joint > 0
    mi = float((joint[nz] * (joint[nz] / (pa[:, None] * pb[None])[nz]).log()).sum())
    ha, hb = float(-(pa * pa.log()).sum()), float(-(pb * pb.log()).sum())
    if ha <= 0 or hb <= 0:
        return 1.0 if ha == hb else 0.0
    return max(0.0, min(1.0, mi / math.sqrt(ha * hb)))
