"""Motion scores: a translating texture moves by its true shift, static frames score zero."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidssl.data.motion import motion_scores, video_motion_scores


def translating(shift: tuple[float, float], num: int = 4, seed: int = 0) -> np.ndarray:
    """A smooth colour texture translated by ``shift = (dx, dy)`` pixels per frame. ``(num, 240, 320, 3)``."""
    rng = np.random.default_rng(seed)
    canvas = rng.normal(0.0, 60.0, size=(480, 640, 3)).astype(np.float32)
    canvas = np.clip(cv2.GaussianBlur(canvas, (0, 0), 5.0) * 5.0 + 128, 0, 255).astype(np.uint8)
    dx, dy = shift
    frames = []
    for t in range(num):
        # sub-pixel translation by an affine warp, content taken from the larger canvas (no empty border)
        m = np.array([[1.0, 0.0, 100 + t * dx], [0.0, 1.0, 100 + t * dy]])
        frames.append(cv2.warpAffine(canvas, m, (320, 240), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP))
    return np.stack(frames)


def imread_rgb(path: Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    bgr = cv2.imread(str(path), flags)
    assert bgr is not None, f"{path}: unreadable"
    return np.ascontiguousarray(bgr[..., ::-1])


@pytest.mark.parametrize("shift", [(4.0, 0.0), (3.0, -2.0), (0.0, 7.5), (12.0, 5.0), (-30.0, 8.0)])
def test_flow_magnitude_matches_true_shift(shift: tuple[float, float]) -> None:
    scores = motion_scores(translating(shift))
    assert scores.shape == (3,) and scores.dtype == np.float64
    np.testing.assert_allclose(scores, np.hypot(*shift), rtol=0.08)


@pytest.mark.parametrize("width", [96, 192])
def test_flow_reported_in_input_pixels_whatever_the_width(width: int) -> None:
    frames = translating((6.0, 2.0))
    np.testing.assert_allclose(motion_scores(frames, width=width), np.hypot(6.0, 2.0), rtol=0.08)


def test_flow_on_shifted_real_frame(shared_data: Path) -> None:
    image = imread_rgb(shared_data / "frames" / "kite-surf" / "00010.jpg")  # 854 x 480
    for dx, dy in [(5.0, 2.0), (40.0, -12.0)]:  # up to ~5% of the width per frame
        m = [np.array([[1.0, 0.0, 40 + t * dx], [0.0, 1.0, 30 + t * dy]]) for t in range(2)]
        frames = np.stack([cv2.warpAffine(image, a, (640, 360), flags=cv2.WARP_INVERSE_MAP) for a in m])
        np.testing.assert_allclose(motion_scores(frames), np.hypot(dx, dy), rtol=0.08)


def test_static_frames_score_zero() -> None:
    frames = np.repeat(translating((0.0, 0.0), num=1), 3, axis=0)
    assert np.abs(motion_scores(frames)).max() < 0.01  # pixels; Farneback leaves ~1e-3 of noise
    assert (motion_scores(frames, method="diff") == 0).all()
    assert motion_scores(frames[:1]).shape == (0,)


def test_diff_closed_form() -> None:
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    frames[1] = 51  # gray 51 -> 0.2 of full scale
    frames[2, :4] = 255  # half the frame jumps to white, the other half back to black
    np.testing.assert_allclose(motion_scores(frames, method="diff", width=None), [0.2, 0.5 * 204 / 255 + 0.1])


def test_motion_orders_by_speed_and_rejects_bad_input() -> None:
    slow, fast = motion_scores(translating((1.0, 0.0))), motion_scores(translating((6.0, 0.0)))
    assert fast.min() > 4 * slow.max()
    assert motion_scores(translating((6.0, 0.0)), method="diff").mean() > 0
    with pytest.raises(ValueError, match="uint8"):
        motion_scores(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="method must be"):
        motion_scores(np.zeros((2, 8, 8, 3), np.uint8), method="sift")  # type: ignore[arg-type]


def test_real_sequence_motion(shared_data: Path) -> None:
    files = sorted((shared_data / "frames" / "motocross-jump").glob("*.jpg"))[:6]
    frames = np.stack([imread_rgb(f, cv2.IMREAD_REDUCED_COLOR_2) for f in files])
    flow = motion_scores(frames)
    assert flow.shape == (5,) and np.isfinite(flow).all() and (flow > 0.5).all()


class ListReader:
    def __init__(self, frames: np.ndarray) -> None:
        self.frames, self.largest = frames, 0

    def __len__(self) -> int:
        return len(self.frames)

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        self.largest = max(self.largest, len(indices))
        return self.frames[np.asarray(indices)]


@pytest.mark.parametrize("method", ["flow", "diff"])
def test_video_motion_scores_chunked_equals_whole(method: str) -> None:
    frames = np.concatenate([translating((2.0, 1.0), num=4), translating((6.0, 0.0), num=4, seed=1)])
    reader = ListReader(frames)
    chunked = video_motion_scores(reader, method=method, chunk=3)  # type: ignore[arg-type]
    np.testing.assert_array_equal(chunked, motion_scores(frames, method=method))  # type: ignore[arg-type]
    assert chunked.shape == (7,) and reader.largest == 3
    assert video_motion_scores(ListReader(frames[:1])).shape == (0,)
    with pytest.raises(ValueError, match="chunk must be"):
        video_motion_scores(reader, chunk=1)
