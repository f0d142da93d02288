"""Seeded synthetic videos with exact masks and keypoint tracks: the built-in default data.

A scene is a large procedural background that the camera pans and zooms over slowly, plus K textured
objects (ellipses, polygons, smooth blobs) that translate, rotate and scale along smooth random paths,
cross each other's paths and occlude each other in a fixed depth order, some partly leaving the frame.
Each object is drawn by warping its own texture and shape with one affine per frame
(``cv2.warpAffine``), so the label masks and the keypoints (points of the object's shape carried by
the same affine) are exactly consistent with the pixels. A global brightness change and sensor noise
are added last.

What real video has and this flat render lacks is available as options (``REALISTIC`` turns them all on;
off by default, so the default data stay as they are): objects coloured from the scene's own palette (the
background's regional colours), so colour alone does not tell them from it; a smooth illumination field,
fixed to the scene and drifting over it like cloud shadow, that lights background and objects alike, so an
object changes brightness as it moves; a slow per-channel drift of each object's appearance (a turning
surface catching the light differently); motion blur (every texture averaged over the exposure along its
own motion; outlines stay sharp, so the masks stay exact); a faster camera pan.

Motion is continuous (at most about 4 pixels per frame at the default size) so that consecutive frames
correspond, which is what makes label propagation on these videos meaningful: an identity baseline
decays as the objects move, while appearance features can follow the textures.

``render`` is pure (numpy and OpenCV, no torch). ``write_dataset`` writes mp4s for pretraining, a
DAVIS-layout tree for mask propagation and JHMDB-layout keypoints for pose propagation, byte-identical
for the same seed and the same library versions. ``default_data`` caches one such dataset.
"""

from __future__ import annotations

import difflib
import inspect
import io
import json
import os
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vidssl.data.label_io import write_indexed_png
from vidssl.paths import cache_dir

# Bump whenever the pixels, masks, keypoints or files change, so cached datasets are regenerated.
GENERATOR_VERSION = 1

# Defaults: 4 videos x 48 frames at 240x320. At 240x320 a stride-8 encoder sees 30x40 feature cells,
# enough for three objects of 30-50 px radius to cover several cells each; 48 frames at 2-4 px per frame
# move an object by about its own size, so the identity baseline decays clearly (copying the first mask
# scores J of 0.15-0.26 on the seed-0 videos). Writing the four videos takes about 8 s on 2 idle CPU
# cores, once: ``default_data`` caches them.
DEFAULT_NUM_VIDEOS = 4
DEFAULT_NUM_FRAMES = 48
DEFAULT_SIZE = (240, 320)
DEFAULT_NUM_OBJECTS = 3
KEYPOINTS_PER_OBJECT = 4
FPS = 24

# The options of ``make_scene`` / ``render`` that give what real video has (see the module docstring). On
# the default evaluation sequences they take away the colour shortcut: the ``pixels`` baseline (Lab colour
# of 8x8 cells) falls from J&F 0.51 to 0.10 on the first two seed-0 videos, a random ResNet from 0.43 to 0.41
# (docs/results.md, the demo's synthetic data). Rendering takes 3.5x as long (2.1 s per default video).
REALISTIC: dict[str, Any] = {"lighting": 0.25, "appearance_drift": 0.12, "shutter": 0.5, "scene_palette": True,
                             "pan_speed": 2.0}
COMPLETE_MARKER = "COMPLETE.json"

# Streams of randomness derived from one seed: the scene and the noise are independent, so rendering
# a subset of the objects draws exactly the same noise.
_SCENE_STREAM, _NOISE_STREAM, _VIDEO_STREAM = 0, 1, 2
# Fixed H.264 options, chosen for reproducible bytes: one thread, and no macroblock-tree rate control,
# which gave different bitstreams from run to run even with one thread (measured with PyAV 18).
# crf 12 keeps the decoded frames above 30 dB PSNR on these noisy textures.
_X264_OPTIONS = {"crf": "12", "preset": "medium", "threads": "1", "x264-params": "no-mbtree=1"}
_MAT_HEADER = b"MATLAB 5.0 MAT-file, written by vidssl.data.synthetic"


@dataclass(frozen=True)
class SyntheticObject:
    """One object: a texture and a shape in its own canvas, and one canvas-to-frame affine per frame.

    ``texture`` ``(S, S, 3)`` uint8 RGB, ``shape`` ``(S, S)`` float32 in {0, 1}, ``affines`` ``(T, 2, 3)``
    float64 (canvas pixel -> frame pixel, the matrix ``cv2.warpAffine`` takes), ``anchors`` ``(P, 2)``
    float64 canvas ``(x, y)`` of the keypoints, ``depth`` its rank (larger is nearer the camera).
    """

    texture: np.ndarray
    shape: np.ndarray
    affines: np.ndarray
    anchors: np.ndarray
    depth: int
    gains: np.ndarray | None = None  # (T, 3) per-channel appearance gain; None: 1


@dataclass(frozen=True)
class Scene:
    """Everything ``render_scene`` needs: background, camera path, objects, lighting and noise settings.

    ``background`` ``(Hb, Wb, 3)`` uint8, ``camera`` ``(T, 2, 3)`` background-to-frame affines, ``gain``
    ``(T,)`` global brightness factors; the object with label ``k + 1`` is ``objects[k]``. ``light``
    ``(Hl, Wl)`` float32 illumination factors and ``light_camera`` ``(T, 2, 3)`` light-to-frame affines
    (None: uniform light); ``shutter`` the exposure in frame intervals over which moving textures blur
    (0: none).
    """

    seed: int
    size: tuple[int, int]
    background: np.ndarray
    camera: np.ndarray
    objects: tuple[SyntheticObject, ...]
    gain: np.ndarray
    noise_std: float
    light: np.ndarray | None = None
    light_camera: np.ndarray | None = None
    shutter: float = 0.0

    @property
    def num_frames(self) -> int:
        return int(self.camera.shape[0])


@dataclass(frozen=True)
class SyntheticVideo:
    """A rendered video with its ground truth.

    ``frames`` uint8 ``(T, H, W, 3)`` RGB; ``masks`` uint8 ``(T, H, W)``: 0 background, 1..K objects after
    occlusion; ``keypoints`` float32 ``(T, J, 2)`` ``(x, y)`` in pixels (pixel centres at integers);
    ``visible`` bool ``(T, J)``: inside the frame and not occluded; ``keypoint_labels`` uint8 ``(J,)``:
    the object label (1..K) each keypoint belongs to.
    """

    frames: np.ndarray
    masks: np.ndarray
    keypoints: np.ndarray
    visible: np.ndarray
    keypoint_labels: np.ndarray


# ----------------------------------------------------------------------------------------------------
# Procedural textures


def _noise_octaves(rng: np.random.Generator, h: int, w: int, cells: Sequence[float]) -> np.ndarray:
    """Multi-scale colour noise ``(h, w, 3)`` float32 with zero mean and unit std per channel.

    Each octave is a coarse random grid upsampled bicubically; ``cells`` are the grid periods in pixels,
    weighted by period so that coarse structure dominates and fine detail remains trackable.
    """
    out = np.zeros((h, w, 3), np.float32)
    for period in cells:
        gh, gw = max(2, round(h / period)), max(2, round(w / period))
        grid = rng.standard_normal((gh, gw, 3)).astype(np.float32)
        out += np.sqrt(period) * cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    out -= out.mean(axis=(0, 1))
    return out / (out.std(axis=(0, 1)) + 1e-6)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A saturated RGB colour ``(3,)`` float32 in [0, 255] from a random hue."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(120, 230), rng.uniform(110, 230)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _stripes(rng: np.random.Generator, h: int, w: int, period: float) -> np.ndarray:
    """Oriented sinusoidal stripes ``(h, w)`` float32 in [-1, 1] with a random angle and phase."""
    angle = rng.uniform(0, np.pi)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = (x * np.cos(angle) + y * np.sin(angle)) * (2 * np.pi / period) + rng.uniform(0, 2 * np.pi)
    return np.sin(phase).astype(np.float32)


def background_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A large background ``(h, w, 3)`` uint8: smooth colour regions, stripes, blobs and fine grain."""
    base = _noise_octaves(rng, h, w, cells=(96, 32))
    # Two colours mixed by a smooth field give large regions of distinct hue.
    field = np.clip(0.5 + 0.35 * base[..., :1], 0, 1)
    image = field * _random_colour(rng) + (1 - field) * _random_colour(rng)
    image = image * 0.75 + 18 * base  # colour variation inside the regions
    # Stripes in a smooth window, as on walls or fields.
    window = np.clip(_noise_octaves(rng, h, w, cells=(128,))[..., :1], 0, 1)
    image += 30 * window * _stripes(rng, h, w, rng.uniform(10, 24))[..., None]
    # Soft blobs of random colours.
    for _ in range(max(4, h * w // 12000)):
        centre = (int(rng.uniform(0, w)), int(rng.uniform(0, h)))
        radius = int(rng.uniform(8, 30))
        disc = np.zeros((h, w), np.float32)
        cv2.circle(disc, centre, radius, 1.0, thickness=-1)
        blob = cv2.GaussianBlur(disc, (0, 0), radius / 3)[..., None]
        image = (1 - 0.7 * blob) * image + 0.7 * blob * _random_colour(rng)
    image += 12 * _noise_octaves(rng, h, w, cells=(3, 6))  # fine grain that features can lock onto
    return np.clip(image, 0, 255).astype(np.uint8)


def palette_colour(rng: np.random.Generator, palette: np.ndarray) -> np.ndarray:
    """A colour ``(3,)`` float32 of ``palette`` ``(N, 3)`` (e.g. a scene's pixels), slightly perturbed."""
    colour = palette[int(rng.integers(len(palette)))].astype(np.float32)
    return np.clip(colour + rng.normal(0, 10, 3).astype(np.float32), 0, 255)


def object_texture(rng: np.random.Generator, size: int, palette: np.ndarray | None = None) -> np.ndarray:
    """An object's texture ``(size, size, 3)`` uint8: a base colour with spots, stripes or checks.

    The colours are saturated random hues, or with ``palette`` ``(N, 3)`` drawn from it (the scene's own
    colours, so that colour alone does not pick the object out of its scene).
    """
    def colour() -> np.ndarray:
        return _random_colour(rng) if palette is None else palette_colour(rng, palette)

    noise = _noise_octaves(rng, size, size, cells=(24, 8, 3))
    image: np.ndarray = colour() + 35 * noise
    pattern = rng.integers(3)
    if pattern == 0:  # stripes in a second colour
        mix: np.ndarray = (0.5 + 0.5 * _stripes(rng, size, size, rng.uniform(8, 16)))[..., None]
    elif pattern == 1:  # a rotated checkerboard
        a = _stripes(rng, size, size, rng.uniform(12, 24))
        mix = (0.5 + 0.5 * np.sign(a * np.roll(a.T, size // 7, axis=0)))[..., None]
    else:  # large spots
        spots = (_noise_octaves(rng, size, size, cells=(10,))[..., 0] > 0.3).astype(np.float32)
        mix = cv2.GaussianBlur(spots, (0, 0), 1.0)[..., None]
    image = (1 - 0.6 * mix) * image + 0.6 * mix * colour()
    return np.clip(image, 0, 255).astype(np.uint8)


def object_shape(rng: np.random.Generator, size: int, radius: float) -> np.ndarray:
    """A star-shaped region ``(size, size)`` float32 in {0, 1} centred in the canvas: ellipse, polygon or blob.

    Every shape contains the canvas centre and fits in a disc of ``radius``.
    """
    centre = (size - 1) / 2
    kind = rng.integers(3)
    angles = np.linspace(0, 2 * np.pi, 96, endpoint=False)
    if kind == 0:  # ellipse
        a, b = radius, radius * rng.uniform(0.5, 0.9)
        rot = rng.uniform(0, np.pi)
        x, y = a * np.cos(angles), b * np.sin(angles)
        x, y = x * np.cos(rot) - y * np.sin(rot), x * np.sin(rot) + y * np.cos(rot)
    elif kind == 1:  # polygon with 3..7 vertices
        n = int(rng.integers(3, 8))
        # Evenly spaced angles with jitter: vertices stay apart, so the polygon is never degenerate.
        angles = rng.uniform(0, 2 * np.pi) + (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * (2 * np.pi / n)
        r = radius * rng.uniform(0.7, 1.0, n)
        x, y = r * np.cos(angles), r * np.sin(angles)
    else:  # smooth blob: a radius that varies with angle by a few harmonics
        r = np.ones_like(angles)
        for harmonic in (2, 3, 5):
            r += rng.uniform(0.05, 0.18) * np.cos(harmonic * angles + rng.uniform(0, 2 * np.pi))
        r = radius * r / r.max()
        x, y = r * np.cos(angles), r * np.sin(angles)
    points = np.stack([x + centre, y + centre], axis=1)
    shape = np.zeros((size, size), np.uint8)
    # Fixed-point vertices (4 fractional bits) so the outline follows the float polygon closely.
    cv2.fillPoly(shape, [np.round(points * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return shape.astype(np.float32)


def shape_anchors(shape: np.ndarray, count: int) -> np.ndarray:
    """``count`` keypoints ``(count, 2)`` canvas ``(x, y)`` inside ``shape``, well clear of its outline.

    Farthest-point sampling over the pixels at least 4 px (and a quarter of the deepest distance) inside
    the shape, starting from the deepest one: the points spread over the object like body joints.
    """
    inside = np.pad(shape.astype(np.uint8), 1)  # so the canvas edge counts as outline
    depth = cv2.distanceTransform(inside, cv2.DIST_L2, 5)[1:-1, 1:-1]
    ys, xs = np.nonzero(depth >= max(4.0, 0.25 * float(depth.max())))
    candidates = np.stack([xs, ys], axis=1).astype(np.float64)
    chosen = [int(np.argmax(depth[ys, xs]))]
    distance = np.linalg.norm(candidates - candidates[chosen[0]], axis=1)
    for _ in range(count - 1):
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, np.linalg.norm(candidates - candidates[chosen[-1]], axis=1))
    return candidates[chosen]


# ----------------------------------------------------------------------------------------------------
# Motion


def _similarity(centre: np.ndarray, angle: float, scale: float, pivot: float) -> np.ndarray:
    """The ``(2, 3)`` affine that rotates and scales about canvas point ``(pivot, pivot)`` to ``centre``."""
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    linear = np.array([[c, -s], [s, c]])
    return np.concatenate([linear, (centre - linear @ np.array([pivot, pivot]))[:, None]], axis=1)


def _wobble(rng: np.random.Generator, t: np.ndarray, amplitude: float, max_rate: float) -> np.ndarray:
    """A smooth random signal ``(T,)``: two sinusoids, each changing by at most ``max_rate`` per frame."""
    out = np.zeros_like(t)
    for _ in range(2):
        period = rng.uniform(30, 80)
        # d/dt of a sin(2 pi t / p) is at most 2 pi a / p: cap the amplitude accordingly.
        a = min(amplitude, max_rate * period / (2 * np.pi)) * rng.uniform(0.3, 1.0)
        out += a * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    return out


def _object_path(
    rng: np.random.Generator, start: np.ndarray, end: np.ndarray, num_frames: int, unit: float, pivot: float
) -> np.ndarray:
    """Canvas-to-frame affines ``(T, 2, 3)``: drift from ``start`` towards ``end`` plus smooth wobble.

    ``unit`` is the frame's shorter side / 240, so speeds (at most about 3 px per frame of drift and 1 of
    wobble at 240 px) scale with the frame size.
    """
    t = np.arange(num_frames, dtype=np.float64)
    step = (end - start) / max(num_frames - 1, 1)
    step *= min(1.0, 3.0 * unit / max(float(np.linalg.norm(step)), 1e-9))
    centre = start + t[:, None] * step
    centre += np.stack([_wobble(rng, t, 12 * unit, 1.0 * unit) for _ in range(2)], axis=1)
    angle = rng.uniform(0, 2 * np.pi) + t * rng.uniform(-0.02, 0.02) + _wobble(rng, t, 0.3, 0.02)
    scale = rng.uniform(0.9, 1.1) * np.exp(_wobble(rng, t, 0.2, 0.01))
    return np.stack([_similarity(centre[i], angle[i], scale[i], pivot) for i in range(num_frames)])


def _camera_path(
    rng: np.random.Generator, num_frames: int, size: tuple[int, int], bg: tuple[int, int], pan_speed: float | None
) -> np.ndarray:
    """Background-to-frame affines ``(T, 2, 3)``: a pan, a slow wobble and a zoom of a few %.

    The pan is 0.3-0.8 px per frame at 240 px from the background's centre (``pan_speed`` None, version 1's
    camera), or ``pan_speed`` times 0.6-1.0 px per frame centred on the background.
    """
    h, w = size
    t = np.arange(num_frames, dtype=np.float64)
    unit = min(h, w) / 240
    direction = rng.uniform(0, 2 * np.pi)
    speed = rng.uniform(0.3, 0.8) if pan_speed is None else rng.uniform(0.6, 1.0) * pan_speed
    pan = t[:, None] * speed * unit * np.array([np.cos(direction), np.sin(direction)])
    if pan_speed is not None:
        pan -= pan[-1] / 2  # centred: the background has room for half the pan on each side
    pan += np.stack([_wobble(rng, t, 6 * unit, 0.3 * unit) for _ in range(2)], axis=1)
    zoom = 1.0 + 0.06 * np.sin(2 * np.pi * t / max(2 * num_frames, 2) + rng.uniform(0, 2 * np.pi))
    look_at = np.array([bg[1] / 2, bg[0] / 2]) + pan  # background point seen at the frame centre
    affines = np.zeros((num_frames, 2, 3))
    affines[:, 0, 0] = affines[:, 1, 1] = zoom
    affines[:, :, 2] = np.array([(w - 1) / 2, (h - 1) / 2]) - zoom[:, None] * look_at
    return affines


# ----------------------------------------------------------------------------------------------------
# Scene and rendering


def _check_args(seed: int, num_frames: int, size: tuple[int, int], num_objects: int) -> None:
    h, w = size
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if num_frames < 2:
        raise ValueError(f"num_frames must be at least 2, got {num_frames}")
    if h < 32 or w < 32 or h % 2 or w % 2:
        # Even sizes: H.264 in yuv420p needs them, and DAVIS-style evaluation at stride 8 prefers them.
        raise ValueError(f"size must be even and at least 32x32, got {size}")
    if not 1 <= num_objects <= 20:
        raise ValueError(f"num_objects must lie in 1..20, got {num_objects}")


def make_scene(
    seed: int,
    num_frames: int = DEFAULT_NUM_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    num_objects: int = DEFAULT_NUM_OBJECTS,
    *,
    keypoints_per_object: int = KEYPOINTS_PER_OBJECT,
    noise_std: float = 2.0,
    brightness: float = 0.08,
    lighting: float = 0.0,
    appearance_drift: float = 0.0,
    shutter: float = 0.0,
    scene_palette: bool = False,
    pan_speed: float | None = None,
) -> Scene:
    """Draw a scene from ``seed``: background, camera path, objects and their paths, lighting.

    ``lighting`` is the standard deviation of the log illumination field (0: uniform light),
    ``appearance_drift`` the amplitude of each object's log per-channel gain over time (0: constant),
    ``shutter`` the exposure in frame intervals (0: no motion blur), ``scene_palette`` whether objects take
    the background's colours (else saturated random hues, as generator version 1), ``pan_speed`` the
    camera's pan in px per frame at 240 px (version 1 panned at 0.3-0.8). Paths are redrawn
    (deterministically) until they make a useful video (see ``_paths_ok``): in particular every object is
    well visible in frame 0, so a DAVIS reader counts all K objects from the first annotation.
    """
    _check_args(seed, num_frames, size, num_objects)
    h, w = size
    rng = np.random.default_rng([seed, _SCENE_STREAM])
    unit = min(h, w) / 240
    pan_room = 0 if pan_speed is None else int(np.ceil(pan_speed * unit * num_frames))
    bg_size = (int(1.5 * h) + 64 + pan_room, int(1.5 * w) + 64 + pan_room)  # room for pan and zoom-out
    background = background_texture(rng, *bg_size)
    camera = _camera_path(rng, num_frames, size, bg_size, pan_speed)
    t = np.arange(num_frames)
    gain = 1.0 + brightness * np.sin(2 * np.pi * t / max(num_frames, 2) + rng.uniform(0, 2 * np.pi))

    radii = rng.uniform(0.12, 0.2, num_objects) * min(h, w)
    canvases = [2 * int(np.ceil(r)) + 9 for r in radii]  # odd, with a margin around the shape
    # the scene's regional colours (the background without its fine grain)
    palette = cv2.GaussianBlur(background, (0, 0), 3).reshape(-1, 3) if scene_palette else None
    textures = [object_texture(rng, s, palette) for s in canvases]
    shapes = [object_shape(rng, s, r) for s, r in zip(canvases, radii, strict=True)]
    anchors = [shape_anchors(shape, keypoints_per_object) for shape in shapes]
    depths = rng.permutation(num_objects)

    objects: tuple[SyntheticObject, ...] = ()
    for _attempt in range(1000):
        # Each object heads towards where the next one starts, so paths cross and objects occlude.
        starts = rng.uniform([0.15 * w, 0.15 * h], [0.85 * w, 0.85 * h], (num_objects, 2))
        # One object starts partly outside the frame (its centre 0.2-0.5 radius inside an edge) and
        # enters; the object heading for its start point leaves partly.
        entering, side = int(rng.integers(num_objects)), int(rng.integers(4))
        axis, inset = side % 2, rng.uniform(0.2, 0.5) * radii[entering]
        starts[entering, axis] = inset if side < 2 else (w, h)[axis] - 1 - inset
        ends = np.roll(starts, -1, axis=0) + rng.normal(0, 20 * unit, (num_objects, 2))
        if num_objects == 1:
            ends = rng.uniform([0.2 * w, 0.2 * h], [0.8 * w, 0.8 * h], (1, 2))
        objects = tuple(
            SyntheticObject(
                textures[k], shapes[k],
                _object_path(rng, starts[k], ends[k], num_frames, unit, (canvases[k] - 1) / 2),
                anchors[k], int(depths[k]),
            )
            for k in range(num_objects)
        )
        if _paths_ok(objects, size, entering):
            break
    else:
        raise ValueError(f"seed {seed}: cannot place {num_objects} objects visibly in a {h}x{w} frame 0; "
                         "use fewer objects or a larger size")
    light, light_camera = None, None
    if lighting > 0:
        light, light_camera = _light_field(rng, camera, bg_size, unit, lighting)
    if appearance_drift > 0:
        objects = tuple(replace(obj, gains=_appearance_gains(rng, num_frames, appearance_drift)) for obj in objects)
    return Scene(seed, (h, w), background, camera, objects, gain.astype(np.float64), float(noise_std),
                 light, light_camera, float(shutter))


def _appearance_gains(rng: np.random.Generator, num_frames: int, amplitude: float) -> np.ndarray:
    """One object's per-channel gains ``(T, 3)``: exp of a slow common wobble plus a smaller one per channel."""
    t = np.arange(num_frames, dtype=np.float64)
    common = _wobble(rng, t, amplitude, 0.01)
    return np.exp(np.stack([common + _wobble(rng, t, 0.5 * amplitude, 0.005) for _ in range(3)], axis=1))


def _light_field(
    rng: np.random.Generator, camera: np.ndarray, bg_size: tuple[int, int], unit: float, strength: float
) -> tuple[np.ndarray, np.ndarray]:
    """An illumination field fixed to the scene and drifting over it, and its light-to-frame affines.

    The field ``(Hl, Wl)`` float32 is ``exp(strength * n)`` for smooth unit-variance noise ``n`` (patches of
    light and shade about 100 px across at 240 px); it slides over the background at 0.2-0.6 px per frame
    (at 240 px) in one direction, as cloud shadow does, and the camera sees it as it sees the background.
    """
    num_frames = camera.shape[0]
    speed = rng.uniform(0.2, 0.6) * unit
    direction = rng.uniform(0, 2 * np.pi)
    drift = np.arange(num_frames)[:, None] * speed * np.array([np.cos(direction), np.sin(direction)])
    pad = int(np.ceil(speed * num_frames)) + 8
    field = _noise_octaves(rng, bg_size[0] + 2 * pad, bg_size[1] + 2 * pad, cells=(160 * unit, 60 * unit))[..., 0]
    light = np.exp(strength * field).astype(np.float32)
    # light point l = background point b + pad + drift(t); frame f = A b + c  =>  f = A l + (c - A (pad + drift))
    light_camera = camera.copy()
    linear = camera[:, :, :2]
    light_camera[:, :, 2] = camera[:, :, 2] - np.einsum("tij,tj->ti", linear, pad + drift)
    return light, light_camera


def _affine_at(affines: np.ndarray, time: float) -> np.ndarray:
    """The ``(2, 3)`` affine at fractional frame ``time``: linear between frames, extended at the ends."""
    last = affines.shape[0] - 1
    if last == 0:
        return affines[0]
    i = min(max(int(np.floor(time)), 0), last - 1)
    frac = time - i
    return (1 - frac) * affines[i] + frac * affines[i + 1]


def _exposed(texture: np.ndarray, affines: np.ndarray, times: Sequence[float], size: tuple[int, int]) -> np.ndarray:
    """``texture`` warped by ``affines`` at each of ``times`` and averaged: ``(H, W, 3)`` float32."""
    h, w = size
    out = np.zeros((h, w, 3), np.float32)
    for time in times:
        out += cv2.warpAffine(texture, _affine_at(affines, time), (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT_101)
    return out * np.float32(1.0 / len(times))


def _exposure_times(t: int, shutter: float) -> list[float]:
    """The instants averaged for frame ``t``: one, or four spread evenly over ``shutter`` frame intervals."""
    if shutter <= 0:
        return [float(t)]
    return [t + shutter * (i + 0.5) / 4 - shutter / 2 for i in range(4)]


def _warp_shape(obj: SyntheticObject, t: int, size: tuple[int, int]) -> np.ndarray:
    """The object's own (unoccluded) mask in frame ``t``: ``(H, W)`` bool, the warped shape >= 0.5."""
    h, w = size
    warped = cv2.warpAffine(obj.shape, obj.affines[t], (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return warped >= 0.5


def _paths_ok(objects: Sequence[SyntheticObject], size: tuple[int, int], entering: int) -> bool:
    """Whether drawn paths make a useful video.

    Every object shows at least half its area in frame 0 (after occlusion); the entering object has at
    least 15% of its area outside frame 0; with two or more objects, some object is at least 20%
    occluded in some frame.
    """
    num_frames = objects[0].affines.shape[0]
    occluded = 0.0
    for t in range(num_frames):
        own = [_warp_shape(obj, t, size) for obj in objects]
        for k, obj in enumerate(objects):
            area = float(obj.shape.sum() * abs(np.linalg.det(obj.affines[t, :, :2])))
            nearer = [own[j] for j, other in enumerate(objects) if other.depth > obj.depth]
            visible = int((own[k] & ~np.logical_or.reduce(nearer)).sum()) if nearer else int(own[k].sum())
            if t == 0 and (visible < 0.5 * area or (k == entering and own[k].sum() > 0.85 * area)):
                return False
            occluded = max(occluded, 1 - visible / max(float(own[k].sum()), 1.0))
    return len(objects) < 2 or occluded >= 0.2


def render_scene(scene: Scene, objects: Sequence[int] | None = None) -> SyntheticVideo:
    """Render ``scene``, optionally with only the objects indexed in ``objects`` (labels stay ``k + 1``).

    Objects are painted far to near; each writes its warped texture exactly where its warped shape is,
    so ``masks == k + 1`` marks exactly the pixels that show object k. The noise does not depend on
    which objects are drawn, so a subset render matches the full one wherever the same object is seen.
    """
    h, w = scene.size
    chosen = range(len(scene.objects)) if objects is None else objects
    order = sorted(chosen, key=lambda k: scene.objects[k].depth)  # far to near
    noise_rng = np.random.default_rng([scene.seed, _NOISE_STREAM])
    num_frames = scene.num_frames
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    masks = np.zeros((num_frames, h, w), np.uint8)
    for t in range(num_frames):
        # every texture averaged over the exposure (the camera's and each object's own motion); an
        # object's outline, and so its mask, is the one at frame t
        times = _exposure_times(t, scene.shutter)
        image = _exposed(scene.background, scene.camera, times, (h, w))
        for k in order:
            obj = scene.objects[k]
            own = _warp_shape(obj, t, (h, w))
            texture = _exposed(obj.texture, obj.affines, times, (h, w))
            if obj.gains is not None:
                texture *= obj.gains[t].astype(np.float32)
            image[own] = texture[own]
            masks[t][own] = k + 1
        if scene.light is not None and scene.light_camera is not None:
            light = cv2.warpAffine(scene.light, scene.light_camera[t], (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT_101)
            image *= light[..., None]
        noise = noise_rng.standard_normal((h, w, 3), dtype=np.float32) * scene.noise_std
        frames[t] = np.clip(image * scene.gain[t] + noise + 0.5, 0, 255).astype(np.uint8)

    keypoints, labels = [], []
    for k in sorted(chosen):
        obj = scene.objects[k]
        homogeneous = np.concatenate([obj.anchors, np.ones((len(obj.anchors), 1))], axis=1)  # (P, 3)
        keypoints.append(np.einsum("tij,pj->tpi", obj.affines, homogeneous))  # (T, P, 2)
        labels += [k + 1] * len(obj.anchors)
    if keypoints:
        points = np.concatenate(keypoints, axis=1).astype(np.float32)
    else:
        points = np.zeros((num_frames, 0, 2), np.float32)
    label_array = np.array(labels, np.uint8)
    # Visible: the pixel nearest the point lies in the frame and shows the point's own object.
    col, row = np.round(points[..., 0]).astype(np.int64), np.round(points[..., 1]).astype(np.int64)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    seen = masks[np.arange(num_frames)[:, None], np.clip(row, 0, h - 1), np.clip(col, 0, w - 1)]
    visible = inside & (seen == label_array[None, :])
    return SyntheticVideo(frames, masks, points, visible, label_array)


def render(
    seed: int,
    num_frames: int = DEFAULT_NUM_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    num_objects: int = DEFAULT_NUM_OBJECTS,
    *,
    keypoints_per_object: int = KEYPOINTS_PER_OBJECT,
    noise_std: float = 2.0,
    brightness: float = 0.08,
    lighting: float = 0.0,
    appearance_drift: float = 0.0,
    shutter: float = 0.0,
    scene_palette: bool = False,
    pan_speed: float | None = None,
) -> SyntheticVideo:
    """Render one synthetic video from ``seed`` (pure: the same arguments give the same arrays).

    ``size`` is ``(H, W)``, even; the keyword options are ``make_scene``'s. Returns frames ``(T, H, W, 3)``,
    masks ``(T, H, W)`` with labels 0..K, keypoints ``(T, K * keypoints_per_object, 2)`` and their
    visibility ``(T, J)``.
    """
    scene = make_scene(seed, num_frames, size, num_objects, keypoints_per_object=keypoints_per_object,
                       noise_std=noise_std, brightness=brightness, lighting=lighting,
                       appearance_drift=appearance_drift, shutter=shutter, scene_palette=scene_palette,
                       pan_speed=pan_speed)
    return render_scene(scene)


# ----------------------------------------------------------------------------------------------------
# Writing a dataset


def video_seed(seed: int, index: int) -> int:
    """The render seed of video ``index`` of a dataset written with ``seed`` (disjoint across seeds)."""
    return int(np.random.SeedSequence([seed, _VIDEO_STREAM, index]).generate_state(1)[0])


def video_name(seed: int, index: int) -> str:
    """The sequence name of video ``index`` of a dataset written with ``seed``, e.g. ``synth0-002``."""
    return f"synth{seed}-{index:03d}"


def write_mp4(path: Path, frames: np.ndarray, fps: int = FPS) -> None:
    """Encode ``(T, H, W, 3)`` uint8 RGB as H.264 (libx264, yuv420p), deterministically (one thread)."""
    import av  # imported here so that ``render`` needs only numpy and OpenCV

    num_frames, h, w, _ = frames.shape
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options=dict(_X264_OPTIONS))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.thread_count = 1
        for t in range(num_frames):
            # Converted to yuv420p by PyAV (BT.601, limited range: what decoders assume when untagged).
            frame = av.VideoFrame.from_ndarray(frames[t], format="rgb24")
            frame.pts = t
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():  # flush the encoder's delayed frames
            container.mux(packet)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` without the wall-clock timestamps it stores, so the bytes are reproducible."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, buffer.getvalue())


def _write_mat(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``scipy.io.savemat`` with a fixed header text (scipy puts the current time there)."""
    from scipy.io import savemat

    buffer = io.BytesIO()
    savemat(buffer, arrays)
    data = bytearray(buffer.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")  # the MAT-5 header's 116-byte free-text description
    path.write_bytes(bytes(data))


def _write_jpeg(path: Path, frame: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(frame).save(path, format="JPEG", quality=95)


def _write_png(path: Path, frame: np.ndarray) -> None:
    from PIL import Image

    # Fastest zlib level: noisy frames barely compress anyway, and level 6 took 4x longer.
    Image.fromarray(frame).save(path, format="PNG", compress_level=1)


def _write_video(root: Path, name: str, video: SyntheticVideo) -> None:
    """All files of one video under ``root``: mp4, DAVIS frames and masks, keypoints, JHMDB copy."""
    write_mp4(root / "videos" / f"{name}.mp4", video.frames)
    images = root / "davis" / "JPEGImages" / "480p" / name
    annotations = root / "davis" / "Annotations" / "480p" / name
    jhmdb = root / "jhmdb" / name
    for folder in (images, annotations, jhmdb):
        folder.mkdir(parents=True)
    for t, (frame, mask) in enumerate(zip(video.frames, video.masks, strict=True)):
        _write_jpeg(images / f"{t:05d}.jpg", frame)
        write_indexed_png(annotations / f"{t:05d}.png", mask)
        _write_png(jhmdb / f"{t + 1:05d}.png", frame)  # JHMDB numbers frames from 1
    _write_npz(root / "keypoints" / f"{name}.npz", {
        "keypoints": video.keypoints, "visible": video.visible, "keypoint_labels": video.keypoint_labels,
    })
    # JHMDB stores pos_img as (2, J, T) in 1-based MATLAB pixel coordinates.
    pos_img = video.keypoints.astype(np.float64).transpose(2, 1, 0) + 1.0
    _write_mat(jhmdb / "joint_positions.mat", {"pos_img": pos_img})


def is_complete(root: str | Path) -> bool:
    """Whether ``root`` holds a dataset whose writing finished (its marker file exists)."""
    return (Path(root) / COMPLETE_MARKER).is_file()


def write_dataset(
    root: str | Path,
    seed: int = 0,
    num_videos: int = DEFAULT_NUM_VIDEOS,
    num_frames: int = DEFAULT_NUM_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    num_objects: int = DEFAULT_NUM_OBJECTS,
    *,
    overwrite: bool = False,
    scene: dict[str, Any] | None = None,
) -> Path:
    """Render ``num_videos`` videos and write them under ``root``; returns ``root``.

    ``scene`` holds options of ``render`` (e.g. ``REALISTIC``); they are recorded in ``COMPLETE.json``.

    Layout: ``videos/<name>.mp4``; ``davis/JPEGImages/480p/<name>/00000.jpg``,
    ``davis/Annotations/480p/<name>/00000.png`` (indexed, DAVIS palette, labels 0..K),
    ``davis/ImageSets/2017/val.txt``; ``keypoints/<name>.npz`` (``keypoints`` (T, J, 2), ``visible``
    (T, J), ``keypoint_labels`` (J,)); ``jhmdb/<name>/00001.png`` and ``joint_positions.mat``
    (``pos_img`` (2, J, T), 1-based). Everything is written into a temporary sibling folder and renamed
    into place, with ``COMPLETE.json`` (version and parameters) written last, so an interrupted write
    never looks complete. The same arguments give byte-identical files.
    """
    root = Path(root)
    try:
        _check_args(seed, num_frames, size, num_objects)
    except ValueError as exc:
        raise ValueError(f"{root}: {exc}") from exc
    if num_videos < 1:
        raise ValueError(f"{root}: num_videos must be at least 1, got {num_videos}")
    options = set(inspect.signature(render).parameters) - {"seed", "num_frames", "size", "num_objects"}
    for key in scene or {}:
        if key not in options:
            near = difflib.get_close_matches(key, sorted(options), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; known: {', '.join(sorted(options))}"
            raise ValueError(f"{root}: scene option {key!r} is not an option of render{hint}")
    if root.exists() and not overwrite and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root}: already exists and is not empty (pass overwrite=True to replace it)")
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)  # left by an interrupted write of this same process id
    try:
        for folder in ("videos", "keypoints", "davis/ImageSets/2017"):
            (tmp / folder).mkdir(parents=True)
        names = [video_name(seed, i) for i in range(num_videos)]
        for i, name in enumerate(names):
            _write_video(tmp, name, render(video_seed(seed, i), num_frames, size, num_objects, **(scene or {})))
        (tmp / "davis" / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{n}\n" for n in names))
        params = {"generator_version": GENERATOR_VERSION, "seed": seed, "num_videos": num_videos,
                  "num_frames": num_frames, "size": list(size), "num_objects": num_objects, "names": names}
        if scene:
            params["scene"] = dict(scene)
        (tmp / COMPLETE_MARKER).write_text(json.dumps(params, indent=1) + "\n")
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        elif root.is_dir() and overwrite:
            shutil.rmtree(root)
        elif root.exists() and overwrite:
            root.unlink()
        # Atomic; fails (OSError) if another writer filled ``root`` in the meantime.
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def default_data(
    seed: int = 0,
    num_videos: int = DEFAULT_NUM_VIDEOS,
    num_frames: int = DEFAULT_NUM_FRAMES,
    size: tuple[int, int] = DEFAULT_SIZE,
    num_objects: int = DEFAULT_NUM_OBJECTS,
) -> Path:
    """The synthetic dataset for these parameters in the vidssl cache, written on first use.

    The folder name holds the generator version and every parameter, so a changed generator or request
    never reuses stale files; an incomplete folder (no marker) is rewritten.
    """
    h, w = size
    key = f"v{GENERATOR_VERSION}-seed{seed}-n{num_videos}-t{num_frames}-{h}x{w}-k{num_objects}"
    root = cache_dir("synthetic") / key
    if is_complete(root):
        return root
    if root.exists():
        shutil.rmtree(root, ignore_errors=True)  # an unfinished copy in our own cache
    try:
        return write_dataset(root, seed, num_videos, num_frames, size, num_objects)
    except OSError:
        # Another process may have renamed its finished copy into place first: use that one.
        if is_complete(root):
            return root
        raise
