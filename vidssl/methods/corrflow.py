"""Correspondence Flow: self-supervised correspondence by copying quantised colour through a local window.

Lai & Xie, "Self-supervised Learning for Video Correspondence Flow", BMVC 2019,
https://arxiv.org/abs/1905.00875; the authors' code is ``zlai0/CorrFlow`` (``main.py``,
``models/corrflow.py``, ``models/colorizer.py``, ``functional/feeder/dataset/KineticsLoader.py``).

A sample is a triplet of frames 4 apart, squashed to 256x256. Each pixel's ab colour (Lab) is quantised to
the nearest of 16 k-means centroids. The encoder sees the RGB frames with channels randomly dropped, and
predicts the target frame's cluster distribution by copying the reference frame's labels through a softmax
affinity restricted to a 13x13 window of stride-4 features; the loss is the cross-entropy of that copy,
bilinearly upsampled, against the target's labels:

- ``l_sim``: pairs (0 -> 1), (1 -> 2). Scheduled sampling: for every pair after the first, the reference
  labels are the true ones with probability ``p`` and otherwise the model's own prediction for the reference
  frame (with its gradient), ``p`` falling linearly from 0.9 to 0.6 over training (``compute_ls``).
- ``l_long``: the long-term cycle 0 -> ... -> i -> ... -> 0 for i = 1, 2 on the model's own predictions,
  scored against frame 0's labels (``compute_ll``); ``loss = l_sim + 0.1 * l_long``, both summed over their
  terms as the code.

Where vidssl differs from the authors' code, deliberately:
- The affinity is on the backbone's own stride-4 features (``resnet18_mast``), scaled by ``1/sqrt(C)``; the
  code adds a 3x3 convolution to 64 channels that the exported encoder would not contain (as vidssl's MAST).
- Reference labels enter at feature resolution as the fraction of each cluster in a cell (area-pooled
  one-hot); the code bilinearly interpolates the integer cluster *indices*, which mixes unrelated clusters
  at colour boundaries. Window positions outside the frame are excluded, as the code's ``corr == 0`` mask.
- Input is ImageNet-normalised (what vidssl's evaluation feeds every ResNet), and channel dropout zeroes the
  normalised channel (the dataset mean) rather than raw intensity; the rescaling by 3/(3-n) is the code's.
- Channel dropout and scheduled sampling are drawn per sample (the code draws once per batch: the same law).
- The three frames are encoded in one pass (the code re-encodes both frames at every one of its 8 calls;
  the maths are the same, batch-norm statistics are pooled over the triplet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vidssl.data.augment import ClipAugment, resize_clip, to_float
from vidssl.data.samplers import random_clip
from vidssl.data.views import FrameSampler, Sampler
from vidssl.methods.base import Metrics, SSLMethod
from vidssl.models import ClipEncoder, ResNet, build_backbone
from vidssl.nn.colour import default_centroids, imagenet_normalize, load_centroids, quantize_ab, rgb_to_lab
from vidssl.nn.local_attention import local_copy

__all__ = ["CorrFlow", "CorrFlowConfig", "drop_rgb_channels", "local_copy", "teacher_forcing_prob"]

LOG_EPS = 1e-8  # inside the log of the copied probabilities, as the code's ``cross_entropy``


@dataclass
class CorrFlowConfig:
    """CorrFlow hyper-parameters (the ``model:`` section of a run config). Defaults: the authors' ``main.py``."""

    backbone: str = "resnet18_mast"  # stride 4 like the code's ResNet18 (no max-pool, layer3/4 stride 1)
    centroids: str | None = None  # (K, 2) ab centroids, .npy or .json (tools/corrflow_centroids.py); None: built-in
    num_clusters: int = 16  # the paper's 16 colour clusters
    window: int = 13  # side of the local window (the code's R = 6)
    num_frames: int = 3  # a triplet (``ref_num = 3``)
    frame_interval: int = 4  # frames between triplet frames (``frame_interval = 4``)
    crop_size: int = 256  # frames squashed to 256x256 (``cv2.resize(image, (256, 256))``)
    channel_drop_p: float = 0.7  # the code keeps all channels with probability ``self.p = 0.3``
    jitter_p: float = 0.1  # ColorJitter(0.1, 0.1, 0.1, 0.1) on the input with probability ``p_2 = 0.1``
    long_weight: float = 0.1  # ``l_sim + l_long * 0.1``
    sampling_start: float = 0.9  # probability of the true reference labels at step 0 (``eps_s``)
    sampling_end: float = 0.6  # ... at the last step (``eps_e``)
    sampling_steps: int = 100_000  # steps over which it falls: set to the run's schedule.steps
    temperature: float | None = None  # affinity divisor; None: sqrt(C) of the features
    input: Literal["video"] = "video"  # a copy needs a second frame: still images are not supported

    def __post_init__(self) -> None:
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"corrflow: window must be a positive odd size, got {self.window}")
        if self.num_frames < 2 or self.frame_interval < 1 or self.crop_size < 8 or self.num_clusters < 2:
            raise ValueError("corrflow: need num_frames >= 2, frame_interval >= 1, crop_size >= 8, num_clusters >= 2")
        for name in ("channel_drop_p", "jitter_p", "sampling_start", "sampling_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"corrflow: {name} is a probability in [0, 1], got {getattr(self, name)}")
        if self.sampling_steps < 1 or self.long_weight < 0:
            raise ValueError("corrflow: sampling_steps must be >= 1 and long_weight >= 0")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"corrflow: temperature must be positive, got {self.temperature}")
        if self.input != "video":
            raise ValueError(f"corrflow: input must be 'video' (a copy needs two frames), got {self.input!r}")


# ----------------------------------------------------------------------------------------------------------
# The training tricks: pure functions


def drop_rgb_channels(x: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """CorrFlow's channel dropout on ``(B, 3, ...)``: per sample, with probability ``p``, zero n in {1, 2}
    channels (n uniform, channels uniform without replacement) in every frame and scale the rest by 3/(3-n).

    Random draws come from ``generator`` (the global RNG when None) on its device, then move to ``x``'s.
    """
    if x.dim() < 2 or x.shape[1] != 3:
        raise ValueError(f"drop_rgb_channels: expected (B, 3, ...), got {tuple(x.shape)}")
    b = x.shape[0]
    dev = generator.device if generator is not None else torch.device("cpu")
    on = torch.rand(b, generator=generator, device=dev) < p
    n = 1 + (torch.rand(b, generator=generator, device=dev) < 0.5).long()  # channels to drop
    rank = torch.rand(b, 3, generator=generator, device=dev).argsort(1).argsort(1)  # a random order of channels
    drop = (rank < n[:, None]) & on[:, None]
    scale = torch.where(on, 3.0 / (3.0 - n.double()), torch.ones(b, dtype=torch.float64, device=dev))
    mask = (~drop).double() * scale[:, None]  # (B, 3)
    return x * mask.to(device=x.device, dtype=x.dtype).view(b, 3, *([1] * (x.dim() - 2)))


def teacher_forcing_prob(step: int, total_steps: int, start: float = 0.9, end: float = 0.6) -> float:
    """Scheduled sampling: probability of feeding the true reference labels at ``step``.

    Linear from ``start`` at step 0 to ``end`` at ``total_steps`` (the code's ``eps_s - (eps_s - eps_e) *
    current_batch / total_batch``), then held at ``end``.
    """
    if total_steps < 1:
        raise ValueError(f"teacher_forcing_prob: total_steps must be >= 1, got {total_steps}")
    return start - (start - end) * min(max(step, 0), total_steps) / total_steps


# ----------------------------------------------------------------------------------------------------------
# The method


class CorrFlow(SSLMethod):
    """CorrFlow (see the module docstring). ``forward(batch) -> (loss, metrics)``; ``after_step`` counts steps."""

    Config = CorrFlowConfig

    centroids: Tensor
    step: Tensor

    def __init__(self, cfg: CorrFlowConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.input = cfg.input
        self.backbone = build_backbone(cfg.backbone)
        self.clip_encoder = ClipEncoder(self.backbone)
        cents = load_centroids(cfg.centroids) if cfg.centroids is not None else default_centroids(cfg.num_clusters)
        if cents.shape[0] != cfg.num_clusters:
            raise ValueError(f"{cfg.centroids}: has {cents.shape[0]} centroids, num_clusters is {cfg.num_clusters}")
        self.register_buffer("centroids", cents)  # (K, 2), saved with the checkpoint
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # drives scheduled sampling
        # input-only colour jitter, per frame as the code's per-image ColorJitter; the crop is the whole frame
        self.jitter = ClipAugment(size=cfg.crop_size, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0,
                                  color_jitter=(0.1, 0.1, 0.1, 0.1), jitter_p=cfg.jitter_p, per_frame=True)

    def sampler(self) -> Sampler:
        """``num_frames`` frames ``frame_interval`` apart, the start uniform."""
        return FrameSampler(random_clip, {"length": self.cfg.num_frames, "stride": self.cfg.frame_interval})

    def encoder(self) -> ResNet:
        """The backbone (the one to export and evaluate)."""
        return self.backbone

    def prepare(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 ``(B, 3, T, H, W)`` -> encoder input ``(B, 3, T, s, s)`` and cluster labels ``(B, T, s, s)``."""
        if video.dim() != 5 or video.dtype != torch.uint8 or video.shape[1] != 3 or video.shape[2] < 2:
            raise ValueError(f"corrflow: batch['video'] must be uint8 (B, 3, T>=2, H, W), got {video.dtype} "
                             f"{tuple(video.shape)}")
        rgb = resize_clip(to_float(video), self.cfg.crop_size, antialias=True)  # the whole frame, as cv2.resize
        labels = quantize_ab(rgb_to_lab(rgb)[:, 1:], self.centroids)  # (B, T, s, s), from the unjittered frames
        x = imagenet_normalize(self.jitter(rgb) if self.training and self.cfg.jitter_p > 0 else rgb)
        if self.training:
            x = drop_rgb_channels(x, self.cfg.channel_drop_p)
        return x, labels

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        x, labels = self.prepare(batch["video"])
        feats = self.clip_encoder.forward_features(x)  # (B, C, T, h, w)
        b, _, t, h, w = feats.shape
        k = self.cfg.num_clusters
        onehot = F.one_hot(labels, k).permute(0, 1, 4, 2, 3).float().flatten(0, 1)  # (B*T, K, s, s)
        ref = F.adaptive_avg_pool2d(onehot, (h, w)).view(b, t, k, h, w)  # cluster fractions per feature cell

        def copy(src: int, dst: int, lab: Tensor) -> Tensor:
            return local_copy(feats[:, :, dst], feats[:, :, src], lab, self.cfg.window, self.cfg.temperature)

        def ce(pred: Tensor, frame: int) -> Tensor:
            up = F.interpolate(pred, size=labels.shape[2:], mode="bilinear", align_corners=False)
            return F.nll_loss(torch.log(up + LOG_EPS), labels[:, frame])

        p_true = teacher_forcing_prob(int(self.step), self.cfg.sampling_steps, self.cfg.sampling_start,
                                      self.cfg.sampling_end) if self.training else 1.0
        l_sim = feats.new_zeros(())
        preds: list[Tensor] = []
        for i in range(t - 1):  # short-term pairs; after the first, the reference may be the model's own output
            lab = ref[:, 0]
            if i > 0:
                truth = (torch.rand(b) < p_true).to(feats.device).view(b, 1, 1, 1)
                lab = torch.where(truth, ref[:, i], preds[-1])
            preds.append(copy(i, i + 1, lab))
            l_sim = l_sim + ce(preds[-1], i + 1)
        l_long = feats.new_zeros(())
        chain = preds[0]  # 0 -> 1 from the true labels of frame 0, the same copy as the first pair
        for i in range(1, t):  # long-term cycles 0 -> ... -> i -> ... -> 0 on the model's own predictions
            if i > 1:
                chain = copy(i - 1, i, chain)
            back = chain
            for j in range(i, 0, -1):
                back = copy(j, j - 1, back)
            l_long = l_long + ce(back, 0)
        loss = l_sim + self.cfg.long_weight * l_long
        with torch.no_grad():
            up = F.interpolate(preds[0], size=labels.shape[2:], mode="bilinear", align_corners=False)
            acc = (up.argmax(1) == labels[:, 1]).float()  # pixel accuracy of the first copy
        return loss, {"loss_sim": l_sim.detach(), "loss_long": l_long.detach(), "acc": acc.mean(), "p_true": p_true}

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Advance the scheduled-sampling clock (``step`` is the loop's 0-based step just taken)."""
        self.step.fill_(step + 1)
