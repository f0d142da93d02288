"""Samplers: distributions checked by chi-square on many seeded draws, plus exact edge cases."""

from __future__ import annotations

import itertools
import math
import pickle
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from vidssl.data.samplers import (
    DEFAULT_SHORT,
    ClipTooShort,
    block_grid,
    decreasing_gap_clips,
    decreasing_gap_pair,
    decreasing_gap_probs,
    frames_within_shot,
    gap_tuple,
    independent_clips,
    ordered_tuple,
    random_clip,
    shots_within_video,
    shuffle_and_learn_tuples,
    uniform_clips,
)

DRAWS = 20_000


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def assert_follows(values: np.ndarray, probs: np.ndarray, support: np.ndarray | None = None) -> None:
    """Chi-square goodness of fit of integer ``values`` to ``probs`` over ``support`` (default 0..K-1).

    With a fixed seed the test is deterministic; p > 1e-4 passes a right law, while an off-by-one start or a
    wrong gap law moves thousands of draws and gives p ~ 0. Values outside the support fail outright.
    """
    support = np.arange(len(probs)) if support is None else support
    assert np.isin(values, support).all(), f"values outside the support: {np.setdiff1d(values, support)}"
    observed = np.array([(values == s).sum() for s in support], dtype=np.float64)
    keep = probs > 0
    assert observed[~keep].sum() == 0, "draws on zero-probability values"
    expected = probs[keep] / probs[keep].sum() * observed.sum()
    p = stats.chisquare(observed[keep], expected).pvalue
    assert p > 1e-4, f"chi-square p = {p:.2e}\nobserved {observed}\nexpected {expected}"


def uniform(k: int) -> np.ndarray:
    return np.full(k, 1.0 / k)


# ---------------------------------------------------------------------------------------------------------
# random_clip, uniform_clips, independent_clips, block_grid


def test_random_clip_start_uniform_over_all_valid_starts() -> None:
    g = rng(1)
    clips = np.stack([random_clip(20, g, length=4, stride=3) for _ in range(DRAWS)])
    assert clips.dtype == np.int64 and clips.shape == (DRAWS, 4)
    assert (np.diff(clips, axis=1) == 3).all()
    assert_follows(clips[:, 0], uniform(11))  # span 10 -> starts 0..10, the last one included


def test_random_clip_deterministic_given_rng() -> None:
    a = [random_clip(100, rng(7), 8, 2) for _ in range(3)]
    assert all((x == a[0]).all() for x in a)
    g = rng(7)
    assert not all((random_clip(100, g, 8, 2) == random_clip(100, g, 8, 2)).all() for _ in range(5))


def test_random_clip_exact_fit_has_one_start() -> None:
    assert random_clip(10, rng(), 4, stride=3).tolist() == [0, 3, 6, 9]


def test_uniform_clips_evenly_spaced() -> None:
    out = uniform_clips(100, 3, length=8, stride=2)  # span 15, last start 85
    assert out.shape == (3, 8) and out.dtype == np.int64
    assert out[:, 0].tolist() == [0, 43, 85]  # 42.5 rounds up
    assert out[2, -1] == 99
    assert uniform_clips(100, 1, length=8, stride=2)[0, 0] == 42  # single clip: the centre one
    assert (uniform_clips(10, 4, length=10) == np.arange(10)).all()


def test_independent_clips_uniform_and_independent() -> None:
    g = rng(2)
    starts = np.stack([independent_clips(6, g, num_clips=2, length=2)[:, 0] for _ in range(DRAWS)])
    # 5 valid starts each; the joint law of the two starts is uniform over 25 cells.
    assert_follows(starts[:, 0] * 5 + starts[:, 1], uniform(25))
    clips = independent_clips(50, rng(), 4, 8, stride=2)
    assert clips.shape == (4, 8) and (np.diff(clips, axis=1) == 2).all()


def test_block_grid_contiguous_and_uniform() -> None:
    g = rng(3)
    out = block_grid(125, g)  # DPC: 8 x 5 at stride 3 spans 118 frames -> 8 starts
    assert out.shape == (8, 5)
    assert (np.diff(out.reshape(-1)) == 3).all()
    starts = np.array([block_grid(125, g)[0, 0] for _ in range(8000)])
    assert_follows(starts, uniform(8))


# ---------------------------------------------------------------------------------------------------------
# Short-video policy


@pytest.mark.parametrize(
    "sample",
    [
        lambda n, short: random_clip(n, rng(), 4, 2, short=short),
        lambda n, short: uniform_clips(n, 2, 4, 2, short=short),
        lambda n, short: independent_clips(n, rng(), 2, 4, 2, short=short),
        lambda n, short: block_grid(n, rng(), 2, 2, 2, short=short),
        lambda n, short: gap_tuple(n, rng(), 3, gaps=(2, 3), probs=(0.5, 0.5), short=short),
        lambda n, short: decreasing_gap_clips(n, rng(), 3, 2, max_gap=2, short=short),
    ],
)
def test_short_policies(sample: Callable[[int, str], np.ndarray]) -> None:
    # Every sampler above needs 7 frames; a 3-frame video exercises each policy.
    loop, repeat = sample(3, "loop"), sample(3, "repeat")
    assert loop.min() >= 0 and loop.max() <= 2 and repeat.min() >= 0 and repeat.max() <= 2
    with pytest.raises(ClipTooShort, match=r"needs 7 frames, only 3 available"):
        sample(3, "skip")
    with pytest.raises(ValueError, match="num_frames must be positive"):
        sample(0, "repeat")
    with pytest.raises(ValueError, match="short must be one of"):
        sample(3, "pad")
    assert np.array_equal(sample(7, "skip"), sample(7, "loop"))  # long enough: the policy is moot


def test_short_loop_and_repeat_exact() -> None:
    assert random_clip(3, rng(), 5, short="loop").tolist() == [0, 1, 2, 0, 1]
    assert random_clip(3, rng(), 5, short="repeat").tolist() == [0, 1, 2, 2, 2]
    assert DEFAULT_SHORT == "repeat"
    assert random_clip(3, rng(), 5).tolist() == [0, 1, 2, 2, 2]
    assert issubclass(ClipTooShort, ValueError)
    err = pickle.loads(pickle.dumps(ClipTooShort("random_clip", 9, 3)))
    assert (err.needed, err.available, str(err)) == (
        9,
        3,
        "random_clip: needs 9 frames, only 3 available (short='skip')",
    )


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="length must be >= 1"):
        random_clip(10, rng(), 0)
    with pytest.raises(ValueError, match="stride must be an integer"):
        random_clip(10, rng(), 2, stride=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_frames must be an integer"):
        random_clip(10.0, rng(), 2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sum to 1"):
        gap_tuple(50, rng(), probs=(0.5, 0.4, 0.2))
    with pytest.raises(ValueError, match="3 probs for 2 gaps"):
        gap_tuple(50, rng(), gaps=(1, 2))


# ---------------------------------------------------------------------------------------------------------
# gap_tuple (MAST)


def test_gap_tuple_gap_law_and_independence() -> None:
    g = rng(4)
    t = np.stack([gap_tuple(30, g, size=3) for _ in range(DRAWS)])
    gaps = np.diff(t, axis=1)
    assert t.shape == (DRAWS, 3) and t.dtype == np.int64
    assert_follows(gaps[:, 0], np.array([0.4, 0.4, 0.2]), support=np.array([2, 5, 8]))
    # The two gaps are independent: joint law = outer product over the 9 cells.
    code = np.searchsorted([2, 5, 8], gaps[:, 0]) * 3 + np.searchsorted([2, 5, 8], gaps[:, 1])
    p = np.array([0.4, 0.4, 0.2])
    assert_follows(code, np.outer(p, p).reshape(-1))
    # Given gaps (2, 2) the start is uniform over the 26 starts where a 5-frame span fits in 30 frames.
    sel = (gaps == 2).all(axis=1)
    assert_follows(t[sel, 0], uniform(26))


def test_gap_tuple_default_pair() -> None:
    pair = gap_tuple(100, rng())
    assert pair.shape == (2,) and pair[1] - pair[0] in (2, 5, 8)


# ---------------------------------------------------------------------------------------------------------
# CVRL decreasing gap


@pytest.mark.parametrize("max_gap", [0, 1, 6, 29])
def test_decreasing_gap_probs_match_cvrl_continuous_law(max_gap: int) -> None:
    p = decreasing_gap_probs(max_gap)
    assert p.shape == (max_gap + 1,) and math.isclose(p.sum(), 1.0)
    assert (np.diff(p) < 0).all()  # strictly decreasing
    # Reference: CVRL's continuous gap, density 2 (M - k) / M^2 on [0, M] sampled by inverting its CDF
    # 2k/M - k^2/M^2, then floored, as its bisection does. M = number of valid starts = max_gap + 1.
    m = max_gap + 1
    u = rng(5).random(200_000)
    k = np.floor(m * (1.0 - np.sqrt(1.0 - u))).astype(np.int64)
    empirical = np.bincount(k, minlength=m)[:m] / len(u)
    np.testing.assert_allclose(empirical, p, atol=4e-3)


def test_decreasing_gap_pair_law_order_and_position() -> None:
    g = rng(6)
    pairs = np.stack([decreasing_gap_pair(12, g) for _ in range(DRAWS)])
    gaps = np.abs(pairs[:, 1] - pairs[:, 0])
    assert_follows(gaps, decreasing_gap_probs(11))
    first_later = pairs[:, 0] > pairs[:, 1]
    assert stats.binomtest(int(first_later.sum()), int((gaps > 0).sum())).pvalue > 1e-4
    sel = gaps == 3  # given the gap, the earlier frame is uniform over the 9 positions that fit
    assert_follows(pairs[sel].min(axis=1), uniform(9))
    assert decreasing_gap_pair(1, rng()).tolist() == [0, 0]


def test_decreasing_gap_pair_max_gap_and_clips() -> None:
    g = rng(8)
    pairs = np.stack([decreasing_gap_pair(100, g, max_gap=4) for _ in range(DRAWS)])
    assert_follows(np.abs(np.diff(pairs, axis=1))[:, 0], decreasing_gap_probs(4))
    clips = decreasing_gap_clips(40, g, length=8, stride=2)
    assert clips.shape == (2, 8) and (np.diff(clips, axis=1) == 2).all() and clips.max() < 40
    starts = np.stack([decreasing_gap_clips(20, g, 4, 2)[:, 0] for _ in range(DRAWS)])
    assert_follows(np.abs(starts[:, 0] - starts[:, 1]), decreasing_gap_probs(13))  # 14 valid starts


# ---------------------------------------------------------------------------------------------------------
# Shuffle and Learn


def test_ordered_tuple_uniform_over_subsets() -> None:
    g = rng(9)
    tuples = np.stack([ordered_tuple(8, g) for _ in range(DRAWS)])
    assert (np.diff(tuples, axis=1) > 0).all()
    subsets = {s: i for i, s in enumerate(itertools.combinations(range(8), 5))}  # 56 subsets
    codes = np.array([subsets[tuple(t)] for t in tuples.tolist()])
    assert_follows(codes, uniform(len(subsets)))


def test_ordered_tuple_max_span() -> None:
    g = rng(10)
    tuples = np.stack([ordered_tuple(100, g, max_span=12) for _ in range(2000)])
    assert (np.diff(tuples, axis=1) > 0).all() and (tuples[:, -1] - tuples[:, 0] <= 11).all()
    assert tuples[:, 0].min() < 10 and tuples[:, -1].max() > 90


def test_ordered_tuple_motion_weighted_windows() -> None:
    n, window = 20, 5
    motion = np.abs(np.sin(np.arange(n - 1) * 0.7)) + np.where(np.arange(n - 1) == 14, 3.0, 0.0)
    # Reference: P(window start w) = sum(motion[w : w + 4]) / total, by an explicit loop.
    weights = np.array([motion[w : w + window - 1].sum() for w in range(n - window + 1)])
    g = rng(11)
    # With size == max_span the tuple is the whole window, so its first frame is the window start.
    starts = np.array([ordered_tuple(n, g, 5, max_span=window, motion=motion)[0] for _ in range(DRAWS)])
    assert_follows(starts, weights / weights.sum())


def test_ordered_tuple_motion_zero_outside_one_transition() -> None:
    motion = np.zeros(29)
    motion[10] = 1.0  # frames 10 -> 11 move; every chosen window must contain that transition
    g = rng(12)
    starts = np.array([ordered_tuple(30, g, 5, max_span=5, motion=motion)[0] for _ in range(2000)])
    assert_follows(starts, np.array([0.0] * 7 + [0.25] * 4), support=np.arange(11))
    still = np.stack([ordered_tuple(30, g, 5, max_span=5, motion=np.zeros(29)) for _ in range(500)])
    assert len(np.unique(still[:, 0])) == 26  # all zero: uniform over windows


def test_ordered_tuple_errors_and_short() -> None:
    with pytest.raises(ValueError, match=r"shape \(9,\)"):
        ordered_tuple(10, rng(), motion=np.ones(10))
    with pytest.raises(ValueError, match="non-negative"):
        ordered_tuple(10, rng(), motion=-np.ones(9))
    with pytest.raises(ValueError, match="temporal order"):
        ordered_tuple(10, rng(), short="loop")
    with pytest.raises(ClipTooShort, match="needs 5 frames, only 4"):
        ordered_tuple(4, rng(), short="skip")
    assert ordered_tuple(4, rng(), short="repeat").tolist() == [0, 1, 2, 3, 3]


def test_shuffle_and_learn_tuples() -> None:
    pos, neg = shuffle_and_learn_tuples(np.array([3, 7, 9, 12, 20]))
    assert pos.tolist() == [[7, 9, 12], [12, 9, 7]]
    assert neg.tolist() == [[7, 3, 12], [7, 20, 12]]
    with pytest.raises(ValueError, match="expected 5 frames"):
        shuffle_and_learn_tuples([1, 2, 3])


# ---------------------------------------------------------------------------------------------------------
# Shots (VIVI)

SHOTS = [(0, 10), (10, 13), (13, 40), (40, 41)]


def test_frames_within_shot_uniform_over_shots_and_frames() -> None:
    g = rng(13)
    draws = np.stack([frames_within_shot(SHOTS, g, num=2) for _ in range(DRAWS)])
    which = np.searchsorted([s for s, _ in SHOTS], draws[:, 0], side="right") - 1
    assert_follows(which, uniform(4))
    inside = np.array([SHOTS[w][0] <= f[0] < f[1] < SHOTS[w][1] for w, f in zip(which, draws, strict=True)])
    assert inside[which != 3].all()  # the 1-frame shot is padded by the short policy (repeat)
    assert (draws[which == 3] == 40).all()
    pairs = draws[which == 1] - 10  # 3 frames -> 3 equally likely pairs
    assert_follows(pairs[:, 0] * 3 + pairs[:, 1], np.array([0, 1, 1, 0, 0, 1, 0, 0, 0]) / 3)


def test_frames_within_shot_checks() -> None:
    assert frames_within_shot(SHOTS, rng(), num=27, shot=2).tolist() == list(range(13, 40))
    with pytest.raises(ClipTooShort, match="needs 2 frames, only 1"):
        frames_within_shot(SHOTS, rng(), shot=3, short="skip")
    with pytest.raises(ValueError, match="overlaps"):
        frames_within_shot([(0, 5), (4, 8)], rng())
    with pytest.raises(ValueError, match="empty"):
        frames_within_shot([(0, 5), (5, 5)], rng())
    with pytest.raises(ValueError, match="no shots"):
        frames_within_shot([], rng())
    with pytest.raises(ValueError, match="out of range"):
        frames_within_shot(SHOTS, rng(), shot=4)


def test_shots_within_video() -> None:
    g = rng(14)
    out = np.stack([shots_within_video(SHOTS, g, num_shots=2, frames_per_shot=1) for _ in range(6000)])
    assert out.shape == (6000, 2, 1)
    first = np.searchsorted([s for s, _ in SHOTS], out[:, 0, 0], side="right") - 1
    second = np.searchsorted([s for s, _ in SHOTS], out[:, 1, 0], side="right") - 1
    assert (second == first + 1).all()  # consecutive shots, in order
    assert_follows(first, uniform(3))
    padded = shots_within_video(SHOTS[:2], rng(), num_shots=3, frames_per_shot=2, short="repeat")
    assert (padded[0] < 10).all() and (padded[1:] >= 10).all() and (padded[1:] < 13).all()  # last shot again
    looped = shots_within_video(SHOTS[:2], rng(), num_shots=3, frames_per_shot=2, short="loop")
    assert (looped[2] < 10).all()
    with pytest.raises(ClipTooShort, match="needs 5 shots, only 4"):
        shots_within_video(SHOTS, rng(), num_shots=5, short="skip")
