"""Local-window attention: each target position attends to the positions of a reference frame near it.

One implementation serves every method and evaluation that copies values through a local affinity:
CorrFlow's colour copy, MAST's training copy (both stages), MAST's test-time memory, and the windows of
label propagation's top-k (``vidssl.eval.propagation``, which shares the tiles and the neighbourhood mask).

Target positions are cut into square tiles; a tile's queries are matched against the rectangle of
reference positions any of them can see (the tile grown by the window's half width, clipped to the frame)
in one matrix product, and positions outside a query's own window are masked. The dense ``(hw, hw)``
affinity is never formed: memory depends on the tile and the window, not on the frame size, and the work
is a few dense products per tile instead of one elementwise pass per window displacement.

A reference may instead be read around a region of interest, ``p + offset(p)`` with a per-position
``offset`` (MAST's long-term memory): its window is then read bilinearly (the blend of one window of whole
cells, see below).

Window positions outside the frame are left out of the softmax (``outside="exclude"``), or scored as MAST's
released code scores them (``outside="zero"``): zero features, so logit 0, and zero values, inside the softmax.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from typing import Literal, NamedTuple, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Outside",
    "Reference",
    "Tile",
    "Window",
    "local_attention",
    "local_copy",
    "neighbourhood_allowed",
    "outside_window",
    "roi_dilation",
    "roi_offsets",
    "tiles",
    "window_half_width",
]

Window = Literal["circle", "square"]
Outside: TypeAlias = Literal["exclude", "zero"]


class Reference(NamedTuple):
    """One reference of :func:`local_attention` (a plain ``(features, values, offset)`` tuple is one too).

    ``features`` ``(B, C, h, w)``; ``values`` ``(B, V, H', W')``; ``offset`` ``None`` or ``(B, 2, h, w)`` (dx, dy):
    the window is centred on ``p + offset(p)``; ``value_offset``: where the values are read, if not around
    ``offset`` (MAST's released code reads every searched reference's labels around the last one's ROI)."""

    features: Tensor
    values: Tensor
    offset: Tensor | None = None
    value_offset: Tensor | None = None


# ----------------------------------------------------------------------------------------------------------
# Tiles and neighbourhoods


class Tile(NamedTuple):
    """Target cells ``[y0, y1) x [x0, x1)`` and the window rectangle ``[wy0, wy1) x [wx0, wx1)`` they can see."""

    y0: int
    y1: int
    x0: int
    x1: int
    wy0: int
    wy1: int
    wx0: int
    wx1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.y1 - self.y0, self.x1 - self.x0

    @property
    def window(self) -> tuple[int, int, int, int]:
        """(tile origin's row in the window, window rows, origin's column, window columns): the key of
        :func:`outside_window`."""
        return self.y0 - self.wy0, self.wy1 - self.wy0, self.x0 - self.wx0, self.wx1 - self.wx0


def tiles(h: int, w: int, tile: int, half: int) -> Iterator[Tile]:
    """Square tiles of side ``tile`` over an ``h x w`` grid, row-major, each with the rectangle of positions
    within ``half`` cells of it (clipped to the grid)."""
    if tile < 1 or half < 0:
        raise ValueError(f"tiles: need tile >= 1 and half >= 0, got {tile}, {half}")
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            yield Tile(y0, y1, x0, x1, max(0, y0 - half), min(h, y1 + half), max(0, x0 - half), min(w, x1 + half))


def window_half_width(radius: float, window: Window) -> int:
    """The largest cell offset along one axis that the neighbourhood can reach."""
    if window == "circle":
        return max(0, math.ceil(radius) - 1)  # strict: distance < radius, as CRW's MaskedAttention
    return math.floor(radius)


def neighbourhood_allowed(dy: Tensor, dx: Tensor, radius: float, window: Window) -> Tensor:
    """Whether a cell at offset ``(dy, dx)`` from a target cell is within its neighbourhood: ``circle``
    ``dy^2 + dx^2 < radius^2`` (CRW), ``square`` ``|dy|, |dx| <= radius`` (DINO, CorrFlow, MAST)."""
    if window == "circle":
        return (dy * dy + dx * dx).double() < radius * radius
    return (dy.abs() <= radius) & (dx.abs() <= radius)


@functools.lru_cache(maxsize=64)
def outside_window(
    tile: tuple[int, int], win: tuple[int, int, int, int], radius: float, window: Window
) -> Tensor:
    """``(P, Pw)`` True where a window cell is outside a tile cell's neighbourhood. ``tile`` is the tile's
    (rows, cols); ``win`` is :attr:`Tile.window`. Interior tiles share one mask, so it is cached (on the CPU;
    callers move it)."""
    oy, wh, ox, ww = win
    qy, qx = torch.meshgrid(torch.arange(tile[0]) + oy, torch.arange(tile[1]) + ox, indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    dy = ky.reshape(1, -1) - qy.reshape(-1, 1)
    dx = kx.reshape(1, -1) - qx.reshape(-1, 1)
    return ~neighbourhood_allowed(dy, dx, radius, window)


# ----------------------------------------------------------------------------------------------------------
# ROI windows: bilinear reads around a per-position centre
#
# A window centred on p + offset(p) moves by whole cells from one displacement to the next, so every one of its
# (2R+1)^2 bilinear samples has the same fractional part: they are the 4-corner blends of one (2R+2)^2 window of
# whole cells at floor(p + offset(p)). Its dot products are read from one matrix product of the tile's queries
# with the rectangle of reference cells the tile's windows touch (zeros outside the frame: grid_sample's zero
# padding), then blended; values are gathered the same way. The same numbers as a bilinear read per window
# position, without C-channel copies of (2R+1)^2 shifted maps.


def _centres(offset: Tensor, t: Tile, h: int, w: int, radius: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Window centres ``p + offset(p)`` of tile ``t``'s targets, ``(cx, cy)`` float and their whole cells
    ``(bx, by)`` long, each ``(B, P_t)``. A whole cell is clamped where every cell of its window is outside the
    frame anyway (so the rectangles below stay within the padded frame)."""
    o = offset[:, :, t.y0:t.y1, t.x0:t.x1]
    if not bool(torch.isfinite(o).all()):
        raise ValueError("local_attention: an ROI offset is not finite")
    ys = torch.arange(t.y0, t.y1, device=o.device, dtype=o.dtype).view(1, -1, 1)
    xs = torch.arange(t.x0, t.x1, device=o.device, dtype=o.dtype).view(1, 1, -1)
    cx, cy = (xs + o[:, 0]).flatten(1), (ys + o[:, 1]).flatten(1)
    bx = cx.detach().floor().clamp(-radius - 2, w + radius).long()
    by = cy.detach().floor().clamp(-radius - 2, h + radius).long()
    return cx, cy, bx, by


def _window_index(bx: Tensor, by: Tensor, radius: int, x0: int, y0: int, width: int) -> Tensor:
    """Flat indices ``(B, P, (2R+2)^2)`` of the cells ``(by, bx) + e``, ``e`` in ``[-R, R+1]^2``, in a grid whose
    top-left cell is ``(y0, x0)`` and whose rows are ``width`` long."""
    e = torch.arange(-radius, radius + 2, device=bx.device)
    iy = (by - y0)[..., None] + e
    ix = (bx - x0)[..., None] + e
    return (iy[..., :, None] * width + ix[..., None, :]).flatten(2)


def _blend(d: Tensor, fx: Tensor, fy: Tensor) -> Tensor:
    """``(B, P, n+1, n+1, ...)`` whole-cell samples -> ``(B, P, n, n, ...)`` bilinear at ``+ (fy, fx)``."""
    extra = (1,) * (d.dim() - 2)
    fx, fy = fx.view(*fx.shape, *extra), fy.view(*fy.shape, *extra)
    top = d[:, :, :-1, :-1] + fx * (d[:, :, :-1, 1:] - d[:, :, :-1, :-1])
    bottom = d[:, :, 1:, :-1] + fx * (d[:, :, 1:, 1:] - d[:, :, 1:, :-1])
    return top + fy * (bottom - top)


def _roi_window(
    feat_t: Tensor, feat_r: Tensor, values: Tensor, offset: Tensor, t: Tile, radius: int, scale: float,
    value_offset: Tensor, outside: Outside,
) -> tuple[Tensor, Tensor]:
    """Logits ``(B, P_t, P^2)`` and values ``(B, P_t, P^2, V)`` of the ``(2R+1)^2`` window centred on
    ``p + offset(p)`` for every target ``p`` of tile ``t``, read bilinearly with pixel-centre coordinates (the
    authors' ``deform_im2col``: ``grid_sample`` with ``align_corners=True``), the values around
    ``p + value_offset(p)``. Positions outside the frame: the most negative logit (``exclude``) or the
    zero-padded bilinear samples (``zero``: zero padding)."""
    b, _, h, w = feat_r.shape
    n = 2 * radius + 2
    cx, cy, bx, by = _centres(offset, t, h, w, radius)
    # the rectangle of whole cells the tile's windows touch, and the part of it inside the frame
    x_lo, x_hi = int(bx.min()) - radius, int(bx.max()) + radius + 1
    y_lo, y_hi = int(by.min()) - radius, int(by.max()) + radius + 1
    kx0, kx1, ky0, ky1 = max(x_lo, 0), min(x_hi + 1, w), max(y_lo, 0), min(y_hi + 1, h)
    q = feat_t[:, :, t.y0:t.y1, t.x0:t.x1].flatten(2).transpose(1, 2)  # (B, P_t, C)
    if kx0 < kx1 and ky0 < ky1:
        dense = torch.bmm(q, feat_r[:, :, ky0:ky1, kx0:kx1].flatten(2)).unflatten(2, (ky1 - ky0, kx1 - kx0))
        dense = F.pad(dense, (kx0 - x_lo, x_hi + 1 - kx1, ky0 - y_lo, y_hi + 1 - ky1))
    else:
        dense = q.new_zeros(b, q.shape[1], y_hi - y_lo + 1, x_hi - x_lo + 1)
    idx = _window_index(bx, by, radius, x_lo, y_lo, x_hi - x_lo + 1)
    logits = _blend(dense.flatten(2).gather(2, idx).unflatten(2, (n, n)), cx - bx, cy - by).flatten(2) * scale
    if outside == "exclude":
        r = torch.arange(-radius, radius + 1, device=cx.device, dtype=cx.dtype)
        px, py = cx[..., None, None] + r.view(1, 1, 1, -1), cy[..., None, None] + r.view(1, 1, -1, 1)
        inside = (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)  # (B, P_t, 2R+1, 2R+1)
        logits = logits.masked_fill(~inside.flatten(2), torch.finfo(logits.dtype).min)
    if value_offset is not offset:
        cx, cy, bx, by = _centres(value_offset, t, h, w, radius)
    m = n  # the clamped whole cells keep every window cell within n of the frame
    v = F.pad(values, (m, m, m, m)).flatten(2)  # (B, V, (h + 2m)(w + 2m))
    idx = _window_index(bx, by, radius, -m, -m, w + 2 * m).flatten(1)  # (B, P_t n^2)
    vals = v.gather(2, idx[:, None].expand(-1, v.shape[1], -1)).unflatten(2, (-1, n, n)).permute(0, 2, 3, 4, 1)
    return logits, _blend(vals, cx - bx, cy - by).flatten(2, 3)


# ----------------------------------------------------------------------------------------------------------
# The copy


def _values_at_features(values: Tensor, h: int, w: int) -> Tensor:
    """Reference values read at every s-th pixel, ``(B, V, H', W')`` -> ``(B, V, h, w)`` (MAST's ``prep``)."""
    if values.shape[-2:] == (h, w):
        return values
    sy, sx = -(-values.shape[-2] // h), -(-values.shape[-1] // w)
    small = values[:, :, ::sy, ::sx]
    if small.shape[-2:] != (h, w) or sy != sx:
        raise ValueError(f"values {tuple(values.shape)} do not subsample to the feature grid {h}x{w}")
    return small


def local_attention(
    feat_t: Tensor, refs: Sequence[Reference | tuple[Tensor, Tensor, Tensor | None]], radius: int,
    scale: float | None = None, tile: int | None = None, outside: Outside = "exclude",
) -> Tensor:
    """Copy values from references through one softmax over all their windows.

    Args:
        feat_t: ``(B, C, h, w)`` target features.
        refs: :class:`Reference` s, or ``(feat_r (B, C, h, w), values_r (B, V, H', W'), offset)`` tuples. Values
            at a multiple s of the feature size are read at every s-th pixel from the top-left (MAST's
            ``x[:, :, ::s, ::s]``). ``offset`` is ``None`` for a window centred on the target position itself, or
            ``(B, 2, h, w)`` (dx, dy) in cells centring it on ``p + offset(p)`` (:func:`roi_offsets`), read
            bilinearly.
        radius: R: target p sees reference positions ``p + d`` with ``|d_y|, |d_x| <= R``.
        scale: logits are ``scale <f_t(p), f_r(q)>``; ``1 / sqrt(C)`` when ``None``.
        tile: target tile side in cells (speed and memory only; the result does not depend on it). None: 16,
            the fastest measured for radii 6 and 12 (``docs/benchmarks.md``).
        outside: window positions outside the frame are left out of the softmax (``exclude``), or enter it as
            zero features and zero values (``zero``: logit 0, MAST's ``SpatialCorrelationSampler`` and
            ``F.unfold`` with zero padding; around an ROI, zero-padded bilinear samples).
    Returns:
        ``(B, V, h, w)``: ``sum_{r, q} softmax_{r, q}(logit) v_r(q)`` over the window positions of every reference.
    """
    if not refs:
        raise ValueError("local_attention: needs at least one reference")
    if feat_t.dim() != 4:
        raise ValueError(f"local_attention: target features must be (B, C, h, w), got {tuple(feat_t.shape)}")
    if outside not in ("exclude", "zero"):
        raise ValueError(f"local_attention: outside must be 'exclude' or 'zero', got {outside!r}")
    refs_ = [Reference(*r) for r in refs]
    for r in refs_:
        if r.features.shape != feat_t.shape or r.values.dim() != 4 or r.values.shape[0] != feat_t.shape[0]:
            raise ValueError(f"local_attention: need reference features {tuple(feat_t.shape)} and values "
                             f"(B, V, H', W'), got {tuple(r.features.shape)}, {tuple(r.values.shape)}")
        for o in (r.offset, r.value_offset):
            if o is not None and o.shape != (feat_t.shape[0], 2, *feat_t.shape[2:]):
                raise ValueError(f"local_attention: an ROI offset must be (B, 2, h, w), got {tuple(o.shape)}")
        if r.value_offset is not None and r.offset is None:
            raise ValueError("local_attention: a value_offset needs an offset (it moves an ROI window's values)")
    if radius < 0:
        raise ValueError(f"local_attention: radius must be >= 0, got {radius}")
    b, c, h, w = feat_t.shape
    scale = 1.0 / math.sqrt(c) if scale is None else scale
    small = [_values_at_features(r.values, h, w).to(feat_t.dtype) for r in refs_]
    local = sum(1 for r in refs_ if r.offset is None)  # windows centred on the target itself
    out = feat_t.new_empty(b, small[0].shape[1], h, w)
    neg = torch.finfo(feat_t.dtype).min
    for t in tiles(h, w, 16 if tile is None else tile, radius):
        q = feat_t[:, :, t.y0:t.y1, t.x0:t.x1].flatten(2).transpose(1, 2)  # (B, P_t, C)
        logits, values = [], []
        for r, v in zip(refs_, small, strict=True):
            if r.offset is None:
                keys = r.features[:, :, t.wy0:t.wy1, t.wx0:t.wx1].flatten(2)  # (B, C, P_w): the tile's window rectangle
                off = outside_window(t.shape, t.window, float(radius), "square").to(feat_t.device)
                logits.append(torch.bmm(q, keys).mul(scale).masked_fill(off, neg))  # (B, P_t, P_w)
                values.append(v[:, :, t.wy0:t.wy1, t.wx0:t.wx1].flatten(2).transpose(1, 2))  # (B, P_w, V)
            else:
                z, vals = _roi_window(feat_t, r.features, v, r.offset, t, radius, scale,
                                      r.offset if r.value_offset is None else r.value_offset, outside)
                logits.append(z)  # (B, P_t, P^2)
                values.append(vals)  # (B, P_t, P^2, V)
        if outside == "zero" and local:
            # the local windows' positions outside the frame: logit 0 and value 0 each, so one column of
            # logit log(count) holds their share of the softmax and copies nothing
            n = _outside_count(t, h, w, radius, feat_t.device) * local
            logits.append(torch.where(n > 0, n.clamp(min=1).log(), neg).to(feat_t.dtype).expand(b, -1, 1))
        weights = F.softmax(torch.cat(logits, dim=2), dim=2).split([z.shape[2] for z in logits], dim=2)
        copied = q.new_zeros(b, q.shape[1], out.shape[1])  # (B, P_t, V)
        for p, v in zip(weights, values, strict=False):  # the outside column, if any, is last and copies nothing
            copied = copied + (torch.bmm(p, v) if v.dim() == 3 else torch.einsum("bpk,bpkv->bpv", p, v))
        out[:, :, t.y0:t.y1, t.x0:t.x1] = copied.transpose(1, 2).reshape(b, -1, *t.shape)
    return out


def _outside_count(t: Tile, h: int, w: int, radius: int, device: torch.device) -> Tensor:
    """``(P_t, 1)`` float: how many of each tile cell's ``(2R+1)^2`` window positions lie outside the frame."""
    ys = torch.arange(t.y0, t.y1, device=device)
    xs = torch.arange(t.x0, t.x1, device=device)
    rows = (ys + radius).clamp(max=h - 1) - (ys - radius).clamp(min=0) + 1
    cols = (xs + radius).clamp(max=w - 1) - (xs - radius).clamp(min=0) + 1
    inside = rows[:, None] * cols[None, :]
    return ((2 * radius + 1) ** 2 - inside).reshape(-1, 1).double()


def local_copy(
    feat_t: Tensor, feat_r: Tensor, labels_r: Tensor, window: int, temperature: float | None = None,
    band: int | None = None,
) -> Tensor:
    """:func:`local_attention` for one reference at feature resolution through an odd ``window`` x ``window``
    window, logits ``<f_t, f_r> / temperature`` (``sqrt(C)`` when None): CorrFlow's copy.

    ``feat_t``, ``feat_r`` ``(B, C, h, w)``, ``labels_r`` ``(B, K, h, w)`` -> ``(B, K, h, w)``. ``band``: the tile
    side (speed and memory only).
    """
    if feat_t.dim() != 4 or feat_r.shape != feat_t.shape or labels_r.dim() != 4 or labels_r.shape[0] != feat_t.shape[0]:
        raise ValueError(f"local_copy: need feat_t, feat_r (B, C, h, w) and labels_r (B, K, h, w), got "
                         f"{tuple(feat_t.shape)}, {tuple(feat_r.shape)}, {tuple(labels_r.shape)}")
    if labels_r.shape[2:] != feat_t.shape[2:] or window < 1 or window % 2 == 0:
        raise ValueError(f"local_copy: labels must match the features' {tuple(feat_t.shape[2:])} and window be odd, "
                         f"got {tuple(labels_r.shape[2:])}, {window}")
    t = temperature if temperature is not None else math.sqrt(feat_t.shape[1])
    return local_attention(feat_t, [(feat_r, labels_r, None)], window // 2, 1.0 / t, band)


# ----------------------------------------------------------------------------------------------------------
# MAST's coarse ROI search


def roi_dilation(distance: int, roi_after: int = 15, max_dilation: int = 4) -> int:
    """Dilation of the coarse search for a reference ``distance`` frames back: ``min(4, distance // 15 + 1)``."""
    return min(max_dilation, distance // roi_after + 1)


def roi_offsets(
    feat_t: Tensor, feat_r: Tensor, dilation: int, search_radius: int = 12, scale: float = 1.0,
    outside: Outside = "exclude",
) -> Tensor:
    """Coarse search: the expected displacement of each target position in the reference.

    A ``(2S+1)^2`` window of reference positions at ``dilation`` cells apart (S = ``search_radius``) around each
    target position; ``softmax(scale <f_t, f_r>)`` over the positions inside the frame (``exclude``) or over all
    of them, those outside scoring 0 (``zero``: MAST's dilated ``SpatialCorrelationSampler``, whose
    displacements past the border still count in the mean); the softmax-weighted mean displacement.
    ``(B, C, h, w)`` x2 -> ``(B, 2, h, w)`` (dx, dy) in cells.
    """
    if feat_t.dim() != 4 or feat_t.shape != feat_r.shape:
        raise ValueError(f"roi_offsets: target and reference features must both be (B, C, h, w), got "
                         f"{tuple(feat_t.shape)} and {tuple(feat_r.shape)}")
    b, _, h, w = feat_t.shape
    reach = search_radius * dilation
    steps = torch.arange(-search_radius, search_radius + 1, device=feat_t.device) * dilation
    disp = torch.stack(torch.meshgrid(steps, steps, indexing="ij"), -1).flatten(0, 1)  # ((2S+1)^2, 2): (dy, dx)
    d = disp.flip(-1).to(feat_t.dtype)  # (dx, dy)
    neg = torch.finfo(feat_t.dtype).min
    out = feat_t.new_empty(b, 2, h, w)
    # per tile: its queries against the rectangle of reference cells within reach, one matrix product; the
    # window's cells read from it (zero-padded: a cell past the border is a zero feature, logit 0)
    for t in tiles(h, w, 16, reach):
        q = feat_t[:, :, t.y0:t.y1, t.x0:t.x1].flatten(2).transpose(1, 2)  # (B, P_t, C)
        dense = torch.bmm(q, feat_r[:, :, t.wy0:t.wy1, t.wx0:t.wx1].flatten(2)) * scale
        dense = dense.unflatten(2, (t.wy1 - t.wy0, t.wx1 - t.wx0))
        pads = (t.wx0 - (t.x0 - reach), (t.x1 - 1 + reach) - (t.wx1 - 1), t.wy0 - (t.y0 - reach),
                (t.y1 - 1 + reach) - (t.wy1 - 1))
        dense = F.pad(dense, pads).flatten(2)  # rows y0 - reach .. y1 - 1 + reach
        width = t.x1 - t.x0 + 2 * reach
        ys, xs = torch.meshgrid(torch.arange(t.y1 - t.y0, device=q.device), torch.arange(t.x1 - t.x0, device=q.device),
                                indexing="ij")
        iy = ys.reshape(-1, 1) + reach + disp[:, 0]  # (P_t, (2S+1)^2) rows in the padded rectangle
        ix = xs.reshape(-1, 1) + reach + disp[:, 1]
        z = dense.gather(2, (iy * width + ix).expand(b, -1, -1))  # (B, P_t, (2S+1)^2)
        if outside == "exclude":
            gy, gx = iy + t.y0 - reach, ix + t.x0 - reach  # frame cells
            z = z.masked_fill(~((gy >= 0) & (gy < h) & (gx >= 0) & (gx < w)), neg)
        mean = F.softmax(z, dim=2) @ d  # (B, P_t, 2)
        out[:, :, t.y0:t.y1, t.x0:t.x1] = mean.transpose(1, 2).unflatten(2, (t.y1 - t.y0, t.x1 - t.x0))
    return out
