"""Small re-implementations of the authors' label-propagation test code, for the reference tests.

Each function is written from reading that code (not copied): the same tensors, the same order of
operations, the same library calls where the result depends on them (OpenCV's and PIL's resizes), dense
affinities (as the authors compute them) in query chunks to bound memory. They take the features as given,
``(T, C, h, w)``, so that vidssl's preset and the reference see exactly the same numbers.

- :func:`crw_davis`: ajabri/videowalk ``code/test.py`` ``test()``, ``code/data/vos.py`` ``VOSDataset``,
  ``code/utils/test_utils.py`` ``context_index_bank``, ``mem_efficient_batched_affinity``,
  ``dump_predictions``, ``code/utils/__init__.py`` ``MaskedAttention``.
- :func:`crw_jhmdb`: the same loop on ``code/data/jhmdb.py`` ``JhmdbSet`` heat maps (``draw_labelmap_np``),
  decoded by ``test_utils.process_pose``; :func:`crw_pck` is ``code/eval/eval_pck.py``.
- :func:`vfs_davis`: xvjiarui/VFS ``mmaction/models/trackers/vanilla_tracker.py``
  ``VanillaTracker.forward_test`` with ``common/local_attention.py`` ``masked_attention_efficient``,
  ``common/affinity_utils.py`` ``spatial_neighbor`` and ``common/utils.py`` ``pil_nearest_interpolate``.
- :func:`dino_davis`: facebookresearch/dino ``eval_video_segmentation.py`` ``eval_video_tracking_davis``,
  ``label_propagation``, ``restrict_neighborhood``, ``norm_mask``, ``read_seg``, ``to_one_hot``.
- :func:`crw_vip_hist`: ajabri/videowalk ``code/eval/eval_vip.py`` ``compute_hist`` and ``show_result``.
- :func:`mast_davis`: zlai0/MAST ``benchmark.py`` ``test()`` (``--ref 0``), ``models/colorizer.py``
  ``Colorizer.forward`` and ``prep``, ``models/deform_im2col_util.py`` ``deform_im2col``, and the
  ``spatial_correlation_sampler`` package's ``SpatialCorrelationSampler`` (padding 0).

Every propagation function also returns, per frame, the near-tie gap of each position (``_topk_with_gap``:
the smallest difference between a kept and a dropped logit; ``inf`` where nothing is dropped): where it is
~0, float rounding may keep either neighbour.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vidssl.eval.encoders import FrameEncoder

CHUNK = 2048  # query positions per affinity block (memory only)


@dataclass
class Reference:
    """What a reference run gives: per frame the soft labels ``(K, h, w)`` (frame 0: the first labels),
    the label map ``(H, W)`` written for it, the top-k near-tie gap ``(h, w)`` (frame 0: inf) and the
    argmax margin ``(H, W)`` (best minus second-best upsampled score: ~0 where float rounding may flip it)."""

    soft: list[torch.Tensor]
    ids: list[np.ndarray]
    gaps: list[torch.Tensor]
    margins: list[np.ndarray] = field(default_factory=list)


def _margin(scores: np.ndarray, axis: int) -> np.ndarray:
    """Best minus second-best along ``axis`` (inf with one channel)."""
    if scores.shape[axis] < 2:
        return np.full(np.delete(scores.shape, axis), np.inf)
    part = -np.partition(-scores, 1, axis=axis)
    return np.take(part, 0, axis=axis) - np.take(part, 1, axis=axis)


def _cv2_resize_hwk(x: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """cv2.resize of an ``(H, W, K)`` float32 map (default INTER_LINEAR), keeping the channel axis."""
    out = cv2.resize(np.ascontiguousarray(x, dtype=np.float32), size_wh)
    return out.reshape(size_wh[1], size_wh[0], -1)


def _pil_nearest_ids(ids: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """PIL NEAREST resize of a uint8 id map, as mmcv.imresize(backend='pillow') and DINO's read_seg."""
    return np.asarray(Image.fromarray(ids.astype(np.uint8)).resize(size_wh, Image.Resampling.NEAREST))


def _topk_with_gap(logits: torch.Tensor, k: int, copies: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k along the last dim of ``(P, M)`` logits (the authors take it along the context axis of the
    transposed matrix: the same numbers), and the near-tie gap ``(P,)``: the smallest difference between a
    kept and a dropped value that are not equal. Equal values are copies of one cell (CRW's padding), which
    carry one label, so rounding may swap them freely; ``copies``: how many copies of a cell the context holds.
    """
    m = min(k + copies, logits.shape[-1])
    vals, idx = logits.topk(m, dim=-1)
    if m == k:
        return vals, idx, torch.full_like(vals[:, 0], float("inf"))
    kept, dropped = vals[:, :k], vals[:, k:]
    first_out, last_in = vals[:, k : k + 1], vals[:, k - 1 : k]
    above = (kept - first_out).masked_fill(kept <= first_out, float("inf")).amin(dim=-1)
    below = (last_in - dropped).masked_fill(dropped >= last_in, float("inf")).amin(dim=-1)
    return kept, idx[:, :k], torch.minimum(above, below)


# ----------------------------------------------------------------------------------------------------
# CRW (ajabri/videowalk)


@functools.lru_cache(maxsize=4)
def crw_radius_mask(h: int, w: int, radius: float) -> torch.Tensor:
    """MaskedAttention.make: ``(h w, h w)`` 0 where the Euclidean cell distance is < radius, else -1e10
    (test.py: ``D[D == 0] = -1e10; D[D == 1] = 0``). The distance depends on the offset only, so it is
    computed once per offset ``(dy, dx)`` and looked up."""
    dy, dx = torch.meshgrid(torch.arange(-h + 1, h), torch.arange(-w + 1, w), indexing="ij")
    return by_offset(torch.where((dy**2 + dx**2).float() ** 0.5 < radius, 0.0, -1e10))


def by_offset(table: torch.Tensor) -> torch.Tensor:
    """``(h w, h w)`` pairwise values from a ``(2h - 1, 2w - 1)`` table of a function of the offset ``(dy, dx)``
    (index ``dy + h - 1``): every neighbourhood mask here depends on the offset only. Symmetric tables give
    symmetric matrices, so (queries, keys) and (keys, queries) are the same."""
    h, w = (table.shape[0] + 1) // 2, (table.shape[1] + 1) // 2
    # windows[i, j, a, b] = table[i + a, j + b]; cell (a, b) seen from (y, x) is offset (a - y, b - x)
    windows = table.unfold(0, h, 1).unfold(1, w, 1)  # (h, w, h, w)
    return windows.flip(0, 1).reshape(h * w, h * w)


def _crw_loop(
    feats: torch.Tensor, first_small: torch.Tensor, video_len: int, topk: int, radius: float, temperature: float
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """test.py's loop. feats ``(T, C, h, w)``; first_small ``(h, w, K)`` (frame 0's labels at feature size).

    The video is padded with ``video_len`` copies of frame 0 (vos.py / jhmdb.py ``make_paths``); target t
    sees ``key_indices[t] = [0] + [t, ..., t + video_len - 1]`` of the padded video (long_mem [0]), the
    radius mask is added to the short-term part only, ``A /= temperature``, top-k over all context
    positions jointly, softmax, weighted sum of the context labels. Returns ``(h, w, K)`` predictions and
    gaps per frame.
    """
    t_real, c, h, w = feats.shape
    n = h * w
    feats = F.normalize(feats.float(), dim=1).reshape(t_real, c, n)  # test.py: normalize(feats, dim=1)
    padded = [feats[max(0, i - video_len)] for i in range(t_real + video_len)]
    k_lbl = first_small.shape[-1]
    lbls = torch.zeros(t_real + video_len, h, w, k_lbl)
    lbls[:video_len] = first_small  # the copies carry frame 0's labels; lbls[0, n_context:] *= 0
    mask = crw_radius_mask(h, w, radius)  # (n keys, n queries)
    preds, gaps = [], []
    for t in range(t_real):
        if t == 0:  # test.py computes frame 0's affinities too, then writes its labels instead
            lbls[video_len] = lbls[0]
            preds.append(lbls[0].clone())
            gaps.append(torch.full((h, w), float("inf")))
            continue
        index = [0, *range(t, t + video_len)]  # context_index_bank
        keys = torch.stack([padded[i] for i in index])  # (1 + L, C, n)
        query = padded[video_len + t]  # (C, n)
        ctx = lbls[index].reshape(-1, k_lbl).t()  # (K, (1 + L) n)
        pred = torch.empty(k_lbl, n)
        gap = torch.empty(n)
        for q0 in range(0, n, CHUNK):
            a = torch.einsum("cq,tcm->qtm", query[:, q0 : q0 + CHUNK], keys)  # (chunk, 1 + L, n keys)
            a[:, 1:] += mask[q0 : q0 + CHUNK, None]  # long_mem has length 1: its entry is unmasked
            a = a.reshape(a.shape[0], -1) / temperature
            vals, idx, g = _topk_with_gap(a, topk, copies=video_len + 1)
            weights = vals.softmax(dim=-1)  # (chunk, k)
            pred[:, q0 : q0 + CHUNK] = (ctx[:, idx] * weights[None]).sum(-1)
            gap[q0 : q0 + CHUNK] = g
        pred_hwk = pred.reshape(k_lbl, h, w).permute(1, 2, 0)
        lbls[video_len + t] = pred_hwk
        preds.append(pred_hwk.clone())
        gaps.append(gap.reshape(h, w))
    return preds, gaps


def crw_davis(
    feats: torch.Tensor, first_ids: np.ndarray, *, video_len: int, topk: int, radius: float, temperature: float
) -> Reference:
    """CRW's DAVIS run on given features: first_ids ``(H, W)`` frame 0's object ids.

    vos.py: channels are the label values of frame 0 (sorted; DAVIS colours sort like their ids up to id 3),
    one-hot, ``cv2.resize`` to ``(ceil(W / 8), ceil(H / 8))``; dump_predictions: ``cv2.resize`` of each
    prediction to ``(W, H)``, argmax, mapped back through the label set.
    """
    h, w = feats.shape[-2:]
    lblset = np.unique(first_ids)
    onehot = np.stack([first_ids == v for v in lblset], axis=-1).astype(np.float32)
    small = torch.from_numpy(_cv2_resize_hwk(onehot, (w, h)))
    preds, gaps = _crw_loop(feats, small, video_len, topk, radius, temperature)
    big = first_ids.shape[::-1]
    ups = [_cv2_resize_hwk(p.numpy(), big) for p in preds]
    ids = [lblset[np.argmax(up, axis=-1)].astype(np.uint8) for up in ups]
    return Reference([p.permute(2, 0, 1) for p in preds], ids, gaps, [_margin(up, -1) for up in ups])


def crw_draw_labelmap(img: np.ndarray, pt: tuple[float, float], sigma: float) -> None:
    """What jhmdb.py's draw_labelmap_np (Gaussian type) draws, in place: ``img`` ``(h, w)``, ``pt`` = (x, y)
    in feature cells. The patch's corner is ``int()`` of ``pt - 3 sigma`` (truncation towards zero), its far
    end ``int()`` of ``pt + 3 sigma + 1``; it holds ``len(arange(0, 6 sigma + 1))`` cells per axis with the
    peak 1 at index ``(6 sigma + 1) // 2``, clipped to the map; nothing is drawn when it lies wholly off."""
    starts = [int(c - 3 * sigma) for c in pt]
    stops = [int(c + 3 * sigma + 1) for c in pt]
    if starts[0] >= img.shape[1] or starts[1] >= img.shape[0] or stops[0] < 0 or stops[1] < 0:
        return
    n = len(np.arange(0, 6 * sigma + 1, 1))
    centre = (6 * sigma + 1) // 2
    axis = (np.arange(n) - centre) ** 2
    patch = np.exp(-(axis[None, :] + axis[:, None]) / (2 * sigma**2))  # (y, x)
    spans = []
    for c0, c1, size in ((starts[1], stops[1], img.shape[0]), (starts[0], stops[0], img.shape[1])):
        lo, hi = max(0, c0), min(c1, size)  # the map's cells, then the patch's cells they take
        spans.append(((lo, hi), (lo - c0, hi - c0)))
    (ys, py), (xs, px) = spans
    img[ys[0] : ys[1], xs[0] : xs[1]] = patch[py[0] : py[1], px[0] : px[1]]


def crw_jhmdb(
    feats: torch.Tensor, pos_img: np.ndarray, orig_size: tuple[int, int], resized: tuple[int, int], *,
    video_len: int, topk: int, radius: float, temperature: float, sigma: float = 0.5, stride: int = 8,
) -> tuple[np.ndarray, Reference]:
    """CRW's JHMDB run on given features ``(T, C, h, w)`` of frames resized to ``resized = (H', W')``.

    pos_img ``(2, J, T)`` 1-based as in the MAT file. JhmdbSet: coordinates ``- 1``, scaled by
    ``new / orig / mapScale``, frame 0's joints drawn with draw_labelmap_np (float64 maps), a background
    channel (no joint anywhere) prepended; test.py propagates; process_pose decodes each frame (top-3,
    value-weighted, -1 where the map is zero). Returns the coordinates as test.py dumps them ``(2, J, T)``
    (in feature cells) and the heat maps without the background channel (``ids`` unused).
    """
    (ht, wd), (newh, neww) = orig_size, resized
    h, w = feats.shape[-2:]
    coords = pos_img.astype(np.float64) - 1
    coords[0] = coords[0] * float(neww) / float(wd) / stride
    coords[1] = coords[1] * float(newh) / float(ht) / stride
    heat = np.zeros((h, w, coords.shape[1]))
    for j in range(coords.shape[1]):
        crw_draw_labelmap(heat[:, :, j], (coords[0, j, 0], coords[1, j, 0]), sigma)
    first = torch.from_numpy(heat).float()
    first = torch.cat([(first.sum(-1) == 0)[..., None].float(), first], dim=-1)
    preds, gaps = _crw_loop(feats, first, video_len, topk, radius, temperature)
    out = []
    for pred in preds:  # process_pose(pred, lbl_set, topk=3)
        p = pred[..., 1:]
        flat = p.flatten(0, 1)
        vals, ids = torch.topk(flat, k=min(flat.shape[0], 3), dim=0)
        vals = vals / vals.sum(0)[None]
        xx, yy = ids % p.shape[1], ids // p.shape[1]
        coord = torch.stack([(xx * vals).sum(0), (yy * vals).sum(0)], dim=0)
        coord[:, flat.sum(0) == 0] = -1
        out.append(coord.numpy())
    maps = [p[..., 1:].permute(2, 0, 1) for p in preds]
    return np.stack(out, axis=-1), Reference(maps, [], gaps)


def crw_pck(pred_cells: np.ndarray, pos_img: np.ndarray, height: int, width: int, feat_res: int = 40,
            thresholds: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)) -> np.ndarray:
    """eval_pck.py for one clip: pred_cells ``(2, J, T)`` as test.py dumps them, pos_img ``(2, J, T)`` 1-based.

    A joint is visible where its predicted x is not negative (the -1 marker); predictions are scaled to
    pixels by ``/ feat_res * size``; frame k's box is 0.6 x the diagonal of the extent of its visible
    ground-truth joints; every visible joint of frames k >= 1 contributes distance / box (a zero box gives
    inf or nan, never <= a threshold, still counted); PCK per joint = hits / count, mean over joints.
    Returns the mean PCK in percent per threshold.
    """
    gt = pos_img.astype(np.float64) - 1
    visible = pred_cells[0] >= 0  # (J, T)
    scale = np.array([width, height], np.float64)[:, None, None] / float(feat_res)
    pred = pred_cells.astype(np.float64) * scale
    per_joint: list[list[float]] = [[] for _ in range(gt.shape[1])]
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(1, gt.shape[2]):
            seen = gt[:, visible[:, k], k]  # (2, visible joints)
            if seen.shape[1] == 0:
                continue
            box = 0.6 * float(np.hypot(*(seen.max(axis=1) - seen.min(axis=1))))
            for j in np.flatnonzero(visible[:, k]):
                per_joint[j].append(float(np.hypot(*(pred[:, j, k] - gt[:, j, k]))) / np.float64(box))
    scores = [[np.count_nonzero(np.asarray(d) <= thr) / len(d) for d in per_joint] for thr in thresholds]
    return 100.0 * np.mean(scores, axis=1)


def crw_vip_hist(gts: list[np.ndarray], preds: list[np.ndarray], n_cl: int = 20) -> tuple[np.ndarray, float]:
    """eval_vip.py: a predicted map of another size is resized to the ground truth's by PIL nearest;
    fast_hist filters the ground truth to 0..n-1 only; IoU = diag / (gt + pred - diag), mIoU = nanmean,
    background included. Returns the per-class IoU and the mIoU."""
    hist = np.zeros((n_cl, n_cl))
    for gt, pred in zip(gts, preds, strict=True):
        label = gt.astype(np.int32)
        image = pred.astype(np.int32)
        if label.shape != image.shape:
            resized = Image.fromarray(pred.astype(np.uint8)).resize(label.shape[::-1], Image.Resampling.NEAREST)
            image = np.asarray(resized, dtype=np.int32)
        k = (label >= 0) & (label < n_cl)
        hist += np.bincount(n_cl * label[k].astype(int) + image[k], minlength=n_cl**2).reshape(n_cl, n_cl)
    with np.errstate(divide="ignore", invalid="ignore"):
        iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist))
    return iu, float(np.nanmean(iu))


# ----------------------------------------------------------------------------------------------------
# VFS (xvjiarui/VFS)


@functools.lru_cache(maxsize=4)
def vfs_circle(h: int, w: int, neighbor_range: int) -> torch.Tensor:
    """spatial_neighbor(mode='circle'): ``(h w, h w)`` True where the cell distance is < neighbor_range // 2."""
    dy, dx = torch.meshgrid(torch.arange(-h + 1, h).float(), torch.arange(-w + 1, w).float(), indexing="ij")
    return by_offset((dy**2 + dx**2) ** 0.5 < neighbor_range // 2)


def vfs_davis(
    feats: torch.Tensor, first_ids: np.ndarray, *, precede_frames: int = 20, topk: int = 10,
    neighbor_range: int = 24, temperature: float = 0.07, duplicate_first: bool = True,
) -> Reference:
    """VanillaTracker.forward_test on given features (test_cfg of configs/r18_nc_sgd_cos_100e_r2_1xNx8_k400.py).

    The ids are PIL-nearest resized to the feature grid and one-hot (F.one_hot: max + 1 channels); target t sees
    the first frame (with_first) and frames ``max(0, t - precede_frames) .. t - 1``: for t <= precede_frames
    frame 0 is there twice (``duplicate_first=False`` drops the second copy, as the preset with
    ``first_is_recent: false``). masked_attention_efficient: L2-normalised features, ``dot / temperature``, the
    circle mask ``dist < neighbor_range // 2`` on every frame (with_first_neighbor: non_mask_len 0) as -inf,
    top-k over all context positions, softmax. Predictions: F.interpolate to ``(H, W)`` bilinear, per-channel
    ``(x - min) / (max - min + 1e-12)`` where ``max > 0``, argmax.
    """
    t_real, c, h, w = feats.shape
    n = h * w
    small = _pil_nearest_ids(first_ids, (w, h))
    seg0 = F.one_hot(torch.from_numpy(small.astype(np.int64))).permute(2, 0, 1).float()  # (K, h, w)
    feats = F.normalize(feats.float(), dim=1).reshape(t_real, c, n)
    allowed = vfs_circle(h, w, neighbor_range)
    bank = [seg0]
    soft, gaps = [seg0], [torch.full((h, w), float("inf"))]
    big = first_ids.shape
    ids = [first_ids.astype(np.uint8)]
    margins = [np.full(big, np.inf)]
    for t in range(1, t_real):
        start = max(0, t - precede_frames)
        frames = list(range(start, t))
        if not duplicate_first and start == 0:
            frames = frames[1:]
        keys = torch.stack([feats[0]] + [feats[i] for i in frames])  # (N, C, n)
        values = torch.stack([bank[0]] + [bank[i] for i in frames]).reshape(len(frames) + 1, -1, n)  # (N, K, n)
        values = values.permute(1, 0, 2).reshape(values.shape[1], -1)  # (K, N n)
        pred = torch.empty(values.shape[0], n)
        gap = torch.empty(n)
        for q0 in range(0, n, CHUNK):
            a = torch.einsum("cq,tcm->qtm", feats[t][:, q0 : q0 + CHUNK], keys) / temperature  # (chunk, N, n)
            a = a.masked_fill(~allowed[q0 : q0 + CHUNK, None], float("-inf")).reshape(a.shape[0], -1)
            vals, idx, g = _topk_with_gap(a, topk, copies=2 if duplicate_first else 1)
            pred[:, q0 : q0 + CHUNK] = (values[:, idx] * vals.softmax(dim=-1)[None]).sum(-1)
            gap[q0 : q0 + CHUNK] = g
        pred = pred.reshape(-1, h, w)
        bank.append(pred)
        up = F.interpolate(pred[None], size=big, mode="bilinear", align_corners=False)
        low = up.view(*up.shape[:2], -1).min(dim=-1)[0].view(*up.shape[:2], 1, 1)
        high = up.view(*up.shape[:2], -1).max(dim=-1)[0].view(*up.shape[:2], 1, 1)
        up = torch.where(high > 0, (up - low) / (high - low + 1e-12), up)
        soft.append(pred)
        gaps.append(gap.reshape(h, w))
        ids.append(up.argmax(dim=1)[0].numpy().astype(np.uint8))
        margins.append(_margin(up[0].numpy(), 0))
    return Reference(soft, ids, gaps, margins)


# ----------------------------------------------------------------------------------------------------
# DINO (facebookresearch/dino)


def dino_davis(
    feats: torch.Tensor, first_ids: np.ndarray, *, n_last_frames: int = 7, size_mask_neighborhood: int = 12,
    topk: int = 5, patch_size: int = 8,
) -> Reference:
    """eval_video_tracking_davis on given features.

    read_seg: PIL nearest of the ids to the grid, to_one_hot (max + 1 channels). A queue of at most
    ``n_last_frames`` (feature, soft label) pairs that starts empty; label_propagation: normalised
    features, ``exp(dot / 0.1)`` multiplied by the square neighbourhood (rows and columns within
    ``size_mask_neighborhood``) on every context frame, values below the k-th largest set to 0 (ties with
    it kept), divided by their sum, the labels weighted by that. Output: F.interpolate(scale_factor=patch_size),
    norm_mask (per channel with a positive max: minus min, divided by the new max), torch.max over channels,
    PIL nearest of the ids to ``(W, H)``. The gap is that of the logits ``dot / 0.1``.
    """
    t_real, c, h, w = feats.shape
    n = h * w
    small = _pil_nearest_ids(first_ids, (w, h))
    seg0 = F.one_hot(torch.from_numpy(small.astype(np.int64))).permute(2, 0, 1).float()
    feats = F.normalize(feats.float(), dim=1).reshape(t_real, c, n)
    dy, dx = torch.meshgrid(torch.arange(-h + 1, h), torch.arange(-w + 1, w), indexing="ij")
    r = size_mask_neighborhood  # restrict_neighborhood: rows and columns within r of the query
    near = by_offset(((dy.abs() <= r) & (dx.abs() <= r)).float())
    queue: list[tuple[torch.Tensor, torch.Tensor]] = []
    soft, gaps = [seg0], [torch.full((h, w), float("inf"))]
    ids = [first_ids.astype(np.uint8)]
    margins = [np.full(first_ids.shape, np.inf)]
    for t in range(1, t_real):
        keys = torch.stack([feats[0]] + [f for f, _ in queue])  # (N, C, n): the first frame, then the queue
        values = torch.stack([seg0] + [lab for _, lab in queue])  # (N, K, h, w)
        values = values.flatten(2).permute(1, 0, 2).reshape(values.shape[1], -1)  # (K, N n), frame-major
        pred = torch.empty(values.shape[0], n)
        gap = torch.empty(n)
        for q0 in range(0, n, CHUNK):
            dots = torch.einsum("cq,tcm->qtm", feats[t][:, q0 : q0 + CHUNK], keys)  # (chunk, N, n keys)
            weight = (torch.exp(dots / 0.1) * near[q0 : q0 + CHUNK, None]).reshape(dots.shape[0], -1)
            best = weight.topk(topk + 1, dim=-1).values  # one more than DINO needs, for the gap
            kth = best[:, topk - 1 : topk]  # the smallest of the top-k
            weight = torch.where(weight < kth, 0.0, weight)  # everything below it is dropped; ties stay
            weight = weight / weight.sum(dim=-1, keepdim=True)
            pred[:, q0 : q0 + CHUNK] = values @ weight.t()
            gap[q0 : q0 + CHUNK] = best[:, topk - 1].log() - best[:, topk].log()  # in logits dot / 0.1
        if len(queue) == n_last_frames:  # the oldest leaves a full queue before the new frame enters
            queue.pop(0)
        queue.append((feats[t], pred.reshape(-1, h, w)))
        up = F.interpolate(pred.reshape(1, -1, h, w), scale_factor=patch_size, mode="bilinear",
                           align_corners=False, recompute_scale_factor=False)[0]
        for channel in up:  # norm_mask, in place
            if channel.max() > 0:
                channel -= channel.min()
                channel /= channel.max()
        winner = up.max(dim=0).indices.numpy().astype(np.uint8)  # at (h s, w s)
        ids.append(np.asarray(Image.fromarray(winner).resize(first_ids.shape[::-1], Image.Resampling.NEAREST)))
        margin = Image.fromarray(_margin(up.numpy(), 0).astype(np.float32))  # mode "F": the same nearest
        margins.append(np.asarray(margin.resize(first_ids.shape[::-1], Image.Resampling.NEAREST)))
        soft.append(pred.reshape(-1, h, w))
        gaps.append(gap.reshape(h, w))
    return Reference(soft, ids, gaps, margins)


# ----------------------------------------------------------------------------------------------------
# MAST (zlai0/MAST)


def mast_correlation(ft: torch.Tensor, fr: torch.Tensor, radius: int, dilation: int = 1) -> torch.Tensor:
    """SpatialCorrelationSampler(kernel_size=1, patch_size=2R+1, padding=0, dilation_patch=dilation) on
    ``(C, h, w)`` features: ``(P*P, h, w)``, row ``dy * P + dx`` the channel sum of ``ft(p) fr(p + d dilation)``,
    zero where that position is outside the frame (the sampler adds in-bounds products only)."""
    _, h, w = ft.shape
    out = torch.zeros((2 * radius + 1) ** 2, h, w, dtype=ft.dtype)
    for n, (dy, dx) in enumerate((a, b) for a in range(-radius, radius + 1) for b in range(-radius, radius + 1)):
        oy, ox = dy * dilation, dx * dilation
        ys, yt = slice(max(0, -oy), min(h, h - oy)), slice(max(0, oy), min(h, h + oy))
        xs, xt = slice(max(0, -ox), min(w, w - ox)), slice(max(0, ox), min(w, w + ox))
        out[n, ys, xs] = (ft[:, ys, xs] * fr[:, yt, xt]).sum(0)
    return out


def mast_deform_samples(im: torch.Tensor, offset: torch.Tensor, radius: int) -> Iterator[torch.Tensor]:
    """deform_im2col, one kernel position at a time: for ``n = dy * P + dx`` the ``(C, h, w)`` bilinear samples
    of ``im`` at ``p + offset(p) + (dx - R, dy - R)``; ``offset`` ``(h, w, 2)`` (x, y). The coordinates are
    normalised by ``(w - 1)`` and ``(h - 1)``: grid_sample's ``align_corners=True``, its behaviour in the
    PyTorch 1.1 MAST was released for; zero padding."""
    _, h, w = im.shape
    gy, gx = torch.meshgrid(torch.arange(h, dtype=im.dtype), torch.arange(w, dtype=im.dtype), indexing="ij")
    base = torch.stack([gx, gy], dim=-1) + offset  # (h, w, 2)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            g = base + torch.tensor([dx - radius, dy - radius], dtype=im.dtype)
            g = torch.stack([g[..., 0] / (w - 1) * 2 - 1, g[..., 1] / (h - 1) * 2 - 1], dim=-1)
            yield F.grid_sample(im[None], g[None], mode="bilinear", padding_mode="zeros", align_corners=True)[0]


def mast_colorizer(
    feats_r: list[torch.Tensor], feat_t: torch.Tensor, labels_r: list[torch.Tensor], ref_index: list[int],
    current: int, *, radius: int = 12, dil_int: int = 15, search_radius: int = 12, classes: int = 7, stride: int = 4,
) -> torch.Tensor:
    """Colorizer.forward at test (``R = 12``, ``D = 4``, ``C = 7``) for one target: ``(C, h, w)`` features,
    ``(H, W)`` long label maps per reference -> ``(classes, h, w)``.

    The references more than ``dil_int`` frames back come first (ref_index is sorted) and are searched: the
    dilated coarse correlation (dilation ``min(4, d // dil_int + 1)``), a softmax over its 25x25 raw logits, the
    expected (x, y) displacement times the dilation (``offset0``), then deform_im2col of the features around it.
    The others: the plain correlation. One softmax over the raw logits of all references. The labels: prep
    (``[::D, ::D]``, one_hot to ``classes`` channels); F.unfold (zero padding R) for the unsearched ones and
    deform_im2col around ``offset0`` for the searched ones: the variable left by the search loop, the *last*
    searched reference's offset, for every one of them."""
    size = 2 * radius + 1
    far = [x for x in ref_index if current - x > dil_int]
    dirates = [min(4, (current - x) // dil_int + 1) for x in far]
    corrs = []
    offset0 = torch.zeros(*feat_t.shape[1:], 2, dtype=feat_t.dtype)
    for i, dirate in enumerate(dirates):
        coarse = mast_correlation(feat_t, feats_r[i], search_radius, dirate).softmax(dim=0)
        coarse = coarse.reshape(2 * search_radius + 1, 2 * search_radius + 1, *feat_t.shape[1:], 1)
        yy, xx = torch.meshgrid(torch.arange(-search_radius, search_radius + 1),
                                torch.arange(-search_radius, search_radius + 1), indexing="ij")
        grid = torch.stack([xx, yy], dim=-1).reshape(2 * search_radius + 1, 2 * search_radius + 1, 1, 1, 2).to(feat_t)
        offset0 = (coarse * grid).sum(0).sum(0) * dirate  # (h, w, 2)
        corrs.append(torch.stack([(feat_t * col).sum(0) for col in mast_deform_samples(feats_r[i], offset0, radius)]))
    for i in range(len(far), len(ref_index)):
        corrs.append(mast_correlation(feat_t, feats_r[i], radius))
    corr = torch.cat(corrs, dim=0).softmax(dim=0)  # (nref P^2, h, w)
    qr = [F.one_hot(lab[::stride, ::stride].long(), classes).permute(2, 0, 1).to(feat_t) for lab in labels_r]
    out = torch.zeros(classes, *feat_t.shape[1:], dtype=feat_t.dtype)
    for i, q in enumerate(qr):
        if i < len(far):
            cols = mast_deform_samples(q, offset0, radius)
        else:
            unfolded = F.unfold(q[None], kernel_size=size, padding=radius)[0]  # (classes P^2, h w)
            cols = iter(unfolded.reshape(classes, size * size, *q.shape[1:]).permute(1, 0, 2, 3))
        for n, col in enumerate(cols):
            out += corr[i * size * size + n] * col
    return out


def mast_davis(
    feats: torch.Tensor, first_ids: np.ndarray, *, teacher: list[np.ndarray] | None = None, dil_int: int = 15,
    radius: int = 12, search_radius: int = 12, stride: int = 4,
) -> Reference:
    """benchmark.py ``test()`` with ``--ref 0`` on given features: for target ``i + 1`` the references
    ``[x for x in (0, 5) if x <= i] + [x for x in range(i, i - 6, -2) if x > 0]``, sorted and unique; the
    colorizer's ``(7, h, w)`` output bilinearly interpolated to the mask size (``align_corners=False``), its
    arg-max appended to ``outputs``, the memory's label maps. ``teacher``: full-size label maps to use as the
    memory instead (frame t's), so that one step at a time can be compared on the same memory. ``gaps`` are
    inf: there is no top-k."""
    big = first_ids.shape
    outputs = [torch.from_numpy(first_ids.astype(np.int64))]
    first = F.one_hot(outputs[0][::stride, ::stride], 7).permute(2, 0, 1).to(feats)
    soft, ids = [first], [first_ids.astype(np.uint8)]
    gaps = [torch.full(first.shape[1:], float("inf"))]
    margins = [np.full(big, np.inf)]
    for i in range(len(feats) - 1):
        mem_gap = 2
        short = [x for x in range(i, i - mem_gap * 3, -mem_gap) if x > 0]
        ref_index = sorted(set([x for x in (0, 5) if x <= i] + short))
        out = mast_colorizer([feats[r] for r in ref_index], feats[i + 1], [outputs[r] for r in ref_index],
                             ref_index, i + 1, dil_int=dil_int, radius=radius, search_radius=search_radius,
                             stride=stride)
        up = F.interpolate(out[None], big, mode="bilinear", align_corners=False)[0]
        pred = up.argmax(dim=0)
        outputs.append(torch.from_numpy(teacher[i + 1].astype(np.int64)) if teacher is not None else pred)
        soft.append(out)
        gaps.append(torch.full(out.shape[1:], float("inf")))
        ids.append(pred.numpy().astype(np.uint8))
        margins.append(_margin(up.numpy(), 0))
    return Reference(soft, ids, gaps, margins)


# ----------------------------------------------------------------------------------------------------
# Inputs and comparisons shared by the reference tests


def patch_encoder(channels: int = 32, seed: int = 0, noise: float = 0.01, stride: int = 8) -> FrameEncoder:
    """Random features that are cheap and structured: a seeded zero-mean linear map of each ``stride`` x
    ``stride`` RGB patch (edge-padded to a multiple of it, so the grid is ``ceil(H / stride)`` like a ResNet's),
    plus a little noise seeded by the frame's bytes. Zero-mean filters drop the patch's mean colour, which would
    make every feature nearly parallel and the top-k full of near-ties; the noise separates patches that are
    exactly alike (flat regions), whose equal logits would leave the top-k to the order of the candidates."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(channels, 3, stride, stride, generator=g)
    weight -= weight.mean(dim=(1, 2, 3), keepdim=True)

    def encode(frame: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.array(frame)).permute(2, 0, 1)[None].float() / 255
        x = F.pad(x, (0, -x.shape[-1] % stride, 0, -x.shape[-2] % stride), mode="replicate")
        out = F.conv2d(x, weight, stride=stride)[0]
        jitter = torch.Generator().manual_seed(zlib.crc32(np.ascontiguousarray(frame).tobytes()))
        return out + noise * torch.randn(out.shape, generator=jitter)

    return FrameEncoder(f"patches{channels}", stride, encode, torch.device("cpu"))


def dilate(mask: torch.Tensor, cells: int) -> torch.Tensor:
    """``(h, w)`` bool grown by ``cells`` (a square; a circle of that radius is inside it)."""
    if cells <= 0 or not mask.any():
        return mask
    k = 2 * cells + 1
    return F.max_pool2d(mask[None, None].float(), k, stride=1, padding=cells)[0, 0] > 0


@dataclass
class Agreement:
    """How vidssl's soft labels compare with a reference: per frame the largest difference outside the
    positions a top-k near-tie can reach, and the near-tie positions themselves."""

    max_diff: list[float]
    ties: list[int]
    reach: list[torch.Tensor]  # (h, w) bool: cells that differ, each at a near-tie or reached from one

    @property
    def tie_frames(self) -> int:
        return sum(1 for n in self.ties if n)


def agreement(got: list[torch.Tensor], want: Reference, radius: int, tol: float = 1e-5) -> Agreement:
    """Compare ``(K, h, w)`` soft labels frame by frame.

    A near-tie is a position where a kept and a dropped reference logit differ by less than ``tol`` (and are
    not equal: see ``_topk_with_gap``); float rounding may keep either there. A label that differs there
    spreads to the next frames at most ``radius`` cells per frame (the first frame, the only unrestricted
    one, keeps its given labels). So every difference above ``tol`` must
    sit at a near-tie or within ``radius`` of an earlier difference; ``max_diff`` is the largest difference
    elsewhere, and ``reach`` holds the cells that differ (where masks may differ too).
    """
    reach = torch.zeros(want.gaps[0].shape, dtype=torch.bool)
    out = Agreement([], [], [])
    for g, w, gap in zip(got, want.soft, want.gaps, strict=True):
        tie = gap < tol
        allowed = dilate(reach, radius) | tie
        k = min(g.shape[0], w.shape[0])  # a reference may carry fewer all-zero channels
        diff = (g[:k].float() - w[:k].float()).abs().amax(dim=0)
        out.max_diff.append(float(diff[~allowed].max()) if (~allowed).any() else 0.0)
        reach = allowed & (diff > tol)
        out.ties.append(int(tie.sum()))
        out.reach.append(reach.clone())
    return out


def pixel_reach(reach: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool: pixels whose upsampled label reads a cell in ``reach`` (grown by one cell for the
    bilinear footprint)."""
    h, w = reach.shape
    grown = dilate(reach, 1).numpy()
    rows = np.minimum(np.arange(size[0]) * h // size[0], h - 1)
    cols = np.minimum(np.arange(size[1]) * w // size[1], w - 1)
    return grown[rows[:, None], cols[None, :]]
