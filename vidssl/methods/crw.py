"""Contrastive Random Walk (CRW): space-time correspondence as a cycle-consistent random walk.

Jabri, Owens & Efros, "Space-Time Correspondence as a Contrastive Random Walk", NeurIPS 2020,
https://arxiv.org/abs/2006.14613; the authors' code is ``ajabri/videowalk`` (``code/model.py``).

Every frame of a short clip becomes a set of nodes (a 7x7 grid of jittered 64 px patches of a 256 px
crop, each embedded by a ResNet-18 with layer3/4 at stride 1, mean-pooled, linear to 128-d and
L2-normalised). Consecutive frames are joined by stochastic transition matrices ``softmax(q_t q_{t+1}^T / t)``,
and a walk along the palindrome ``0 -> 1 -> ... -> k -> ... -> 1 -> 0`` is trained, with cross-entropy, to
return to the node it started from. The only supervision is the cycle: correspondences that survive the
round trip are the ones the encoder learns.

Where vidssl follows the authors' code (which produced the published numbers) rather than the paper's text:
- Cycle lengths: the code's loop ``for i in range(1, len(A12s))`` trains k = 2 .. T-1 (the 1-step cycle
  0 -> 1 -> 0 is left out) and averages their losses with equal weight; ``min_cycle=1`` adds it back.
- Walks start at frame 0 only, and only the forward-first palindrome is used (the code's default
  ``flip=False``); the loss is the mean over all start nodes of the batch, then over cycle lengths.
- Edge dropout (rate 0.1) is applied to the affinities before the softmax of every transition matrix, by
  setting dropped logits to the most negative float, so each row renormalises over its surviving edges. The
  code writes that mask in place into the shared affinity tensor before it builds the backward matrix from
  its transpose, so a backward matrix loses both its own fresh mask and the transposed forward mask (an
  effective rate of 1 - 0.9^2 = 0.19, and an edge dropped going out is also dropped coming back); vidssl
  reproduces exactly that (:func:`palindrome_transitions`).
- Frames are cropped per frame (RandomResizedCrop 256, scale 0.8-0.95, aspect 0.7-1.3, no flip, no colour
  jitter: the code's default ``--frame-transforms crop``) and each patch is jittered by its own
  RandomResizedCrop(64, scale 0.7-0.9), per frame.

- The trunk pads by reflection (``resnet18_s8_reflect``), as the code's ``scratch`` model (``modify(padding=
  'reflect')``); the padding is recorded in checkpoints, so the evaluation pads the same way. It matters for
  nodes that are small patches encoded on their own, whose zero border would dominate a 4x4 map
  (``docs/results.md``).

One deliberate difference: inputs are normalised with the ImageNet statistics, which is what vidssl's
evaluation feeds every RGB ResNet (the code used CIFAR statistics, a shift of about 0.03 in mean).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import crop_flip, patch_grid, to_float
from vidssl.data.samplers import random_clip
from vidssl.data.views import FrameSampler, Sampler
from vidssl.losses import walk_loss
from vidssl.methods.base import Metrics, SSLMethod
from vidssl.models import ClipEncoder, ResNet, build_backbone
from vidssl.nn.colour import imagenet_normalize

__all__ = ["CRW", "CRWConfig", "palindrome_transitions", "palindrome_walks", "transition_matrices", "walk_loss"]


@dataclass
class CRWConfig:
    """CRW hyper-parameters (the ``model:`` section of a run config). Defaults: the authors' README recipe."""

    backbone: str = "resnet18_s8_reflect"  # ResNet-18, layer3/4 at stride 1, reflect padding (``modify()``), 512-d
    dim: int = 128  # node embedding size (``make_head``: linear 512 -> 128)
    temperature: float = 0.05  # README command ``--temp 0.05``
    dropout: float = 0.1  # edge dropout, README command ``--dropout 0.1``
    clip_len: int = 4  # frames per clip, README command ``--clip-len 4``
    frame_stride: int = 4  # frames between clip frames: 8 fps on 30 fps video (see ``sampler``)
    min_cycle: int = 2  # shortest palindrome trained: 2 as the code (the paper also lists k = 1)
    crop_size: int = 256  # ``--img-size 256``
    crop_scale: tuple[float, float] = (0.8, 0.95)  # the code's per-frame RandomResizedCrop
    crop_ratio: tuple[float, float] = (0.7, 1.3)
    patch_size: int = 64  # ``--patch-size 64 64 3``
    patch_stride: int = 32  # the code's ``patch_grid`` stride, 0.5 x patch
    patch_jitter: tuple[float, float] = (0.7, 0.9)  # RandomResizedCrop scale of each patch
    input: Literal["video"] = "video"  # a walk needs at least two frames: still images are not supported

    def __post_init__(self) -> None:
        if self.temperature <= 0:
            raise ValueError(f"crw: temperature must be positive, got {self.temperature}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"crw: dropout is an edge-drop rate in [0, 1), got {self.dropout}")
        if self.clip_len < 2:
            raise ValueError(f"crw: clip_len must be at least 2 (a walk needs two frames), got {self.clip_len}")
        if not 1 <= self.min_cycle <= self.clip_len - 1:
            raise ValueError(f"crw: min_cycle must be in 1..clip_len-1 = 1..{self.clip_len - 1}, got {self.min_cycle}")
        if min(self.dim, self.frame_stride, self.patch_size, self.patch_stride) < 1:
            raise ValueError("crw: dim, frame_stride, patch_size and patch_stride must be positive")
        if self.crop_size < self.patch_size:
            raise ValueError(f"crw: crop_size {self.crop_size} is smaller than one {self.patch_size} px patch")
        if self.input != "video":
            raise ValueError(f"crw: input must be 'video' (a walk needs frames), got {self.input!r}")


# ----------------------------------------------------------------------------------------------------------
# The walk: pure functions


def _check_feats(feats: Tensor, where: str) -> None:
    if feats.dim() != 4 or feats.shape[1] < 2:
        raise ValueError(f"{where}: feats must be (B, T, N, D) with T >= 2, got {tuple(feats.shape)}")


def _stochastic(affinity: Tensor, temperature: float, drop: Tensor | None) -> Tensor:
    """Row-softmax of ``affinity / temperature`` ``(..., N, M)``; ``drop`` (bool, same shape) removes edges."""
    logits = affinity / temperature
    if drop is not None:
        # the most negative finite value, not -inf: a row that lost every edge becomes uniform, not NaN
        logits = logits.masked_fill(drop, torch.finfo(logits.dtype).min)
    return F.softmax(logits, dim=-1)


def _edge_mask(shape: torch.Size, rate: float, device: torch.device, generator: torch.Generator | None) -> Tensor:
    """Bool ``shape``, True with probability ``rate``: the edges to drop. Drawn on ``generator``'s device."""
    gen_device = generator.device if generator is not None else device
    return (torch.rand(shape, generator=generator, device=gen_device) < rate).to(device)


def transition_matrices(
    feats: Tensor, temperature: float, dropout: float = 0.0, generator: torch.Generator | None = None
) -> Tensor:
    """Forward transition matrices between consecutive frames.

    Args:
        feats: ``(B, T, N, D)`` node embeddings, L2-normalised by the caller.
        temperature: softmax temperature ``t > 0`` (0.05 in the authors' recipe).
        dropout: edge-dropout rate; a dropped edge gets probability 0 and its row renormalises over the rest.
        generator: randomness of the dropout (the global RNG when ``None``).
    Returns:
        ``(B, T-1, N, N)``: ``P[b, t, i, j] = softmax_j(feats[b, t, i] . feats[b, t+1, j] / temperature)``,
        every row summing to 1.
    """
    _check_feats(feats, "transition_matrices")
    affinity = feats[:, :-1] @ feats[:, 1:].transpose(-1, -2)  # (B, T-1, N, N)
    drop = _edge_mask(affinity.shape, dropout, affinity.device, generator) if dropout > 0 else None
    return _stochastic(affinity, temperature, drop)


def palindrome_transitions(
    feats: Tensor, temperature: float, dropout: float = 0.0, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """The forward and backward transition matrices of CRW's palindromes, with the authors' edge dropout.

    Args: as :func:`transition_matrices`.
    Returns:
        ``forward`` ``(B, T-1, N, N)``, ``forward[:, t]`` = P(node of frame t -> node of frame t+1), and
        ``backward`` ``(B, T-1, N, N)``, ``backward[:, t]`` = P(node of frame t+1 -> node of frame t), the
        row-softmax of the transposed affinity. Each has its own dropout mask; the backward one is also
        missing every edge the forward mask dropped (transposed), as the authors' in-place masking does.
    """
    _check_feats(feats, "palindrome_transitions")
    affinity = feats[:, :-1] @ feats[:, 1:].transpose(-1, -2)  # (B, T-1, N, N)
    if dropout <= 0:
        return _stochastic(affinity, temperature, None), _stochastic(affinity.transpose(-1, -2), temperature, None)
    drop_fwd = _edge_mask(affinity.shape, dropout, affinity.device, generator)
    drop_bwd = _edge_mask(affinity.shape, dropout, affinity.device, generator) | drop_fwd.transpose(-1, -2)
    return (
        _stochastic(affinity, temperature, drop_fwd),
        _stochastic(affinity.transpose(-1, -2), temperature, drop_bwd),
    )


def palindrome_walks(forward: Tensor, backward: Tensor) -> Tensor:
    """Round-trip matrices of the palindromes ``0 -> 1 -> ... -> k -> ... -> 1 -> 0``, k = 1 .. T-1.

    Args:
        forward: ``(B, T-1, N, N)`` from :func:`palindrome_transitions`.
        backward: ``(B, T-1, N, N)`` likewise.
    Returns:
        ``(B, T-1, N, N)``: entry ``k-1`` is ``F_0 F_1 ... F_{k-1} B_{k-1} ... B_1 B_0``, the probability
        of walking from node i of frame 0 out to frame k and back to node j of frame 0 (rows sum to 1).
    """
    if forward.dim() != 4 or forward.shape != backward.shape or forward.shape[-1] != forward.shape[-2]:
        raise ValueError(
            f"palindrome_walks: forward and backward must both be (B, T-1, N, N), got {tuple(forward.shape)} "
            f"and {tuple(backward.shape)}"
        )
    walks = []
    out = back = None
    for k in range(forward.shape[1]):
        # out = F_0 .. F_k and back = B_k .. B_0, each grown by one matrix: 2 products per cycle length
        out = forward[:, k] if out is None else out @ forward[:, k]
        back = backward[:, k] if back is None else backward[:, k] @ back
        walks.append(out @ back)
    return torch.stack(walks, dim=1)


# ----------------------------------------------------------------------------------------------------------
# The method


class CRW(SSLMethod):
    """CRW (see the module docstring). ``forward(batch) -> (loss, metrics)``; no state besides the encoder."""

    Config = CRWConfig

    def __init__(self, cfg: CRWConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input = cfg.input
        self.backbone = build_backbone(cfg.backbone)
        self.clip_encoder = ClipEncoder(self.backbone)
        self.head = nn.Linear(self.backbone.num_features, cfg.dim)  # the code's head_depth 0: one linear layer
        self.augment = crop_flip(cfg.crop_size, scale=cfg.crop_scale, ratio=cfg.crop_ratio, hflip=0.0, per_frame=True)

    def sampler(self) -> Sampler:
        """``clip_len`` frames ``frame_stride`` apart, the start uniform.

        The authors resample Kinetics to 8 fps (``--frame-skip 8`` is a frame *rate* there, a frame *gap* for
        frame folders). The sampler does not know a video's frame rate, so the rate is approximated by a
        fixed gap: 4 frames is 7.5 fps on 30 fps video (most of Kinetics); use 3 for 24-25 fps sources.
        """
        return FrameSampler(random_clip, {"length": self.cfg.clip_len, "stride": self.cfg.frame_stride})

    def encoder(self) -> ResNet:
        """The backbone (the one to export and evaluate)."""
        return self.backbone

    def nodes(self, video: Tensor) -> Tensor:
        """uint8 ``(B, C, T, H, W)`` -> L2-normalised node embeddings ``(B, T, N, dim)``, N patches per frame."""
        if video.dim() != 5 or video.dtype != torch.uint8 or video.shape[1] != 3:
            got = f"{video.dtype} {tuple(video.shape)}"
            raise ValueError(f"crw: batch['video'] must be uint8 (B, 3, T, H, W), got {got}")
        if video.shape[2] < 2:
            raise ValueError(f"crw: clips need at least 2 frames for a walk, got T={video.shape[2]}")
        clip = imagenet_normalize(self.augment(to_float(video)))  # (B, 3, T, s, s), one crop per frame
        patches = patch_grid(clip, self.cfg.patch_size, self.cfg.patch_stride, jitter=self.cfg.patch_jitter)
        b, n, c, t, p, _ = patches.shape  # (B, N, C, T, p, p)
        nodes = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, c, t * n, p, p)  # the T x N nodes as one sequence
        emb = F.normalize(self.head(self.clip_encoder(nodes)), dim=-1)  # mean pool per patch, linear, L2
        return emb.view(b, t, n, -1)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        feats = self.nodes(batch["video"])  # (B, T, N, D)
        rate = self.cfg.dropout if self.training else 0.0  # edge dropout only while training
        forward, backward = palindrome_transitions(feats, self.cfg.temperature, rate)
        walks = palindrome_walks(forward, backward)[:, self.cfg.min_cycle - 1:]  # (B, K, N, N)
        loss, per_cycle, accuracy = walk_loss(walks)
        metrics: Metrics = {"acc": accuracy.mean()}
        for i, k in enumerate(range(self.cfg.min_cycle, feats.shape[1])):
            metrics[f"loss_k{k}"] = per_cycle[i].detach()
            metrics[f"acc_k{k}"] = accuracy[i]
        return loss, metrics
