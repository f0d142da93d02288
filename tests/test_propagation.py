"""Label propagation: closed forms, a dense reference, label resizing and the streaming driver."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vidssl.eval.propagation as prop
from vidssl.eval.propagation import (
    PropagationConfig,
    label_to_feature_res,
    one_hot,
    propagate,
    propagate_sequence,
    upsample_labels,
)


def dense_reference(
    feat_t: torch.Tensor,
    ctx_feats: torch.Tensor,
    ctx_labels: torch.Tensor,
    topk: int,
    radius: float,
    temperature: float,
    restrict_first: bool,
    window: str = "circle",
) -> torch.Tensor:
    """The straightforward way: the full affinity to every context position, masked, top-k, softmax."""
    n, c, h, w = ctx_feats.shape
    q = F.normalize(feat_t, dim=0).reshape(c, -1)  # (C, P)
    keys = F.normalize(ctx_feats, dim=1).reshape(n, c, -1)  # (N, C, P)
    aff = torch.einsum("ncp,cq->npq", keys, q) / temperature  # (N, P ctx, P target)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dy = yy.reshape(-1, 1) - yy.reshape(1, -1)
    dx = xx.reshape(-1, 1) - xx.reshape(1, -1)
    if window == "circle":
        allowed = (dy**2 + dx**2).double().sqrt() < radius
    else:
        allowed = (dy.abs() <= radius) & (dx.abs() <= radius)
    start = 0 if restrict_first else 1
    aff[start:] = aff[start:].masked_fill(~allowed, float("-inf"))
    aff = aff.reshape(n * h * w, h * w)
    vals, idx = aff.topk(min(topk, aff.shape[0]), dim=0)
    weights = vals.softmax(dim=0)  # (k, P)
    labels = ctx_labels.permute(1, 0, 2, 3).reshape(ctx_labels.shape[1], -1)  # (K, N P)
    return (labels[:, idx] * weights[None]).sum(1).reshape(-1, h, w)


def _random_case(seed: int, n: int, c: int, h: int, w: int, k: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    feat_t = torch.randn(c, h, w, generator=g)
    ctx = torch.randn(n, c, h, w, generator=g)
    labels = torch.rand(n, k, h, w, generator=g).softmax(dim=1)
    return feat_t, ctx, labels


@pytest.mark.parametrize(
    ("n", "h", "w", "tile", "radius", "window", "restrict_first", "topk"),
    [
        (3, 9, 13, 4, 3.0, "circle", False, 5),
        (4, 17, 11, 8, 12.0, "circle", True, 10),
        (2, 10, 10, 3, 2.5, "square", True, 7),
        (5, 12, 20, 5, 4.0, "square", False, 10),
        (1, 6, 7, 16, 2.0, "circle", False, 3),  # only the unrestricted first frame
        (2, 5, 6, 2, 1.0, "circle", True, 10),  # fewer candidates in a window than k
    ],
)
def test_chunked_equals_dense_reference(
    n: int, h: int, w: int, tile: int, radius: float, window: str, restrict_first: bool, topk: int
) -> None:
    feat_t, ctx, labels = _random_case(n * 100 + h, n, 16, h, w, 3)
    got = propagate(
        feat_t, ctx, labels, topk=topk, radius=radius, temperature=0.07, restrict_first=restrict_first,
        window=window, tile=tile,  # type: ignore[arg-type]
    )
    want = dense_reference(feat_t, ctx, labels, topk, radius, 0.07, restrict_first, window)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_tile_size_does_not_change_the_result() -> None:
    feat_t, ctx, labels = _random_case(1, 4, 8, 15, 19, 2)
    outs = [
        propagate(feat_t, ctx, labels, topk=10, radius=5, temperature=0.05, restrict_first=False, tile=t)
        for t in (1, 4, 7, 32)
    ]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], atol=1e-6, rtol=1e-6)


def test_target_equal_to_a_context_frame_reproduces_its_labels() -> None:
    # distinct one-hot-like features per position: the matching frame's own position is the only
    # strong match, so with a low temperature the output is that frame's labels exactly
    c, h, w = 64, 6, 8
    g = torch.Generator().manual_seed(0)
    match = torch.randn(c, h, w, generator=g)
    ctx = torch.randn(4, c, h, w, generator=g)
    ctx[1] = match * 2.0  # a different norm: features are L2-normalised first
    labels = F.one_hot(torch.randint(0, 4, (4, h, w), generator=g), 4).permute(0, 3, 1, 2).float()
    out = propagate(match, ctx, labels, topk=5, radius=100.0, temperature=0.001, restrict_first=True)
    torch.testing.assert_close(out, labels[1], atol=1e-5, rtol=0)


def test_top1_with_tiny_temperature_is_nearest_neighbour_copy() -> None:
    feat_t, ctx, labels = _random_case(3, 3, 8, 5, 6, 4)
    out = propagate(feat_t, ctx, labels, topk=1, radius=100.0, temperature=1e-4, restrict_first=False)
    q = F.normalize(feat_t, dim=0).reshape(8, -1)
    keys = F.normalize(ctx, dim=1).permute(1, 0, 2, 3).reshape(8, -1)  # (C, N P)
    nearest = (keys.t() @ q).argmax(dim=0)  # (P,)
    want = labels.permute(1, 0, 2, 3).reshape(4, -1)[:, nearest].reshape(4, 5, 6)
    torch.testing.assert_close(out, want)


def _shifted_match_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Target cell (0, 0)'s exact match sits in the context at (0, 6); elsewhere only weaker matches."""
    c, h, w = 4, 3, 8
    target = torch.zeros(c, h, w)
    target[0] = 1.0  # every target cell looks along channel 0
    ctx = torch.zeros(2, c, h, w)
    ctx[:, 1] = 1.0  # everything in the context is orthogonal ...
    ctx[:, 0, 0, 6] = 1.0  # ... except (0, 6): at 45 degrees, the best match for everyone
    ctx[:, 1, 0, 6] = 1.0
    labels = torch.zeros(2, 2, h, w)
    labels[:, 0] = 1.0
    labels[:, :, 0, 6] = torch.tensor([0.0, 1.0])  # the far match carries label 1
    return target, ctx, labels


def test_radius_excludes_far_positions() -> None:
    target, ctx, labels = _shifted_match_case()
    kw = {"topk": 1, "temperature": 0.01, "restrict_first": True}
    near = propagate(target, ctx, labels, radius=3.0, **kw)  # type: ignore[arg-type]
    far = propagate(target, ctx, labels, radius=7.0, **kw)  # type: ignore[arg-type]
    assert near[1, 0, 0] == 0.0  # (0, 6) is 6 cells away from (0, 0): outside radius 3
    assert far[1, 0, 0] == 1.0  # inside radius 7
    assert near[1, 0, 5] == 1.0  # (0, 5) is 1 cell from the match
    # circle vs square at the corner of the window: offset (2, 2) is inside a square of 2, not a circle of 2
    sq = propagate(target, ctx, labels, radius=2.0, window="square", **kw)  # type: ignore[arg-type]
    ci = propagate(target, ctx, labels, radius=2.5, window="circle", **kw)  # type: ignore[arg-type]
    assert sq[1, 2, 4] == 1.0 and ci[1, 2, 4] == 0.0  # |(2, 4) - (0, 6)| = 2.83
    # CRW's circle is strict: a distance of exactly the radius is outside
    assert propagate(target, ctx, labels, radius=2.0, **kw)[1, 0, 4] == 0.0  # type: ignore[arg-type]
    assert propagate(target, ctx, labels, radius=2.01, **kw)[1, 0, 4] == 1.0  # type: ignore[arg-type]


def test_restrict_first_switch() -> None:
    target, ctx, labels = _shifted_match_case()
    ctx[1, 0, 0, 6] = 0.0  # only the first frame still holds the far match
    kw = {"topk": 1, "temperature": 0.01, "radius": 3.0}
    free = propagate(target, ctx, labels, restrict_first=False, **kw)  # type: ignore[arg-type]
    held = propagate(target, ctx, labels, restrict_first=True, **kw)  # type: ignore[arg-type]
    assert free[1, 0, 0] == 1.0  # CRW: the first frame is searched everywhere
    assert held[1, 0, 0] == 0.0  # VFS / DINO: it is restricted like the others


def test_config_checks_values() -> None:
    with pytest.raises(ValueError, match="topk"):
        PropagationConfig(topk=0)
    with pytest.raises(ValueError, match="temperature"):
        PropagationConfig(temperature=0.0)


# ----------------------------------------------------------------------------------------------------
# Labels between image and feature resolution


def test_label_downsample_matches_cv2_bilinear_on_multiples_of_the_stride() -> None:
    cv2 = pytest.importorskip("cv2")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 3, (40, 64), generator=g)
    onehot = one_hot(ids, 3)
    got = label_to_feature_res(onehot, (5, 8), stride=8, resize="stride")
    # CRW: cv2.resize of the float one-hot map to the feature size (bilinear, half-pixel centres)
    want = cv2.resize(onehot.permute(1, 2, 0).numpy(), (8, 5), interpolation=cv2.INTER_LINEAR)
    torch.testing.assert_close(got, torch.from_numpy(want).permute(2, 0, 1), atol=1e-6, rtol=0)
    # on a multiple of the stride CRW's own resize is the same map
    torch.testing.assert_close(label_to_feature_res(onehot, (5, 8), stride=8), got, atol=1e-6, rtol=0)
    # nearest (DINO) picks pixel 8 i + 4 of each cell
    near = label_to_feature_res(onehot, (5, 8), stride=8, mode="nearest", resize="stride")
    torch.testing.assert_close(near, onehot[:, 4::8, 4::8])
    for resize in ("vfs", "dino"):  # PIL nearest, which on a multiple of the stride picks the same pixels
        torch.testing.assert_close(label_to_feature_res(onehot, (5, 8), stride=8, resize=resize), near)


def test_label_downsample_pads_and_crops_to_the_feature_grid() -> None:
    ids = torch.zeros(20, 30, dtype=torch.long)
    ids[:, 28:] = 1  # a 2-pixel stripe at the right edge
    small = label_to_feature_res(one_hot(ids, 2), (3, 4), stride=8, resize="stride")  # 20x30 -> padded to 24x32
    assert small.shape == (2, 3, 4)
    # the last cell covers pixels 24..31; 28..31 are the (replicated) stripe, sampled at 27.5 -> half
    torch.testing.assert_close(small[1, :, 3], torch.full((3,), 0.5))
    cropped = label_to_feature_res(one_hot(ids, 2), (2, 3), stride=8, resize="stride")  # floor grid: crops to 16x24
    assert cropped.shape == (2, 2, 3) and cropped[1].sum() == 0


def test_upsample_labels_round_trip_and_norm_mask() -> None:
    ids = torch.zeros(24, 40, dtype=torch.long)
    ids[:, 8:24] = 2
    ids[:, 24:] = 1
    soft = label_to_feature_res(one_hot(ids, 3), (3, 5), stride=8, resize="stride")
    back = upsample_labels(soft, (24, 37), stride=8, resize="stride")  # width 37: not a multiple of the stride
    assert back.shape == (24, 37) and back.dtype == torch.long
    assert torch.equal(back, ids[:, :37])  # cell-aligned straight edges survive the round trip exactly
    shifted = upsample_labels(soft, (24, 41), stride=8, resize="stride")  # wider than the grid: edge-padded
    assert torch.equal(shifted[:, 40], ids[:, 39])
    # a weak channel wins only after per-channel min-max normalisation (VFS, DINO)
    weak = torch.zeros(2, 2, 2)
    weak[0] = 0.6
    weak[1, 0, 0] = 0.4
    for resize in ("crw", "vfs", "dino", "stride"):
        assert upsample_labels(weak, (16, 16), stride=8, resize=resize)[0, 0] == 0, resize  # type: ignore[arg-type]
        assert upsample_labels(weak, (16, 16), stride=8, norm_mask=True, resize=resize)[0, 0] == 1, resize  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------
# The streaming driver


def _frames_with_shift(num: int, c: int = 8, h: int = 6, w: int = 9) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(c, h, w + num, generator=g)
    return [base[:, :, t : t + w] for t in range(num)]  # the scene pans left by one cell per frame


@pytest.mark.parametrize("pad", [True, False])
def test_driver_keeps_at_most_n_plus_one_context_frames(pad: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = _frames_with_shift(30)
    seen: list[int] = []
    calls: list[int] = []
    real = prop.propagate

    def spy(feat_t: torch.Tensor, ctx_feats: torch.Tensor, ctx_labels: torch.Tensor, **kw: object) -> torch.Tensor:
        seen.append(ctx_feats.shape[0])
        return real(feat_t, ctx_feats, ctx_labels, **kw)  # type: ignore[arg-type]

    def encode(t: int) -> torch.Tensor:
        calls.append(t)
        return frames[t]

    monkeypatch.setattr(prop, "propagate", spy)
    cfg = PropagationConfig(context=4, radius=3, pad_with_first=pad)
    labels = one_hot(torch.randint(0, 2, (6, 9)), 2)
    stream = propagate_sequence(encode, labels, 30, cfg)
    assert torch.equal(next(stream), labels) and calls == [0]
    out = next(stream)
    assert out.shape == (2, 6, 9) and calls == [0, 1]  # lazy: one frame encoded per output
    rest = list(stream)
    assert len(rest) == 28 and calls == list(range(30))
    assert max(seen) == 5  # the first frame + the 4 most recent
    assert seen[:5] == ([5] * 5 if pad else [1, 2, 3, 4, 5])  # CRW pads the recent slots with frame 0


def test_driver_context_is_first_plus_most_recent(monkeypatch: pytest.MonkeyPatch) -> None:
    # frame t's features are all equal to t-ish unique codes; the driver must hand over the first frame
    # and frames t-N..t-1 (in any order)
    num, n = 12, 3
    codes = F.normalize(torch.randn(num, 16), dim=1)
    frames = [codes[t][:, None, None].expand(16, 2, 2).clone() for t in range(num)]
    got: list[set[int]] = []
    real = prop.propagate

    def spy(feat_t: torch.Tensor, ctx_feats: torch.Tensor, ctx_labels: torch.Tensor, **kw: object) -> torch.Tensor:
        ids = (ctx_feats[:, :, 0, 0] @ codes.t()).argmax(dim=1).tolist()
        got.append(set(ids))
        return real(feat_t, ctx_feats, ctx_labels, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(prop, "propagate", spy)
    cfg = PropagationConfig(context=n, pad_with_first=False)
    list(propagate_sequence(lambda t: frames[t], torch.ones(1, 2, 2), num, cfg))
    for t, ids in zip(range(1, num), got, strict=True):
        assert ids == {0} | set(range(max(0, t - n), t)), t


# ----------------------------------------------------------------------------------------------------
# The authors' label resizing (label_resize: crw / vfs / dino)


@pytest.mark.parametrize(("size_in", "size_out"), [((480, 854), (60, 107)), ((240, 427), (30, 54)),
                                                   ((480, 856), (480, 854)), ((37, 50), (64, 91))])
def test_pil_nearest_is_pil_resize(size_in: tuple[int, int], size_out: tuple[int, int]) -> None:
    from PIL import Image

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 7, size_in, generator=g)
    want = np.asarray(Image.fromarray(ids.numpy().astype(np.uint8)).resize(size_out[::-1], Image.Resampling.NEAREST))
    assert np.array_equal(prop.pil_nearest(ids, size_out).numpy(), want)
    # on a one-hot stack it is the one-hot of the resized ids (VFS and DINO resize the ids, then one-hot)
    assert torch.equal(prop.pil_nearest(one_hot(ids, 7), size_out), one_hot(torch.from_numpy(want.copy()), 7))


def test_cv2_bilinear_is_cv2_resize_for_any_channel_count() -> None:
    cv2 = pytest.importorskip("cv2")
    g = torch.Generator().manual_seed(2)
    for k in (1, 3, 300):  # one channel comes back 2-D from OpenCV; more than 128 are done in parts
        x = torch.rand(k, 30, 43, generator=g)
        got = prop.cv2_bilinear(x, (4, 6))
        arr = x.permute(1, 2, 0).numpy()
        want = np.concatenate([cv2.resize(np.ascontiguousarray(arr[..., i : i + 100]), (6, 4)).reshape(4, 6, -1)
                               for i in range(0, k, 100)], axis=-1)
        assert got.shape == (k, 4, 6) and torch.equal(got, torch.from_numpy(want).permute(2, 0, 1))


def test_crw_label_resize_at_a_width_that_is_not_a_multiple_of_the_stride() -> None:
    """CRW: cv2.resize of the whole one-hot map to (ceil(W/8), ceil(H/8)) and back; not the cell-aligned
    crop/pad resize, which differs at 854 px."""
    cv2 = pytest.importorskip("cv2")
    ids = torch.zeros(480, 854, dtype=torch.long)
    ids[100:300, 200:611] = 1
    ids[310:400, 405:853] = 2
    onehot = one_hot(ids, 3)
    small = label_to_feature_res(onehot, (60, 107), 8)
    want = cv2.resize(onehot.permute(1, 2, 0).numpy(), (107, 60))
    assert torch.equal(small, torch.from_numpy(want).permute(2, 0, 1))
    old = label_to_feature_res(onehot, (60, 107), 8, resize="stride")
    assert (old - small).abs().max() > 0.1
    back = upsample_labels(small, (480, 854), 8)
    want_ids = cv2.resize(small.permute(1, 2, 0).numpy(), (854, 480)).argmax(-1)
    assert np.array_equal(back.numpy(), want_ids)
    assert not torch.equal(back, upsample_labels(old, (480, 854), 8, resize="stride"))


def test_dino_upsampling_goes_through_the_stride_grid() -> None:
    """DINO: bilinear by the stride to (h s, w s), argmax there, then PIL nearest of the ids to (H, W)."""
    from PIL import Image

    g = torch.Generator().manual_seed(3)
    soft = torch.rand(3, 6, 11, generator=g)
    up = F.interpolate(soft[None], scale_factor=8, mode="bilinear", align_corners=False, recompute_scale_factor=False)
    ids = up[0].argmax(0).numpy().astype(np.uint8)  # (48, 88)
    want = np.asarray(Image.fromarray(ids).resize((85, 45), Image.Resampling.NEAREST))
    assert np.array_equal(upsample_labels(soft, (45, 85), 8, resize="dino").numpy(), want)
    vfs = upsample_labels(soft, (45, 85), 8, resize="vfs")  # VFS: bilinear straight to (H, W)
    direct = F.interpolate(soft[None], size=(45, 85), mode="bilinear", align_corners=False)[0].argmax(0)
    assert torch.equal(vfs, direct) and not torch.equal(vfs, torch.from_numpy(want.copy()).long())


def test_label_resize_settings_are_checked() -> None:
    from vidssl.engine.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match="label_downsample: 'nearest' applies to label_resize: stride only"):
        PropagationConfig(label_downsample="nearest")
    PropagationConfig(label_resize="stride", label_downsample="nearest")
    with pytest.raises(ConfigError, match="label_resize: 'crww' is not one of .*; did you mean 'crw'"):
        from_dict(PropagationConfig, {"label_resize": "crww"})
    with pytest.raises(ConfigError, match="unknown key 'jhmdb.decode_top'; did you mean 'decode_topk'"):
        from_dict(PropagationConfig, {"jhmdb": {"decode_top": 1}})
    with pytest.raises(ConfigError, match=r"jhmdb.size\[0\]: expected an integer"):
        from_dict(PropagationConfig, {"jhmdb": {"size": ["a", 320]}})
    with pytest.raises(ConfigError, match="jhmdb.decode_topk"):
        from_dict(PropagationConfig, {"jhmdb": {"decode_topk": 0}})
    assert from_dict(PropagationConfig, {"jhmdb": {"size": None}}).jhmdb.size is None
