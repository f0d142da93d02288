"""How spread out an encoder's features are on real frames: the effective rank of the L2-normalised,
centred per-position features (exp of the entropy of the normalised squared singular values; Roy & Vetterli
2007), their mean pairwise cosine and the cosine of horizontal neighbours. A collapsing encoder (few
dimensions carry everything) propagates labels badly however low its training loss is (docs/results.md).

    python tools/feature_rank.py ENCODER [ENCODER ...] --frames a.jpg b.jpg [--json out.json]

ENCODER is what ``vidssl eval davis --encoder`` takes: a checkpoint, ``random``, ``pixels``. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vidssl.eval.encoders import build_encoder


def effective_rank(features: torch.Tensor) -> float:
    """``(C, N)`` -> exp(entropy of the normalised squared singular values of the centred columns)."""
    x = features - features.mean(dim=1, keepdim=True)
    s = torch.linalg.svdvals(x.double()) ** 2
    p = s / s.sum()
    return float(torch.exp(-(p * torch.log(p.clamp_min(1e-300))).sum()))


def stats(features: torch.Tensor) -> dict[str, float]:
    """``(C, h, w)`` features -> effective rank, mean pairwise cosine, mean neighbour cosine."""
    unit = F.normalize(features.float(), dim=0)
    flat = unit.flatten(1)
    return {
        "effective_rank": effective_rank(flat),
        "mean_cosine": float((flat.mean(dim=1) ** 2).sum()),  # mean over all pairs of <u_i, u_j>
        "neighbour_cosine": float((unit[:, :, 1:] * unit[:, :, :-1]).sum(0).mean()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("encoders", nargs="+")
    p.add_argument("--frames", nargs="+", type=Path, required=True, help="RGB images (e.g. DAVIS JPEGs)")
    p.add_argument("--backbone", default="resnet18_s8_l3", help="architecture of random / torchvision weights")
    p.add_argument("--input", default="auto", choices=["auto", "rgb", "lab"],
                   help="what a ResNet is fed (auto: what a checkpoint trained on, Lab for MAST; RGB otherwise)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    frames = []
    for path in args.frames:
        try:
            frames.append(np.array(Image.open(path).convert("RGB")))
        except OSError as exc:
            print(f"error: {path}: cannot read image ({exc})", file=sys.stderr)
            return 2
    rows = []
    print(f"{'encoder':40s} {'eff. rank':>9s} {'mean cos':>9s} {'nbr cos':>8s}")
    for spec in args.encoders:
        encoder = build_encoder(spec, "cpu", args.backbone, input=args.input)
        if encoder.encode is None:
            print(f"error: {spec}: has no features", file=sys.stderr)
            return 2
        per_frame = [stats(encoder.encode(f)) for f in frames]
        row = {"encoder": spec, **{k: float(np.mean([s[k] for s in per_frame])) for k in per_frame[0]}}
        rows.append(row)
        print(f"{spec[-40:]:40s} {row['effective_rank']:9.1f} {row['mean_cosine']:9.3f} {row['neighbour_cosine']:8.3f}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
