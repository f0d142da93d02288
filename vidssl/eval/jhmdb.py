"""JHMDB pose propagation: keypoints carried by label propagation, scored with PCK.

The protocol of CRW (Jabri et al. 2020, https://arxiv.org/abs/2006.14613), itself UVC's and TimeCycle's,
reproduced as its released code computes it (ajabri/videowalk: ``code/data/jhmdb.py`` ``JhmdbSet``,
``code/utils/test_utils.py`` ``process_pose``, ``code/eval/eval_pck.py``). The settings are the ``jhmdb``
section of the propagation preset (``vidssl.eval.propagation.JhmdbConfig``, ``configs/eval/crw.yaml``);
vidssl's own variants are named options there.

1. Ground truth: ``joint_positions.mat`` holds ``pos_img`` ``(2, 15, T)``, 1-based MATLAB pixel
   coordinates; 1 is subtracted (pixel centres at integers, as ``eval_pck.py``).
2. Frames are resized to ``size`` before encoding (CRW: 320x320, ``--cropSize 320``; None: native), by
   ``cv2.resize`` bilinear. CRW resizes the float image, vidssl the uint8 frame (a rounding of at most
   half a grey level). Keypoints are always reported and scored in the original pixels.
3. Frame 0's 15 joints become 15 label channels at feature resolution: joint ``(x, y)`` maps to the
   continuous cell coordinate ``(x w / W, y h / H)`` (cell i sits at pixel ``i W / w``, as ``eval_pck.py``
   maps back) and a Gaussian with peak 1 and ``sigma = 0.5`` cells is drawn (``heatmap``):
   ``crw``: ``draw_labelmap_np``'s 4x4 patch at offsets -2..+1 of cell ``int(x - 1.5) + 2`` (the rounded
   cell, except for joints less than 1.5 cells from the top/left edge, which ``int()`` truncation moves);
   ``rounded``: a 3x3 patch centred on the rounded cell (vidssl's). CRW's extra background channel is left
   out: channels propagate independently, so it changes nothing.
4. The heat maps are propagated exactly like DAVIS masks (``vidssl.eval.propagation``).
5. Decoding (``decode_topk``): the value-weighted mean of the top-k cells of each joint's map (CRW: 3;
   1 is the plain arg-max), mapped back to pixels. A joint whose heat map is zero everywhere (its frame-0
   position lies off the map) is *not visible*, as CRW's ``jnt_visible``, and is excluded from PCK and from
   the normalisation box.
6. PCK@alpha: per frame t >= 1, the box is ``0.6 * ||max(xy) - min(xy)||`` over that frame's visible
   ground-truth joints; a joint is correct when ``||pred - gt|| / box <= alpha``. Normalised distances are
   pooled per joint over all frames of all clips, PCK is computed per joint, and the reported PCK is the
   mean over the 15 joints (``eval_pck.py``'s ``computePCK``). A zero box (one visible joint, or all at one
   point) counts its joints as misses, as ``eval_pck.py``'s division by it does (``zero_box: miss``);
   ``zero_box: skip`` leaves such frames out.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch

from vidssl.data.images import is_frame_folder
from vidssl.data.video import VideoError, open_video
from vidssl.engine.config import ConfigError, to_dict
from vidssl.eval.encoders import DEFAULT_BACKBONE, FrameEncoder, add_encoder_arguments, build_encoder
from vidssl.eval.modes import load_preset
from vidssl.eval.propagation import JhmdbConfig, PropagationConfig, propagate_sequence

HELP = "propagate JHMDB keypoints through an encoder's features and score PCK@0.1..0.5"
DEFAULT_CONFIG = Path("configs/eval/crw.yaml")  # CRW's code: its propagation and its JHMDB settings

NUM_JOINTS = 15
SIGMA = JhmdbConfig.sigma  # Gaussian std in feature cells (CRW's JhmdbSet default, UVC's too)
ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5)
BOX_SCALE = 0.6  # the normalisation box is 0.6 x the diagonal of the visible joints' extent
MAT_NAME = "joint_positions.mat"
JOINT_NAMES = (  # JHMDB's puppet joint order
    "neck", "belly", "face", "right shoulder", "left shoulder", "right hip", "left hip", "right elbow",
    "left elbow", "right knee", "left knee", "right wrist", "left wrist", "right ankle", "left ankle",
)


class JhmdbError(ValueError):
    """A JHMDB clip or file that cannot be used; ``str()`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


# ----------------------------------------------------------------------------------------------------
# Reading


def read_joints(path: str | Path, num_frames: int | None = None) -> np.ndarray:
    """``pos_img`` of a JHMDB ``joint_positions.mat`` as ``(T, J, 2)`` float64 0-based ``(x, y)`` pixels.

    ``num_frames``, when given, must equal T (a clip's frame count).
    """
    from scipy.io import loadmat

    path = Path(path)
    if not path.is_file():
        raise JhmdbError(path, "joint file not found")
    try:
        mat = loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, TypeError, OSError, ... for corrupt files
        raise JhmdbError(path, f"cannot read MAT file ({type(exc).__name__}: {exc})") from exc
    if "pos_img" not in mat:
        raise JhmdbError(path, f"no 'pos_img' variable (found: {sorted(k for k in mat if not k.startswith('__'))})")
    pos = np.asarray(mat["pos_img"], dtype=np.float64)
    if pos.ndim != 3 or pos.shape[0] != 2 or pos.shape[2] < 1:
        raise JhmdbError(path, f"'pos_img' must be (2, J, T), got shape {pos.shape}")
    if not np.isfinite(pos).all():
        raise JhmdbError(path, "'pos_img' has non-finite values")
    if num_frames is not None and pos.shape[2] != num_frames:
        raise JhmdbError(path, f"'pos_img' has {pos.shape[2]} frames but the clip has {num_frames}")
    return pos.transpose(2, 1, 0) - 1.0  # MATLAB pixels are 1-based


@dataclass(frozen=True)
class JhmdbClip:
    """One clip: a folder of frames ``00001.png ...`` and its ``joint_positions.mat``."""

    name: str
    frames: Path
    mat: Path


def _mat_for(root: Path, folder: Path) -> Path:
    """The joint file of a frame folder: inside it (vidssl's synthetic data), in the official tree
    (``Rename_Images/<action>/<clip>`` -> ``joint_positions/<action>/<clip>``) or beside it (one clip per
    folder, as ``../shared/data/jhmdb``), first found wins."""
    candidates = [folder / MAT_NAME]
    rel = folder.relative_to(root).parts if folder.is_relative_to(root) else ()
    if rel and rel[0] == "Rename_Images":
        candidates.append(root.joinpath("joint_positions", *rel[1:], MAT_NAME))
    candidates.append(folder.parent / MAT_NAME)
    for c in candidates:
        if c.is_file():
            return c
    raise JhmdbError(folder, f"no {MAT_NAME} for this clip (looked for {', '.join(map(str, candidates))})")


def read_file_list(path: str | Path) -> list[JhmdbClip]:
    """Clips from a CRW-style list: one ``<frame folder> <joint_positions.mat>`` per line; relative paths
    are relative to the list's folder."""
    path = Path(path)
    if not path.is_file():
        raise JhmdbError(path, "file list not found")
    clips = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise JhmdbError(path, f"line {n}: expected '<frame folder> <mat file>', got {line!r}")
        frames, mat = (p if Path(p).is_absolute() else path.parent / p for p in map(Path, parts))
        clips.append(JhmdbClip(Path(parts[0]).name, Path(frames), Path(mat)))
    if not clips:
        raise JhmdbError(path, "file list is empty")
    return clips


def find_clips(root: str | Path, clips: Sequence[str] | None = None) -> list[JhmdbClip]:
    """The clips under ``root``: the named sub-folders, or every folder of frames up to 3 levels down."""
    root = Path(root)
    if not root.is_dir():
        raise JhmdbError(root, "JHMDB root folder not found")
    if clips:
        folders = [root / c for c in clips]
        for f in folders:
            if not f.is_dir():
                raise JhmdbError(f, "clip folder not found")
    else:
        candidates = (d for pattern in ("*", "*/*", "*/*/*") for d in root.glob(pattern))
        folders = [d for d in candidates if d.is_dir() and is_frame_folder(d)]
        folders.sort()
        if not folders:
            raise JhmdbError(root, "no folders of frames found")
    return [JhmdbClip(str(f.relative_to(root)), f, _mat_for(root, f)) for f in folders]


# ----------------------------------------------------------------------------------------------------
# Heat maps and decoding


def _crw_patch(heat: torch.Tensor, px: float, py: float, sigma: float) -> None:
    """Draw one joint at cell coordinate ``(px, py)`` into ``heat`` ``(h, w)`` as CRW's ``draw_labelmap_np``.

    The patch spans cells ``int(p - 3 sigma)`` (``int`` truncates towards zero) up to ``int(p + 3 sigma + 1)``
    on each axis, holds ``len(range(0, 6 sigma + 1))`` Gaussian values per axis peaking (1) at index
    ``(6 sigma + 1) // 2``, and is clipped to the map; a patch wholly off the map draws nothing.
    """
    first = (int(py - 3 * sigma), int(px - 3 * sigma))  # (row, column) of the patch's first cell
    last = (int(py + 3 * sigma + 1), int(px + 3 * sigma + 1))  # one past its last cell
    if any(f >= n for f, n in zip(first, heat.shape, strict=True)) or any(e < 0 for e in last):
        return
    steps = torch.arange(math.ceil(6 * sigma + 1), dtype=torch.float64) - (6 * sigma + 1) // 2
    values = torch.exp(-(steps[:, None] ** 2 + steps[None, :] ** 2) / (2 * sigma**2)).float()
    (r0, r1), (c0, c1) = ((max(0, f), min(e, n)) for f, e, n in zip(first, last, heat.shape, strict=True))
    heat[r0:r1, c0:c1] = values[r0 - first[0] : r1 - first[0], c0 - first[1] : c1 - first[1]]


def joint_heatmaps(
    joints: np.ndarray, image_size: tuple[int, int], feat_size: tuple[int, int], sigma: float = SIGMA,
    patch: Literal["crw", "rounded"] = "crw",
) -> torch.Tensor:
    """``(J, 2)`` pixel ``(x, y)`` -> ``(J, h, w)`` float32 Gaussian heat maps at feature resolution.

    The joint sits at cell coordinate ``(x w / W, y h / H)``. ``patch="crw"``: CRW's ``draw_labelmap_np``
    (:func:`_crw_patch`: for sigma 0.5 a 4x4 patch at offsets -2..+1 of ``int(x - 1.5) + 2``);
    ``"rounded"``: the peak (value 1) at the nearest cell, ``exp(-d^2 / 2 sigma^2)`` for cell offsets up to
    3 sigma on each axis. A joint whose patch lies wholly off the map gets zeros.
    """
    (big_h, big_w), (h, w) = image_size, feat_size
    heat = torch.zeros(len(joints), h, w)
    half = math.floor(3 * sigma)
    offsets = torch.arange(-half, half + 1)
    for j, (x, y) in enumerate(np.asarray(joints, dtype=np.float64)):
        if patch == "crw":
            _crw_patch(heat[j], x * w / big_w, y * h / big_h, sigma)
            continue
        cx, cy = math.floor(x * w / big_w + 0.5), math.floor(y * h / big_h + 0.5)
        ys, xs = cy + offsets, cx + offsets
        g = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2).float() / (2 * sigma * sigma))
        keep_y, keep_x = (ys >= 0) & (ys < h), (xs >= 0) & (xs < w)
        if keep_y.any() and keep_x.any():
            heat[j][ys[keep_y][:, None], xs[keep_x][None, :]] = g[keep_y][:, keep_x]
    return heat


def decode_heatmaps(
    heat: torch.Tensor, image_size: tuple[int, int], topk: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``(J, h, w)`` heat maps -> ``(J, 2)`` pixel ``(x, y)`` and ``(J,)`` visibility.

    ``topk=1``: the arg-max cell; ``topk>1``: the value-weighted mean of the top-k cells (CRW's
    ``process_pose`` uses 3). Cell ``(i, j)`` maps to pixel ``(j W / w, i H / h)``, the inverse of
    ``joint_heatmaps``. A heat map that is zero everywhere is not visible and decodes to NaN. Which of
    equal cells the top-k keeps is torch.topk's choice; the maps are laid out ``(h w, J)`` and ranked along
    the cells as ``process_pose`` does, so that ties fall as they do in CRW's code.
    """
    if heat.dim() != 3:
        raise ValueError(f"heat maps must be (J, h, w), got {tuple(heat.shape)}")
    j, h, w = heat.shape
    flat = heat.detach().float().cpu().permute(1, 2, 0).reshape(-1, j)  # (h w, J), as process_pose
    values, index = flat.topk(min(topk, flat.shape[0]), dim=0)  # (k, J)
    weights = values / values.sum(dim=0, keepdim=True).clamp_min(1e-30)
    col = ((index % w).double() * weights.double()).sum(0)
    row = ((index // w).double() * weights.double()).sum(0)
    xy = torch.stack([col * image_size[1] / w, row * image_size[0] / h], dim=1).numpy()
    visible = (flat != 0).any(dim=0).numpy()
    xy[~visible] = np.nan
    return xy, visible


# ----------------------------------------------------------------------------------------------------
# PCK


def normalised_distances(
    pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, zero_box: Literal["miss", "skip"] = "miss"
) -> np.ndarray:
    """``(T, J)`` distances ``||pred - gt|| / box`` with NaN where not scored.

    pred, gt ``(T, J, 2)`` pixels; visible ``(T, J)`` bool. The box of frame t is ``0.6 * ||max - min||``
    of the visible ground-truth joints of that frame. Frame 0 (the given one) and invisible joints are NaN.
    A frame whose box is 0: ``zero_box="miss"`` gives its visible joints an infinite distance (scored, never
    correct: ``eval_pck.py`` divides by the zero box), ``"skip"`` leaves them NaN.
    """
    pred, gt, visible = np.asarray(pred, np.float64), np.asarray(gt, np.float64), np.asarray(visible, bool)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[2] != 2 or visible.shape != gt.shape[:2]:
        raise ValueError(f"expected pred, gt (T, J, 2) and visible (T, J); got {pred.shape}, {gt.shape}, "
                         f"{visible.shape}")
    if zero_box not in ("miss", "skip"):
        raise ValueError(f"zero_box must be 'miss' or 'skip', got {zero_box!r}")
    out = np.full(visible.shape, np.nan)
    for t in range(1, len(gt)):
        vis = visible[t]
        if not vis.any():
            continue
        pts = gt[t, vis]
        box = BOX_SCALE * float(np.linalg.norm(pts.max(axis=0) - pts.min(axis=0)))
        if box <= 0:
            if zero_box == "miss":
                out[t, vis] = np.inf
            continue
        out[t, vis] = np.linalg.norm(pred[t, vis] - gt[t, vis], axis=1) / box
    return out


def pck(distances: Sequence[np.ndarray], alphas: Sequence[float] = ALPHAS) -> tuple[np.ndarray, np.ndarray]:
    """PCK from per-clip ``(T, J)`` normalised distances (NaN = not scored).

    Distances are pooled per joint over all frames of all clips; returns per-joint PCK ``(A, J)`` (NaN for
    a joint never scored) and the mean over joints ``(A,)``, as CRW's ``eval_pck.py``.
    """
    pooled = np.concatenate([np.asarray(d, np.float64) for d in distances], axis=0)  # (sum T, J)
    scored = ~np.isnan(pooled)
    per_joint = np.full((len(alphas), pooled.shape[1]), np.nan)
    for a, alpha in enumerate(alphas):
        hits = (np.nan_to_num(pooled, nan=np.inf) <= alpha).sum(axis=0)
        count = scored.sum(axis=0)
        per_joint[a] = np.where(count > 0, hits / np.maximum(count, 1), np.nan)
    return per_joint, np.nanmean(per_joint, axis=1)


# ----------------------------------------------------------------------------------------------------
# Encoders and propagation

def build_frame_encoder(
    spec: str, device: str = "cpu", size: tuple[int, int] | None = None, backbone: str = DEFAULT_BACKBONE,
    seed: int = 0, layers: int | None = None, input: str = "auto", stride: int | None = None,
) -> FrameEncoder:
    """``vidssl.eval.encoders.build_encoder``, with frames optionally resized to ``size = (H, W)`` before
    encoding (:func:`resize_frame`). ``propagate_keypoints`` resizes by the preset's ``jhmdb.size`` itself."""
    encoder = build_encoder(spec, device, backbone, seed, layers, input, stride)
    if size is None or encoder.encode is None:
        return encoder
    inner = encoder.encode

    def encode(frame: np.ndarray) -> torch.Tensor:
        return inner(resize_frame(frame, size))

    return replace(encoder, encode=encode)


def resize_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``(H, W, 3)`` uint8 resized to ``size = (H', W')`` by ``cv2.resize`` bilinear (CRW's JhmdbSet), or as is."""
    if size is None or frame.shape[:2] == tuple(size):
        return frame
    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def propagate_keypoints(
    frames: np.ndarray, first_joints: np.ndarray, encoder: FrameEncoder, cfg: PropagationConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Carry frame 0's joints through a clip, with the keypoint settings of ``cfg.jhmdb``.

    frames ``(T, H, W, 3)`` uint8; first_joints ``(J, 2)`` pixel ``(x, y)``. Frames are resized to
    ``cfg.jhmdb.size`` before encoding. Returns predicted joints ``(T, J, 2)`` in pixels of the original
    frames (frame 0: frame 0's heat maps decoded) and their visibility ``(T, J)`` (heat map not zero
    everywhere).
    """
    kp = cfg.jhmdb
    image_size = (frames.shape[1], frames.shape[2])
    if encoder.encode is None:  # the identity baseline: frame 0's heat maps in every frame
        encoded = tuple(kp.size) if kp.size is not None else image_size
        feat_size = (math.ceil(encoded[0] / encoder.stride), math.ceil(encoded[1] / encoder.stride))
        heat0 = joint_heatmaps(first_joints, image_size, feat_size, kp.sigma, kp.heatmap)
        xy, vis = decode_heatmaps(heat0, image_size, topk=kp.decode_topk)
        return np.stack([xy] * len(frames)), np.stack([vis] * len(frames))
    encode = encoder.encode
    with torch.no_grad():
        feats0 = encode(resize_frame(frames[0], kp.size))
    heat0 = joint_heatmaps(first_joints, image_size, (feats0.shape[1], feats0.shape[2]), kp.sigma, kp.heatmap)

    def encode_frame(t: int) -> torch.Tensor:
        if t == 0:
            return feats0  # encoded once, for the heat-map grid and the propagation
        with torch.no_grad():
            return encode(resize_frame(frames[t], kp.size))

    preds, visible = [], []
    for soft in propagate_sequence(encode_frame, heat0.to(feats0.device), len(frames), cfg):
        xy, vis = decode_heatmaps(soft, image_size, topk=kp.decode_topk)
        preds.append(xy)
        visible.append(vis)
    return np.stack(preds), np.stack(visible)


@dataclass
class ClipResult:
    """One clip's predictions: ``pred`` and ``gt`` ``(T, J, 2)`` pixels, ``visible`` ``(T, J)``,
    ``distances`` ``(T, J)`` normalised (NaN where not scored)."""

    name: str
    pred: np.ndarray
    gt: np.ndarray
    visible: np.ndarray
    distances: np.ndarray


def evaluate_clips(
    clips: Sequence[JhmdbClip], encoder: FrameEncoder, cfg: PropagationConfig, *,
    on_clip: Callable[[ClipResult, np.ndarray], None] | None = None,
) -> tuple[list[ClipResult], np.ndarray, np.ndarray]:
    """Propagate and score every clip with the keypoint settings of ``cfg.jhmdb``; returns the clips' results,
    per-joint PCK ``(A, J)`` and PCK ``(A,)``.

    ``on_clip(result, frames)`` is called after each clip (progress, overlays); frames are not kept.
    """
    results = []
    for clip in clips:
        with open_video(clip.frames, backend="frames") as reader:
            frames = reader.get(range(len(reader)))
        gt = read_joints(clip.mat, num_frames=len(frames))
        pred, visible = propagate_keypoints(frames, gt[0], encoder, cfg)
        distances = normalised_distances(pred, gt, visible, cfg.jhmdb.zero_box)
        result = ClipResult(clip.name, pred, gt, visible, distances)
        results.append(result)
        if on_clip is not None:
            on_clip(result, frames)
    per_joint, mean = pck([r.distances for r in results])
    return results, per_joint, mean


# ----------------------------------------------------------------------------------------------------
# Output and command line


def format_table(per_joint: np.ndarray, mean: np.ndarray, alphas: Sequence[float] = ALPHAS) -> str:
    """PCK per joint and the mean over joints, one column per alpha, in percent."""
    head = f"{'joint':<16}" + "".join(f"{'PCK@' + format(a, 'g'):>10}" for a in alphas)
    rows = [head, "-" * len(head)]
    for j, name in enumerate(JOINT_NAMES[: per_joint.shape[1]]):
        rows.append(f"{name:<16}" + "".join(f"{100 * v:>10.2f}" for v in per_joint[:, j]))
    rows.append("-" * len(head))
    rows.append(f"{'mean':<16}" + "".join(f"{100 * v:>10.2f}" for v in mean))
    return "\n".join(rows)


def write_results(out: Path, results: Sequence[ClipResult], per_joint: np.ndarray, mean: np.ndarray,
                  meta: dict[str, object]) -> tuple[Path, Path]:
    """``pck.json`` (mean and per-joint PCK, per-clip PCK, settings) and ``pck.csv`` (joint x alpha)."""
    out.mkdir(parents=True, exist_ok=True)
    per_clip = {r.name: pck([r.distances])[1].tolist() for r in results}
    summary = {
        "alphas": list(ALPHAS),
        "pck": mean.tolist(),
        "per_joint": {JOINT_NAMES[j] if j < len(JOINT_NAMES) else str(j): per_joint[:, j].tolist()
                      for j in range(per_joint.shape[1])},
        "per_clip": per_clip,
        **meta,
    }
    json_path, csv_path = out / "pck.json", out / "pck.csv"
    json_path.write_text(json.dumps(summary, indent=1, default=str) + "\n")
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["joint", *(f"PCK@{a:g}" for a in ALPHAS)])
        for j in range(per_joint.shape[1]):
            writer.writerow([JOINT_NAMES[j] if j < len(JOINT_NAMES) else j, *(f"{v:.6f}" for v in per_joint[:, j])])
        writer.writerow(["mean", *(f"{v:.6f}" for v in mean)])
    return json_path, csv_path


def draw_keypoints(frame: np.ndarray, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 with ground truth (green) and predicted (red) joints drawn on a copy."""
    out = np.ascontiguousarray(frame.copy())
    for (gx, gy), (px, py) in zip(gt, pred, strict=True):
        cv2.circle(out, (round(gx), round(gy)), 3, (0, 255, 0), 1, cv2.LINE_AA)
        if np.isfinite(px) and np.isfinite(py):
            cv2.circle(out, (round(px), round(py)), 3, (255, 0, 0), -1, cv2.LINE_AA)
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=None, help="JHMDB folder (clip folders of frames + .mat files)")
    parser.add_argument("--clips", nargs="+", default=None, help="clip folders relative to --root (default: all)")
    parser.add_argument("--list", type=Path, default=None,
                        help="file list of '<frame folder> <joint_positions.mat>' lines (datasets/jhmdb.py writes "
                             "lists/test_split1.txt)")
    add_encoder_arguments(parser)
    parser.add_argument("--out", type=Path, required=True, help="output folder for pck.json, pck.csv, overlays")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                        help="propagation preset; its jhmdb section sets size, decoding, heat maps (default: CRW's)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None,
                        help="resize frames before encoding (overrides jhmdb.size; CRW: 320 320); 0 0: native")
    parser.add_argument("--decode-topk", type=int, default=None,
                        help="overrides jhmdb.decode_topk: 1 arg-max, 3 CRW's weighted top-3")
    parser.add_argument("--vis", action="store_true", help="write keypoint overlays to OUT/vis/<clip>/")
    parser.add_argument("overrides", nargs="*", help="propagation key=value overrides (topk=5 radius=12 ...)")


def with_keypoint_options(
    cfg: PropagationConfig, size: Sequence[int] | None, decode_topk: int | None
) -> PropagationConfig:
    """``cfg`` with the command line's ``--size`` (``0 0``: native) and ``--decode-topk`` over its jhmdb section."""
    kp = cfg.jhmdb
    if size is not None:
        if len(size) != 2 or any(v < 0 for v in size) or (0 in size and tuple(size) != (0, 0)):
            raise JhmdbError("--size", f"expected two positive sizes H W, or 0 0 for native; got {list(size)}")
        kp = replace(kp, size=None if tuple(size) == (0, 0) else (int(size[0]), int(size[1])))
    if decode_topk is not None:
        kp = replace(kp, decode_topk=decode_topk)
    return replace(cfg, jhmdb=kp)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        preset = load_preset(args.config, args.overrides)
        if not isinstance(preset, PropagationConfig):
            raise JhmdbError(args.config, f"mode: {preset.mode}: JHMDB keypoints propagate with a top-k preset "
                             "(mode: topk, e.g. configs/eval/crw.yaml)")
        cfg = with_keypoint_options(preset, args.size, args.decode_topk)
        if args.list is not None:
            clips = read_file_list(args.list)
        elif args.root is not None:
            clips = find_clips(args.root, args.clips)
        else:
            raise JhmdbError("--root/--list", "give a JHMDB folder (--root) or a file list (--list)")
        encoder = build_encoder(args.encoder, args.device, args.backbone, args.seed, args.layers, args.input,
                                args.stride)

        def on_clip(result: ClipResult, frames: np.ndarray) -> None:
            scores = pck([result.distances])[1]
            print(f"{result.name}: {len(frames)} frames, PCK@0.1 {100 * scores[0]:.2f}, PCK@0.2 {100 * scores[1]:.2f}",
                  file=sys.stderr)
            if args.vis:
                from PIL import Image

                folder = args.out / "vis" / result.name
                folder.mkdir(parents=True, exist_ok=True)
                for t, frame in enumerate(frames):
                    Image.fromarray(draw_keypoints(frame, result.pred[t], result.gt[t])).save(folder / f"{t:05d}.png")

        results, per_joint, mean = evaluate_clips(clips, encoder, cfg, on_clip=on_clip)
        kp = cfg.jhmdb
        meta = {"encoder": args.encoder, "config": str(args.config), "size": kp.size, "decode_topk": kp.decode_topk,
                "heatmap": kp.heatmap, "sigma": kp.sigma, "propagation": to_dict(cfg), "clips": len(results)}
        paths = write_results(args.out, results, per_joint, mean, meta)
    except (JhmdbError, ConfigError, VideoError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(per_joint, mean))
    print(f"\n{len(results)} clips; written: {paths[0]}, {paths[1]}; {time.perf_counter() - start:.1f} s")
    return 0
