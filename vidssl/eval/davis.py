"""``vidssl eval davis``: propagate each sequence's first-frame masks with a frame encoder and score the
result with the official DAVIS-2017 semi-supervised metrics.

Per sequence: frames are read one at a time at native resolution, encoded, and streamed through the preset's
propagation mode (``vidssl.eval.modes``: CRW-style top-k over the first and N most recent frames, PROTOCOLS.md
section 2, or MAST's memory); each predicted label map, at the ground-truth size, is written as an indexed PNG
with the DAVIS palette (``<out>/<sequence>/<frame>.png``), optionally with an overlay PNG and an mp4 per sequence. The
results folder is then scored by ``evaluate_davis`` (never from stale CSVs) and the tables are printed
and written as CSVs, beside the resolved config (``<out>/propagation.yaml``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image
from tqdm import tqdm

from vidssl.data.errors import VideoError
from vidssl.data.images import read_image
from vidssl.data.label_io import LabelFileError, davis_palette, read_indexed_png, write_indexed_png
from vidssl.engine.config import ConfigError, save_config
from vidssl.eval.davis_metrics import DavisResult, evaluate_davis, format_table, read_sequence_list, write_csvs
from vidssl.eval.encoders import FrameEncoder, add_encoder_arguments
from vidssl.eval.modes import EvalConfig, FrameInputError, load_preset, preset_encoder
from vidssl.eval.modes import propagate_video as propagate_mode
from vidssl.eval.propagation import PropagationConfig

HELP = "label propagation on DAVIS-2017 (CRW / VFS / DINO protocols) scored with the official J&F"
DEFAULT_CONFIG = Path("configs/eval/crw.yaml")


class DavisInputError(FrameInputError):
    """A DAVIS folder that cannot be propagated; ``str()`` is ``"<path>: <problem>"``."""


def read_frame(path: Path) -> np.ndarray:
    """A JPEG frame as ``(H, W, 3)`` uint8 RGB (``vidssl.data.images.read_image``); unreadable: DavisInputError."""
    try:
        return read_image(path)
    except VideoError as exc:
        raise DavisInputError(exc.path, exc.problem) from exc


def sequence_files(davis_root: Path, sequence: str, resolution: str = "480p") -> tuple[list[Path], Path]:
    """The sorted frame JPEGs of a sequence and its first-frame annotation PNG."""
    image_dir = davis_root / "JPEGImages" / resolution / sequence
    frames = sorted(image_dir.glob("*.jpg")) if image_dir.is_dir() else []
    if not frames:
        raise DavisInputError(image_dir, f"no *.jpg frames for sequence {sequence!r}")
    first_mask = davis_root / "Annotations" / resolution / sequence / f"{frames[0].stem}.png"
    if not first_mask.is_file():
        raise DavisInputError(first_mask, "first-frame annotation not found")
    return frames, first_mask


def propagate_video(
    encoder: FrameEncoder, frames: Sequence[Path], first_mask: np.ndarray, cfg: EvalConfig
) -> Iterator[np.ndarray]:
    """Yield the ``(H, W)`` uint8 label map of every frame (frame 0: ``first_mask`` itself), streaming, with the
    preset's mode (``vidssl.eval.modes``); a frame of another size than the mask is a ``DavisInputError``."""
    try:
        yield from propagate_mode(encoder, frames, first_mask, cfg, read_frame)
    except FrameInputError as exc:
        raise DavisInputError(exc.path, exc.problem) from exc


def overlay(frame: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(H, W, 3)`` uint8: objects tinted with their palette colours, background untouched."""
    colours = palette[labels].astype(np.float32)
    mixed = frame.astype(np.float32) * (1 - alpha) + colours * alpha
    return np.where(labels[..., None] > 0, mixed, frame).astype(np.uint8)


class _Mp4Writer:
    """H.264 mp4 written one frame at a time (odd sizes are padded to even, as yuv420p needs)."""

    def __init__(self, path: Path, fps: int = 12) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=Fraction(fps))
        self.stream.pix_fmt = "yuv420p"
        self.started = False

    def write(self, frame: np.ndarray) -> None:
        frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
        if not self.started:
            self.stream.height, self.stream.width = frame.shape[:2]
            self.started = True
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def evaluate_encoder(
    encoder: FrameEncoder,
    davis_root: str | Path,
    out_dir: str | Path,
    cfg: EvalConfig | None = None,
    sequences: Sequence[str] | None = None,
    *,
    resolution: str = "480p",
    overlays: bool = False,
    overlay_video: bool = False,
    progress: bool = True,
) -> DavisResult:
    """Propagate every sequence's first-frame masks, write ``<out_dir>/<sequence>/<frame>.png`` at the
    ground-truth size, score them with the official metrics and write the CSVs into ``out_dir``.

    ``sequences`` defaults to ``ImageSets/2017/val.txt``; ``cfg`` to CRW's protocol. Overlays go to
    ``<out_dir>/overlays/<sequence>/<frame>.png`` and ``<out_dir>/overlays/<sequence>.mp4``.
    """
    root, out = Path(davis_root), Path(out_dir)
    cfg = cfg if cfg is not None else PropagationConfig()
    names = list(sequences) if sequences is not None else read_sequence_list(root)
    palette = davis_palette()
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "propagation.yaml")
    for seq in names:
        frames, first_path = sequence_files(root, seq, resolution)
        try:
            first = read_indexed_png(first_path)
        except LabelFileError as exc:
            raise DavisInputError(exc.path, exc.problem) from exc
        first = np.where(first == 255, 0, first).astype(np.uint8)  # void is background, as in the metrics
        video = _Mp4Writer(out / "overlays" / f"{seq}.mp4") if overlay_video else None
        try:
            bar = tqdm(total=len(frames), desc=seq, unit="frame", disable=not progress, leave=False)
            for path, labels in zip(frames, propagate_video(encoder, frames, first, cfg), strict=True):
                write_indexed_png(out / seq / f"{path.stem}.png", labels, palette)
                if overlays or video is not None:
                    tinted = overlay(read_frame(path), labels, palette)
                    if overlays:
                        (out / "overlays" / seq).mkdir(parents=True, exist_ok=True)
                        Image.fromarray(tinted).save(out / "overlays" / seq / f"{path.stem}.png")
                    if video is not None:
                        video.write(tinted)
                bar.update()
            bar.close()
        finally:
            if video is not None:
                video.close()
    result = evaluate_davis(root, out, names, resolution)
    write_csvs(result, out)
    return result


# ----------------------------------------------------------------------------------------------------
# Command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--davis-root", required=True, type=Path, help="DAVIS folder (JPEGImages, Annotations, ...)")
    parser.add_argument("--out", required=True, type=Path, help="results folder: <sequence>/<frame>.png, CSVs")
    add_encoder_arguments(parser, backbone=None)  # the mode's: resnet18_s8_l3 (top-k), resnet18_mast (MAST)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="propagation preset (crw, vfs, dino)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the preset (topk=5 radius=12 ...)")
    parser.add_argument("--sequences", nargs="+", default=None, help="default: ImageSets/2017/val.txt")
    parser.add_argument("--resolution", default="480p", help="sub-folder of JPEGImages and Annotations")
    parser.add_argument("--overlays", action="store_true", help="also write an overlay PNG per frame")
    parser.add_argument("--overlay-video", action="store_true", help="also write an overlay mp4 per sequence")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        cfg = load_preset(args.config, args.overrides)  # `mode:` picks top-k or MAST's memory (vidssl.eval.modes)
        encoder = preset_encoder(cfg, args.encoder, args.device, args.backbone, args.seed, args.layers, args.input,
                                 args.config, args.stride)
        result = evaluate_encoder(
            encoder, args.davis_root, args.out, cfg, args.sequences, resolution=args.resolution,
            overlays=args.overlays, overlay_video=args.overlay_video,
        )
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(result))
    print(f"\nPredictions and CSVs in {args.out}; total time {time.perf_counter() - start:.1f} s")
    return 0
