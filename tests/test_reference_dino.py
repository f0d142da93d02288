"""``configs/eval/dino.yaml`` against a re-implementation of DINO's released ``eval_video_segmentation.py``
(facebookresearch/dino), DAVIS at 854x480: ``read_frame`` resizes each frame to 832x480 before it is encoded,
``read_seg`` takes the labels from 854x480 to that grid, the predictions go back to 854x480."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests import propagation_reference as ref
from tests.test_reference_crw import Dog, check_against, dog, preset, random_trunk_clip
from vidssl.eval.davis import read_frame
from vidssl.eval.encoders import FrameEncoder
from vidssl.eval.propagation import dino_frame_size, label_to_feature_res, one_hot, upsample_labels

__all__ = ["dog"]  # the shared fixture


def dino_read_frame(path: Path) -> np.ndarray:
    """DINO's read_frame with ``scale_size=[480]``: the short side to 480, the long side ``int((x // 64) * 64)``,
    ``cv2.resize`` (bilinear); kept in RGB (the resize treats the channels alike)."""
    img = read_frame(path)
    ori_h, ori_w = img.shape[:2]
    if ori_h > ori_w:
        tw = 480
        th = int(((tw * ori_h) / ori_w // 64) * 64)
    else:
        th = 480
        tw = int(((th * ori_w) / ori_h // 64) * 64)
    return cv2.resize(img, (tw, th))


def dino_feats(encoder: FrameEncoder, paths: list[Path]) -> torch.Tensor:
    assert encoder.encode is not None
    return torch.stack([encoder.encode(dino_read_frame(p)) for p in paths])


@pytest.fixture(scope="module")
def dino_ref(dog: Dog) -> ref.Reference:
    paths, gts, encoder, _ = dog
    feats = dino_feats(encoder, paths)
    assert feats.shape[-2:] == (60, 104)  # 832x480 at stride 8
    return ref.dino_davis(feats, gts[0], n_last_frames=1)  # --n_last_frames 1: the dense reference stays quick


def test_dino_preset_reproduces_dino_code_on_davis(
    dog: Dog, dino_ref: ref.Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, gts, encoder, _ = dog
    check_against("dino", dino_ref, encoder, paths, gts, preset("dino", context=1), monkeypatch)


def test_dino_label_resizing_at_native_size(dog: Dog, dino_ref: ref.Reference) -> None:
    """read_seg's PIL nearest from 854x480 to the 104x60 grid; bilinear by the patch size to 832x480, argmax
    there, PIL nearest to 854: the label map is not what a direct resize to 854 gives."""
    gts, want = dog[1], dino_ref
    labels = one_hot(torch.from_numpy(gts[0].astype(np.int64)), 2)
    assert torch.equal(label_to_feature_res(labels, (60, 104), 8, resize="dino"), want.soft[0])
    up = upsample_labels(want.soft[1], (480, 854), 8, norm_mask=True, resize="dino").numpy()
    assert np.array_equal(up, want.ids[1])
    direct = upsample_labels(want.soft[1], (480, 854), 8, norm_mask=True, resize="vfs").numpy()
    assert not np.array_equal(direct, up)


@pytest.mark.slow
def test_dino_preset_reproduces_dino_code_on_davis_full_context(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--n_last_frames 7 on 10 frames, the random trunk's features (seed 0, first 64 channels)."""
    paths, gts, encoder, _ = random_trunk_clip(shared_data / "davis", "dog", 10)
    want = ref.dino_davis(dino_feats(encoder, paths), gts[0], n_last_frames=7)
    check_against("dino", want, encoder, paths, gts, preset("dino"), monkeypatch)


def test_dino_frame_size() -> None:
    assert dino_frame_size(480, 854) == (480, 832)
    assert dino_frame_size(480, 910) == (480, 896)
    assert dino_frame_size(720, 1280) == (480, 832)  # 853.3 -> 832
    assert dino_frame_size(1280, 720) == (832, 480)  # portrait: the width is the short side
    assert dino_frame_size(480, 480) == (480, 448)  # as the code: 480 // 64 * 64

