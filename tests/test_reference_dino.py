"""``configs/eval/dino.yaml`` against a re-implementation of DINO's released ``eval_video_segmentation.py``
(facebookresearch/dino), on the same features, DAVIS at 854x480 (DINO's own script would first resize the
frames to 832x480; the label pipeline is compared on the grid the features have)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests import propagation_reference as ref
from tests.test_reference_crw import Dog, check_against, dog, preset, random_trunk_clip
from vidssl.eval.propagation import label_to_feature_res, one_hot, upsample_labels

__all__ = ["dog"]  # the shared fixture


@pytest.fixture(scope="module")
def dino_ref(dog: Dog) -> ref.Reference:
    _, gts, _, feats = dog
    return ref.dino_davis(feats, gts[0], n_last_frames=1)  # --n_last_frames 1: the dense reference stays quick


def test_dino_preset_reproduces_dino_code_on_davis(
    dog: Dog, dino_ref: ref.Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, gts, encoder, _ = dog
    check_against("dino", dino_ref, encoder, paths, gts, preset("dino", context=1), monkeypatch)


def test_dino_label_resizing_at_native_size(dog: Dog, dino_ref: ref.Reference) -> None:
    """read_seg's PIL nearest to the grid; bilinear by the patch size to 480x856, argmax there, PIL nearest
    to 854: the label map is not what a direct resize to 854 gives."""
    gts, want = dog[1], dino_ref
    labels = one_hot(torch.from_numpy(gts[0].astype(np.int64)), 2)
    assert torch.equal(label_to_feature_res(labels, (60, 107), 8, resize="dino"), want.soft[0])
    up = upsample_labels(want.soft[1], (480, 854), 8, norm_mask=True, resize="dino").numpy()
    assert np.array_equal(up, want.ids[1])
    direct = upsample_labels(want.soft[1], (480, 854), 8, norm_mask=True, resize="vfs").numpy()
    assert not np.array_equal(direct, up)


@pytest.mark.slow
def test_dino_preset_reproduces_dino_code_on_davis_full_context(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--n_last_frames 7 on 10 frames, the random trunk's features (seed 0, first 64 channels)."""
    paths, gts, encoder, feats = random_trunk_clip(shared_data / "davis", "dog", 10)
    want = ref.dino_davis(feats, gts[0], n_last_frames=7)
    check_against("dino", want, encoder, paths, gts, preset("dino"), monkeypatch)
