"""Shot detection: synthetic scenes with known cuts and camera motion, and real DAVIS sequences spliced."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from vidssl.data.shots import (
    DEFAULT_THRESHOLD,
    detect_shots,
    frame_histograms,
    histogram_distance,
    shots_from_distances,
    video_shots,
)


class ListReader:
    """A minimal reader over an array that records the largest request (to check bounded memory)."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames
        self.largest = 0

    def __len__(self) -> int:
        return len(self.frames)

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        self.largest = max(self.largest, len(indices))
        return self.frames[np.asarray(indices)]


def scene(rng: np.random.Generator, tint: tuple[int, int, int], num: int, shift: tuple[int, int]) -> np.ndarray:
    """A textured scene filmed by a panning camera: crops of a blurred colour-noise canvas. ``(num, 96, 128, 3)``."""
    canvas = rng.normal(0.0, 60.0, size=(400, 600, 3)).astype(np.float32)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 4.0) * 4.0 + np.array(tint, dtype=np.float32)
    canvas = np.clip(canvas, 0, 255).astype(np.uint8)
    dy, dx = shift
    return np.stack([canvas[10 + t * dy : 106 + t * dy, 10 + t * dx : 138 + t * dx] for t in range(num)])


def two_scenes(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = scene(rng, (60, 130, 70), 17, (3, 9))  # green, fast pan: 9.5 px per frame
    b = scene(rng, (170, 90, 50), 23, (-0, 12))  # orange, faster pan
    return np.concatenate([a, b])


def test_synthetic_cut_found_exactly_with_camera_motion() -> None:
    frames = two_scenes()
    assert detect_shots(frames) == [(0, 17), (17, 40)]
    h = frame_histograms(frames)
    d = histogram_distance(h[:-1], h[1:])
    # the cut stands far above every within-scene change, on both sides of the threshold
    assert d[16] > 3 * DEFAULT_THRESHOLD and np.delete(d, 16).max() < DEFAULT_THRESHOLD / 3


def test_static_and_single_frame() -> None:
    frames = np.repeat(two_scenes()[:1], 5, axis=0)
    assert detect_shots(frames) == [(0, 5)]
    assert detect_shots(frames[:1]) == [(0, 1)]


def test_histograms_and_distance_closed_forms() -> None:
    red = np.zeros((2, 4, 4, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros_like(red)
    blue[..., 2] = 255
    hr, hb = frame_histograms(red, bins=8), frame_histograms(blue, bins=8)
    assert hr.shape == (2, 3, 8) and np.allclose(hr.sum(-1), 1.0)
    assert hr[0, 0, 0] == 1.0 and hb[0, 0, 5] == 1.0  # hue 0 (red); blue is hue 120 of 180 -> bin 5.33 -> 5
    # H differs (distance 1), S and V are the same (0): mean over channels = 1/3
    assert np.isclose(histogram_distance(hr[0], hb[0]), 1 / 3)
    assert histogram_distance(hr[0], hr[1]) == 0.0
    p = np.array([[0.5, 0.5, 0.0]] * 3)
    q = np.array([[0.25, 0.25, 0.5]] * 3)
    # 0.5 * (0.0625 / 0.75 * 2 + 0.25 / 0.5) = 1/3
    assert np.isclose(histogram_distance(p, q), 1 / 3)


def test_shots_from_distances() -> None:
    assert shots_from_distances(np.array([0.0, 0.5, 0.0, 0.9]), 5, 0.1) == [(0, 2), (2, 4), (4, 5)]
    with pytest.raises(ValueError, match="expected 4 distances"):
        shots_from_distances(np.zeros(3), 5, 0.1)


def test_bad_frames() -> None:
    with pytest.raises(ValueError, match="uint8"):
        detect_shots(np.zeros((3, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        detect_shots(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ValueError, match="no frames"):
        detect_shots(np.zeros((0, 4, 4, 3), np.uint8))


def test_video_shots_chunks_and_step() -> None:
    frames = two_scenes()
    reader = ListReader(frames)
    assert video_shots(reader, chunk=6) == [(0, 17), (17, 40)]  # cut at 17 lies across chunks 12..17, 18..23
    assert reader.largest == 6
    assert video_shots(ListReader(frames), step=4) == [(0, 20), (20, 40)]  # sampled 16 -> 20: cut at 20
    assert video_shots(ListReader(frames), step=1, chunk=1) == [(0, 17), (17, 40)]
    with pytest.raises(ValueError, match="step must be a positive integer"):
        video_shots(reader, step=0)


def read_sequence(folder: Path) -> np.ndarray:
    """A DAVIS frame folder as RGB uint8, decoded at 1/4 size by libjpeg (fast; histograms do not mind)."""
    files = sorted(folder.glob("*.jpg"))
    frames = []
    for f in files:
        bgr = cv2.imread(str(f), cv2.IMREAD_REDUCED_COLOR_4)
        assert bgr is not None, f"{f}: unreadable"
        frames.append(bgr[..., ::-1])
    return np.stack(frames)


def test_real_sequences_spliced(shared_data: Path) -> None:
    folders = sorted(p for p in (shared_data / "frames").iterdir() if p.is_dir())
    assert len(folders) == 7
    sequences = [read_sequence(f) for f in folders]
    lengths = np.cumsum([0] + [len(s) for s in sequences])
    expected = [(int(a), int(b)) for a, b in itertools.pairwise(lengths)]
    frames = np.concatenate(sequences)
    # every splice found exactly, and no false cut inside any sequence (motocross-jump has strong motion)
    assert detect_shots(frames) == expected
    reader = ListReader(frames)
    assert video_shots(reader, chunk=50) == expected
    assert reader.largest == 50
