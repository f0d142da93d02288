"""The demo's pretraining with a checkpoint every K steps, each checkpoint scored by label propagation: how
J&F moves with training on the demo's data (docs/results.md, "The demo's synthetic data").

    python tools/demo_curve.py --method corrflow --steps 300 --every 150 --frame-size 240 320 \\
        [--videos DIR] [--davis-root ROOT] [--realistic] [--sequences 2] [--baselines] [--set crop_size=128 ...]
        [--json out.json]

Without ``--videos`` / ``--davis-root`` it trains on the built-in synthetic training videos and evaluates
the first ``--sequences`` synthetic sequences, as ``vidssl demo`` does; ``--realistic`` writes both sets
with ``vidssl.data.synthetic.REALISTIC`` instead (once, under ``OUT/data``); ``--set KEY=VALUE`` overrides a key of
the demo's model config (values read as YAML); ``--baselines`` scores pixels and the random trunk too;
``--oracle`` scores the protocol's ceiling: features that are each frame's ground-truth object map (one-hot,
averaged over the 8x8 cells), what a perfect encoder of the objects would give. ``--steps 0`` scores only
the baselines and the oracle.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vidssl.demo import DEMO_SEQUENCES, MODELS, DemoConfig, pretrain_config

if TYPE_CHECKING:
    from vidssl.eval.encoders import FrameEncoder


def oracle_encoder(root: Path, sequences: list[str], stride: int = 8) -> FrameEncoder:
    """Features from the ground truth: each frame's object map, one-hot over the objects and the background,
    averaged over ``stride`` x ``stride`` cells (edge-padded to a multiple). Frames are recognised by their
    pixels (a hash of the decoded JPEG), so the evaluation runs unchanged."""
    import hashlib

    import numpy as np
    import torch
    import torch.nn.functional as F

    from vidssl.data.label_io import read_indexed_png
    from vidssl.eval.davis import read_frame, sequence_files
    from vidssl.eval.encoders import FrameEncoder

    maps: dict[str, np.ndarray] = {}
    for seq in sequences:
        frames, first = sequence_files(root, seq)
        for path in frames:
            labels = read_indexed_png(first.parent / f"{path.stem}.png")
            maps[hashlib.sha1(read_frame(path).tobytes()).hexdigest()] = np.where(labels == 255, 0, labels)
    k = int(max(m.max() for m in maps.values())) + 1

    def encode(frame: np.ndarray) -> torch.Tensor:
        labels = maps.get(hashlib.sha1(np.ascontiguousarray(frame).tobytes()).hexdigest())
        if labels is None:
            raise ValueError("oracle: a frame that is not in the evaluated sequences")
        onehot = F.one_hot(torch.as_tensor(labels).long(), k).permute(2, 0, 1)[None].float()
        h, w = onehot.shape[-2:]
        onehot = F.pad(onehot, (0, -w % stride, 0, -h % stride), mode="replicate")
        return F.avg_pool2d(onehot, stride)[0]

    return FrameEncoder("oracle", stride, encode, torch.device("cpu"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="corrflow", choices=sorted(MODELS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=150, help="checkpoint (and score) every this many steps")
    parser.add_argument("--frame-size", type=int, nargs=2, default=[96, 128], metavar=("H", "W"))
    parser.add_argument("--videos", default="synthetic")
    parser.add_argument("--davis-root", type=Path, default=None, help="default: the synthetic DAVIS tree")
    parser.add_argument("--realistic", action="store_true", help="synthetic data with synthetic.REALISTIC")
    parser.add_argument("--sequences", type=int, default=DEMO_SEQUENCES, help="the first N sequences of val.txt")
    parser.add_argument("--baselines", action="store_true", help="score pixels and the random trunk too")
    parser.add_argument("--oracle", action="store_true", help="score ground-truth object maps as features too")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="model config overrides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/demo_curve"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from vidssl.data.synthetic import REALISTIC, default_data, is_complete, write_dataset
    from vidssl.engine.checkpoint import checkpoint_path
    from vidssl.eval.davis import evaluate_encoder
    from vidssl.eval.davis_metrics import read_sequence_list
    from vidssl.eval.encoders import build_encoder
    from vidssl.eval.propagation import PropagationConfig
    from vidssl.train import resolve_config, train

    if args.realistic and (args.videos != "synthetic" or args.davis_root is not None):
        parser.error("--realistic writes its own training videos and DAVIS tree: leave out --videos and --davis-root")
    if args.realistic:  # the demo's two synthetic sets (training seed 1, evaluation seed 0), written realistic
        for seed, name in ((1, "train"), (0, "eval")):
            if not is_complete(args.out / "data" / name):
                write_dataset(args.out / "data" / name, seed=seed, scene=REALISTIC, overwrite=True)
        args.videos = str(args.out / "data" / "train" / "videos")
        args.davis_root = args.out / "data" / "eval" / "davis"
    model = dict(MODELS[args.method])
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected KEY=VALUE")
        model[key] = yaml.safe_load(value)
    cfg = DemoConfig(method=args.method, steps=args.steps, out=args.out, videos=args.videos, seed=args.seed,
                     model=model, frame_size=(args.frame_size[0], args.frame_size[1]), progress=False)
    run = pretrain_config(cfg)
    run["ckpt"] = {"every": args.every, "keep": args.steps // args.every + 1, "resume": "none"}
    root = args.davis_root if args.davis_root is not None else default_data(seed=0) / "davis"
    if args.videos == "synthetic":
        default_data(seed=1)
    sequences = read_sequence_list(root)[: args.sequences]

    t0 = time.perf_counter()
    if args.steps > 0:
        run_cfg, _ = resolve_config(run)
        train(run_cfg)
        print(f"trained {args.steps} steps in {time.perf_counter() - t0:.0f} s", flush=True)
    prop = PropagationConfig(tile=40)  # as vidssl demo: a tile covering a small frame (speed only)
    specs = [("pixels", "pixels"), ("random", "random")] if args.baselines else []
    # this run's checkpoints only (the folder may hold an earlier run's): every --every steps and the last
    saved = sorted({*range(args.every, args.steps + 1, args.every), args.steps} - {0})
    paths = [checkpoint_path(args.out / "pretrain" / "checkpoints", step) for step in saved]
    specs += [(path.stem, str(path)) for path in paths]
    if args.oracle:
        specs.append(("oracle", "oracle"))
    rows = []
    for name, spec in specs:
        encoder = oracle_encoder(root, sequences) if spec == "oracle" else build_encoder(spec, seed=args.seed)
        result = evaluate_encoder(encoder, root, args.out / "eval" / name, prop, sequences, progress=False)
        rows.append({"encoder": name, **{k: float(v) for k, v in result.global_table.items()}})
        print(f"{name}: J&F {rows[-1]['J&F-Mean']:.4f}", flush=True)
    print("\n| encoder | J&F | J | F |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['encoder']} | {row['J&F-Mean']:.4f} | {row['J-Mean']:.4f} | {row['F-Mean']:.4f} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
