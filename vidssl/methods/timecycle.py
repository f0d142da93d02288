"""TimeCycle: correspondence from the cycle-consistency of time, by differentiable patch tracking.

Wang, Jabri & Efros, "Learning Correspondence from the Cycle-Consistency of Time", CVPR 2019,
https://arxiv.org/abs/1903.07593; the authors' code is ``xiaolonw/TimeCycle`` (``models/videos/model_simple.py``,
``train_video_cycle_simple.py``, ``models/dataset/vlog_train.py``, ``geotnf/``).

A sample is a 4-frame clip (gap 2) and a later *target* frame; an 80 px patch is cut from the target (240 px
crop) at a random position among the 10 highest-motion cells, rotated by up to 45 degrees: its transform
``theta_gt`` is known. A tracking step takes the L2-normalised features of the current patch, forms the
affinity with the next frame's feature map (softmax over the frame's positions, temperature 1/sqrt(512)),
regresses a transform from that affinity with a small CNN (two 4x4 convolutions, a linear layer to
``(tx, ty, angle)``; the scale is fixed at patch/crop = 1/3) and samples the next patch's features with a
spatial transformer (``affine_grid`` / ``grid_sample``). Three terms, weighted as the code:

- **long cycles** (x0.02 = ``lamda * 0.2``): for c = 1..4, track the patch backward from the target through the
  last c clip frames, then forward again, then into the target; penalise the returned transform's drift from
  ``theta_gt`` (mean squared distance of a 20x20 grid of points, the code's ``TransformedGridLoss``);
- **skip cycles** (x0.1 = ``lamda``): target -> frame t -> target directly, for every t, with the same penalty;
- **feature similarity** (x1): the code's weak inlier count, the affinity mass that the predicted transform
  target -> frame t puts where it maps each patch cell (maximised).

Where vidssl differs from the authors' code, deliberately:
- Backbone: ResNet-18 with layer4 removed and layer3 at stride 1 (``resnet18_s8_l3``, the trunk vidssl
  evaluates); the paper's is a ResNet-50 res4 at stride 1 followed by a 1x1 convolution 1024 -> 512 + ReLU,
  which the exported encoder would not contain, so the affinity here is on the backbone's own features.
- ``grid_sample`` with ``align_corners=False`` (cell-centre aligned; the code ran on PyTorch 0.4's corner
  alignment) and without the code's ``offset_factor = 227/210`` stretch of translations.
- The backward chain patch -> frame 3 -> 2 -> ... is shared by the cycles of every length (the code recomputes
  it per cycle; the values are identical since the tracker has no randomness or batch norm).
- ``transform: procrustes`` replaces the regressor by a closed-form fit (soft-argmax of each patch cell's
  affinity, then the rotation and translation of least squares): parameter-free, used to test the tracker and
  by the 30-minute CPU config (``configs/cpu/timecycle.yaml``), in which the learned regressor does not yet
  localise (``docs/results.md``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment, to_float
from vidssl.data.samplers import DEFAULT_SHORT, ShortPolicy, _fit, _timeline
from vidssl.data.views import FrameSampler, Sampler
from vidssl.losses import cycle_loss
from vidssl.methods.base import Metrics, SSLMethod
from vidssl.models import ClipEncoder, ResNet, build_backbone, feature_size
from vidssl.nn.colour import imagenet_normalize
from vidssl.nn.geometry import affine_crop, fit_rigid, theta_from_params

__all__ = [
    "TimeCycle", "TimeCycleConfig", "TransformRegressor", "affinity", "cycle_loss", "fit_rigid", "inlier_score",
    "patch_theta", "theta_from_params", "timecycle_frames", "track_step",
]

Regress = Callable[[Tensor], Tensor]  # affinity (B, h*w, q, q) -> theta (B, 2, 3)


@dataclass
class TimeCycleConfig:
    """TimeCycle hyper-parameters (the ``model:`` section of a run config). Defaults: the authors' recipe."""

    backbone: str = "resnet18_s8_l3"  # stride 8 like the code's res4 at stride 1 (see the module docstring)
    clip_len: int = 4  # ``--videoLen 4``
    frame_gap: int = 2  # ``--frame_gap 2``
    pred_distance: int = 4  # ``predDistance``: the target is (clip_len + pred_distance) * gap - 1 after the start
    crop_size: int = 240  # ``cropSize``
    patch_size: int = 80  # ``cropSize2``; the transform's scale is patch_size / crop_size
    crop_scale: tuple[float, float] = (0.8789, 0.8789)  # a 240 px crop of a 256 px frame: (240 / 256)^2 of the area
    temperature: float = 512 ** -0.5  # ``--T``: the affinity is cos / T
    max_angle: float = 45.0  # degrees of the target patch's random rotation
    motion_grid: int = 9  # ``gridSize``: patch centres on the 7x7 windows of 3x3 cells of a 9x9 grid
    motion_topk: int = 10  # one of the 10 highest-motion windows
    cycle_weight: float = 0.02  # ``lamda * 0.2`` on the mean long-cycle loss
    skip_weight: float = 0.1  # ``lamda`` on the skip-cycle loss
    inlier_weight: float = 1.0  # the inlier (feature-similarity) term
    transform: Literal["learned", "procrustes"] = "learned"
    regressor_kernel: int = 4  # the code's 4x4 convolutions; smaller only for tiny test configurations
    input: Literal["video"] = "video"  # tracking needs frames: still images are not supported

    def __post_init__(self) -> None:
        if self.clip_len < 1 or self.frame_gap < 1 or self.pred_distance < 1:
            raise ValueError("timecycle: clip_len, frame_gap and pred_distance must be >= 1")
        if not 0 < self.patch_size < self.crop_size:
            raise ValueError(f"timecycle: need 0 < patch_size < crop_size, got {self.patch_size}, {self.crop_size}")
        if self.regressor_kernel < 1:
            raise ValueError(f"timecycle: regressor_kernel must be >= 1, got {self.regressor_kernel}")
        if self.temperature <= 0 or self.motion_grid < 4 or self.motion_topk < 1:
            raise ValueError("timecycle: temperature must be > 0, motion_grid >= 4 and motion_topk >= 1")
        if self.input != "video":
            raise ValueError(f"timecycle: input must be 'video' (tracking needs frames), got {self.input!r}")


def timecycle_frames(
    num_frames: int, rng: np.random.Generator, clip_len: int, gap: int, pred_distance: int,
    short: ShortPolicy = DEFAULT_SHORT,
) -> np.ndarray:
    """``clip_len`` frames ``gap`` apart, the target ``(clip_len + pred_distance) * gap - 1`` after the start, and
    the frame ``gap`` after the target (its difference picks the patch). ``(clip_len + 2,)`` int64."""
    target = (clip_len + pred_distance) * gap - 1
    span = target + gap + 1
    n = _timeline("timecycle_frames", num_frames, span, short)
    start = int(rng.integers(0, n - span + 1))
    idx = np.concatenate([start + gap * np.arange(clip_len), [start + target, start + target + gap]])
    return _fit(idx, num_frames, short)


# ----------------------------------------------------------------------------------------------------------
# Geometry and tracking: pure functions


def affinity(query: Tensor, frame: Tensor, temperature: float) -> Tensor:
    """Softmax over the frame's positions of ``<query cell, frame position> / temperature``.

    Args:
        query: ``(B, C, q, q)`` patch features, L2-normalised over C.
        frame: ``(B, C, h, w)`` frame features, L2-normalised over C.
    Returns:
        ``(B, h*w, q, q)``: channel ``y * w + x`` is the probability that a patch cell matches frame position
        ``(y, x)``; every cell's column sums to 1 (the code's ``compute_corr_softmax``).
    """
    if query.dim() != 4 or frame.dim() != 4 or query.shape[:2] != frame.shape[:2]:
        raise ValueError(f"affinity: need query (B, C, q, q) and frame (B, C, h, w), got {tuple(query.shape)}, "
                         f"{tuple(frame.shape)}")
    logits = torch.einsum("bcn,bcij->bnij", frame.flatten(2), query) / temperature
    return F.softmax(logits, dim=1)


def track_step(query: Tensor, frame: Tensor, regress: Regress, temperature: float) -> tuple[Tensor, Tensor, Tensor]:
    """One tracking step: ``query`` ``(B, C, q, q)`` (normalised) into ``frame`` ``(B, C, h, w)`` (raw features).

    Returns ``theta`` ``(B, 2, 3)`` from ``regress(affinity)``, the sampled patch ``(B, C, q, q)`` of raw
    features at ``theta`` (normalise it to use it as the next query, as the code), and the affinity.
    """
    aff = affinity(query, F.normalize(frame, dim=1), temperature)
    theta = regress(aff)
    return theta, affine_crop(frame, theta, query.shape[-1]), aff


def inlier_score(aff: Tensor, theta: Tensor, frame_hw: tuple[int, int], eps: float = 1e-5) -> Tensor:
    """The code's weak inlier count: the affinity mass at the frame position ``theta`` maps each patch cell to.

    ``aff`` ``(B, h*w, q, q)``, ``theta`` ``(B, 2, 3)`` -> ``(B,)`` in [0, 1]: the bilinear sample of cell k's
    affinity map at ``theta(cell k)``, averaged over the cells that land inside the frame.
    """
    b, _, q, q2 = aff.shape
    h, w = frame_hw
    pts = F.affine_grid(theta.to(aff.dtype), [b, 1, q, q2], align_corners=False).reshape(b * q * q2, 1, 1, 2)
    maps = aff.permute(0, 2, 3, 1).reshape(b * q * q2, 1, h, w)  # one affinity map per patch cell
    mass = F.grid_sample(maps, pts, align_corners=False).view(b, -1)
    inside = F.grid_sample(torch.ones_like(maps[:1]).expand_as(maps), pts, align_corners=False).view(b, -1)
    return mass.sum(1) / (inside.sum(1) + eps)


def patch_theta(
    motion: Tensor, scale: float, grid: int = 9, topk: int = 10, max_angle: float = 45.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The code's target patch: ``motion`` ``(B, H, W)`` -> ``theta`` ``(B, 2, 3)``.

    The frame is cut into ``grid`` x ``grid`` cells; one of the ``topk`` 3x3-cell windows with the most motion
    is chosen uniformly, its centre jittered by up to half a window step, and the patch rotated by up to
    ``max_angle`` degrees; translations are scaled by ``1 - scale`` so an unrotated patch stays inside.
    """
    b = motion.shape[0]
    cells = F.adaptive_avg_pool2d(motion[:, None].float(), grid)
    windows = F.avg_pool2d(cells, 3, stride=1).flatten(1)  # (B, (grid-2)^2), row-major (y, x)
    k = min(topk, windows.shape[1])
    top = windows.topk(k, dim=1).indices.cpu()
    dev = generator.device if generator is not None else torch.device("cpu")
    pick = top.gather(1, torch.randint(0, k, (b, 1), generator=generator, device=dev).cpu())[:, 0]
    n = grid - 3  # window index / n in [0, 1]
    loc = torch.stack([pick % (grid - 2), pick // (grid - 2)], 1).double() / n  # (x, y)
    loc = (loc + (torch.rand(b, 2, generator=generator, device=dev).cpu().double() - 0.5) / n).clamp(0, 1)
    angle = (torch.rand(b, generator=generator, device=dev).cpu().double() * 2 - 1) * math.radians(max_angle)
    params = torch.cat([(2 * loc - 1) * (1 - scale), angle[:, None]], 1)
    return theta_from_params(params, scale).to(device=motion.device, dtype=torch.float32)


class TransformRegressor(nn.Module):
    """The code's transform head: affinity ``(B, h*w, q, q)`` -> conv k x k (128) -> conv k x k (64) -> linear
    -> ``(tx, ty, angle)`` -> ``theta`` ``(B, 2, 3)`` at a fixed ``scale``. The code's k = 4 needs q >= 7."""

    def __init__(self, positions: int, q: int, scale: float, kernel: int = 4) -> None:
        super().__init__()
        out = q - 2 * (kernel - 1)  # two valid convolutions
        if out < 1:
            raise ValueError(f"TransformRegressor: a patch of {q} feature cells is too small for two {kernel}x{kernel} "
                             f"convolutions (needs at least {2 * kernel - 1})")
        self.scale = scale
        self.conv1 = nn.Conv2d(positions, 128, kernel_size=kernel, bias=False)
        self.conv2 = nn.Conv2d(128, 64, kernel_size=kernel, bias=False)
        self.fc = nn.Linear(64 * out ** 2, 3)
        for conv in (self.conv1, self.conv2):  # the code's initialisation
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.fc.weight, 0, 0.01)  # starts near the centred, unrotated patch
        nn.init.zeros_(self.fc.bias)

    def forward(self, aff: Tensor) -> Tensor:
        x = F.leaky_relu(self.conv1(aff), 0.1)
        x = F.leaky_relu(self.conv2(x), 0.1)
        return theta_from_params(self.fc(x.flatten(1)), self.scale)


# ----------------------------------------------------------------------------------------------------------
# The method


class TimeCycle(SSLMethod):
    """TimeCycle (see the module docstring). ``forward(batch) -> (loss, metrics)``; no state besides weights."""

    Config = TimeCycleConfig

    def __init__(self, cfg: TimeCycleConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input = cfg.input
        self.backbone = build_backbone(cfg.backbone)
        self.clip_encoder = ClipEncoder(self.backbone)
        self.scale = cfg.patch_size / cfg.crop_size
        self.h = feature_size(cfg.crop_size, self.backbone.stride)
        self.q = feature_size(cfg.patch_size, self.backbone.stride)
        self.regressor: TransformRegressor | None = None  # procrustes: the closed-form fit, no parameters
        if cfg.transform == "learned":
            self.regressor = TransformRegressor(self.h * self.h, self.q, self.scale, cfg.regressor_kernel)
        # one crop and flip for the whole clip (the code's fixed crop offset and ``toflip``)
        self.augment = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, ratio=(1.0, 1.0), hflip=0.5)

    def sampler(self) -> Sampler:
        """The clip, the target frame and the frame after it (:func:`timecycle_frames`)."""
        c = self.cfg
        return FrameSampler(timecycle_frames, {"clip_len": c.clip_len, "gap": c.frame_gap,
                                               "pred_distance": c.pred_distance})

    def encoder(self) -> ResNet:
        """The backbone (the one to export and evaluate)."""
        return self.backbone

    def regress(self, aff: Tensor) -> Tensor:
        """Affinity ``(B, h*w, q, q)`` -> ``theta`` ``(B, 2, 3)``."""
        if self.regressor is not None:
            return self.regressor(aff)
        return fit_rigid(aff, (self.h, self.h), self.scale)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        video = batch["video"]
        t = self.cfg.clip_len
        if video.dim() != 5 or video.dtype != torch.uint8 or video.shape[1] != 3 or video.shape[2] != t + 2:
            raise ValueError(f"timecycle: batch['video'] must be uint8 (B, 3, clip_len + 2 = {t + 2}, H, W), got "
                             f"{video.dtype} {tuple(video.shape)}")
        x = imagenet_normalize(self.augment(to_float(video)))  # (B, 3, T+2, s, s)
        tau = self.cfg.temperature
        theta_gt = patch_theta((x[:, :, t] - x[:, :, t + 1]).abs().sum(1), self.scale, self.cfg.motion_grid,
                               self.cfg.motion_topk, self.cfg.max_angle)
        patch = affine_crop(x[:, :, t], theta_gt, self.cfg.patch_size)  # (B, 3, p, p) from the target frame
        feats = self.clip_encoder.forward_features(x[:, :, : t + 1]).transpose(1, 2)  # (B, T+1, C, h, h)
        if feats.shape[-1] != self.h:
            raise ValueError(f"timecycle: {self.cfg.backbone} gives {feats.shape[-1]} feature cells for "
                             f"crop_size {self.cfg.crop_size}, the regressor was built for {self.h}")
        clip, target = feats[:, :t], feats[:, t]  # (B, T, C, h, h), (B, C, h, h)
        query0 = F.normalize(self.backbone.forward_features(patch), dim=1)  # (B, C, q, q)

        def step(query: Tensor, frame: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            theta, feat, aff = track_step(query, frame, self.regress, tau)
            return theta, F.normalize(feat, dim=1), aff

        # skip cycles, every frame at once: target -> frame i -> target, and the inlier term on target -> i
        rep = query0.repeat_interleave(t, 0)
        theta_skip, crops, aff = step(rep, clip.flatten(0, 1))
        inlier = inlier_score(aff, theta_skip, (self.h, self.h)).mean()
        theta_back, _, _ = step(crops, target.repeat_interleave(t, 0))
        skip = cycle_loss(theta_back, theta_gt.repeat_interleave(t, 0))

        # long cycles: backward from the target through frames T-1 .. T-c, forward to T-1, then into the target
        back = [query0]
        for i in range(t - 1, -1, -1):
            back.append(step(back[-1], clip[:, i])[1])
        cycles = []
        for c in range(1, t + 1):
            query = back[c]  # the patch tracked back to frame T-c
            for i in range(t - c + 1, t):
                query = step(query, clip[:, i])[1]
            cycles.append(cycle_loss(step(query, target)[0], theta_gt))
        long = torch.stack(cycles)

        loss = self.cfg.cycle_weight * long.mean() + self.cfg.skip_weight * skip - self.cfg.inlier_weight * inlier
        metrics: Metrics = {"cycle": long.mean().detach(), "skip": skip.detach(),
                                              "inlier": inlier.detach()}
        for c in range(t):
            metrics[f"cycle_{c + 1}"] = long[c].detach()
        return loss, metrics
