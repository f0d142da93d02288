"""Data-layer throughput and memory: the reader against decord, a prepared copy, the dataset, resident memory.

1. Decoders (``vs_decord``): per file, the same random clips (``--clips`` of 8 frames at stride 4) read by
   vidssl's PyAV reader and by decord's ``get_batch``, one thread each, median of ``--repeats`` timings, at the
   native size and at the training size (covering 256x256: vidssl's ``get(size=)``, decord's
   ``VideoReader(width=, height=)``); every vidssl clip is checked against a sequential decode. ``vs_decord``
   is the geometric mean over files of vidssl's frames/s over decord's. ``--decoder NAME=API:DIR`` adds a reader
   from a package installed in DIR (``pip install --target DIR ...``), run in a subprocess with DIR first on its
   path: API ``decord`` for decord2 (it installs as ``decord`` too), ``torchcodec`` for torchcodec (FFmpeg's shared
   libraries through ``LD_LIBRARY_PATH``); columns ``NAME_fps_*``, ``vs_NAME_*`` (vidssl over it), ``NAME_exact``
   (bit-equal to vidssl's sequential decode) and ``NAME_right_frames`` (each frame nearest to the one asked for:
   right frames whatever the colour conversion's rounding).
2. Prepared copy (``prepared_vs_sequential``): ``vidssl data prepare`` into a temporary folder, the same clips
   read from the copies, frames/s over the sequential decode rate of the original files.
3. Dataset: for every clip length T, stride and loader workers, frames delivered per second by
   ``RawVideoDataset`` (random clips, resized to cover 256x256 and cropped), next to the sequential rate.
4. Resident memory over many samples, which must stay flat after warm-up.

    python tools/bench_data.py [--videos DIR] [--samples 160] [--memory-samples 2000] [--out bench_data.json]
    python tools/bench_data.py --decoders-only      # sections 1 and 2
    python tools/bench_data.py --decoders-only --decoder decord2=decord:/tmp/decord2 torchcodec=torchcodec:/tmp/tc
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
from types import SimpleNamespace

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


def _torchcodec_api() -> object:
    """torchcodec's ``VideoDecoder`` behind decord's ``VideoReader(path, num_threads, height, width).get_batch``
    (exact seeking, one FFmpeg thread, NHWC uint8; resized by its decoder-native ``Resize``)."""
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    class Batch:
        def __init__(self, frames: object) -> None:
            self.frames = frames

        def asnumpy(self) -> np.ndarray:
            return self.frames.numpy()  # type: ignore[attr-defined,no-any-return]

    class VideoReader:
        def __init__(self, path: str, num_threads: int = 1, height: int = -1, width: int = -1) -> None:
            transforms = [] if height == -1 else [Resize((height, width))]
            self.decoder = VideoDecoder(path, seek_mode="exact", num_ffmpeg_threads=num_threads,
                                        dimension_order="NHWC", transforms=transforms)

        def get_batch(self, index: list[int]) -> Batch:
            return Batch(self.decoder.get_frames_at(index).data)

    return SimpleNamespace(VideoReader=VideoReader)


def right_frames(frames: np.ndarray, index: list[int], reference: np.ndarray) -> bool:
    """Whether every decoded frame is nearer (mean absolute difference, every 4th pixel) to the reference frame
    asked for than to any other frame of the video: the right frames, whatever the colour conversion's rounding."""
    if frames.shape[1:] != reference.shape[1:]:
        return False  # another frame size: not the frames asked for
    ref = reference[:, ::4, ::4].astype(np.float32)
    for frame, i in zip(frames, index, strict=True):
        distance = np.abs(ref - frame[::4, ::4].astype(np.float32)).mean(axis=(1, 2, 3))
        if int(distance.argmin()) != i and distance[i] > distance.min():
            return False
    return True


def decoder_api_rows(api: object, paths: list[Path], clips: int, repeats: int,
                     seed: int = 0) -> list[dict[str, object]]:
    """Per file, frames/s of a decord-API reader's ``get_batch`` on the clips of :func:`clip_plan` at the native and
    the training size (``fps_native``, ``fps_train``), whether its frames equal vidssl's sequential decode
    (``exact``) and whether they are the frames asked for (``right_frames``, :func:`right_frames`)."""
    rows: list[dict[str, object]] = []
    for path in paths:
        with open_video(path, backend="pyav") as reader:
            n, native = len(reader), reader.size
            reference = reader.get(range(n))
        plan, train = clip_plan(n, clips, seed), cover_size(native, (256, 256))
        row: dict[str, object] = {"file": path.name}
        for label, size in (("native", None), ("train", train)):
            kwargs = {} if size is None else {"height": size[0], "width": size[1]}
            vr = api.VideoReader(str(path), num_threads=1, **kwargs)  # type: ignore[attr-defined]
            seconds = _median_seconds(lambda vr=vr, plan=plan: [vr.get_batch(c).asnumpy() for c in plan], repeats)
            row[f"fps_{label}"] = clips * 8 / seconds
            if label == "native":
                got = [vr.get_batch(c).asnumpy() for c in plan]
                row["exact"] = all(np.array_equal(g, reference[c]) for g, c in zip(got, plan, strict=True))
                row["right_frames"] = all(right_frames(g, c, reference) for g, c in zip(got, plan, strict=True))
        rows.append(row)
    return rows


APIS = ("decord", "torchcodec")


def decoder_subprocess(api: str, site: Path, paths: list[Path], clips: int, repeats: int,
                       seed: int = 0) -> list[dict[str, object]]:
    """:func:`decoder_api_rows` of the package of ``api`` (one of :data:`APIS`) installed in ``site``, run in a
    subprocess with ``site`` first on its path (a second package named ``decord`` cannot share a process with the
    first; torchcodec finds FFmpeg's shared libraries through the caller's ``LD_LIBRARY_PATH``)."""
    job = json.dumps({"api": api, "paths": [str(p) for p in paths], "clips": clips, "repeats": repeats,
                      "seed": seed})
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run([sys.executable, __file__, "--decoder-worker", job], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the {api} reader in {site} failed:\n{done.stderr[-2000:]}")
    rows: list[dict[str, object]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def _decoder_worker(job: str) -> None:
    spec = json.loads(job)
    if spec["api"] == "torchcodec":
        api = _torchcodec_api()
    else:
        import decord as api
    rows = decoder_api_rows(api, [Path(p) for p in spec["paths"]], spec["clips"], spec["repeats"], spec["seed"])
    print(json.dumps(rows))


def decoder_rows(paths: list[Path], clips: int, repeats: int, seed: int = 0,
                 others: dict[str, tuple[str, Path]] | None = None) -> list[dict[str, object]]:
    """vidssl's reader against decord on the same clips of each file (see the module doc); ``others``: more
    readers, ``name -> (api, install folder)``, each measured in a subprocess (:func:`decoder_subprocess`)."""
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
        columns.append(("decord", decoder_api_rows(decord, paths, clips, repeats, seed)))
    for name, (api, site) in (others or {}).items():
        columns.append((name, decoder_subprocess(api, site, paths, clips, repeats, seed)))
    for name, measured in columns:
        for row, m in zip(rows, measured, strict=True):
            for label in ("native", "train"):
                row[f"{name}_fps_{label}"] = m[f"fps_{label}"]
                row[f"vs_{name}_{label}"] = row[f"vidssl_fps_{label}"] / m[f"fps_{label}"]  # type: ignore[operator]
            row[f"{name}_exact"], row[f"{name}_right_frames"] = m["exact"], m["right_frames"]
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
    parser.add_argument("--decoder", nargs="+", default=[], metavar="NAME=API:DIR",
                        help=f"more readers, API one of {', '.join(APIS)}, each package installed in its own folder "
                        "(pip install --target DIR), e.g. decord2=decord:/tmp/decord2")
    parser.add_argument("--decoder-worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("bench_data.json"))
    args = parser.parse_args()
    if args.decoder_worker:
        _decoder_worker(args.decoder_worker)
        return
    others: dict[str, tuple[str, Path]] = {}
    for spec in args.decoder:
        name, _eq, rest = spec.partition("=")
        api, _colon, site = rest.partition(":")
        if not name.isidentifier() or name in ("decord", "vidssl", *others) or api not in APIS \
                or not Path(site).is_dir():
            parser.error(f"--decoder {spec!r}: expected NAME=API:DIR, a new name, API one of {', '.join(APIS)} "
                         "and an existing folder")
        others[name] = (api, Path(site))
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
            head += f" {name:>10} {'x':>5} {name + '@256':>14} {'x':>5} {'exact':>5} {'right':>5}"
        print(head)
        nan = float("nan")
        for d in dec:
            line = (f"{d['file']:24} {'x'.join(map(str, d['size'][::-1])):>9} "  # type: ignore[index]
                    f"{d['vidssl_fps_native']:7.1f} {d['vidssl_fps_train']:10.1f} {d['exact']!s:>5}")
            for name in names:
                line += (f" {d.get(f'{name}_fps_native', nan):10.1f} {d.get(f'vs_{name}_native', nan):5.2f}"
                         f" {d.get(f'{name}_fps_train', nan):14.1f} {d.get(f'vs_{name}_train', nan):5.2f}"
                         f" {d.get(f'{name}_exact', '-')!s:>5} {d.get(f'{name}_right_frames', '-')!s:>5}")
            print(line)
        summary: dict[str, float] = {}
        for name in names:
            for label, key in (("native", f"vs_{name}"), ("train", f"vs_{name}_train_size")):
                summary[key] = geomean([float(d[f"vs_{name}_{label}"]) for d in dec  # type: ignore[arg-type]
                                        if f"vs_{name}_{label}" in d])
            print(f"vs_{name} (geometric mean over files): native {summary[f'vs_{name}']:.2f}, at the training "
                  f"size {summary[f'vs_{name}_train_size']:.2f}; {name} exact on "
                  f"{sum(bool(d.get(f'{name}_exact')) for d in dec)}/{len(dec)} files, the right frames on "
                  f"{sum(bool(d.get(f'{name}_right_frames')) for d in dec)}/{len(dec)}")
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
