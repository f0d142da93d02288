"""Datasets over raw videos, frame folders and still images.

Items are dicts (collated by the default collate function):

- ``"video"``: uint8 ``(C, T, H, W)``: every frame one sample needs, decoded once (still images are 1-frame
  clips, so the same method code serves both);
- ``"frame_indices"``: int64 ``(T,)``, the decoded frames (images: ``[0]``);
- ``"label"``: int64 class index (images; ``-1`` for videos);
- ``"index"``: the dataset index actually used (it differs from the one asked for after a skip);
- ``"skipped"``: ``"path: reason"`` lines of files skipped while producing this item (``""`` if none), so that
  skips in data-loader workers reach the main process, which reports them at the end of the epoch.

Per-sample randomness (frame indices, crop offsets, the replacement of a bad file) is a pure function of
``(seed, epoch, index)``: a resumed run, or another number of workers, sees exactly the same samples.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import os
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from vidssl.data.errors import VideoError
from vidssl.data.images import image_folder, read_image
from vidssl.data.index import discover, read_manifest
from vidssl.data.motion import MotionMethod, video_motion_scores
from vidssl.data.samplers import DEFAULT_SHORT, ClipTooShort, ShortPolicy, Shot
from vidssl.data.shots import video_shots
from vidssl.data.video import VideoReader, open_video
from vidssl.data.views import Sampler, VideoInfo
from vidssl.paths import cache_dir

ANALYSIS_VERSION = 1  # bump when shot detection or motion scoring changes, so cached results are recomputed


def _analysis_file(path: str, kind: str) -> Path:
    """Where the analysis ``kind`` of video ``path`` is cached: keyed by the resolved path, its modification time
    and size (a frame folder: its number of entries), the kind and :data:`ANALYSIS_VERSION`."""
    p = Path(path)
    st = p.stat()
    extra = sum(1 for _ in p.iterdir()) if p.is_dir() else st.st_size
    key = f"{p.resolve()}|{st.st_mtime_ns}|{extra}|{kind}|{ANALYSIS_VERSION}"
    return cache_dir("analysis") / f"{hashlib.sha1(key.encode()).hexdigest()}.npy"


def cached_analysis(path: str, kind: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """``compute()`` for video ``path``, cached on disk (``$VIDSSL_CACHE/analysis``): shots and motion scores decode
    the whole video, and data-loader workers, which start afresh every epoch, would otherwise redo it each time.
    A cache file that cannot be read is recomputed and replaced; writes are atomic, and a cache that cannot be
    written is skipped."""
    file = _analysis_file(path, kind)
    if file.is_file():
        try:
            return np.asarray(np.load(file, allow_pickle=False))
        except (OSError, ValueError):
            pass  # truncated or foreign: recompute
    value = np.asarray(compute())
    tmp = file.with_name(f"{file.stem}.{os.getpid()}.tmp.npy")
    try:
        np.save(tmp, value, allow_pickle=False)
        os.replace(tmp, file)
    except OSError:  # a read-only or full cache: the result is still good, only not kept
        tmp.unlink(missing_ok=True)
    return value


def cover_crop(
    frames: np.ndarray, size: tuple[int, int], rng: np.random.Generator, short_side: int | None = None
) -> np.ndarray:
    """Resize ``(T, H, W, 3)`` frames so they cover ``size = (h, w)``, keeping the aspect ratio, then cut one
    random ``size`` window (the same for every frame).

    ``short_side`` sets the scale instead: frames are resized so their short side has that many pixels (or
    more, where that would not cover ``size``), and the window is a part of the frame at that scale.
    """
    src_h, src_w = frames.shape[1:3]
    new_h, new_w = cover_size((src_h, src_w), size, short_side)
    if (new_h, new_w) != (src_h, src_w):
        scale = max(size[0] / src_h, size[1] / src_w, (short_side or 0) / min(src_h, src_w))
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        frames = np.stack([cv2.resize(f, (new_w, new_h), interpolation=interp) for f in frames])
    return random_window(frames, size, rng)


def cover_size(src: tuple[int, int], size: tuple[int, int], short_side: int | None = None) -> tuple[int, int]:
    """The ``(H, W)`` that ``cover_crop`` resizes ``src = (H, W)`` frames to before cutting its ``size`` window."""
    (h, w), (src_h, src_w) = size, src
    scale = max(h / src_h, w / src_w, (short_side or 0) / min(src_h, src_w))
    return max(h, round(src_h * scale)), max(w, round(src_w * scale))


def random_window(frames: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One random ``size = (h, w)`` window of ``(T, H, W, 3)`` frames, the same for every frame."""
    h, w = size
    top = int(rng.integers(0, frames.shape[1] - h + 1))
    left = int(rng.integers(0, frames.shape[2] - w + 1))
    return frames[:, top : top + h, left : left + w]


def limit_heap_fragmentation(threshold: int = 128 * 1024) -> bool:
    """Serve large allocations by mmap and trim the heap at ``threshold`` bytes (glibc only).

    Decoded frames are large buffers of mixed sizes (1080p next to 180p); in glibc's default heap they
    fragment it, and resident memory creeps up over thousands of samples (measured: +86 MiB over 2,000 clips
    without this, +8 MiB with it; docs/benchmarks.md). Same effect as ``MALLOC_MMAP_THRESHOLD_`` and
    ``MALLOC_TRIM_THRESHOLD_``. Process-wide; returns False where glibc's ``mallopt`` is not available.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, threshold)) and bool(mallopt(m_trim_threshold, threshold))


class _EpochSeeded(Dataset):
    """Shared machinery: per-sample generators from (seed, epoch, index, attempt) and skip-with-retry."""

    def __init__(self, seed: int, max_retries: int) -> None:
        self.seed = seed
        self.epoch = 0
        self.max_retries = max_retries
        self._bad: dict[str, str] = {}  # path -> reason, per process (each worker keeps its own)

    def set_epoch(self, epoch: int) -> None:
        """Samples depend on the epoch; call before iterating (workers are re-created each epoch)."""
        self.epoch = epoch

    def skipped(self) -> list[tuple[str, str]]:
        """Files found bad in this process (with workers, collect the items' ``"skipped"`` field instead)."""
        return sorted(self._bad.items())

    def _rng(self, index: int, attempt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index, attempt])

    def _path(self, index: int) -> str:
        raise NotImplementedError

    def _load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        skipped: list[str] = []
        current = index
        for attempt in range(self.max_retries + 1):
            rng = self._rng(index, attempt)
            path = self._path(current)
            if path in self._bad:  # known bad: do not try again, but report it with this item too
                skipped.append(f"{path}: {self._bad[path]}")
            else:
                try:
                    item = self._load(current, rng)
                except (VideoError, ClipTooShort, OSError, ValueError) as exc:
                    reason = getattr(exc, "problem", None) or str(exc)
                    self._bad[path] = reason
                    skipped.append(f"{path}: {reason}")
                else:
                    item["index"] = current
                    item["skipped"] = "\n".join(skipped)
                    return item
            # Replace the bad sample by another one, drawn from the same per-sample generator.
            current = int(rng.integers(0, len(self)))
        raise RuntimeError(
            f"no readable sample after {self.max_retries + 1} attempts starting at index {index}; "
            f"skipped: {'; '.join(skipped)}"
        )

    def __len__(self) -> int:
        raise NotImplementedError


class RawVideoDataset(_EpochSeeded):
    """Clips from video files and frame folders (a directory tree, a manifest CSV, or a list of paths).

    Args:
        source: a directory (searched recursively with ``vidssl.data.index.discover``), a manifest CSV
            (``vidssl data index``; rows with status ``error`` are left out) or a sequence of paths.
        sampler: ``(video: VideoInfo, rng) -> indices`` (``vidssl.data.views``); all the frames one sample needs
            for all its views (any shape, flattened into T in the order given). Its ``VideoInfo`` carries the
            length, frame rate and short-video policy, and computes the video's shots and motion scores on
            first use (once per video and process).
        size: output ``(H, W)``; frames are resized to cover it and one random window is cut per sample.
            ``None`` keeps the native size (then batches need equal-sized videos).
        short_side: resize frames to this short side (at least covering ``size``) before cutting the window,
            so the window is part of the frame at a chosen scale rather than all of it (see ``cover_crop``).
        short: the policy for videos shorter than the sampler needs (``loop``, ``repeat`` or ``skip``; None: the
            samplers' default), handed to the sampler in its ``VideoInfo``.
        cache_readers: open readers kept per worker (opening costs a probe; decoders hold memory, so few).
        resize_in_decoder: scale to the covering size inside the reader's colour conversion (PyAV: one libswscale
            call, area filter; no full-size RGB frame). False: full-size frames, then ``cv2.resize``. The window
            and every random draw are the same either way; only the resampling filter's rounding differs.
    """

    def __init__(
        self,
        source: str | Path | Sequence[str | Path],
        sampler: Sampler,
        *,
        size: tuple[int, int] | None = (256, 256),
        seed: int = 0,
        backend: str = "auto",
        short: ShortPolicy | None = None,
        max_retries: int = 10,
        cache_readers: int = 4,
        short_side: int | None = None,
        resize_in_decoder: bool = True,
    ) -> None:
        super().__init__(seed, max_retries)
        self.short_side = short_side
        self.resize_in_decoder = resize_in_decoder
        self.paths = _video_paths(source)
        if not self.paths:
            raise ValueError(f"{source}: no videos or frame folders found")
        self.sampler = sampler
        self.short: ShortPolicy = short if short is not None else DEFAULT_SHORT
        self._shots: dict[str, list[Shot]] = {}  # per process: computed once per video, on first use
        self._motion: dict[tuple[str, str], np.ndarray] = {}
        self.size = size
        self.backend = backend
        self.cache_readers = cache_readers
        self._readers: OrderedDict[str, VideoReader] = OrderedDict()
        limit_heap_fragmentation()  # forked data-loader workers inherit it; spawned ones call it in __setstate__

    def __len__(self) -> int:
        return len(self.paths)

    def _path(self, index: int) -> str:
        return self.paths[index]

    def _reader(self, path: str) -> VideoReader:
        reader = self._readers.pop(path, None)
        if reader is None:
            reader = open_video(path, backend=self.backend)
        self._readers[path] = reader
        while len(self._readers) > self.cache_readers:
            self._readers.popitem(last=False)[1].close()
        return reader

    def _video_shots(self, path: str) -> list[Shot]:
        if path not in self._shots:
            def compute() -> np.ndarray:
                return np.asarray(video_shots(self._reader(path)), dtype=np.int64).reshape(-1, 2)

            shots = cached_analysis(path, "shots", compute)
            self._shots[path] = [(int(a), int(b)) for a, b in shots]
        return self._shots[path]

    def _video_motion(self, path: str, method: MotionMethod = "flow") -> np.ndarray:
        if (path, method) not in self._motion:
            self._motion[path, method] = cached_analysis(
                path, f"motion-{method}", lambda: video_motion_scores(self._reader(path), method))
        return self._motion[path, method]

    def _load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        path = self.paths[index]
        reader = self._reader(path)
        info = VideoInfo(len(reader), reader.fps, self.short, shots=partial(self._video_shots, path),
                         motion=partial(self._video_motion, path))
        try:
            indices = np.asarray(self.sampler(info, rng), dtype=np.int64).reshape(-1)
            if self.size is not None and self.resize_in_decoder:
                frames = reader.get(indices, size=cover_size(reader.size, self.size, self.short_side))
            else:
                frames = reader.get(indices)
        except (VideoError, ClipTooShort):
            self._readers.pop(path, None)
            reader.close()
            raise
        if self.size is not None:
            frames = (random_window(frames, self.size, rng) if self.resize_in_decoder
                      else cover_crop(frames, self.size, rng, self.short_side))
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # (C, T, H, W)
        return {"video": video, "frame_indices": torch.from_numpy(indices), "label": -1}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_readers"] = OrderedDict()  # open decoders do not cross process boundaries
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        limit_heap_fragmentation()


def _video_paths(source: str | Path | Sequence[str | Path]) -> list[str]:
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        if path.is_file() and path.suffix.lower() == ".csv":
            return [row.path for row in read_manifest(path) if row.status == "ok"]
        if path.is_dir():
            return [str(p) for p in discover(path)]
        return [str(path)]
    # a list: each entry is expanded as above (folders searched, manifests read), in order, without repeats
    return list(dict.fromkeys(p for entry in source for p in _video_paths(entry)))


class ImageFolderDataset(_EpochSeeded):
    """Still images in the ImageFolder layout (``root/<class>/<image>``) as 1-frame clips with labels."""

    def __init__(
        self,
        root: str | Path,
        *,
        size: tuple[int, int] | None = None,
        seed: int = 0,
        max_retries: int = 10,
    ) -> None:
        super().__init__(seed, max_retries)
        samples, self.classes = image_folder(root)
        self.samples = [(str(f), label) for f, label in samples]
        self.size = size

    def __len__(self) -> int:
        return len(self.samples)

    def _path(self, index: int) -> str:
        return self.samples[index][0]

    def _load(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        path, label = self.samples[index]
        frames = read_image(path)[None]
        if self.size is not None and frames.shape[1:3] != tuple(self.size):
            frames = cover_crop(frames, self.size, rng)
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # (3, 1, H, W)
        return {"video": video, "frame_indices": torch.zeros(1, dtype=torch.int64), "label": label}


def build_dataset(
    kind: Literal["video", "images"],
    source: str | Path | Sequence[str | Path],
    *,
    sampler: Sampler | None = None,
    size: tuple[int, int] | None = None,
    seed: int = 0,
    backend: str = "auto",
    short: ShortPolicy | None = None,
    short_side: int | None = None,
    resize_in_decoder: bool = True,
) -> RawVideoDataset | ImageFolderDataset:
    """The dataset a run config asks for.

    ``source="synthetic"`` is the built-in synthetic training videos (generator seed 1), disjoint from the
    synthetic evaluation videos (``vidssl.data.synthetic.default_data(seed=0)``).
    """
    if kind == "images":
        if short_side is not None:
            raise ValueError("data.short_side: applies to videos only")
        if not isinstance(source, (str, Path)):
            raise ValueError(f"data.source: still images come from one ImageFolder root, got a list {list(source)}")
        return ImageFolderDataset(source, size=size, seed=seed)
    if kind != "video":
        raise ValueError(f"data.kind must be 'video' or 'images', got {kind!r}")
    if sampler is None:
        raise ValueError("a video dataset needs the method's sampler")
    if isinstance(source, (str, Path)) and str(source) == "synthetic":
        from vidssl.data.synthetic import default_data

        source = default_data(seed=1) / "videos"
    return RawVideoDataset(source, sampler, size=size, seed=seed, backend=backend, short=short, short_side=short_side,
                           resize_in_decoder=resize_in_decoder)
