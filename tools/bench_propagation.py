"""Benchmark label propagation on a 480p-sized problem: encoding vs propagation time per frame, peak
memory, the local-attention implementation against a straightforward dense reference, memory at two
video lengths, and the time against its floor.

    python tools/bench_propagation.py --out bench_propagation.json [--tile-sweep 4 8 12 16]

The floor (JSON ``floor_s_per_frame``) is the multiply-adds propagation cannot avoid (every target cell
against every context cell of its neighbourhood that lies in the grid, and against the whole unrestricted
first frame) at the best fp32 matmul rate measured in the same run at the problem's shapes;
``cpu_s_per_frame`` over it is ``ratio_to_floor``. ``tiled_floor_s_per_frame`` is the same for the work
the tiled matmuls do (each tile against the whole rectangle around it): no exact rectangle-tiled
method goes below it.

Each measurement runs in its own subprocess so that its peak resident memory (``ru_maxrss``) is its own.
Times are wall-clock and process CPU seconds per target frame; the machine load is recorded because other
jobs sharing the cores inflate wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vidssl.eval.propagation import PropagationConfig, propagate, propagate_sequence, upsample_labels
from vidssl.nn.local_attention import neighbourhood_allowed, tiles, window_half_width


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def dense_reference(feat_t: torch.Tensor, ctx_feats: torch.Tensor, ctx_labels: torch.Tensor,
                    cfg: PropagationConfig) -> torch.Tensor:
    """The straightforward way: the full ``(N h w, h w)`` affinity, radius mask, top-k, softmax, labels.
    Inputs L2-normalised: ``(C, h, w)``, ``(N, C, h, w)``, ``(N, K, h, w)`` -> ``(K, h, w)``."""
    n, c, h, w = ctx_feats.shape
    aff = torch.einsum("ncp,cq->npq", ctx_feats.reshape(n, c, -1), feat_t.reshape(c, -1)) / cfg.temperature
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    dy = yy.reshape(-1, 1) - yy.reshape(1, -1)
    dx = xx.reshape(-1, 1) - xx.reshape(1, -1)
    if cfg.window == "circle":
        outside = (dy * dy + dx * dx) >= cfg.radius**2
    else:
        outside = (dy.abs() > cfg.radius) | (dx.abs() > cfg.radius)
    start = 0 if cfg.restrict_first else 1
    aff[start:].masked_fill_(outside, float("-inf"))
    vals, idx = aff.reshape(n * h * w, h * w).topk(cfg.topk, dim=0)  # (k, h w)
    weights = vals.softmax(dim=0)
    labels = ctx_labels.permute(1, 0, 2, 3).reshape(ctx_labels.shape[1], -1)  # (K, N h w)
    return (labels[:, idx] * weights[None]).sum(1).reshape(-1, h, w)


def _problem(args: argparse.Namespace, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    n = args.context + 1
    feat = F.normalize(torch.randn(args.channels, args.height, args.width, generator=g), dim=0)
    # context frames: noisy copies of the target, so that matches are meaningful and local
    ctx = F.normalize(feat[None] + 0.8 * torch.randn(n, args.channels, args.height, args.width, generator=g), dim=1)
    labels = torch.rand(n, args.classes, args.height, args.width, generator=g).softmax(dim=1)
    return feat, ctx, labels


def work_flop(args: argparse.Namespace, cfg: PropagationConfig) -> dict[str, float]:
    """Multiply-add FLOPs of one target frame: ``useful`` (each target cell against the context cells of its
    neighbourhood inside the grid, and the whole unrestricted first frame) and ``tiled`` (each tile against
    the whole window rectangle of ``tiles``, as the local matmuls compute it)."""
    h, w, c, n = args.height, args.width, args.channels, args.context + 1
    half = window_half_width(cfg.radius, cfg.window)
    offsets = torch.arange(-half, half + 1)
    kernel = neighbourhood_allowed(offsets[:, None], offsets[None, :], cfg.radius, cfg.window).double()
    # cells of each target's neighbourhood that lie inside the grid: the grid's indicator correlated with it
    counts = F.conv2d(torch.ones(1, 1, h, w, dtype=torch.float64), kernel[None, None], padding=half)
    restricted = n if cfg.restrict_first else n - 1
    full = (n - restricted) * h * w * h * w
    useful = float(counts.sum()) * restricted + full
    tiled = sum((t.y1 - t.y0) * (t.x1 - t.x0) * (t.wy1 - t.wy0) * (t.wx1 - t.wx0) for t in tiles(h, w, cfg.tile, half))
    return {"useful": 2.0 * c * useful, "tiled": 2.0 * c * (tiled * restricted + full)}


def gemm_rate(args: argparse.Namespace, cfg: PropagationConfig, repeats: int = 5) -> float:
    """The best fp32 matmul rate (FLOP/s) over the problem's two shapes: the first frame's (h w, C) x (C, h w)
    and an interior tile's (tile^2, C) x (C, restricted context window cells), as ``tiles`` cuts them."""
    h, w, c = args.height, args.width, args.channels
    window = (cfg.tile + 2 * window_half_width(cfg.radius, cfg.window)) ** 2 * args.context
    best = 0.0
    for m, n in ((h * w, h * w), (cfg.tile * cfg.tile, window)):
        a, b = torch.randn(m, c), torch.randn(c, n)
        a @ b  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        best = max(best, 2.0 * m * n * c / min(times))
    return best


def _cfg(args: argparse.Namespace) -> PropagationConfig:
    return PropagationConfig(topk=args.topk, radius=args.radius, context=args.context, tile=args.tile)


def _timed(fn: Any, repeats: int) -> tuple[Any, float, float]:
    wall, cpu, out = [], [], None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return out, min(wall), min(cpu)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """One measurement in this process; returns its figures."""
    torch.set_num_threads(args.threads)
    cfg = _cfg(args)
    base = _rss_mb()
    if args.worker == "encode":
        from vidssl.eval.encoders import build_encoder

        encoder = build_encoder("random")
        frame = torch.randint(0, 255, (args.height * 8, args.width * 8 - 2, 3), dtype=torch.uint8).numpy()
        feats, wall, cpu = _timed(lambda: encoder.encode(frame), args.repeats)  # type: ignore[misc]
        return {"wall_s": wall, "cpu_s": cpu, "feature_shape": list(feats.shape), "image": list(frame.shape)}
    if args.worker == "floor":
        rate, flop = gemm_rate(args, cfg), work_flop(args, cfg)
        return {"gemm_gflops": rate / 1e9, "useful_flop": flop["useful"], "tiled_flop": flop["tiled"],
                "floor_s_per_frame": flop["useful"] / rate, "tiled_floor_s_per_frame": flop["tiled"] / rate}
    feat, ctx, labels = _problem(args)
    if args.worker in ("local", "dense"):
        if args.worker == "local":
            def fn() -> torch.Tensor:
                return propagate(feat, ctx, labels, topk=cfg.topk, radius=cfg.radius, temperature=cfg.temperature,
                                 restrict_first=cfg.restrict_first, window=cfg.window, normalized=True, tile=cfg.tile)
        else:
            def fn() -> torch.Tensor:
                return dense_reference(feat, ctx, labels, cfg)
        soft, wall, cpu = _timed(fn, args.repeats)
        torch.save(soft, args.save)
        return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": _peak_rss_mb(), "base_rss_mb": base}
    # "stream": the driver over a video of args.frames frames with random features
    g = torch.Generator().manual_seed(1)
    frames = args.frames

    def encode(t: int) -> torch.Tensor:
        # drifting features with noise: one random field, shifted by t cells, plus fresh noise
        noise = torch.randn(args.channels, args.height, args.width, generator=g)
        return torch.roll(feat, shifts=t % 7, dims=2) + 0.5 * noise

    t0 = time.perf_counter()
    rss = []
    for i, _ in enumerate(propagate_sequence(encode, labels[0], frames, cfg)):
        if i % 10 == 0:
            rss.append(round(_rss_mb(), 1))
    return {"frames": frames, "wall_s": time.perf_counter() - t0, "peak_rss_mb": _peak_rss_mb(),
            "base_rss_mb": base, "rss_every_10_frames_mb": rss}


def _run_worker(args: argparse.Namespace, kind: str, **extra: Any) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", kind]
    for key, value in {**vars(args), **extra}.items():
        if key in ("worker", "out", "long_frames", "dense", "stream_size", "tile_sweep") or value is None:
            continue
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--height", type=int, default=60, help="feature rows (480 / 8)")
    parser.add_argument("--width", type=int, default=107, help="feature columns (ceil(854 / 8))")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--classes", type=int, default=3, help="label channels K")
    parser.add_argument("--context", type=int, default=20, help="recent frames besides the first")
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--radius", type=float, default=12.0)
    parser.add_argument("--tile", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats (the best is kept)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--long-frames", type=int, nargs=2, default=[40, 100], help="video lengths for memory")
    parser.add_argument("--stream-size", type=int, nargs=2, default=None,
                        help="feature grid (rows cols) of the long-video runs (default: --height --width)")
    parser.add_argument("--no-dense", dest="dense", action="store_false", help="skip the dense reference")
    parser.add_argument("--tile-sweep", type=int, nargs="+", default=None,
                        help="also time the local propagation at these tile sides, each against its tiled floor")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--save", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    report: dict[str, Any] = {"problem": {k: getattr(args, k) for k in (
        "height", "width", "channels", "classes", "context", "topk", "radius", "tile", "threads")},
        "load_avg_start": os.getloadavg()}
    tmp = Path(os.environ.get("TMPDIR", "/tmp"))
    print(f"load average at start: {report['load_avg_start']}", flush=True)
    report["encode"] = _run_worker(args, "encode")
    print(f"encode  ResNet-18 s8 at {report['encode']['image']}: {report['encode']['wall_s']:.3f} s", flush=True)
    report["local"] = _run_worker(args, "local", save=tmp / "bench_local.pt")
    print(f"local   {report['local']}", flush=True)
    report["floor"] = _run_worker(args, "floor")
    report["cpu_s_per_frame"] = report["local"]["cpu_s"]
    report["floor_s_per_frame"] = report["floor"]["floor_s_per_frame"]
    report["ratio_to_floor"] = report["cpu_s_per_frame"] / report["floor_s_per_frame"]
    print(f"floor   {report['floor']}", flush=True)
    report["tile_sweep"] = []
    for side in args.tile_sweep or []:
        timed = _run_worker(args, "local", save=tmp / "bench_sweep.pt", tile=side)
        floor = _run_worker(args, "floor", tile=side)
        report["tile_sweep"].append({"tile": side, "cpu_s_per_frame": timed["cpu_s"], **floor})
        print(f"tile {side:3d}: {timed['cpu_s']:.3f} CPU s / frame, tiled floor {floor['tiled_floor_s_per_frame']:.3f}",
              flush=True)
    if args.dense:
        report["dense"] = _run_worker(args, "dense", save=tmp / "bench_dense.pt", repeats=1)
        print(f"dense   {report['dense']}", flush=True)
        a, b = torch.load(tmp / "bench_local.pt"), torch.load(tmp / "bench_dense.pt")
        size = (args.height * 8, args.width * 8 - 2)
        same = torch.equal(upsample_labels(a, size, 8), upsample_labels(b, size, 8))
        report["check"] = {"max_abs_diff_soft": float((a - b).abs().max()), "identical_masks": bool(same)}
        report["speedup_wall"] = report["dense"]["wall_s"] / report["local"]["wall_s"]
        report["speedup_cpu"] = report["dense"]["cpu_s"] / report["local"]["cpu_s"]
        print(f"check   {report['check']}", flush=True)
    grid = {} if args.stream_size is None else {"height": args.stream_size[0], "width": args.stream_size[1]}
    report["stream"] = [_run_worker(args, "stream", frames=n, **grid) for n in args.long_frames]
    report["stream_grid"] = args.stream_size or [args.height, args.width]
    for s in report["stream"]:
        print(f"stream  {s['frames']} frames: peak RSS {s['peak_rss_mb']:.0f} MB, {s['wall_s']:.1f} s", flush=True)
    report["load_avg_end"] = os.getloadavg()

    rows = [("encoding (per frame)", report["encode"]["wall_s"], report["encode"]["cpu_s"], None),
            ("propagation, local", report["local"]["wall_s"], report["local"]["cpu_s"], report["local"]["peak_rss_mb"])]
    if args.dense:
        rows.append(("propagation, dense ref", report["dense"]["wall_s"], report["dense"]["cpu_s"],
                     report["dense"]["peak_rss_mb"]))
    print("\n| step | wall s / frame | CPU s / frame | peak RSS MB |\n|---|---|---|---|")
    for name, wall, cpu, rss in rows:
        print(f"| {name} | {wall:.3f} | {cpu:.3f} | {'' if rss is None else f'{rss:.0f}'} |")
    if args.dense:
        print(f"\nspeed-up (wall) {report['speedup_wall']:.1f}x, (CPU) {report['speedup_cpu']:.1f}x; "
              f"identical masks: {report['check']['identical_masks']}; "
              f"max |soft diff| {report['check']['max_abs_diff_soft']:.2e}")
    for s in report["stream"]:
        print(f"streaming {s['frames']:4d} frames at {report['stream_grid']}: peak RSS {s['peak_rss_mb']:.0f} MB "
              f"({s['wall_s'] / max(1, s['frames'] - 1):.2f} s / frame)")
    fl = report["floor"]
    print(f"\nfloor: {fl['useful_flop'] / 1e9:.1f} GFLOP per frame at {fl['gemm_gflops']:.1f} GFLOP/s = "
          f"{report['floor_s_per_frame']:.3f} s; local {report['cpu_s_per_frame']:.3f} CPU s = "
          f"{report['ratio_to_floor']:.2f}x the floor; the tiled matmuls do {fl['tiled_flop'] / 1e9:.1f} GFLOP "
          f"({fl['tiled_floor_s_per_frame']:.3f} s at that rate, "
          f"{fl['tiled_flop'] / fl['useful_flop']:.2f}x the useful work)")
    if report["tile_sweep"]:
        print("\n| tile | CPU s / frame | x floor | tiled GFLOP | x tiled floor |\n|---|---|---|---|---|")
        for row in report["tile_sweep"]:
            cpu = row["cpu_s_per_frame"]
            print(f"| {row['tile']} | {cpu:.3f} | {cpu / report['floor_s_per_frame']:.2f} "
                  f"| {row['tiled_flop'] / 1e9:.1f} | {cpu / row['tiled_floor_s_per_frame']:.2f} |")
    print(f"load average: start {report['load_avg_start']}, end {report['load_avg_end']}")
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
