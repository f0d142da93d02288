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

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment, imagenet_normalize, rgb_to_lab, to_float
from vidssl.data.samplers import random_clip
from vidssl.models.resnet import ClipEncoder, ResNet, build_backbone

__all__ = [
    "CorrFlow", "CorrFlowConfig", "default_centroids", "drop_rgb_channels", "kmeans", "load_centroids",
    "local_copy", "quantize_ab", "teacher_forcing_prob",
]

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
# Colour clusters


def quantize_ab(ab: Tensor, centroids: Tensor) -> Tensor:
    """Nearest centroid (Euclidean) of every ab value: ``(B, 2, *S)`` and ``(K, 2)`` -> long ``(B, *S)``."""
    if ab.dim() < 2 or ab.shape[1] != 2 or centroids.dim() != 2 or centroids.shape[1] != 2:
        raise ValueError(f"quantize_ab: need ab (B, 2, ...) and centroids (K, 2), got {tuple(ab.shape)}, "
                         f"{tuple(centroids.shape)}")
    c = centroids.to(ab).view(1, -1, 2, *([1] * (ab.dim() - 2)))  # (1, K, 2, 1, ...)
    return ((ab.unsqueeze(1) - c) ** 2).sum(dim=2).argmin(dim=1)


def kmeans(points: np.ndarray, k: int, iters: int = 50, seed: int = 0) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding: ``(N, D)`` -> centroids ``(k, D)``, sorted by first coordinate.

    Deterministic given ``seed``; an emptied cluster is re-seeded at the point farthest from its centroid.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or len(points) < k or k < 1:
        raise ValueError(f"kmeans: need (N, D) points with N >= k = {k}, got {points.shape}")
    rng = np.random.default_rng(seed)
    centres = [points[rng.integers(len(points))]]
    d2 = ((points - centres[0]) ** 2).sum(1)
    for _ in range(1, k):  # k-means++: the next centre with probability proportional to squared distance
        p = d2 / d2.sum() if d2.sum() > 0 else None
        centres.append(points[rng.choice(len(points), p=p)])
        d2 = np.minimum(d2, ((points - centres[-1]) ** 2).sum(1))
    c = np.stack(centres)
    for _ in range(iters):
        dist = ((points[:, None] - c[None]) ** 2).sum(2)  # (N, k)
        assign = dist.argmin(1)
        new = c.copy()
        for j in range(k):
            members = points[assign == j]
            new[j] = members.mean(0) if len(members) else points[dist.min(1).argmax()]
        if np.allclose(new, c):
            break
        c = new
    return c[np.lexsort(c.T[::-1])]


def default_centroids(k: int = 16) -> Tensor:
    """A deterministic fallback: k-means (seed 0) of the ab of a regular 17^3 grid of sRGB colours. ``(k, 2)``.

    Synthetic data, so it covers the gamut evenly rather than natural colour statistics: prefer centroids
    computed from the training videos with ``tools/corrflow_centroids.py``.
    """
    g = torch.linspace(0, 1, 17)
    rgb = torch.stack(torch.meshgrid(g, g, g, indexing="ij")).reshape(1, 3, -1)  # (1, 3, 4913)
    ab = rgb_to_lab(rgb)[0, 1:].T.numpy()
    return torch.from_numpy(kmeans(ab, k, seed=0)).float()


def load_centroids(path: str | Path) -> Tensor:
    """``(K, 2)`` ab centroids from a ``.npy`` array or a ``.json`` (``{"centroids": [[a, b], ...]}`` or a list)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: centroid file not found (make one with tools/corrflow_centroids.py)")
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_text())
            arr = np.asarray(data["centroids"] if isinstance(data, dict) else data, dtype=np.float64)
        else:
            arr = np.load(path, allow_pickle=False)
    except (ValueError, KeyError, OSError) as exc:
        raise ValueError(f"{path}: cannot read centroids ({exc})") from exc
    if arr.ndim != 2 or arr.shape[1] != 2 or not np.isfinite(arr).all():
        raise ValueError(f"{path}: centroids must be a finite (K, 2) array of ab values, got shape {arr.shape}")
    return torch.from_numpy(arr).float()


# ----------------------------------------------------------------------------------------------------------
# The copy and the training tricks: pure functions


def local_copy(
    feat_t: Tensor, feat_r: Tensor, labels_r: Tensor, window: int, temperature: float | None = None,
    band: int | None = None,
) -> Tensor:
    """Copy reference labels to the target through a softmax affinity restricted to a local window.

    Args:
        feat_t: ``(B, C, h, w)`` target features.
        feat_r: ``(B, C, h, w)`` reference features.
        labels_r: ``(B, K, h, w)`` reference labels (one-hot or soft).
        window: odd side P of the window centred on each target position (13 in CorrFlow).
        temperature: logits are ``<f_t(p), f_r(p + d)> / temperature``; None: ``sqrt(C)``.
        band: target rows per step (speed and memory only; the result does not depend on it). None: 4.
    Returns:
        ``(B, K, h, w)``: ``sum_d softmax_d(logits) labels_r(p + d)`` over the P*P offsets ``d`` that fall
        inside the frame (offsets outside are excluded from the softmax, as the code's padding mask).

    A band of target rows is multiplied with the reference rows its windows reach in one matrix product and
    the P*P window entries are gathered from it; the weights go back through a second product. Autograd keeps
    per band the (band * w, P*P) weights and a (band * w, (band + P - 1) (w + P - 1)) scatter of them, never a
    (B, C, P*P, h, w) unfold of the features (11 GB at batch 4 of 128 px clips with a contiguous unfold).
    """
    if feat_t.dim() != 4 or feat_r.shape != feat_t.shape or labels_r.dim() != 4 or labels_r.shape[0] != feat_t.shape[0]:
        raise ValueError(f"local_copy: need feat_t, feat_r (B, C, h, w) and labels_r (B, K, h, w), got "
                         f"{tuple(feat_t.shape)}, {tuple(feat_r.shape)}, {tuple(labels_r.shape)}")
    if labels_r.shape[2:] != feat_t.shape[2:] or window < 1 or window % 2 == 0:
        raise ValueError(f"local_copy: labels must match the features' {tuple(feat_t.shape[2:])} and window be odd, "
                         f"got {tuple(labels_r.shape[2:])}, {window}")
    b, c, h, w = feat_t.shape
    r = window // 2
    t = temperature if temperature is not None else math.sqrt(c)
    wp = w + 2 * r  # padded width
    fr = F.pad(feat_r, (r, r, r, r))
    lr = F.pad(labels_r, (r, r, r, r))
    inside = F.pad(torch.ones(h, w, device=feat_t.device, dtype=torch.bool), (r, r, r, r)).flatten()
    step = max(1, band if band is not None else 4)
    # window offset (dy, dx) of target (y, x) in a band starting at row y0 sits at (y - y0 + dy) * wp + x + dx of
    # the band's padded reference rows [y0, y0 + n + 2r)
    d = torch.arange(window, device=feat_t.device)
    offsets = (d.view(-1, 1) * wp + d.view(1, -1)).flatten()  # (P*P,), index dy * P + dx
    out = []
    for y0 in range(0, h, step):
        n = min(step, h - y0)
        targets = (torch.arange(n, device=feat_t.device).view(-1, 1) * wp + torch.arange(w, device=feat_t.device))
        index = targets.flatten().view(-1, 1) + offsets  # (n * w, P*P) into the band's (n + 2r) * wp positions
        region = fr[:, :, y0:y0 + n + 2 * r].flatten(2)  # (B, C, R)
        dense = torch.bmm(feat_t[:, :, y0:y0 + n].flatten(2).transpose(1, 2), region)  # (B, n * w, R)
        logits = dense.gather(2, index.expand(b, -1, -1)) / t  # (B, n * w, P*P)
        valid = inside[y0 * wp:(y0 + n + 2 * r) * wp][index]  # (n * w, P*P)
        attn = F.softmax(logits.masked_fill(~valid, torch.finfo(logits.dtype).min), dim=2)
        spread = attn.new_zeros(dense.shape).scatter(2, index.expand(b, -1, -1), attn)  # (B, n * w, R)
        values = lr[:, :, y0:y0 + n + 2 * r].flatten(2)  # (B, K, R)
        out.append(torch.bmm(values, spread.transpose(1, 2)).view(b, -1, n, w))  # (B, K, n, w)
    return torch.cat(out, dim=2)


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


class CorrFlow(nn.Module):
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

    def sampler(self) -> Callable[..., np.ndarray]:
        """``num_frames`` frames ``frame_interval`` apart, the start uniform."""
        return partial(random_clip, length=self.cfg.num_frames, stride=self.cfg.frame_interval)

    def encoder(self) -> ResNet:
        """The backbone (the one to export and evaluate)."""
        return self.backbone

    def prepare(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 ``(B, 3, T, H, W)`` -> encoder input ``(B, 3, T, s, s)`` and cluster labels ``(B, T, s, s)``."""
        if video.dim() != 5 or video.dtype != torch.uint8 or video.shape[1] != 3 or video.shape[2] < 2:
            raise ValueError(f"corrflow: batch['video'] must be uint8 (B, 3, T>=2, H, W), got {video.dtype} "
                             f"{tuple(video.shape)}")
        rgb = to_float(video)
        s = self.cfg.crop_size
        if rgb.shape[3:] != (s, s):  # squash the whole frame, as the code's cv2.resize
            b, c, t, h, w = rgb.shape
            flat = rgb.transpose(1, 2).reshape(b * t, c, h, w)
            flat = F.interpolate(flat, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            rgb = flat.clamp(0, 1).view(b, t, c, s, s).transpose(1, 2)
        labels = quantize_ab(rgb_to_lab(rgb)[:, 1:], self.centroids)  # (B, T, s, s), from the unjittered frames
        x = imagenet_normalize(self.jitter(rgb) if self.training and self.cfg.jitter_p > 0 else rgb)
        if self.training:
            x = drop_rgb_channels(x, self.cfg.channel_drop_p)
        return x, labels

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor | float]]:
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
