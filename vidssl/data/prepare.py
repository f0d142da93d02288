"""``vidssl data prepare SRC --out DST``: a training-ready copy of a video collection.

Random clips from raw videos are slow for two reasons: each clip decodes from the keyframe before it (the
shared clips have GOPs of up to 250 frames), and each frame is decoded at its full resolution (720p and 1080p
files) only to be shrunk to the training scale. The prepared copy removes both: every video (file or frame
folder) is re-encoded as H.264 at the training scale (short side ``short_side``, aspect kept, even sizes) with a
keyframe every ``keyint`` frames and no B-frames, every frame kept in order (frame ``i`` of the copy is frame
``i`` of the source, so samplers, shots and labels by index still apply).

- ``DST`` mirrors ``SRC``: ``SRC/a/b.avi`` becomes ``DST/a/b.mp4``, a frame folder ``SRC/seq`` ``DST/seq.mp4``
  (``b.avi.mp4`` and ``b.mkv.mp4`` where both exist).
- ``DST/manifest.csv`` (``vidssl data index``'s format with absolute paths, so ``data.source`` takes it) lists
  the copies; unreadable
  sources are rows with ``status = error`` naming the source and the reason, and the rest go on.
- Resumable: each copy is written to a temporary file, checked (its frame count equals the source's) and then
  renamed, so a killed run leaves only finished copies, which a rerun keeps. ``DST/prepare.json`` records the
  settings; a rerun with other settings is refused rather than mixing two scales in one copy.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av

from vidssl.data.index import ManifestRow, discover, map_videos, probe, write_manifest
from vidssl.data.video import open_video

HELP = "write a training-ready copy of videos (short side 256, a keyframe every 16 frames) with a manifest"
SETTINGS_FILE = "prepare.json"
MANIFEST = "manifest.csv"
CHUNK = 32  # frames decoded per read


@dataclass(frozen=True)
class PrepareSettings:
    short_side: int = 256  # the training scale; a source already smaller is not enlarged
    keyint: int = 16  # frames between keyframes: a random clip decodes at most keyint - 1 frames it does not use
    crf: int = 18  # x264 quality (lower is better); 18 is visually lossless at this scale
    preset: str = "veryfast"


def target_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """``(H, W)`` with the short side ``short_side`` (never enlarged), aspect kept, both even (H.264's 4:2:0)."""
    scale = min(1.0, short_side / min(height, width))
    h, w = max(2, round(height * scale / 2) * 2), max(2, round(width * scale / 2) * 2)
    return h, w


def destinations(sources: list[Path], src_root: Path, out: Path) -> list[Path]:
    """Where each copy goes: its path under ``src_root`` mirrored under ``out`` as ``.mp4`` (``a/b.avi`` ->
    ``a/b.mp4``, a frame folder ``seq`` -> ``seq.mp4``); where two sources would meet (``b.avi`` and ``b.mkv``)
    each keeps its whole name (``b.avi.mp4``, ``b.mkv.mp4``)."""
    rels = [Path(s.name) if s == src_root else s.relative_to(src_root) for s in sources]
    plain = [rel.with_suffix(".mp4") if s.is_file() else Path(str(rel) + ".mp4") for s, rel in zip(sources, rels,
                                                                                                  strict=True)]
    taken: dict[Path, int] = {}
    for d in plain:
        taken[d] = taken.get(d, 0) + 1
    return [out / (d if taken[d] == 1 else Path(str(rel) + ".mp4")) for d, rel in zip(plain, rels, strict=True)]


def prepare_one(source: Path, dest: Path, settings: PrepareSettings) -> ManifestRow:
    """Re-encode one video; returns the copy's manifest row, or an error row naming the source."""
    if dest.is_file():
        row = probe(dest)
        if row.status == "ok":
            return row  # finished by an earlier run (copies appear only after their check)
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.tmp.mp4")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open_video(source) as reader:
            n, fps = len(reader), reader.fps
            h, w = target_size(reader.height, reader.width, settings.short_side)
            rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(30)
            with av.open(str(tmp), mode="w") as container:
                stream = container.add_stream("libx264", rate=rate)
                stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                stream.options = {
                    "crf": str(settings.crf), "preset": settings.preset, "threads": "1",
                    "x264-params": f"keyint={settings.keyint}:min-keyint={settings.keyint}:scenecut=0:bframes=0",
                }
                for first in range(0, n, CHUNK):
                    frames = reader.get(range(first, min(n, first + CHUNK)), size=(h, w))
                    for i, rgb in enumerate(frames, start=first):
                        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                        frame.pts = i
                        for packet in stream.encode(frame):
                            container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
        with open_video(tmp) as copy:
            if len(copy) != n:
                raise ValueError(f"the copy has {len(copy)} frames, the source {n}")
        tmp.replace(dest)
    except Exception as exc:  # never fatal: the manifest reports the source and the reason
        tmp.unlink(missing_ok=True)
        return ManifestRow(str(source), status="error", error=f"{type(exc).__name__}: {exc}")
    return probe(dest)


def _job(job: tuple[str, str, PrepareSettings]) -> ManifestRow:
    return prepare_one(Path(job[0]), Path(job[1]), job[2])


def _check_settings(out: Path, settings: PrepareSettings) -> None:
    path = out / SETTINGS_FILE
    if path.is_file():
        earlier = json.loads(path.read_text())
        if earlier != asdict(settings):
            raise ValueError(f"{out}: prepared earlier with {earlier}, now asked for {asdict(settings)}; "
                             f"use another --out or the same settings")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(settings), indent=2))


def prepare(
    src: str | Path, out: str | Path, settings: PrepareSettings | None = None, workers: int = 1,
    progress: bool = True,
) -> list[ManifestRow]:
    """Prepare every video under ``src`` into ``out``; returns the manifest rows (also written to ``out``)."""
    src, out = Path(src), Path(out)
    settings = settings or PrepareSettings()
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such file or folder")
    if out.resolve() == src.resolve():
        raise ValueError(f"--out {out}: must not be the source folder itself")
    sources = [s for s in discover(src) if out.resolve() not in s.resolve().parents]
    if not sources:
        raise ValueError(f"{src}: no videos or frame folders found")
    _check_settings(out, settings)
    root = src if src.is_dir() else src.parent
    jobs = [(str(s), str(d), settings) for s, d in zip(sources, destinations(sources, root, out), strict=True)]
    rows = map_videos(_job, jobs, workers, "prepare", progress)
    # absolute paths: a manifest's paths are read as they stand (relative ones against the working folder)
    write_manifest([ManifestRow(**{**asdict(r), "path": str(Path(r.path).resolve())}) if r.status == "ok" else r
                    for r in rows], out / MANIFEST)
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = PrepareSettings()
    parser.add_argument("source", help="a folder of videos / frame folders, or one video")
    parser.add_argument("--out", required=True, help="folder of the prepared copy (created)")
    parser.add_argument("--short-side", type=int, default=d.short_side, help=f"training scale (default {d.short_side})")
    parser.add_argument("--keyint", type=int, default=d.keyint, help=f"frames between keyframes (default {d.keyint})")
    parser.add_argument("--crf", type=int, default=d.crf, help=f"x264 quality, lower is better (default {d.crf})")
    parser.add_argument("--workers", type=int, default=1, help="encoding processes (each one thread)")
    parser.add_argument("--no-progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    if args.short_side < 2 or args.keyint < 1:
        print("vidssl data prepare: --short-side must be at least 2 and --keyint at least 1")
        return 2
    settings = PrepareSettings(short_side=args.short_side, keyint=args.keyint, crf=args.crf)
    try:
        rows = prepare(args.source, args.out, settings, workers=args.workers, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as exc:
        print(f"vidssl data prepare: {exc}")
        return 2
    errors = [r for r in rows if r.status != "ok"]
    print(f"{len(rows) - len(errors)} prepared, {len(errors)} skipped -> {Path(args.out) / MANIFEST}")
    for r in errors:
        print(f"  skipped {r.path}: {r.error}")
    return 0
