"""CorrFlow's colour clusters: k-means of the ab colour (Lab) of pixels sampled from the training videos.

The authors shipped 16 centroids from 10,000 sampled Kinetics frames (``datas/centroids/``); this tool
computes the same kind of set from any videos or frame folders, so the clusters match the training data:

    python tools/corrflow_centroids.py ../shared/data/frames ../shared/data/videos \\
        --out configs/corrflow_centroids.json

Each source contributes ``--frames`` random frames, squashed to ``--size`` px as CorrFlow's training input,
and ``--pixels`` random pixels per frame; k-means (k-means++ seeding, ``--seed``) runs on their ab values.
Writes ``.json`` (centroids plus provenance) or ``.npy`` (the bare ``(K, 2)`` array), chosen by extension,
and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidssl.data.index import discover
from vidssl.data.video import VideoError, open_video
from vidssl.nn.colour import kmeans, rgb_to_lab


def sample_ab(
    sources: Sequence[Path], frames: int, pixels: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[str]]:
    """ab values ``(N, 2)`` of random pixels of random frames of every source, and the sources skipped."""
    chunks, skipped = [], []
    for src in sources:
        try:
            with open_video(src) as reader:
                idx = np.sort(rng.choice(len(reader), size=min(frames, len(reader)), replace=False))
                rgb = reader.get(idx)  # (t, H, W, 3) uint8
        except VideoError as exc:
            skipped.append(str(exc))
            continue
        x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div_(255)
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)
        ab = rgb_to_lab(x)[:, 1:].permute(0, 2, 3, 1).reshape(len(idx), -1, 2).numpy()  # (t, s*s, 2)
        pick = rng.integers(0, ab.shape[1], size=(len(idx), pixels))
        chunks.append(np.take_along_axis(ab, pick[..., None], axis=1).reshape(-1, 2))
    if not chunks:
        raise ValueError("no readable video or frame folder among the sources: " + "; ".join(skipped))
    return np.concatenate(chunks).astype(np.float64), skipped


def compute_centroids(
    roots: Sequence[str | Path], k: int = 16, frames: int = 8, pixels: int = 2000, size: int = 256, seed: int = 0
) -> tuple[np.ndarray, dict[str, object]]:
    """``(k, 2)`` ab centroids from the videos and frame folders found under ``roots``, and provenance."""
    sources: list[Path] = []
    for root in roots:
        path = Path(root)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such video, frame folder or directory")
        found = discover(path) if path.is_dir() else [path]
        sources.extend(found or [path])  # a frame folder given directly is its own source
    rng = np.random.default_rng(seed)
    ab, skipped = sample_ab(sources, frames, pixels, size, rng)
    cents = kmeans(ab, k, seed=seed)
    info: dict[str, object] = {
        "k": k, "sources": len(sources) - len(skipped), "skipped": skipped, "pixels": len(ab),
        "frames_per_source": frames, "size": size, "seed": seed, "space": "CIE Lab ab (D65), a/b about +-128",
    }
    return cents, info


def write_centroids(cents: np.ndarray, info: dict[str, object], out: Path) -> None:
    """``.npy``: the bare array; anything else: JSON with ``centroids`` and the provenance."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, cents.astype(np.float32))
    else:
        out.write_text(json.dumps({"centroids": np.round(cents, 4).tolist(), **info}, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", help="videos, frame folders, or directories searched recursively")
    parser.add_argument("--out", type=Path, required=True, help="output .json or .npy")
    parser.add_argument("--k", type=int, default=16, help="clusters (CorrFlow: 16)")
    parser.add_argument("--frames", type=int, default=8, help="random frames per source")
    parser.add_argument("--pixels", type=int, default=2000, help="random pixels per frame")
    parser.add_argument("--size", type=int, default=256, help="frames squashed to size x size first")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    cents, info = compute_centroids(args.roots, args.k, args.frames, args.pixels, args.size, args.seed)
    write_centroids(cents, info, args.out)
    print(f"{'k':>3} {'a':>9} {'b':>9}")
    for i, (a, b) in enumerate(cents):
        print(f"{i:>3} {a:9.3f} {b:9.3f}")
    print(f"{info['pixels']} pixels from {info['sources']} sources -> {args.out}")
    for problem in info["skipped"]:  # type: ignore[attr-defined]
        print(f"skipped: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
