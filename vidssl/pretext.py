"""``vidssl eval pretext``: a method's own pretext task on images or videos it never trained on, the direct
evidence that it learned the task (rotation, jigsaw order, relative position, colour, inpainting, exemplar
retrieval; the temporal order of frames and clips) and how far above chance.

    vidssl eval pretext --checkpoint runs/rotation_cifar/checkpoints/ckpt_00000400.pt --data ../shared/data/cifar10/test
    vidssl eval pretext --checkpoint runs/opn/checkpoints/ckpt_00010000.pt --videos ../shared/data/davis/JPEGImages/480p

The checkpoint's own method is rebuilt from its recorded config and weights and scored in eval mode by its
``pretext_scores`` (``vidssl.methods.base.SSLMethod``) over every image of ``--data`` (a folder of images, or of
class folders), or over ``--samples-per-video`` samples of every video of ``--videos`` (videos and frame folders,
found recursively), drawn by the method's own sampler (its motion- and shot-aware tuples and clips) at the frame
size of its run config; the task's random draws (rotations, permutations, orders, and the videos' frames) are seeded
by ``--seed`` so that two checkpoints meet the same draws. Videos the sampler cannot use (too short, no window
inside one shot) are skipped and listed. Prints the mean score, its chance level and, for a classification task, the
accuracy per class of the task. It needs the whole method, not only its encoder, so it sits beside the trainer
and above ``vidssl.eval`` (whose evaluations take any encoder record and never import a method).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from vidssl.data.datasets import RawVideoDataset
from vidssl.engine.checkpoint import CheckpointError, load_checkpoint
from vidssl.engine.config import ConfigError
from vidssl.eval.probes import read_image_folder
from vidssl.methods import METHODS
from vidssl.train import resolve_config

HELP = "score a checkpoint's own pretext task (rotation, jigsaw, ...) on held-out images against chance"


def load_method(path: str | Path, device: torch.device | str = "cpu") -> tuple[Any, dict[str, Any]]:
    """The method of a training checkpoint, rebuilt from its config with its weights, in eval mode, and the run
    config it recorded."""
    state = load_checkpoint(path)
    config = state.get("config")
    if not isinstance(config, dict) or "model" not in state:
        raise CheckpointError(f"{path}: not a vidssl training checkpoint (no run config or method weights: an "
                              "exported encoder cannot score its pretext task)")
    _, model_cfg = resolve_config(config)
    method = METHODS[config["method"]](model_cfg)
    if not isinstance(method, torch.nn.Module):
        raise CheckpointError(f"{path}: method {config['method']!r} is not an nn.Module")
    try:
        method.load_state_dict(state["model"])
    except RuntimeError as exc:  # missing, unexpected or mis-shaped weights
        raise CheckpointError(f"{path}: the weights do not fit the method its config builds ({exc})") from exc
    return method.to(device).eval(), config


def _image_batches(images: torch.Tensor, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    for i, chunk in enumerate(images.split(batch_size)):
        yield {"video": chunk[:, :, None], "index": torch.arange(i * batch_size, i * batch_size + len(chunk)),
               "label": torch.zeros(len(chunk), dtype=torch.long)}


def video_batches(method: Any, config: dict[str, Any], videos: str | Path, samples_per_video: int, batch_size: int,
                  seed: int, skipped: list[str] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """``samples_per_video`` samples of every video under ``videos``, drawn by the method's sampler at the frame size
    and scale of its run config (pass k is the dataset's epoch k), in batches; the videos it skipped are appended
    to ``skipped`` as ``path: reason``."""
    data = config.get("data", {})
    size = tuple(data["size"]) if data.get("size") else None
    dataset = RawVideoDataset(str(videos), method.sampler(), size=size, short_side=data.get("short_side"), seed=seed,
                              short="skip")
    pending: list[dict[str, Any]] = []
    for k in range(samples_per_video):
        dataset.set_epoch(k)
        for i in range(len(dataset)):
            try:
                item = dataset[i]
            except RuntimeError as exc:  # no readable sample anywhere: every video was skipped
                raise ValueError(f"{videos}: no video fits the sampler of {config.get('method')}: {exc}") from exc
            if int(item["index"]) != i:  # video i was skipped and replaced by another: not a sample of video i
                continue
            pending.append(item)
            if len(pending) == batch_size:
                yield _collate(pending)
                pending = []
    if pending:
        yield _collate(pending)
    if skipped is not None:
        skipped.extend(f"{path}: {reason}" for path, reason in dataset.skipped())


def _collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {"video": torch.stack([it["video"] for it in items]),
            "index": torch.tensor([int(it["index"]) for it in items]),
            "label": torch.zeros(len(items), dtype=torch.long)}


@torch.no_grad()
def score(method: Any, images: torch.Tensor | Iterable[dict[str, torch.Tensor]], batch_size: int = 256,
          seed: int = 0, device: torch.device | str = "cpu") -> dict[str, Any]:
    """``method.pretext_scores`` over uint8 ``(N, 3, H, W)`` images (or over batches, e.g. :func:`video_batches`) ->
    the mean ``score`` and ``chance``, the count, the mean of any other per-sample value the method returns
    (``extra``), and per task class (when the method returns ``target``) the accuracy and count.

    A method whose measure is class-balanced over units inside the samples (colourisation: pixels, by their colour
    bin) returns the sums ``score_by_class``, ``chance_by_class`` and ``count_by_class`` ``(B, K)``; these are
    summed over the whole test set, and ``score`` and ``chance`` are then the class-balanced means (each class
    present counts once: the mean over those classes of the class's mean), with ``classes`` the number present
    and the per-sample means under ``unbalanced``."""
    scores, chances, targets = [], [], []
    extra: dict[str, list[torch.Tensor]] = {}
    by_class: dict[str, torch.Tensor] = {}
    batches = _image_batches(images, batch_size) if isinstance(images, torch.Tensor) else images
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for cpu_batch in batches:
            batch = {key: value.to(device) for key, value in cpu_batch.items()}
            out = method.pretext_scores(batch)
            scores.append(out["score"].float().cpu())
            chances.append(out["chance"].float().cpu())
            if "target" in out:
                targets.append(out["target"].cpu())
            for key, value in out.items():
                if key.endswith("_by_class"):
                    total = value.double().sum(0).cpu()
                    by_class[key] = by_class[key] + total if key in by_class else total
                elif key not in ("score", "chance", "target"):
                    extra.setdefault(key, []).append(value.float().cpu())
    s, c = torch.cat(scores), torch.cat(chances)
    result: dict[str, Any] = {"score": float(s.mean()), "chance": float(c.mean()), "count": len(s),
                              "metric": type(method).pretext_metric,
                              "higher_is_better": type(method).pretext_higher_is_better}
    if by_class:
        missing = {"score_by_class", "chance_by_class", "count_by_class"} - set(by_class)
        if missing:
            raise ValueError(f"{type(method).__name__}.pretext_scores: class sums without {sorted(missing)}")
        present = by_class["count_by_class"] > 0
        if not bool(present.any()):
            raise ValueError(f"{type(method).__name__}: no class has a sample to score")
        n = by_class["count_by_class"][present]
        result["unbalanced"] = {"score": result["score"], "chance": result["chance"]}
        result["score"] = float((by_class["score_by_class"][present] / n).mean())
        result["chance"] = float((by_class["chance_by_class"][present] / n).mean())
        result["classes"] = int(present.sum())
    if extra:
        result["extra"] = {key: float(torch.cat(values).mean()) for key, values in extra.items()}
    if targets:
        t = torch.cat(targets)
        result["per_class"] = {int(k): {"score": float(s[t == k].mean()), "count": int((t == k).sum())}
                               for k in torch.unique(t)}
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="a vidssl training checkpoint")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data", type=Path, help="held-out images: a folder of images or of class folders")
    where.add_argument("--videos", type=Path, help="held-out videos and frame folders, found recursively")
    parser.add_argument("--samples-per-video", type=int, default=10, help="with --videos: samples drawn per video")
    parser.add_argument("--size", type=int, default=None, help="resize and centre-crop images to this size")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="seeds the task's random draws")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also write the results here")


def run(args: argparse.Namespace) -> int:
    try:
        method, config = load_method(args.checkpoint, args.device)
        skipped: list[str] = []
        if args.videos is not None:
            if args.samples_per_video < 1:
                raise ValueError(f"--samples-per-video must be >= 1, got {args.samples_per_video}")
            batches = video_batches(method, config, args.videos, args.samples_per_video, args.batch_size, args.seed,
                                    skipped)
            result = score(method, batches, args.batch_size, args.seed, args.device)
        else:
            images, _, _ = read_image_folder(args.data, args.size)
            result = score(method, images, args.batch_size, args.seed, args.device)
    except (CheckpointError, ConfigError, OSError, ValueError) as exc:
        print(f"vidssl eval pretext: {exc}", file=sys.stderr)
        return 1
    except NotImplementedError as exc:
        print(f"vidssl eval pretext: {args.checkpoint}: {exc}", file=sys.stderr)
        return 1
    source = args.videos if args.videos is not None else args.data
    what = "video samples" if args.videos is not None else "images"
    result.update(checkpoint=str(args.checkpoint), method=config["method"], data=str(source), seed=args.seed,
                  skipped=skipped)
    for line in skipped:
        print(f"skipped {line}")
    better = "higher" if result["higher_is_better"] else "lower"
    print(f"{config['method']} pretext {result['metric']} on {result['count']} held-out {what}: "
          f"{result['score']:.4f} (chance {result['chance']:.4f}; {better} is better)")
    if "unbalanced" in result:
        u = result["unbalanced"]
        print(f"  balanced over {result['classes']} classes; unbalanced {u['score']:.4f} (chance {u['chance']:.4f})")
    for key, value in result.get("extra", {}).items():
        print(f"  {key}: {value:.4f}")
    for k, v in result.get("per_class", {}).items():
        print(f"  class {k}: {v['score']:.4f} ({v['count']})")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0
