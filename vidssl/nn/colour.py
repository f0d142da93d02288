"""Colour: Lab conversion, the input normalisations (stated once), and quantised ab colour clusters.

Every function works on ``(B, 3, ...)`` tensors with channels at dim 1, on any device.

- RGB in [0, 1] normalised with the ImageNet statistics is what every RGB encoder in vidssl is fed.
- MAST (Lai et al. 2020) feeds Lab normalised to about [-1, 1]: ``(lab - (50, 0, 0)) / (50, 127, 127)``. The
  pixel baseline of label propagation uses the same normalisation, so its colour vectors keep both
  lightness and chroma.
- CorrFlow (Lai & Xie 2019) and colourisation targets quantise the ab plane to the nearest of K centroids;
  Zhang et al.'s colourisation uses the 313 in-gamut bins of a grid of 10 (:func:`gamut_bins`), soft-encodes a
  colour over its nearest bins (:func:`soft_encode`), rebalances rare colours (:func:`rebalancing_weights`) and
  decodes by the annealed mean (:func:`annealed_mean`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import kornia
import numpy as np
import torch
from torch import Tensor

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INPUT_SPACES",
    "MAST_LAB_MEAN",
    "MAST_LAB_STD",
    "InputSpace",
    "ab_error_auc",
    "annealed_mean",
    "check_channels_first",
    "default_centroids",
    "gamut_bins",
    "imagenet_denormalize",
    "imagenet_normalize",
    "kmeans",
    "lab_to_rgb",
    "load_centroids",
    "mast_denormalize_lab",
    "mast_normalize_lab",
    "normalize_input",
    "quantize_ab",
    "rebalancing_weights",
    "rgb_to_lab",
    "smooth_prior",
    "soft_encode",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAST_LAB_MEAN = (50.0, 0.0, 0.0)  # L in [0, 100], a and b in about [-127, 127]
MAST_LAB_STD = (50.0, 127.0, 127.0)

InputSpace = Literal["rgb", "lab"]
INPUT_SPACES: tuple[InputSpace, ...] = ("rgb", "lab")  # what an encoder is fed: ImageNet RGB or MAST Lab


def check_channels_first(x: Tensor, where: str) -> None:
    """Raise unless ``x`` is a tensor ``(B, 3, ...)``."""
    if not isinstance(x, Tensor) or x.ndim < 2 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{where}: expected a tensor (B, 3, ...) with 3 channels at dim 1, got {shape}")


def _per_pixel(fn: object, x: Tensor) -> Tensor:
    # kornia's colour conversions want (*, 3, H, W); they are per pixel, so any trailing dims fold into H.
    b = x.shape[0]
    out = fn(x.reshape(b, 3, -1, 1))  # type: ignore[operator]
    return out.reshape(x.shape)


def rgb_to_lab(x: Tensor) -> Tensor:
    """sRGB in [0, 1] ``(B, 3, ...)`` -> CIE Lab (D65, 2° observer), L in [0, 100], a/b in about [-128, 127]."""
    check_channels_first(x, "rgb_to_lab")
    return _per_pixel(kornia.color.rgb_to_lab, x)


def lab_to_rgb(x: Tensor, clip: bool = True) -> Tensor:
    """CIE Lab ``(B, 3, ...)`` -> sRGB ``(B, 3, ...)``; ``clip`` clamps to [0, 1] (out-of-gamut Lab)."""
    check_channels_first(x, "lab_to_rgb")
    return _per_pixel(lambda t: kornia.color.lab_to_rgb(t, clip=clip), x)


def _channel_affine(x: Tensor, where: str, mean: tuple[float, ...], std: tuple[float, ...], inverse: bool) -> Tensor:
    check_channels_first(x, where)
    shape = (1, 3) + (1,) * (x.ndim - 2)
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(shape)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(shape)
    return x * s + m if inverse else (x - m) / s


def mast_normalize_lab(lab: Tensor) -> Tensor:
    """Lab ``(B, 3, ...)`` -> MAST's input, ``(lab - (50, 0, 0)) / (50, 127, 127)``."""
    return _channel_affine(lab, "mast_normalize_lab", MAST_LAB_MEAN, MAST_LAB_STD, inverse=False)


def mast_denormalize_lab(x: Tensor) -> Tensor:
    """Inverse of :func:`mast_normalize_lab`: ``x * (50, 127, 127) + (50, 0, 0)``."""
    return _channel_affine(x, "mast_denormalize_lab", MAST_LAB_MEAN, MAST_LAB_STD, inverse=True)


def imagenet_normalize(x: Tensor) -> Tensor:
    """RGB in [0, 1] ``(B, 3, ...)`` -> ``(x - mean) / std`` with the ImageNet statistics."""
    return _channel_affine(x, "imagenet_normalize", IMAGENET_MEAN, IMAGENET_STD, inverse=False)


def imagenet_denormalize(x: Tensor) -> Tensor:
    """Inverse of :func:`imagenet_normalize` (for visualisation)."""
    return _channel_affine(x, "imagenet_denormalize", IMAGENET_MEAN, IMAGENET_STD, inverse=True)


def normalize_input(x: Tensor, space: InputSpace) -> Tensor:
    """RGB in [0, 1] ``(B, 3, ...)`` -> what an encoder trained on ``space`` is fed (ImageNet RGB or MAST Lab)."""
    if space == "rgb":
        return imagenet_normalize(x)
    if space == "lab":
        return mast_normalize_lab(rgb_to_lab(x))
    raise ValueError(f"encoder input must be one of {', '.join(INPUT_SPACES)}, got {space!r}")


# --------------------------------------------------------------------------------------------------------
# Quantised ab colour


def quantize_ab(ab: Tensor, centroids: Tensor) -> Tensor:
    """Nearest centroid (Euclidean) of every ab value: ``(B, 2, *S)`` and ``(K, 2)`` -> long ``(B, *S)``."""
    if ab.dim() < 2 or ab.shape[1] != 2 or centroids.dim() != 2 or centroids.shape[1] != 2:
        raise ValueError(f"quantize_ab: need ab (B, 2, ...) and centroids (K, 2), got {tuple(ab.shape)}, "
                         f"{tuple(centroids.shape)}")
    c = centroids.to(ab).view(1, -1, 2, *([1] * (ab.dim() - 2)))  # (1, K, 2, 1, ...)
    return ((ab.unsqueeze(1) - c) ** 2).sum(dim=2).argmin(dim=1)


# Zhang, Isola & Efros's 313 in-gamut ab bins (richzhang/colorization, ``resources/pts_in_hull.npy``): the
# centres of a grid of 10 over ab, for each a the contiguous range of b kept, in the file's order (a, then b)
_GAMUT_B_RANGES = {
    -90: (50, 90), -80: (20, 90), -70: (0, 90), -60: (-20, 90), -50: (-30, 100), -40: (-40, 100),
    -30: (-50, 100), -20: (-50, 100), -10: (-60, 100), 0: (-70, 100), 10: (-80, 90), 20: (-80, 90),
    30: (-90, 90), 40: (-100, 90), 50: (-100, 80), 60: (-110, 80), 70: (-110, 80), 80: (-110, 70),
    90: (-110, 70), 100: (-90, 0),
}


def gamut_bins() -> Tensor:
    """The 313 ab bin centres of Zhang et al.'s colourisation, ``(313, 2)`` float, ordered by a then b."""
    pts = [(a, b) for a, (lo, hi) in _GAMUT_B_RANGES.items() for b in range(lo, hi + 1, 10)]
    return torch.tensor(pts, dtype=torch.float32)


def soft_encode(ab: Tensor, bins: Tensor, neighbours: int = 5, sigma: float = 5.0) -> Tensor:
    """Zhang et al.'s soft targets: each ab value ``(B, 2, *S)`` spread over its ``neighbours`` nearest bins
    ``(Q, 2)`` with Gaussian weights ``exp(-d^2 / 2 sigma^2)``, normalised to sum to 1 -> ``(B, Q, *S)``. The paper
    uses 5 neighbours, its code 10; sigma 5 in both."""
    if ab.dim() < 2 or ab.shape[1] != 2 or bins.dim() != 2 or bins.shape[1] != 2:
        raise ValueError(f"soft_encode: need ab (B, 2, ...) and bins (Q, 2), got {tuple(ab.shape)}, "
                         f"{tuple(bins.shape)}")
    if not 1 <= neighbours <= bins.shape[0] or sigma <= 0:
        raise ValueError(f"soft_encode: need 1 <= neighbours <= {bins.shape[0]} and sigma > 0")
    flat = ab.movedim(1, -1).reshape(-1, 2)  # (N, 2)
    d2 = torch.cdist(flat, bins.to(flat)).square()  # (N, Q)
    near, idx = d2.topk(neighbours, dim=1, largest=False)
    w = torch.softmax(-near / (2 * sigma**2), dim=1)  # the normalised Gaussian weights
    out = torch.zeros_like(d2).scatter_(1, idx, w)
    return out.view(*ab.shape[:1], *ab.shape[2:], -1).movedim(-1, 1)


def smooth_prior(counts: Tensor, bins: Tensor, sigma: float = 5.0) -> Tensor:
    """The empirical distribution of bin counts ``(Q,)`` smoothed with a Gaussian of ``sigma`` over the ab plane
    (Zhang et al. smooth it on the full grid; here between the bins: each bin's mass spread over the bins by
    ``exp(-d^2 / 2 sigma^2)``, normalised per source bin, so the total stays 1) -> ``(Q,)``, summing to 1."""
    p = counts.double() / counts.double().sum().clamp(min=1e-12)
    kernel = torch.exp(-torch.cdist(bins.double(), bins.double()).square() / (2 * sigma**2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # row q: where bin q's mass goes
    return (p @ kernel).to(counts.dtype if counts.is_floating_point() else torch.float32)


def rebalancing_weights(prior: Tensor, mix: float = 0.5) -> Tensor:
    """Zhang et al.'s class rebalancing: ``w ~ ((1 - mix) p + mix / Q)^-1`` for the (smoothed) prior ``p`` ``(Q,)``,
    scaled so that its expectation under the prior is 1 (``sum_q p_q w_q = 1``). ``mix`` 0.5 as the paper."""
    if not 0 <= mix <= 1 or prior.dim() != 1:
        raise ValueError(f"rebalancing_weights: need a (Q,) prior and mix in [0, 1], got {tuple(prior.shape)}, {mix}")
    p = prior.double() / prior.double().sum()
    w = 1.0 / ((1 - mix) * p + mix / p.numel())
    return (w / (p * w).sum()).to(prior.dtype)


def annealed_mean(logits: Tensor, bins: Tensor, temperature: float = 0.38) -> Tensor:
    """Zhang et al.'s decoding: the mean ab of the distribution re-tempered as ``softmax(log p / T)`` =
    ``softmax(logits / T)``, between the mean (T 1, desaturated) and the mode (T -> 0, patchy).
    ``(B, Q, *S)`` -> ``(B, 2, *S)``."""
    if temperature <= 0:
        raise ValueError(f"annealed_mean: temperature must be positive, got {temperature}")
    q = torch.softmax(logits.float() / temperature, dim=1)
    return torch.einsum("bq...,qc->bc...", q, bins.to(q))


def ab_error_auc(error: Tensor, max_threshold: int = 150) -> Tensor:
    """Zhang et al.'s colourisation measure per pixel: the area under the curve of "within ``t`` of the truth" as
    the threshold ``t`` sweeps the integers ``0..max_threshold`` (ab units), normalised to [0, 1]. A pixel with
    ab error ``e`` (its Euclidean distance in the ab plane) lies within ``t`` for ``t >= e``: the share of those
    thresholds is ``(max_threshold + 1 - ceil(e)) / (max_threshold + 1)``, clamped to [0, 1]. The image's AuC is
    the (weighted) mean of this over its pixels; ``error`` of any shape."""
    if max_threshold < 0:
        raise ValueError(f"ab_error_auc: max_threshold must be >= 0, got {max_threshold}")
    n = max_threshold + 1
    return ((n - torch.ceil(error.float())).clamp(0, n) / n).to(error.dtype)


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
