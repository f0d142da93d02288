"""``configs/eval/vfs.yaml`` against a re-implementation of VFS's released test code (xvjiarui/VFS:
``VanillaTracker.forward_test``, ``masked_attention_efficient``), on the same features, DAVIS at 854x480."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests import propagation_reference as ref
from tests.test_reference_crw import Dog, check_against, dog, preset, random_trunk_clip
from vidssl.eval.propagation import label_to_feature_res, one_hot, propagate_sequence, upsample_labels

__all__ = ["dog"]  # the shared fixture


@pytest.fixture(scope="module")
def vfs_ref(dog: Dog) -> ref.Reference:
    # precede_frames 1 keeps the dense reference quick; for t <= precede_frames VFS's context holds frame 0 twice
    _, gts, _, feats = dog
    return ref.vfs_davis(feats, gts[0], precede_frames=1)


def test_vfs_preset_reproduces_vfs_code_on_davis(
    dog: Dog, vfs_ref: ref.Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, gts, encoder, _ = dog
    check_against("vfs", vfs_ref, encoder, paths, gts, preset("vfs", context=1), monkeypatch)


def test_frame_0_twice_in_early_contexts_is_what_tells_vfs_apart(
    dog: Dog, vfs_ref: ref.Reference, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``first_is_recent``: without it the preset is the reference that holds frame 0 once, and not VFS's code."""
    paths, gts, encoder, feats = dog
    once = ref.vfs_davis(feats, gts[0], precede_frames=1, duplicate_first=False)
    assert not torch.allclose(once.soft[1], vfs_ref.soft[1])
    check_against("vfs", once, encoder, paths, gts, preset("vfs", context=1, first_is_recent=False), monkeypatch)


def test_frame_0_leaves_the_preceding_frames_after_context_frames() -> None:
    """``first_is_recent`` with a context of 2 over 6 frames: frame 0 is a preceding frame for t = 1, 2 and then
    only the first frame, as VFS's ``max(0, t - 2) .. t - 1``; random features, soft labels to 1e-5."""
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(6, 16, 9, 11, generator=gen)
    first = np.zeros((72, 88), np.uint8)
    first[10:50, 20:70] = 1
    first[55:, :30] = 2
    want = ref.vfs_davis(feats, first, precede_frames=2, neighbor_range=8)
    cfg = preset("vfs", context=2, radius=4.0)
    got = list(propagate_sequence(lambda t: feats[t], want.soft[0], 6, cfg))
    for t in range(1, 6):
        torch.testing.assert_close(got[t], want.soft[t], atol=1e-5, rtol=0)
    once = ref.vfs_davis(feats, first, precede_frames=2, neighbor_range=8, duplicate_first=False)
    assert not torch.allclose(once.soft[2], want.soft[2], atol=1e-3)  # the case tells the two apart


def test_vfs_label_resizing_at_native_size(dog: Dog, vfs_ref: ref.Reference) -> None:
    """PIL nearest of the ids to the grid; F.interpolate straight to H x W; not CRW's OpenCV path."""
    gts, want = dog[1], vfs_ref
    labels = one_hot(torch.from_numpy(gts[0].astype(np.int64)), 2)
    small = label_to_feature_res(labels, (60, 107), 8, resize="vfs")
    assert torch.equal(small, want.soft[0])
    up = upsample_labels(want.soft[1], (480, 854), 8, norm_mask=True, resize="vfs").numpy()
    assert np.array_equal(up, want.ids[1])
    assert not np.array_equal(up, upsample_labels(want.soft[1], (480, 854), 8, norm_mask=True, resize="dino").numpy())
    crw_small = label_to_feature_res(labels, (60, 107), 8, resize="crw")
    assert not torch.equal(crw_small, small)


@pytest.mark.slow
def test_vfs_preset_reproduces_vfs_code_on_davis_full_context(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 preceding frames (all 8 frames here, frame 0 twice: as the first frame and as a preceding one) on the
    random trunk's features (seed 0, first 64 channels)."""
    paths, gts, encoder, feats = random_trunk_clip(shared_data / "davis", "dog", 8)
    want = ref.vfs_davis(feats, gts[0], precede_frames=20)
    check_against("vfs", want, encoder, paths, gts, preset("vfs"), monkeypatch)
