"""The arrow of time: is a clip playing forward or backward?

Wei, Lim, Zisserman & Freeman, "Learning and Using the Arrow of Time", CVPR 2018
(https://arxiv.org/abs/1807.05245). A clip of ``clip_len`` frames at ``stride`` (``clip_sequence``, inside one
shot, optionally without static transitions) is shown forward or reversed with equal probability and classified.
The paper insists on removing the artificial cues first, and so does this method: black borders are cropped
(``crop_borders``), clips never cross a cut (``shots``) and can be required to move at every transition
(``min_motion``), and frames can be stabilised by a homography to the central frame (``stabilize``,
:func:`vidssl.data.cues.stabilize`, on the CPU) against camera motion. ``input: rgb`` (the default on a CPU) feeds
the frames; ``input_mode: flow`` feeds the optical flow of consecutive frames as (dx, dy, magnitude) images, and
the reversed clip's flow is computed on the reversed frames: negating and reordering the forward flow would leave
a reversal cue (flow is not exactly antisymmetric at occlusions). The per-frame features, each through one shared
layer, are concatenated in the order shown and classified by an MLP (the paper's late temporal fusion; chance
ln 2).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment
from vidssl.data.cues import stabilize
from vidssl.data.motion import optical_flow
from vidssl.data.samplers import clip_sequence
from vidssl.methods.temporal import TemporalConfig, TemporalTask


@dataclass
class ArrowOfTimeConfig(TemporalConfig):
    """Arrow-of-time hyper-parameters (the ``model:`` section). The paper: 41-frame clips, flow stacks of 10."""

    clip_len: int = 8
    stride: int = 2
    input_mode: Literal["rgb", "flow"] = "rgb"
    flow_scale: float = 10.0  # flow in px divided by this, clamped to [-1, 1], before the trunk
    stabilize: bool = False
    frame_dim: int = 256
    hidden: int = 512

    def __post_init__(self) -> None:
        self.check("arrow_of_time")
        if self.clip_len < 2 or self.stride < 1 or min(self.frame_dim, self.hidden) < 1 or self.flow_scale <= 0:
            raise ValueError("arrow_of_time: clip_len >= 2, stride >= 1, frame_dim, hidden >= 1, flow_scale > 0")


def flow_images(clip: Tensor, scale: float) -> Tensor:
    """Optical flow of consecutive frames as images: float ``(3, T, H, W)`` in [0, 1] -> ``(T - 1, 3, H, W)`` of
    (dx, dy, magnitude) / ``scale``, clamped to [-1, 1] (Farneback, ``vidssl.data.motion.optical_flow``)."""
    rgb = clip.detach().cpu().mul(255).round().clamp(0, 255).byte().permute(1, 2, 3, 0).numpy()  # (T, H, W, 3)
    grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in rgb]
    flows = [optical_flow(a, b) for a, b in itertools.pairwise(grey)]  # (H, W, 2) each
    f = torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2)  # (T - 1, 2, H, W)
    out = torch.cat([f, f.norm(dim=1, keepdim=True)], dim=1) / scale
    return out.clamp(-1, 1).to(clip.device, clip.dtype)


class ArrowOfTime(TemporalTask):
    """The arrow of time (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = ArrowOfTimeConfig
    num_classes = 2

    def __init__(self, cfg: ArrowOfTimeConfig) -> None:
        super().__init__(cfg)
        self.use_sampler(clip_sequence, num_clips=1, length=cfg.clip_len, stride=cfg.stride)
        self.augment = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, hflip=cfg.hflip)
        steps = cfg.clip_len - 1 if cfg.input_mode == "flow" else cfg.clip_len
        self.frame_layer = nn.Sequential(nn.Linear(self.backbone.num_features, cfg.frame_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Sequential(nn.Linear(steps * cfg.frame_dim, cfg.hidden), nn.ReLU(inplace=True),
                                        nn.Linear(cfg.hidden, 2))

    def inputs(self, x: Tensor, reverse: Tensor) -> Tensor:
        """Augmented clips ``(B, 3, T, S, S)`` -> the trunk's inputs ``(B, K, 3, S, S)`` in the order shown: the frames
        reversed in time where ``reverse``, then (flow input) the flow of the frames as shown."""
        shown = torch.where(reverse[:, None, None, None, None], x.flip(2), x)
        if self.cfg.input_mode == "rgb":
            return shown.transpose(1, 2)
        return torch.stack([flow_images(clip, self.cfg.flow_scale) for clip in shown])

    def task(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        video = batch["video"]
        if video.shape[2] != self.cfg.clip_len:
            raise ValueError(f"arrow_of_time: needs the {self.cfg.clip_len} frames of its sampler, "
                             f"got {video.shape[2]}")
        if self.cfg.stabilize:
            frames = video.permute(0, 2, 3, 4, 1).cpu().numpy()  # (B, T, H, W, 3)
            video = torch.from_numpy(np.stack([stabilize(f) for f in frames])).permute(0, 4, 1, 2, 3).to(video.device)
        x = self.augment(self.frames(video))
        b = x.shape[0]
        target = (torch.rand(b) < 0.5).long().to(x.device)  # 1: shown backward
        feats = self.frame_layer(self.center(self.embed(self.inputs(x, target.bool()),
                                                     normalize=self.cfg.input_mode == "rgb")))
        return self.classifier(feats.flatten(1)), target
