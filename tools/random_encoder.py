"""Write a randomly initialised trunk as an encoder file, the random baseline of an encoder no ``--encoder random``
spec builds: a trunk reading only some input channels (the L of Lab: colourisation's and CMC's), fed Lab.

    python tools/random_encoder.py --backbone resnet18 --channels 0 --input lab --seed 0 --out runs/random_l_s0.pt

Every evaluation reads the file as it reads a checkpoint's encoder (``--encoder runs/random_l_s0.pt``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vidssl.models import ResNet, build_backbone
from vidssl.models.record import encoder_entries


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18", help="a named trunk (vidssl.models.BACKBONES)")
    parser.add_argument("--channels", type=int, nargs="+", default=None, help="input channels it reads (0: L of Lab)")
    parser.add_argument("--input", default="rgb", choices=["rgb", "lab"], help="what evaluations feed it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    config = build_backbone(args.backbone).config
    net = ResNet.from_config({**config, "channels": tuple(args.channels)} if args.channels else config)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**encoder_entries(net, args.input), "seed": args.seed}, args.out)
    print(f"{args.out}: a random {args.backbone} (seed {args.seed}, channels {args.channels or 'all'}) fed "
          f"{args.input}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
