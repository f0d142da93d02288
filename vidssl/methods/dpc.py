"""Dense Predictive Coding: predict the features of the next blocks of a video from the blocks before.

Han, Xie & Zisserman, "Video Representation Learning by Dense Predictive Coding", ICCV 2019 workshops
(https://arxiv.org/abs/1909.04656; TengdaHan/DPC). A sample is ``num_blocks`` contiguous blocks of ``block_len``
frames at ``stride`` (``vidssl.data.samplers.block_grid``; the paper: 8 blocks of 5 frames at stride 3), all frames
sharing one crop, flip and colour jitter. Every block is encoded into a feature map ``(D, h, w)``: by a clip trunk
(torchvision ``r3d_18``, averaged over its time axis; the paper's R-2D3D-18 is not in torchvision) or by a frame
trunk on each frame, averaged over the block's frames (``backbone: resnet18``, which ``vidssl eval davis`` and
``vidssl eval knn`` accept). A ConvGRU (``vidssl.nn.ConvGRU``, 1x1 kernels) aggregates the first ``num_blocks -
pred_steps`` blocks; a two-layer 1x1 predictor turns its state into the next block's features, which are fed back
into the GRU to predict the one after (the paper's autoregressive rollout), so a prediction never sees the blocks it
predicts (a test). The loss is DPC's dense InfoNCE (``vidssl.losses.dense_info_nce``): every predicted (block,
position) against every (sample, block, position) of the batch by raw dot products; chance ``ln(B x 3 x h w)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment, to_float
from vidssl.data.samplers import block_grid
from vidssl.data.views import FrameSampler, Sampler
from vidssl.losses import dense_info_nce
from vidssl.methods.base import Metrics, SSLMethod
from vidssl.models import build_backbone
from vidssl.models.registry import VIDEO_BACKBONES
from vidssl.nn.colour import normalize_input
from vidssl.nn.convgru import ConvGRU


@dataclass
class DPCConfig:
    """DPC hyper-parameters (the ``model:`` section). Defaults: the paper's sequence at 112 px on ``r3d_18``."""

    backbone: str = "r3d_18"
    input: Literal["video"] = "video"
    num_blocks: int = 8
    block_len: int = 5
    stride: int = 3
    pred_steps: int = 3
    crop_size: int = 112
    crop_scale: tuple[float, float] = (0.5, 1.0)
    color_jitter: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 0.25)
    jitter_p: float = 1.0
    gru_layers: int = 1
    dot_scale: float = 1.0  # the paper's raw dot products

    def __post_init__(self) -> None:
        if not 1 <= self.pred_steps < self.num_blocks or min(self.block_len, self.stride, self.crop_size) < 1:
            raise ValueError("dpc: 1 <= pred_steps < num_blocks, and block_len, stride, crop_size >= 1")


class DPC(SSLMethod):
    """DPC (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = DPCConfig

    def __init__(self, cfg: DPCConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        self.clip_trunk = VIDEO_BACKBONES[cfg.backbone]() if cfg.backbone in VIDEO_BACKBONES else None
        self.backbone = build_backbone(cfg.backbone) if self.clip_trunk is None else None
        trunk = self.clip_trunk if self.clip_trunk is not None else self.backbone
        assert trunk is not None
        dim = trunk.num_features
        self.aggregate = ConvGRU(dim, dim, cfg.gru_layers, kernel=1)
        self.predictor = nn.Sequential(nn.Conv2d(dim, dim, 1), nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 1))
        self.augment = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, hflip=0.5, color_jitter=cfg.color_jitter,
                                   jitter_p=cfg.jitter_p)

    def sampler(self) -> Sampler:
        cfg = self.cfg
        return FrameSampler(block_grid, {"num_blocks": cfg.num_blocks, "block_len": cfg.block_len,
                                         "stride": cfg.stride})

    def encoder(self) -> nn.Module:
        trunk = self.clip_trunk if self.clip_trunk is not None else self.backbone
        assert trunk is not None
        return trunk

    def block_features(self, clips: Tensor) -> Tensor:
        """Augmented frames ``(B, 3, N L, S, S)`` in [0, 1] -> block feature maps ``(B, N, D, h, w)``."""
        b, n, length = clips.shape[0], self.cfg.num_blocks, self.cfg.block_len
        x = normalize_input(clips, "rgb").view(b, 3, n, length, *clips.shape[-2:]).transpose(1, 2)  # (B, N, 3, L, ..)
        if self.clip_trunk is not None:
            maps = self.clip_trunk.forward_features(x.flatten(0, 1)).mean(dim=2)  # (B N, D, h, w)
        else:
            assert self.backbone is not None
            frames = x.transpose(2, 3).flatten(0, 2)  # (B N L, 3, S, S)
            maps = self.backbone.forward_features(frames)
            maps = maps.view(b * n, length, *maps.shape[1:]).mean(dim=1)
        return maps.view(b, n, *maps.shape[1:])

    def rollout(self, z: Tensor) -> Tensor:
        """Block features ``(B, N, D, h, w)`` -> predictions of the last ``pred_steps`` blocks ``(B, P, D, h, w)``,
        from the first ``N - P`` only."""
        p = self.cfg.pred_steps
        _, state = self.aggregate(torch.relu(z[:, : z.shape[1] - p]))
        preds = []
        for _ in range(p):
            pred = self.predictor(state[-1])
            preds.append(pred)
            _, state = self.aggregate(torch.relu(pred)[:, None], state)
        return torch.stack(preds, dim=1)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        video = batch["video"]
        cfg = self.cfg
        if video.shape[2] != cfg.num_blocks * cfg.block_len:
            raise ValueError(f"dpc: needs {cfg.num_blocks} blocks of {cfg.block_len} frames from its sampler, got "
                             f"{video.shape[2]} frames")
        z = self.block_features(self.augment(to_float(video)))
        pred = self.rollout(z)
        target = z[:, cfg.num_blocks - cfg.pred_steps:]
        d = z.shape[2]
        loss, acc = dense_info_nce(pred.permute(0, 1, 3, 4, 2).reshape(-1, d) * cfg.dot_scale,
                                   target.permute(0, 1, 3, 4, 2).reshape(-1, d))
        return loss, {"acc": acc}
