"""MAST's memory: the joint local / ROI affinity copy (training and test) and its DAVIS propagation mode.

Lai, Lu & Xie, "MAST: A Memory-Augmented Self-supervised Tracker", CVPR 2020 (https://arxiv.org/abs/2002.07793),
the authors' ``models/colorizer.py`` and ``benchmark.py``. To predict frame t the memory holds the long-term
references {0, 5} and the short-term references {t-1, t-3, t-5} (those that exist), with hard labels. Each
target position attends to a (2R+1)^2 window (R = 12 at test: 25x25 cells at stride 4) in every reference,
all windows in one softmax. For a reference more than 15 frames back the window is not centred on the
position itself but on a region of interest found by a coarse search: a 25x25 window dilated by
``min(4, distance // 15 + 1)``, whose softmax gives the expected displacement; the fine window is then read
around it with bilinear sampling.

Every affinity is computed one displacement (or one window row) at a time over a band of target rows, so
memory is ``O(refs * (2R+1)^2 * band * w)`` and never the dense ``(hw)^2`` matrix; only the referenced frames'
features and label maps are kept. The authors' test needs about 22 GB of GPU memory; this one runs on a CPU.
Window positions outside the frame are left out of the softmax (the code scores them as zero features).
The affinity scale is ``1 / sqrt(C)`` by default, the one the encoder was trained with (``vidssl.methods.mast``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from vidssl.engine.config import ConfigError, from_dict, read_yaml

__all__ = [
    "MastMemoryConfig",
    "build_lab_encoder",
    "is_mast_config",
    "load_mast_config",
    "mast_propagate",
    "mast_references",
    "memory_copy",
    "propagate_frames",
    "roi_dilation",
    "roi_offsets",
    "window_logits",
    "window_values",
]

Rows = tuple[int, int]
Reference = tuple[Tensor, Tensor, Tensor | None]  # (features (B, C, h, w), values (B, V, H', W'), ROI offset)


# ----------------------------------------------------------------------------------------------------------
# Windows: one displacement at a time


def _pixel_grid(offset: Tensor, rows: Rows, dy: Tensor, dx: float) -> Tensor:
    """Positions ``(B, n, th, w, 2)`` (x, y in cells) of target rows ``rows`` displaced by ``offset + (dx, dy_i)``."""
    b, _, _, w = offset.shape
    y0, y1 = rows
    ys = torch.arange(y0, y1, device=offset.device, dtype=offset.dtype).view(1, 1, -1, 1)
    xs = torch.arange(w, device=offset.device, dtype=offset.dtype).view(1, 1, 1, -1)
    o = offset[:, :, y0:y1]  # (B, 2, th, w): (dx, dy)
    px = (xs + o[:, 0:1] + dx).expand(b, dy.numel(), -1, -1)
    py = ys + o[:, 1:2] + dy.to(offset).view(1, -1, 1, 1)
    return torch.stack([px, py], dim=-1)


def _sample(x: Tensor, pos: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinear samples of ``x`` ``(B, C, h, w)`` at cell positions ``pos`` ``(B, n, th, w, 2)``.

    Returns ``(B, C, n, th, w)`` and the bool mask ``(B, n, th, w)`` of positions inside the frame. Sampling
    uses pixel-centre coordinates (``align_corners=True``), as the authors' ``deform_im2col`` under the
    PyTorch 1.1 they trained with.
    """
    b, c, h, w = x.shape
    _, n, th, tw, _ = pos.shape
    norm = torch.stack([pos[..., 0] * (2.0 / max(w - 1, 1)) - 1.0, pos[..., 1] * (2.0 / max(h - 1, 1)) - 1.0], -1)
    out = F.grid_sample(x, norm.view(b, n * th, tw, 2), mode="bilinear", padding_mode="zeros", align_corners=True)
    valid = (pos[..., 0] >= 0) & (pos[..., 0] <= w - 1) & (pos[..., 1] >= 0) & (pos[..., 1] <= h - 1)
    return out.view(b, c, n, th, tw), valid


def _check_pair(feat_t: Tensor, feat_r: Tensor, where: str) -> None:
    if feat_t.dim() != 4 or feat_t.shape != feat_r.shape:
        raise ValueError(f"{where}: target and reference features must both be (B, C, h, w), got "
                         f"{tuple(feat_t.shape)} and {tuple(feat_r.shape)}")


def _roi_row_logits(feat_t: Tensor, feat_r: Tensor, offset: Tensor, rows: Rows, dy: Tensor, radius: int) -> Tensor:
    """Unscaled logits ``(B, n * P, th, w)`` of window rows ``dy`` (n of them) around ``offset``; outside -> 0."""
    y0, y1 = rows
    parts = []
    for dx in range(-radius, radius + 1):
        s, _ = _sample(feat_r, _pixel_grid(offset, rows, dy, float(dx)))  # (B, C, n, th, w)
        parts.append((feat_t[:, :, None, y0:y1] * s).sum(1))  # (B, n, th, w)
    return torch.stack(parts, dim=2).flatten(1, 2)  # (B, n * P, th, w), displacement order (dy, dx)


def window_logits(
    feat_t: Tensor, feat_r: Tensor, radius: int, scale: float, offset: Tensor | None = None, rows: Rows | None = None
) -> Tensor:
    """Scaled dot products of each target position with a (2R+1)^2 reference window.

    Args:
        feat_t, feat_r: ``(B, C, h, w)``.
        radius: R.
        scale: multiplies every dot product (``1 / sqrt(C)`` in MAST here).
        offset: ``None`` for a window centred on the position itself (integer shifts), or ``(B, 2, h, w)``
            (dx, dy) in cells: the window is centred on ``p + offset`` and read bilinearly (the ROI).
        rows: only target rows ``[y0, y1)`` (all when ``None``).
    Returns:
        ``(B, (2R+1)^2, th, w)``, displacement ``(dy, dx)`` at index ``(dy + R) * (2R+1) + dx + R``; window
        positions outside the reference frame get the most negative float (no weight after a softmax).
    """
    _check_pair(feat_t, feat_r, "window_logits")
    h, w = feat_t.shape[-2:]
    y0, y1 = rows if rows is not None else (0, h)
    neg = torch.finfo(feat_t.dtype).min
    size = 2 * radius + 1
    if offset is None:
        pad = F.pad(feat_r, (radius, radius, radius, radius))
        inside = F.pad(torch.ones(1, 1, h, w, device=feat_r.device, dtype=torch.bool), (radius,) * 4)
        ft = feat_t[:, :, y0:y1]
        out = []
        for dy in range(size):
            for dx in range(size):
                z = (ft * pad[:, :, y0 + dy:y1 + dy, dx:dx + w]).sum(1) * scale  # (B, th, w)
                out.append(z.masked_fill(~inside[:, 0, y0 + dy:y1 + dy, dx:dx + w], neg))
        return torch.stack(out, dim=1)
    rows_out = []
    for dy in range(-radius, radius + 1):
        dys = torch.tensor([float(dy)], device=feat_t.device)
        if torch.is_grad_enabled() and (feat_t.requires_grad or feat_r.requires_grad or offset.requires_grad):
            # bilinear samples are new tensors: recompute them in backward instead of keeping (2R+1)^2 copies
            z = checkpoint(_roi_row_logits, feat_t, feat_r, offset, (y0, y1), dys, radius, use_reentrant=False)
        else:
            z = _roi_row_logits(feat_t, feat_r, offset, (y0, y1), dys, radius)
        rows_out.append(z * scale)
    logits = torch.cat(rows_out, dim=1)
    r = torch.arange(-radius, radius + 1, device=feat_t.device, dtype=offset.dtype)
    pos = _pixel_grid(offset.detach(), (y0, y1), r.repeat_interleave(size), 0.0)  # (B, P^2, th, w, 2)
    pos[..., 0] += r.repeat(size).view(1, -1, 1, 1)
    valid = (pos[..., 0] >= 0) & (pos[..., 0] <= w - 1) & (pos[..., 1] >= 0) & (pos[..., 1] <= h - 1)
    return logits.masked_fill(~valid, neg)


def window_values(values: Tensor, radius: int, offset: Tensor | None = None, rows: Rows | None = None) -> Tensor:
    """The values under each window of :func:`window_logits`: ``(B, V, h, w)`` -> ``(B, V, (2R+1)^2, th, w)``
    (0 outside the frame)."""
    h, w = values.shape[-2:]
    y0, y1 = rows if rows is not None else (0, h)
    size = 2 * radius + 1
    if offset is None:
        pad = F.pad(values, (radius,) * 4)
        return torch.stack([pad[:, :, y0 + dy:y1 + dy, dx:dx + w] for dy in range(size) for dx in range(size)], 2)
    r = torch.arange(-radius, radius + 1, device=values.device, dtype=offset.dtype)
    pos = _pixel_grid(offset, (y0, y1), r.repeat_interleave(size), 0.0)
    pos[..., 0] += r.repeat(size).view(1, -1, 1, 1)
    out, _ = _sample(values, pos)
    return out


def _values_at_features(values: Tensor, h: int, w: int) -> Tensor:
    """Reference values read at every s-th pixel, ``(B, V, H', W')`` -> ``(B, V, h, w)`` (the code's ``prep``)."""
    if values.shape[-2:] == (h, w):
        return values
    sy, sx = -(-values.shape[-2] // h), -(-values.shape[-1] // w)
    small = values[:, :, ::sy, ::sx]
    if small.shape[-2:] != (h, w) or sy != sx:
        raise ValueError(f"values {tuple(values.shape)} do not subsample to the feature grid {h}x{w}")
    return small


def memory_copy(
    feat_t: Tensor, refs: Sequence[Reference], radius: int, scale: float | None = None, tile: int | None = None
) -> Tensor:
    """Copy values from several references through one joint softmax over all their windows.

    Args:
        feat_t: ``(B, C, h, w)`` target features.
        refs: ``(feat_r (B, C, h, w), values_r (B, V, H', W'), offset)`` per reference; values at a multiple s
            of the feature size are read at every s-th pixel; ``offset`` ``(B, 2, h, w)`` centres an ROI
            window (:func:`roi_offsets`) or is ``None`` for a local window.
        radius: R of every window.
        scale: logit scale, ``1 / sqrt(C)`` when ``None``.
        tile: target rows per band (memory only; the result does not depend on it). All rows when ``None``.
    Returns:
        ``(B, V, h, w)``: ``sum_{r, d} softmax_{r, d}(logit) * value``.
    """
    if not refs:
        raise ValueError("memory_copy: needs at least one reference")
    c, h, w = feat_t.shape[1:]
    scale = 1.0 / math.sqrt(c) if scale is None else scale
    small = [_values_at_features(v, h, w) for _, v, _ in refs]
    step = h if tile is None else max(1, tile)
    bands = []
    for y0 in range(0, h, step):
        rows = (y0, min(h, y0 + step))
        logits = torch.cat([window_logits(feat_t, f, radius, scale, o, rows) for f, _, o in refs], dim=1)
        values = torch.cat([window_values(v, radius, o, rows) for v, (_, _, o) in zip(small, refs, strict=True)], 2)
        weights = F.softmax(logits, dim=1)  # (B, refs * P^2, th, w)
        bands.append((weights.unsqueeze(1) * values).sum(2))  # (B, V, th, w)
    return torch.cat(bands, dim=2)


# ----------------------------------------------------------------------------------------------------------
# The ROI search and the memory's frames


def roi_dilation(distance: int, roi_after: int = 15, max_dilation: int = 4) -> int:
    """Dilation of the coarse search for a reference ``distance`` frames back: ``min(4, distance // 15 + 1)``."""
    return min(max_dilation, distance // roi_after + 1)


def roi_offsets(feat_t: Tensor, feat_r: Tensor, dilation: int, search_radius: int = 12, scale: float = 1.0) -> Tensor:
    """Coarse search: the expected displacement of each target position in the reference.

    A ``(2S+1)^2`` window of reference positions at ``dilation`` cells apart (S = ``search_radius``) around each
    target position; ``softmax(scale <f_t, f_r>)`` over the positions inside the frame; the softmax-weighted
    mean displacement. ``(B, C, h, w)`` x2 -> ``(B, 2, h, w)`` (dx, dy) in cells.
    """
    _check_pair(feat_t, feat_r, "roi_offsets")
    h, w = feat_t.shape[-2:]
    reach = search_radius * dilation
    pad = F.pad(feat_r, (reach,) * 4)
    inside = F.pad(torch.ones(1, 1, h, w, device=feat_r.device, dtype=torch.bool), (reach,) * 4)
    neg = torch.finfo(feat_t.dtype).min
    zs, disp = [], []
    for iy in range(-search_radius, search_radius + 1):
        for ix in range(-search_radius, search_radius + 1):
            oy, ox = reach + iy * dilation, reach + ix * dilation
            z = (feat_t * pad[:, :, oy:oy + h, ox:ox + w]).sum(1) * scale
            zs.append(z.masked_fill(~inside[:, 0, oy:oy + h, ox:ox + w], neg))
            disp.append((ix * dilation, iy * dilation))
    p = F.softmax(torch.stack(zs, dim=1), dim=1)  # (B, (2S+1)^2, h, w)
    d = torch.tensor(disp, device=feat_t.device, dtype=feat_t.dtype)  # ((2S+1)^2, 2): (dx, dy)
    return torch.einsum("bnhw,nk->bkhw", p, d)


def mast_references(t: int, long_term: Sequence[int] = (0, 5), short_term: Sequence[int] = (1, 3, 5)) -> list[int]:
    """The memory for target frame ``t >= 1``: the long-term frames before t and ``t - k`` for k in
    ``short_term`` (those > 0), sorted, without repeats (the authors' ``benchmark.py``, ``--ref 0``)."""
    if t < 1:
        raise ValueError(f"mast_references: the target must be frame 1 or later, got {t}")
    return sorted({x for x in long_term if x <= t - 1} | {t - k for k in short_term if t - k > 0})


# ----------------------------------------------------------------------------------------------------------
# DAVIS propagation


@dataclass
class MastMemoryConfig:
    """MAST's test-time memory (``configs/eval/mast.yaml``); the defaults are the authors' ``benchmark.py``."""

    mode: Literal["mast"] = "mast"
    long_term: tuple[int, ...] = (0, 5)
    short_term: tuple[int, ...] = (1, 3, 5)  # every 2nd frame back
    radius: int = 12  # 25x25 window (``MAST.R = 12`` at test)
    roi_after: int = 15  # ROI search for references more than 15 frames back (``dil_int``)
    search_radius: int = 12  # coarse window 25x25 (``memory_patch_R``)
    max_dilation: int = 4
    temperature: float | None = None  # logits = <f_t, f_r> / temperature; None: sqrt(C), as training
    tile: int = 8  # target feature rows per band: memory only, results do not depend on it

    def __post_init__(self) -> None:
        for key in ("radius", "roi_after", "search_radius", "max_dilation", "tile"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be at least 1, got {getattr(self, key)}")
        if self.temperature is not None and self.temperature <= 0:
            raise ConfigError(f"temperature: must be positive, got {self.temperature}")
        if min(self.long_term, default=0) < 0 or min(self.short_term, default=1) < 1 or not self.short_term:
            raise ConfigError("long_term must be >= 0 and short_term non-empty and >= 1")


def is_mast_config(path: str | Path) -> bool:
    """Whether the evaluation YAML at ``path`` selects MAST's memory (``mode: mast``)."""
    data: Any = read_yaml(path)
    return isinstance(data, dict) and data.get("mode") == "mast"


def mast_propagate(
    encode_frame: Callable[[int], Tensor], first_mask: Tensor, num_frames: int, stride: int, cfg: MastMemoryConfig
) -> Iterator[Tensor]:
    """Propagate the first frame's hard labels through a video with MAST's memory, streaming.

    ``encode_frame(t)`` gives frame t's ``(C, h, w)`` features; ``first_mask`` is the ``(H, W)`` long label map
    of frame 0. Yields ``(H, W)`` long label maps for frames 0 .. num_frames - 1 (frame 0: ``first_mask``):
    the copy at feature resolution, bilinearly upsampled, arg-max (``benchmark.py``). Only the frames some later
    target references are kept (features and hard labels).

    The memory's labels are one-hot, as the authors', but taken differently: frame 0's at the pixel nearest
    each cell's centre, a prediction's as the arg-max of its copy per cell. The code reads every 4th pixel
    (``[::4]``) of the upsampled arg-max map; under ``align_corners=False`` upsampling that pixel mixes in the
    cells above and to the left, so a convex object's top-left corner cell is lost every frame and hard labels
    erode along the top edge (a 6x6 square moving 1 cell per frame loses its corner in the first frame).
    """
    if first_mask.dim() != 2:
        raise ValueError(f"mast_propagate: first_mask must be (H, W), got {tuple(first_mask.shape)}")
    size = (int(first_mask.shape[0]), int(first_mask.shape[1]))
    k = int(first_mask.max()) + 1
    yield first_mask
    memory: dict[int, tuple[Tensor, Tensor]] = {}  # frame -> (features (C, h, w), labels (h, w) long)
    feat0 = encode_frame(0).float()
    h, w = feat0.shape[-2:]
    lab0 = first_mask.to(feat0.device)[stride // 2::stride, stride // 2::stride]  # the pixel nearest each cell's centre
    if lab0.shape != (h, w):
        raise ValueError(f"mast_propagate: mask {size} at stride {stride} gives {tuple(lab0.shape)}, features "
                         f"are {h}x{w}")
    memory[0] = (feat0, lab0)
    scale = 1.0 / (cfg.temperature if cfg.temperature is not None else math.sqrt(feat0.shape[0]))
    for t in range(1, num_frames):
        feat = encode_frame(t).float()
        if feat.shape != feat0.shape:
            raise ValueError(f"frame {t}: features {tuple(feat.shape)} differ from frame 0's {tuple(feat0.shape)}")
        refs: list[Reference] = []
        for r in mast_references(t, cfg.long_term, cfg.short_term):
            f_r, l_r = memory[r]
            onehot = F.one_hot(l_r.long(), k).permute(2, 0, 1)[None].float()  # (1, K, h, w)
            offset = None
            if t - r > cfg.roi_after:
                dil = roi_dilation(t - r, cfg.roi_after, cfg.max_dilation)
                offset = roi_offsets(feat[None], f_r[None], dil, cfg.search_radius, scale)
            refs.append((f_r[None], onehot, offset))
        soft = memory_copy(feat[None], refs, cfg.radius, scale, cfg.tile)  # (1, K, h, w)
        yield F.interpolate(soft, size=size, mode="bilinear", align_corners=False)[0].argmax(0)
        memory[t] = (feat, soft[0].argmax(0))  # hard labels, at feature resolution
        # a later target u > t references long-term frames and frames >= u - max(short_term)
        for old in [x for x in memory if x not in cfg.long_term and x < t + 1 - max(cfg.short_term)]:
            del memory[old]


def propagate_frames(
    encoder: Any, frames: Sequence[Path], first_mask: np.ndarray, cfg: MastMemoryConfig,
    read_frame: Callable[[Path], np.ndarray],
) -> Iterator[np.ndarray]:
    """``vidssl eval davis``'s ``mode: mast``: yield each frame's ``(H, W)`` uint8 label map (frame 0: the mask).

    ``encoder`` is a ``FrameEncoder`` (:func:`build_lab_encoder`); ``read_frame(path)`` gives ``(H, W, 3)``
    uint8 RGB. Frames are read and encoded once each, in order.
    """
    size = first_mask.shape[:2]
    if encoder.encode is None:  # the identity baseline: copy the first mask
        yield from (first_mask for _ in frames)
        return

    def encode(t: int) -> Tensor:
        image = read_frame(frames[t])
        if image.shape[:2] != size:
            raise ValueError(f"{frames[t]}: frame is {image.shape[1]}x{image.shape[0]}, the mask {size[1]}x{size[0]}")
        return encoder.encode(image)

    mask = torch.from_numpy(first_mask.astype(np.int64))
    for labels in mast_propagate(encode, mask, len(frames), encoder.stride, cfg):
        yield labels.to("cpu", torch.uint8).numpy()


def build_lab_encoder(spec: str, device: torch.device | str = "cpu", seed: int = 0) -> Any:
    """A ``vidssl.eval.encoders.FrameEncoder`` on Lab input: a vidssl checkpoint, or ``random`` (a seeded
    ``resnet18_mast``)."""
    from vidssl.eval.encoders import backbone_encoder, random_backbone  # late: encoders may import this module
    from vidssl.models import load_encoder

    if spec == "random":
        net = random_backbone("resnet18_mast", seed)
    else:
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"{spec}: not a checkpoint file and not 'random' (MAST's memory needs an encoder)")
        net = load_encoder(path)
    return backbone_encoder(net, device, f"mast-lab-{Path(spec).stem}", input="lab")


def load_mast_config(path: str | Path, overrides: Sequence[str] = ()) -> MastMemoryConfig:
    """``MastMemoryConfig`` from a YAML with ``mode: mast`` and ``key=value`` overrides."""
    from vidssl.engine.config import apply_overrides

    return from_dict(MastMemoryConfig, apply_overrides(read_yaml(path), overrides))
