"""``vidssl eval action``: clip-level action recognition, the downstream the temporal-order papers report.

    vidssl eval action --root data/UCF101 --encoder runs/opn/checkpoints/ckpt_00200000.pt --split 1
    vidssl eval action --root data/HMDB51 --encoder random --finetune-epochs 30

Datasets in their standard layouts, split ``--split`` (``datasets/ucf101.sh`` and ``datasets/hmdb51.sh`` prepare
them):

- UCF101: ``ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt`` and the videos under ``UCF-101/`` (or
  ``videos/``, or the root itself), ``Class/v_Class_gXX_cYY.avi``;
- HMDB51: ``testTrainMulti_7030_splits/<class>_test_splitN.txt`` (``name.avi 1``: train, ``2``: test, ``0``:
  unused) and the videos under ``videos/<class>/`` (or ``hmdb51_org/<class>/``, or ``<class>/`` in the root).

A listed video that is missing may be a folder of its extracted frames of the same name without the suffix.
The synthetic motion-pattern set of :mod:`vidssl.data.synthetic_actions` is written in the UCF101 layout.

Protocol (printed with the results): every clip is ``--frames`` frames at ``--stride``, frames resized to a
``--resize`` short side and centre-cropped to ``--size`` (fine-tuning: a random crop, and a flip with ``--flip``);
a frame trunk's per-frame features (globally pooled, or pooled to ``--pool`` x ``--pool`` cells so that where
things are survives) are concatenated in time order (``--temporal concat``, so the order of frames
reaches the classifier) or averaged (``mean``, the 2D papers' frame-level protocol); a clip trunk (``r3d_18``)
embeds the clip. **Linear**: a linear classifier on frozen features of ``--train-clips`` uniformly spaced clips per
training video (its learning rate and weight decay chosen on a 10% validation split of train, as ``vidssl eval
knn --linear``); **fine-tuning** (``--finetune-epochs N``): trunk and classifier trained end to end with SGD, one
random clip per training video per epoch. Both are scored on ``--test-clips`` uniformly spaced clips per test
video, their softmax averaged: video top-1 (and clip top-1).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment, to_float
from vidssl.data.errors import VideoError
from vidssl.data.samplers import random_clip, uniform_clips
from vidssl.data.video import open_video
from vidssl.eval.probes import linear_accuracy, select_linear_probe
from vidssl.models import EncoderRecord, load_record
from vidssl.models.video import VideoResNet
from vidssl.nn.colour import normalize_input

HELP = "action recognition (UCF101, HMDB51 or the synthetic motion set): linear probe and fine-tuning, top-1"


class ActionDataError(ValueError):
    """A dataset root or split file that cannot be read, named with the problem."""


@dataclass(frozen=True)
class ActionSplit:
    """One train/test split: the class names (label = position) and the ``(video path, label)`` of each side."""

    name: str
    classes: list[str]
    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]]


def _resolve(video_dirs: Sequence[Path], relative: str) -> Path:
    """The file ``relative`` under the first of ``video_dirs`` that has it, or the frame folder of that name."""
    for base in video_dirs:
        for candidate in (base / relative, (base / relative).with_suffix("")):
            if candidate.exists():
                return candidate
    raise ActionDataError(f"{relative}: listed in the split but found in none of {', '.join(map(str, video_dirs))}")


def read_ucf101(root: str | Path, split: int = 1) -> ActionSplit:
    """UCF101's split ``split`` (1-3) from ``root/ucfTrainTestlist``."""
    root = Path(root)
    lists = root / "ucfTrainTestlist"
    try:
        class_lines = (lists / "classInd.txt").read_text().split("\n")
        train_lines = (lists / f"trainlist0{split}.txt").read_text().split("\n")
        test_lines = (lists / f"testlist0{split}.txt").read_text().split("\n")
    except OSError as exc:
        raise ActionDataError(f"{root}: not a UCF101 root ({exc})") from exc
    classes: list[str] = []
    for line in class_lines:
        if line.strip():
            index, name = line.split()
            if int(index) != len(classes) + 1:
                raise ActionDataError(f"{lists / 'classInd.txt'}: class {name} has index {index}, expected "
                                      f"{len(classes) + 1}")
            classes.append(name)
    label_of = {c.lower(): i for i, c in enumerate(classes)}
    dirs = [d for d in (root / "UCF-101", root / "videos", root) if d.is_dir()]

    def entries(lines: list[str], where: str) -> list[tuple[Path, int]]:
        out = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            relative = line.split()[0]
            cls = relative.replace("\\", "/").split("/")[0].lower()
            if cls not in label_of:
                raise ActionDataError(f"{lists / where}:{number}: class {cls!r} of {relative} is not in classInd.txt")
            out.append((_resolve(dirs, relative), label_of[cls]))
        return out

    return ActionSplit(f"ucf101-split{split}", classes, entries(train_lines, f"trainlist0{split}.txt"),
                       entries(test_lines, f"testlist0{split}.txt"))


def read_hmdb51(root: str | Path, split: int = 1) -> ActionSplit:
    """HMDB51's split ``split`` (1-3) from ``root/testTrainMulti_7030_splits`` (1: train, 2: test, 0: unused)."""
    root = Path(root)
    lists = root / "testTrainMulti_7030_splits"
    files = sorted(lists.glob(f"*_test_split{split}.txt"))
    if not files:
        raise ActionDataError(f"{root}: not an HMDB51 root (no {lists.name}/*_test_split{split}.txt)")
    classes = [f.name[: -len(f"_test_split{split}.txt")] for f in files]
    train, test = [], []
    for label, (cls, path) in enumerate(zip(classes, files, strict=True)):
        dirs = [d for d in (root / "videos" / cls, root / "hmdb51_org" / cls, root / cls) if d.is_dir()]
        for number, line in enumerate(path.read_text().split("\n"), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ActionDataError(f"{path}:{number}: expected 'name.avi 0|1|2', got {line!r}")
            if parts[1] == "1":
                train.append((_resolve(dirs, parts[0]), label))
            elif parts[1] == "2":
                test.append((_resolve(dirs, parts[0]), label))
    return ActionSplit(f"hmdb51-split{split}", classes, train, test)


def read_action_split(root: str | Path, split: int = 1) -> ActionSplit:
    """The split of whichever layout ``root`` has (UCF101 or HMDB51)."""
    root = Path(root)
    if not root.is_dir():
        raise ActionDataError(f"{root}: no such folder")
    if split not in (1, 2, 3):
        raise ActionDataError(f"--split must be 1, 2 or 3, got {split}")
    if (root / "ucfTrainTestlist").is_dir():
        return read_ucf101(root, split)
    if (root / "testTrainMulti_7030_splits").is_dir():
        return read_hmdb51(root, split)
    raise ActionDataError(f"{root}: neither a UCF101 root (ucfTrainTestlist/) nor an HMDB51 root "
                          "(testTrainMulti_7030_splits/)")


# ---------------------------------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class ClipProtocol:
    frames: int = 16
    stride: int = 2
    resize: int = 128
    size: int = 112
    temporal: str = "concat"
    pool: int = 1  # frame trunks: each frame's feature map average-pooled to pool x pool cells

    def describe(self, clip_trunk: bool = False) -> str:
        cells = "" if self.pool == 1 else f" ({self.pool}x{self.pool} cells per frame)"
        features = "a clip trunk" if clip_trunk else f"frame features {self.temporal}{cells}"
        return (f"clips of {self.frames} frames at stride {self.stride}, short side {self.resize} px, "
                f"{self.size} px crops, {features}")


def _resize_short(frames: np.ndarray, short: int) -> np.ndarray:
    h, w = frames.shape[1:3]
    scale = short / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if size == (w, h):
        return frames
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return np.stack([cv2.resize(f, size, interpolation=interp) for f in frames])


def read_clips(path: Path, protocol: ClipProtocol, num_clips: int | None, rng: np.random.Generator | None = None
               ) -> Tensor:
    """uint8 ``(K, 3, T, h, w)`` clips of one video: ``num_clips`` uniformly spaced ones, or (``num_clips=None``)
    one random clip drawn with ``rng``; frames at the protocol's short side (cropping is left to the caller)."""
    try:
        reader = open_video(path)
        n = len(reader)
        if num_clips is None:
            assert rng is not None
            indices = random_clip(n, rng, protocol.frames, protocol.stride)[None]
        else:
            indices = uniform_clips(n, num_clips, protocol.frames, protocol.stride)
        frames = _resize_short(reader.get(indices.reshape(-1)), protocol.resize)
        reader.close()
    except VideoError as exc:
        raise ActionDataError(f"{path}: {exc}") from exc
    clips = torch.from_numpy(np.ascontiguousarray(frames)).view(len(indices), protocol.frames, *frames.shape[1:])
    return clips.permute(0, 4, 1, 2, 3)  # (K, 3, T, h, w)


def centre_crop(clips: Tensor, size: int) -> Tensor:
    h, w = clips.shape[-2:]
    if min(h, w) < size:
        raise ActionDataError(f"clips of {h}x{w} px are smaller than the {size} px crop (raise --resize)")
    top, left = (h - size) // 2, (w - size) // 2
    return clips[..., top:top + size, left:left + size]


class ClipModel(nn.Module):
    """An encoder record as a clip embedder, ``(B, 3, T, S, S)`` float in [0, 1] -> ``(B, D)``: a clip trunk on the
    clip, or a frame trunk on every frame, the features concatenated in time order or averaged."""

    def __init__(self, record: EncoderRecord, protocol: ClipProtocol) -> None:
        super().__init__()
        self.trunk, self.input, self.temporal = record.backbone, record.input, protocol.temporal
        self.clip_level = isinstance(self.trunk, VideoResNet)
        self.pool = 1 if self.clip_level else protocol.pool
        width = int(getattr(self.trunk, "num_features")) * self.pool ** 2  # noqa: B009 (a Module attribute)
        self.dim = width if self.clip_level or self.temporal == "mean" else width * protocol.frames

    def forward(self, clips: Tensor) -> Tensor:
        if self.clip_level:
            out: Tensor = self.trunk(normalize_input(clips, self.input))
            return out
        b, _, t = clips.shape[:3]
        frames = normalize_input(clips.transpose(1, 2).flatten(0, 1), self.input)
        if self.pool == 1:
            feats = self.trunk(frames).view(b, t, -1)
        else:
            maps = self.trunk.forward_features(frames)  # type: ignore[operator]  # every frame trunk has it
            feats = F.adaptive_avg_pool2d(maps, self.pool).reshape(b, t, -1)
        return feats.mean(1) if self.temporal == "mean" else feats.flatten(1)


@torch.no_grad()
def clip_features(model: ClipModel, videos: Sequence[tuple[Path, int]], protocol: ClipProtocol, clips_per_video: int,
                  device: torch.device | str, batch_size: int = 16) -> tuple[Tensor, Tensor, Tensor]:
    """Frozen features of ``clips_per_video`` uniform clips per video: ``(N K, D)``, their labels and video index."""
    model.eval()
    feats, labels, owners = [], [], []
    for v, (path, label) in enumerate(videos):
        clips = centre_crop(read_clips(path, protocol, clips_per_video), protocol.size)
        for chunk in clips.split(batch_size):
            feats.append(model(to_float(chunk.to(device))).float().cpu())
        labels += [label] * len(clips)
        owners += [v] * len(clips)
    return torch.cat(feats), torch.tensor(labels), torch.tensor(owners)


def video_top1(logits: Tensor, labels: Tensor, owners: Tensor) -> tuple[float, float]:
    """``(video top-1, clip top-1)``: each video's clip softmaxes averaged, then the argmax."""
    probs = logits.softmax(1)
    num_videos = int(owners.max()) + 1
    summed = torch.zeros(num_videos, probs.shape[1]).index_add_(0, owners, probs)
    video_labels = torch.zeros(num_videos, dtype=torch.long).index_copy_(0, owners, labels)
    video = float((summed.argmax(1) == video_labels).float().mean())
    clip = float((probs.argmax(1) == labels).float().mean())
    return video, clip


def linear_protocol(model: ClipModel, split: ActionSplit, protocol: ClipProtocol, train_clips: int, test_clips: int,
                    device: torch.device | str, epochs: int = 100) -> dict[str, Any]:
    """The frozen-trunk linear classifier (see the module docstring)."""
    f_train, y_train, _ = clip_features(model, split.train, protocol, train_clips, device)
    f_test, y_test, owners = clip_features(model, split.test, protocol, test_clips, device)
    probe, chosen, _ = select_linear_probe(f_train, y_train, epochs=epochs)
    video, clip = video_top1(probe(f_test), y_test, owners)
    return {"video_top1": video, "clip_top1": clip, "chosen": chosen, "dim": int(f_train.shape[1]),
            "train_clip_top1": linear_accuracy(probe, f_train, y_train)}


def finetune_protocol(model: ClipModel, split: ActionSplit, protocol: ClipProtocol, test_clips: int,
                      device: torch.device | str, epochs: int, lr: float = 0.01, batch_size: int = 8,
                      flip: bool = False, seed: int = 0) -> dict[str, Any]:
    """Trunk and classifier trained end to end (see the module docstring); the model is copied, not changed."""
    net = copy.deepcopy(model).to(device)
    head = nn.Linear(net.dim, len(split.classes)).to(device)
    params = [*net.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=5e-4)
    steps = epochs * max(1, math.ceil(len(split.train) / batch_size))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    augment = ClipAugment(size=protocol.size, scale=(0.5, 1.0), hflip=0.5 if flip else 0.0)
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(epochs):
            net.train()
            order = torch.randperm(len(split.train), generator=g).tolist()
            for start in range(0, len(order), batch_size):
                chosen = [split.train[i] for i in order[start:start + batch_size]]
                clips = torch.cat([read_clips(path, protocol, None, rng) for path, _ in chosen])
                y = torch.tensor([label for _, label in chosen], device=device)
                loss = F.cross_entropy(head(net(augment(to_float(clips.to(device))))), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
    f_test, y_test, owners = clip_features(net, split.test, protocol, test_clips, device)
    head.eval()
    with torch.no_grad():
        video, clip = video_top1(head(f_test.to(device)).cpu(), y_test, owners)
    return {"video_top1": video, "clip_top1": clip, "epochs": epochs, "lr": lr, "batch_size": batch_size,
            "flip": flip, "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


# ---------------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, required=True, help="a UCF101 or HMDB51 root (or the synthetic set)")
    parser.add_argument("--encoder", "--checkpoint", dest="encoder", default="random",
                        help="vidssl checkpoint, torchvision state dict (see --backbone) or random")
    parser.add_argument("--backbone", default="resnet18", help="architecture for plain state dicts / random")
    parser.add_argument("--seed", type=int, default=0, help="seed of --encoder random and of fine-tuning")
    parser.add_argument("--split", type=int, default=1, help="the dataset's split (1-3)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--stride", type=int, default=2, help="frame stride within a clip")
    parser.add_argument("--resize", type=int, default=128, help="short side frames are resized to")
    parser.add_argument("--size", type=int, default=112, help="crop size")
    parser.add_argument("--temporal", choices=["concat", "mean"], default="concat",
                        help="frame trunks: concatenate the frames' features in time order, or average them")
    parser.add_argument("--pool", type=int, default=1,
                        help="frame trunks: pool each frame's feature map to pool x pool cells (keeps the layout)")
    parser.add_argument("--train-clips", type=int, default=5, help="linear: uniform clips per training video")
    parser.add_argument("--test-clips", type=int, default=10, help="uniform clips per test video")
    parser.add_argument("--no-linear", action="store_true", help="skip the linear probe")
    parser.add_argument("--linear-epochs", type=int, default=100)
    parser.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune end to end for this many epochs")
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=8, help="fine-tuning batch (videos)")
    parser.add_argument("--flip", action="store_true", help="fine-tuning: random horizontal flips (not for the "
                                                            "synthetic set, whose left and right are classes)")
    parser.add_argument("--input", default="auto", choices=["auto", "rgb", "lab"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also write the results here")


def run(args: argparse.Namespace) -> int:
    protocol = ClipProtocol(args.frames, args.stride, args.resize, args.size, args.temporal, args.pool)
    try:
        if min(args.frames, args.stride, args.train_clips, args.test_clips, args.pool) < 1 or args.size > args.resize:
            raise ActionDataError("--frames, --stride, --train-clips, --test-clips and --pool must be >= 1 and --size "
                                  "at most --resize")
        split = read_action_split(args.root, args.split)
        record = load_record(args.encoder, backbone=args.backbone, seed=args.seed, input=args.input)
        model = ClipModel(record, protocol).to(args.device)
        results: dict[str, Any] = {
            "dataset": split.name, "classes": len(split.classes), "train_videos": len(split.train),
            "test_videos": len(split.test), "chance": 1 / len(split.classes), "encoder": args.encoder,
            "trunk": "clip" if model.clip_level else "frame", "protocol": protocol.describe(model.clip_level),
            "train_clips": args.train_clips, "test_clips": args.test_clips}
        print(f"{split.name}: {len(split.classes)} classes, {len(split.train)} train / {len(split.test)} test videos; "
              f"{protocol.describe(model.clip_level)}; {args.test_clips} test clips per video, softmax averaged "
              f"(chance {100 * results['chance']:.2f}%)")
        if not args.no_linear:
            results["linear"] = linear_protocol(model, split, protocol, args.train_clips, args.test_clips,
                                                args.device, args.linear_epochs)
            lin = results["linear"]
            print(f"linear (frozen {record.name}, {args.train_clips} clips per training video): video top-1 "
                  f"{100 * lin['video_top1']:.2f}%, clip top-1 {100 * lin['clip_top1']:.2f}%")
        if args.finetune_epochs > 0:
            results["finetune"] = finetune_protocol(model, split, protocol, args.test_clips, args.device,
                                                    args.finetune_epochs, args.finetune_lr, args.batch_size,
                                                    args.flip, args.seed)
            ft = results["finetune"]
            print(f"fine-tuned ({args.finetune_epochs} epochs, SGD {args.finetune_lr:g}, batch {args.batch_size}): "
                  f"video top-1 {100 * ft['video_top1']:.2f}%, clip top-1 {100 * ft['clip_top1']:.2f}%")
    except (ActionDataError, OSError, ValueError) as exc:
        print(f"vidssl eval action: {exc}", file=sys.stderr)
        return 1
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0
