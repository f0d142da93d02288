"""Motion between consecutive frames, for sampling from high-motion windows (Shuffle and Learn).

``motion_scores(frames)`` gives one score per pair of consecutive frames, ``(T - 1,)``, which is exactly
what :func:`vidssl.data.samplers.ordered_tuple` takes as ``motion``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

import cv2
import numpy as np

MotionMethod = Literal["flow", "diff"]


class FrameReader(Protocol):
    """What :func:`video_motion_scores` needs from a reader (e.g. :mod:`vidssl.data.video` readers)."""

    def __len__(self) -> int: ...

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray: ...


# Farneback parameters per pyramid level (OpenCV's documented example values): averaging window,
# iterations, polynomial neighbourhood and its Gaussian sigma.
_WINSIZE, _ITERATIONS, _POLY_N, _POLY_SIGMA = 15, 3, 5, 1.2
# Coarsest level of our own pyramid: halve while the short side stays >= this many pixels.
_MIN_SIDE = 12

__all__ = ["MotionMethod", "motion_scores", "optical_flow", "video_motion_scores"]


def _gray(frames: np.ndarray, width: int | None) -> tuple[list[np.ndarray], float]:
    """Grayscale frames, downscaled (keeping the aspect ratio) to at most ``width`` columns, and the scale."""
    w = frames.shape[2]
    scale = 1.0 if width is None or w <= width else width / w
    size = (max(1, round(w * scale)), max(1, round(frames.shape[1] * scale)))
    out = []
    for frame in frames:
        g = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        out.append(g if scale == 1.0 else cv2.resize(g, size, interpolation=cv2.INTER_AREA))
    return out, size[0] / w


def optical_flow(prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
    """Farneback flow ``(h, w, 2)`` float32 (x, y) in pixels from ``prev`` to ``nxt`` (uint8 grayscale ``(h, w)``),
    coarse to fine.

    OpenCV's own pyramid stops once a level would be under 32 pixels, which leaves only 2 or 3 levels at
    the widths used here and underestimates any motion over about 3% of the width per frame (measured:
    a 10% shift scored 20-40% of its true size). So we build the pyramid ourselves, down to a short side
    of ``_MIN_SIDE``, and run one-level Farneback per level seeded with the upsampled coarser flow.
    """
    levels = [(prev, nxt)]
    while min(levels[-1][0].shape) // 2 >= _MIN_SIDE:
        a, b = levels[-1]
        levels.append((cv2.pyrDown(a), cv2.pyrDown(b)))
    flow = np.zeros((*levels[-1][0].shape, 2), dtype=np.float32)  # a buffer: flags=0 ignores its values
    for i, (a, b) in enumerate(reversed(levels)):
        flags = 0
        if i > 0:
            h, w = a.shape
            gain = np.array([w / flow.shape[1], h / flow.shape[0]], dtype=np.float32)  # (x, y) pixel scale
            flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) * gain
            flags = cv2.OPTFLOW_USE_INITIAL_FLOW
        # one level each (levels=1, so pyr_scale is unused): the pyramid is ours
        flow = np.asarray(
            cv2.calcOpticalFlowFarneback(a, b, flow, 0.5, 1, _WINSIZE, _ITERATIONS, _POLY_N, _POLY_SIGMA, flags)
        )
    return flow


def motion_scores(frames: np.ndarray, method: MotionMethod = "flow", width: int | None = 128) -> np.ndarray:
    """Motion between consecutive RGB uint8 ``frames`` ``(T, H, W, 3)``. ``(T - 1,)`` float64.

    - ``"flow"``: mean magnitude of OpenCV Farneback optical flow on grayscale frames downscaled to
      ``width`` columns (None: full size, less accurate: the fixed 15-pixel window sees little
      texture at high resolution), in pixels *of the input frames* (the flow is scaled back up),
      so a uniform translation by ``(dx, dy)`` scores about ``hypot(dx, dy)``. Measured on shifted DAVIS
      frames and smooth textures at the default width: within 5% of the true shift from 1% to 10% of the
      frame width per frame; very fine texture moving fast vanishes at the coarse levels and is
      underestimated.
    - ``"diff"``: mean absolute difference of the (downscaled) grayscale frames, intensities in [0, 1].

    Static frames score 0 (``"diff"`` exactly, ``"flow"`` up to numerical noise). A single frame gives an
    empty array.
    """
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        kind = frames.dtype if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"motion_scores: frames must be a uint8 numpy array, got {kind}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"motion_scores: frames must have shape (T, H, W, 3) with T >= 1, got {frames.shape}")
    if method not in ("flow", "diff"):
        raise ValueError(f"motion_scores: method must be 'flow' or 'diff', got {method!r}")
    gray, scale = _gray(frames, width)
    scores = np.empty(len(gray) - 1, dtype=np.float64)
    for t in range(len(scores)):
        if method == "diff":
            diff = cv2.absdiff(gray[t], gray[t + 1])
            scores[t] = float(diff.mean()) / 255.0
        else:
            flow = optical_flow(gray[t], gray[t + 1])  # (h, w, 2)
            scores[t] = float(np.linalg.norm(flow, axis=-1).mean()) / scale
    return scores


def video_motion_scores(
    reader: FrameReader, method: MotionMethod = "flow", width: int | None = 128, chunk: int = 32
) -> np.ndarray:
    """:func:`motion_scores` of a whole video read through ``reader``, ``chunk`` frames at a time. ``(N - 1,)``.

    Consecutive chunks share one frame, so the result equals ``motion_scores`` of all frames at once while
    memory holds one chunk whatever the video's length.
    """
    num_frames = len(reader)
    if num_frames <= 0:
        raise ValueError(f"video_motion_scores: {reader!r} has no frames")
    if not isinstance(chunk, int) or chunk < 2:
        raise ValueError(f"video_motion_scores: chunk must be an integer >= 2, got {chunk!r}")
    parts = [np.zeros(0, dtype=np.float64)]
    for begin in range(0, num_frames - 1, chunk - 1):
        indices = np.arange(begin, min(begin + chunk, num_frames), dtype=np.int64)
        try:
            parts.append(motion_scores(reader.get(indices), method, width))
        except ValueError as exc:
            raise ValueError(f"video_motion_scores: {reader!r} returned bad frames: {exc}") from exc
    return np.concatenate(parts)
