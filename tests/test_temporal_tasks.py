"""The temporal-order tasks (Shuffle and Learn, OPN, the arrow of time, O3N, VCOP): closed forms (uniform logits give
ln C), the tuples and orders they present (read back from frames whose value encodes their time), the label
invariances (OPN's reverse, O3N's permutation), the cue removal (black borders, stabilisation) and their samplers."""

from __future__ import annotations

import json
import math
import pickle
from itertools import permutations
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from vidssl.data.cues import black_border_box, crop_black_borders, stabilize
from vidssl.data.samplers import (
    NoValidWindow,
    clip_sequence,
    odd_one_out_clips,
    ordered_tuple,
    window_weights,
)
from vidssl.methods import METHODS
from vidssl.methods.arrow_of_time import flow_images
from vidssl.methods.o3n import dynamic_image, shuffle_odd
from vidssl.methods.opn import ORDERS, channel_split, jittered_windows, order_class
from vidssl.methods.shuffle_learn import NEGATIVES, POSITIVES, tuple_positions
from vidssl.models.video import VideoResNet

TINY: dict[str, dict[str, Any]] = {
    "shuffle_learn": dict(crop_size=16, max_span=8, frame_dim=8),
    "opn": dict(crop_size=24, window=16, jitter=2, max_span=8, frame_dim=8, pair_dim=8),
    "arrow_of_time": dict(crop_size=16, clip_len=3, stride=2, frame_dim=8, hidden=8),
    "o3n": dict(crop_size=16, num_clips=6, clip_len=3, stride=1, window=6, branch_dim=8),
    "vcop": dict(crop_size=16, clip_len=2, gap=1, pair_dim=8),
}
LAST = {"shuffle_learn": "classifier", "opn": "head.classifier.1", "arrow_of_time": "classifier.2",
        "o3n": "scorer", "vcop": "head.classifier.1"}


def _make(name: str, **extra: Any) -> Any:
    cls = METHODS[name]
    return cls(cls.Config(**{**TINY[name], **extra}))


def _timed_video(b: int, t: int, size: int = 24) -> Tensor:
    """uint8 ``(B, 3, T, size, size)`` whose frame k is the constant 20 + 10 k: a frame says which it is."""
    values = (20 + 10 * torch.arange(t)).to(torch.uint8)
    return values.view(1, 1, t, 1, 1).expand(b, 3, t, size, size).clone()


def _spy_embed(method: Any) -> list[Tensor]:
    """Replace ``method.embed`` by one that records its (un-normalised) input and returns zeros of the trunk's width."""
    seen: list[Tensor] = []
    dim = method.backbone.num_features

    def embed(x: Tensor, normalize: bool = True) -> Tensor:
        seen.append(x.detach().clone())
        return torch.zeros(*x.shape[:2], dim)

    method.embed = embed
    return seen


def _ids(frames: Tensor) -> Tensor:
    """Frames ``(..., 3, S, S)`` of a :func:`_timed_video` in [0, 1] -> the frame index of each, long."""
    return ((frames.mean(dim=(-3, -2, -1)) * 255 - 20) / 10).round().long()


# ---- closed forms --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,classes", [("shuffle_learn", 2), ("opn", 12), ("arrow_of_time", 2), ("o3n", 6),
                                          ("vcop", 6)])
def test_uniform_logits_give_ln_classes(name: str, classes: int) -> None:
    torch.manual_seed(0)
    method = _make(name)
    last = method.get_submodule(LAST[name])
    assert isinstance(last, nn.Linear)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    from tests.test_methods import _batch  # the contract test's batch: the sampler's frames of random videos

    loss, metrics = method(_batch(method))
    assert method.num_classes == classes
    assert float(loss.detach()) == pytest.approx(math.log(classes), abs=1e-6)
    assert float(metrics["loss_over_lnC"]) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", sorted(TINY))
def test_center_frames_removes_what_every_frame_shares(name: str) -> None:
    """``center_frames``: a feature vector added to every frame's trunk output does not reach the head; without it
    it does (the same draws of order and crop both times)."""
    from tests.test_methods import _batch

    def logits(method: Any, batch: dict[str, Tensor], shift: float) -> Tensor:
        forward = method.backbone.forward
        offset = shift * torch.linspace(-1, 1, method.backbone.num_features)
        method.backbone.forward = lambda x: forward(x) + offset
        try:
            torch.manual_seed(1)
            with torch.no_grad():
                out: Tensor = method.task(batch)[0]
        finally:
            method.backbone.forward = forward
        return out

    for center in (True, False):
        torch.manual_seed(0)
        method = _make(name, center_frames=center).eval()
        batch = _batch(method)
        same = torch.allclose(logits(method, batch, 0.0), logits(method, batch, 5.0), atol=1e-4)
        assert same is center


def test_center_is_the_mean_over_the_samples_frames() -> None:
    method = _make("opn", center_frames=True)
    f = torch.randn(3, 4, 5)
    c = method.center(f)
    torch.testing.assert_close(c.mean(dim=1), torch.zeros(3, 5), atol=1e-6, rtol=0)
    torch.testing.assert_close(c + f.mean(dim=1, keepdim=True), f)
    perm = torch.tensor([2, 0, 3, 1])  # the same whatever order the frames are shown in
    torch.testing.assert_close(method.center(f[:, perm]), c[:, perm])
    assert _make("opn").center(f) is f  # off by default (the papers' heads)
    with pytest.raises(ValueError, match="at least two"):
        method.center(f[:, :1])


# ---- Shuffle and Learn ---------------------------------------------------------------------------------------


def test_shuffle_learn_tuples_positive_in_order_negative_not() -> None:
    assert tuple_positions(torch.tensor([1, 1, 0, 0]), torch.tensor([0, 1, 0, 1])).tolist() == [
        list(POSITIVES[0]), list(POSITIVES[1]), list(NEGATIVES[0]), list(NEGATIVES[1])]
    torch.manual_seed(0)
    method = _make("shuffle_learn")
    seen = _spy_embed(method)
    _, label = method.task({"video": _timed_video(400, 5)})
    ids = _ids(seen[0])  # (B, 3): the frames each tuple shows, in the order shown
    for row, y in zip(ids.tolist(), label.tolist(), strict=True):
        monotone = row == sorted(row) or row == sorted(row, reverse=True)
        assert monotone == bool(y), (row, y)
        assert row[1] == 2 if y else row[1] in (0, 4)  # positives keep c in the middle, negatives put a or e there
    # 25% positives (binomial, 400 draws: 4.6 standard deviations either way)
    assert abs(float(label.float().mean()) - 0.25) < 4.6 * math.sqrt(0.25 * 0.75 / 400)


def test_shuffle_learn_chance_is_the_majority_rate() -> None:
    method = _make("shuffle_learn").eval()
    from tests.test_methods import _batch

    out = method.pretext_scores(_batch(method))
    assert torch.all(out["chance"] == 0.75)


# ---- OPN -----------------------------------------------------------------------------------------------------


def test_opn_classes_pair_each_order_with_its_reverse() -> None:
    classes = {p: order_class(p) for p in permutations(range(4))}
    assert sorted(set(classes.values())) == list(range(12))
    for p, k in classes.items():
        assert classes[p[::-1]] == k  # the reverse is the same class
        assert sum(1 for v in classes.values() if v == k) == 2
    assert [order_class(o) for o in ORDERS] == list(range(12))
    with pytest.raises(ValueError, match="not a permutation"):
        order_class((0, 0, 1, 2))


def test_opn_presents_the_class_order_forward_or_reversed() -> None:
    torch.manual_seed(0)
    method = _make("opn", channel_split=False)
    seen = _spy_embed(method)
    video = _timed_video(200, 4)
    _, target = method.task({"video": video})
    ids = _ids(seen[0])  # (B, 4)
    reversed_count = 0
    for row, k in zip(ids.tolist(), target.tolist(), strict=True):
        assert row in (list(ORDERS[k]), list(ORDERS[k][::-1])), (row, k)
        reversed_count += row != list(ORDERS[k])
        assert order_class(tuple(row)) == k  # the label is a function of the order shown, whichever way
    assert 60 < reversed_count < 140  # the coin flip


def test_opn_jittered_windows_share_a_window_up_to_the_jitter() -> None:
    h = w = 30
    coords = (torch.arange(h).view(h, 1) * 100 + torch.arange(w).view(1, w)).float()  # pixel value = 100 y + x
    x = coords.expand(5, 3, 4, h, w)
    torch.manual_seed(0)
    out = jittered_windows(x, 20, 3)
    assert out.shape == (5, 3, 4, 20, 20)
    y0, x0 = (out[:, 0, :, 0, 0] // 100), (out[:, 0, :, 0, 0] % 100)  # top-left corner of each frame's window
    assert bool(((y0.max(1).values - y0.min(1).values) <= 6).all())
    assert bool(((x0.max(1).values - x0.min(1).values) <= 6).all())
    assert bool((y0 >= 0).all()) and bool((y0 + 20 <= h).all())
    assert bool((out[:, :, :, 1:, :] - out[:, :, :, :-1, :] == 100).all())  # contiguous windows, not resampled


def test_opn_channel_split_replicates_one_channel_per_frame() -> None:
    x = torch.rand(6, 3, 4, 5, 5)
    torch.manual_seed(1)
    out = channel_split(x)
    for b in range(6):
        for t in range(4):
            f = out[b, :, t]
            assert torch.equal(f[0], f[1]) and torch.equal(f[1], f[2])
            assert any(torch.equal(f[0], x[b, c, t]) for c in range(3))


# ---- the arrow of time ---------------------------------------------------------------------------------------


def _moving_texture(t: int = 4, size: int = 48, shift: int = 2) -> Tensor:
    """A smooth random texture translating right by ``shift`` px per frame: float ``(3, T, size, size)``."""
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 24, generator=g), size=(size, size * 2),
                                           mode="bicubic", align_corners=False).clamp(0, 1)[0]
    return torch.stack([base[:, :, size - k * shift: 2 * size - k * shift] for k in range(t)], dim=1)


def test_arrow_of_time_reverses_frames_and_computes_the_reversed_flow_on_reversed_frames() -> None:
    clip = _moving_texture()[None]  # (1, 3, 4, S, S)
    rgb = _make("arrow_of_time", clip_len=4)
    forward = rgb.inputs(clip, torch.tensor([False]))
    backward = rgb.inputs(clip, torch.tensor([True]))
    assert torch.equal(backward, forward.flip(1))
    flow = _make("arrow_of_time", clip_len=4, input_mode="flow", flow_scale=10.0)
    f_fwd = flow.inputs(clip, torch.tensor([False]))[0]  # (3 transitions, 3, S, S): dx, dy, magnitude
    f_bwd = flow.inputs(clip, torch.tensor([True]))[0]
    torch.testing.assert_close(f_bwd, flow_images(clip[0].flip(1), 10.0), rtol=0, atol=0)
    inner = (slice(None), 0, slice(12, -12), slice(12, -12))
    # 2 px per frame to the right (0.2 after the scale of 10), then to the left
    assert float(f_fwd[inner].mean()) == pytest.approx(0.2, abs=0.03)
    assert float(f_bwd[inner].mean()) == pytest.approx(-0.2, abs=0.03)


# ---- O3N -----------------------------------------------------------------------------------------------------


def test_o3n_permuting_the_subsequences_permutes_the_logits() -> None:
    torch.manual_seed(0)
    method = _make("o3n").eval()
    clips = torch.rand(2, 6, 3, 3, 16, 16)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        torch.testing.assert_close(method.logits(clips[:, perm]), method.logits(clips)[:, perm], rtol=1e-5,
                                   atol=1e-5)


def test_o3n_shuffles_exactly_the_odd_subsequence() -> None:
    torch.manual_seed(0)
    clips = torch.arange(5 * 4 * 6, dtype=torch.float32).view(5, 4, 6, 1)
    odd = torch.tensor([0, 3, 1, 2, 3])
    out = shuffle_odd(clips, odd)
    for b in range(5):
        for k in range(4):
            if k == int(odd[b]):
                assert not torch.equal(out[b, k], clips[b, k])
                assert sorted(out[b, k].flatten().tolist()) == clips[b, k].flatten().tolist()
            else:
                assert torch.equal(out[b, k], clips[b, k])


def test_dynamic_image_closed_form() -> None:
    frames = torch.rand(2, 3, 1, 4, 4)  # L = 3: weights (-2, 0, 2) / 2 -> x3 - x1
    torch.testing.assert_close(dynamic_image(frames), frames[:, 2] - frames[:, 0])


# ---- VCOP ----------------------------------------------------------------------------------------------------


def test_vcop_shows_the_clips_in_the_target_order() -> None:
    torch.manual_seed(0)
    method = _make("vcop")
    seen = _spy_embed(method)
    _, target = method.task({"video": _timed_video(40, 6)})  # 3 clips of 2 frames: frames 0-1, 2-3, 4-5
    ids = _ids(seen[0]).view(40, 3, 2)
    for row, k in zip(ids.tolist(), target.tolist(), strict=True):
        order = list(permutations(range(3)))[k]
        assert row == [[2 * c, 2 * c + 1] for c in order]


def test_vcop_with_the_r3d_clip_trunk() -> None:
    torch.manual_seed(0)
    method = _make("vcop", backbone="r3d_18", clip_len=4, gap=0)
    assert isinstance(method.encoder(), VideoResNet)
    loss, _ = method({"video": torch.randint(0, 256, (2, 3, 12, 16, 16), dtype=torch.uint8)})
    loss.backward()
    assert method.clip_trunk is not None and method.clip_trunk.stem[0].weight.grad is not None


# ---- cue removal ---------------------------------------------------------------------------------------------


def test_black_border_box_finds_letterbox_bars() -> None:
    clip = torch.rand(3, 6, 40, 50) * 0.5 + 0.3
    clip[:, :, :5], clip[:, :, -3:], clip[:, :, :, :4] = 0.0, 0.02, 0.0
    assert black_border_box(clip) == (5, 37, 4, 50)
    dark = torch.full((3, 6, 40, 50), 0.02)  # a dark scene is not all border: at most a quarter per side
    assert black_border_box(dark) == (10, 30, 12, 38)
    out = crop_black_borders(clip[None])
    assert out.shape == (1, 3, 6, 40, 50) and float(out[0, :, :, :2].mean()) > 0.25  # the bars are gone
    clean = torch.rand(1, 3, 2, 10, 10) * 0.5 + 0.3
    assert torch.equal(crop_black_borders(clean), clean)


def test_stabilize_undoes_a_camera_translation() -> None:
    rng = np.random.default_rng(0)
    import cv2

    base = cv2.resize((rng.random((30, 40, 3)) * 255).astype(np.uint8), (160, 120), interpolation=cv2.INTER_CUBIC)
    frames = np.stack([np.roll(base, shift=(0, 3 * (k - 2)), axis=(0, 1)) for k in range(5)])  # panning camera
    out = stabilize(frames)
    inner = (slice(20, -20), slice(20, -20))
    before = np.abs(frames[0][inner].astype(int) - frames[2][inner]).mean()
    after = np.abs(out[0][inner].astype(int) - out[2][inner]).mean()
    assert after < 0.2 * before and np.array_equal(out[2], frames[2])


# ---- samplers ------------------------------------------------------------------------------------------------


def test_window_weights_respect_shots_static_frames_and_motion() -> None:
    motion = np.ones(19)
    motion[12] = 0.0  # frames 12 -> 13 do not move
    p = window_weights(20, 5, motion, shots=[(0, 8), (8, 20)], min_motion=0.5)
    starts = np.flatnonzero(p)
    # inside one shot: starts 0..3 and 8..15; without the static transition 12: not 9..12
    assert starts.tolist() == [0, 1, 2, 3, 8, 13, 14, 15]
    weighted = window_weights(10, 3, np.arange(1.0, 10.0))
    expected = np.array([np.arange(1.0, 10.0)[w:w + 2].sum() for w in range(8)])
    np.testing.assert_allclose(weighted, expected / expected.sum())
    assert window_weights(10, 3).tolist() == [1 / 8] * 8
    with pytest.raises(ValueError, match="needs motion"):
        window_weights(10, 3, min_motion=0.1)


def test_no_valid_window_is_reported_and_survives_pickling() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(NoValidWindow, match="inside one shot") as info:
        ordered_tuple(20, rng, 5, max_span=10, shots=[(0, 6), (6, 12), (12, 20)])
    again = pickle.loads(pickle.dumps(info.value))
    assert isinstance(again, NoValidWindow) and str(again) == str(info.value)


def test_clip_sequence_spacing_and_shots() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        clips = clip_sequence(100, rng, num_clips=3, length=4, stride=2, gap=3, shots=[(0, 30), (30, 100)])
        assert clips.shape == (3, 4)
        assert (np.diff(clips, axis=1) == 2).all() and (clips[1:, 0] - clips[:-1, -1] == 4).all()  # gap 3 between
        assert clips.max() < 30 or clips.min() >= 30  # the 27-frame run lies inside one shot
    starts = {int(clip_sequence(40, rng, 1, 8, shots=[(0, 20), (20, 40)])[0, 0]) for _ in range(300)}
    assert all(s + 7 < 20 or s >= 20 for s in starts) and min(starts) == 0 and max(starts) == 32
    with pytest.raises(ValueError, match="loop"):
        clip_sequence(10, rng, length=4, short="loop")


def test_odd_one_out_clips_come_from_one_window() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        clips = odd_one_out_clips(200, rng, num_clips=6, length=5, stride=2, window=30)
        assert clips.shape == (6, 5) and (np.diff(clips, axis=1) == 2).all()
        assert clips.max() - clips.min() < 30


# ---- vidssl eval pretext --videos ----------------------------------------------------------------------------


def _frame_folders(root: Path, lengths: list[int], size: int = 40) -> Path:
    """Frame folders of a smooth texture panning right, one per length (JPEG frames, as DAVIS)."""
    import cv2

    rng = np.random.default_rng(0)
    for v, n in enumerate(lengths):
        base = cv2.resize((rng.random((8, 24, 3)) * 255).astype(np.uint8), (size * 3, size),
                          interpolation=cv2.INTER_CUBIC)
        folder = root / f"video{v}"
        folder.mkdir(parents=True)
        for t in range(n):
            cv2.imwrite(str(folder / f"{t:05d}.jpg"), base[:, 2 * t: 2 * t + size])
    return root


def test_eval_pretext_on_videos_draws_the_methods_own_tuples(tmp_path: Path) -> None:
    from vidssl.cli import main
    from vidssl.engine.config import to_dict
    from vidssl.paths import REPO_ROOT
    from vidssl.train import load_run_config

    torch.manual_seed(0)
    method = _make("opn", motion="diff")
    overrides = [f"model.{k}={v}" for k, v in {**TINY["opn"], "motion": "diff"}.items()] + ["data.size=[32,32]",
                                                                                           "data.short_side=null"]
    cfg, _ = load_run_config(REPO_ROOT / "configs" / "opn.yaml", overrides)
    path = tmp_path / "opn.pt"
    torch.save({"config": to_dict(cfg), "model": method.state_dict()}, path)
    videos = _frame_folders(tmp_path / "videos", [20, 20, 3])  # the 3-frame one is too short for 4 frames
    outs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.json"
        assert main(["eval", "pretext", "--checkpoint", str(path), "--videos", str(videos), "--samples-per-video", "3",
                     "--batch-size", "4", "--json", str(out)]) == 0
        outs.append(json.loads(out.read_text()))
    a, b = outs
    assert a["count"] == 6 and a["chance"] == pytest.approx(1 / 12) and a["score"] == b["score"]  # seeded draws
    assert len(a["skipped"]) == 1 and "video2" in a["skipped"][0] and "needs 4 frames" in a["skipped"][0]


@pytest.mark.parametrize("name", ["shuffle_learn", "opn", "arrow_of_time", "o3n", "vcop"])
def test_visuals_show_the_presented_frames_framed_by_correctness(name: str) -> None:
    from tests.test_methods import _batch

    torch.manual_seed(0)
    method = _make(name).eval()
    with torch.no_grad():
        out = method.visuals(_batch(method))
    images = out["order"]
    assert images.dim() == 5 and images.shape[0] == 4 and images.shape[2] == 3  # (rows, K, 3, S, S), 4 samples
    assert float(images.min()) >= 0 and float(images.max()) <= 1
    corner = images[:, :, :, 0, 0]  # the frame colour: pure red or pure green
    assert bool(((corner == torch.tensor([1.0, 0, 0]).view(1, 1, 3)).all(2)
                 | (corner == torch.tensor([0, 1.0, 0]).view(1, 1, 3)).all(2)).all())
    assert method._record is None  # nothing left recording
    assert _make("vcop", backbone="r3d_18", clip_len=4, gap=0).visuals(
        {"video": torch.randint(0, 256, (2, 3, 12, 16, 16), dtype=torch.uint8)}) == {}
