"""Exact frame reading from video files, frame folders and arrays.

``open_video(source)`` returns a :class:`VideoReader`; ``reader.get(indices)`` gives uint8 RGB frames
``(T, H, W, 3)`` in the order asked for. Frame ``i`` is always the ``i``-th frame of a plain sequential
decode of the stream, whatever the order or repetition of the requested indices.

How exactness is kept while staying fast (PyAV backend):

- At open the stream is demuxed once without decoding: the sorted packet pts give frame ``i``'s
  timestamp, the keyframe packets give the places where decoding may start.
- A read sorts and dedupes the indices, seeks (forward only) to the keyframe at or before the first
  needed frame, decodes forward, identifies each decoded frame by its pts, converts to RGB only the
  frames asked for, then reorders. A reader keeps its decoder between reads, so a read that starts after
  the last decoded frame and before the next keyframe simply continues.
- Every decoded frame is checked: after a seek the first frame at or after the keyframe must be that
  keyframe, and each next frame the next entry of the pts table. A file that breaks this (AVI stores
  decode-order timestamps, so its B-frames come out with out-of-order pts; missing or duplicate pts) is
  switched for good to *sequential* mode: decode from the start and count frames. That is exact, slower.
- Frames that the table lists but the decoder never produces (a truncated file) raise a ``VideoError``
  naming the frames; they are never replaced by other frames.
- Frames before the next wanted one that no other frame references are not decoded at all where the codec
  marks them so (H.264 ``nal_ref_idc == 0``, MPEG-1/2/4 B-frames): libavcodec's ``skip_frame`` set to
  ``NONREF`` packet by packet, only for packets whose pts lies before the next frame asked for. Skipping a
  non-reference frame changes no other frame's pixels; the pts check then accepts gaps only before that frame.
- One ``VideoReformatter`` per reader converts (and, with ``size=``, scales) to RGB: a fresh one per frame, as
  ``VideoFrame.to_ndarray`` makes, costs more than the conversion itself on small frames.

Backends and what ``"auto"`` picks: arrays -> ``"array"``, folders -> ``"frames"``, files -> ``"pyav"``.
decord is not the default: on the shared clips this reader delivers random clips 1.5x as fast as decord's
``get_batch`` (geometric mean, one thread, ``tools/bench_data.py``), decord needs a per-file seek check at
open, and its own random access returns wrong frames on HEVC and on open-GOP H.264 (``docs/benchmarks.md``,
"Video decoding"). The ``"decord"`` backend is kept for users who ask for it: it
probes the file with PyAV first (decord can crash on corrupt input), checks that decord decodes the
requested stream with the same frame count, and checks its random access on a few probe frames against its
own sequential decode; when any check fails it falls back to PyAV for that file (``reader.backend`` says
which was used). Where decord has no wheel, ``"decord"`` falls back to PyAV too.

Streams: ``stream=k`` is the ``k``-th *video* stream of the file (default 0, the first one) for every
backend. Colour: decoders convert YUV to RGB slightly differently (``bt709_full_range.mp4``: decord and
PyAV differ by a few levels); within one backend random access equals sequential decode bit for bit.
Frame folders and arrays have no timing: their ``fps`` is the ``fps=`` argument (default 30).
"""

from __future__ import annotations

import bisect
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import cv2
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter
from PIL import Image

from vidssl.data.errors import VideoError
from vidssl.data.images import IMAGE_SUFFIXES

BACKENDS = ("auto", "decord", "pyav", "frames", "array")
# codecs whose non-reference frames libavcodec can skip without changing any other frame: H.264 marks them
# (nal_ref_idc 0), MPEG-1/2/4 part 2 never reference B-frames. HEVC is left out: a sub-layer non-reference
# picture may still be referenced by a higher temporal sub-layer.
SKIP_NONREF_CODECS = frozenset({"h264", "mpeg4", "mpeg2video", "mpeg1video", "msmpeg4v3"})
DEFAULT_STILL_FPS = 30.0  # frame folders and arrays carry no timing; DAVIS/JHMDB users pass fps=

IndexLike = Sequence[int] | np.ndarray | range


class VideoReader:
    """Base reader: validates indices, reads each distinct frame once in increasing order, reorders.

    Subclasses set ``path, backend, fps, height, width, _num_frames`` and implement ``_read``.
    """

    path: str
    backend: str
    fps: float
    height: int
    width: int
    _num_frames: int

    def __len__(self) -> int:
        return self._num_frames

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return (self.height, self.width)

    def get(self, indices: IndexLike, size: tuple[int, int] | None = None) -> np.ndarray:
        """Frames ``indices`` (any order, repeats allowed) as uint8 RGB ``(T, H, W, 3)``.

        ``size = (h, w)`` scales every frame to that size (area filter when shrinking, bilinear when
        enlarging); PyAV scales inside its colour conversion, so a full-size RGB frame is never made.
        """
        idx = np.asarray(indices)
        if idx.ndim != 1:
            raise VideoError(self.path, f"indices must be one-dimensional, got shape {idx.shape}")
        if size is not None:
            size = (int(size[0]), int(size[1]))
            if min(size) < 1:
                raise VideoError(self.path, f"output size must be positive, got {size}")
            if size == (self.height, self.width):
                size = None
        if idx.size == 0:
            h, w = size or (self.height, self.width)
            return np.zeros((0, h, w, 3), dtype=np.uint8)
        if not np.issubdtype(idx.dtype, np.integer):
            raise VideoError(self.path, f"indices must be integers, got dtype {idx.dtype}")
        bad = idx[(idx < 0) | (idx >= len(self))]
        if bad.size:
            raise VideoError(self.path, f"frame index {int(bad[0])} out of range [0, {len(self)})")
        unique, inverse = np.unique(idx, return_inverse=True)
        frames = self._read([int(i) for i in unique], size)  # (U, h, w, 3), increasing index order
        # a truncated file may have shrunk the reader during the read; report it, never misplace frames
        return frames[inverse.reshape(-1)]

    def _read(self, indices: list[int], size: tuple[int, int] | None = None) -> np.ndarray:
        """Distinct increasing ``indices``, scaled to ``size`` when given (subclasses may do it while decoding)."""
        return resize_frames(self._read_native(indices), size)

    def _read_native(self, indices: list[int]) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release decoder resources (idempotent)."""

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(path={self.path!r}, backend={self.backend!r}, frames={len(self)}, "
            f"size={self.size}, fps={self.fps:.3f})"
        )


def resize_frames(frames: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 frames scaled to ``size = (h, w)`` (area filter shrinking, bilinear enlarging)."""
    if size is None or frames.shape[1:3] == tuple(size):
        return frames
    h, w = size
    interp = cv2.INTER_AREA if h * w < frames.shape[1] * frames.shape[2] else cv2.INTER_LINEAR
    out = np.empty((len(frames), h, w, 3), dtype=np.uint8)
    for i, frame in enumerate(frames):
        out[i] = cv2.resize(frame, (w, h), interpolation=interp)
    return out


# --------------------------------------------------------------------------------------------- arrays


class ArrayReader(VideoReader):
    """An in-memory uint8 ``(T, H, W, 3)`` array."""

    def __init__(self, array: np.ndarray, fps: float | None = None) -> None:
        self.path = "<array>"
        self.backend = "array"
        if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
            raise VideoError(self.path, f"expected a uint8 numpy array, got {type(array).__name__}"
                             f"{' of ' + str(array.dtype) if isinstance(array, np.ndarray) else ''}")
        if array.ndim != 4 or array.shape[-1] != 3:
            raise VideoError(self.path, f"expected shape (T, H, W, 3), got {array.shape}")
        if array.shape[0] == 0:
            raise VideoError(self.path, "array has no frames")
        self._array = array
        self._num_frames, self.height, self.width = array.shape[:3]
        self.fps = float(fps) if fps else DEFAULT_STILL_FPS

    def _read_native(self, indices: list[int]) -> np.ndarray:
        return self._array[indices]


# --------------------------------------------------------------------------------------- frame folders


def list_frame_files(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class FrameFolderReader(VideoReader):
    """A folder of JPEG/PNG frames sorted by name (DAVIS ``00000.jpg``, JHMDB ``00001.png``)."""

    def __init__(self, folder: Path, fps: float | None = None) -> None:
        self.path = str(folder)
        self.backend = "frames"
        self.fps = float(fps) if fps else DEFAULT_STILL_FPS
        self._files = list_frame_files(folder)
        if not self._files:
            raise VideoError(folder, f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder")
        stems = [p.stem for p in self._files]
        if all(s.isdigit() for s in stems):
            # numbered frames: a gap means a missing frame, and every later index would be shifted
            numbers = [int(s) for s in stems]
            for a, b, name in zip(numbers, numbers[1:], self._files[1:], strict=False):
                if b != a + 1:
                    raise VideoError(folder, f"frame numbering has a gap: {a} is followed by {b} ({name.name})")
        self._num_frames = len(self._files)
        first = self._files[0]
        try:
            with Image.open(first) as im:
                self.width, self.height = im.size
        except (OSError, SyntaxError) as exc:
            raise VideoError(first, f"corrupt or unreadable image ({exc})") from exc

    def _load(self, path: Path) -> np.ndarray:
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"))
        except FileNotFoundError as exc:
            raise VideoError(path, "frame file has disappeared") from exc
        except (OSError, SyntaxError, ValueError) as exc:  # PIL raises all of these for corrupt images
            raise VideoError(path, f"corrupt or unreadable image ({exc})") from exc
        if rgb.shape[:2] != (self.height, self.width):
            raise VideoError(path, f"frame size {rgb.shape[1]}x{rgb.shape[0]} differs from the first frame's "
                             f"{self.width}x{self.height}")
        return rgb

    def _read_native(self, indices: list[int]) -> np.ndarray:
        return np.stack([self._load(self._files[i]) for i in indices])


# ----------------------------------------------------------------------------------------------- PyAV


class _BadKeyframe(Exception):
    """Decoding from this keyframe gave a frame the decoder flags corrupt: not a clean random-access point."""


class _Overshoot(Exception):
    """A seek to a keyframe's pts landed after that keyframe: seek by its dts from now on."""


class _Untrusted(Exception):
    """Decoded timestamps disagree with the demuxed pts table: switch the file to sequential mode."""


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(path, "no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise VideoError(path, "empty file (0 bytes)")


def _av_open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoError(path, f"not a readable video file ({exc})") from exc


class PyAVReader(VideoReader):
    """Seek-to-keyframe-and-decode-forward reader with frames identified by pts (see module doc)."""

    def __init__(self, path: Path, stream: int | None = None, num_threads: int = 1) -> None:
        _check_file(path)
        self.path = str(path)
        self.backend = "pyav"
        self._stream_pos = 0 if stream is None else int(stream)
        self._num_threads = num_threads
        self._container: Any = None
        self._it: Iterator[Any] | None = None
        self._last = -1  # index of the last frame the live decoder produced
        self._skip_below: int | None = None  # after a seek: drop leading pictures of an open GOP
        self._after_seek = False  # the next decoded frame must be the keyframe sought to
        self._seek_by_dts = False  # set when seeking by pts overshot the keyframe once
        self._run_key: int | None = None  # the keyframe (number) the live decoder started from; None: the start
        self._bad_keys: set[int] = set()  # keyframes that decode to corrupt frames: reads start before them
        self._want_pts: int | None = None  # pts of the next frame asked for: non-reference packets before it skip
        self._skippable: set[int] = set()  # pts of packets sent with skipping on (the decoder may drop them)
        self._reformatter = VideoReformatter()
        self._open_container()
        s = self._stream
        self.height, self.width = int(s.codec_context.height), int(s.codec_context.width)
        self._skip_nonref = s.codec_context.name in SKIP_NONREF_CODECS
        self._build_table()
        if s.average_rate:
            self.fps = float(s.average_rate)
        elif s.guessed_rate:
            self.fps = float(s.guessed_rate)
        else:
            self.fps = DEFAULT_STILL_FPS

    def _open_container(self) -> None:
        self.close()
        path = Path(self.path)
        container = _av_open(path)
        videos = container.streams.video
        if not videos:
            container.close()
            raise VideoError(path, "no video stream")
        if not 0 <= self._stream_pos < len(videos):
            container.close()
            raise VideoError(path, f"video stream {self._stream_pos} requested, the file has {len(videos)}")
        self._container = container
        self._stream = videos[self._stream_pos]
        # one decoder thread by default: data-loader workers already run in parallel
        self._stream.codec_context.thread_count = self._num_threads
        self._stream.codec_context.thread_type = "AUTO" if self._num_threads > 1 else "SLICE"

    def _build_table(self) -> None:
        """Demux (no decoding) for the pts of every frame and the keyframes."""
        path = Path(self.path)
        pts: list[int] = []
        keys: list[tuple[int, int]] = []  # (pts, seek timestamp) of keyframe packets
        have_all_pts = True
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0:  # flush packet, or an AVI "dropped frame" placeholder
                    continue
                if packet.is_corrupt:  # e.g. the cut-off last packet of a truncated file
                    continue
                if packet.pts is None:
                    have_all_pts = False
                    continue
                pts.append(int(packet.pts))
                if packet.is_keyframe:
                    keys.append((int(packet.pts), int(packet.dts if packet.dts is not None else packet.pts)))
        except av.FFmpegError:
            pass  # truncated or damaged tail: frames after it are not in the table, so never promised
        if not pts and have_all_pts:
            raise VideoError(path, "no decodable video packets (empty or corrupt stream)")
        self._pts = sorted(pts)
        self._rank = {p: i for i, p in enumerate(self._pts)}
        keys.sort()
        self._key_ranks = [self._rank[p] for p, _ in keys]
        self._key_pts = [p for p, _ in keys]
        self._key_dts = [ts for _, ts in keys]
        # AVI's index holds decode timestamps: seeking to a B-frame file's keyframe pts overshoots it
        self._seek_by_dts = "avi" in self._container.format.name.split(",")
        self._sequential = not have_all_pts or len(self._rank) != len(self._pts) or not keys
        self._num_frames = len(self._pts)
        if self._sequential:
            self._count_sequential()

    def _count_sequential(self) -> None:
        """Sequential mode: the true frame count is what a full decode produces."""
        self._open_container()
        count = 0
        try:
            for _ in self._container.decode(self._stream):
                count += 1
        except av.FFmpegError:
            pass  # frames decoded before the damage are still valid and counted
        if count == 0:
            raise VideoError(self.path, "no frame could be decoded")
        # never more frames than the demuxed table promised: its count leaves out packets the demuxer
        # flagged corrupt, whose decode would be concealment garbage (and len must not grow after open)
        self._num_frames = min(count, self._num_frames) if self._num_frames else count
        self._sequential = True
        self._it = None
        self._last = -1

    # -- decoding
    def _restart(self, key: int | None) -> None:
        """Fresh decoder positioned at keyframe number ``key`` (None: the start of the file)."""
        if key is None or self._sequential:
            self._open_container()
            self._it = self._decode()
            self._last = -1
            self._skip_below = None
            self._after_seek = not self._sequential
            self._run_key = None
            return
        if self._it is None:
            self._open_container()
        # by pts: the demuxers tried (mp4, mkv) find the keyframe from it, while seeking to its dts lands on the
        # keyframe before it (a whole extra GOP decoded and dropped); a demuxer that overshoots gets the dts
        target = self._key_dts[key] if self._seek_by_dts else self._key_pts[key]
        self._container.seek(target, backward=True, any_frame=False, stream=self._stream)
        self._it = self._decode()
        self._last = self._key_ranks[key] - 1
        self._skip_below = self._pts[self._key_ranks[key]]  # leading pictures of an open GOP
        self._after_seek = True
        self._run_key = key

    def _decode(self) -> Iterator[Any]:
        """Decoded frames from the container's position on, skipping non-reference frames before ``_want_pts``."""
        context = self._stream.codec_context
        skipping = False
        self._skippable.clear()
        for packet in self._container.demux(self._stream):
            if self._skip_nonref and not self._sequential:
                # only packets of the table: a frame the table leaves out (a corrupt packet) must be seen decoded
                pts = packet.pts
                skip = pts is not None and self._want_pts is not None and pts < self._want_pts and pts in self._rank
                if skip:
                    self._skippable.add(pts)
                if skip != skipping:  # set per packet: the decoder reads it when the packet's frame starts
                    context.skip_frame = "NONREF" if skip else "DEFAULT"
                    skipping = skip
            yield from context.decode(packet)
        if skipping:
            context.skip_frame = "DEFAULT"
        yield from context.decode(None)  # drain the frames the decoder still holds

    def _next_frame(self) -> tuple[int, Any] | None:
        """Next decoded frame and its index, or None at the end of the stream."""
        assert self._it is not None
        while True:
            try:
                frame = next(self._it)
            except StopIteration:
                return None
            except av.FFmpegError as exc:
                raise VideoError(self.path, f"decoding failed after frame {self._last} ({exc})") from exc
            if self._sequential:
                self._last += 1
                return self._last, frame
            p = frame.pts
            if self._skip_below is not None:
                if p is not None and p < self._skip_below:
                    continue
                self._skip_below = None
            expected = self._last + 1
            if p is None or expected >= len(self._pts):
                raise _Untrusted
            if self._after_seek and not self._seek_by_dts and p > self._pts[expected] and self._last >= 0:
                raise _Overshoot
            if frame.is_corrupt and self._run_key:
                # a keyframe the container flags but the decoder cannot start from (cockatoo.mp4's IDR at frame
                # 76 decodes corrupt after a seek, clean in a sequential decode): start before it from now on
                raise _BadKeyframe
            if self._pts[expected] != p:
                # a gap must be frames sent to be skipped as non-reference (all before the frame asked for),
                # never the keyframe a seek went to
                rank = self._rank.get(p)
                if (self._after_seek or rank is None or rank < expected
                        or any(self._pts[k] not in self._skippable for k in range(expected, rank))):
                    raise _Untrusted
                self._skippable.difference_update(self._pts[expected:rank])
                expected = rank
            self._skippable.discard(p)
            self._after_seek = False
            self._last = expected
            return expected, frame

    def _read(self, indices: list[int], size: tuple[int, int] | None = None) -> np.ndarray:
        try:
            return self._read_once(indices, size)
        except _Untrusted:
            self._count_sequential()
            bad = [i for i in indices if i >= self._num_frames]
            if bad:
                raise VideoError(self.path, f"frames {bad[0]}.. could not be decoded; the stream decodes "
                                 f"to {self._num_frames} frames") from None
            return self._read_once(indices, size)

    def _start_key(self, target: int) -> int:
        """The keyframe (number; -1: none) to decode ``target`` from: the last one at or before it that is clean."""
        key = bisect.bisect_right(self._key_ranks, target) - 1
        while key > 0 and key in self._bad_keys:
            key -= 1
        return key

    def _rgb(self, frame: Any, size: tuple[int, int] | None) -> np.ndarray:
        if size is None:
            return self._reformatter.reformat(frame, format="rgb24").to_ndarray()
        h, w = size
        shrink = h * w < self.height * self.width
        return self._reformatter.reformat(frame, format="rgb24", width=w, height=h, interpolation=(
            Interpolation.AREA if shrink else Interpolation.BILINEAR)).to_ndarray()

    def _read_once(self, indices: list[int], size: tuple[int, int] | None = None) -> np.ndarray:
        h, w = size or (self.height, self.width)
        out = np.empty((len(indices), h, w, 3), dtype=np.uint8)
        for j, target in enumerate(indices):
            self._want_pts = None if self._sequential else self._pts[target]
            if self._sequential:
                if self._it is None or self._last >= target:
                    self._restart(None)
            else:
                key = self._start_key(target)
                key_rank = self._key_ranks[key] if key >= 0 else 0
                # continue the live decoder when no keyframe lies between it and the target
                if self._it is None or self._last >= target or key_rank > self._last + 1:
                    self._restart(key if key >= 0 else None)
            while True:
                try:
                    got = self._next_frame()
                except _Overshoot:
                    self._seek_by_dts = True
                    self._restart(self._start_key(target))
                    continue
                except _BadKeyframe:
                    assert self._run_key is not None
                    self._bad_keys.add(self._run_key)
                    key = self._start_key(target)
                    self._restart(key if key > 0 else None)
                    continue
                if got is None:
                    self._it = None
                    raise VideoError(self.path, f"frame {target} could not be decoded (truncated or corrupt "
                                     f"file; the stream lists {len(self)} frames)")
                i, frame = got
                if i == target:
                    if (frame.height, frame.width) != (self.height, self.width):
                        raise VideoError(self.path, f"frame {i} has size {frame.width}x{frame.height}, "
                                         f"the stream {self.width}x{self.height} (resolution changes)")
                    out[j] = self._rgb(frame, size)
                    break
        return out

    def close(self) -> None:
        self._it = None
        if getattr(self, "_container", None) is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None


# --------------------------------------------------------------------------------------------- decord


class DecordReader(VideoReader):
    """decord, used only after the checks in :func:`_open_decord` passed for this file."""

    def __init__(self, vr: Any, probe: PyAVReader) -> None:
        self._vr = vr
        self.path, self.fps, self.height, self.width = probe.path, probe.fps, probe.height, probe.width
        self._num_frames = len(probe)
        self.backend = "decord"

    def _read_native(self, indices: list[int]) -> np.ndarray:
        try:
            return np.asarray(self._vr.get_batch(indices).asnumpy())
        except Exception as exc:  # decord raises its own DECORDError for damaged data
            raise VideoError(self.path, f"decord failed to decode frames {indices[0]}..{indices[-1]} ({exc})") from exc

    def close(self) -> None:
        self._vr = None


def _decord_probe_indices(n: int, key_ranks: list[int]) -> list[int]:
    """Frames to check decord's seeking on, in decreasing order (each read a backward seek).

    A few early frames plus, for the first keyframes after frame 0, the keyframe and the two frames
    before it (open-GOP leading pictures are where decord goes wrong); all within the first 120 frames so
    the check stays cheap.
    """
    top = min(n, 48) - 1
    probes = {top, top // 2, min(1, top)}
    for k in [k for k in key_ranks if 0 < k < min(n, 120)][:2]:
        probes.update(i for i in (k - 2, k - 1, k) if i >= 0)
    return sorted(probes, reverse=True)


def _open_decord(path: Path, stream: int | None, num_threads: int) -> VideoReader:
    probe = PyAVReader(path, stream=stream, num_threads=num_threads)  # raises VideoError on bad files
    if probe._sequential:
        return probe  # timestamps unusable: only a counted sequential decode is exact
    try:
        import decord
    except ImportError:
        return probe
    try:
        vr = decord.VideoReader(str(path), num_threads=num_threads)
        # decord picks the "best" video stream and cannot be pointed at another: accept it only when it
        # decodes the stream asked for (same size and frame count)
        first = vr[0].asnumpy()
        if len(vr) != len(probe) or first.shape != (probe.height, probe.width, 3):
            return probe
        probes = _decord_probe_indices(len(vr), probe._key_ranks)
        random = [vr[i].asnumpy() for i in probes]
        vr.seek(0)
        sequential = vr.get_batch(list(range(max(probes) + 1))).asnumpy()
        if not all(np.array_equal(f, sequential[i]) for f, i in zip(random, probes, strict=True)):
            return probe  # decord's seeking is wrong on this file (e.g. h265_video.mp4)
        vr.seek(0)
    except Exception:
        return probe
    reader = DecordReader(vr, probe)
    probe.close()
    return reader


# ----------------------------------------------------------------------------------------------- open


def open_video(
    source: str | Path | np.ndarray,
    backend: str = "auto",
    stream: int | None = None,
    num_threads: int = 1,
    fps: float | None = None,
) -> VideoReader:
    """Open a video file, a folder of frames or a uint8 ``(T, H, W, 3)`` array.

    ``stream`` is the position among the file's video streams (default: the first). ``fps`` applies to
    frame folders and arrays only. ``backend``: "auto", "decord", "pyav", "frames" or "array".
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if isinstance(source, np.ndarray):
        if backend not in ("auto", "array"):
            raise ValueError(f"an array source needs backend 'array' or 'auto', not {backend!r}")
        return ArrayReader(source, fps=fps)
    path = Path(source)
    _check_file(path)
    if path.is_dir():
        if backend not in ("auto", "frames"):
            raise VideoError(path, f"is a folder of frames; backend {backend!r} reads video files")
        return FrameFolderReader(path, fps=fps)
    if backend == "frames":
        raise VideoError(path, "backend 'frames' needs a folder of images")
    if backend == "array":
        raise VideoError(path, "backend 'array' needs an in-memory array")
    if backend == "decord":
        return _open_decord(path, stream, num_threads)
    return PyAVReader(path, stream=stream, num_threads=num_threads)
