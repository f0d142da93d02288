"""``vidssl data index``: a manifest CSV of videos and frame folders (frames, fps, size, status).

Probing runs in a process pool; an unreadable entry becomes a row with ``status="error"`` and the reason,
never a crash. Probe results are cached per entry under ``cache_dir("index")``, keyed by absolute path,
size and mtime, so a changed file is probed again and nothing is written next to the data.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from vidssl.data.images import IMAGE_SUFFIXES
from vidssl.data.video import open_video
from vidssl.paths import cache_dir

J = TypeVar("J")
R = TypeVar("R")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv")
HELP = "write a manifest CSV (frames, fps, size, status) of the videos and frame folders under a path"


@dataclass
class ManifestRow:
    """One video or frame folder. ``duration`` is in seconds; ``error`` is empty when ``status == "ok"``."""

    path: str
    frames: int = 0
    fps: float = 0.0
    height: int = 0
    width: int = 0
    duration: float = 0.0
    status: str = "ok"
    error: str = ""


def discover(root: str | Path) -> list[Path]:
    """Video files (by extension) and frame folders (folders directly holding images) under ``root``."""
    root = Path(root)
    if root.is_file():
        return [root] if root.suffix.lower() in VIDEO_EXTENSIONS else []
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        folder = Path(dirpath)
        if any(Path(f).suffix.lower() in IMAGE_SUFFIXES for f in filenames):
            found.append(folder)
        found.extend(folder / f for f in filenames if Path(f).suffix.lower() in VIDEO_EXTENSIONS)
    return sorted(found)


def sources_from_csv(csv_path: str | Path) -> list[Path]:
    """The ``path`` column of a CSV; relative paths are resolved against the CSV's folder."""
    csv_path = Path(csv_path)
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise ValueError(f"{csv_path}: no 'path' column in the header ({reader.fieldnames})")
        return [(csv_path.parent / row["path"]).resolve() if not Path(row["path"]).is_absolute()
                else Path(row["path"]) for row in reader if row["path"]]


def probe(path: str | Path, backend: str = "auto") -> ManifestRow:
    """Open one entry and report its frames, fps and size; any failure becomes an error row."""
    path = Path(path)
    try:
        with open_video(path, backend=backend) as reader:
            n, fps = len(reader), float(reader.fps)
            return ManifestRow(str(path), n, fps, reader.height, reader.width, n / fps if fps > 0 else 0.0)
    except Exception as exc:  # never fatal: the manifest records the reason
        return ManifestRow(str(path), status="error", error=f"{type(exc).__name__}: {exc}")


def _cache_file(path: Path) -> Path | None:
    """Cache entry for ``path`` keyed by absolute path, size and mtime (None when it cannot be stat'ed)."""
    try:
        st = path.stat()
    except OSError:
        return None
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    return cache_dir("index") / f"{hashlib.sha1(key.encode()).hexdigest()}.json"


def probe_cached(path: str | Path, backend: str = "auto", use_cache: bool = True) -> tuple[ManifestRow, bool]:
    """Probe through the cache (video files only: a folder's mtime misses edits to its frames).

    Returns the row and whether it came from the cache.
    """
    path = Path(path)
    entry = _cache_file(path) if use_cache and path.is_file() else None
    if entry is not None and entry.is_file():
        try:
            cached = json.loads(entry.read_text())
            if cached.get("backend") == backend:
                return ManifestRow(**cached["row"]), True
        except (OSError, ValueError, TypeError):
            pass  # damaged cache entry: probe again
    row = probe(path, backend)
    if entry is not None:
        tmp = entry.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"backend": backend, "row": asdict(row)}))
        tmp.replace(entry)  # atomic: parallel workers never see half-written entries
    return row, False


def _probe_job(job: tuple[str, str, bool]) -> tuple[ManifestRow, bool]:
    return probe_cached(*job)


def build_manifest(
    sources: list[Path] | list[str],
    workers: int = 1,
    progress: bool = True,
    backend: str = "auto",
    use_cache: bool = True,
) -> list[ManifestRow]:
    """Probe every source (in a process pool when ``workers > 1``), in the order given."""
    jobs = [(str(s), backend, use_cache) for s in sources]
    return [row for row, _ in map_videos(_probe_job, jobs, workers, "index", progress)]


def map_videos(fn: Callable[[J], R], jobs: list[J], workers: int, desc: str, progress: bool = True) -> list[R]:
    """``[fn(job) for job in jobs]`` in order, in a process pool when ``workers > 1``, with a progress bar."""
    results: list[R] = []
    with tqdm(total=len(jobs), desc=desc, unit="video", disable=not progress) as bar:
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for result in pool.map(fn, jobs, chunksize=1):
                    results.append(result)
                    bar.update()
        else:
            for job in jobs:
                results.append(fn(job))
                bar.update()
    return results


def write_manifest(rows: list[ManifestRow], path: str | Path) -> None:
    """CSV with a header row of the :class:`ManifestRow` fields."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(ManifestRow)])
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Rows written by :func:`write_manifest`."""
    path = Path(path)
    names = [fl.name for fl in fields(ManifestRow)]
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != names:
            raise ValueError(f"{path}: not a vidssl manifest (header {reader.fieldnames}, expected {names})")
        return [
            ManifestRow(r["path"], int(r["frames"]), float(r["fps"]), int(r["height"]), int(r["width"]),
                        float(r["duration"]), r["status"], r["error"])
            for r in reader
        ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="a folder to scan, a video, or a CSV with a 'path' column")
    parser.add_argument("--out", required=True, help="manifest CSV to write")
    parser.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 1))),
                        help="probe processes (default: CPU count, at most 8)")
    parser.add_argument("--backend", default="auto", choices=["auto", "pyav", "decord", "frames"])
    parser.add_argument("--no-cache", action="store_true", help="probe every entry again, write no cache")


def run(args: argparse.Namespace) -> int:
    source = Path(args.source)
    if not source.exists():
        print(f"error: {source}: no such file or folder")
        return 2
    sources = sources_from_csv(source) if source.suffix.lower() == ".csv" else discover(source)
    rows = build_manifest(sources, workers=args.workers, backend=args.backend, use_cache=not args.no_cache)
    write_manifest(rows, args.out)
    errors = [r for r in rows if r.status != "ok"]
    print(f"{len(rows) - len(errors)} ok, {len(errors)} error -> {args.out}")
    for r in errors:
        print(f"  {r.path}: {r.error}")
    return 0
