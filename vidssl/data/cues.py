"""Removing the artificial cues a temporal-order task could solve without looking at the scene.

Wei et al. ("Learning and Using the Arrow of Time", CVPR 2018, https://arxiv.org/abs/1807.05245) found that a
network told to tell forward from backward video learns black borders, camera motion and compression cues before
it learns physics, and cleaned its data: black borders found from the row and column means of a few frames and
cropped (:func:`black_border_box`, :func:`crop_black_borders`), clips with cuts or static frames left out (the
shot- and motion-aware samplers of :mod:`vidssl.data.samplers`), frames stabilised by a homography to the central
frame (:func:`stabilize`). Each is used by the temporal-order methods as their configs say.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["black_border_box", "crop_black_borders", "stabilize"]

Box = tuple[int, int, int, int]  # top, bottom, left, right: rows top..bottom-1, columns left..right-1


def _edge_run(means: Tensor, threshold: float, limit: int) -> int:
    """How many leading entries of ``means`` are below ``threshold``, at most ``limit``."""
    dark = (means < threshold).int()
    run = int(torch.cumprod(dark, 0).sum()) if len(dark) else 0
    return min(run, limit)


def black_border_box(clip: Tensor, threshold: float = 0.06, num_frames: int = 5, max_fraction: float = 0.25) -> Box:
    """The picture inside a clip's black borders: float ``(3, T, H, W)`` in [0, 1] -> ``(top, bottom, left, right)``.

    The mean of every row and every column over ``num_frames`` evenly spaced frames and the three channels; the
    runs of rows (columns) from each edge whose mean is below ``threshold`` are border. Each side is at most
    ``max_fraction`` of the frame, so a dark scene is not cut away. A clip without borders gives ``(0, H, 0, W)``.
    """
    if clip.dim() != 4 or clip.shape[0] != 3:
        raise ValueError(f"black_border_box: need a float clip (3, T, H, W), got {tuple(clip.shape)}")
    _, t, h, w = clip.shape
    frames = clip[:, torch.linspace(0, t - 1, min(num_frames, t)).round().long()].float()
    rows, cols = frames.mean(dim=(0, 1, 3)), frames.mean(dim=(0, 1, 2))  # (H,), (W,)
    lh, lw = int(h * max_fraction), int(w * max_fraction)
    top, bottom = _edge_run(rows, threshold, lh), _edge_run(rows.flip(0), threshold, lh)
    left, right = _edge_run(cols, threshold, lw), _edge_run(cols.flip(0), threshold, lw)
    return top, h - bottom, left, w - right


def crop_black_borders(video: Tensor, threshold: float = 0.06, num_frames: int = 5,
                       max_fraction: float = 0.25) -> Tensor:
    """Every clip of a float batch ``(B, 3, T, H, W)`` cut to :func:`black_border_box` and resized back to
    ``(H, W)`` (bilinear); clips without borders are returned unchanged."""
    if video.dim() != 5:
        raise ValueError(f"crop_black_borders: need a batch (B, 3, T, H, W), got {tuple(video.shape)}")
    h, w = video.shape[-2:]
    out = []
    for clip in video:
        top, bottom, left, right = black_border_box(clip, threshold, num_frames, max_fraction)
        if (top, bottom, left, right) == (0, h, 0, w):
            out.append(clip)
            continue
        inner = clip[:, :, top:bottom, left:right].transpose(0, 1)  # (T, 3, h', w')
        out.append(F.interpolate(inner, size=(h, w), mode="bilinear", align_corners=False).transpose(0, 1))
    return torch.stack(out)


def stabilize(frames: np.ndarray, reference: int | None = None, features: int = 500,
              min_matches: int = 12) -> np.ndarray:
    """Frames warped onto frame ``reference`` (None: the central one) by a homography each: uint8 ``(T, H, W, 3)``.

    ORB features of every frame are matched to the reference's (Hamming distance, cross-checked) and a
    homography is fitted by RANSAC; a frame with fewer than ``min_matches`` matches, or no homography, is left
    as it is. The pixels a warp brings in from outside repeat the edge (``BORDER_REPLICATE``), since black ones
    would be a new cue.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"stabilize: need uint8 frames (T, H, W, 3), got {frames.dtype} {frames.shape}")
    t, h, w = frames.shape[:3]
    ref = t // 2 if reference is None else reference
    if not -t <= ref < t:
        raise ValueError(f"stabilize: reference frame {ref} outside the {t} frames")
    orb = cv2.ORB_create(nfeatures=features)  # type: ignore[attr-defined]
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    grey = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    ref_kp, ref_desc = orb.detectAndCompute(grey[ref], None)
    out = frames.copy()
    if ref_desc is None:
        return out
    for i in range(t):
        if i == ref % t:
            continue
        kp, desc = orb.detectAndCompute(grey[i], None)
        if desc is None:
            continue
        matches = matcher.match(desc, ref_desc)
        if len(matches) < min_matches:
            continue
        src = np.array([kp[m.queryIdx].pt for m in matches], dtype=np.float32)
        dst = np.array([ref_kp[m.trainIdx].pt for m in matches], dtype=np.float32)
        hom, _ = cv2.findHomography(src, dst, cv2.RANSAC, 3.0)
        if hom is None:
            continue
        out[i] = cv2.warpPerspective(frames[i], hom, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out
