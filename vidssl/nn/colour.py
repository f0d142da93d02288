"""Colour: Lab conversion, the input normalisations (stated once), and quantised ab colour clusters.

Every function works on ``(B, 3, ...)`` tensors with channels at dim 1, on any device.

- RGB in [0, 1] normalised with the ImageNet statistics is what every RGB encoder in vidssl is fed.
- MAST (Lai et al. 2020) feeds Lab normalised to about [-1, 1]: ``(lab - (50, 0, 0)) / (50, 127, 127)``. The
  pixel baseline of label propagation uses the same normalisation, so its colour vectors keep both
  lightness and chroma.
- CorrFlow (Lai & Xie 2019) and colourisation targets quantise the ab plane to the nearest of K centroids.
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
    "check_channels_first",
    "default_centroids",
    "imagenet_denormalize",
    "imagenet_normalize",
    "kmeans",
    "lab_to_rgb",
    "load_centroids",
    "mast_denormalize_lab",
    "mast_normalize_lab",
    "normalize_input",
    "quantize_ab",
    "rgb_to_lab",
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
