"""Views: where a method's positives come from, in one place.

Two halves. On the data side, a **sampler** picks the frames one sample needs, ``sampler(video, rng) ->
int64 indices``, where ``video`` is a :class:`VideoInfo` (its length, frame rate, short-video policy, and its
shots and motion, computed on first use): the dataset decodes those frames once. On the device side, a
**view** turns the uint8 batch ``(B, C, T, H, W)`` into the augmented, normalised tensors the method compares.

- two augmentations of one image: a still image is a 1-frame clip, and :class:`TwoViews` augments frame 0
  twice, independently;
- two frames (or clips) of one video at a sampled gap: :func:`frame_pair` (or any clip sampler) draws them,
  and :class:`TwoViews` augments frame 0 and frame 1;
- frames of one shot: :class:`ShotFrames` (shots from ``vidssl.data.shots``);
- multi-crop (SwAV, DINO): :class:`MultiCrop`, global crops and smaller local ones.

So one method file trains on still images and on video by configuration alone: the dataset delivers 1-frame
clips for images and the sampler's frames for video, and the views read what they are given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment, to_float
from vidssl.data.samplers import (
    DEFAULT_SHORT,
    ShortPolicy,
    Shot,
    frames_within_shot,
    pseudo_shots,
    shots_within_video,
)
from vidssl.nn.colour import InputSpace, normalize_input

__all__ = [
    "ContentSampler",
    "FrameSampler",
    "MultiCrop",
    "Sampler",
    "ShotFrames",
    "ShotSequence",
    "StillFrame",
    "TwoViews",
    "VideoInfo",
]


def _no_shots() -> Sequence[Shot]:
    raise ValueError("this dataset does not provide shots (a VideoInfo built without them)")


def _no_motion(method: str = "flow") -> np.ndarray:
    raise ValueError("this dataset does not provide motion scores (a VideoInfo built without them)")


@dataclass(frozen=True)
class VideoInfo:
    """What a sampler may know of the video it draws from. ``shots()`` (half-open frame ranges) and
    ``motion(method="flow")`` (``(num_frames - 1,)`` per-transition scores, ``"flow"`` or ``"diff"`` as
    :func:`vidssl.data.motion.motion_scores`) are computed by the dataset on first call."""

    num_frames: int
    fps: float = 30.0
    short: ShortPolicy = DEFAULT_SHORT
    shots: Callable[[], Sequence[Shot]] = field(default=_no_shots, repr=False, compare=False)
    motion: Callable[..., np.ndarray] = field(default=_no_motion, repr=False, compare=False)


Sampler = Callable[[VideoInfo, np.random.Generator], np.ndarray]
"""``(video, rng) -> frame indices`` (any shape; the dataset flattens it into T in that order)."""


@dataclass(frozen=True)
class FrameSampler:
    """A pure sampler of ``vidssl.data.samplers`` (or a method's own) as a :data:`Sampler`:
    ``fn(video.num_frames, rng, short=video.short, **kwargs)``. Picklable for data-loader workers when ``fn``
    is a module-level function."""

    fn: Callable[..., np.ndarray]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __call__(self, video: VideoInfo, rng: np.random.Generator) -> np.ndarray:
        return self.fn(video.num_frames, rng, short=video.short, **self.kwargs)


@dataclass(frozen=True)
class ContentSampler:
    """A sampler of ``vidssl.data.samplers`` that reads the video's content: ``fn(video.num_frames, rng,
    short=video.short, motion=video.motion(motion) (when ``motion`` names a measure), shots=video.shots() (when
    ``shots``), **kwargs)``: the motion- and shot-aware tuples and clips of the temporal-order tasks."""

    fn: Callable[..., np.ndarray]
    kwargs: dict[str, Any] = field(default_factory=dict)
    motion: str | None = None  # "flow", "diff" or None (no motion weighting)
    shots: bool = False

    def __call__(self, video: VideoInfo, rng: np.random.Generator) -> np.ndarray:
        extra: dict[str, Any] = {}
        if self.motion is not None:
            extra["motion"] = video.motion(self.motion)
        if self.shots:
            extra["shots"] = video.shots()
        return self.fn(video.num_frames, rng, short=video.short, **extra, **self.kwargs)


@dataclass(frozen=True)
class StillFrame:
    """Frame 0: what a still image (a 1-frame clip) offers. ``(1,)``."""

    def __call__(self, video: VideoInfo, rng: np.random.Generator) -> np.ndarray:
        return np.zeros(1, dtype=np.int64)


@dataclass(frozen=True)
class ShotFrames:
    """``num`` frames of one shot of the video (positives of VIVI's frame level), sorted. ``(num,)``."""

    num: int = 2

    def __call__(self, video: VideoInfo, rng: np.random.Generator) -> np.ndarray:
        return frames_within_shot(video.shots(), rng, num=self.num, short=video.short)


@dataclass(frozen=True)
class ShotSequence:
    """``num_shots`` consecutive shots of the video, ``frames_per_shot`` sorted frames in each (VIVI's hierarchy:
    frames within shots within a video). A video whose shots (``vidssl.data.shots``) are fewer than ``num_shots``
    is cut into pseudo-shots of ``pseudo_shot_len`` frames first (None: never). ``(num_shots, frames_per_shot)``."""

    num_shots: int = 4
    frames_per_shot: int = 2
    pseudo_shot_len: int | None = 30

    def __call__(self, video: VideoInfo, rng: np.random.Generator) -> np.ndarray:
        shots = list(video.shots())
        if len(shots) < self.num_shots and self.pseudo_shot_len is not None:
            shots = pseudo_shots(shots, self.pseudo_shot_len)
        return shots_within_video(shots, rng, self.num_shots, self.frames_per_shot, short=video.short)


def _check_batch(video: Tensor, where: str) -> None:
    if video.dim() != 5 or video.dtype != torch.uint8 or video.shape[1] != 3:
        raise ValueError(f"{where}: batch['video'] must be uint8 (B, 3, T, H, W), got {video.dtype} "
                         f"{tuple(video.shape)}")


class TwoViews(nn.Module):
    """Two positives per sample: frames 0 and 1 of the clip (two frames of one video), or frame 0 twice when
    the clip has one frame (two augmentations of one image), each augmented independently and normalised for
    an encoder fed ``input``. ``second``: another augmentation for the second view (BYOL's asymmetric pair).
    uint8 ``(B, 3, T, H, W)`` -> two ``(B, 3, s, s)``."""

    def __init__(self, augment: ClipAugment, input: InputSpace = "rgb", second: ClipAugment | None = None) -> None:
        super().__init__()
        self.augment, self.second = augment, second
        self.input: InputSpace = input

    def forward(self, video: Tensor) -> tuple[Tensor, Tensor]:
        _check_batch(video, "TwoViews")
        b, t = video.shape[0], video.shape[2]
        x0, x1 = to_float(video[:, :, :1]), to_float(video[:, :, min(1, t - 1)].unsqueeze(2))  # (B, C, 1, H, W)
        if self.second is None:  # one batched call, independent draws per view
            x = normalize_input(self.augment(torch.cat([x0, x1]))[:, :, 0], self.input)
            return x[:b], x[b:]
        return (normalize_input(self.augment(x0)[:, :, 0], self.input),
                normalize_input(self.second(x1)[:, :, 0], self.input))


class MultiCrop(nn.Module):
    """Caron et al.'s multi-crop (SwAV, DINO): ``num_global`` large crops and ``num_local`` small ones per
    sample, crop i cut from frame ``i mod T`` (so a still image gives every crop, a clip spreads them over
    its frames). ``global_augment`` is one augmentation for every global crop, or one per global crop (DINO's
    two differ: blur 1.0, then blur 0.1 with solarisation). uint8 ``(B, 3, T, H, W)`` -> a list of
    ``num_global`` ``(B, 3, S, S)`` then ``num_local`` ``(B, 3, s, s)``."""

    def __init__(
        self, global_augment: ClipAugment | Sequence[ClipAugment], local_augment: ClipAugment, num_global: int = 2,
        num_local: int = 6, input: InputSpace = "rgb",
    ) -> None:
        super().__init__()
        if num_global < 1 or num_local < 0:
            raise ValueError(f"MultiCrop: need num_global >= 1 and num_local >= 0, got {num_global}, {num_local}")
        self.global_augment: nn.Module
        if isinstance(global_augment, ClipAugment):
            self.global_augment = global_augment
        else:
            augments = list(global_augment)
            if len(augments) != num_global:
                raise ValueError(f"MultiCrop: {len(augments)} global augmentations for {num_global} global crops")
            self.global_augment = nn.ModuleList(augments)
        self.local_augment = local_augment
        self.num_global, self.num_local = num_global, num_local
        self.input: InputSpace = input

    def forward(self, video: Tensor) -> list[Tensor]:
        _check_batch(video, "MultiCrop")
        b, t = video.shape[0], video.shape[2]
        x = to_float(video)

        def crops(augment: nn.Module, first: int, count: int) -> list[Tensor]:
            if count == 0:
                return []
            frames = torch.cat([x[:, :, (first + i) % t].unsqueeze(2) for i in range(count)])  # (count B, C, 1, H, W)
            return list(normalize_input(augment(frames)[:, :, 0], self.input).split(b))

        if isinstance(self.global_augment, nn.ModuleList):
            globals_ = [c for i, aug in enumerate(self.global_augment) for c in crops(aug, i, 1)]
        else:
            globals_ = crops(self.global_augment, 0, self.num_global)
        return globals_ + crops(self.local_augment, self.num_global, self.num_local)
