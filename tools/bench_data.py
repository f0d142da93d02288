"""Data-layer throughput and memory: random-clip sampling against the raw sequential decode rate.

For every combination of clip length T, stride and loader workers, frames delivered per second by
``RawVideoDataset`` (random clips, frames resized to cover 256x256 and cropped) over a folder of videos,
next to the raw sequential decode rate of the same files (the practical ceiling). Then resident memory
over many samples, which must stay flat after warm-up.

    python tools/bench_data.py [--videos DIR] [--samples 200] [--memory-samples 2000] [--out bench_data.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from torch.utils.data import DataLoader
from tqdm import tqdm

from vidssl.data.datasets import RawVideoDataset
from vidssl.data.index import discover
from vidssl.data.samplers import random_clip
from vidssl.data.video import open_video
from vidssl.data.views import FrameSampler
from vidssl.paths import data_root


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process in MiB (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def sequential_rate(paths: list[Path], backend: str, chunk: int = 32) -> dict[str, float]:
    """Frames per second decoding every frame of every file in order (no resize)."""
    frames, seconds = 0, 0.0
    for path in paths:
        start = time.perf_counter()
        with open_video(path, backend=backend) as reader:
            n = len(reader)
            for first in range(0, n, chunk):
                reader.get(range(first, min(n, first + chunk)))
        seconds += time.perf_counter() - start
        frames += n
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds}


def clip_rate(
    paths: list[Path], length: int, stride: int, workers: int, samples: int, backend: str, batch: int = 8
) -> dict[str, float]:
    """Frames per second delivered by the dataset through a DataLoader (after one warm-up batch)."""
    ds = RawVideoDataset(paths, FrameSampler(random_clip, dict(length=length, stride=stride)), size=(256, 256),
                         backend=backend, seed=0)
    loader = DataLoader(ds, batch_size=batch, num_workers=workers, shuffle=True,
                        persistent_workers=workers > 0)
    delivered, start = 0, 0.0
    iterator = iter(_cycle(loader))
    next(iterator)  # warm-up: workers start, readers open
    start = time.perf_counter()
    while delivered < samples * length:
        out = next(iterator)
        delivered += out["video"].shape[0] * out["video"].shape[2]
    seconds = time.perf_counter() - start
    return {"frames": delivered, "seconds": seconds, "fps": delivered / seconds}


def _cycle(loader: DataLoader):  # type: ignore[no-untyped-def]
    while True:
        yield from loader


def memory_trace(paths: list[Path], samples: int, backend: str, every: int = 100) -> list[tuple[int, float]]:
    """RSS of this process (workers=0, so the decoders live here) every ``every`` samples."""
    ds = RawVideoDataset(paths, FrameSampler(random_clip, dict(length=8, stride=4)), size=(256, 256),
                         backend=backend, seed=1)
    trace = [(0, rss_mb())]
    for i in tqdm(range(1, samples + 1), desc="memory", leave=False):
        ds.set_epoch(i // len(ds))
        ds[i % len(ds)]
        if i % every == 0:
            trace.append((i, rss_mb()))
    return trace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = data_root()
    parser.add_argument("--videos", type=Path, default=default / "videos" if default else None)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--samples", type=int, default=160, help="clips per measurement")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--memory-samples", type=int, default=2000)
    parser.add_argument("--memory-only", action="store_true", help="skip the throughput table")
    parser.add_argument("--out", type=Path, default=Path("bench_data.json"))
    args = parser.parse_args()
    if args.videos is None or not args.videos.is_dir():
        parser.error("no video folder: pass --videos or set VIDSSL_DATA")
    paths = [p for p in discover(args.videos) if p.is_file()]
    print(f"{len(paths)} videos in {args.videos}, backend={args.backend}, cpus={os.cpu_count()}")

    seq: dict[str, float] = {}
    rows = []
    if not args.memory_only:
        seq = sequential_rate(paths, args.backend)
        print(f"sequential decode (ceiling): {seq['fps']:.1f} frames/s over {seq['frames']} frames")
    for length in () if args.memory_only else (4, 8):
        for stride in (1, 4):
            for workers in args.workers:
                r = clip_rate(paths, length, stride, workers, args.samples, args.backend)
                rows.append({"T": length, "stride": stride, "workers": workers, "fps": r["fps"],
                             "ratio_to_sequential": r["fps"] / seq["fps"]})
    if rows:
        print(f"\n{'T':>3} {'stride':>6} {'workers':>7} {'frames/s':>9} {'/ sequential':>12}")
    for row in rows:
        print(f"{row['T']:>3} {row['stride']:>6} {row['workers']:>7} {row['fps']:>9.1f} "
              f"{row['ratio_to_sequential']:>12.2f}")

    trace = memory_trace(paths, args.memory_samples, args.backend)
    warm = [mb for i, mb in trace if i >= min(500, args.memory_samples // 4)]
    growth = warm[-1] - warm[0] if len(warm) > 1 else 0.0
    print(f"\nRSS over {args.memory_samples} samples (MiB): " + ", ".join(f"{i}:{mb:.0f}" for i, mb in trace))
    print(f"after warm-up: first {warm[0]:.0f}, last {warm[-1]:.0f}, growth {growth:+.0f} MiB, "
          f"median {statistics.median(warm):.0f}")
    result = {"videos": [str(p) for p in paths], "backend": args.backend, "sequential": seq, "clips": rows,
              "memory_trace_mb": trace, "memory_growth_after_warmup_mb": growth}
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
