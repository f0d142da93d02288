"""Can a method fit a few fixed training samples? The first check when a method's loss sits at chance.

    python tools/fixed_clips.py --config configs/cpu/opn.yaml --samples 16 --steps 300 [--freeze-trunk] \
        [KEY=VALUE ...]

Draws ``--samples`` items of the config's dataset once (seeded), then trains the method on batches drawn from
those items only (``data.batch_size`` each, the optimiser and rate of the config, no schedule), so everything the
method draws itself (the order shown, crops, jitter) is still new at every step. A loss that stays at chance here
will not move on the whole dataset either: the method, its head or its augmentation is what to look at, not the
budget. Prints the loss and the method's metrics averaged over every ``--every`` steps (and writes them as JSON
with ``--json``). ``--freeze-trunk`` trains everything but ``backbone`` (kept in eval mode), which separates "the
head cannot read the order from these features" from "the trunk does not learn".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vidssl.engine.optim import build_optimizer
from vidssl.methods import METHODS
from vidssl.train import build_dataset_for, load_run_config, scaled_lr


def fixed_batch(dataset: Any, samples: int, seed: int) -> dict[str, torch.Tensor]:
    """``samples`` items of ``dataset`` (distinct, seeded) stacked into one batch of their tensors."""
    if samples > len(dataset):
        raise ValueError(f"--samples {samples}: the dataset has only {len(dataset)} items")
    idx = np.random.default_rng(seed).choice(len(dataset), samples, replace=False)
    items = [dataset[int(i)] for i in idx]
    return {k: torch.stack([item[k] for item in items]) for k, v in items[0].items() if isinstance(v, torch.Tensor)}


def run(config: str, overrides: list[str], samples: int, steps: int, every: int, freeze_trunk: bool,
        seed: int = 0, dataset: Any = None) -> tuple[list[dict[str, float]], torch.nn.Module]:
    """Train on ``samples`` fixed items for ``steps`` steps: one record per ``every`` steps (means), and the method
    as trained."""
    cfg, model_cfg = load_run_config(config, overrides)
    torch.manual_seed(seed)
    method = METHODS[cfg.method](model_cfg)
    data = fixed_batch(dataset if dataset is not None else build_dataset_for(cfg, method), samples, seed)
    if freeze_trunk:
        trunk = getattr(method, "backbone", None)
        if not isinstance(trunk, torch.nn.Module):
            raise ValueError(f"--freeze-trunk: method {cfg.method!r} has no backbone module")
        trunk.requires_grad_(False)
    o = cfg.optim
    optimizer = build_optimizer(method, o.name, lr=scaled_lr(o, cfg.data.batch_size), weight_decay=o.weight_decay,
                                momentum=o.momentum, betas=o.betas, nesterov=o.nesterov)
    batch_size = min(cfg.data.batch_size, samples)
    records: list[dict[str, float]] = []
    window: list[dict[str, float]] = []
    start = time.time()
    for step in range(1, steps + 1):
        method.train()
        if freeze_trunk:
            method.backbone.eval()
        pick = torch.randperm(samples)[:batch_size]
        loss, metrics = method({k: v[pick] for k, v in data.items()})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        window.append({"loss": float(loss.detach()), **{k: float(v) for k, v in metrics.items()}})
        if step % every == 0 or step == steps:
            mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            records.append({"step": step, **mean, "seconds": time.time() - start})
            print(" ".join([f"step {step}"] + [f"{k} {v:.4g}" for k, v in mean.items()]), flush=True)
            window = []
    return records, method


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--samples", type=int, default=16, help="fixed items of the dataset to train on")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=10, help="print the mean of every so many steps")
    parser.add_argument("--freeze-trunk", action="store_true", help="train everything but the backbone")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("overrides", nargs="*", help="config overrides, KEY=VALUE")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.steps < 1 or args.every < 1:
        print("--samples, --steps and --every must be at least 1", file=sys.stderr)
        return 2
    try:
        records, _ = run(args.config, args.overrides, args.samples, args.steps, args.every, args.freeze_trunk,
                         args.seed)
    except ValueError as exc:
        print(f"fixed_clips: {exc}", file=sys.stderr)
        return 1
    if args.json is not None:
        args.json.write_text(json.dumps(records, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
