"""Odd-One-Out networks: which of N + 1 subsequences of a video is the one out of order?

Fernando, Bilen, Gavves & Gould, "Self-Supervised Video Representation Learning With Odd-One-Out Networks", CVPR
2017 (https://arxiv.org/abs/1611.06646; no public code, so the constants here are unverified, as
``../shared/RECIPES.md`` says). N + 1 = ``num_clips`` subsequences of ``clip_len`` frames come from one window of
the video (``odd_one_out_clips``, inside one shot); N keep their temporal order and one, at a uniformly drawn
index (the label), has its frames shuffled by a random non-identity permutation. Each subsequence is encoded as
the paper's frame-difference input (``input_mode: diff``: the trunk on each difference of consecutive frames, the
features averaged) or as a dynamic image (``dynamic``: approximate rank pooling, weights 2t - L - 1, Bilen et al.
2016), or as RGB frames (``rgb``). Branches share the trunk and a branch layer; the fusion is the sum of
differences (``sum_of_differences``): branch k's feature minus each other branch's, summed, scored by one shared
layer, so permuting the subsequences permutes the logits and the label alike (a test), or ``concat``, the
concatenation of all branches into one classifier. Chance ln(N + 1) (6: 1.7918).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment
from vidssl.data.samplers import odd_one_out_clips
from vidssl.methods.temporal import TemporalConfig, TemporalTask


@dataclass
class O3NConfig(TemporalConfig):
    """O3N hyper-parameters (the ``model:`` section). Unverified defaults (no public code): 6 subsequences."""

    num_clips: int = 6  # N + 1
    clip_len: int = 6
    stride: int = 2
    window: int = 60  # the window all subsequences come from
    input_mode: Literal["diff", "dynamic", "rgb"] = "diff"
    fusion: Literal["sum_of_differences", "concat"] = "sum_of_differences"
    branch_dim: int = 256
    crop_size: int = 112

    def __post_init__(self) -> None:
        self.check("o3n")
        if self.num_clips < 2 or self.clip_len < 3 or self.stride < 1 or self.branch_dim < 1:
            raise ValueError("o3n: num_clips >= 2, clip_len >= 3 (an order to break), stride >= 1, branch_dim >= 1")
        if self.window < (self.clip_len - 1) * self.stride + 1:
            raise ValueError(f"o3n: window {self.window} is shorter than one subsequence")


def shuffle_odd(clips: Tensor, odd: Tensor) -> Tensor:
    """Subsequences ``(B, K, L, ...)`` -> the same with subsequence ``odd[b]`` of each sample reordered by a uniformly
    drawn permutation of its L frames other than the identity."""
    b, _, length = clips.shape[:3]
    out = clips.clone()
    for i in range(b):
        perm = torch.randperm(length)
        while bool((perm == torch.arange(length)).all()):
            perm = torch.randperm(length)
        out[i, int(odd[i])] = clips[i, int(odd[i]), perm.to(clips.device)]
    return out


def dynamic_image(frames: Tensor) -> Tensor:
    """Approximate rank pooling of ``(..., L, C, H, W)`` frames: ``sum_t (2t - L - 1) x_t`` over ``t = 1..L``, divided
    by the sum of the positive weights, so it lies in [-1, 1] for frames in [0, 1]."""
    length = frames.shape[-4]
    alpha = 2 * torch.arange(1, length + 1, dtype=frames.dtype, device=frames.device) - length - 1
    di = torch.einsum("l,...lchw->...chw", alpha, frames)
    return di / alpha.clamp(min=0).sum()


class O3N(TemporalTask):
    """O3N (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = O3NConfig

    def __init__(self, cfg: O3NConfig) -> None:
        super().__init__(cfg)
        self.num_classes = cfg.num_clips
        self.use_sampler(odd_one_out_clips, num_clips=cfg.num_clips, length=cfg.clip_len, stride=cfg.stride,
                         window=cfg.window)
        self.augment = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, hflip=cfg.hflip)
        self.branch = nn.Sequential(nn.Linear(self.backbone.num_features, cfg.branch_dim), nn.ReLU(inplace=True))
        self.scorer = (nn.Linear(cfg.branch_dim, 1) if cfg.fusion == "sum_of_differences"
                       else nn.Linear(cfg.num_clips * cfg.branch_dim, cfg.num_clips))

    def branch_features(self, clips: Tensor) -> Tensor:
        """Subsequences ``(B, K, L, 3, S, S)`` in [0, 1] -> ``(B, K, branch_dim)``."""
        b, k = clips.shape[:2]
        mode = self.cfg.input_mode
        if mode == "dynamic":
            feats = self.embed(dynamic_image(clips).flatten(0, 1)[:, None], normalize=False).view(b, k, -1)
        else:
            x = clips[:, :, 1:] - clips[:, :, :-1] if mode == "diff" else clips  # differences in [-1, 1]
            steps = x.shape[2]
            feats = self.embed(x.flatten(0, 2)[:, None], normalize=mode == "rgb").view(b, k, steps, -1).mean(2)
        out: Tensor = self.branch(self.center(feats))
        return out

    def fuse(self, h: Tensor) -> Tensor:
        """Branch features ``(B, K, H)`` -> logits ``(B, K)``: which branch is the odd one."""
        if self.cfg.fusion == "concat":
            out: Tensor = self.scorer(h.flatten(1))
            return out
        diffs = h.shape[1] * h - h.sum(dim=1, keepdim=True)  # sum_j (h_k - h_j)
        return self.scorer(diffs).squeeze(-1)

    def logits(self, clips: Tensor) -> Tensor:
        """Subsequences ``(B, K, L, 3, S, S)`` -> ``(B, K)``."""
        return self.fuse(self.branch_features(clips))

    def task(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        video = batch["video"]
        k, length = self.cfg.num_clips, self.cfg.clip_len
        if video.shape[2] != k * length:
            raise ValueError(f"o3n: needs {k} subsequences of {length} frames from its sampler, got {video.shape[2]}")
        x = self.augment(self.frames(video))  # (B, 3, K L, S, S): one crop for every frame of the sample
        b = x.shape[0]
        clips = x.transpose(1, 2).reshape(b, k, length, *x.shape[1:2], *x.shape[3:])  # (B, K, L, 3, S, S)
        odd = torch.randint(0, k, (b,)).to(x.device)
        return self.logits(shuffle_odd(clips, odd)), odd
