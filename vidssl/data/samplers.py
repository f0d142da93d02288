"""Pure clip and frame samplers: ``(num_frames, rng, ...) -> frame indices``.

Every sampler is a function of the video length and a ``numpy.random.Generator`` (deterministic given the
generator's state) and returns ``int64`` frame indices in ``[0, num_frames)``. Nothing here decodes video.

Short videos
------------
A video shorter than a sampler needs follows one policy, chosen by ``short`` (default
:data:`DEFAULT_SHORT` = ``"repeat"``):

- ``"repeat"``: sample as if the video had exactly the needed length, then clamp each index to the last
  frame (the clip ends in a freeze frame). The default, because it never invents a scene cut.
- ``"loop"``: sample as if the video had exactly the needed length, then wrap each index (``i % n``).
- ``"skip"``: raise :class:`ClipTooShort` saying how many frames were needed and available.

"Needed" is the fixed span of the request (for random gaps: the largest span the gap law allows), so the
policy never depends on the random draw. ``num_frames <= 0`` is always an error.

Shot detection and motion scores, which read pixels, live in :mod:`vidssl.data.shots` and
:mod:`vidssl.data.motion`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np

ShortPolicy = Literal["loop", "repeat", "skip"]
DEFAULT_SHORT: ShortPolicy = "repeat"
"""The one default short-video policy of every sampler (see the module docstring)."""

Shot = tuple[int, int]
"""A shot as a half-open frame range ``(start, end)``."""

__all__ = [
    "DEFAULT_SHORT",
    "ClipTooShort",
    "NoValidWindow",
    "ShortPolicy",
    "Shot",
    "block_grid",
    "clip_sequence",
    "decreasing_gap_clips",
    "decreasing_gap_pair",
    "decreasing_gap_probs",
    "frame_pair",
    "frames_within_shot",
    "gap_tuple",
    "independent_clips",
    "odd_one_out_clips",
    "ordered_tuple",
    "pseudo_shots",
    "random_clip",
    "shots_within_video",
    "shuffle_and_learn_tuples",
    "uniform_clips",
    "window_weights",
]


class ClipTooShort(ValueError):
    """A sampler with ``short="skip"`` was given a video (or shot list) shorter than it needs."""

    def __init__(self, sampler: str, needed: int, available: int, unit: str = "frames") -> None:
        self.sampler = sampler
        self.needed = needed
        self.available = available
        self.unit = unit
        super().__init__(f"{sampler}: needs {needed} {unit}, only {available} available (short='skip')")

    def __reduce__(self) -> tuple[type[ClipTooShort], tuple[str, int, int, str]]:
        # survive pickling between data-loader worker processes with all four fields
        return (type(self), (self.sampler, self.needed, self.available, self.unit))


class NoValidWindow(ClipTooShort):
    """No window of the video meets a sampler's shot and motion constraints (a window inside one shot, without
    static transitions): the dataset skips and reports the video, as one that is too short."""

    def __init__(self, sampler: str, needed: int, reason: str) -> None:
        ValueError.__init__(self, f"{sampler}: no window of {needed} frames {reason}")
        self.sampler, self.needed, self.available, self.unit, self.reason = sampler, needed, 0, "frames", reason

    def __reduce__(self) -> tuple[type[NoValidWindow], tuple[str, int, str]]:  # type: ignore[override]
        return (type(self), (self.sampler, self.needed, self.reason))


# ---------------------------------------------------------------------------------------------------------
# Checks and the short-video policy


def _count(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` or a ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _timeline(sampler: str, num_frames: int, needed: int, short: str, unit: str = "frames") -> int:
    """The length to sample on: ``num_frames``, or ``needed`` for a short video under loop/repeat."""
    if short not in get_args(ShortPolicy):
        raise ValueError(f"{sampler}: short must be one of {list(get_args(ShortPolicy))}, got {short!r}")
    if isinstance(num_frames, (bool, np.bool_)) or not isinstance(num_frames, (int, np.integer)):
        raise ValueError(f"{sampler}: num_frames must be an integer, got {num_frames!r}")
    if num_frames <= 0:
        raise ValueError(f"{sampler}: num_frames must be positive, got {num_frames}")
    if num_frames >= needed:
        return int(num_frames)
    if short == "skip":
        raise ClipTooShort(sampler, needed, int(num_frames), unit)
    return needed


def _fit(indices: np.ndarray, num_frames: int, short: str) -> np.ndarray:
    """Indices drawn on the (possibly longer) timeline mapped into ``[0, num_frames)`` as int64."""
    indices = np.asarray(indices, dtype=np.int64)
    if short == "loop":
        return indices % num_frames
    return np.minimum(indices, num_frames - 1)  # "repeat"; a no-op when the video was long enough


def _span(length: int, stride: int) -> int:
    """Frames covered by ``length`` frames at ``stride``: first to last inclusive."""
    return (length - 1) * stride + 1


# ---------------------------------------------------------------------------------------------------------
# Clips


def random_clip(
    num_frames: int,
    rng: np.random.Generator,
    length: int,
    stride: int = 1,
    short: ShortPolicy = DEFAULT_SHORT,
) -> np.ndarray:
    """One clip of ``length`` frames at ``stride``, its start uniform over all valid starts. ``(length,)``."""
    length, stride = _count("length", length), _count("stride", stride)
    span = _span(length, stride)
    n = _timeline("random_clip", num_frames, span, short)
    start = rng.integers(0, n - span + 1)
    return _fit(start + np.arange(length) * stride, num_frames, short)


def uniform_clips(
    num_frames: int,
    num_clips: int,
    length: int,
    stride: int = 1,
    short: ShortPolicy = DEFAULT_SHORT,
) -> np.ndarray:
    """Evenly spaced clips for evaluation (no randomness). ``(num_clips, length)``.

    Starts are ``round(linspace(0, last_start, num_clips))`` (halves round up), so the first and last
    clips touch the ends of the video; a single clip is the centre one (start ``last_start // 2``).
    """
    num_clips = _count("num_clips", num_clips)
    length, stride = _count("length", length), _count("stride", stride)
    span = _span(length, stride)
    last_start = _timeline("uniform_clips", num_frames, span, short) - span
    if num_clips == 1:
        starts = np.array([last_start // 2], dtype=np.int64)
    else:
        starts = np.floor(np.linspace(0, last_start, num_clips) + 0.5).astype(np.int64)
    return _fit(starts[:, None] + np.arange(length) * stride, num_frames, short)


def independent_clips(
    num_frames: int,
    rng: np.random.Generator,
    num_clips: int,
    length: int,
    stride: int = 1,
    short: ShortPolicy = DEFAULT_SHORT,
) -> np.ndarray:
    """``num_clips`` clips with i.i.d. uniform starts over the whole video. ``(num_clips, length)``.

    As in rho-MoCo / rho-BYOL (Feichtenhofer et al. 2021, https://arxiv.org/abs/2104.14558): the clips of
    one video are positives for each other and may overlap or coincide.
    """
    num_clips = _count("num_clips", num_clips)
    length, stride = _count("length", length), _count("stride", stride)
    span = _span(length, stride)
    n = _timeline("independent_clips", num_frames, span, short)
    starts = rng.integers(0, n - span + 1, size=num_clips)
    return _fit(starts[:, None] + np.arange(length) * stride, num_frames, short)


def block_grid(
    num_frames: int,
    rng: np.random.Generator,
    num_blocks: int = 8,
    block_len: int = 5,
    stride: int = 3,
    short: ShortPolicy = DEFAULT_SHORT,
) -> np.ndarray:
    """Contiguous blocks for predictive coding (DPC: 8 blocks of 5 frames at stride 3). ``(num_blocks, block_len)``.

    The blocks tile one run of ``num_blocks * block_len`` frames at ``stride`` with no gaps, so block k+1
    starts ``stride`` frames after block k ends. The start is uniform over every valid start (DPC's code
    leaves out the last one, an off-by-one we do not copy).
    """
    num_blocks, block_len = _count("num_blocks", num_blocks), _count("block_len", block_len)
    stride = _count("stride", stride)
    total = num_blocks * block_len
    span = _span(total, stride)
    n = _timeline("block_grid", num_frames, span, short)
    start = rng.integers(0, n - span + 1)
    return _fit(start + np.arange(total) * stride, num_frames, short).reshape(num_blocks, block_len)


# ---------------------------------------------------------------------------------------------------------
# Frame pairs and tuples


def gap_tuple(
    num_frames: int,
    rng: np.random.Generator,
    size: int = 2,
    gaps: Sequence[int] = (2, 5, 8),
    probs: Sequence[float] = (0.4, 0.4, 0.2),
    short: ShortPolicy = DEFAULT_SHORT,
) -> np.ndarray:
    """``size`` increasing frames whose consecutive gaps are i.i.d. draws from ``gaps`` with ``probs``. ``(size,)``.

    Defaults are MAST's reference/target gaps {2, 5, 8} with probabilities {0.4, 0.4, 0.2}. Given the
    drawn gaps, the first frame is uniform over all starts that fit. The short-video policy applies below
    ``(size - 1) * max(gaps) + 1`` frames, so the gap law itself never depends on the video's length.
    """
    size = _count("size", size)
    gap_values = np.asarray(gaps, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if gap_values.ndim != 1 or gap_values.size == 0 or np.any(gap_values < 1):
        raise ValueError(f"gap_tuple: gaps must be a non-empty list of positive integers, got {gaps!r}")
    if p.shape != gap_values.shape:
        raise ValueError(f"gap_tuple: {len(p)} probs for {len(gap_values)} gaps")
    if np.any(p < 0) or abs(p.sum() - 1.0) > 1e-6:
        raise ValueError(f"gap_tuple: probs must be non-negative and sum to 1, got {probs!r}")
    needed = (size - 1) * int(gap_values.max()) + 1
    n = _timeline("gap_tuple", num_frames, needed, short)
    steps = rng.choice(gap_values, size=size - 1, p=p)
    offsets = np.concatenate([[0], np.cumsum(steps)])
    start = rng.integers(0, n - offsets[-1])
    return _fit(start + offsets, num_frames, short)


def frame_pair(
    num_frames: int, rng: np.random.Generator, max_gap: int, short: ShortPolicy = DEFAULT_SHORT
) -> np.ndarray:
    """Two increasing frames whose distance is uniform in ``1..max_gap`` (frame-level MoCo's positives). ``(2,)``.

    Videos shorter than ``max_gap + 1`` frames follow the short-video policy.
    """
    max_gap = _count("max_gap", max_gap)
    return gap_tuple(num_frames, rng, size=2, gaps=list(range(1, max_gap + 1)), probs=[1.0 / max_gap] * max_gap,
                     short=short)


def decreasing_gap_probs(max_gap: int) -> np.ndarray:
    """CVRL's law of the gap between two clip starts, over gaps ``0..max_gap``. ``(max_gap + 1,)``.

    CVRL (Qian et al. 2021, https://arxiv.org/abs/2008.03800) draws the gap from a density that decreases
    linearly to zero. Its code (tensorflow/models, ``video_ssl`` ``sample_ssl_sequence``) draws a real
    ``k`` with density ``2 (M - k) / M^2`` on ``[0, M]``, ``M`` = number of valid starts, by bisecting the
    CDF, and uses ``floor(k)``. That floor has exactly ``P(d) = (2 (M - d) - 1) / M^2`` for ``d < M``; we
    sample this law directly (no bisection) with ``M = max_gap + 1``.
    """
    max_gap = _count("max_gap", max_gap, minimum=0)
    m = max_gap + 1
    d = np.arange(m, dtype=np.float64)
    return (2.0 * (m - d) - 1.0) / (m * m)


def _decreasing_gap_starts(num_starts: int, rng: np.random.Generator, max_gap: int) -> np.ndarray:
    """Two starts in ``[0, num_starts)`` at a CVRL-distributed gap, in random order. ``(2,)``."""
    gap = int(rng.choice(max_gap + 1, p=decreasing_gap_probs(max_gap)))
    first = int(rng.integers(0, num_starts - gap))
    pair = np.array([first, first + gap], dtype=np.int64)
    # CVRL shuffles the two clips so that neither view is systematically the earlier one.
    return pair[::-1].copy() if rng.random() < 0.5 else pair


def decreasing_gap_pair(
    num_frames: int,
    rng: np.random.Generator,
    max_gap: int | None = None,
    short: ShortPolicy = DEFAULT_SHORT,
) -> np.ndarray:
    """Two frames whose distance follows :func:`decreasing_gap_probs`, in random order. ``(2,)``.

    ``max_gap=None`` allows every gap the video has (``num_frames - 1``), as CVRL does; given the gap the
    earlier frame is uniform over the positions that fit. An explicit ``max_gap`` needs ``max_gap + 1``
    frames. (CVRL itself samples two independent starts on a looped video when the video is too short;
    here the one short-video policy applies instead.)
    """
    if max_gap is None:
        _timeline("decreasing_gap_pair", num_frames, 1, short)
        max_gap = int(num_frames) - 1
    max_gap = _count("max_gap", max_gap, minimum=0)
    n = _timeline("decreasing_gap_pair", num_frames, max_gap + 1, short)
    return _fit(_decreasing_gap_starts(n, rng, max_gap), num_frames, short)


def decreasing_gap_clips(
    num_frames: int,
    rng: np.random.Generator,
    length: int,
    stride: int = 1,
    max_gap: int | None = None,
    short: ShortPolicy = DEFAULT_SHORT,
) -> np.ndarray:
    """CVRL's two clips: starts at a :func:`decreasing_gap_probs` distance. ``(2, length)``.

    ``max_gap=None`` allows every gap between valid starts (``num_frames - span``), as CVRL does.
    """
    length, stride = _count("length", length), _count("stride", stride)
    span = _span(length, stride)
    if max_gap is None:
        n = _timeline("decreasing_gap_clips", num_frames, span, short)
        max_gap = n - span
    max_gap = _count("max_gap", max_gap, minimum=0)
    n = _timeline("decreasing_gap_clips", num_frames, span + max_gap, short)
    starts = _decreasing_gap_starts(n - span + 1, rng, max_gap)
    return _fit(starts[:, None] + np.arange(length) * stride, num_frames, short)


def _check_motion(motion: np.ndarray | Sequence[float], num_frames: int, sampler: str = "ordered_tuple") -> np.ndarray:
    m = np.asarray(motion, dtype=np.float64)
    if m.shape != (num_frames - 1,):
        raise ValueError(
            f"{sampler}: motion must have one score per pair of consecutive frames, shape "
            f"({num_frames - 1},), got {m.shape}"
        )
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError(f"{sampler}: motion scores must be finite and non-negative")
    return m


def _window_sums(values: np.ndarray, window: int, starts: int) -> np.ndarray:
    """Sums of ``values`` over the ``window - 1`` transitions of each window start ``0..starts-1``."""
    csum = np.concatenate([[0.0], np.cumsum(values)])
    return np.asarray(csum[window - 1 : window - 1 + starts] - csum[:starts])


def window_weights(
    num_frames: int,
    window: int,
    motion: np.ndarray | Sequence[float] | None = None,
    shots: Sequence[Shot] | None = None,
    min_motion: float = 0.0,
    sampler: str = "window_weights",
) -> np.ndarray:
    """The probability of each start of a ``window``-frame window, ``(num_frames - window + 1,)``; all zero when no
    window qualifies.

    A window qualifies when it lies inside one shot (``shots``: half-open ranges, e.g. from
    :func:`vidssl.data.shots.detect_shots`; frames in no shot belong to no window) and, with ``min_motion > 0``,
    when none of its transitions moves less than ``min_motion`` (no static frames: Wei et al. 2018 keep such clips
    only). Qualifying windows are weighted by their summed ``motion`` (``(num_frames - 1,)`` scores of consecutive
    frames; high-motion windows, Misra et al. 2016), uniformly when no motion is given or all of them score zero.
    """
    starts = num_frames - window + 1
    if starts < 1:
        return np.zeros(0)
    valid = np.ones(starts, dtype=bool)
    if shots is not None:
        shot_of = np.full(num_frames, -1, dtype=np.int64)
        for k, (a, b) in enumerate(_check_shots(sampler, shots)):
            shot_of[a:min(b, num_frames)] = k
        valid &= (shot_of[:starts] >= 0) & (shot_of[:starts] == shot_of[window - 1 :])
    weight = valid.astype(np.float64)
    if motion is not None:
        m = _check_motion(motion, num_frames, sampler)
        if min_motion > 0 and window > 1:
            valid &= _window_sums((m < min_motion).astype(np.float64), window, starts) == 0
        sums = _window_sums(m, window, starts) * valid
        weight = sums if sums.sum() > 0 else valid.astype(np.float64)
    elif min_motion > 0:
        raise ValueError(f"{sampler}: min_motion needs motion scores")
    total = weight.sum()
    return weight / total if total > 0 else weight


def _pick_window(
    sampler: str, num_frames: int, window: int, rng: np.random.Generator, motion: np.ndarray | Sequence[float] | None,
    shots: Sequence[Shot] | None, min_motion: float,
) -> int:
    """The start of a window drawn by :func:`window_weights`, or :class:`NoValidWindow`."""
    p = window_weights(num_frames, window, motion, shots, min_motion, sampler)
    if p.sum() == 0:
        what = [w for w, on in (("inside one shot", shots is not None),
                                (f"with motion >= {min_motion} at every transition", min_motion > 0)) if on]
        raise NoValidWindow(sampler, window, " and ".join(what) or "fits")
    return int(rng.choice(len(p), p=p))


def ordered_tuple(
    num_frames: int,
    rng: np.random.Generator,
    size: int = 5,
    max_span: int | None = None,
    motion: np.ndarray | Sequence[float] | None = None,
    short: ShortPolicy = DEFAULT_SHORT,
    shots: Sequence[Shot] | None = None,
    min_motion: float = 0.0,
) -> np.ndarray:
    """``size`` strictly increasing frames ``a < b < c < d < e`` from one window (Shuffle and Learn). ``(size,)``.

    A window of ``W = min(max_span, num_frames)`` consecutive frames is chosen (``max_span=None``: the
    whole video), then ``size`` distinct frames uniformly inside it, sorted. Window rule: without
    ``motion`` the window start is uniform; with ``motion`` (``(num_frames - 1,)`` scores of consecutive
    frame pairs, e.g. :func:`vidssl.data.motion.motion_scores`) a window ``[w, w + W)`` is chosen with
    probability proportional to the summed motion of its ``W - 1`` transitions, i.e. to its mean motion,
    and uniformly if every window scores zero. Misra et al. 2016 (https://arxiv.org/abs/1603.08561) sample
    from high-motion windows measured by optical flow. With ``shots`` the window lies inside one shot, with
    ``min_motion`` it has no static transition (:func:`window_weights`); a video without such a window raises
    :class:`NoValidWindow` (the dataset skips and reports it).

    Videos with fewer than ``size`` frames follow ``short``; ``"loop"`` is refused because wrapping would
    destroy the temporal order the tuple exists for, and ``"repeat"`` yields a non-decreasing tuple.
    """
    size = _count("size", size, minimum=2)
    if short == "loop":
        raise ValueError("ordered_tuple: short='loop' would break temporal order; use 'repeat' or 'skip'")
    n = _timeline("ordered_tuple", num_frames, size, short)
    window = n if max_span is None else min(_count("max_span", max_span, minimum=size), n)
    starts = n - window + 1
    if (motion is None and shots is None) or n > num_frames:  # a padded short video has no motion to weigh
        w = int(rng.integers(0, starts))
    else:
        w = _pick_window("ordered_tuple", num_frames, window, rng, motion, shots, min_motion)
    picks = np.sort(rng.choice(window, size=size, replace=False))
    return _fit(w + picks, num_frames, short)


def clip_sequence(
    num_frames: int,
    rng: np.random.Generator,
    num_clips: int = 1,
    length: int = 16,
    stride: int = 1,
    gap: int = 0,
    motion: np.ndarray | Sequence[float] | None = None,
    shots: Sequence[Shot] | None = None,
    min_motion: float = 0.0,
    short: ShortPolicy = DEFAULT_SHORT,
) -> np.ndarray:
    """``num_clips`` consecutive clips of ``length`` frames at ``stride``, ``gap`` frames between the last frame of
    one and the first of the next, in temporal order. ``(num_clips, length)``.

    VCOP (Xu et al. 2019): 3 clips of 16 frames, gap 8; the arrow of time (Wei et al. 2018): one clip. The
    whole run is one window drawn by :func:`window_weights` (inside one shot, without static transitions,
    weighted by motion, as given). ``short="loop"`` is refused: wrapping would break the order the clips exist
    for; a padded short video ignores motion and shots.
    """
    num_clips, length = _count("num_clips", num_clips), _count("length", length)
    stride, gap = _count("stride", stride), _count("gap", gap, minimum=0)
    if short == "loop":
        raise ValueError("clip_sequence: short='loop' would break temporal order; use 'repeat' or 'skip'")
    clip_span = _span(length, stride)
    span = num_clips * clip_span + (num_clips - 1) * gap
    n = _timeline("clip_sequence", num_frames, span, short)
    if n > num_frames or (motion is None and shots is None):
        start = int(rng.integers(0, n - span + 1))
    else:
        start = _pick_window("clip_sequence", num_frames, span, rng, motion, shots, min_motion)
    first = start + np.arange(num_clips) * (clip_span + gap)
    return _fit(first[:, None] + np.arange(length) * stride, num_frames, short)


def odd_one_out_clips(
    num_frames: int,
    rng: np.random.Generator,
    num_clips: int = 6,
    length: int = 6,
    stride: int = 1,
    window: int | None = None,
    motion: np.ndarray | Sequence[float] | None = None,
    shots: Sequence[Shot] | None = None,
    min_motion: float = 0.0,
    short: ShortPolicy = DEFAULT_SHORT,
) -> np.ndarray:
    """O3N's N + 1 related subsequences (Fernando et al. 2017): ``num_clips`` clips of ``length`` frames at ``stride``,
    each in temporal order, their starts independent and uniform inside one window of ``window`` frames (None: the
    whole video) drawn by :func:`window_weights`. ``(num_clips, length)``; the method shuffles the odd one."""
    num_clips, length, stride = _count("num_clips", num_clips), _count("length", length), _count("stride", stride)
    if short == "loop":
        raise ValueError("odd_one_out_clips: short='loop' would break temporal order; use 'repeat' or 'skip'")
    span = _span(length, stride)
    n = _timeline("odd_one_out_clips", num_frames, span, short)
    w = n if window is None else min(_count("window", window, minimum=span), n)
    if n > num_frames or (motion is None and shots is None):
        start = int(rng.integers(0, n - w + 1))
    else:
        start = _pick_window("odd_one_out_clips", num_frames, w, rng, motion, shots, min_motion)
    starts = start + rng.integers(0, w - span + 1, size=num_clips)
    return _fit(starts[:, None] + np.arange(length) * stride, num_frames, short)


def shuffle_and_learn_tuples(frames: np.ndarray | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Shuffle and Learn triplets from an ordered 5-tuple ``(a, b, c, d, e)``.

    Returns ``(positives, negatives)``, each ``(2, 3)`` int64: positives ``(b, c, d)`` and ``(d, c, b)``
    (in order, either direction), negatives ``(b, a, d)`` and ``(b, e, d)`` (middle frame out of order).
    """
    f = np.asarray(frames, dtype=np.int64)
    if f.shape != (5,):
        raise ValueError(f"shuffle_and_learn_tuples: expected 5 frames (a, b, c, d, e), got shape {f.shape}")
    a, b, c, d, e = f
    positives = np.array([[b, c, d], [d, c, b]], dtype=np.int64)
    negatives = np.array([[b, a, d], [b, e, d]], dtype=np.int64)
    return positives, negatives


# ---------------------------------------------------------------------------------------------------------
# Shots (VIVI)


def _check_shots(sampler: str, shots: Sequence[Shot]) -> list[Shot]:
    """Shots as a list of ``(start, end)`` ints, non-empty, each non-empty, in order and disjoint."""
    out: list[Shot] = []
    for i, shot in enumerate(shots):
        try:
            start, end = (int(v) for v in shot)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{sampler}: shot {i} is not a (start, end) pair: {shot!r}") from exc
        if start < 0 or end <= start:
            raise ValueError(f"{sampler}: shot {i} = ({start}, {end}) is empty or negative")
        if out and start < out[-1][1]:
            raise ValueError(f"{sampler}: shot {i} = ({start}, {end}) overlaps or precedes shot {i - 1}")
        out.append((start, end))
    if not out:
        raise ValueError(f"{sampler}: no shots given")
    return out


def frames_within_shot(
    shots: Sequence[Shot],
    rng: np.random.Generator,
    num: int = 2,
    shot: int | None = None,
    short: ShortPolicy = DEFAULT_SHORT,
) -> np.ndarray:
    """``num`` distinct frames of one shot, sorted (frame-level positives, VIVI). ``(num,)``.

    ``shots`` are half-open ranges as from :func:`vidssl.data.shots.detect_shots`. The shot is ``shot``
    or, when None, uniform over the shots (not over frames, so short shots are not under-sampled); the
    frames are uniform without replacement inside it. A shot with fewer than ``num`` frames follows
    ``short``.
    """
    checked = _check_shots("frames_within_shot", shots)
    num = _count("num", num)
    if shot is None:
        index = int(rng.integers(0, len(checked)))
    elif not -len(checked) <= shot < len(checked):
        raise ValueError(f"frames_within_shot: shot {shot} out of range for {len(checked)} shots")
    else:
        index = shot
    start, end = checked[index]
    n = _timeline("frames_within_shot", end - start, num, short)
    picks = np.sort(rng.choice(n, size=num, replace=False))
    return start + _fit(picks, end - start, short)


def pseudo_shots(shots: Sequence[Shot], length: int) -> list[Shot]:
    """Every shot longer than ``length`` frames cut into consecutive pseudo-shots of ``length`` (the last one takes
    the remainder when that is at least half a pseudo-shot, else it joins the one before): what VIVI's shot level
    uses for a video without cuts."""
    length = _count("length", length)
    out: list[Shot] = []
    for start, end in _check_shots("pseudo_shots", shots):
        cuts = list(range(start, end, length))
        if len(cuts) > 1 and end - cuts[-1] < (length + 1) // 2:
            cuts.pop()
        out.extend((a, b) for a, b in zip(cuts, [*cuts[1:], end], strict=True))
    return out


def shots_within_video(
    shots: Sequence[Shot],
    rng: np.random.Generator,
    num_shots: int = 4,
    frames_per_shot: int = 2,
    short: ShortPolicy = DEFAULT_SHORT,
) -> np.ndarray:
    """A run of ``num_shots`` consecutive shots, ``frames_per_shot`` frames in each. ``(num_shots, frames_per_shot)``.

    For VIVI's video level (shot order prediction): the first shot of the run is uniform over the runs
    that fit; row k holds sorted frames of the k-th shot, so rows are in temporal order. A video with
    fewer shots than ``num_shots`` follows ``short`` over shots (``"repeat"`` repeats the last shot,
    ``"loop"`` wraps to the first); within a shot, :func:`frames_within_shot` applies. VIVI has no public
    code; these defaults are not claimed to be the paper's.
    """
    checked = _check_shots("shots_within_video", shots)
    num_shots = _count("num_shots", num_shots)
    n = _timeline("shots_within_video", len(checked), num_shots, short, unit="shots")
    first = int(rng.integers(0, n - num_shots + 1))
    chosen = _fit(first + np.arange(num_shots), len(checked), short)
    rows = [frames_within_shot(checked, rng, frames_per_shot, shot=int(k), short=short) for k in chosen]
    return np.stack(rows)
