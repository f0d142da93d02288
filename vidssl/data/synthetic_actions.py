"""A synthetic action-recognition set whose classes are motion patterns, small enough for a CPU.

Eight classes, in pairs that differ only in the direction of time: an object moving left / right, up / down,
rotating clockwise / counter-clockwise, growing / shrinking. Every clip is a textured object (the shapes and
textures of :mod:`vidssl.data.synthetic`) over a textured background that the camera drifts across at a random
slow speed, with random speeds, sizes and places, so no single frame tells the class: the frames of a "left" clip
played backwards are a "right" clip. A frame encoder averaged over time therefore scores chance on each pair; the
class is in how frames follow each other, which is what a temporal-order task should have taught.

``write_action_set`` writes the UCF101 layout (``ucfTrainTestlist/classInd.txt``, ``trainlist01.txt``,
``testlist01.txt``, videos under ``UCF-101/<Class>/``), so ``vidssl eval action`` reads it as it reads UCF101.
Pure numpy and OpenCV, deterministic for a seed (mp4 bytes for the same library versions).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from vidssl.data.synthetic import background_texture, object_shape, object_texture, write_mp4

__all__ = ["ACTIONS", "action_clip", "write_action_set"]

ACTIONS = ("MoveLeft", "MoveRight", "MoveUp", "MoveDown", "RotateCW", "RotateCCW", "Grow", "Shrink")


def _affine(centre: np.ndarray, angle: float, scale: float, pivot: float) -> np.ndarray:
    """``(2, 3)``: rotate by ``angle`` (radians, counter-clockwise on screen) and scale about canvas point
    ``(pivot, pivot)``, which lands on ``centre``."""
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    linear = np.array([[c, s], [-s, c]])  # image y points down: this turns counter-clockwise as seen
    return np.concatenate([linear, (centre - linear @ np.array([pivot, pivot]))[:, None]], axis=1)


def action_clip(action: str, seed: int, num_frames: int = 16, size: int = 64,
                masks: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """One clip of ``action`` (one of :data:`ACTIONS`): uint8 ``(num_frames, size, size, 3)``, pure in ``seed``;
    with ``masks``, also the object's soft mask ``(num_frames, size, size)`` float32 in [0, 1].

    Moves cover 25-45% of the frame over the clip, rotations 90-150 degrees, size changes a factor of 1.6-2.2;
    the path is placed uniformly among the places where it stays inside the frame, and the camera drifts by up
    to 0.25 px per frame in a random direction, whatever the class.
    """
    if action not in ACTIONS:
        raise ValueError(f"action_clip: unknown action {action!r}; choose from {', '.join(ACTIONS)}")
    if num_frames < 2 or size < 16:
        raise ValueError(f"action_clip: need num_frames >= 2 and size >= 16, got {num_frames}, {size}")
    rng = np.random.default_rng(seed)
    t = np.arange(num_frames, dtype=np.float64)
    u = t / (num_frames - 1) - 0.5  # -0.5 .. 0.5 over the clip
    margin = size // 4
    background = background_texture(rng, size + 2 * margin, size + 2 * margin)
    drift = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(0, 0.25) * (num_frames - 1)
    cam = np.stack([np.cos(drift), np.sin(drift)])[:, None] * speed * u + margin  # (2, T) camera offset
    canvas = int(size * 0.6) | 1
    pivot = (canvas - 1) / 2
    texture, shape = object_texture(rng, canvas), object_shape(rng, canvas, radius=0.45 * canvas)
    radius = 0.45 * canvas * rng.uniform(0.55, 0.8)  # the object's radius on screen at scale 1 ...
    base_scale = radius / (0.45 * canvas)
    angle = np.full(num_frames, rng.uniform(0, 2 * np.pi))
    scale = np.full(num_frames, base_scale)
    offset = np.zeros((2, num_frames))
    if action.startswith("Move"):
        sign = -1.0 if action in ("MoveLeft", "MoveUp") else 1.0
        axis = 0 if action in ("MoveLeft", "MoveRight") else 1
        offset[axis] = sign * rng.uniform(0.25, 0.45) * size * u
    elif action.startswith("Rotate"):
        sign = 1.0 if action == "RotateCCW" else -1.0
        angle = angle + sign * np.deg2rad(rng.uniform(90, 150)) * u
    else:
        sign = 1.0 if action == "Grow" else -1.0
        scale = base_scale * np.exp(sign * np.log(rng.uniform(1.6, 2.2)) * u) / 1.3
    reach = 0.45 * canvas * scale.max() + np.abs(offset).max(axis=1)  # (2,) how far the object reaches
    centre = np.array([rng.uniform(min(r, size / 2), max(size - r, size / 2)) for r in reach])
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    alphas = np.empty((num_frames, size, size), np.float32)
    for k in range(num_frames):
        x0, y0 = np.round(cam[:, k]).astype(int)
        still = background[y0:y0 + size, x0:x0 + size].astype(np.float32)
        m = _affine(centre + offset[:, k], float(angle[k]), float(scale[k]), pivot)
        obj = cv2.warpAffine(texture, m, (size, size), flags=cv2.INTER_LINEAR).astype(np.float32)
        alpha = cv2.warpAffine(shape, m, (size, size), flags=cv2.INTER_LINEAR)[..., None]
        frame = (1 - alpha) * still + alpha * obj + rng.normal(0, 3, still.shape)
        frames[k] = np.clip(frame, 0, 255).astype(np.uint8)
        alphas[k] = alpha[..., 0]
    return (frames, alphas) if masks else frames


def write_action_set(root: str | Path, train_per_class: int = 12, test_per_class: int = 6, num_frames: int = 16,
                     size: int = 64, seed: int = 0) -> Path:
    """The synthetic action set in the UCF101 layout under ``root`` (split 1 only); returns ``root``. Train videos
    are groups 8-25 and test videos groups 1-7 of each class, as UCF101 split 1 divides its groups; a group holds
    several clips (``c01``, ``c02``, ...) once there are more videos than groups."""
    root = Path(root)
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    train: list[tuple[str, int]] = []
    test: list[tuple[str, int]] = []
    for c, action in enumerate(ACTIONS):
        folder = root / "UCF-101" / action
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(train_per_class + test_per_class):
            group, clip = (1 + i % 7, 1 + i // 7) if i < test_per_class else \
                (8 + (i - test_per_class) % 18, 1 + (i - test_per_class) // 18)
            name = f"{action}/v_{action}_g{group:02d}_c{clip:02d}.mp4"
            clip_seed = int(np.random.SeedSequence([seed, c, i]).generate_state(1)[0])
            frames = action_clip(action, clip_seed, num_frames, size)
            assert isinstance(frames, np.ndarray)
            write_mp4(root / "UCF-101" / name, frames)
            (test if i < test_per_class else train).append((name, c + 1))
    (lists / "classInd.txt").write_text("".join(f"{c + 1} {a}\n" for c, a in enumerate(ACTIONS)))
    (lists / "trainlist01.txt").write_text("".join(f"{name} {label}\n" for name, label in train))
    (lists / "testlist01.txt").write_text("".join(f"{name}\n" for name, _ in test))
    return root


# ---------------------------------------------------------------------------------------------------- CLI

HELP = "write the synthetic motion-pattern action set (8 classes, UCF101 layout) for vidssl eval action"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="folder to write (UCF101 layout)")
    parser.add_argument("--train-per-class", type=int, default=12)
    parser.add_argument("--test-per-class", type=int, default=6)
    parser.add_argument("--frames", type=int, default=16, help="frames per video")
    parser.add_argument("--size", type=int, default=64, help="frame size (square)")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    try:
        root = write_action_set(args.out, args.train_per_class, args.test_per_class, args.frames, args.size, args.seed)
    except (OSError, ValueError) as exc:
        print(f"vidssl data synth-actions: {exc}", file=sys.stderr)
        return 1
    n = len(ACTIONS) * (args.train_per_class + args.test_per_class)
    print(f"{n} videos of {len(ACTIONS)} classes in {root} (UCF101 layout, split 1): vidssl eval action --root {root}")
    return 0
