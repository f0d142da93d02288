from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from vidssl.data.datasets import ImageFolderDataset, RawVideoDataset, build_dataset, cover_crop
from vidssl.data.samplers import random_clip
from vidssl.data.video import open_video
from vidssl.data.views import FrameSampler


def _frame(i: int, h: int = 24, w: int = 32) -> np.ndarray:
    """A frame whose pixel (y, x) encodes (i, y, x), so any crop or index mix-up is visible."""
    frame = np.zeros((h, w, 3), dtype=np.uint8)
    frame[..., 0] = i
    frame[..., 1] = np.arange(h)[:, None]
    frame[..., 2] = np.arange(w)[None, :]
    return frame


def _folder(root: Path, name: str, n: int) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(_frame(i)).save(folder / f"{i:05d}.png")  # PNG: lossless, exact
    return folder


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    _folder(tmp_path, "a", 20)
    _folder(tmp_path, "b", 12)
    return tmp_path


def test_items_are_the_sampled_frames(tree: Path) -> None:
    ds = RawVideoDataset(tree, FrameSampler(random_clip, dict(length=4, stride=2)), size=None, seed=3)
    assert len(ds) == 2
    item = ds[0]
    assert item["video"].dtype == torch.uint8 and item["video"].shape == (3, 4, 24, 32)  # (C, T, H, W)
    idx = item["frame_indices"].numpy()
    assert np.all(np.diff(idx) == 2)
    expected = open_video(tree / "a").get(idx)
    assert np.array_equal(item["video"].permute(1, 2, 3, 0).numpy(), expected)
    assert item["skipped"] == "" and item["index"] == 0 and item["label"] == -1


def test_samples_are_a_pure_function_of_seed_epoch_index(tree: Path) -> None:
    sampler = FrameSampler(random_clip, dict(length=3))
    a = RawVideoDataset(tree, sampler, size=(16, 16), seed=1)
    b = RawVideoDataset(tree, sampler, size=(16, 16), seed=1)
    draws = []
    for epoch in range(6):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        x, y = a[0], b[0]
        assert torch.equal(x["video"], y["video"]) and torch.equal(x["frame_indices"], y["frame_indices"])
        draws.append(tuple(x["frame_indices"].tolist()))
    assert len(set(draws)) > 1  # the epoch changes the sample


def test_cover_crop_keeps_aspect_and_crops_consistently() -> None:
    frames = np.stack([_frame(i, 40, 80) for i in range(3)])
    rng = np.random.default_rng(0)
    out = cover_crop(frames, (20, 20), rng)
    assert out.shape == (3, 20, 20, 3)
    # Scale 0.5 -> 20 x 40, then a 20 x 20 window: the same window on every frame, rows cover all of y.
    assert np.array_equal(out[0, ..., 1:], out[2, ..., 1:])
    assert out[..., 1].min() <= 2 and out[..., 1].max() >= 37
    assert np.all(np.diff(out[0, 0, :, 2].astype(int)) > 0)  # x still increasing: no flip, no distortion


def test_cover_crop_short_side_sets_the_scale() -> None:
    frames = np.stack([_frame(i, 40, 80) for i in range(2)])
    # short side 40 -> native scale: a 20 x 20 window is an exact piece of the frame
    out = cover_crop(frames, (20, 20), np.random.default_rng(1), short_side=40)
    top, left = int(out[0, 0, 0, 1]), int(out[0, 0, 0, 2])
    assert np.array_equal(out, frames[:, top:top + 20, left:left + 20])
    # short side 20 is the plain cover (scale 0.5); a short side that would not cover the window is raised
    rng_a, rng_b = np.random.default_rng(2), np.random.default_rng(2)
    assert np.array_equal(cover_crop(frames, (20, 20), rng_a, short_side=20), cover_crop(frames, (20, 20), rng_b))
    assert cover_crop(frames, (30, 30), np.random.default_rng(3), short_side=10).shape == (2, 30, 30, 3)


def test_bad_files_are_skipped_and_reported(tree: Path) -> None:
    (tree / "zz_text.mp4").write_text("this is not a video")
    (tree / "zz_empty.mp4").write_bytes(b"")
    _folder(tree, "short", 2)
    ds = RawVideoDataset(tree, FrameSampler(random_clip, dict(length=5)), size=None, short="skip", seed=0)
    assert len(ds) == 5
    reasons: dict[str, str] = {}
    for i in range(len(ds)):
        item = ds[i]  # never raises: bad items are replaced by good ones
        assert Path(ds.paths[item["index"]]).name in {"a", "b"}
        for line in filter(None, item["skipped"].split("\n")):
            path, reason = line.split(": ", 1)
            reasons[Path(path).name] = reason
    assert set(reasons) == {"zz_text.mp4", "zz_empty.mp4", "short"}
    assert "5" in reasons["short"] and "2" in reasons["short"]  # needed vs available frames
    assert {Path(p).name for p, _ in ds.skipped()} == set(reasons)


def test_all_bad_raises_clearly(tmp_path: Path) -> None:
    (tmp_path / "x.mp4").write_text("nope")
    ds = RawVideoDataset(tmp_path, FrameSampler(random_clip, dict(length=2)), size=None, max_retries=3)
    with pytest.raises(RuntimeError, match=r"no readable sample after 4 attempts.*x\.mp4"):
        ds[0]


def test_missing_or_empty_source(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        RawVideoDataset(tmp_path / "nowhere", FrameSampler(random_clip, dict(length=2)))
    with pytest.raises(ValueError, match="no videos or frame folders"):
        RawVideoDataset(tmp_path, FrameSampler(random_clip, dict(length=2)))


def test_workers_give_the_same_samples_and_report_skips(tree: Path) -> None:
    (tree / "zz_text.mp4").write_text("not a video")
    ds = RawVideoDataset(tree, FrameSampler(random_clip, dict(length=2)), size=(16, 16), seed=5)
    batches = {}
    for workers in (0, 2):
        loader = DataLoader(ds, batch_size=3, num_workers=workers)
        (batch,) = list(loader)
        batches[workers] = batch
    assert torch.equal(batches[0]["video"], batches[2]["video"])
    assert any("zz_text.mp4" in s for s in batches[2]["skipped"])


def test_manifest_source(tree: Path) -> None:
    from vidssl.data.index import build_manifest, discover, write_manifest

    (tree / "bad.mp4").write_text("nope")
    rows = build_manifest(discover(tree), workers=1, progress=False)
    write_manifest(rows, tree / "m.csv")
    ds = RawVideoDataset(tree / "m.csv", FrameSampler(random_clip, dict(length=2)), size=None)
    assert sorted(Path(p).name for p in ds.paths) == ["a", "b"]  # the error row is left out


def test_image_folder(tmp_path: Path) -> None:
    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.fromarray(_frame(10 * label + i, 8, 8)).save(tmp_path / name / f"{i}.png")
    (tmp_path / "dog" / "9.png").write_bytes(b"corrupt")
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ["cat", "dog"] and len(ds) == 7
    item = ds[4]
    assert item["video"].shape == (3, 1, 8, 8) and item["label"] == 1
    assert item["video"][0, 0, 0, 0] == 11
    bad = ds[6]
    assert "9.png" in bad["skipped"] and bad["index"] != 6


def test_build_dataset_images_on_cifar(shared_data: Path) -> None:
    ds = build_dataset("images", shared_data / "cifar10" / "test")
    assert len(ds) == 10_000 and ds[0]["video"].shape == (3, 1, 32, 32)
    with pytest.raises(ValueError, match="sampler"):
        build_dataset("video", shared_data / "videos")


def test_real_videos_and_frames(shared_data: Path) -> None:
    sources = [shared_data / "videos" / "demo.mp4", shared_data / "frames" / "soapbox"]
    ds = RawVideoDataset(sources, FrameSampler(random_clip, dict(length=4, stride=4)), size=(64, 64))
    for i in range(len(ds)):
        item = ds[i]
        assert item["video"].shape == (3, 4, 64, 64) and item["skipped"] == ""


def test_heap_fragmentation_limit_is_applied_on_glibc() -> None:
    import platform

    from vidssl.data.datasets import limit_heap_fragmentation

    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert limit_heap_fragmentation() is expected


def test_dataset_survives_pickling(tree: Path) -> None:
    import pickle

    ds = RawVideoDataset(tree, FrameSampler(random_clip, dict(length=2)), size=None, seed=2)
    first = ds[0]
    again = pickle.loads(pickle.dumps(ds))  # what a spawned data-loader worker receives
    assert torch.equal(again[0]["video"], first["video"])


def test_list_source_expands_each_entry_in_order_without_repeats(tree: Path) -> None:
    ds = RawVideoDataset([tree / "b", tree, str(tree / "a")], FrameSampler(random_clip, dict(length=2)), size=None)
    assert [Path(p).name for p in ds.paths] == ["b", "a"]  # b first (listed first), then the folder's a; no repeat
    with pytest.raises(FileNotFoundError, match="nothere"):
        RawVideoDataset([tree, tree / "nothere"], FrameSampler(random_clip, dict(length=2)), size=None)


def test_run_config_takes_a_list_of_sources(tree: Path) -> None:
    from vidssl.train import resolve_config

    cfg, _ = resolve_config({"method": "crw", "data": {"source": [str(tree / "a"), str(tree / "b")]}})
    assert cfg.data.source == [str(tree / "a"), str(tree / "b")]


def test_resizing_in_the_decoder_draws_the_same_sample(tmp_path: Path) -> None:
    from tests.videogen import SPECS, write_video

    spec = next(s for s in SPECS if s.name == "x264_mkv_b2")
    path = write_video(tmp_path / f"v{spec.suffix}", spec)  # 64x48
    sampler = FrameSampler(random_clip, dict(length=4, stride=3))
    for size, short_side in (((32, 32), None), ((40, 40), 72), ((24, 56), None)):
        a = RawVideoDataset([path], sampler, size=size, short_side=short_side, seed=5, resize_in_decoder=True)
        b = RawVideoDataset([path], sampler, size=size, short_side=short_side, seed=5, resize_in_decoder=False)
        for epoch in range(3):
            a.set_epoch(epoch)
            b.set_epoch(epoch)
            x, y = a[0], b[0]
            assert torch.equal(x["frame_indices"], y["frame_indices"])  # the same frames, the same window
            assert x["video"].shape == y["video"].shape == (3, 4, *size)
            diff = (x["video"].int() - y["video"].int()).abs().float().mean()
            assert diff < 3.0, (size, short_side, float(diff))  # only the filters' rounding differs

