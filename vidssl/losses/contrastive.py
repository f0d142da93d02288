"""Contrastive losses: InfoNCE against a queue (MoCo, CPC), NT-Xent over the batch (SimCLR) and its supervised
form (SupCon).

Pure functions: tensors in, tensors out. State (queues, momentum encoders, memory banks) lives in the modules
of ``vidssl.nn.momentum`` and the methods that own them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vidssl.engine.distributed import all_gather_no_grad, all_gather_with_grad, rank

__all__ = ["batch_info_nce", "cpc_loss", "dense_info_nce", "dim_loss", "global_local_scores", "info_nce",
           "info_nce_logits", "nce", "nt_xent", "proto_nce", "supcon", "top1_positive"]


def _check(q: Tensor, k: Tensor, queue: Tensor) -> None:
    if q.dim() != 2 or k.shape != q.shape:
        raise ValueError(f"info_nce: q and k must both be (B, D), got {tuple(q.shape)} and {tuple(k.shape)}")
    if queue.dim() != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"info_nce: queue must be (K, D) with D={q.shape[1]}, got {tuple(queue.shape)}")


def info_nce_logits(q: Tensor, k: Tensor, queue: Tensor, temperature: float, batch_negatives: bool = False) -> Tensor:
    """MoCo's logits: the positive ``q_i . k_i`` in column 0, then ``q_i . queue_j``, all over ``temperature``.

    Args:
        q: ``(B, D)`` queries, L2-normalised by the caller (this function does not normalise).
        k: ``(B, D)`` positive keys, L2-normalised, normally without gradient.
        queue: ``(K, D)`` negative keys, L2-normalised; never receives a gradient.
        temperature: ``t > 0``.
        batch_negatives: also contrast with the other keys of this step's global batch (every process's, gathered
            without gradient, as MoCo v3 and SimCLR do): columns ``1 .. W B`` between the positive and the queue,
            the query's own key among them at ``-inf`` (so it counts once, as the positive).
    Returns:
        ``(B, 1 + K)`` logits (``(B, 1 + W B + K)`` with ``batch_negatives``); the target class of every row is 0.
    """
    _check(q, k, queue)
    if temperature <= 0:
        raise ValueError(f"info_nce: temperature must be positive, got {temperature}")
    pos = (q * k).sum(dim=1, keepdim=True)  # (B, 1)
    neg = q @ queue.detach().to(q.dtype).t()  # (B, K)
    if not batch_negatives:
        return torch.cat([pos, neg], dim=1) / temperature
    keys = all_gather_no_grad(k)  # (W B, D) in rank order
    own = rank() * q.shape[0] + torch.arange(q.shape[0], device=q.device)
    batch = (q @ keys.to(q.dtype).t()).scatter(1, own[:, None], float("-inf"))  # (B, W B), own key masked
    return torch.cat([pos, batch, neg], dim=1) / temperature


def info_nce(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """InfoNCE with a queue of negatives (Oord et al. 2018; He et al. 2020), mean over the batch.

    ``loss = -mean_i log( exp(q_i.k_i / t) / (exp(q_i.k_i / t) + sum_j exp(q_i.queue_j / t)) )``.
    Shapes and normalisation as :func:`info_nce_logits` (inputs L2-normalised by the caller). Returns a
    0-dim tensor.
    """
    logits = info_nce_logits(q, k, queue, temperature)
    target = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, target)


def batch_info_nce(q: Tensor, k: Tensor, temperature: float) -> Tensor:
    """MoCo v3's ``contrastive_loss`` (Chen, Xie & He 2021, facebookresearch/moco-v3 ``builder.py``): queries
    against the keys of the *global* batch (gathered, no gradient), this process's positives at
    ``rank * B + i``; cross-entropy times ``2 T``. ``(B, D)`` x2 (normalised here) -> 0-dim. Keys orthogonal to
    each other with ``q = k``: ``2 T log(1 + (N - 1) e^(-1/T))``.
    """
    if q.dim() != 2 or k.shape != q.shape:
        raise ValueError(f"batch_info_nce: q and k must both be (B, D), got {tuple(q.shape)} and {tuple(k.shape)}")
    if temperature <= 0:
        raise ValueError(f"batch_info_nce: temperature must be positive, got {temperature}")
    q, k = F.normalize(q, dim=1), F.normalize(k.detach(), dim=1)
    keys = all_gather_no_grad(k)
    labels = rank() * q.shape[0] + torch.arange(q.shape[0], device=q.device)
    return F.cross_entropy(q @ keys.t() / temperature, labels) * (2 * temperature)


def top1_positive(logits: Tensor) -> Tensor:
    """Fraction of rows ``(B, 1 + K)`` whose positive (column 0) scores strictly above every negative. 0-dim."""
    return (logits[:, 0] > logits[:, 1:].amax(dim=1)).float().mean()


def nt_xent(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """SimCLR's normalised-temperature cross-entropy (Chen et al. 2020, https://arxiv.org/abs/2002.05709).

    Args:
        z1, z2: ``(B, D)`` embeddings of the two views of this process's B images (normalised here).
        temperature: ``t > 0`` (0.5 in SimCLR's CIFAR recipe, 0.1 at ImageNet's large batches).
    Returns:
        0-dim: the mean over this process's 2B anchors of
        ``-log( exp(s(i, j(i)) / t) / sum_{k != i} exp(s(i, k) / t) )``, where ``j(i)`` is the other view of
        anchor i and k runs over the 2N embeddings of the *global* batch (N = B x processes). The other
        processes' embeddings are gathered here with their gradients, and this process's positives sit at
        ``rank * B + i`` of the gathered batch. With equal B on every process, the mean over processes of this
        loss (what DDP's averaged gradients optimise) is the single-process loss of the global batch.
    """
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"nt_xent: z1 and z2 must both be (B, D), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"nt_xent: temperature must be positive, got {temperature}")
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    k1, k2 = all_gather_with_grad(z1), all_gather_with_grad(z2)  # (N, D), rank order
    b = z1.shape[0]
    labels = rank() * b + torch.arange(b, device=z1.device)  # this process's rows of the gathered batch
    self_mask = F.one_hot(labels, k1.shape[0]).bool()  # (B, N): an anchor is not its own negative
    neg = torch.finfo(z1.dtype).min

    def side(anchor: Tensor, same: Tensor, other: Tensor) -> Tensor:
        # columns: the other view's N embeddings (positive at `labels`), then this view's N (self masked)
        logits = torch.cat([anchor @ other.t(), (anchor @ same.t()).masked_fill(self_mask, neg)], dim=1)
        return F.cross_entropy(logits / temperature, labels)

    return (side(z1, k1, k2) + side(z2, k2, k1)) / 2


def supcon(z1: Tensor, z2: Tensor, labels: Tensor, temperature: float = 0.1, base_temperature: float = 0.07) -> Tensor:
    """Supervised contrastive loss, the paper's L_out (Khosla et al. 2020, https://arxiv.org/abs/2004.11362;
    HobbitLong/SupContrast ``losses.py``).

    Args:
        z1, z2: ``(B, D)`` embeddings of two views of this process's B images (normalised here).
        labels: ``(B,)`` class indices.
    Returns:
        0-dim: the mean over this process's 2B anchors i of ``-(T / base_T) mean_{p in P(i)} log( exp(z_i.z_p / T) /
        sum_{a != i} exp(z_i.z_a / T) )``, P(i) the other views of i's class, a over the 2N views of the *global*
        batch (gathered with gradients, as :func:`nt_xent`). One class and identical features give
        ``log(2N - 1) T / base_T``.
    """
    if z1.dim() != 2 or z1.shape != z2.shape or labels.shape != (z1.shape[0],):
        raise ValueError(f"supcon: need z1, z2 (B, D) and labels (B,), got {tuple(z1.shape)}, {tuple(z2.shape)}, "
                         f"{tuple(labels.shape)}")
    if temperature <= 0 or base_temperature <= 0:
        raise ValueError("supcon: temperatures must be positive")
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    everyone = torch.cat([all_gather_with_grad(z1), all_gather_with_grad(z2)])  # (2N, D): view 1, then view 2
    classes = all_gather_no_grad(labels)
    b, n = z1.shape[0], classes.shape[0]
    mine = rank() * b + torch.arange(b, device=z1.device)
    index = torch.cat([mine, n + mine])  # this process's anchors' columns
    logits = torch.cat([z1, z2]) @ everyone.t() / temperature  # (2B, 2N)
    is_self = F.one_hot(index, 2 * n).bool()
    log_prob = logits - logits.masked_fill(is_self, torch.finfo(logits.dtype).min).logsumexp(dim=1, keepdim=True)
    positive = (torch.cat([labels, labels])[:, None] == torch.cat([classes, classes])[None, :]) & ~is_self
    mean_log_prob = (log_prob * positive).sum(dim=1) / positive.sum(dim=1)  # every anchor has its other view
    return -(temperature / base_temperature) * mean_log_prob.mean()


def nce(probs: Tensor, num_samples: int, eps: float = 1e-7) -> Tensor:
    """NPID's noise-contrastive estimation (``NCECriterion`` of zhirongw/lemniscate.pytorch).

    ``probs`` ``(B, 1 + K)``: the model's (unnormalised-then-divided-by-Z) probabilities of each sample's own
    memory entry (column 0) and of K noise entries drawn uniformly (noise probability ``1 / N``). ``loss =
    -mean_b [ log(P_0 / (P_0 + K / N)) + sum_k log((K / N) / (P_k + K / N)) ]``; at ``P = 1 / N`` everywhere
    it is ``log(K + 1) + K log((K + 1) / K)`` (K 4096: 9.3179).
    """
    if probs.dim() != 2 or probs.shape[1] < 2 or num_samples < 1:
        raise ValueError(f"nce: need (B, 1 + K) probabilities with K >= 1 and num_samples >= 1, got "
                         f"{tuple(probs.shape)}, {num_samples}")
    k = probs.shape[1] - 1
    noise = k / num_samples
    positive = torch.log(probs[:, 0] / (probs[:, 0] + noise + eps))
    negative = torch.log(noise / (probs[:, 1:] + noise + eps)).sum(dim=1)
    return -(positive + negative).mean()


def proto_nce(q: Tensor, prototypes: Tensor, positives: Tensor, negatives: Tensor, concentration: Tensor) -> Tensor:
    """PCL's ProtoNCE term for one clustering (Li et al. 2021, salesforce/PCL ``pcl/builder.py``).

    ``q`` ``(B, D)`` normalised queries; ``prototypes`` ``(k, D)`` normalised centroids and ``concentration``
    ``(k,)`` their phi; ``positives`` ``(B,)`` each query's cluster, ``negatives`` ``(r,)`` clusters none of the
    batch belongs to. Every query scores the batch's positive prototypes and the negatives, each score divided by
    its prototype's phi: ``(B, B + r)`` logits, query i's positive in column i (the other queries' positives are
    in its denominator, as the code); the cross-entropy over them.
    """
    if q.dim() != 2 or positives.shape != (q.shape[0],) or negatives.dim() != 1:
        raise ValueError(f"proto_nce: need (B, D) queries, (B,) positives and (r,) negatives; got {tuple(q.shape)}, "
                         f"{tuple(positives.shape)}, {tuple(negatives.shape)}")
    chosen = torch.cat([positives, negatives])
    logits = q @ prototypes[chosen].t() / concentration[chosen]
    return F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device))


def batch_hard_triplet(z: Tensor, ids: Tensor, margin: float = 0.5) -> Tensor:
    """The batch-hard triplet loss (Hermans, Beyer & Leibe 2017) over embeddings ``z`` ``(N, D)`` with instance
    ``ids`` ``(N,)``: for every anchor, its farthest positive (same id, not itself) and its nearest negative (other
    id) in Euclidean distance, ``mean(relu(d_ap - d_an + margin))``. Every id needs at least two members and the
    batch two ids. Closed forms: all embeddings equal -> ``margin``; members of an id equal and ids orthonormal ->
    ``relu(margin - sqrt(2))``."""
    if z.dim() != 2 or ids.shape != z.shape[:1]:
        raise ValueError(f"batch_hard_triplet: need z (N, D) and ids (N,), got {tuple(z.shape)}, {tuple(ids.shape)}")
    same = ids[:, None] == ids[None, :]
    eye = torch.eye(len(ids), dtype=torch.bool, device=z.device)
    if not bool((same & ~eye).any(dim=1).all()) or bool(same.all()):
        raise ValueError("batch_hard_triplet: every id needs two members and the batch two ids")
    d = (z[:, None, :] - z[None, :, :]).square().sum(dim=-1).clamp(min=1e-12).sqrt()  # (N, N)
    d_ap = d.masked_fill(~same | eye, float("-inf")).amax(dim=1)
    d_an = d.masked_fill(same, float("inf")).amin(dim=1)
    return F.relu(d_ap - d_an + margin).mean()


def cpc_loss(predictions: list[Tensor], targets: Tensor, offsets: list[int], scale: float = 1.0
             ) -> tuple[Tensor, Tensor]:
    """Contrastive predictive coding over a grid (van den Oord et al. 2018; CPC v2, Hénaff et al. 2019): the
    prediction made at grid cell ``(i, j)`` for offset ``k`` scores every target patch of the *global* batch (all
    processes' ``B H W`` patches, gathered with gradient) by a raw dot product, and the cross-entropy picks the
    patch ``k`` rows below, ``(i + k, j)`` of the same image; rows without one (``i >= H - k``) predict nothing.
    ``predictions[n]`` (the predictions for ``offsets[n]``) and ``targets`` are ``(B, D, H, W)``; returns the mean
    over offsets of the loss, and the top-1 accuracy of the positives. ``scale`` multiplies the dot products (1: the
    papers' raw form). Zero predictions give exactly ``ln(world B H W)``."""
    if targets.dim() != 4 or len(predictions) != len(offsets) or not offsets:
        raise ValueError(f"cpc_loss: targets (B, D, H, W) and one prediction per offset, got {tuple(targets.shape)}, "
                         f"{len(predictions)} predictions for offsets {offsets}")
    b, d, h, w = targets.shape
    if any(p.shape != targets.shape for p in predictions) or not all(0 < k < h for k in offsets):
        raise ValueError(f"cpc_loss: every prediction must be {tuple(targets.shape)} and every offset in 1..{h - 1}")
    keys = all_gather_with_grad(targets.permute(0, 2, 3, 1).reshape(b * h * w, d))  # (world B H W, D)
    base = rank() * b * h * w
    losses, correct, count = [], torch.zeros((), device=targets.device), 0
    for pred, k in zip(predictions, offsets, strict=True):
        q = pred[:, :, : h - k].permute(0, 2, 3, 1).reshape(-1, d)  # cells (b, i, j) with i < H - k
        bi, ii, jj = torch.meshgrid(torch.arange(b), torch.arange(h - k), torch.arange(w), indexing="ij")
        positive = (base + (bi * h + ii + k) * w + jj).flatten().to(targets.device)
        logits = (q @ keys.t()) * scale
        losses.append(F.cross_entropy(logits, positive))
        correct = correct + (logits.detach().argmax(1) == positive).sum()
        count += len(positive)
    return torch.stack(losses).mean(), correct / count


def dense_info_nce(predictions: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """DPC's dense InfoNCE (Han, Xie & Zisserman 2019, TengdaHan/DPC): row ``i`` of ``predictions`` ``(M, D)`` scores
    every row of the *global* ``targets`` (all processes', gathered with gradient) by a raw dot product (no
    temperature, no normalisation) and the cross-entropy picks its own row; DPC's rows are the (sample, predicted
    step, position) triples, so every other position, step and sample is a negative. Returns the loss and the
    top-1 accuracy; zero predictions give exactly ``ln(world M)``."""
    if predictions.dim() != 2 or predictions.shape != targets.shape:
        raise ValueError(f"dense_info_nce: predictions and targets must both be (M, D), got "
                         f"{tuple(predictions.shape)} and {tuple(targets.shape)}")
    keys = all_gather_with_grad(targets)
    positive = rank() * len(targets) + torch.arange(len(targets), device=targets.device)
    logits = predictions @ keys.t()
    return F.cross_entropy(logits, positive), (logits.detach().argmax(1) == positive).float().mean()


def global_local_scores(global_: Tensor, local: Tensor) -> Tensor:
    """DIM's scores of every global vector against every local feature of the *global* batch: ``(N, D)`` and
    ``(N, P, D)`` (this process's) -> ``(N, world N, P)``, ``s[i, j, p] = g_i . l_{j, p}``, the locals gathered with
    gradient; this process's own pairs are at ``j = rank N + i``."""
    if (global_.dim() != 2 or local.dim() != 3 or local.shape[0] != global_.shape[0]
            or local.shape[2] != global_.shape[1]):
        raise ValueError(f"global_local_scores: need (N, D) global and (N, P, D) local features, got "
                         f"{tuple(global_.shape)} and {tuple(local.shape)}")
    n, p, d = local.shape
    locals_ = all_gather_with_grad(local.reshape(n, p * d)).view(-1, p, d)
    return torch.einsum("nd,mpd->nmp", global_, locals_)


def dim_loss(global_: Tensor, local: Tensor, estimator: str = "jsd") -> Tensor:
    """Deep InfoMax's local objective (Hjelm et al. 2019, rdevon/DIM): each image's global vector against its own
    local features (positives) and every other image's (negatives), by :func:`global_local_scores`.

    ``jsd``: the Jensen-Shannon estimator, ``-(E_pos[-softplus(-s)] - E_neg[softplus(s)])``, exactly ``2 ln 2`` at
    zero scores; ``infonce``: for every own position, a softmax over it and every position of the other images,
    exactly ``ln(1 + (world N - 1) P)`` at zero scores."""
    s = global_local_scores(global_, local)  # (N, M, P)
    own = _own_columns(s)
    if estimator == "jsd":
        positive = (-F.softplus(-s[own])).mean()  # (N, P) own pairs
        negative = F.softplus(s[~own]).mean()
        return -(positive - negative)
    if estimator == "infonce":
        return _shared_negatives_nce(s, own)
    raise ValueError(f"dim_loss: estimator must be 'jsd' or 'infonce', got {estimator!r}")


def _own_columns(s: Tensor) -> Tensor:
    """``(N, M)`` bool: each of this process's images' own column in global-local scores ``(N, M, P)``."""
    n, m, _ = s.shape
    own = torch.zeros(n, m, dtype=torch.bool, device=s.device)
    own[torch.arange(n), rank() * n + torch.arange(n)] = True
    return own


def _shared_negatives_nce(s: Tensor, own: Tensor) -> Tensor:
    """Global-local InfoNCE on scores ``(N, M, P)`` with ``own`` ``(N, M)`` marking each image's own column: every
    own position is a positive scored against it and every position of the other images, which all of an image's
    positives share, so their log-sum-exp is taken once (``(N, P, 1 + (M - 1) P)`` logits are never built)."""
    n, m, p = s.shape
    pos = s[own]  # (N, P)
    neg = s[~own].view(n, (m - 1) * p)  # (N, (M - 1) P): every position of every other image
    return -(pos - torch.logaddexp(pos, torch.logsumexp(neg, dim=1, keepdim=True))).mean()


def amdim_nce(source: Tensor, target: Tensor, clip: float = 20.0, reg_weight: float = 4e-2) -> tuple[Tensor, Tensor]:
    """One of AMDIM's global-to-local costs (Bachman, Hjelm & Buchwalter 2019; Philip-Bachman/amdim-public
    ``costs.py`` ``NCE_MI_MULTI._model_scores``): source vectors ``(N, D)`` (one image's global feature, or one
    location of its map) against the target locations ``(N, P, D)`` of the *other* view of the global batch.

    Scores ``s = src . trg / sqrt(D)``; the logit penalty ``reg_weight * mean(s^2)`` on the raw scores; then soft
    clipping ``clip * tanh(s / clip)``; the NCE cost as DIM's InfoNCE (:func:`dim_loss`): each own location against
    every location of the other images. Returns ``(nce, penalty)``; at zero features exactly
    ``(ln(1 + (world N - 1) P), 0)``."""
    s = global_local_scores(source, target) / source.shape[1] ** 0.5  # (N, M, P)
    penalty = reg_weight * s.pow(2).mean()
    s = clip * torch.tanh(s / clip)
    return _shared_negatives_nce(s, _own_columns(s)), penalty
