"""Label propagation through feature affinities: the evaluation protocol of CRW, VFS and DINO.

For each target frame, every position attends to the positions of a small context (the first frame with
its ground-truth labels plus the N most recent frames with their predicted soft labels) that lie within
a spatial radius, keeps the top-k affinities over all context positions jointly, and takes the softmax-
weighted sum of their labels (PROTOCOLS.md section 2; Jabri et al. 2020, https://arxiv.org/abs/2006.14613).

The affinity is computed as local attention, never as the dense ``(N h w, h w)`` matrix (3.5 GB per frame
at 480p): target positions are cut into square tiles, each tile is matched against the window of context
positions it can see, the top-k is taken per context frame and then jointly over the frames' top-k's.
That is exact (a joint top-k element is in its own frame's top-k) and its memory depends only on the tile
and window sizes, not on the image size or the video length.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vidssl.engine.config import ConfigError
from vidssl.nn.local_attention import Tile, Window, outside_window, tiles, window_half_width

# How labels go from the image to the feature grid and back (``label_to_feature_res``, ``upsample_labels``):
# the authors' code each preset follows, or vidssl's own cell-aligned resize
LabelResize = Literal["crw", "vfs", "dino", "stride"]


@dataclass
class JhmdbConfig:
    """The JHMDB keypoint settings of a preset, read by ``vidssl eval jhmdb``; the defaults are CRW's code
    (``code/data/jhmdb.py``, ``code/utils/test_utils.py:process_pose``, ``code/eval/eval_pck.py``)."""

    size: tuple[int, int] | None = (320, 320)  # (H, W) frames are resized to before encoding; None: native
    decode_topk: int = 3  # 1: the arg-max cell; k: the value-weighted mean of the top-k cells (CRW: 3)
    heatmap: Literal["crw", "rounded"] = "crw"  # crw: draw_labelmap_np's 4x4 patch; rounded: 3x3 at the rounded cell
    sigma: float = 0.5  # Gaussian std in feature cells (JhmdbSet's default)
    zero_box: Literal["miss", "skip"] = "miss"  # a frame whose box is 0: eval_pck divides by it (a miss), or skip it

    def __post_init__(self) -> None:
        if self.decode_topk < 1:
            raise ConfigError(f"jhmdb.decode_topk: {self.decode_topk!r} is out of range")
        if self.sigma <= 0:
            raise ConfigError(f"jhmdb.sigma: {self.sigma!r} is out of range")
        if self.size is not None and min(self.size) < 1:
            raise ConfigError(f"jhmdb.size: {list(self.size)!r} is out of range")


@dataclass
class PropagationConfig:
    """One label-propagation protocol; the defaults are CRW's (``configs/eval/crw.yaml`` explains them)."""

    mode: Literal["topk"] = "topk"  # the evaluation mode (vidssl.eval.modes); `mode: mast` is MastMemoryConfig
    topk: int = 10
    radius: float = 12.0
    window: Window = "circle"  # circle: dy^2 + dx^2 < radius^2 (CRW); square: |dy|, |dx| <= radius (DINO)
    temperature: float = 0.05
    context: int = 20  # N most recent frames, besides the first frame
    restrict_first: bool = False  # CRW leaves the first frame unrestricted; VFS and DINO restrict it
    pad_with_first: bool = True  # CRW fills the not-yet-seen recent slots with copies of the first frame
    first_is_recent: bool = False  # VFS: frame 0 is also the oldest recent frame (its preceding frames are
    # max(0, t - context) .. t - 1), so until it leaves the ring the context holds it twice
    label_resize: LabelResize = "crw"  # labels to the feature grid and back as that code does (label_to_feature_res)
    label_downsample: Literal["bilinear", "nearest"] = "bilinear"  # the interpolation of label_resize: stride
    frame_resize: Literal["native", "dino"] = "native"  # frames as read, or DINO's read_frame: the short side
    # to 480, the long side floored to a multiple of 64 (854x480 -> 832x480), cv2.resize, before encoding
    norm_mask: bool = False  # per-channel min-max of the upsampled soft labels before argmax (VFS, DINO; not
    # CRW's --norm_mask, which normalises each position over the channels at feature resolution)
    tile: int = 12  # target tile side in feature cells: speed only, results do not depend on it
    jhmdb: JhmdbConfig = field(default_factory=JhmdbConfig)  # keypoints: only `vidssl eval jhmdb` reads it

    def __post_init__(self) -> None:
        if self.pad_with_first and self.first_is_recent:
            raise ConfigError("first_is_recent: true needs pad_with_first: false (the recent frames start as frame "
                              "0 alone, not as copies of it)")
        if self.frame_resize != "native" and self.label_resize == "stride":
            raise ConfigError(f"frame_resize: {self.frame_resize} resizes the frames, and label_resize: stride "
                              f"aligns cells with the frame as read; use label_resize: crw, vfs or dino")
        if self.label_downsample != "bilinear" and self.label_resize != "stride":
            raise ConfigError(
                f"label_downsample: {self.label_downsample!r} applies to label_resize: stride only; "
                f"label_resize: {self.label_resize} resizes as its authors' code does"
            )
        checks = {
            "topk": self.topk >= 1,
            "radius": self.radius > 0,
            "temperature": self.temperature > 0,
            "context": self.context >= 0,
            "tile": self.tile >= 1,
        }
        for key, ok in checks.items():
            if not ok:
                raise ConfigError(f"{key}: {getattr(self, key)!r} is out of range")


def _window_logits(
    query: torch.Tensor, keys_cl: torch.Tensor, labels_cl: torch.Tensor, t: Tile, radius: float, window: Window, k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k within the neighbourhood, jointly over the restricted frames, for one target tile.

    query ``(P, C)`` divided by the temperature; keys_cl ``(N, h, w, C)`` and labels_cl ``(N, h, w, K)``
    channel-last ->
    logits ``(P, k')`` and their labels ``(P, k', K)``.
    """
    n, c = keys_cl.shape[0], keys_cl.shape[-1]
    keys = keys_cl[:, t.wy0:t.wy1, t.wx0:t.wx1].reshape(-1, c)  # (N Pw, C): one copy of the window
    logits = query @ keys.t()  # (P, N Pw): one GEMM for all frames (query is already divided by t)
    outside = outside_window(t.shape, t.window, radius, window)
    p = query.shape[0]
    logits.view(p, n, -1).masked_fill_(outside.to(logits.device)[:, None, :], float("-inf"))
    values, index = logits.topk(min(k, logits.shape[-1]), dim=-1)  # (P, k')
    labels = labels_cl[:, t.wy0:t.wy1, t.wx0:t.wx1].reshape(-1, labels_cl.shape[-1])  # (N Pw, K)
    return values, labels[index]


def _global_logits(
    query: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, k: int, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k over all positions of one unrestricted frame, ``chunk`` queries at a time.

    query ``(P, C)`` divided by the temperature, feats ``(C, h, w)``, labels ``(K, h, w)`` ->
    logits ``(P, k')`` and labels ``(P, k', K)``.
    """
    keys = feats.reshape(feats.shape[0], -1)  # (C, h w)
    flat = labels.reshape(labels.shape[0], -1).t()  # (h w, K)
    kk = min(k, keys.shape[1])
    values = query.new_empty(query.shape[0], kk)
    picked = query.new_empty(query.shape[0], kk, flat.shape[1])
    for i in range(0, query.shape[0], chunk):
        v, index = (query[i : i + chunk] @ keys).topk(kk, dim=-1)
        values[i : i + chunk], picked[i : i + chunk] = v, flat[index]
    return values, picked


def propagate(
    feat_t: torch.Tensor,
    ctx_feats: torch.Tensor,
    ctx_labels: torch.Tensor,
    *,
    topk: int,
    radius: float,
    temperature: float,
    restrict_first: bool,
    window: Window = "circle",
    normalized: bool = False,
    tile: int = 12,
) -> torch.Tensor:
    """Soft labels of one target frame from its context.

    Args:
        feat_t: ``(C, h, w)`` target features.
        ctx_feats: ``(N, C, h, w)`` context features; entry 0 is the first frame. A channel-last view
            (``x.permute(0, 3, 1, 2)`` of an ``(N, h, w, C)`` tensor) avoids one copy.
        ctx_labels: ``(N, K, h, w)`` context soft labels (channel-last views welcome too).
        topk: affinities kept per target position, jointly over all context positions.
        radius: neighbourhood radius in feature cells (see ``window``).
        temperature: logits are ``dot / temperature``.
        restrict_first: whether context entry 0 is restricted to the neighbourhood too (VFS, DINO) or
            sees the whole frame (CRW).
        window: ``"circle"`` (distance < radius) or ``"square"`` (both offsets <= radius).
        normalized: the features are already L2-normalised per position.
        tile: target tile side in cells (speed and memory only).

    Returns:
        ``(K, h, w)`` soft labels: softmax over the top-k logits, weighted sum of their labels.
    """
    if feat_t.dim() != 3 or ctx_feats.dim() != 4 or ctx_labels.dim() != 4:
        raise ValueError(
            f"expected feat_t (C, h, w), ctx_feats (N, C, h, w), ctx_labels (N, K, h, w); got "
            f"{tuple(feat_t.shape)}, {tuple(ctx_feats.shape)}, {tuple(ctx_labels.shape)}"
        )
    if ctx_feats.shape[1:] != feat_t.shape or ctx_labels.shape[0] != ctx_feats.shape[0] or (
        ctx_labels.shape[2:] != feat_t.shape[1:]
    ):
        raise ValueError(
            f"shapes do not agree: feat_t {tuple(feat_t.shape)}, ctx_feats {tuple(ctx_feats.shape)}, "
            f"ctx_labels {tuple(ctx_labels.shape)}"
        )
    if ctx_feats.shape[0] == 0:
        raise ValueError("the context is empty")
    if not normalized:
        feat_t, ctx_feats = F.normalize(feat_t, dim=0), F.normalize(ctx_feats, dim=1)
    c, h, w = feat_t.shape
    ctx_labels = ctx_labels.to(feat_t.dtype)
    half = window_half_width(radius, window)
    split = 0 if restrict_first else 1  # context entries [split:] are restricted
    # dividing the queries by the temperature is P C work instead of N P Pw on the logits
    query_cl = (feat_t / temperature).permute(1, 2, 0).contiguous()  # (h, w, C)
    if split:  # the unrestricted first frame, for all positions at once
        first_values, first_labels = _global_logits(query_cl.reshape(-1, c), ctx_feats[0], ctx_labels[0], topk)
        first_values, first_labels = first_values.reshape(h, w, -1), first_labels.reshape(h, w, *first_labels.shape[1:])
    keys_cl = ctx_feats[split:].permute(0, 2, 3, 1).contiguous()  # (N, h, w, C); free for channel-last input
    labels_cl = ctx_labels[split:].permute(0, 2, 3, 1).contiguous()  # (N, h, w, K)
    out = feat_t.new_empty(h, w, ctx_labels.shape[1])
    for t in tiles(h, w, tile, half):  # the local attention's tiles and windows (vidssl.nn.local_attention)
        query = query_cl[t.y0:t.y1, t.x0:t.x1].reshape(-1, c)  # (P, C)
        values, labels = [], []
        if split:
            values.append(first_values[t.y0:t.y1, t.x0:t.x1].reshape(query.shape[0], -1))
            labels.append(first_labels[t.y0:t.y1, t.x0:t.x1].reshape(query.shape[0], -1, out.shape[-1]))
        if keys_cl.shape[0]:
            v, lab = _window_logits(query, keys_cl, labels_cl, t, radius, window, topk)
            values.append(v)
            labels.append(lab)
        logits, cand = torch.cat(values, dim=1), torch.cat(labels, dim=1)  # (P, M), (P, M, K)
        best, index = logits.topk(min(topk, logits.shape[1]), dim=1)  # joint top-k over all candidates
        weights = best.softmax(dim=1)  # (P, k)
        chosen = torch.gather(cand, 1, index.unsqueeze(-1).expand(-1, -1, cand.shape[-1]))  # (P, k, K)
        out[t.y0:t.y1, t.x0:t.x1] = (weights.unsqueeze(-1) * chosen).sum(dim=1).reshape(*t.shape, -1)
    return out.permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------------------------------
# Labels between image and feature resolution
#
# Each authors' code moves labels to the feature grid (h, w) and back to the image (H, W) its own way; at
# a width that is not a multiple of the stride (854 px: most of DAVIS) the ways give different masks.
#   crw (ajabri/videowalk): data/vos.py VOSDataset.__getitem__ cv2.resize of the one-hot map to
#       (w, h) = (ceil(W/8), ceil(H/8)); utils/test_utils.py dump_predictions cv2.resize of the soft labels
#       to (W, H), argmax. Both bilinear (INTER_LINEAR, no antialiasing), on the whole map.
#   vfs (xvjiarui/VFS): models/trackers/vanilla_tracker.py VanillaTracker.forward_test: the label ids are
#       resized to (h, w) by PIL nearest (common/utils.py pil_nearest_interpolate), then one-hot;
#       predictions F.interpolate(size=(H, W), bilinear, align_corners=False), min-max, argmax.
#   dino (facebookresearch/dino): eval_video_segmentation.py read_seg PIL nearest of the ids to the patch
#       grid, then one-hot; eval_video_tracking_davis F.interpolate(scale_factor=patch), min-max, argmax at
#       (h s, w s), and PIL nearest of the ids to (W, H).
#   stride (vidssl): the labels are cropped or edge-padded to (s h, s w), so that cell (i, j) covers pixels
#       [s i, s i + s), resized by exactly s (bilinear or nearest) and back; geometrically aligned with the
#       features, but no authors' code does it.


def dino_frame_size(height: int, width: int, scale: int = 480) -> tuple[int, int]:
    """``(H, W)`` DINO's ``read_frame`` resizes a frame to (``eval_video_segmentation.py``, ``scale_size=[480]``):
    the short side to ``scale``, the long side in proportion, floored to a multiple of 64."""
    if height > width:
        return int((scale * height / width) // 64 * 64), scale
    return scale, int((scale * width / height) // 64 * 64)


def resize_frame(image: np.ndarray, how: Literal["native", "dino"]) -> np.ndarray:
    """An ``(H, W, 3)`` uint8 frame as the preset's ``frame_resize`` feeds it to the encoder."""
    if how == "native":
        return image
    h, w = dino_frame_size(*image.shape[:2])
    return image if (h, w) == image.shape[:2] else cv2.resize(image, (w, h))  # INTER_LINEAR, as read_frame


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``(H, W)`` integer ids -> ``(K, H, W)`` float one-hot (K = num_classes)."""
    return F.one_hot(labels.long(), num_classes).permute(2, 0, 1).float()


def _fit(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(..., H, W)`` cropped at the bottom/right, or padded there by edge replication, to ``size``."""
    x = x[..., : size[0], : size[1]]
    pad_h, pad_w = size[0] - x.shape[-2], size[1] - x.shape[-1]
    if pad_h or pad_w:
        lead = x.shape[:-2]
        x = F.pad(x.reshape(1, -1, *x.shape[-2:]), (0, pad_w, 0, pad_h), mode="replicate").reshape(*lead, *size)
    return x


@functools.lru_cache(maxsize=64)
def _pil_nearest_index(n_in: int, n_out: int) -> torch.Tensor:
    """``(n_out,)`` the source index that PIL's NEAREST resize reads along an axis of ``n_in`` pixels.

    PIL scales an axis on its own (its affine scaling steps a float coordinate from 0.5 scale by scale), so
    resizing a line of indices gives its exact choice, with its float rounding, for any map and any K.
    """
    line = Image.fromarray(np.arange(n_in, dtype=np.int32)[None, :])  # mode "I"
    picked = np.asarray(line.resize((n_out, 1), Image.Resampling.NEAREST))[0]
    return torch.from_numpy(picked.astype(np.int64))


def pil_nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(..., H, W)`` -> ``(..., h, w)`` exactly as ``PIL.Image.resize((w, h), NEAREST)`` of each map."""
    rows = _pil_nearest_index(x.shape[-2], size[0]).to(x.device)
    cols = _pil_nearest_index(x.shape[-1], size[1]).to(x.device)
    return x[..., rows[:, None], cols[None, :]]


def cv2_bilinear(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(K, H, W)`` -> ``(K, h, w)`` float32 by ``cv2.resize(..., (w, h))`` (INTER_LINEAR), as CRW's code.

    OpenCV's bilinear differs from ``F.interpolate`` (up to 1.5e-5 on a DAVIS one-hot map, 5e-5 on random
    maps), so CRW's path calls OpenCV itself.
    """
    arr = x.detach().to("cpu", torch.float32).permute(1, 2, 0).numpy()  # (H, W, K)
    parts = []
    for k in range(0, arr.shape[-1], 128):  # OpenCV 5 images hold at most 128 channels (4.x: 512)
        part = np.ascontiguousarray(arr[..., k : k + 128])
        out = cv2.resize(part, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        parts.append(out.reshape(size[0], size[1], -1))  # one channel comes back as (h, w)
    return torch.from_numpy(np.concatenate(parts, axis=-1)).permute(2, 0, 1).to(x.device)


def label_to_feature_res(
    labels: torch.Tensor,
    size: tuple[int, int],
    stride: int,
    mode: Literal["bilinear", "nearest"] = "bilinear",
    resize: LabelResize = "crw",
) -> torch.Tensor:
    """``(K, H, W)`` one-hot labels -> ``(K, h, w)`` at the feature grid ``size``, as ``resize``'s code does.

    ``crw``: OpenCV bilinear of the whole map to ``(h, w)``; ``vfs`` and ``dino``: PIL nearest of the whole
    map (the one-hot of PIL nearest of the ids); ``stride``: crop or edge-pad to ``(s h, s w)`` and resize by
    exactly s, bilinear (no antialiasing) or nearest (``mode``, used by ``stride`` only).
    """
    if labels.dim() != 3:
        raise ValueError(f"labels must be (K, H, W), got {tuple(labels.shape)}")
    h, w = size
    if resize == "crw":
        return cv2_bilinear(labels.float(), size)
    if resize in ("vfs", "dino"):
        return pil_nearest(labels.float(), size)
    fitted = _fit(labels.float(), (h * stride, w * stride)).unsqueeze(0)
    if mode == "bilinear":
        return F.interpolate(fitted, size=(h, w), mode="bilinear", align_corners=False, antialias=False)[0]
    return F.interpolate(fitted, size=(h, w), mode="nearest-exact")[0]


def _min_max(up: torch.Tensor) -> torch.Tensor:
    """Per-channel min-max over the image (VFS, DINO); channels that are never positive, or flat, are left
    as they are (VFS sends a flat positive channel to 0, DINO to NaN)."""
    flat = up.reshape(up.shape[0], -1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    span = high - low
    ok = (high > 0) & (span > 0)
    scaled = (up - low[:, None, None]) / span.clamp_min(1e-12)[:, None, None]
    return torch.where(ok[:, None, None], scaled, up)


def upsample_labels(
    soft: torch.Tensor, size: tuple[int, int], stride: int, norm_mask: bool = False, resize: LabelResize = "crw"
) -> torch.Tensor:
    """``(K, h, w)`` soft labels -> ``(H, W)`` long label ids at image size ``size``, as ``resize``'s code does.

    ``crw``: OpenCV bilinear to ``(H, W)``, argmax. ``vfs``: ``F.interpolate`` bilinear to ``(H, W)``.
    ``dino``: ``F.interpolate`` bilinear by the stride to ``(s h, s w)``, argmax there, then PIL nearest of
    the ids to ``(H, W)``. ``stride``: bilinear by the stride, crop or pad to the image (the inverse of
    ``label_to_feature_res``'s ``stride``). ``norm_mask``: per-channel min-max before the argmax.
    """
    if soft.dim() != 3:
        raise ValueError(f"soft labels must be (K, h, w), got {tuple(soft.shape)}")
    h, w = soft.shape[-2:]
    if resize == "crw":
        up = cv2_bilinear(soft, size)
    elif resize == "vfs":
        up = F.interpolate(soft[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    elif resize == "dino":
        up = F.interpolate(
            soft[None].float(), scale_factor=stride, mode="bilinear", align_corners=False, recompute_scale_factor=False
        )[0]
    else:
        up = F.interpolate(soft[None].float(), size=(h * stride, w * stride), mode="bilinear", align_corners=False)[0]
        up = _fit(up, size)
    if norm_mask:
        up = _min_max(up)
    ids = up.argmax(dim=0)
    return pil_nearest(ids, size) if resize == "dino" else ids


# ----------------------------------------------------------------------------------------------------
# Streaming over a video


def propagate_sequence(
    encode_frame: Callable[[int], torch.Tensor],
    first_labels: torch.Tensor,
    num_frames: int,
    cfg: PropagationConfig,
) -> Iterator[torch.Tensor]:
    """Propagate the first frame's labels through a video, one frame at a time.

    ``encode_frame(t)`` gives frame t's ``(C, h, w)`` features; ``first_labels`` is ``(K, h, w)`` at
    feature resolution. Yields ``(K, h, w)`` soft labels for frames 0 .. num_frames - 1 (frame 0: the
    given labels), each as soon as it is made. Only the first frame and the ``cfg.context`` most recent
    frames are kept, in one preallocated ring buffer, so memory does not grow with the video.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be at least 1, got {num_frames}")
    first = F.normalize(encode_frame(0).float(), dim=0)
    if first.dim() != 3 or first_labels.dim() != 3 or first_labels.shape[1:] != first.shape[1:]:
        raise ValueError(
            f"features {tuple(first.shape)} and first labels {tuple(first_labels.shape)} must be (C, h, w) "
            "and (K, h, w) of one size"
        )
    first_labels = first_labels.to(first.device, first.dtype)
    yield first_labels
    n = cfg.context
    # slot 0: the first frame, never dropped (as in CRW); slots 1..n: a ring of the most recent frames.
    # Stored channel-last, which is the layout the local attention reads windows from.
    feats = first.permute(1, 2, 0).expand(1 + n, -1, -1, -1).contiguous()  # (1 + n, h, w, C)
    labels = first_labels.permute(1, 2, 0).expand(1 + n, -1, -1, -1).contiguous()  # (1 + n, h, w, K)
    # CRW prepends n copies of the first frame to the video, so its recent slots start full of them; VFS's
    # preceding frames start with frame 0 itself (slot 1 holds it, the next frame goes to slot 2)
    filled = n if cfg.pad_with_first else min(n, int(cfg.first_is_recent))
    slot = filled % n if n else 0
    for t in range(1, num_frames):
        feat = F.normalize(encode_frame(t).float(), dim=0)
        if feat.shape != first.shape:
            raise ValueError(f"frame {t}: features {tuple(feat.shape)} differ from frame 0's {tuple(first.shape)}")
        # the context order does not matter: the top-k is joint over all context positions
        pred = propagate(
            feat, feats[: 1 + filled].permute(0, 3, 1, 2), labels[: 1 + filled].permute(0, 3, 1, 2),
            topk=cfg.topk, radius=cfg.radius, temperature=cfg.temperature, restrict_first=cfg.restrict_first,
            window=cfg.window, normalized=True, tile=cfg.tile,
        )
        yield pred
        if n:
            feats[1 + slot] = feat.permute(1, 2, 0)
            labels[1 + slot] = pred.permute(1, 2, 0)
            slot = (slot + 1) % n
            filled = min(n, filled + 1)


def propagate_labels(
    encode_frame: Callable[[int], torch.Tensor], first_mask: torch.Tensor, num_frames: int, stride: int,
    cfg: PropagationConfig,
) -> Iterator[torch.Tensor]:
    """The top-k mode of ``vidssl.eval.modes``: the ``(H, W)`` long label map of frame 0 through a video.

    ``encode_frame(t)`` gives frame t's ``(C, h, w)`` features (frame 0 is encoded once; its grid fixes the
    label grid). Yields ``(H, W)`` long label maps for frames 0 .. num_frames - 1 (frame 0: ``first_mask``):
    the labels go to the grid and back as ``cfg.label_resize``'s code does, between them
    :func:`propagate_sequence`.
    """
    if first_mask.dim() != 2:
        raise ValueError(f"propagate_labels: first_mask must be (H, W), got {tuple(first_mask.shape)}")
    size = (int(first_mask.shape[0]), int(first_mask.shape[1]))
    yield first_mask
    feats0 = encode_frame(0)  # (C, h, w)
    grid = (int(feats0.shape[-2]), int(feats0.shape[-1]))
    labels = one_hot(first_mask.to(feats0.device).long(), int(first_mask.max()) + 1)
    small = label_to_feature_res(labels, grid, stride, cfg.label_downsample, cfg.label_resize)
    stream = propagate_sequence(lambda t: feats0 if t == 0 else encode_frame(t), small, num_frames, cfg)
    next(stream)  # frame 0: the given labels, already yielded
    for soft in stream:
        yield upsample_labels(soft, size, stride, cfg.norm_mask, cfg.label_resize)
