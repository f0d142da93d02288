"""JHMDB keypoint propagation and PCK: closed forms, decoding, the reader, the real clip end to end."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vidssl.eval import jhmdb
from vidssl.eval.jhmdb import (
    JhmdbError,
    decode_heatmaps,
    joint_heatmaps,
    normalised_distances,
    pck,
    read_joints,
)
from vidssl.eval.propagation import JhmdbConfig, PropagationConfig

# vidssl's own keypoint variant: native size, arg-max decoding, a 3x3 patch at the rounded cell
ROUNDED = JhmdbConfig(size=None, decode_topk=1, heatmap="rounded")


def _box_joints() -> np.ndarray:
    """Three joints whose extent is 30 x 40 px: diagonal 50, box 0.6 * 50 = 30 px."""
    return np.array([[10.0, 20.0], [40.0, 60.0], [25.0, 30.0]])


def test_pck_perfect_is_one_at_every_alpha() -> None:
    gt = np.stack([_box_joints() + t for t in range(5)])  # (5, 3, 2)
    d = normalised_distances(gt, gt, np.ones((5, 3), bool))
    assert np.isnan(d[0]).all()  # frame 0 is the given one
    per_joint, mean = pck([d, d])
    np.testing.assert_array_equal(mean, np.ones(5))
    np.testing.assert_array_equal(per_joint, np.ones((5, 3)))


def test_pck_offset_exactly_at_threshold_counts() -> None:
    gt = np.stack([_box_joints()] * 3)
    pred = gt.copy()
    pred[1:, 0, 0] += 3.0  # joint 0 off by 3 px = 0.1 * box: correct at alpha 0.1 (<=)
    pred[1:, 1, 1] += 6.0 + 1e-9  # joint 1 just above 0.2 * box
    pred[1:, 2] += [9.0, 12.0]  # joint 2 off by 15 px = 0.5 * box
    d = normalised_distances(pred, gt, np.ones((3, 3), bool))
    box = 0.6 * math.hypot(30.0, 40.0)
    np.testing.assert_allclose(d[1:], [[3 / box, (6 + 1e-9) / box, 15 / box]] * 2)
    per_joint, mean = pck([d], alphas=(0.1, 0.2, 0.3, 0.5))
    np.testing.assert_array_equal(per_joint[:, 0], [1, 1, 1, 1])
    np.testing.assert_array_equal(per_joint[:, 1], [0, 0, 1, 1])
    np.testing.assert_array_equal(per_joint[:, 2], [0, 0, 0, 1])
    np.testing.assert_allclose(mean, [1 / 3, 1 / 3, 2 / 3, 1])


def test_pck_box_uses_visible_joints_only_and_pools_per_joint() -> None:
    gt = np.stack([_box_joints()] * 2)
    gt[1, 2] = [1000.0, 1000.0]  # far away but invisible: must not enter the box
    vis = np.array([[True, True, True], [True, True, False]])
    pred = gt.copy()
    pred[1, 0, 0] += 6.0  # 6 / 30 = 0.2
    d = normalised_distances(pred, gt, vis)
    assert d[1, 0] == pytest.approx(0.2) and d[1, 1] == 0 and np.isnan(d[1, 2])
    # a second clip where joint 0 is perfect: joint 0 pools 2 distances, joint 2 pools 1
    d2 = normalised_distances(gt[:, :, :] * 0 + _box_joints(), gt * 0 + _box_joints(), np.ones((2, 3), bool))
    per_joint, mean = pck([d, d2], alphas=(0.1,))
    np.testing.assert_allclose(per_joint[0], [0.5, 1.0, 1.0])  # mean over joints, not over frames
    assert mean[0] == pytest.approx(2.5 / 3)


def test_heatmap_argmax_recovers_joint_at_cell_positions() -> None:
    image, feat = (240, 320), (30, 40)  # stride 8
    joints = np.array([[0.0, 0.0], [8.0 * 7, 8.0 * 3], [8.0 * 39, 8.0 * 29], [8.0 * 20 + 3.9, 8.0 * 10 - 3.9]])
    heat = joint_heatmaps(joints, image, feat, patch="rounded")
    assert heat.shape == (4, 30, 40) and heat.max() == 1.0
    assert heat[1, 3, 7] == 1.0 and heat[1, 3, 8] == pytest.approx(math.exp(-2.0))  # sigma 0.5 cells
    assert heat[1, 4, 8] == pytest.approx(math.exp(-4.0)) and heat[1, 3, 9] == 0  # truncated at 3 sigma
    xy, vis = decode_heatmaps(heat, image)
    assert vis.all()
    np.testing.assert_array_equal(xy[:3], joints[:3])
    np.testing.assert_array_equal(xy[3], [160.0, 80.0])  # rounded to the nearest cell
    # CRW's top-3 weighted decoding: peak 1 plus two neighbours at exp(-2) on one axis each
    xy3, _ = decode_heatmaps(heat[1:2], image, topk=3)
    assert np.abs(xy3[0] - joints[1]).max() < 8 * 2 * math.exp(-2.0) / (1 + 2 * math.exp(-2.0)) + 1e-9


def test_heatmap_off_the_map_is_invisible() -> None:
    heat = joint_heatmaps(np.array([[-40.0, 10.0], [10.0, 10.0]]), (64, 64), (8, 8))
    assert heat[0].sum() == 0
    xy, vis = decode_heatmaps(heat, (64, 64))
    assert vis.tolist() == [False, True] and np.isnan(xy[0]).all()
    gt = np.array([[[-40.0, 10.0], [16.0, 8.0]]] * 2)
    d = normalised_distances(np.stack([xy, xy]), gt, np.stack([vis, vis]), zero_box="skip")
    assert np.isnan(d[1]).all()  # one visible joint has no extent: the frame is skipped
    # CRW's eval_pck.py divides by the zero box instead: the visible joint is scored and missed
    d = normalised_distances(np.stack([xy, xy]), gt, np.stack([vis, vis]))
    assert np.isnan(d[1, 0]) and d[1, 1] == np.inf
    assert pck([d], alphas=(0.5,))[1][0] == 0.0


def _write_mat(path: Path, pos_img: np.ndarray) -> None:
    from scipy.io import savemat

    savemat(str(path), {"pos_img": pos_img})


def test_read_joints_converts_to_zero_based(tmp_path: Path) -> None:
    pos = np.arange(2 * 15 * 4, dtype=np.float64).reshape(2, 15, 4) + 1
    _write_mat(tmp_path / "j.mat", pos)
    joints = read_joints(tmp_path / "j.mat", num_frames=4)
    assert joints.shape == (4, 15, 2)
    assert joints[2, 5, 0] == pos[0, 5, 2] - 1 and joints[2, 5, 1] == pos[1, 5, 2] - 1


def test_read_joints_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(JhmdbError, match="missing.mat: joint file not found"):
        read_joints(tmp_path / "missing.mat")
    (tmp_path / "bad.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(JhmdbError, match="bad.mat: cannot read MAT file"):
        read_joints(tmp_path / "bad.mat")
    _write_mat(tmp_path / "short.mat", np.zeros((2, 15, 3)))
    with pytest.raises(JhmdbError, match="short.mat: 'pos_img' has 3 frames but the clip has 40"):
        read_joints(tmp_path / "short.mat", num_frames=40)
    from scipy.io import savemat

    savemat(str(tmp_path / "other.mat"), {"pos_world": np.zeros((2, 15, 3))})
    with pytest.raises(JhmdbError, match="other.mat: no 'pos_img'"):
        read_joints(tmp_path / "other.mat")


def test_real_mat_file(shared_data: Path) -> None:
    joints = read_joints(shared_data / "jhmdb" / "joint_positions.mat", num_frames=40)
    assert joints.shape == (40, 15, 2)
    assert joints[0, 0].tolist() == [285.5, 105.5]  # pos_img (286.5, 106.5), 1-based
    clips = jhmdb.find_clips(shared_data / "jhmdb")
    assert [c.name for c in clips] == ["Goal_Keeping_Tips_catch_f_cm_np1_fr_med_2"]
    assert clips[0].mat == shared_data / "jhmdb" / "joint_positions.mat"


def test_identical_frames_reproduce_the_keypoints() -> None:
    rng = np.random.default_rng(0)
    # one random colour per 8x8 cell: every cell's features are distinct
    frame = np.kron(rng.integers(0, 256, (6, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    frames = np.stack([frame] * 5)
    joints = np.array([[8.0, 16.0], [40.0, 0.0], [56.0, 40.0]])  # on cells of the stride-8 grid
    encoder = jhmdb.build_frame_encoder("pixels")
    # 4 context frames (the first + 3 recent) hold 4 exact copies of every cell: the top-3 are copies
    cfg = PropagationConfig(topk=3, context=3, jhmdb=ROUNDED)
    pred, vis = jhmdb.propagate_keypoints(frames, joints, encoder, cfg)
    assert vis.all()
    np.testing.assert_array_equal(pred, np.stack([joints] * 5))
    # CRW's patch and decoding (at the native size: resizing would merge cells): the heat maps survive too,
    # so every frame decodes like frame 0's 4x4 patch read by the weighted top-3
    cfg = PropagationConfig(topk=3, context=3, jhmdb=JhmdbConfig(size=None))
    pred, vis = jhmdb.propagate_keypoints(frames, joints, encoder, cfg)
    want, _ = decode_heatmaps(joint_heatmaps(joints, (48, 64), (6, 8)), (48, 64), topk=3)
    assert vis.all() and not np.allclose(want, joints)
    np.testing.assert_allclose(pred, np.stack([want] * 5), atol=1e-6)


def test_keypoints_encode_frames_at_the_preset_size() -> None:
    """CRW's JHMDB settings are the default: frames resized to 320x320 (cv2 bilinear) before encoding, a
    40x40 grid, predictions mapped back to the original pixels."""
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (3, 24, 40, 3), dtype=np.uint8)
    pixels = jhmdb.build_frame_encoder("pixels")
    seen: list[tuple[int, ...]] = []

    def encode(frame: np.ndarray) -> torch.Tensor:
        seen.append(frame.shape)
        return pixels.encode(frame)  # type: ignore[misc]

    spy = replace(pixels, encode=encode)
    joints = np.array([[20.0, 12.0], [39.0, 0.0]])
    pred, vis = jhmdb.propagate_keypoints(frames, joints, spy, PropagationConfig(context=1))
    assert seen == [(320, 320, 3)] * 3 and pred.shape == (3, 2, 2) and vis.all()
    resized = cv2.resize(frames[0], (320, 320), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(jhmdb.resize_frame(frames[0], (320, 320)), resized)
    want, _ = decode_heatmaps(joint_heatmaps(joints, (24, 40), (40, 40)), (24, 40), topk=3)
    np.testing.assert_allclose(pred[0], want)  # frame 0: its heat maps decoded in original pixels
    seen.clear()
    jhmdb.propagate_keypoints(frames, joints, spy, PropagationConfig(context=1, jhmdb=ROUNDED))
    assert seen == [(24, 40, 3)] * 3


def _copy_first_pck(gt: np.ndarray, size: tuple[int, int], feat: tuple[int, int]) -> np.ndarray:
    """PCK of predicting frame 0's joints, snapped to the feature grid, in every frame: by hand."""
    (big_h, big_w), (h, w) = size, feat
    snapped = np.stack([np.floor(gt[0, :, 0] * w / big_w + 0.5) * big_w / w,
                        np.floor(gt[0, :, 1] * h / big_h + 0.5) * big_h / h], axis=1)
    per_joint = np.zeros((5, gt.shape[1]))
    for a, alpha in enumerate(jhmdb.ALPHAS):
        for j in range(gt.shape[1]):
            hits = []
            for t in range(1, len(gt)):
                extent = gt[t].max(axis=0) - gt[t].min(axis=0)
                box = 0.6 * math.sqrt(extent[0] ** 2 + extent[1] ** 2)
                hits.append(math.dist(snapped[j], gt[t, j]) / box <= alpha)
            per_joint[a, j] = np.mean(hits)
    return per_joint.mean(axis=1)


@pytest.mark.slow
def test_real_clip_identity_equals_copying_the_first_frame(shared_data: Path, tmp_path: Path) -> None:
    clips = jhmdb.find_clips(shared_data / "jhmdb")
    # the context size does not change what identity features copy; a short one keeps the test fast
    cfg = PropagationConfig(context=2, jhmdb=ROUNDED)
    results, _, mean = jhmdb.evaluate_clips(clips, jhmdb.build_frame_encoder("identity"), cfg)
    assert results[0].visible.all()
    np.testing.assert_allclose(mean, _copy_first_pck(results[0].gt, (240, 320), (30, 40)), atol=1e-12)
    assert mean[0] < mean[-1]
    _, _, mean_px = jhmdb.evaluate_clips(clips, jhmdb.build_frame_encoder("pixels"), cfg)
    assert ((mean_px >= 0) & (mean_px <= 1)).all() and (np.diff(mean_px) >= 0).all()


def test_cli_on_synthetic_clip(tmp_path: Path) -> None:
    from vidssl.cli import main
    from vidssl.data.synthetic import write_dataset

    root = write_dataset(tmp_path / "syn", seed=3, num_videos=1, num_frames=6, size=(64, 96), num_objects=2)
    out = tmp_path / "out"
    assert main(["eval", "jhmdb", "--root", str(root / "jhmdb"), "--encoder", "pixels", "--out", str(out),
                 "--vis", "context=2", "topk=5"]) == 0
    summary = json.loads((out / "pck.json").read_text())
    assert len(summary["pck"]) == 5 and all(0 <= v <= 1 for v in summary["pck"])
    assert summary["propagation"]["topk"] == 5
    rows = (out / "pck.csv").read_text().splitlines()
    assert rows[0].startswith("joint,PCK@0.1") and rows[-1].startswith("mean,")
    assert len(list((out / "vis").rglob("*.png"))) == 6
    # a frame count that disagrees with the joint file is an error naming the file
    clip = next(p for p in (root / "jhmdb").iterdir() if p.is_dir())
    sorted(clip.glob("*.png"))[-1].unlink()
    with pytest.raises(JhmdbError, match=r"joint_positions.mat: 'pos_img' has 6 frames but the clip has 5"):
        jhmdb.evaluate_clips(jhmdb.find_clips(root / "jhmdb"), jhmdb.build_frame_encoder("pixels"),
                             PropagationConfig(context=1))
    assert main(["eval", "jhmdb", "--root", str(root / "jhmdb"), "--encoder", "pixels", "--out", str(out)]) == 2


def test_cli_defaults_to_crws_jhmdb_settings_and_options_override(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture) -> None:
    from vidssl.cli import main
    from vidssl.data.synthetic import write_dataset

    root = write_dataset(tmp_path / "syn", seed=4, num_videos=1, num_frames=4, size=(48, 64), num_objects=2)
    out = tmp_path / "out"
    args = ["eval", "jhmdb", "--root", str(root / "jhmdb"), "--encoder", "pixels", "--out", str(out)]
    assert main([*args, "context=1"]) == 0
    summary = json.loads((out / "pck.json").read_text())
    assert summary["config"] == "configs/eval/crw.yaml"
    assert summary["size"] == [320, 320] and summary["decode_topk"] == 3 and summary["heatmap"] == "crw"
    assert summary["propagation"]["jhmdb"]["zero_box"] == "miss" and summary["propagation"]["context"] == 1
    assert main([*args, "--size", "0", "0", "--decode-topk", "1", "context=1", "jhmdb.heatmap=rounded"]) == 0
    summary = json.loads((out / "pck.json").read_text())
    assert summary["size"] is None and summary["decode_topk"] == 1 and summary["heatmap"] == "rounded"
    assert main([*args, "--size", "240", "0"]) == 2
    assert "--size" in capsys.readouterr().err
    assert main([*args, "jhmdb.heatmapp=crw"]) == 2
    assert "did you mean 'heatmap'" in capsys.readouterr().err
