"""Clustering by optimal transport: Sinkhorn-Knopp's equipartitioned soft codes and the swapped prediction they
train (SwAV, online, per batch), SeLa's self-labels (offline, over the dataset, to a tolerance), and IIC's mutual
information of paired assignments.

Pure functions; the prototypes, queues and schedules live in the methods (``vidssl.methods.swav``) and in
``vidssl.nn``. Sinkhorn runs in float32 whatever the autocast context: ``exp(score / 0.05)`` reaches ``e^20``,
beyond float16.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F
from torch import Tensor

from vidssl.engine.distributed import all_gather_with_grad, all_reduce_max, all_reduce_sum, world_size

__all__ = ["iic_loss", "self_label", "self_label_scalings", "sinkhorn", "swapped_prediction"]


@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """SwAV's ``distributed_sinkhorn`` (Caron et al. 2020, facebookresearch/swav ``main_swav.py``).

    ``scores`` ``(B, K)``: this process's prototype scores. ``Q = exp(scores / epsilon)`` over the *global*
    batch of N samples (sums all-reduced), normalised to total mass 1, then ``iterations`` rounds of: every
    prototype's mass to ``1 / K``, every sample's to ``1 / N``. Returns ``(B, K)`` codes ``N Q``: each row sums to
    exactly 1 (the last step normalises samples); the prototypes' masses reach ``N / K`` only as the iterations
    grow. Computed in float32 (float64 input stays float64), also under autocast; the maximum is subtracted
    first, which cancels in the normalisation and keeps ``exp`` finite.
    """
    if scores.dim() != 2 or epsilon <= 0 or iterations < 1:
        raise ValueError(f"sinkhorn: need (B, K) scores, epsilon > 0 and iterations >= 1, got {tuple(scores.shape)}, "
                         f"{epsilon}, {iterations}")
    with torch.autocast(scores.device.type, enabled=False):
        z = (scores if scores.dtype == torch.float64 else scores.float()) / epsilon
        z = z - all_reduce_max(z.max())
        q = torch.exp(z).t()  # (K, B)
        k, n = q.shape[0], q.shape[1] * world_size()
        q = q / all_reduce_sum(q.sum())
        for _ in range(iterations):
            q = q / all_reduce_sum(q.sum(dim=1, keepdim=True)) / k  # each prototype: mass 1 / K
            q = q / q.sum(dim=0, keepdim=True) / n  # each sample: mass 1 / N
        return (q * n).t()


def swapped_prediction(scores: list[Tensor], codes: dict[int, Tensor], temperature: float = 0.1) -> Tensor:
    """SwAV's loss: each assigned crop's codes predicted from every other crop's scores.

    ``scores``: per crop ``(B, K)`` prototype scores; ``codes``: for the crops assigned codes (SwAV's
    ``crops_for_assign``), ``(B, K)`` targets (rows summing to 1, no gradient). ``loss = mean over assigned i of
    mean over crops v != i of -mean_b sum_k q_i log softmax(s_v / temperature)``. Uniform scores give ``ln K``.
    """
    if not codes or len(scores) < 2 or temperature <= 0:
        raise ValueError("swapped_prediction: needs codes, at least two crops and a positive temperature")
    total = scores[0].new_zeros(())
    for i, q in codes.items():
        terms = [-(q.detach() * F.log_softmax(s / temperature, dim=1)).sum(dim=1).mean()
                 for v, s in enumerate(scores) if v != i]
        total = total + sum(terms) / len(terms)
    return total / len(codes)


@torch.no_grad()
def self_label_scalings(log_probs: Tensor, lam: float, tolerance: float = 1e-2, check_every: int = 10,
                        max_iters: int = 100000) -> tuple[Tensor, Tensor, Tensor, int]:
    """SeLa's Sinkhorn-Knopp on ``P^lam`` (Asano et al. 2020, yukimasano/self-label ``cifar.py`` ``optimize_L_sk``).

    ``log_probs`` ``(N, K)``: every sample's log-softmax over K clusters. With ``P = exp(lam log_probs)^T`` ``(K, N)``
    (each sample's maximum taken out first: it cancels in ``c``), alternate ``r = (1/K) / (P c)``,
    ``c = (1/N) / (r^T P)`` from uniform ``r, c`` until ``err = sum_n |c_n / c'_n - 1|`` (checked every
    ``check_every`` iterations, as the code) is at most ``tolerance``. ``diag(r) P diag(c)`` then has rows summing
    to 1/K and columns to 1/N. In float64. Returns ``(P, r, c, iterations)``.
    """
    if log_probs.dim() != 2 or lam <= 0 or tolerance <= 0 or check_every < 1:
        raise ValueError(f"self_label: need (N, K) log-probabilities, lam > 0, tolerance > 0, check_every >= 1; got "
                         f"{tuple(log_probs.shape)}, {lam}, {tolerance}, {check_every}")
    lp = log_probs.double()
    n, k = lp.shape
    p = torch.exp(lam * (lp - lp.max(dim=1, keepdim=True).values)).t()  # (K, N)
    r = torch.full((k,), 1.0 / k, dtype=p.dtype, device=p.device)
    c = torch.full((n,), 1.0 / n, dtype=p.dtype, device=p.device)
    err, it = math.inf, 0
    while err > tolerance:
        if it >= max_iters:
            raise RuntimeError(f"self_label: Sinkhorn did not reach error {tolerance} in {max_iters} iterations "
                               f"(error {err:.3g})")
        r = (1.0 / k) / (p @ c)
        c_new = (1.0 / n) / (r @ p)
        if it % check_every == 0:
            err = float(torch.nansum((c / c_new - 1).abs()))
        c = c_new
        it += 1
    return p, r, c, it


def self_label(log_probs: Tensor, lam: float, tolerance: float = 1e-2) -> tuple[Tensor, int]:
    """SeLa's self-labels: ``(N,)`` the arg-max over clusters of each sample's column of ``diag(r) P diag(c)``
    (:func:`self_label_scalings`: equipartitioned over the K clusters, each sample's choice sharpened by ``lam``),
    and the Sinkhorn iterations it took."""
    p, r, _, it = self_label_scalings(log_probs, lam, tolerance)
    return (r[:, None] * p).argmax(dim=0), it


def iic_loss(p1: Tensor, p2: Tensor, lamb: float = 1.0, eps: float = sys.float_info.epsilon) -> Tensor:
    """IIC's loss (Ji et al. 2019, xu-ji/IIC ``IID_loss``): minus the mutual information of paired cluster
    assignments.

    ``p1, p2`` ``(B, K)``: softmax assignments of two views of the same samples. The joint ``P = p1^T p2 / B``
    over the *global* batch (gathered across processes with gradients), symmetrised ``(P + P^T) / 2`` and
    normalised; entries below ``eps`` are raised to ``eps`` (the code's clamp), and ``loss = -sum P_ij (log P_ij -
    lamb log P_i - lamb log P_j)``. Closed forms (``lamb = 1``): ``-ln K`` for a one-to-one pairing with uniform
    marginals, 0 for independent views or a collapse onto one cluster.
    """
    if p1.shape != p2.shape or p1.dim() != 2:
        raise ValueError(f"iic_loss: need two (B, K) assignments, got {tuple(p1.shape)} and {tuple(p2.shape)}")
    a, b = all_gather_with_grad(p1), all_gather_with_grad(p2)
    joint = a.t() @ b / a.shape[0]
    joint = (joint + joint.t()) / 2
    joint = joint / joint.sum()
    pi = joint.sum(dim=1, keepdim=True).expand_as(joint)
    pj = joint.sum(dim=0, keepdim=True).expand_as(joint)
    joint, pi, pj = joint.clamp_min(eps), pi.clamp_min(eps), pj.clamp_min(eps)
    return -(joint * (joint.log() - lamb * pj.log() - lamb * pi.log())).sum()
