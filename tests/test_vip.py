"""VIP part propagation: mIoU closed forms and an end-to-end run on a synthetic VIP-layout tree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from vidssl.data.label_io import read_indexed_png, write_indexed_png
from vidssl.eval import vip
from vidssl.eval.encoders import build_encoder
from vidssl.eval.propagation import PropagationConfig
from vidssl.eval.vip import VipError, confusion, mean_iou


def test_miou_perfect_is_one() -> None:
    gt = np.array([[0, 1, 1], [2, 2, 0]])
    iou, miou = mean_iou(confusion(gt, gt, 20))
    assert miou == 1.0
    assert np.isnan(iou[3:]).all() and (iou[:3] == 1).all()  # classes never seen are left out


def test_miou_two_class_confusion_by_hand() -> None:
    # 10 pixels: gt = 6 background + 4 part; the prediction marks 3 of the part and 2 background as part
    gt = np.array([0] * 6 + [1] * 4)
    pred = np.array([0] * 4 + [1] * 2 + [1] * 3 + [0])
    hist = confusion(gt, pred, 2)
    np.testing.assert_array_equal(hist, [[4, 2], [1, 3]])
    iou, miou = mean_iou(hist)
    # background: 4 / (6 + 5 - 4) = 4/7; part: 3 / (4 + 5 - 3) = 1/2
    np.testing.assert_allclose(iou, [4 / 7, 1 / 2])
    assert miou == pytest.approx((4 / 7 + 1 / 2) / 2)


def test_confusion_ignores_void_and_accumulates() -> None:
    gt = np.array([[255, 1], [1, 0]])
    pred = np.array([[1, 1], [0, 0]])
    hist = confusion(gt, pred, 2)
    np.testing.assert_array_equal(hist, [[1, 0], [1, 1]])  # the void pixel counts nowhere
    iou, _ = mean_iou(hist + confusion(np.array([1]), np.array([1]), 2))
    np.testing.assert_allclose(iou, [1 / 2, 2 / 3])
    with pytest.raises(ValueError, match="differ in size"):
        confusion(gt, pred[:1], 2)


def _vip_tree(tmp_path: Path, frames: int = 6) -> Path:
    """A VIP-layout tree from the synthetic generator: its DAVIS masks (objects 1..3) as part labels."""
    from vidssl.data.synthetic import write_dataset

    syn = write_dataset(tmp_path / "syn", seed=5, num_videos=2, num_frames=frames, size=(64, 96), num_objects=3)
    root = tmp_path / "vip"
    names = (syn / "davis" / "ImageSets" / "2017" / "val.txt").read_text().split()
    for n, name in enumerate(names):
        video = f"videos{n + 1}"
        images, labels = root / "Images" / video, root / "Category_ids" / video
        images.mkdir(parents=True)
        for t, jpg in enumerate(sorted((syn / "davis" / "JPEGImages" / "480p" / name).glob("*.jpg"))):
            stem = f"{25 * t + 1:012d}"  # VIP names frames by their number in the source video
            shutil.copy(jpg, images / f"{stem}.jpg")
            mask = read_indexed_png(syn / "davis" / "Annotations" / "480p" / name / f"{jpg.stem}.png")
            write_indexed_png(labels / f"{stem}.png", mask * 4)  # parts 4, 8, 12: not 0..K contiguous
    (root / "lists").mkdir()
    (root / "lists" / "val_videos.txt").write_text("videos1\nvideos2\n")
    return root


def test_identity_scores_copying_the_first_labels(tmp_path: Path) -> None:
    root = _vip_tree(tmp_path)
    videos = vip.find_videos(root)
    assert [v.name for v in videos] == ["videos1", "videos2"] and len(videos[0].frames) == 6
    hist, per_video = vip.evaluate_videos(videos, build_encoder("identity"), PropagationConfig())
    expected = np.zeros((20, 20), np.int64)
    for v in videos:  # by hand: every frame predicted as frame 0's labels
        assert v.labels[0] is not None
        first = read_indexed_png(v.labels[0])
        for label in v.labels:
            assert label is not None
            gt = read_indexed_png(label)
            np.add.at(expected, (gt.ravel().astype(int), first.ravel().astype(int)), 1)
    np.testing.assert_array_equal(hist, expected)
    assert set(per_video) == {"videos1", "videos2"}
    hist2, _ = vip.evaluate_videos(videos, build_encoder("identity"), PropagationConfig(), score_first=False)
    assert hist2.sum() == hist.sum() - 2 * 64 * 96


def test_cli_end_to_end_pixels(tmp_path: Path) -> None:
    from vidssl.cli import main

    root = _vip_tree(tmp_path)
    out = tmp_path / "out"
    assert main(["eval", "vip", "--root", str(root), "--encoder", "pixels", "--out", str(out),
                 "--save-predictions", "context=2"]) == 0
    summary = json.loads((out / "miou.json").read_text())
    assert 0 < summary["miou"] <= 1 and summary["propagation"]["context"] == 2
    present = {k for k, v in summary["iou"].items() if v is not None}
    in_gt = {int(c) for p in (root / "Category_ids").rglob("*.png") for c in np.unique(read_indexed_png(p))}
    assert len(in_gt) >= 3 and present >= {vip.CLASSES[c] for c in in_gt}  # parts 4, 8, 12 and background
    assert present <= {vip.CLASSES[c] for c in (0, 4, 8, 12)}
    assert (out / "miou.csv").read_text().splitlines()[-1].startswith("mIoU,")
    preds = sorted((out / "pred" / "videos1").glob("*.png"))
    assert [p.stem for p in preds] == [f"{25 * t + 1:012d}" for t in range(6)]
    assert set(np.unique(read_indexed_png(preds[-1]))) <= {0, 4, 8, 12}


def test_layout_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(VipError, match="no Images folder"):
        vip.find_videos(tmp_path)
    (tmp_path / "Images" / "v1").mkdir(parents=True)
    (tmp_path / "Category_ids" / "v1").mkdir(parents=True)
    with pytest.raises(VipError, match=r"val_videos.txt: val list not found"):
        vip.find_videos(tmp_path)
    write_indexed_png(tmp_path / "Category_ids" / "v1" / "0002.png", np.zeros((4, 4), np.uint8))
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "Images" / "v1" / "0001.jpg")
    with pytest.raises(VipError, match=r"0001.png: the first frame has no label PNG"):
        vip.find_videos(tmp_path, ["v1"])


def test_frame_0_is_scored_as_crws_round_trip(tmp_path: Path) -> None:
    """CRW's test.py writes frame 0 as the first labels taken to the feature grid and back (cv2.resize both
    ways), and eval_vip.py scores that file: vidssl scores the same, not the ground truth itself."""
    import cv2

    from vidssl.engine.config import load_config
    from vidssl.paths import REPO_ROOT

    cfg = load_config(PropagationConfig, REPO_ROOT / "configs" / "eval" / "crw.yaml")
    root = _vip_tree(tmp_path, frames=3)
    videos = vip.find_videos(root)
    encoder = build_encoder("pixels")
    hist, _ = vip.evaluate_videos(videos, encoder, cfg)
    rest, _ = vip.evaluate_videos(videos, encoder, cfg, score_first=False)
    first_hist = np.zeros_like(hist)
    differs = 0
    for v in videos:
        assert v.labels[0] is not None
        first = read_indexed_png(v.labels[0])
        # by hand, as CRW: one channel per value present, cv2.resize to (ceil(W/8), ceil(H/8)) and back, argmax
        values = np.unique(first)
        onehot = np.stack([first == c for c in values], axis=-1).astype(np.float32)
        small = cv2.resize(onehot, (12, 8))
        want = values[cv2.resize(small, (96, 64)).argmax(-1)]
        got = vip.first_frame_prediction(first, 8, cfg)
        assert np.array_equal(got, want)
        differs += int((got != first).sum())
        first_hist += vip.confusion(first, got)
    np.testing.assert_array_equal(hist - rest, first_hist)
    assert differs > 0  # the round trip is not the ground truth


def test_cli_defaults_to_the_crw_preset(tmp_path: Path) -> None:
    from vidssl.cli import main

    root = _vip_tree(tmp_path, frames=3)
    out = tmp_path / "out"
    assert main(["eval", "vip", "--root", str(root), "--encoder", "pixels", "--out", str(out)]) == 0
    summary = json.loads((out / "miou.json").read_text())
    assert summary["config"] == "configs/eval/crw.yaml" and summary["propagation"]["label_resize"] == "crw"
    assert main(["eval", "vip", "--root", str(root), "--encoder", "pixels", "--out", str(out),
                 "--config", "configs/eval/dino.yaml"]) == 0
    assert json.loads((out / "miou.json").read_text())["propagation"]["window"] == "square"
