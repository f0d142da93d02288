"""Data-layer throughput and memory: the reader against decord, a prepared copy, the dataset, resident memory.

1. Decoders (``vs_decord``): per file, the same random clips (``--clips`` of 8 frames at stride 4) read by
   vidssl's PyAV reader and by decord's ``get_batch``, one thread each, median of ``--repeats`` timings, at the
   native size and at the training size (covering 256x256: vidssl's ``get(size=)``, decord's
   ``VideoReader(width=, height=)``); every vidssl clip is checked against a sequential decode. ``vs_decord``
   is the geometric mean over files of vidssl's frames/s over decord's. ``--decord-api NAME=DIR`` adds a column
   for another package of decord's API installed in DIR (``pip install --target DIR decord2``: it installs as
   ``decord`` too, so it runs in a subprocess with DIR first on its path): ``NAME_fps_*``, ``vs_NAME_*`` (vidssl
   over it) and ``NAME_exact``, on the same clips.
2. Prepared copy (``prepared_vs_sequential``): ``vidssl data prepare`` into a temporary folder, the same clips
   read from the copies, frames/s over the sequential decode rate of the original files.
3. Dataset: for every clip length T, stride and loader workers, frames delivered per second by
   ``RawVideoDataset`` (random clips, resized to cover 256x256 and cropped), next to the sequential rate.
4. Resident memory over many samples, which must stay flat after warm-up.

    python tools/bench_data.py [--videos DIR] [--samples 160] [--memory-samples 2000] [--out bench_data.json]
    python tools/bench_data.py --decoders-only      # sections 1 and 2
    python tools/bench_data.py --decoders-only --decord-api decord2=/tmp/decord2   # and decord2's column
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader
from tqdm import tqdm

from vidssl.data.datasets import RawVideoDataset, cover_size
from vidssl.data.index import discover
from vidssl.data.prepare import PrepareSettings, prepare
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


def clip_plan(n: int, clips: int, seed: int, length: int = 8, stride: int = 4) -> list[list[int]]:
    """``clips`` random clips of ``length`` frames at ``stride`` in a video of ``n`` frames (clamped at its end)."""
    rng = np.random.default_rng(seed)
    span = (length - 1) * stride + 1
    starts = rng.integers(0, max(1, n - span + 1), clips)
    return [[min(n - 1, int(s) + i * stride) for i in range(length)] for s in starts]


def _median_seconds(read, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        read()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def decord_api_rows(decord: object, paths: list[Path], clips: int, repeats: int,
                    seed: int = 0) -> list[dict[str, object]]:
    """Per file, frames/s of a decord-API module's ``get_batch`` on the clips of :func:`clip_plan` at the native and
    the training size, and whether its frames equal vidssl's sequential decode (``fps_native``, ``fps_train``,
    ``exact``)."""
    rows: list[dict[str, object]] = []
    for path in paths:
        with open_video(path, backend="pyav") as reader:
            n, native = len(reader), reader.size
            reference = reader.get(range(n))
        plan, train = clip_plan(n, clips, seed), cover_size(native, (256, 256))
        row: dict[str, object] = {"file": path.name}
        for label, size in (("native", None), ("train", train)):
            kwargs = {} if size is None else {"height": size[0], "width": size[1]}
            vr = decord.VideoReader(str(path), num_threads=1, **kwargs)  # type: ignore[attr-defined]
            seconds = _median_seconds(lambda vr=vr, plan=plan: [vr.get_batch(c).asnumpy() for c in plan], repeats)
            row[f"fps_{label}"] = clips * 8 / seconds
            if label == "native":
                row["exact"] = all(np.array_equal(vr.get_batch(c).asnumpy(), reference[c]) for c in plan)
        rows.append(row)
    return rows


def decord_api_subprocess(site: Path, paths: list[Path], clips: int, repeats: int,
                          seed: int = 0) -> list[dict[str, object]]:
    """:func:`decord_api_rows` of the ``decord`` package installed in ``site``, run in a subprocess (a second
    package named ``decord`` cannot share a process with the first)."""
    job = json.dumps({"paths": [str(p) for p in paths], "clips": clips, "repeats": repeats, "seed": seed})
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run([sys.executable, __file__, "--decord-worker", job], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the decord API in {site} failed:\n{done.stderr[-2000:]}")
    rows: list[dict[str, object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def _decord_worker(job: str) -> None:
    import decord

    spec = json.loads(job)
    rows = decord_api_rows(decord, [Path(p) for p in spec["paths"]], spec["clips"], spec["repeats"], spec["seed"])
    print(json.dumps(rows))


def decoder_rows(paths: list[Path], clips: int, repeats: int, seed: int = 0,
                 others: dict[str, Path] | None = None) -> list[dict[str, object]]:
    """vidssl's reader against decord on the same clips of each file (see the module doc); ``others``: more
    decord-API packages by name and install folder, each measured in a subprocess."""
    try:
        import decord
    except ImportError:
        decord = None
    rows: list[dict[str, object]] = []
    for path in tqdm(paths, desc="decoders", leave=False):
        with open_video(path, backend="pyav") as reader:
            n, native = len(reader), reader.size
            plan = clip_plan(n, clips, seed)
            reference = reader.get(range(n))  # sequential pass: what every clip must equal
            exact = all(np.array_equal(reader.get(c), reference[c]) for c in plan)
            row: dict[str, object] = {"file": path.name, "frames": n, "size": list(native), "exact": exact}
            for label, size in (("native", None), ("train", cover_size(native, (256, 256)))):
                seconds = _median_seconds(lambda s=size, p=plan: [reader.get(c, size=s) for c in p], repeats)
                row[f"vidssl_fps_{label}"] = clips * 8 / seconds
        rows.append(row)
    columns: list[tuple[str, list[dict[str, object]]]] = []
    if decord is not None:
        columns.append(("decord", decord_api_rows(decord, paths, clips, repeats, seed)))
    for name, site in (others or {}).items():
        columns.append((name, decord_api_subprocess(site, paths, clips, repeats, seed)))
    for name, measured in columns:
        for row, m in zip(rows, measured, strict=True):
            for label in ("native", "train"):
                row[f"{name}_fps_{label}"] = m[f"fps_{label}"]
                row[f"vs_{name}_{label}"] = row[f"vidssl_fps_{label}"] / m[f"fps_{label}"]  # type: ignore[operator]
            row[f"{name}_exact"] = m["exact"]
    return rows


def prepared_rate(paths: list[Path], clips: int, repeats: int, seed: int = 0) -> dict[str, float]:
    """Frames/s of the same random clips read from a ``vidssl data prepare`` copy (short side 256, keyint 16)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for path in paths:  # one flat folder of links: the copy's names follow the sources'
            (src / path.name).symlink_to(path.resolve())
        start = time.perf_counter()
        rows = prepare(src, Path(tmp) / "prepared", PrepareSettings(), progress=False)
        prepare_s = time.perf_counter() - start
        frames, seconds = 0, 0.0
        for row in rows:
            if row.status != "ok":
                continue
            with open_video(row.path, backend="pyav") as reader:
                plan = clip_plan(len(reader), clips, seed)
                seconds += _median_seconds(lambda r=reader, p=plan: [r.get(c) for c in p], repeats)
                frames += clips * 8
    return {"fps": frames / seconds, "prepare_seconds": prepare_s, "copies": sum(r.status == "ok" for r in rows)}


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
    parser.add_argument("--memory-only", action="store_true", help="skip the throughput tables")
    parser.add_argument("--decoders-only", action="store_true", help="only the decoder and prepared-copy tables")
    parser.add_argument("--clips", type=int, default=12, help="random clips per file for the decoder table")
    parser.add_argument("--repeats", type=int, default=3, help="timings per measurement (median)")
    parser.add_argument("--decord-api", nargs="+", default=[], metavar="NAME=DIR",
                        help="more packages of decord's API, each installed in its own folder (pip install --target)")
    parser.add_argument("--decord-worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("bench_data.json"))
    args = parser.parse_args()
    if args.decord_worker:
        _decord_worker(args.decord_worker)
        return
    others: dict[str, Path] = {}
    for spec in args.decord_api:
        name, sep, site = spec.partition("=")
        if not sep or not name.isidentifier() or name == "decord" or not Path(site).is_dir():
            parser.error(f"--decord-api {spec!r}: expected NAME=DIR, a new name and an existing folder")
        others[name] = Path(site)
    if args.videos is None or not args.videos.is_dir():
        parser.error("no video folder: pass --videos or set VIDSSL_DATA")
    paths = [p for p in discover(args.videos) if p.is_file()]
    print(f"{len(paths)} videos in {args.videos}, backend={args.backend}, cpus={os.cpu_count()}")

    seq: dict[str, float] = {}
    rows = []
    result: dict[str, object] = {"videos": [str(p) for p in paths], "backend": args.backend}
    if not args.memory_only:
        seq = sequential_rate(paths, "pyav")
        print(f"sequential decode (ceiling): {seq['fps']:.1f} frames/s over {seq['frames']} frames")
        result["sequential"] = seq
        dec = decoder_rows(paths, args.clips, args.repeats, others=others)
        names = ["decord", *others]
        print(f"\n{args.clips} random clips of 8 frames at stride 4 per file, one thread, median of {args.repeats}; "
              "frames/s, and vidssl's over each (x); @256: at the training size")
        head = f"{'file':24} {'size':>9} {'vidssl':>7} {'vidssl@256':>10} {'exact':>5}"
        for name in names:
            head += f" {name:>8} {'x':>5} {name + '@256':>12} {'x':>5} {name + ' exact':>13}"
        print(head)
        nan = float("nan")
        for d in dec:
            line = (f"{d['file']:24} {'x'.join(map(str, d['size'][::-1])):>9} "  # type: ignore[index]
                    f"{d['vidssl_fps_native']:7.1f} {d['vidssl_fps_train']:10.1f} {d['exact']!s:>5}")
            for name in names:
                line += (f" {d.get(f'{name}_fps_native', nan):8.1f} {d.get(f'vs_{name}_native', nan):5.2f}"
                         f" {d.get(f'{name}_fps_train', nan):12.1f} {d.get(f'vs_{name}_train', nan):5.2f}"
                         f" {d.get(f'{name}_exact', '-')!s:>13}")
            print(line)
        summary: dict[str, float] = {}
        for name in names:
            for label, key in (("native", f"vs_{name}"), ("train", f"vs_{name}_train_size")):
                summary[key] = geomean([float(d[f"vs_{name}_{label}"]) for d in dec  # type: ignore[arg-type]
                                        if f"vs_{name}_{label}" in d])
            print(f"vs_{name} (geometric mean over files): native {summary[f'vs_{name}']:.2f}, at the training "
                  f"size {summary[f'vs_{name}_train_size']:.2f}; {name} exact on "
                  f"{sum(bool(d.get(f'{name}_exact')) for d in dec)}/{len(dec)} files")
        print(f"vidssl exact on {sum(bool(d['exact']) for d in dec)}/{len(dec)} files")
        prep = prepared_rate(paths, args.clips, args.repeats)
        ratio = prep["fps"] / seq["fps"]
        print(f"prepared copy (short side 256, keyint 16; prepared in {prep['prepare_seconds']:.0f} s): "
              f"{prep['fps']:.1f} random-clip frames/s; prepared_vs_sequential {ratio:.2f}")
        result.update({"decoders": dec, **summary, "prepared": prep, "prepared_vs_sequential": ratio})
    if args.decoders_only:
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
        return
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
    result.update({"clips": rows, "memory_trace_mb": trace, "memory_growth_after_warmup_mb": growth})
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
