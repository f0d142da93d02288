"""The shared form of the temporal-order tasks (Shuffle and Learn, OPN, the arrow of time, O3N, VCOP).

A sample is a set of frames of one video, drawn by a motion- and shot-aware sampler of
:mod:`vidssl.data.samplers` (through :class:`vidssl.data.views.ContentSampler`: windows inside one shot, weighted
by optical-flow or frame-difference motion, optionally without static transitions); the method presents them in
an order it drew itself and classifies that order, so it is a :class:`PretextClassifier` (cross-entropy, ``acc``,
``vidssl eval pretext``). Frames are read as one clip: black borders are cropped first (``crop_borders``,
:func:`vidssl.data.cues.crop_black_borders`), then one random crop and flip is shared by every frame of the sample,
since a crop that differed between frames would be a cue of its own. The encoder is the 2D trunk applied to each
frame (``self.backbone``), which ``vidssl eval davis`` and ``vidssl eval knn`` accept. At every checkpoint the
training loop writes what the trunk was shown for a few samples (:meth:`TemporalTask.visuals`): one row per
sample, its frames (or frame differences) in the order presented, framed green where the order was classified
right and red where not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from vidssl.data.augment import to_float
from vidssl.data.cues import crop_black_borders
from vidssl.data.views import ContentSampler, Sampler
from vidssl.methods.frame_task import PretextClassifier
from vidssl.models import build_backbone
from vidssl.nn.colour import normalize_input

__all__ = ["TemporalConfig", "TemporalTask"]


@dataclass
class TemporalConfig:
    """What every temporal-order task's ``model:`` section has (each method's Config adds its own)."""

    backbone: str = "resnet18"
    input: Literal["video"] = "video"
    motion: Literal["flow", "diff", "none"] = "flow"  # the windows' weights: OpenCV flow, frame difference, none
    shots: bool = True  # windows inside one shot (vidssl.data.shots), never across a cut
    min_motion: float = 0.0  # > 0: no transition of the window moves less (static frames left out)
    crop_size: int = 224
    crop_scale: tuple[float, float] = (0.5, 1.0)
    hflip: float = 0.5
    crop_borders: bool = True  # black borders found from row and column means and cropped (Wei et al. 2018)
    border_threshold: float = 0.06
    # Subtract from each frame's (or clip's) trunk features their mean over the sample before the head (a vidssl
    # option, not in the papers): what is common to a sample's frames is most of their features and says nothing of
    # their order; without it OPN's head stays at ln 12 on frozen random-trunk features (docs/results.md).
    center_frames: bool = False

    def check(self, where: str) -> None:
        if self.crop_size < 8 or not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"{where}: crop_size >= 8 and 0 < crop_scale[0] <= crop_scale[1] <= 1")
        if self.min_motion < 0 or (self.min_motion > 0 and self.motion == "none"):
            raise ValueError(f"{where}: min_motion must be >= 0, and > 0 needs a motion measure (motion: flow or diff)")


class TemporalTask(PretextClassifier):
    """A temporal-order task (see the module docstring): ``self.backbone`` per frame, the sampler of the config."""

    cfg: Any
    _sampler: Sampler

    def __init__(self, cfg: TemporalConfig, image_trunk: bool = True) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        if image_trunk:  # (VCOP builds a clip trunk instead when its config names one)
            self.backbone = build_backbone(cfg.backbone)

    def use_sampler(self, fn: Callable[..., np.ndarray], **kwargs: Any) -> None:
        """Draw samples by ``fn`` of :mod:`vidssl.data.samplers` with the config's motion, shots and ``min_motion``."""
        if self.cfg.min_motion > 0:
            kwargs["min_motion"] = self.cfg.min_motion
        motion = None if self.cfg.motion == "none" else self.cfg.motion
        self._sampler = ContentSampler(fn, kwargs, motion=motion, shots=self.cfg.shots)

    def sampler(self) -> Sampler:
        return self._sampler

    def frames(self, video: Tensor) -> Tensor:
        """uint8 ``(B, 3, T, H, W)`` -> float in [0, 1], black borders cropped when the config says so."""
        x = to_float(video)
        return crop_black_borders(x, self.cfg.border_threshold) if self.cfg.crop_borders else x

    def embed(self, x: Tensor, normalize: bool = True) -> Tensor:
        """Per-frame trunk features: ``(B, K, 3, S, S)`` (RGB in [0, 1], ImageNet-normalised here; or, with
        ``normalize=False``, an input the method scaled itself: differences, flow) -> ``(B, K, D)``."""
        b, k = x.shape[:2]
        flat = x.flatten(0, 1)
        feats: Tensor = self.backbone(normalize_input(flat, "rgb") if normalize else flat)
        if self._record is not None:
            self._record.append(x.detach())
        return feats.view(b, k, -1)

    def center(self, feats: Tensor) -> Tensor:
        """``(B, K, D)`` features of a sample's K frames or clips, less their mean over K when the config says
        ``center_frames`` (the mean is the same for every order of the K, so no order leaks through it)."""
        if not self.cfg.center_frames:
            return feats
        if feats.shape[1] < 2:
            raise ValueError(f"center_frames: a sample of {feats.shape[1]} frame or clip would be all zeros; it needs "
                             f"at least two")
        return feats - feats.mean(dim=1, keepdim=True)

    _record: list[Tensor] | None = None

    def visuals(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The trunk inputs of up to 6 samples in the order shown ``(rows, K, 3, S, S)``, framed by correctness."""
        self._record = []
        try:
            logits, target = self.task({key: value[:6] for key, value in batch.items()})
            shown = self._record[0] if self._record else None
        finally:
            self._record = None
        if shown is None:  # a clip trunk (VCOP's r3d_18): no frames to show
            return {}
        images = shown.float().reshape(logits.shape[0], -1, *shown.shape[-3:])  # O3N: every difference of a sample
        if images.min() < 0:  # differences or flow in [-1, 1]
            images = images * 0.5 + 0.5
        images = images.clamp(0, 1).clone()
        right = (logits.argmax(1) == target).float().view(-1, 1, 1, 1, 1)
        colour = torch.cat([1 - right, right, torch.zeros_like(right)], dim=2)  # red or green, (rows, 1, 3, 1, 1)
        border = max(1, images.shape[-1] // 16)
        for edge in (slice(0, border), slice(-border, None)):
            images[..., edge, :] = colour.expand_as(images[..., edge, :])
            images[..., :, edge] = colour.expand_as(images[..., :, edge])
        return {"order": images}
