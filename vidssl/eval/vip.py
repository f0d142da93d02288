"""VIP human-part propagation scored with mean IoU over part classes.

The protocol of CRW (Jabri et al. 2020) and UVC on VIP (Video Instance-level Parsing, Zhou et al. 2018):
the first frame's part labels (``Category_ids``: 0 background, 1..19 parts) are propagated through the
video exactly like DAVIS masks (the driver of ``vidssl.eval.modes``, with the preset's mode, propagation and
label resizing; CRW's ``configs/eval/crw.yaml`` by default), and scored as CRW's ``code/eval/eval_vip.py``
(ajabri/videowalk) ``compute_hist`` and ``show_result`` do:

- one 20 x 20 confusion matrix (rows ground truth, columns prediction) accumulated over every scored
  frame of every video (``fast_hist``); ground-truth values outside 0..19 (void) are ignored;
- IoU of class c = ``hist[c, c] / (gt_c + pred_c - hist[c, c])``; classes whose union is empty over the
  whole set (never in the ground truth nor predicted) are NaN and left out of the mean (``np.nanmean``);
- **background (class 0) counts** as a class, as in CRW's script; mIoU is the mean over the others present.
- Frames scored: every frame with a ground-truth PNG, **including frame 0**: ``eval_vip.py`` scores every
  file ``test.py`` wrote, and for frame 0 ``test.py`` writes the first labels after the trip to the feature
  grid and back (``pred = lbls[0]``, then ``dump_predictions``), not the ground truth itself; vidssl scores
  that round trip (:func:`first_frame_prediction`; MAST's memory, ``mode: mast``, keeps the labels themselves).
  ``score_first=False`` leaves frame 0 out. The identity baseline copies the first labels exactly into every
  frame, frame 0 included.

Differences from CRW's run, both stated in the output: frames are encoded at their native size (CRW and
UVC resize VIP to 560x560); pixels of the first labels outside 0..19 are propagated as background.

Layout (``--root``): ``Images/<video>/<frame>.jpg``, ``Annotations/Category_ids/<video>/<frame>.png``
(official VIP_Fine) or ``Category_ids/<video>/<frame>.png``, and ``lists/val_videos.txt`` (one video per
line; ``--videos`` overrides it). ``datasets/vip.py`` prepares it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vidssl.data.images import read_image
from vidssl.data.label_io import LabelFileError, read_indexed_png, write_indexed_png
from vidssl.data.video import VideoError, list_frame_files
from vidssl.engine.config import ConfigError, to_dict
from vidssl.eval.encoders import FrameEncoder, add_encoder_arguments
from vidssl.eval.modes import EvalConfig, load_preset, preset_encoder, propagate_video
from vidssl.eval.propagation import PropagationConfig, label_to_feature_res, one_hot, upsample_labels

HELP = "propagate VIP human-part labels through an encoder's features and score mean IoU"

NUM_CLASSES = 20
CLASSES = (
    "background", "hat", "hair", "sun-glasses", "upper-clothes", "dress", "coat", "socks", "pants", "gloves",
    "scarf", "skirt", "torso-skin", "face", "right-arm", "left-arm", "right-leg", "left-leg", "right-shoe",
    "left-shoe",
)
LABEL_DIRS = ("Annotations/Category_ids", "Category_ids")  # official VIP_Fine first, then the flat layout
VAL_LIST = "lists/val_videos.txt"
DEFAULT_CONFIG = Path("configs/eval/crw.yaml")  # CRW's code


class VipError(ValueError):
    """A VIP folder or file that cannot be used; ``str()`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


# ----------------------------------------------------------------------------------------------------
# Metric


def confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """``(n, n)`` int64 counts of (ground truth, prediction) pairs; gt outside ``0..n-1`` is ignored."""
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in size")
    gt, pred = gt.astype(np.int64).ravel(), pred.astype(np.int64).ravel()
    keep = (gt >= 0) & (gt < num_classes) & (pred >= 0) & (pred < num_classes)
    return np.bincount(num_classes * gt[keep] + pred[keep], minlength=num_classes**2).reshape(num_classes, -1)


def mean_iou(hist: np.ndarray) -> tuple[np.ndarray, float]:
    """Per-class IoU ``(n,)`` (NaN where the union is empty) and their mean over the classes present."""
    hist = hist.astype(np.float64)
    inter = np.diag(hist)
    union = hist.sum(axis=0) + hist.sum(axis=1) - inter
    iou = np.full(len(inter), np.nan)
    np.divide(inter, union, out=iou, where=union > 0)
    return iou, float(np.nanmean(iou)) if (union > 0).any() else float("nan")


# ----------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class VipVideo:
    """One video: its frames in order and the label PNG of each frame (None where there is none)."""

    name: str
    frames: tuple[Path, ...]
    labels: tuple[Path | None, ...]


def _label_root(root: Path) -> Path:
    for sub in LABEL_DIRS:
        if (root / sub).is_dir():
            return root / sub
    raise VipError(root, f"no label folder ({' or '.join(LABEL_DIRS)})")


def find_videos(root: str | Path, videos: Sequence[str] | None = None) -> list[VipVideo]:
    """The videos of ``lists/val_videos.txt`` (or ``videos``) under a VIP root, each with >= 2 frames and
    a label for its first frame."""
    root = Path(root)
    if not (root / "Images").is_dir():
        raise VipError(root, "no Images folder (expected Images/<video>/<frame>.jpg)")
    labels = _label_root(root)
    if videos is None:
        listing = root / VAL_LIST
        if not listing.is_file():
            raise VipError(listing, "val list not found (pass --videos, or prepare with datasets/vip.py)")
        videos = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        if not videos:
            raise VipError(listing, "val list is empty")
    out = []
    for name in videos:
        folder = root / "Images" / name
        if not folder.is_dir():
            raise VipError(folder, "video folder not found")
        frames = tuple(list_frame_files(folder))
        if not frames:
            raise VipError(folder, "no frames")
        found = tuple((labels / name / f"{f.stem}.png") for f in frames)
        label_paths = tuple(p if p.is_file() else None for p in found)
        if label_paths[0] is None:
            raise VipError(found[0], "the first frame has no label PNG")
        out.append(VipVideo(name, frames, label_paths))
    return out


# ----------------------------------------------------------------------------------------------------
# Evaluation


def first_frame_prediction(first: np.ndarray, stride: int, cfg: PropagationConfig) -> np.ndarray:
    """``(H, W)`` uint8: frame 0's labels taken to the feature grid ``ceil(H / stride) x ceil(W / stride)``
    and back with the preset's label resizing, as CRW's ``test.py`` writes frame 0's prediction."""
    size = (int(first.shape[0]), int(first.shape[1]))
    grid = (math.ceil(size[0] / stride), math.ceil(size[1] / stride))
    labels = one_hot(torch.from_numpy(first.astype(np.int64)), int(first.max()) + 1)
    small = label_to_feature_res(labels, grid, stride, cfg.label_downsample, cfg.label_resize)
    return upsample_labels(small, size, stride, cfg.norm_mask, cfg.label_resize).numpy().astype(np.uint8)


def evaluate_videos(
    videos: Sequence[VipVideo], encoder: FrameEncoder, cfg: EvalConfig, *,
    num_classes: int = NUM_CLASSES, score_first: bool = True, save_dir: Path | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Propagate every video's first labels and accumulate the confusion matrix.

    Returns the total ``(n, n)`` confusion and each video's own. Frame 0 is scored as CRW's round trip of the
    first labels (:func:`first_frame_prediction`; the identity baseline and MAST's memory: the labels themselves)
    unless ``score_first`` is False. ``save_dir``: predictions are written there as ``<video>/<frame>.png``.
    """
    total = np.zeros((num_classes, num_classes), np.int64)
    per_video = {}
    for video in videos:
        first_path = video.labels[0]
        assert first_path is not None  # find_videos checks it
        first = read_indexed_png(first_path).copy()
        first[first >= num_classes] = 0  # void pixels are propagated as background
        hist = np.zeros_like(total)
        for t, pred in enumerate(propagate_video(encoder, list(video.frames), first, cfg, read_image)):
            if t == 0 and encoder.encode is not None and isinstance(cfg, PropagationConfig):
                # CRW writes the first labels' round trip, not the labels
                pred = first_frame_prediction(first, encoder.stride, cfg)
            if save_dir is not None:
                write_indexed_png(save_dir / video.name / f"{video.frames[t].stem}.png", pred)
            label = video.labels[t]
            if label is None or (t == 0 and not score_first):
                continue
            gt = read_indexed_png(label)
            if gt.shape != pred.shape:
                raise VipError(label, f"label is {gt.shape[1]}x{gt.shape[0]}, the frame "
                               f"{pred.shape[1]}x{pred.shape[0]}")
            hist += confusion(gt, pred, num_classes)
        per_video[video.name] = hist
        total += hist
    return total, per_video


def format_table(iou: np.ndarray, miou: float) -> str:
    """Per-class IoU and the mean, in percent; classes never present are shown as '-'."""
    rows = [f"{'class':<16}{'IoU':>8}", "-" * 24]
    for c, value in enumerate(iou):
        name = CLASSES[c] if c < len(CLASSES) else str(c)
        rows.append(f"{name:<16}{'-' if np.isnan(value) else format(100 * value, '.2f'):>8}")
    rows += ["-" * 24, f"{'mIoU':<16}{100 * miou:>8.2f}"]
    return "\n".join(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, required=True, help="VIP folder (Images, Category_ids, lists)")
    parser.add_argument("--videos", nargs="+", default=None, help="default: lists/val_videos.txt")
    add_encoder_arguments(parser, backbone=None)  # the mode's: resnet18_s8_l3 (top-k), resnet18_mast (MAST)
    parser.add_argument("--out", type=Path, required=True, help="output folder for miou.json, miou.csv")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="propagation preset (default: CRW's)")
    parser.add_argument("--exclude-first", action="store_true",
                        help="do not score frame 0 (CRW scores the first labels' round trip)")
    parser.add_argument("--save-predictions", action="store_true", help="write OUT/pred/<video>/<frame>.png")
    parser.add_argument("overrides", nargs="*", help="propagation key=value overrides (topk=5 radius=12 ...)")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        cfg = load_preset(args.config, args.overrides)  # `mode:` picks top-k or MAST's memory (vidssl.eval.modes)
        videos = find_videos(args.root, args.videos)
        encoder = preset_encoder(cfg, args.encoder, args.device, args.backbone, args.seed, args.layers, args.input,
                                 args.config, args.stride)
        hist, per_video = evaluate_videos(
            videos, encoder, cfg, score_first=not args.exclude_first,
            save_dir=args.out / "pred" if args.save_predictions else None,
        )
    except (VipError, LabelFileError, ConfigError, VideoError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    iou, miou = mean_iou(hist)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {
        "miou": miou,
        "iou": {CLASSES[c]: None if np.isnan(v) else v for c, v in enumerate(iou)},
        "per_video_miou": {name: mean_iou(h)[1] for name, h in per_video.items()},
        "encoder": args.encoder, "config": str(args.config), "score_first": not args.exclude_first,
        "resolution": "native",
        "propagation": to_dict(cfg), "videos": len(videos),
    }
    (args.out / "miou.json").write_text(json.dumps(summary, indent=1) + "\n")
    with open(args.out / "miou.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "IoU"])
        writer.writerows([CLASSES[c], "" if np.isnan(v) else f"{v:.6f}"] for c, v in enumerate(iou))
        writer.writerow(["mIoU", f"{miou:.6f}"])
    print(format_table(iou, miou))
    print(f"\n{len(videos)} videos; written: {args.out / 'miou.json'}, {args.out / 'miou.csv'}; "
          f"{time.perf_counter() - start:.1f} s")
    return 0
