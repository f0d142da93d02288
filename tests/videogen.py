"""Small test videos whose frames carry their own index, written with PyAV.

Each frame shows its index as 12 big binary blocks (a 4 x 3 grid of 16 x 16 pixel blocks on 64 x 48),
so a decoded frame's true index survives lossy coding: ``frame_index(frame)`` reads it back. This makes
"the reader returned frame i" checkable independently of any decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

WIDTH, HEIGHT, BLOCK = 64, 48, 16
COLS, ROWS = WIDTH // BLOCK, HEIGHT // BLOCK  # 4 x 3 = 12 bits: up to 4095 frames


def index_frame(i: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """uint8 RGB ``(48, 64, 3)`` frame showing ``i`` in binary (bit k at block k, row-major)."""
    bits = [(i >> k) & 1 for k in range(COLS * ROWS)]
    grid = np.array(bits, dtype=np.uint8).reshape(ROWS, COLS) * 200 + 28  # 28 or 228
    frame = np.kron(grid, np.ones((BLOCK, BLOCK), dtype=np.uint8))
    if rng is not None:  # mild texture so inter prediction has something to do; blocks stay readable
        frame = np.clip(frame.astype(np.int16) + rng.integers(-12, 13, frame.shape), 0, 255).astype(np.uint8)
    return np.repeat(frame[..., None], 3, axis=2)


def frame_index(frame: np.ndarray) -> int:
    """Read back the index of a decoded ``(48, 64, 3)`` frame."""
    gray = frame.astype(np.float32).mean(axis=2)
    blocks = gray.reshape(ROWS, BLOCK, COLS, BLOCK)[:, 4:-4, :, 4:-4].mean(axis=(1, 3))  # ignore edges
    bits = (blocks.reshape(-1) > 128).astype(int)
    return int(sum(int(b) << k for k, b in enumerate(bits)))


@dataclass(frozen=True)
class Spec:
    """One encoding layout: codec, container suffix, options and frame count."""

    name: str
    codec: str
    suffix: str
    frames: int = 48
    gop: int = 12
    bframes: int = 0
    options: dict[str, str] = field(default_factory=dict)
    pix_fmt: str = "yuv420p"
    vfr: bool = False


SPECS: list[Spec] = [
    Spec("x264_gop1", "libx264", ".mp4", gop=1),
    Spec("x264_gop7", "libx264", ".mp4", gop=7),
    Spec("x264_gop7_b3", "libx264", ".mp4", gop=7, bframes=3),
    Spec("x264_gop250_b2", "libx264", ".mp4", frames=80, gop=250, bframes=2),
    Spec("x264_opengop_b3", "libx264", ".mp4", frames=64, gop=10, bframes=3, options={"open-gop": "1"}),
    Spec("x264_mkv_b2", "libx264", ".mkv", gop=9, bframes=2),
    Spec("x265_gop8_b2", "libx265", ".mp4", gop=8, bframes=2),
    Spec("vp9_webm", "libvpx-vp9", ".webm", gop=10),
    Spec("mpeg4_avi_b2", "mpeg4", ".avi", gop=10, bframes=2),
    Spec("mpeg4_avi", "mpeg4", ".avi", frames=40, gop=6),
    Spec("mjpeg_avi", "mjpeg", ".avi", frames=40, gop=1, pix_fmt="yuvj420p"),
    Spec("x264_vfr", "libx264", ".mp4", frames=50, gop=8, bframes=2, vfr=True),
]


def vfr_pts(n: int) -> list[int]:
    """Irregular timestamps in milliseconds: gaps cycling 20, 40, 33, 100 ms."""
    gaps = [20, 40, 33, 100]
    return [int(sum(gaps[k % 4] for k in range(i))) for i in range(n)]


def write_video(path: Path, spec: Spec, seed: int = 0, fps: int = 25) -> Path:
    """Encode ``spec.frames`` index frames to ``path`` (its suffix picks the container)."""
    rng = np.random.default_rng(seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(spec.codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, spec.pix_fmt
        cc = stream.codec_context
        cc.gop_size = spec.gop
        cc.max_b_frames = spec.bframes
        opts = dict(spec.options)
        if spec.codec == "libx264":
            params = f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0:bframes={spec.bframes}"
            if opts.pop("open-gop", None):
                params += ":open-gop=1"
            opts.update({"crf": "12", "x264-params": params, "preset": "veryfast"})
        elif spec.codec == "libx265":
            opts.update({"crf": "12", "preset": "ultrafast", "x265-params":
                         f"keyint={spec.gop}:min-keyint={spec.gop}:scenecut=0:bframes={spec.bframes}"
                         ":log-level=error"})
        elif spec.codec == "libvpx-vp9":
            opts.update({"crf": "10", "b": "0", "deadline": "realtime", "cpu-used": "8"})
        elif spec.codec in ("mpeg4", "mjpeg"):
            opts.update({"qscale": "3"})
            cc.qmin, cc.qmax = 2, 4
        stream.options = opts
        if spec.vfr:
            cc.time_base = Fraction(1, 1000)
            stream.time_base = Fraction(1, 1000)
        stamps = vfr_pts(spec.frames) if spec.vfr else list(range(spec.frames))
        for i, pts in enumerate(stamps):
            frame = av.VideoFrame.from_ndarray(index_frame(i, rng), format="rgb24")
            frame.pts = pts
            if spec.vfr:
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
