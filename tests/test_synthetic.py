"""The synthetic video generator: determinism, exact masks and keypoints, motion, and the written files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import scipy.io
from PIL import Image

from vidssl.data import synthetic
from vidssl.data.label_io import davis_palette
from vidssl.data.synthetic import (
    COMPLETE_MARKER,
    GENERATOR_VERSION,
    default_data,
    is_complete,
    make_scene,
    render,
    render_scene,
    video_name,
    video_seed,
    write_dataset,
)

# Small videos keep each test at a fraction of a second on CPU.
FRAMES, SIZE, OBJECTS = 16, (96, 128), 3
# The written dataset: 2 videos of 10 frames.
DS_SEED, DS_VIDEOS, DS_FRAMES = 5, 2, 10


def _scene(seed: int, **kwargs: float) -> synthetic.Scene:
    return make_scene(seed, FRAMES, SIZE, OBJECTS, **kwargs)  # type: ignore[arg-type]


def _write(root: Path, seed: int = DS_SEED) -> Path:
    return write_dataset(root, seed, DS_VIDEOS, DS_FRAMES, SIZE, OBJECTS)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _bilinear(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Sample ``(H, W, 3)`` at ``(N, 2)`` (x, y) points -> ``(N, 3)`` float32."""
    xs, ys = points[:, None, 0].astype(np.float32), points[:, None, 1].astype(np.float32)
    return cv2.remap(image.astype(np.float32), xs, ys, cv2.INTER_LINEAR)[:, 0]


# ----------------------------------------------------------------------------------------------------
# render


def test_render_layout() -> None:
    video = render(0, FRAMES, SIZE, OBJECTS)
    t, (h, w), k = FRAMES, SIZE, OBJECTS
    j = k * synthetic.KEYPOINTS_PER_OBJECT
    assert video.frames.shape == (t, h, w, 3) and video.frames.dtype == np.uint8
    assert video.masks.shape == (t, h, w) and video.masks.dtype == np.uint8
    assert video.keypoints.shape == (t, j, 2) and video.keypoints.dtype == np.float32
    assert video.visible.shape == (t, j) and video.visible.dtype == np.bool_
    assert video.keypoint_labels.tolist() == sorted([1, 2, 3] * synthetic.KEYPOINTS_PER_OBJECT)
    # Every object is present in frame 0, as a DAVIS reader counting objects there requires.
    assert set(np.unique(video.masks[0]).tolist()) == {0, 1, 2, 3}


def test_same_seed_same_arrays_different_seed_differs() -> None:
    a, b, c = (render(seed, FRAMES, SIZE, OBJECTS) for seed in (3, 3, 4))
    for name in ("frames", "masks", "keypoints", "visible"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.frames, c.frames)
    assert not np.array_equal(a.keypoints, c.keypoints)


def test_object_pixels_are_the_warped_texture() -> None:
    # Without noise or brightness change, the pixels labelled k + 1 must be exactly object k's texture
    # warped by its affine, re-rendered here alone; the other pixels the warped background.
    scene = _scene(1, noise_std=0.0, brightness=0.0)
    video = render_scene(scene)
    h, w = scene.size
    for t in (0, 7, 15):
        background = cv2.warpAffine(scene.background, scene.camera[t], (w, h), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT_101)
        np.testing.assert_array_equal(video.frames[t][video.masks[t] == 0], background[video.masks[t] == 0])
        for k, obj in enumerate(scene.objects):
            alone = cv2.warpAffine(obj.texture, obj.affines[t], (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT_101)
            here = video.masks[t] == k + 1
            np.testing.assert_array_equal(video.frames[t][here], alone[here])
            # And the object does not look like the background it covers.
            if here.sum() > 50:
                assert np.abs(alone[here].astype(float) - background[here]).mean() > 15


def test_subset_render_matches_full_render() -> None:
    # With noise on: rendering one object alone gives the same pixels wherever the full render shows it,
    # and its own mask contains the visible part (occlusion only removes pixels).
    scene = _scene(2)
    full = render_scene(scene)
    empty = render_scene(scene, objects=())
    np.testing.assert_array_equal(full.frames[full.masks == 0], empty.frames[full.masks == 0])
    assert empty.masks.max() == 0 and empty.keypoints.shape[1] == 0
    for k in range(len(scene.objects)):
        alone = render_scene(scene, objects=[k])
        shown = full.masks == k + 1
        assert np.all(alone.masks[shown] == k + 1)
        np.testing.assert_array_equal(full.frames[shown], alone.frames[shown])


def test_keypoints_lie_in_their_object_and_follow_it() -> None:
    scene = _scene(3, noise_std=0.0, brightness=0.0)
    video = render_scene(scene)
    h, w = scene.size
    col, row = np.round(video.keypoints[..., 0]).astype(int), np.round(video.keypoints[..., 1]).astype(int)
    inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
    t_idx = np.arange(video.masks.shape[0])[:, None]
    seen = video.masks[t_idx, row.clip(0, h - 1), col.clip(0, w - 1)]
    # Visible points land on their own object; in-frame points that are not visible are covered by a
    # nearer object.
    assert np.all(seen[video.visible] == np.broadcast_to(video.keypoint_labels, seen.shape)[video.visible])
    hidden = inside & ~video.visible
    depth = np.array([0] + [obj.depth + 1 for obj in scene.objects])
    own_depth = depth[video.keypoint_labels][None, :].repeat(len(seen), 0)
    assert np.all(depth[seen[hidden]] > own_depth[hidden])
    for k in range(len(scene.objects)):
        alone = render_scene(scene, objects=[k])
        mine = video.keypoint_labels == k + 1
        # Every in-frame point of object k lies inside its unoccluded shape ...
        inside_k = inside[:, mine]
        assert np.all(alone.masks[t_idx, row.clip(0, h - 1), col.clip(0, w - 1)][:, mine][inside_k] == k + 1)
        # ... is its anchor on the object carried by the same affine that warps the object's pixels ...
        obj = scene.objects[k]
        expected = np.einsum("tij,pj->tpi", obj.affines, np.c_[obj.anchors, np.ones(len(obj.anchors))])
        np.testing.assert_allclose(alone.keypoints, expected, atol=1e-3)
        # ... and so shows, in every frame, the texture found at the anchor. Bilinear sampling twice
        # blurs a little; points 1.5 px off already differ clearly more.
        anchor_colour = _bilinear(obj.texture, obj.anchors)  # (P, 3)
        diffs, control = [], []
        for t in range(len(alone.keypoints)):
            ok = inside_k[t]
            diffs.append(np.abs(_bilinear(alone.frames[t], alone.keypoints[t]) - anchor_colour)[ok])
            off = alone.keypoints[t] + [1.5, 0.0]
            control.append(np.abs(_bilinear(alone.frames[t], off) - anchor_colour)[ok])
        error, off_error = np.median(np.concatenate(diffs)), np.median(np.concatenate(control))
        assert error < 3.0 and off_error > 2 * error, (error, off_error)


def test_objects_move_occlude_and_leave() -> None:
    # At the default size and length: objects travel, change apparent area, move a few pixels per frame,
    # occlude each other, and at least one is partly outside the frame at some time.
    scene = make_scene(0)
    video = render_scene(scene)
    h, w = scene.size
    occluded_any, partly_out_any = False, False
    for k, obj in enumerate(scene.objects):
        own = render_scene(scene, objects=[k]).masks == k + 1  # (T, H, W)
        shown = video.masks == k + 1
        area = shown.sum(axis=(1, 2))
        assert area.max() > 1.1 * area.min()
        centres = np.array([np.argwhere(m).mean(axis=0) for m in own])
        assert np.linalg.norm(centres[-1] - centres[0]) > 20
        assert np.linalg.norm(np.diff(centres, axis=0), axis=1).max() < 6  # continuous motion
        occluded_any |= bool((own & ~shown).sum(axis=(1, 2)).max() > 0.2 * own.sum(axis=(1, 2)).mean())
        full_area = obj.shape.sum() * np.abs(np.linalg.det(obj.affines[:, :, :2]))
        partly_out_any |= bool(np.any(own.sum(axis=(1, 2)) < 0.85 * full_area))
    assert occluded_any and partly_out_any
    # Some keypoints get hidden (occluded or out of the frame) and are seen again or were seen before.
    assert (~video.visible).any() and video.visible.any(axis=0).all()
    assert (h, w) == synthetic.DEFAULT_SIZE


def test_textures_are_not_flat() -> None:
    video = render(6, FRAMES, SIZE, OBJECTS)
    for label in range(4):
        pixels = video.frames[0][video.masks[0] == label].astype(np.float64)  # (N, 3)
        assert pixels.std(axis=0).mean() > 15, f"label {label} looks flat"
    # Frames are not flat along small offsets either: there is fine detail to track.
    gradient = np.abs(np.diff(video.frames[0].astype(np.float64), axis=1)).mean()
    assert gradient > 4


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="even"):
        render(0, num_frames=4, size=(95, 128))
    with pytest.raises(ValueError, match="num_objects"):
        render(0, num_frames=4, size=(96, 128), num_objects=0)
    with pytest.raises(ValueError, match="num_frames"):
        render(0, num_frames=1)
    with pytest.raises(ValueError, match="non-negative"):
        render(-1, num_frames=4, size=(64, 64))
    with pytest.raises(ValueError, match="nowhere.*even"):
        write_dataset(Path("nowhere"), size=(64, 63))


# ----------------------------------------------------------------------------------------------------
# the realistic options (synthetic.REALISTIC)


def test_scene_palette_takes_away_the_colour_shortcut() -> None:
    # With the scene's palette, almost every object pixel has a background pixel of nearly its colour in
    # the same frame; with random hues (the default) the typical object pixel is far from all of them.
    from scipy.spatial import cKDTree

    for seed in range(3):
        distances = []
        for palette in (False, True):
            video = render_scene(_scene(seed, scene_palette=palette))
            frame, mask = video.frames[0].astype(np.float64), video.masks[0]
            nearest, _ = cKDTree(frame[mask == 0][::7]).query(frame[mask > 0])
            distances.append(float(np.median(nearest)))
        assert distances[1] < 10 and distances[0] > 2.5 * distances[1], (seed, distances)


def test_lighting_is_one_smooth_field_over_background_and_objects() -> None:
    import dataclasses

    scene = _scene(1, noise_std=0.0, brightness=0.0, lighting=0.25)
    lit = render_scene(scene)
    unlit = render_scene(dataclasses.replace(scene, light=None, light_camera=None))
    np.testing.assert_array_equal(lit.masks, unlit.masks)  # light changes pixels, never labels
    bright = unlit.frames.astype(np.float64).mean(-1) > 40  # where a ratio is well defined
    ratio = np.log((lit.frames.astype(np.float64).mean(-1) + 0.5) / (unlit.frames.astype(np.float64).mean(-1) + 0.5))
    assert 0.12 < ratio[0][bright[0]].std() < 0.4  # light and shade, about exp(+-0.25)
    # One field: objects and the background right beside them are lit alike (an object's boundary is not
    # an edge of the light), and the field is smooth: neighbouring pixels within 3% of each other.
    edge = (lit.masks[0] > 0) ^ cv2.dilate((lit.masks[0] > 0).astype(np.uint8), np.ones((5, 5))).astype(bool)
    across = cv2.blur(ratio[0] * bright[0], (9, 9)) / np.maximum(cv2.blur(bright[0].astype(np.float64), (9, 9)), 1e-6)
    assert np.abs(ratio[0] - across)[edge & bright[0]].mean() < 0.04
    step = np.abs(np.diff(ratio[0], axis=1))[bright[0][:, 1:] & bright[0][:, :-1]]
    assert np.median(step) < 0.03


def test_appearance_drift_is_the_objects_gain() -> None:
    # Without noise, light or blur, an object's pixels are its warped texture times its gain of the frame.
    scene = _scene(2, noise_std=0.0, brightness=0.0, appearance_drift=0.12)
    video = render_scene(scene)
    h, w = scene.size
    for k, obj in enumerate(scene.objects):
        assert obj.gains is not None and obj.gains.shape == (FRAMES, 3)
        assert 0.03 < np.abs(np.log(obj.gains)).max() < 0.4
        for t in (0, 9, 15):
            here = video.masks[t] == k + 1
            alone = cv2.warpAffine(obj.texture, obj.affines[t], (w, h), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT_101).astype(np.float32)
            expected = np.clip(alone * obj.gains[t].astype(np.float32) + 0.5, 0, 255).astype(np.uint8)
            np.testing.assert_array_equal(video.frames[t][here], expected[here])


def test_motion_blur_softens_moving_textures_and_keeps_the_masks() -> None:
    import dataclasses

    scene = _scene(3, noise_std=0.0, brightness=0.0, shutter=1.0, pan_speed=20.0)
    blurred, sharp = render_scene(scene), render_scene(dataclasses.replace(scene, shutter=0.0))
    np.testing.assert_array_equal(blurred.masks, sharp.masks)
    np.testing.assert_array_equal(blurred.keypoints, sharp.keypoints)
    # The camera pans about 7 px per frame here: an exposure of one frame interval smears the background
    # along it, so its fine detail (the Laplacian energy away from outlines) drops clearly (to 0.65; 0.99 at
    # 0.6 px per frame).
    inner = cv2.erode((sharp.masks[5] == 0).astype(np.uint8), np.ones((7, 7))).astype(bool)

    def energy(frame: np.ndarray) -> float:
        grad = np.abs(cv2.Laplacian(frame.astype(np.float64).mean(-1), cv2.CV_64F))
        return float(grad[inner].mean())

    assert energy(blurred.frames[5]) < 0.8 * energy(sharp.frames[5])
    # A sub-frame exposure of a still scene changes nothing: the blur follows the motion only.
    still = dataclasses.replace(scene, camera=np.repeat(scene.camera[5:6], FRAMES, axis=0), objects=())
    np.testing.assert_array_equal(render_scene(still).frames[5],
                                  render_scene(dataclasses.replace(still, shutter=0.0)).frames[5])


def test_fast_pan_stays_inside_the_background() -> None:
    # The pan is centred and the background grown for it: every frame corner maps inside the background,
    # so no mirrored border ever shows; and the camera does move by about pan_speed px per frame.
    for seed in range(4):
        scene = _scene(seed, pan_speed=4.0)
        hb, wb = scene.background.shape[:2]
        h, w = scene.size
        corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)
        centres = []
        for affine in scene.camera:
            inverse = cv2.invertAffineTransform(affine)
            mapped = corners @ inverse[:, :2].T + inverse[:, 2]
            assert mapped.min() >= 0 and (mapped[:, 0] < wb - 1).all() and (mapped[:, 1] < hb - 1).all()
            centres.append(inverse @ np.array([(w - 1) / 2, (h - 1) / 2, 1.0]))
        speed = np.linalg.norm(centres[-1] - centres[0]) / (FRAMES - 1) / (min(h, w) / 240)
        assert 1.5 < speed < 5.5, (seed, speed)


def test_realistic_options_render() -> None:
    video = render(4, FRAMES, SIZE, OBJECTS, **synthetic.REALISTIC)
    assert set(np.unique(video.masks[0]).tolist()) == {0, 1, 2, 3}
    assert not np.array_equal(video.frames, render(4, FRAMES, SIZE, OBJECTS).frames)


def test_write_dataset_with_scene_options(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "real", DS_SEED, 1, DS_FRAMES, SIZE, OBJECTS, scene=synthetic.REALISTIC)
    video = render(video_seed(DS_SEED, 0), DS_FRAMES, SIZE, OBJECTS, **synthetic.REALISTIC)
    mask = np.array(Image.open(root / "davis" / "Annotations" / "480p" / video_name(DS_SEED, 0) / "00003.png"))
    np.testing.assert_array_equal(mask, video.masks[3])
    assert json.loads((root / COMPLETE_MARKER).read_text())["scene"] == synthetic.REALISTIC
    with pytest.raises(ValueError, match=r"typo: scene option 'lightng'.*did you mean 'lighting'"):
        write_dataset(tmp_path / "typo", DS_SEED, 1, DS_FRAMES, SIZE, OBJECTS, scene={"lightng": 0.2})
    assert not (tmp_path / "typo").exists()


def test_video_seeds_are_disjoint_across_dataset_seeds() -> None:
    train = {video_seed(1, i) for i in range(50)}
    test = {video_seed(0, i) for i in range(50)}
    assert len(train) == 50 and len(test) == 50 and not train & test
    assert video_name(0, 2) != video_name(1, 2)


# ----------------------------------------------------------------------------------------------------
# write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("synthetic") / "data")


def _videos() -> list[tuple[str, synthetic.SyntheticVideo]]:
    """The (name, video) pairs the dataset fixture should hold, rendered afresh."""
    return [
        (video_name(DS_SEED, i), render(video_seed(DS_SEED, i), DS_FRAMES, SIZE, OBJECTS))
        for i in range(DS_VIDEOS)
    ]


def test_same_seed_same_bytes(dataset: Path, tmp_path: Path) -> None:
    again = _write(tmp_path / "again")
    first, second = _hashes(dataset), _hashes(again)
    assert first == second
    assert any(name.endswith(".mp4") for name in first) and any(name.endswith(".mat") for name in first)
    other = _write(tmp_path / "other", seed=DS_SEED + 1)
    assert not set(_hashes(other).values()) & {h for n, h in first.items() if n.endswith(".mp4")}


def test_marker_and_layout(dataset: Path) -> None:
    assert is_complete(dataset)
    params = json.loads((dataset / COMPLETE_MARKER).read_text())
    assert params["generator_version"] == GENERATOR_VERSION and params["seed"] == DS_SEED
    names = (dataset / "davis" / "ImageSets" / "2017" / "val.txt").read_text().split()
    assert names == [name for name, _ in _videos()]
    assert not list(dataset.parent.glob(".*tmp*"))  # the temporary folder was renamed away


def test_mp4_decodes_close_to_rendered_frames(dataset: Path) -> None:
    for name, video in _videos():
        with av.open(str(dataset / "videos" / f"{name}.mp4")) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
            decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        assert decoded.shape == video.frames.shape
        psnr = [_psnr(d, f) for d, f in zip(decoded, video.frames, strict=True)]
        assert min(psnr) > 30, psnr
        # Frames are in order: each decoded frame is closest to its own rendered frame.
        assert _psnr(decoded[3], video.frames[3]) > _psnr(decoded[3], video.frames[6]) + 3


def test_davis_tree_reads_back(dataset: Path) -> None:
    palette = davis_palette()
    for name, video in _videos():
        images = sorted((dataset / "davis" / "JPEGImages" / "480p" / name).iterdir())
        labels = sorted((dataset / "davis" / "Annotations" / "480p" / name).iterdir())
        assert [p.name for p in images] == [f"{t:05d}.jpg" for t in range(len(video.frames))]
        assert [p.name for p in labels] == [f"{t:05d}.png" for t in range(len(video.frames))]
        for t in (0, len(video.frames) - 1):
            with Image.open(labels[t]) as image:
                assert image.mode == "P"
                written = np.array(image)
                file_palette = np.array(image.getpalette()[: 3 * 256], np.uint8).reshape(-1, 3)
            np.testing.assert_array_equal(written, video.masks[t])
            assert written.max() <= OBJECTS
            np.testing.assert_array_equal(file_palette[: len(file_palette)], palette[: len(file_palette)])
            with Image.open(images[t]) as image:
                assert _psnr(np.array(image.convert("RGB")), video.frames[t]) > 30
        assert set(np.unique(video.masks[0]).tolist()) == set(range(OBJECTS + 1))


def test_keypoint_files_round_trip(dataset: Path) -> None:
    for name, video in _videos():
        with np.load(dataset / "keypoints" / f"{name}.npz") as stored:
            np.testing.assert_array_equal(stored["keypoints"], video.keypoints)
            np.testing.assert_array_equal(stored["visible"], video.visible)
            np.testing.assert_array_equal(stored["keypoint_labels"], video.keypoint_labels)
        folder = dataset / "jhmdb" / name
        pos_img = scipy.io.loadmat(folder / "joint_positions.mat")["pos_img"]
        t, j = video.visible.shape
        assert pos_img.shape == (2, j, t)
        # 1-based MATLAB pixel coordinates: x of joint 2 in frame 4 is pos_img[0, 2, 4] - 1.
        assert pos_img[0, 2, 4] - 1 == pytest.approx(float(video.keypoints[4, 2, 0]), abs=1e-5)
        np.testing.assert_allclose(pos_img.transpose(2, 1, 0) - 1, video.keypoints, atol=1e-5)
        frames = sorted(p.name for p in folder.glob("*.png"))
        assert frames == [f"{i:05d}.png" for i in range(1, t + 1)]
        with Image.open(folder / "00001.png") as image:
            np.testing.assert_array_equal(np.array(image), video.frames[0])  # lossless


def test_existing_folder_is_not_overwritten_silently(tmp_path: Path) -> None:
    root = tmp_path / "taken"
    root.mkdir()
    (root / "mine.txt").write_text("user file")
    with pytest.raises(FileExistsError, match="taken"):
        write_dataset(root, num_videos=1, num_frames=4, size=(64, 64), num_objects=1)
    assert (root / "mine.txt").read_text() == "user file"
    write_dataset(root, num_videos=1, num_frames=4, size=(64, 64), num_objects=1, overwrite=True)
    assert is_complete(root) and not (root / "mine.txt").exists()
    empty = tmp_path / "empty"
    empty.mkdir()  # an existing empty folder is fine to write into
    assert is_complete(write_dataset(empty, num_videos=1, num_frames=4, size=(64, 64), num_objects=1))


def test_interrupted_write_leaves_nothing_that_looks_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = synthetic._write_video

    def failing(root: Path, name: str, video: synthetic.SyntheticVideo) -> None:
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(root, name, video)

    monkeypatch.setattr(synthetic, "_write_video", failing)
    root = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):
        write_dataset(root, num_videos=2, num_frames=4, size=(64, 64), num_objects=1)
    assert not root.exists() and not is_complete(root)
    assert list(tmp_path.iterdir()) == []


def test_default_data_is_cached_and_keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDSSL_CACHE", str(tmp_path))
    root = default_data(2, 1, 4, (64, 64), 1)
    assert root.parent == tmp_path / "synthetic" and is_complete(root)
    assert f"v{GENERATOR_VERSION}" in root.name and "64x64" in root.name

    def refuse(*args: object, **kwargs: object) -> Path:
        raise AssertionError("a complete cached dataset was rewritten")

    monkeypatch.setattr(synthetic, "write_dataset", refuse)
    assert default_data(2, 1, 4, (64, 64), 1) == root
    monkeypatch.undo()
    monkeypatch.setenv("VIDSSL_CACHE", str(tmp_path))
    # A different request gets its own folder; an incomplete folder is rewritten.
    assert default_data(3, 1, 4, (64, 64), 1) != root
    (root / COMPLETE_MARKER).unlink()
    assert default_data(2, 1, 4, (64, 64), 1) == root and is_complete(root)
