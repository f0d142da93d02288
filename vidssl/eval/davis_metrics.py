"""The official DAVIS-2017 semi-supervised metrics (J, F, J&F) and ``vidssl eval davis-score``.

A reimplementation of the ``davis2017-evaluation`` code (Pont-Tuset et al. 2017,
https://github.com/davisvideochallenge/davis2017-evaluation) that reproduces its numbers exactly,
vectorised over frames. What the official evaluator does, and so what this module does:

- Frames: a sequence exists when ``JPEGImages/<res>/<seq>`` holds ``*.jpg`` files; the ground-truth
  frames are *all* ``Annotations/<res>/<seq>/*.png`` in sorted order (there must be at least as many as
  images); predictions are read only for the scored frames, i.e. all but the first and the last.
- Ground truth: 255 (void) becomes 0 (background; the semi-supervised task passes no void mask to the
  metrics); the number of objects K is the largest id in the first frame; object k is ``labels == k``.
- Predictions: K' = the largest id over the scored frames; K' > K is an error, K' < K is zero-padded.
- Per object: Mean, Recall (> 0.5) and Decay of the per-frame J and F (``db_statistics``); the global
  J-Mean, F-Mean, ... are means over objects (not sequences) and J&F-Mean is (J-Mean + F-Mean) / 2.

Unlike the official script, stale CSVs in the results folder are never read back: scores are always
recomputed and the CSVs overwritten.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vidssl.data.label_io import LabelFileError, read_indexed_png

HELP = "score DAVIS-2017 semi-supervised results with the official J, F and J&F metrics"

GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")
GLOBAL_CSV = "global_results-val.csv"
SEQUENCE_CSV = "per-sequence_results-val.csv"

# cv2.dilate treats the frame stack as image channels; keep the channel count modest.
_DILATE_CHANNELS = 128


class DavisScoreError(LabelFileError):
    """A DAVIS dataset or results folder that cannot be scored; ``str()`` is ``"<path>: <problem>"``."""


# ----------------------------------------------------------------------------------------------------
# Per-frame metrics (pure functions on boolean stacks)


def _as_bool_stacks(
    gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    gt, pred = np.asarray(gt).astype(bool, copy=False), np.asarray(pred).astype(bool, copy=False)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in shape")
    if gt.ndim < 2:
        raise ValueError(f"masks must be (..., H, W), got shape {gt.shape}")
    if void is not None:
        void = np.asarray(void).astype(bool, copy=False)
        if void.shape != gt.shape:
            raise ValueError(f"void mask {void.shape} and ground truth {gt.shape} differ in shape")
    return gt, pred, void


def db_eval_iou(gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    """Region similarity J = |G ∩ S| / |G ∪ S| over ``(T, H, W)`` masks -> ``(T,)`` float64.

    Void pixels (``(T, H, W)`` bool) count in neither set; an empty union scores 1.
    """
    gt, pred, void = _as_bool_stacks(gt, pred, void)
    inter, union = gt & pred, gt | pred
    if void is not None:
        inter &= ~void
        union &= ~void
    n_inter = np.count_nonzero(inter, axis=(-2, -1)).astype(np.float64)
    n_union = np.count_nonzero(union, axis=(-2, -1)).astype(np.float64)
    # (T,): 1 where both masks are empty, as the official evaluator does
    return np.divide(n_inter, n_union, out=np.ones_like(n_inter), where=n_union > 0)


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel boundaries of ``(..., H, W)`` masks (Martin et al. 2004) -> bool of the same shape.

    A pixel is on the boundary when it differs from its east, south or south-east neighbour (the
    boundary sits half a pixel towards the origin). As in the official code, the last row compares
    only with the east neighbour, the last column only with the south one, and the bottom-right
    pixel is never a boundary.
    """
    seg = np.asarray(seg).astype(bool, copy=False)
    b = np.zeros_like(seg)
    here = seg[..., :-1, :-1]
    inner = b[..., :-1, :-1]
    # written in place, without the shifted copies: this is the hot loop of the F measure
    np.not_equal(here, seg[..., :-1, 1:], out=inner)
    inner |= here != seg[..., 1:, :-1]
    inner |= here != seg[..., 1:, 1:]
    b[..., -1, :-1] = seg[..., -1, :-1] != seg[..., -1, 1:]  # last row: east neighbour only
    b[..., :-1, -1] = seg[..., :-1, -1] != seg[..., 1:, -1]  # last column: south neighbour only
    return b  # the bottom-right pixel was never written: it stays False


def boundary_tolerance(height: int, width: int, bound_th: float = 0.008) -> int:
    """The F tolerance in pixels: ``bound_th`` itself when >= 1, else ``ceil(bound_th * diagonal)``."""
    if bound_th >= 1:
        return int(bound_th)
    return math.ceil(bound_th * math.hypot(height, width))


def disk(radius: int) -> np.ndarray:
    """The disk structuring element ``x^2 + y^2 <= r^2``: ``(2r+1, 2r+1)`` uint8."""
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y <= radius * radius).astype(np.uint8)


def _dilate(maps: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Binary dilation of ``(N, H, W)`` bool maps by ``kernel`` -> ``(N, H, W)`` bool."""
    out = np.empty(maps.shape, dtype=bool)
    for start in range(0, maps.shape[0], _DILATE_CHANNELS):
        chunk = maps[start : start + _DILATE_CHANNELS]
        # (H, W, n): cv2 dilates every channel at once, much faster than a loop over frames
        hwc = np.ascontiguousarray(chunk.transpose(1, 2, 0), dtype=np.uint8)
        dilated = cv2.dilate(hwc, kernel)
        out[start : start + _DILATE_CHANNELS] = dilated.reshape(hwc.shape).transpose(2, 0, 1) > 0
    return out


def db_eval_boundary(
    gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008
) -> np.ndarray:
    """Boundary F-measure over ``(T, H, W)`` masks -> ``(T,)`` float64.

    Boundaries (``seg2bmap``, after removing void pixels from both masks) match when within a disk of
    radius ``boundary_tolerance(H, W, bound_th)``. No predicted and no true boundary: P = R = 1;
    predicted only: P = 0, R = 1; true only: P = 1, R = 0; P + R = 0 gives F = 0.
    """
    gt, pred, void = _as_bool_stacks(gt, pred, void)
    shape = gt.shape
    gt, pred = gt.reshape(-1, *shape[-2:]), pred.reshape(-1, *shape[-2:])
    if void is not None:
        void = void.reshape(-1, *shape[-2:])
        gt, pred = gt & ~void, pred & ~void
    kernel = disk(boundary_tolerance(shape[-2], shape[-1], bound_th))
    gt_b, pred_b = seg2bmap(gt), seg2bmap(pred)  # (N, H, W)
    n_gt = np.count_nonzero(gt_b, axis=(1, 2)).astype(np.float64)
    n_pred = np.count_nonzero(pred_b, axis=(1, 2)).astype(np.float64)
    pred_hit = np.count_nonzero(pred_b & _dilate(gt_b, kernel), axis=(1, 2)).astype(np.float64)
    gt_hit = np.count_nonzero(gt_b & _dilate(pred_b, kernel), axis=(1, 2)).astype(np.float64)
    # An absent boundary is perfectly precise / perfectly recalled; this alone gives the official
    # cases (none at all: P = R = 1; predicted only: P = 0, R = 1; true only: P = 1, R = 0).
    precision = np.divide(pred_hit, n_pred, out=np.ones_like(n_pred), where=n_pred > 0)
    recall = np.divide(gt_hit, n_gt, out=np.ones_like(n_gt), where=n_gt > 0)
    denom = precision + recall
    f = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return f.reshape(shape[:-2])


def decay_bins(n: int) -> list[tuple[int, int]]:
    """The four (inclusive) frame-index ranges of the Decay statistic for ``n`` scored frames.

    Edges are ``round(linspace(1, n, 5) + 1e-10) - 1``; bin i covers ``edges[i] .. edges[i + 1]``, so
    neighbouring bins share their edge frame. (The official code casts the edges to uint8, which wraps
    beyond 256 frames; every DAVIS sequence is far shorter, and here the edges stay exact.)
    """
    edges = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(4)]


def db_statistics(per_frame: np.ndarray) -> tuple[float, float, float]:
    """Mean, Recall and Decay of one object's ``(T,)`` per-frame scores.

    Mean = nanmean; Recall = fraction of frames scoring > 0.5; Decay = mean of the first quarter minus
    mean of the last quarter (see ``decay_bins``).
    """
    values = np.asarray(per_frame, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"per-frame scores must be a non-empty (T,) array, got shape {values.shape}")
    mean = float(np.nanmean(values))
    recall = float(np.mean(values > 0.5))
    bins = decay_bins(values.size)
    decay = float(np.nanmean(values[bins[0][0] : bins[0][1] + 1]) - np.nanmean(values[bins[3][0] : bins[3][1] + 1]))
    return mean, recall, decay


# ----------------------------------------------------------------------------------------------------
# One sequence


def _score_objects(gt_scored: np.ndarray, pred_scored: np.ndarray, num_objects: int) -> dict[str, np.ndarray]:
    """J and F of objects 1..K on the scored frames: labels ``(T, H, W)`` -> ``{"J": (K, T), "F": (K, T)}``.

    ``gt_scored`` has void already set to 0; prediction ids above K must have been refused before.
    """
    t = gt_scored.shape[0]
    j, f = np.zeros((num_objects, t)), np.zeros((num_objects, t))
    # one object at a time keeps memory at a few (T, H, W) bool stacks; frames are vectorised
    for k in range(num_objects):
        gt_k, pred_k = gt_scored == k + 1, pred_scored == k + 1  # an absent id is the zero padding
        j[k] = db_eval_iou(gt_k, pred_k)
        f[k] = db_eval_boundary(gt_k, pred_k)
    return {"J": j, "F": f}


def evaluate_sequence(gt_labels: np.ndarray, pred_labels: np.ndarray) -> dict[str, np.ndarray]:
    """Official per-object per-frame scores of one sequence.

    Args:
        gt_labels: ``(T, H, W)`` uint8 ground-truth ids of every frame (255 = void, scored as background).
        pred_labels: ``(T, H, W)`` uint8 predicted ids; its first and last frames are ignored.

    Returns:
        ``{"J": (K, T - 2), "F": (K, T - 2)}`` float64 over frames 1..T-2, K = max id of ``gt_labels[0]``.
    """
    gt_labels, pred_labels = np.asarray(gt_labels), np.asarray(pred_labels)
    if gt_labels.ndim != 3 or gt_labels.shape != pred_labels.shape:
        raise ValueError(f"need (T, H, W) label stacks of one shape, got {gt_labels.shape} and {pred_labels.shape}")
    if gt_labels.shape[0] < 3:
        raise ValueError(f"need at least 3 frames (the first and last are not scored), got {gt_labels.shape[0]}")
    gt = np.where(gt_labels == 255, 0, gt_labels)
    num_objects = int(gt[0].max())
    pred = pred_labels[1:-1]
    if pred.size and int(pred.max()) > num_objects:
        raise ValueError(f"prediction has object id {int(pred.max())}, the ground truth only {num_objects} objects")
    return _score_objects(gt[1:-1], pred, num_objects)


# ----------------------------------------------------------------------------------------------------
# A dataset and a results folder


@dataclass
class ObjectScore:
    """One object of one sequence: row name ``<sequence>_<k>``, statistics and per-frame ``(T,)`` scores."""

    name: str
    sequence: str
    j: np.ndarray
    f: np.ndarray
    j_mean: float
    j_recall: float
    j_decay: float
    f_mean: float
    f_recall: float
    f_decay: float


@dataclass
class DavisResult:
    """The official tables: ``global_table`` (``GLOBAL_COLUMNS`` -> value), one row per object, and the
    scored frame ids of each sequence (the per-frame arrays follow this order)."""

    global_table: dict[str, float]
    objects: list[ObjectScore]
    frames: dict[str, list[str]] = field(default_factory=dict)

    def per_object(self) -> dict[str, tuple[float, float]]:
        """``{"<sequence>_<k>": (J-Mean, F-Mean)}`` in evaluation order."""
        return {o.name: (o.j_mean, o.f_mean) for o in self.objects}


def read_sequence_list(davis_root: str | Path, subset: str = "val") -> list[str]:
    """The sequence names in ``ImageSets/2017/<subset>.txt``."""
    path = Path(davis_root) / "ImageSets" / "2017" / f"{subset}.txt"
    if not path.is_file():
        raise DavisScoreError(path, "sequence list not found (pass the sequences explicitly)")
    # blank lines are skipped (the official reader would fail on them as a sequence named "")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _read_labels(path: Path) -> np.ndarray:
    try:
        return read_indexed_png(path)
    except LabelFileError as exc:
        raise DavisScoreError(exc.path, exc.problem) from exc


def _load_ground_truth(davis_root: Path, sequence: str, resolution: str) -> tuple[np.ndarray, list[str]]:
    """All ground-truth frames of a sequence: ``(T, H, W)`` uint8 and their frame ids (file stems)."""
    image_dir = davis_root / "JPEGImages" / resolution / sequence
    n_images = len(list(image_dir.glob("*.jpg"))) if image_dir.is_dir() else 0
    if n_images == 0:
        # the official evaluator decides that a sequence exists, and how long it is, from these files
        raise DavisScoreError(image_dir, f"no *.jpg frames: sequence {sequence!r} is missing from the DAVIS root")
    gt_dir = davis_root / "Annotations" / resolution / sequence
    gt_paths = sorted(gt_dir.glob("*.png")) if gt_dir.is_dir() else []
    if len(gt_paths) < n_images:
        raise DavisScoreError(gt_dir, f"{len(gt_paths)} ground-truth PNGs for {n_images} frames in {image_dir}")
    if len(gt_paths) < 3:
        raise DavisScoreError(gt_dir, "fewer than 3 ground-truth frames (the first and last are not scored)")
    frames = [_read_labels(p) for p in gt_paths]
    for p, frame in zip(gt_paths, frames, strict=True):
        if frame.shape != frames[0].shape:
            raise DavisScoreError(p, f"size {frame.shape[::-1]} differs from the first frame's {frames[0].shape[::-1]}")
    return np.stack(frames), [p.stem for p in gt_paths]


def _load_predictions(results_dir: Path, sequence: str, frame_ids: list[str], size: tuple[int, ...]) -> np.ndarray:
    """The predicted labels of the scored frames: ``(T, H, W)`` uint8, checked against the GT size."""
    pred_dir = results_dir / sequence
    if not pred_dir.is_dir():
        raise DavisScoreError(pred_dir, f"no predictions for sequence {sequence!r}")
    out = np.empty((len(frame_ids), *size), dtype=np.uint8)
    for i, frame_id in enumerate(frame_ids):
        path = pred_dir / f"{frame_id}.png"
        if not path.is_file():
            raise DavisScoreError(path, f"missing prediction for ground-truth frame {frame_id}")
        labels = _read_labels(path)
        if labels.shape != size:
            raise DavisScoreError(
                path, f"prediction is {labels.shape[1]}x{labels.shape[0]}, the ground truth {size[1]}x{size[0]}"
            )
        out[i] = labels
    return out


def evaluate_davis(
    davis_root: str | Path,
    results_dir: str | Path,
    sequences: Sequence[str] | None = None,
    resolution: str = "480p",
) -> DavisResult:
    """Score a results folder (``<results_dir>/<sequence>/<frame>.png``) exactly as the official
    semi-supervised evaluator does. ``sequences`` defaults to ``ImageSets/2017/val.txt``."""
    root, results = Path(davis_root), Path(results_dir)
    names = list(sequences) if sequences is not None else read_sequence_list(root)
    objects: list[ObjectScore] = []
    frames: dict[str, list[str]] = {}
    for seq in names:
        gt, frame_ids = _load_ground_truth(root, seq, resolution)
        gt = np.where(gt == 255, 0, gt).astype(np.uint8)  # void is background in the semi-supervised task
        num_objects = int(gt[0].max())
        scored_ids = frame_ids[1:-1]
        pred = _load_predictions(results, seq, scored_ids, gt.shape[1:])
        top = int(pred.max())
        if top > num_objects:
            where = int(np.argmax(pred.reshape(len(pred), -1).max(axis=1) == top))
            raise DavisScoreError(
                results / seq / f"{scored_ids[where]}.png",
                f"object id {top} but the ground truth of {seq!r} has only {num_objects} objects",
            )
        scores = _score_objects(gt[1:-1], pred, num_objects)
        frames[seq] = scored_ids
        for k in range(num_objects):
            jm, jr, jd = db_statistics(scores["J"][k])
            fm, fr, fd = db_statistics(scores["F"][k])
            objects.append(ObjectScore(f"{seq}_{k + 1}", seq, scores["J"][k], scores["F"][k], jm, jr, jd, fm, fr, fd))
    if not objects:
        raise DavisScoreError(root, "no objects to score in the selected sequences")

    def mean(attr: str) -> float:
        return float(np.mean([getattr(o, attr) for o in objects]))

    j_mean, f_mean = mean("j_mean"), mean("f_mean")
    values = (
        (j_mean + f_mean) / 2,
        j_mean,
        mean("j_recall"),
        mean("j_decay"),
        f_mean,
        mean("f_recall"),
        mean("f_decay"),
    )
    return DavisResult(dict(zip(GLOBAL_COLUMNS, values, strict=True)), objects, frames)


# ----------------------------------------------------------------------------------------------------
# Tables and CSVs


def _text_table(header: Sequence[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = [" ".join(str(c).rjust(w) for c, w in zip(line, widths, strict=True)) for line in [list(header), *rows]]
    return "\n".join(lines)


def format_table(result: DavisResult, subset: str = "val") -> str:
    """The official printout: the global table and per-object J-Mean / F-Mean with 6 decimals."""
    glob_rows = [[f"{result.global_table[c]:.6f}" for c in GLOBAL_COLUMNS]]
    obj_rows = [[o.name, f"{o.j_mean:.6f}", f"{o.f_mean:.6f}"] for o in result.objects]
    return (
        f"--------------------------- Global results for {subset} ---------------------------\n"
        + _text_table(GLOBAL_COLUMNS, glob_rows)
        + f"\n\n---------- Per sequence results for {subset} ----------\n"
        + _text_table(SEQUENCE_COLUMNS, obj_rows)
    )


def write_csvs(result: DavisResult, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``global_results-val.csv`` and ``per-sequence_results-val.csv`` as the official script does
    (same columns, 3 decimals), always overwriting: returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    global_path, sequence_path = out / GLOBAL_CSV, out / SEQUENCE_CSV
    with global_path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(GLOBAL_COLUMNS)
        writer.writerow([f"{result.global_table[c]:.3f}" for c in GLOBAL_COLUMNS])
    with sequence_path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(SEQUENCE_COLUMNS)
        writer.writerows([o.name, f"{o.j_mean:.3f}", f"{o.f_mean:.3f}"] for o in result.objects)
    return global_path, sequence_path


# ----------------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--davis-root", required=True, type=Path, help="DAVIS folder (JPEGImages, Annotations, ...)")
    parser.add_argument("--results", required=True, type=Path, help="folder of <sequence>/<frame>.png predictions")
    parser.add_argument("--sequences", nargs="+", default=None, help="default: ImageSets/2017/val.txt")
    parser.add_argument("--resolution", default="480p", help="sub-folder of JPEGImages and Annotations")
    parser.add_argument("--out", type=Path, default=None, help="where the CSVs go (default: the results folder)")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        result = evaluate_davis(args.davis_root, args.results, args.sequences, args.resolution)
        paths = write_csvs(result, args.out if args.out is not None else args.results)
    except DavisScoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    print(f"\nCSVs written (recomputed, never reused): {paths[0]}, {paths[1]}")
    print(f"Total time: {time.perf_counter() - start:.2f} s")
    return 0
