"""Heads on a pooled embedding: projection and prediction MLPs, cluster prototypes, a backbone with its head, and
the collapse monitor of an embedding.

The recipes differ in where batch norm sits and whether linear layers have a bias; :func:`mlp` names those
choices instead of building each head by hand (MoCo v2: 2 layers, no BN; SimCLR v2 / BYOL / SimSiam /
Barlow Twins: BN after hidden layers, SimSiam also after the output).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Branch", "PairwiseHead", "Prototypes", "WeightNormLinear", "embedding_std", "key_gaps", "mlp"]


def mlp(
    dims: Sequence[int], *, bn: bool = False, last_bn: bool = False, last_bn_affine: bool = True,
    bias: bool = True, activation: Literal["relu", "gelu"] = "relu",
) -> nn.Sequential:
    """``Linear -> [BN] -> ReLU`` for each hidden size, then ``Linear -> [BN]``: ``dims = (in, hidden..., out)``.

    ``bn``: batch norm after every hidden linear layer; ``last_bn``: after the output too (``last_bn_affine``
    off for SimSiam's projector). A linear layer followed by batch norm has no bias (the norm's shift takes
    its place); ``bias=False`` removes the others' too; ``activation``: ReLU, or GELU (DINO's head). Layers are
    numbered as ``nn.Sequential`` does, so ``mlp((512, 512, 128))`` has the names of MoCo v2's head (``0``, ``1``,
    ``2``).
    """
    if len(dims) < 2 or min(dims) < 1:
        raise ValueError(f"mlp: need at least (in, out) positive sizes, got {tuple(dims)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        last = i == len(dims) - 2
        norm = last_bn if last else bn
        layers.append(nn.Linear(a, b, bias=bias and not norm))
        if norm:
            layers.append(nn.BatchNorm1d(b, affine=last_bn_affine if last else True))
        if not last:
            layers.append(nn.ReLU(inplace=True) if activation == "relu" else nn.GELU())
    return nn.Sequential(*layers)


class Prototypes(nn.Module):
    """``K`` learnable cluster prototypes (SwAV): scores ``normalise(z) . c_k`` ``(B, dim) -> (B, K)``.

    The prototypes are kept on the unit sphere by :meth:`normalize_` (call it before each forward, as SwAV).
    """

    def __init__(self, dim: int, num_prototypes: int) -> None:
        super().__init__()
        if dim < 1 or num_prototypes < 1:
            raise ValueError(f"Prototypes: dim and num_prototypes must be positive, got {dim}, {num_prototypes}")
        self.weight = nn.Parameter(F.normalize(nn.Linear(dim, num_prototypes, bias=False).weight.detach(), dim=1))

    def normalize_(self) -> None:
        """Project every prototype back onto the unit sphere (in place, outside autograd)."""
        self.weight.data.copy_(F.normalize(self.weight.data, dim=1))

    def forward(self, z: Tensor) -> Tensor:
        return F.normalize(z, dim=1) @ self.weight.t()


class WeightNormLinear(nn.Module):
    """A bias-free linear layer ``x -> x (g v / |v|)^T`` with weight normalisation per output row (Salimans &
    Kingma 2016), DINO's last layer: ``v`` ``(out, in)`` trained, ``g`` ``(out, 1)`` fixed at 1 when ``fixed_norm``
    (DINO's ``norm_last_layer``), else trained. The gradient flows through the normalisation."""

    def __init__(self, in_features: int, out_features: int, fixed_norm: bool = True) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"WeightNormLinear: sizes must be positive, got {in_features}, {out_features}")
        self.v = nn.Parameter(nn.Linear(in_features, out_features, bias=False).weight.detach().clone())
        self.g = nn.Parameter(torch.ones(out_features, 1), requires_grad=not fixed_norm)

    def forward(self, x: Tensor) -> Tensor:
        return x @ (self.g * F.normalize(self.v, dim=1)).t()


class Branch(nn.Module):
    """A backbone and the head on its pooled embedding: ``(B, 3, H, W)`` -> ``(B, out)`` (SimCLR, BYOL's online and
    target networks, SimSiam, Barlow Twins, VICReg). ``backbone`` is the encoder a method exports."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


class PairwiseHead(nn.Module):
    """The order classifier of OPN and VCOP: ``(B, K, D)`` features of K frames or clips -> ``(B, num_classes)``.

    Every pair ``(i, j)`` of ``pairs`` (default: all ``i < j`` in lexicographic order) passes one shared layer on
    the concatenation ``[f_i, f_j]`` (``pair_dim``, ReLU; OPN's fc7, VCOP's pairwise fc); the pair features,
    concatenated in the order of ``pairs``, pass ``dropout`` and a linear layer to the classes."""

    def __init__(self, dim: int, pair_dim: int, num_items: int, num_classes: int,
                 pairs: Sequence[tuple[int, int]] | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.pairs = ([(int(p[0]), int(p[1])) for p in pairs] if pairs is not None
                      else list(itertools.combinations(range(num_items), 2)))
        if not self.pairs or any(len(p) != 2 or not (0 <= min(p) and max(p) < num_items) or p[0] == p[1]
                                 for p in self.pairs):
            raise ValueError(f"PairwiseHead: pairs must be distinct indices below {num_items}, got {self.pairs}")
        self.num_items = num_items
        self.pair = nn.Sequential(nn.Linear(2 * dim, pair_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(len(self.pairs) * pair_dim, num_classes))

    def forward(self, f: Tensor) -> Tensor:
        if f.dim() != 3 or f.shape[1] != self.num_items:
            raise ValueError(f"PairwiseHead: need (B, {self.num_items}, D) features, got {tuple(f.shape)}")
        i = torch.tensor([p[0] for p in self.pairs], device=f.device)
        j = torch.tensor([p[1] for p in self.pairs], device=f.device)
        pairs = self.pair(torch.cat([f[:, i], f[:, j]], dim=2))  # (B, P, pair_dim)
        out: Tensor = self.classifier(pairs.flatten(1))
        return out


@torch.no_grad()
def embedding_std(z: Tensor) -> Tensor:
    """The collapse monitor: the per-dimension standard deviation over the batch of the L2-normalised ``(B, D)``
    embeddings, averaged over dimensions and times ``sqrt(D)``. 0-dim: 0 when every sample maps to one point
    (complete collapse); about 1 for embeddings spread evenly over the sphere (each coordinate's std is then
    about ``1 / sqrt(D)``, as SimSiam's paper monitors)."""
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"embedding_std: need (B, D) with B >= 2, got {tuple(z.shape)}")
    return F.normalize(z.float(), dim=1).std(dim=0).mean() * math.sqrt(z.shape[1])


@torch.no_grad()
def key_gaps(batch_sim: Tensor, queue_sim: Tensor) -> dict[str, Tensor]:
    """The shortcut monitors of a method contrasting queries with keys and a queue (MoCo; docs/results.md, "Why MoCo
    v2 sat below random"), from the similarities it already has: ``batch_sim`` ``(B, B)`` query i . key j of this
    step, ``queue_sim`` ``(B, K)`` query i . queue entry j. ``instance_gap``: a query's similarity to its own key
    less its mean similarity to the batch's other keys (0: it cannot tell its key from any current one, whatever
    the loss says); ``recency_gap``: its mean similarity to the batch's other keys less that to the queue (large:
    the loss falls by telling this step's keys from older ones; absent for an empty queue). Empty for B < 2."""
    b = batch_sim.shape[0]
    if b < 2:
        return {}
    own = batch_sim.diagonal().mean()
    others = (batch_sim.sum() - batch_sim.diagonal().sum()) / (b * (b - 1))
    out = {"instance_gap": own - others}
    if queue_sim.shape[1] > 0:
        out["recency_gap"] = others - queue_sim.mean()
    return out
