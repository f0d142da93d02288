"""``vidssl demo``: pretrain a CRW encoder briefly, then compare it with baselines by DAVIS label propagation.

With no arguments everything runs on the built-in synthetic data, within minutes on a laptop CPU:

1. pretraining: the Contrastive Random Walk (``vidssl.methods.crw``) through the real training loop
   (``vidssl.train``) on the synthetic training videos (``data.source: synthetic``, generator seed 1),
   with a tiny-but-real config (small crops and patches, few steps; ``configs/crw.yaml`` is the full recipe);
2. evaluation: first-frame masks propagated through the ``identity`` (copy the first mask), ``pixels`` (Lab
   colour), ``random`` (untrained ResNet) and the pretrained encoders on the synthetic DAVIS tree (seed 0,
   disjoint from the training videos), scored with the official J&F, with overlay images written;
3. one table: J&F, J-Mean and F-Mean per encoder.

``--videos DIR`` trains on real videos or frame folders instead, ``--davis-root ROOT`` evaluates on a real
DAVIS-2017 tree (e.g. ``../shared/data/davis``).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidssl.engine.config import ConfigError
from vidssl.eval.propagation import PropagationConfig

HELP = "pretrain briefly (CRW by default) on synthetic (or your) videos and compare label propagation with baselines"

BASELINES = ("identity", "pixels", "random")
DEMO_SEQUENCES = 2  # synthetic sequences evaluated by default (each encoder costs ~30-60 s per sequence on 2 cores)


@dataclass
class DemoConfig:
    """What the demo does; every field has a command-line option."""

    steps: int = 60  # optimiser steps of pretraining
    out: Path = Path("runs/demo")
    videos: str = "synthetic"  # training videos: a folder / manifest, or the built-in synthetic ones
    davis_root: Path | None = None  # None: the synthetic DAVIS tree (vidssl.data.synthetic.default_data(0))
    sequences: list[str] | None = None  # None: the first DEMO_SEQUENCES (synthetic) or val.txt (a real root)
    batch_size: int = 4  # the synthetic training set has 4 videos: one batch per epoch, new clips each time
    workers: int = 0  # an epoch is one batch here: worker start-up would cost more than decoding
    device: str = "cpu"
    seed: int = 0
    progress: bool = True
    method: str = "crw"
    model: dict[str, Any] | None = None  # None: MODELS[method]
    frame_size: tuple[int, int] = (96, 128)
    lr: float = 3.0e-4


MODELS: dict[str, dict[str, Any]] = {
    # a CRW small enough for a CPU: a 64 px crop of 96x128 frames cut into 3x3 patches of 32 px, 4-frame
    # clips, on the 256-d stride-8 trunk that label propagation uses (CRW's test-time trunk)
    "crw": {"backbone": "resnet18_s8_l3", "crop_size": 64, "patch_size": 32, "patch_stride": 16, "clip_len": 4,
            "frame_stride": 2},  # the synthetic videos move 2-4 px per frame: every 2nd frame keeps walks local
    "corrflow": {"backbone": "resnet18_s8_l3", "crop_size": 96, "sampling_steps": 200, "frame_interval": 2},
    "mast": {"backbone": "resnet18_s8_l3", "crop_size": 96},
}


def pretrain_config(cfg: DemoConfig) -> dict[str, Any]:
    """The run config (as ``vidssl train`` reads it) of the demo's pretraining."""
    if cfg.method not in MODELS and cfg.model is None:
        raise ConfigError(f"--method: {cfg.method!r} has no demo model; known: {', '.join(MODELS)}")
    return {
        "method": cfg.method,
        "seed": cfg.seed,
        "out_dir": str(cfg.out / "pretrain"),
        "device": cfg.device,
        "model": dict(cfg.model if cfg.model is not None else MODELS[cfg.method]),
        "data": {"kind": "video", "source": cfg.videos, "size": list(cfg.frame_size), "batch_size": cfg.batch_size,
                 "workers": cfg.workers},
        "optim": {"name": "adam", "lr": cfg.lr, "weight_decay": 0.0},  # the README's advice for small runs
        "schedule": {"name": "constant", "steps": cfg.steps},
        "log": {"every": max(1, cfg.steps // 6), "tensorboard": False, "progress": cfg.progress},
        "ckpt": {"every": cfg.steps, "keep": 1, "resume": "none"},
    }


def pretrain(cfg: DemoConfig) -> tuple[Path, list[dict[str, float]]]:
    """Train as ``pretrain_config`` says; returns the checkpoint and the logged records."""
    import json

    from vidssl.engine.checkpoint import checkpoint_path
    from vidssl.train import resolve_config, train

    run_cfg, _ = resolve_config(pretrain_config(cfg))
    metrics = Path(run_cfg.out_dir) / "metrics.jsonl"
    seen = metrics.stat().st_size if metrics.is_file() else 0  # the log appends: skip earlier runs' records
    result = train(run_cfg)
    checkpoint = checkpoint_path(result.out_dir / "checkpoints", result.step)  # this run's, not an older one
    if not checkpoint.is_file():
        raise RuntimeError(f"{checkpoint}: training finished without writing its checkpoint")
    with metrics.open("rb") as f:
        f.seek(seen)
        records = [json.loads(line) for line in f.read().decode().splitlines() if line.strip()]
    return checkpoint, records


def format_summary(rows: list[tuple[str, dict[str, float]]]) -> str:
    """One table: encoder, J&F-Mean, J-Mean, F-Mean (the official global figures)."""
    width = max(len("encoder"), *(len(name) for name, _ in rows))
    lines = [f"{'encoder'.ljust(width)}  J&F-Mean  J-Mean  F-Mean"]
    for name, table in rows:
        lines.append(f"{name.ljust(width)}  {table['J&F-Mean']:8.4f}  {table['J-Mean']:6.4f}  {table['F-Mean']:6.4f}")
    return "\n".join(lines)


def run_demo(cfg: DemoConfig) -> list[tuple[str, dict[str, float]]]:
    """Pretrain, evaluate every encoder, print the table; returns ``[(encoder, global table), ...]``."""
    from vidssl.data.synthetic import default_data
    from vidssl.eval.davis import evaluate_encoder
    from vidssl.eval.davis_metrics import read_sequence_list
    from vidssl.eval.encoders import build_encoder

    start = time.perf_counter()
    if cfg.steps < 1:
        raise ConfigError(f"--steps: must be at least 1, got {cfg.steps}")
    if cfg.videos != "synthetic" and not Path(cfg.videos).exists():
        raise ConfigError(f"--videos: {cfg.videos}: no such folder or file")
    if cfg.davis_root is not None:
        root = cfg.davis_root
        if not (root / "JPEGImages").is_dir() or not (root / "Annotations").is_dir():
            raise ConfigError(f"--davis-root: {root}: not a DAVIS tree (JPEGImages/ and Annotations/ expected)")
        sequences = cfg.sequences or read_sequence_list(root)
    else:
        print("preparing the synthetic data (generated once into the vidssl cache) ...", flush=True)
        root = default_data(seed=0) / "davis"
        if cfg.videos == "synthetic":
            default_data(seed=1)  # the training videos, so their generation is not counted as a training step
        sequences = cfg.sequences or read_sequence_list(root)[:DEMO_SEQUENCES]

    print(f"[1/2] pretraining {cfg.method} for {cfg.steps} steps on {cfg.videos} videos ...", flush=True)
    t0 = time.perf_counter()
    checkpoint, records = pretrain(cfg)
    if records:
        first, last = records[0], records[-1]
        acc = (f", accuracy {first['method/acc']:.3f} -> {last['method/acc']:.3f}"
               if "method/acc" in first and "method/acc" in last else "")
        print(f"      loss {first['loss']:.3f} -> {last['loss']:.3f}{acc} ({time.perf_counter() - t0:.0f} s; "
              f"checkpoint {checkpoint})", flush=True)

    # CRW's protocol (configs/eval/crw.yaml); a 40-cell tile covers a whole synthetic frame, which is
    # faster on small frames and gives the same result (the tile only changes speed)
    prop = PropagationConfig(tile=40)
    specs = [*BASELINES, str(checkpoint)]
    names = [*BASELINES, f"{cfg.method} (pretrained)"]
    rows: list[tuple[str, dict[str, float]]] = []
    print(f"[2/2] label propagation on {len(sequences)} sequence(s) of {root} ...", flush=True)
    for i, (spec, name) in enumerate(zip(specs, names, strict=True)):
        t1 = time.perf_counter()
        encoder = build_encoder(spec, cfg.device, seed=cfg.seed)
        out = cfg.out / "eval" / (name.split()[0])
        result = evaluate_encoder(encoder, root, out, prop, sequences, overlays=True, progress=cfg.progress)
        rows.append((name, dict(result.global_table)))
        print(f"      [{i + 1}/{len(specs)}] {name}: J&F {result.global_table['J&F-Mean']:.4f} "
              f"({time.perf_counter() - t1:.0f} s)", flush=True)

    print("\nDAVIS-2017 semi-supervised, official metrics (global means over objects)")
    print(format_summary(rows))
    print(f"\noverlays (propagated masks over frames): {cfg.out / 'eval' / '<encoder>' / 'overlays'}")
    print(f"predictions and CSVs: {cfg.out / 'eval'}; pretraining run: {cfg.out / 'pretrain'}")
    print(f"total time {time.perf_counter() - start:.0f} s")
    return rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DemoConfig()
    parser.add_argument("--method", default=d.method, choices=sorted(MODELS),
                        help=f"the method pretrained (default {d.method}; each has a CPU-sized model here)")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"pretraining steps (default {d.steps})")
    parser.add_argument("--out", type=Path, default=d.out, help=f"output folder (default {d.out})")
    parser.add_argument("--videos", default=d.videos, help="training videos or frame folders (default: synthetic)")
    parser.add_argument("--davis-root", type=Path, default=None, help="a DAVIS-2017 tree (default: synthetic)")
    parser.add_argument("--sequences", nargs="+", default=None,
                        help=f"sequences to evaluate (default: {DEMO_SEQUENCES} synthetic ones, or val.txt)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="clips per pretraining step")
    parser.add_argument("--workers", type=int, default=d.workers, help="data-loader workers")
    parser.add_argument("--device", default=d.device, choices=["cpu", "cuda"])
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    cfg = DemoConfig(method=args.method, steps=args.steps, out=args.out, videos=args.videos, davis_root=args.davis_root,
                     sequences=args.sequences, batch_size=args.batch_size, workers=args.workers,
                     device=args.device, seed=args.seed, progress=not args.no_progress)
    try:
        run_demo(cfg)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"vidssl demo: {exc}", file=sys.stderr)
        return 2
    return 0
