"""Planar geometry of patches: similarity transforms as ``affine_grid`` thetas, a spatial-transformer crop,
and the closed-form rigid fit (2-D Procrustes) from a soft correspondence. TimeCycle's tracker is built from
these (``vidssl.methods.timecycle``); coordinates are ``affine_grid``'s normalised [-1, 1] with
``align_corners=False`` (cell centres at ``(2i + 1) / n - 1``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["affine_crop", "fit_rigid", "frame_coords", "theta_from_params"]


def theta_from_params(params: Tensor, scale: float) -> Tensor:
    """``(B, 3)`` = (tx, ty, angle in radians) -> ``(B, 2, 3)`` = ``[[s cos, -s sin, tx], [s sin, s cos, ty]]``.

    ``theta`` maps normalised output-patch coordinates to normalised frame coordinates (``affine_grid``).
    """
    tx, ty, a = params.unbind(dim=1)
    c, s = scale * torch.cos(a), scale * torch.sin(a)
    return torch.stack([torch.stack([c, -s, tx], 1), torch.stack([s, c, ty], 1)], 1)


def affine_crop(x: Tensor, theta: Tensor, size: int) -> Tensor:
    """Spatial transformer: sample a ``size`` x ``size`` patch of ``x`` ``(B, C, H, W)`` at ``theta`` ``(B, 2, 3)``.

    Bilinear, zeros outside, ``align_corners=False``. Returns ``(B, C, size, size)``.
    """
    grid = F.affine_grid(theta.to(x.dtype), [x.shape[0], x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def frame_coords(h: int, w: int, like: Tensor) -> Tensor:
    """Normalised (x, y) of the cell centres of an h x w map, row-major: ``(h*w, 2)`` (align_corners=False)."""
    ys = (2 * torch.arange(h, device=like.device, dtype=like.dtype) + 1) / h - 1
    xs = (2 * torch.arange(w, device=like.device, dtype=like.dtype) + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], dim=1)


def fit_rigid(aff: Tensor, frame_hw: tuple[int, int], scale: float) -> Tensor:
    """Closed-form transform from an affinity: soft-argmax each patch cell's frame position, then fit
    rotation and translation (scale fixed) by least squares (2-D Procrustes). ``(B, h*w, q, q)`` -> ``(B, 2, 3)``."""
    _, _, q, q2 = aff.shape
    target = torch.einsum("bnk,nd->bkd", aff.flatten(2), frame_coords(*frame_hw, aff))  # (B, q*q, 2)
    source = scale * frame_coords(q, q2, aff)  # patch cells in patch coordinates, scaled
    ms, mt = source.mean(0), target.mean(1, keepdim=True)
    a, t = source - ms, target - mt  # centred
    cross = (a[:, 0] * t[..., 1] - a[:, 1] * t[..., 0]).sum(1)
    dot = (a[:, 0] * t[..., 0] + a[:, 1] * t[..., 1]).sum(1) + 1e-6  # eps: a collapsed match is no rotation
    norm = torch.sqrt(dot ** 2 + cross ** 2)  # > 0, unlike atan2's gradient at (0, 0)
    cos, sin = dot / norm, cross / norm  # the least-squares rotation
    rot = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # (B, 2, 2)
    trans = mt[:, 0] - (rot @ ms.view(2, 1)).squeeze(-1)
    return torch.cat([scale * rot, trans.unsqueeze(-1)], dim=2)
