"""``vidssl eval action`` and the synthetic motion-pattern action set: the split readers (UCF101, HMDB51), the clip
protocol (video top-1 from averaged clip softmaxes; time order kept by ``concat``, lost by ``mean``), the set's
classes as motion patterns, and the command end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidssl.data.synthetic_actions import ACTIONS, action_clip, write_action_set
from vidssl.eval.action import (
    ActionDataError,
    ClipModel,
    ClipProtocol,
    read_action_split,
    video_top1,
)
from vidssl.models import EncoderRecord
from vidssl.nn.colour import normalize_input


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_reads_ucf101_split_files(tmp_path: Path) -> None:
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (lists / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
                                           "Archery/v_Archery_g09_c02.avi 2\n")
    (lists / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    _touch(tmp_path / "UCF-101" / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi")
    (tmp_path / "UCF-101" / "Archery" / "v_Archery_g09_c02").mkdir(parents=True)  # extracted frames instead
    with pytest.raises(ActionDataError, match="v_Archery_g01_c01.avi: listed in the split but found in none"):
        read_action_split(tmp_path)
    _touch(tmp_path / "UCF-101" / "Archery" / "v_Archery_g01_c01.avi")
    split = read_action_split(tmp_path)
    assert split.classes == ["ApplyEyeMakeup", "Archery"] and split.name == "ucf101-split1"
    assert [(p.name, y) for p, y in split.train] == [("v_ApplyEyeMakeup_g08_c01.avi", 0), ("v_Archery_g09_c02", 1)]
    assert [(p.name, y) for p, y in split.test] == [("v_Archery_g01_c01.avi", 1)]


def test_reads_hmdb51_split_files(tmp_path: Path) -> None:
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    (splits / "cartwheel_test_split1.txt").write_text("d.avi 2 \n")
    for cls, name in (("brush_hair", "a"), ("brush_hair", "b"), ("brush_hair", "c"), ("cartwheel", "d")):
        _touch(tmp_path / "videos" / cls / f"{name}.avi")
    split = read_action_split(tmp_path)
    assert split.classes == ["brush_hair", "cartwheel"]
    assert [(p.name, y) for p, y in split.train] == [("a.avi", 0)]  # "0" (unused) is in neither side
    assert [(p.name, y) for p, y in split.test] == [("b.avi", 0), ("d.avi", 1)]
    (splits / "cartwheel_test_split1.txt").write_text("d.avi 3\n")
    with pytest.raises(ActionDataError, match="cartwheel_test_split1.txt:1"):
        read_action_split(tmp_path)
    with pytest.raises(ActionDataError, match="neither a UCF101 root"):
        read_action_split(tmp_path / "videos")


def test_video_top1_averages_the_clip_softmaxes() -> None:
    # video 0: two clips that prefer class 1 weakly and one that prefers class 0 strongly -> class 0 on average
    logits = torch.tensor([[0.0, 0.2], [0.0, 0.2], [5.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 0, 1])
    owners = torch.tensor([0, 0, 0, 1])
    video, clip = video_top1(logits, labels, owners)
    assert video == 1.0 and clip == pytest.approx(0.5)


class Thumbnail(nn.Module):
    """A position-keeping 'trunk': each frame average-pooled to 4 x 4, 48 numbers."""

    num_features = 48
    config: ClassVar[dict[str, str]] = {"arch": "thumbnail"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 4).flatten(1)


def test_concat_keeps_time_order_and_mean_loses_it() -> None:
    record = EncoderRecord(Thumbnail(), "rgb", "thumbnail")
    clips = torch.rand(2, 3, 5, 16, 16)
    concat, mean = ClipModel(record, ClipProtocol(frames=5, temporal="concat")), ClipModel(
        record, ClipProtocol(frames=5, temporal="mean"))
    assert concat.dim == 5 * 48 and mean.dim == 48
    assert not torch.allclose(concat(clips), concat(clips.flip(2)))
    torch.testing.assert_close(mean(clips), mean(clips.flip(2)))


def test_pooled_cells_of_a_real_trunk_keep_the_layout() -> None:
    """``--pool 2`` on a stride-8 ResNet: each frame's map averaged to 2 x 2 cells, concatenated in time order."""
    from vidssl.models import load_record

    record = load_record("random", backbone="resnet18_s8_l3")
    model = ClipModel(record, ClipProtocol(frames=3, pool=2)).eval()
    clips = torch.rand(2, 3, 3, 32, 32)
    with torch.no_grad():
        out = model(clips)
        maps = record.backbone.forward_features(normalize_input(clips[:, :, 1], "rgb"))  # frame 1's 4 x 4 map
    assert model.dim == 3 * 256 * 4 and out.shape == (2, model.dim)
    cells = F.adaptive_avg_pool2d(maps, 2).flatten(1)
    torch.testing.assert_close(out[:, 1024:2048], cells, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("action", ACTIONS)
def test_synthetic_classes_are_motion_patterns(action: str) -> None:
    frames, masks = action_clip(action, seed=3, num_frames=12, size=64, masks=True)
    assert frames.shape == (12, 64, 64, 3) and frames.dtype == np.uint8
    area = masks.sum(axis=(1, 2))
    ys, xs = np.mgrid[0:64, 0:64]
    cx, cy = (masks * xs).sum((1, 2)) / area, (masks * ys).sum((1, 2)) / area
    dx, dy, growth = cx[-1] - cx[0], cy[-1] - cy[0], area[-1] / area[0]
    moved = {"MoveLeft": dx < -10, "MoveRight": dx > 10, "MoveUp": dy < -10, "MoveDown": dy > 10}
    if action in moved:
        assert moved[action] and 0.9 < growth < 1.1, (dx, dy, growth)
    elif action.startswith("Rotate"):
        assert abs(dx) < 1.5 and abs(dy) < 1.5 and 0.9 < growth < 1.1, (dx, dy, growth)
    else:
        assert (growth > 2.2) if action == "Grow" else (growth < 1 / 2.2), growth
    # the object stays inside the frame: nothing is cut off at the borders
    edge = masks[:, 0].sum() + masks[:, -1].sum() + masks[:, :, 0].sum() + masks[:, :, -1].sum()
    assert edge < 1e-3 * masks.sum()


def test_rotation_direction_is_in_the_frames() -> None:
    """Clockwise and counter-clockwise of one seed agree at the middle frame (the same draws, the same angle there)
    and differ inside the object at the ends: the texture turns opposite ways."""
    (cw, mask), (ccw, _) = action_clip("RotateCW", 5, 9, 64, masks=True), action_clip("RotateCCW", 5, 9, 64, masks=True)
    assert np.array_equal(cw[4], ccw[4])
    inside = mask[-1] > 0.99
    assert np.abs(cw[-1].astype(int) - ccw[-1].astype(int))[inside].mean() > 10


def test_eval_action_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vidssl.cli import main

    root = tmp_path / "actions"
    assert main(["data", "synth-actions", "--out", str(root), "--train-per-class", "2", "--test-per-class", "1",
                 "--frames", "6", "--size", "32"]) == 0
    out = tmp_path / "action.json"
    assert main(["eval", "action", "--root", str(root), "--encoder", "random", "--frames", "4", "--stride", "1",
                 "--resize", "32", "--size", "32", "--train-clips", "2", "--test-clips", "2", "--linear-epochs", "5",
                 "--finetune-epochs", "1", "--batch-size", "4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["classes"] == 8 and result["chance"] == 0.125 and result["test_videos"] == 8
    assert "4 frames at stride 1" in result["protocol"] and result["trunk"] == "frame"
    assert 0 <= result["linear"]["video_top1"] <= 1 and result["finetune"]["epochs"] == 1
    assert np.isfinite(result["finetune"]["last_loss"])
    printed = capsys.readouterr().out
    assert "chance 12.50%" in printed and "fine-tuned (1 epochs" in printed
    assert main(["eval", "action", "--root", str(tmp_path), "--encoder", "random"]) == 1
    assert "neither a UCF101 root" in capsys.readouterr().err


def test_synthetic_set_names_stay_distinct_beyond_the_groups(tmp_path: Path) -> None:
    """More videos per class than UCF101 split 1 has groups (7 test, 18 train): every video keeps its own file (a
    second clip of a group, ``c02``), test groups stay 1-7 and train groups 8-25, as the split readers expect."""
    import re

    root = write_action_set(tmp_path / "actions", train_per_class=20, test_per_class=9, num_frames=2, size=16)
    train = [line.split()[0] for line in (root / "ucfTrainTestlist/trainlist01.txt").read_text().splitlines()]
    test = (root / "ucfTrainTestlist/testlist01.txt").read_text().split()
    assert len(train) == 8 * 20 and len(test) == 8 * 9 and len(set(train) | set(test)) == 8 * 29
    assert len(list((root / "UCF-101").glob("*/*.mp4"))) == 8 * 29
    groups = {name: int(re.search(r"_g(\d+)_c", name).group(1)) for name in train + test}  # type: ignore[union-attr]
    assert {groups[n] for n in test} == set(range(1, 8)) and {groups[n] for n in train} == set(range(8, 26))
    assert "MoveLeft/v_MoveLeft_g01_c02.mp4" in test and "MoveLeft/v_MoveLeft_g08_c02.mp4" in train


def _motion_oracle(clip: torch.Tensor, keep_time: bool) -> torch.Tensor:
    """Where a clip ``(3, T, S, S)`` differs from its own mean frame (the moving object, the background nearly
    still), pooled to 4 x 4 cells per frame: in time order (``keep_time``) or averaged over time."""
    x = clip.float() / 255
    energy = (x - x.mean(1, keepdim=True)).abs().sum(0)  # (T, S, S)
    cells = F.adaptive_avg_pool2d(energy[:, None], 4).flatten(1)  # (T, 16)
    cells = cells / cells.sum(1, keepdim=True).clamp_min(1e-6)
    return cells.flatten() if keep_time else cells.mean(0)


def test_synthetic_set_is_decided_by_motion_in_time_order(tmp_path: Path) -> None:
    """The classes are motion patterns: a linear classifier on where the frames change, in time order, tells the
    eight apart far above chance; the same cues averaged over time cannot tell a motion from its reverse."""
    from vidssl.eval.action import read_clips
    from vidssl.eval.probes import linear_accuracy, select_linear_probe

    root = write_action_set(tmp_path / "actions", train_per_class=16, test_per_class=6, num_frames=8, size=32)
    split = read_action_split(root)
    protocol = ClipProtocol(frames=8, stride=1, resize=32, size=32)
    clips = {side: [(read_clips(p, protocol, 1)[0], y) for p, y in getattr(split, side)] for side in ("train", "test")}
    top1 = {}
    for keep_time in (True, False):
        f = {side: torch.stack([_motion_oracle(c, keep_time) for c, _ in v]) for side, v in clips.items()}
        y = {side: torch.tensor([label for _, label in v]) for side, v in clips.items()}
        probe, _, _ = select_linear_probe(f["train"], y["train"], epochs=100)
        top1[keep_time] = linear_accuracy(probe, f["test"], y["test"])
    # measured at 20 / 10 videos per class: 0.64 in time order (rotation pairs confused: where the frames change
    # does not say which way the texture turns), 0.21 averaged over time
    assert top1[True] > 0.45, top1
    assert top1[False] < top1[True] - 0.2, top1
