"""MAST: self-supervised dense tracking by reconstructing a dropped colour channel through a memory.

Lai, Lu & Xie, "MAST: A Memory-Augmented Self-supervised Tracker", CVPR 2020,
https://arxiv.org/abs/2002.07793; the authors' code is ``zlai0/MAST`` (``models/mast.py``,
``models/colorizer.py``, ``main.py``).

Frames are converted to Lab and normalised by mean (50, 0, 0) / std (50, 127, 127). One of the a/b channels
is zeroed in every frame of a sample (the rest rescaled by 3/2, as the code's ``dropout2d_lab``) and the
encoder must reconstruct it in the target frame by copying the reference frames' true values through a
softmax affinity restricted to a local window (radius 6 during training) of stride-4 features. The loss is
smooth-L1 on the values x20 at full resolution (the copy is bilinearly upsampled, as ``compute_lphoto``).

- **Stage 1** (``mast``, the released recipe): one reference and one target, gaps {2, 5, 8} with
  probabilities {0.4, 0.4, 0.2}.
- **Stage 2** (``mast_stage2``, described in the paper, never released): the memory of the test-time tracker
  trained end to end. Choices the paper leaves open, made here: a sample is one fixed layout of frames,
  ``start + [long_term..., target - short_term..., target]`` with ``target = target_offset`` (default 20:
  long-term references 0 and 5 at distances 20 and 15, short-term t-5, t-3, t-1), so every sample exercises
  both the ROI search (frame 0 is more than ``roi_after`` = 15 frames back) and the local windows; all
  references enter one joint softmax; gradients flow through the coarse ROI search as in the authors'
  ``Colorizer``; initialisation from a stage-1 checkpoint (``init_from``).

Where vidssl differs from the authors' code, deliberately:
- The affinity is ``<f_t, f_r> / sqrt(C)`` (PROTOCOLS.md: newer PyTorch does not converge without it) on the
  backbone's own stride-4 features; the code adds a 3x3 convolution to 64 channels (``post_convolution``),
  which the exported encoder would not contain, so evaluation would not see what training shaped.
- Window positions outside the reference frame are excluded from the softmax. The code's zero padding
  makes them candidates with logit 0 that copy the value 0, which biases borders towards zero chroma.
- The channel to drop is drawn per sample (the code draws one per batch: the same law per sample).
- Frames arrive from the dataset resized to cover the crop and cut (the code squashes whole frames to
  256x256); no other augmentation, as the code.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vidssl.data.augment import resize_clip, to_float
from vidssl.data.samplers import DEFAULT_SHORT, ShortPolicy, _fit, _timeline, gap_tuple
from vidssl.data.views import FrameSampler, Sampler
from vidssl.methods.base import Metrics, SSLMethod
from vidssl.models import ClipEncoder, ResNet, build_backbone, load_backbone_weights
from vidssl.nn.colour import InputSpace, mast_normalize_lab, rgb_to_lab
from vidssl.nn.local_attention import local_attention, roi_dilation, roi_offsets

__all__ = [
    "MAST", "MASTConfig", "MASTStage2", "MASTStage2Config", "drop_ab_channel", "local_affinity_copy", "memory_tuple",
]


@dataclass
class MASTConfig:
    """MAST stage 1 (the ``model:`` section of a run config). Defaults: the authors' ``main.py``."""

    backbone: str = "resnet18_mast"  # ResNet-18 without max-pool, layer3/4 at stride 1: stride-4 features
    radius: int = 6  # R of the (2R+1)^2 window at training (``MAST.R = 6 if training``)
    crop_size: int = 256  # frames resized to 256x256 (``YTVOSTrainLoader.image_loader``)
    gaps: tuple[int, ...] = (2, 5, 8)  # reference -> target gaps (``YouTubeVOSTrain.dataloader``)
    gap_probs: tuple[float, ...] = (0.4, 0.4, 0.2)
    loss_scale: float = 20.0  # smooth-L1 on values x20 (``compute_lphoto``)
    input: Literal["video"] = "video"  # a copy needs a second frame: still images are not supported

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.radius < 1 or self.crop_size < 8:
            raise ValueError(f"{name}: radius must be >= 1 and crop_size >= 8, got {self.radius}, {self.crop_size}")
        if len(self.gaps) != len(self.gap_probs) or not self.gaps or min(self.gaps) < 1:
            raise ValueError(f"{name}: gaps must be positive with one probability each, got {self.gaps}, "
                             f"{self.gap_probs}")
        if self.loss_scale <= 0:
            raise ValueError(f"{name}: loss_scale must be positive, got {self.loss_scale}")
        if self.input != "video":
            raise ValueError(f"{name}: input must be 'video' (a copy needs two frames), got {self.input!r}")


# ----------------------------------------------------------------------------------------------------------
# Pure functions


def drop_ab_channel(lab: Tensor, channel: Tensor) -> Tensor:
    """Zero channel ``channel[b]`` (1 = a, 2 = b) of every frame of sample b and rescale all by 3/2.

    Args:
        lab: ``(B, 3, T, H, W)`` normalised Lab.
        channel: ``(B,)`` long in {1, 2}.
    Returns:
        ``(B, 3, T, H, W)``: the input the encoder sees (the code's ``dropout2d_lab``: ``a *= 3 / (3 - 1)``).
    """
    if lab.dim() != 5 or lab.shape[1] != 3:
        raise ValueError(f"drop_ab_channel: lab must be (B, 3, T, H, W), got {tuple(lab.shape)}")
    if channel.shape != (lab.shape[0],) or not bool(((channel == 1) | (channel == 2)).all()):
        raise ValueError(f"drop_ab_channel: channel must be (B,) in {{1, 2}}, got {channel.tolist()}")
    keep = torch.ones(lab.shape[0], 3, device=lab.device, dtype=lab.dtype)
    keep[torch.arange(lab.shape[0], device=lab.device), channel.to(lab.device)] = 0.0
    return lab * (1.5 * keep).view(lab.shape[0], 3, 1, 1, 1)


def local_affinity_copy(
    feat_t: Tensor, feat_r: Tensor, values_r: Tensor, radius: int, scale: float | None = None
) -> Tensor:
    """Copy reference values to the target through a local softmax affinity.

    Args:
        feat_t: ``(B, C, h, w)`` target features.
        feat_r: ``(B, C, h, w)`` reference features.
        values_r: ``(B, V, H', W')`` reference values; at ``(H', W') = s (h, w)`` they are read at every s-th
            pixel from the top-left (the code's ``prep``: ``x[:, :, ::D, ::D]``).
        radius: R; target position p sees reference positions p + d with ``|d_y|, |d_x| <= R``.
        scale: logit scale, ``1 / sqrt(C)`` when ``None``.
    Returns:
        ``(B, V, h, w)``: ``sum_d softmax_d(scale <f_t(p), f_r(p + d)>) v_r(p + d)`` over the window positions
        inside the frame. Computed one displacement at a time: memory ``O((2R+1)^2 h w)``, never ``(hw)^2``.
    """
    return local_attention(feat_t, [(feat_r, values_r, None)], radius, scale)


def memory_tuple(
    num_frames: int,
    rng: np.random.Generator,
    long_term: Sequence[int] = (0, 5),
    short_term: Sequence[int] = (5, 3, 1),
    target_offset: int = 20,
    short: ShortPolicy = DEFAULT_SHORT,
) -> np.ndarray:
    """Stage 2's frames in one tuple: ``start + [*long_term, *(target_offset - short_term), target_offset]``.

    The last index is the target, the others its references (long-term first, then short-term, increasing).
    The start is uniform over all starts that fit; shorter videos follow the short-video policy.
    ``(len(long_term) + len(short_term) + 1,)`` int64.
    """
    offsets = [*long_term, *(target_offset - k for k in short_term), target_offset]
    if any(b <= a for a, b in itertools.pairwise(offsets)) or min(offsets) < 0:
        raise ValueError(f"memory_tuple: reference offsets {offsets[:-1]} must increase, be >= 0 and precede the "
                         f"target {target_offset}")
    n = _timeline("memory_tuple", num_frames, target_offset + 1, short)
    start = rng.integers(0, n - target_offset)
    return _fit(start + np.asarray(offsets, dtype=np.int64), num_frames, short)


# ----------------------------------------------------------------------------------------------------------
# The methods


class _ChannelCopy(SSLMethod):
    """What both stages share: Lab input, channel dropout, stride-4 features, the loss. ``copy`` differs."""

    encoder_input: InputSpace = "lab"  # checkpoints record it: the evaluation feeds this encoder Lab, not RGB

    def __init__(self, cfg: MASTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input = cfg.input
        self.backbone = build_backbone(cfg.backbone)
        self.clip_encoder = ClipEncoder(self.backbone)

    def encoder(self) -> ResNet:
        """The backbone (the one to export and evaluate, fed normalised Lab)."""
        return self.backbone

    def lab(self, video: Tensor) -> Tensor:
        """uint8 ``(B, 3, T, H, W)`` -> normalised Lab ``(B, 3, T, s, s)`` at ``crop_size``."""
        if video.dim() != 5 or video.dtype != torch.uint8 or video.shape[1] != 3:
            raise ValueError(f"mast: batch['video'] must be uint8 (B, 3, T, H, W), got {video.dtype} "
                             f"{tuple(video.shape)}")
        return mast_normalize_lab(rgb_to_lab(resize_clip(to_float(video), self.cfg.crop_size)))

    def features(self, x: Tensor) -> Tensor:
        """``(B, 3, T, H, W)`` -> ``(B, T, C, h, w)`` stride-4 features of every frame."""
        return self.clip_encoder.forward_features(x).transpose(1, 2)

    def copy(self, feats: Tensor, values: Tensor) -> Tensor:
        """Reconstruct the last frame's values from the others: ``(B, T, C, h, w)``, ``(B, 1, T, H, W)`` ->
        ``(B, 1, h, w)``."""
        raise NotImplementedError

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        lab = self.lab(batch["video"])  # (B, 3, T, s, s)
        b, _, t, h, w = lab.shape
        if t < 2:
            raise ValueError(f"mast: clips need a reference and a target frame, got T={t}")
        channel = torch.randint(1, 3, (b,), device=lab.device)  # the a or b channel, per sample
        truth = lab.gather(1, channel.view(b, 1, 1, 1, 1).expand(b, 1, t, h, w))  # (B, 1, T, s, s)
        out = self.copy(self.features(drop_ab_channel(lab, channel)), truth)  # (B, 1, h', w')
        out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)
        target = truth[:, :, -1]
        k = self.cfg.loss_scale
        loss = F.smooth_l1_loss(out * k, target * k)
        return loss, {"l1": (out.detach() - target).abs().mean()}


class MAST(_ChannelCopy):
    """MAST stage 1 (see the module docstring). ``forward(batch) -> (loss, metrics)``; no state besides the encoder."""

    Config = MASTConfig

    def sampler(self) -> Sampler:
        """Reference then target, the gap drawn from ``gaps`` with ``gap_probs``. ``(2,)``."""
        return FrameSampler(gap_tuple, {"size": 2, "gaps": list(self.cfg.gaps), "probs": list(self.cfg.gap_probs)})

    def copy(self, feats: Tensor, values: Tensor) -> Tensor:
        """Frame 1 from frame 0: ``(B, 2, C, h, w)``, ``(B, 1, 2, H, W)`` -> ``(B, 1, h, w)``."""
        return local_affinity_copy(feats[:, -1], feats[:, 0], values[:, :, 0], self.cfg.radius)


@dataclass
class MASTStage2Config(MASTConfig):
    """MAST stage 2: the memory trained end to end (never released; the module docstring lists the choices)."""

    long_term: tuple[int, ...] = (0, 5)  # offsets from the sample's first frame, as the test-time memory {0, 5}
    short_term: tuple[int, ...] = (5, 3, 1)  # frames back from the target (t-5, t-3, t-1), as at test
    target_offset: int = 20  # the target's offset: frame 0 is 20 back (ROI), frame 5 15 back (local window)
    roi_after: int = 15  # references more than this many frames back use the ROI search (``dil_int = 15``)
    search_radius: int = 12  # coarse search window 25x25 (``memory_patch_R = 12``)
    max_dilation: int = 4  # the coarse window's dilation is min(4, distance // 15 + 1), as the code
    init_from: str | None = None  # a stage-1 checkpoint (vidssl run checkpoint or encoder state dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        memory_tuple(self.target_offset + 1, np.random.default_rng(0), self.long_term, self.short_term,
                     self.target_offset)  # raises on an impossible layout
        if self.roi_after < 1 or self.search_radius < 1 or self.max_dilation < 1:
            raise ValueError("MASTStage2Config: roi_after, search_radius and max_dilation must be positive")


class MASTStage2(_ChannelCopy):
    """MAST stage 2: all references of the memory in one joint softmax, the far ones through the ROI search."""

    Config = MASTStage2Config
    cfg: MASTStage2Config

    def __init__(self, cfg: MASTStage2Config) -> None:
        super().__init__(cfg)
        if cfg.init_from:
            load_backbone_weights(self.backbone, cfg.init_from)  # a stage-1 run checkpoint's encoder

    def sampler(self) -> Sampler:
        """References and target in one tuple (:func:`memory_tuple`)."""
        c = self.cfg
        return FrameSampler(memory_tuple, {"long_term": c.long_term, "short_term": c.short_term,
                                           "target_offset": c.target_offset})

    def reference_distances(self) -> list[int]:
        """How many frames each reference lies before the target, in sampler order."""
        c = self.cfg
        return [c.target_offset - x for x in c.long_term] + list(c.short_term)

    def copy(self, feats: Tensor, values: Tensor) -> Tensor:
        """``(B, T, C, h, w)``, ``(B, 1, T, H, W)`` -> ``(B, 1, h, w)`` through the joint memory."""
        c = self.cfg
        distances = self.reference_distances()
        if feats.shape[1] != len(distances) + 1:
            raise ValueError(f"mast_stage2: clips need {len(distances) + 1} frames (the sampler's layout), "
                             f"got {feats.shape[1]}")
        scale = 1.0 / math.sqrt(feats.shape[2])
        target = feats[:, -1]
        refs = []
        for i, d in enumerate(distances):
            offset = None
            if d > c.roi_after:
                dil = roi_dilation(d, c.roi_after, c.max_dilation)
                offset = roi_offsets(target, feats[:, i], dil, c.search_radius, scale)
            refs.append((feats[:, i], values[:, :, i], offset))
        return local_attention(target, refs, c.radius, scale)

