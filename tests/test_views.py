"""Views (vidssl.data.views): what samplers are told about a video (its shots and motion, computed on first use
by the dataset), the samplers, and the device-side views (two views, multi-crop)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidssl.data.augment import ClipAugment
from vidssl.data.datasets import RawVideoDataset
from vidssl.data.samplers import ClipTooShort, random_clip
from vidssl.data.views import FrameSampler, MultiCrop, ShotFrames, StillFrame, TwoViews, VideoInfo
from vidssl.nn.colour import imagenet_normalize


def _two_shot_folder(root: Path, cut: int = 6, n: int = 14) -> Path:
    """A frame folder with a hard cut before frame ``cut``: dark noise, then bright noise."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(n):
        base = 40 if i < cut else 200
        frame = np.clip(base + rng.integers(-10, 10, (24, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(frame).save(root / f"{i:05d}.png")
    return root


def test_samplers_get_the_video_info_and_its_policy() -> None:
    rng = np.random.default_rng(0)
    clip = FrameSampler(random_clip, {"length": 4, "stride": 3})
    assert clip(VideoInfo(100), rng).shape == (4,)
    assert clip(VideoInfo(5, short="repeat"), rng).max() == 4  # the video's policy reaches the sampler
    with pytest.raises(ClipTooShort):
        clip(VideoInfo(5, short="skip"), rng)
    assert StillFrame()(VideoInfo(7), rng).tolist() == [0]
    with pytest.raises(ValueError, match="shots"):
        ShotFrames()(VideoInfo(10), rng)  # a VideoInfo without shots says so


def test_dataset_hands_samplers_shots_and_motion_computed_once(tmp_path: Path) -> None:
    folder = _two_shot_folder(tmp_path / "v")
    calls: list[str] = []

    class Spy:
        def __call__(self, video: VideoInfo, rng: np.random.Generator) -> np.ndarray:
            calls.append("shots")
            assert list(video.shots()) == [(0, 6), (6, 14)]  # the hard cut found by vidssl.data.shots
            motion = video.motion()
            assert motion.shape == (13,) and bool((motion >= 0).all())  # one score per transition
            diff = video.motion("diff")  # the cheap measure, cached apart from the flow
            assert diff.shape == (13,) and int(diff.argmax()) == 5  # the cut between frames 5 and 6
            return ShotFrames(num=3)(video, rng)

    ds = RawVideoDataset(folder, Spy(), size=None, seed=0)
    for epoch in range(4):
        ds.set_epoch(epoch)
        idx = ds[0]["frame_indices"].numpy()
        assert len(idx) == 3 and (idx.max() < 6 or idx.min() >= 6)  # three frames of one shot
    assert len(calls) == 4 and list(ds._shots) == [str(folder)] and list(ds._motion) == [(str(folder), "flow"),
                                                                                     (str(folder), "diff")]


def test_two_views_from_frames_or_from_one_image() -> None:
    views = TwoViews(ClipAugment(size=8, scale=(0.5, 1.0)))
    video = torch.zeros(2, 3, 2, 16, 16, dtype=torch.uint8)
    video[:, :, 1] = 255
    a, b = views(video)
    black, white = imagenet_normalize(torch.zeros(1, 3, 1, 1)), imagenet_normalize(torch.ones(1, 3, 1, 1))
    torch.testing.assert_close(a, black.expand_as(a))
    torch.testing.assert_close(b, white.expand_as(b))
    a, b = views(video[:, :, :1])  # a still image: two augmentations of frame 0
    torch.testing.assert_close(b, black.expand_as(b))


def test_multi_crop_sizes_and_frames() -> None:
    crops = MultiCrop(ClipAugment(size=12, scale=(0.4, 1.0)), ClipAugment(size=6, scale=(0.05, 0.4)), 2, 3)
    video = torch.zeros(4, 3, 2, 20, 20, dtype=torch.uint8)
    video[:, :, 1] = 255  # frame 1 white: crop i comes from frame i mod 2
    out = crops(video)
    assert [tuple(x.shape) for x in out] == [(4, 3, 12, 12)] * 2 + [(4, 3, 6, 6)] * 3
    white = imagenet_normalize(torch.ones(1, 3, 1, 1))
    is_white = [bool(torch.allclose(x, white.expand_as(x))) for x in out]
    assert is_white == [False, True, False, True, False]  # global 0, 1 then local 2, 3, 4 -> frames 0 1 0 1 0
    assert len(crops(video[:, :, :1])) == 5  # an image gives every crop from its one frame
    with pytest.raises(ValueError, match="uint8"):
        crops(video.float())


def test_multi_crop_with_one_augmentation_per_global_crop() -> None:
    """DINO's two global crops differ: crop i goes through global augmentation i (here the second solarises)."""
    plain = ClipAugment(size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
    solar = ClipAugment(size=8, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, solarize_p=1.0)
    crops = MultiCrop([plain, solar], ClipAugment(size=4, scale=(0.5, 1.0)), 2, 1)
    video = torch.full((2, 3, 1, 8, 8), 230, dtype=torch.uint8)  # bright: solarised to 1 - 230 / 255
    out = crops(video)
    assert [tuple(x.shape) for x in out] == [(2, 3, 8, 8)] * 2 + [(2, 3, 4, 4)]
    torch.testing.assert_close(out[0], imagenet_normalize(torch.full((2, 3, 8, 8), 230 / 255)))
    torch.testing.assert_close(out[1], imagenet_normalize(torch.full((2, 3, 8, 8), 1 - 230 / 255)))
    with pytest.raises(ValueError, match="1 global augmentations for 2"):
        MultiCrop([plain], plain, 2, 0)


def test_shots_and_motion_are_cached_on_disk_across_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Data-loader workers start afresh every epoch: a second dataset (a new worker) reads the analyses from the
    cache instead of decoding the video again, and a changed video is analysed again."""
    import vidssl.data.datasets as datasets

    monkeypatch.setenv("VIDSSL_CACHE", str(tmp_path / "cache"))
    folder = _two_shot_folder(tmp_path / "v")

    class Both:
        def __call__(self, video: VideoInfo, rng: np.random.Generator) -> np.ndarray:
            self.shots, self.motion = list(video.shots()), video.motion("diff")
            return np.zeros(1, dtype=np.int64)

    first = Both()
    RawVideoDataset(folder, first, size=None, seed=0)[0]
    assert len(list((tmp_path / "cache" / "analysis").glob("*.npy"))) == 2

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("analysed again although cached")

    monkeypatch.setattr(datasets, "video_shots", fail)
    monkeypatch.setattr(datasets, "video_motion_scores", fail)
    second = Both()
    RawVideoDataset(folder, second, size=None, seed=0)[0]
    assert second.shots == first.shots == [(0, 6), (6, 14)]
    np.testing.assert_array_equal(second.motion, first.motion)
    (folder / "extra.jpg").write_bytes((folder / sorted(p.name for p in folder.iterdir())[0]).read_bytes())
    with pytest.raises(AssertionError, match="analysed again"):  # a changed folder is a new key
        RawVideoDataset(folder, Both(), size=None, seed=0)[0]
