"""``vidssl eval pretext``: a method's own pretext task on images it never trained on, the direct evidence that
it learned the task (rotation, jigsaw order, relative position, colour, inpainting, exemplar retrieval) and how
far above chance.

    vidssl eval pretext --checkpoint runs/rotation_cifar/checkpoints/ckpt_00000400.pt --data ../shared/data/cifar10/test

The checkpoint's own method is rebuilt from its recorded config and weights and scored in eval mode by its
``pretext_scores`` (``vidssl.methods.base.SSLMethod``) over every image of ``--data`` (a folder of images, or of
class folders), the task's random draws (rotations, permutations, patches) seeded by ``--seed`` so that two
checkpoints meet the same draws. Prints the mean score, its chance level and, for a classification task, the
accuracy per class of the task. It needs the whole method, not only its encoder, so it sits beside the trainer
and above ``vidssl.eval`` (whose evaluations take any encoder record and never import a method).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

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


@torch.no_grad()
def score(method: Any, images: torch.Tensor, batch_size: int = 256, seed: int = 0,
          device: torch.device | str = "cpu") -> dict[str, Any]:
    """``method.pretext_scores`` over uint8 ``(N, 3, H, W)`` images -> the mean ``score`` and ``chance``, the count,
    the mean of any other per-sample value the method returns (``extra``), and per task class (when the method
    returns ``target``) the accuracy and count."""
    scores, chances, targets = [], [], []
    extra: dict[str, list[torch.Tensor]] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i, chunk in enumerate(images.split(batch_size)):
            batch = {"video": chunk[:, :, None].to(device),
                     "index": torch.arange(i * batch_size, i * batch_size + len(chunk), device=device),
                     "label": torch.zeros(len(chunk), dtype=torch.long, device=device)}
            out = method.pretext_scores(batch)
            scores.append(out["score"].float().cpu())
            chances.append(out["chance"].float().cpu())
            if "target" in out:
                targets.append(out["target"].cpu())
            for key, value in out.items():
                if key not in ("score", "chance", "target"):
                    extra.setdefault(key, []).append(value.float().cpu())
    s, c = torch.cat(scores), torch.cat(chances)
    result: dict[str, Any] = {"score": float(s.mean()), "chance": float(c.mean()), "count": len(s),
                              "metric": type(method).pretext_metric,
                              "higher_is_better": type(method).pretext_higher_is_better}
    if extra:
        result["extra"] = {key: float(torch.cat(values).mean()) for key, values in extra.items()}
    if targets:
        t = torch.cat(targets)
        result["per_class"] = {int(k): {"score": float(s[t == k].mean()), "count": int((t == k).sum())}
                               for k in torch.unique(t)}
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=Path, help="a vidssl training checkpoint")
    parser.add_argument("--data", required=True, type=Path, help="held-out images: a folder of class folders")
    parser.add_argument("--size", type=int, default=None, help="resize and centre-crop images to this size")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="seeds the task's random draws")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, help="also write the results here")


def run(args: argparse.Namespace) -> int:
    try:
        method, config = load_method(args.checkpoint, args.device)
        images, _, _ = read_image_folder(args.data, args.size)
        result = score(method, images, args.batch_size, args.seed, args.device)
    except (CheckpointError, ConfigError, OSError, ValueError) as exc:
        print(f"vidssl eval pretext: {exc}", file=sys.stderr)
        return 1
    except NotImplementedError as exc:
        print(f"vidssl eval pretext: {args.checkpoint}: {exc}", file=sys.stderr)
        return 1
    result.update(checkpoint=str(args.checkpoint), method=config["method"], data=str(args.data), seed=args.seed)
    better = "higher" if result["higher_is_better"] else "lower"
    print(f"{config['method']} pretext {result['metric']} on {result['count']} held-out images: "
          f"{result['score']:.4f} (chance {result['chance']:.4f}; {better} is better)")
    for key, value in result.get("extra", {}).items():
        print(f"  {key}: {value:.4f}")
    for k, v in result.get("per_class", {}).items():
        print(f"  class {k}: {v['score']:.4f} ({v['count']})")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0
