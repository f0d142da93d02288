"""Training throughput of every registered method: samples/s, the share of step time spent waiting for
data, and peak memory, on the CPU (and the GPU when present). Prints a table and writes JSON.

    python tools/bench_train.py [--steps 20 --warmup 5 --batch 16 --size 256 256 --workers 2]
                                [--source shared|DIR|synthetic] [--set model.crop_size=112 ...] [--json out.json]
                                [--options fp32 channels_last bf16 compile]
    python tools/bench_train.py --configs configs/*_cifar.yaml [--steps 2 --warmup 1 --workers 0]

``--configs``: one row per config file (named by its stem) instead of per registered method: the config's own
model, data (kind, source, size, batch) and optimiser, as a recipe trains, with only the schedule, logging and
checkpoints replaced (and ``--batch``, ``--size``, ``--workers``, ``--source``, ``--set`` where given): the
image methods at their CIFAR recipe's batch, for instance.

``--options``: each method runs once per option, all from the same seed, so every run sees the same batches
and starts from the same weights: ``fp32`` (eager, the reference), ``channels_last`` (``optim.channels_last``),
``bf16`` (``optim.amp``: bf16 autocast on the CPU, fp16 on CUDA) and ``compile`` (``optim.compile``). The table
gives each option's step time over fp32's and its loss difference from fp32's on the first step (same
weights, same batch: the numerical effect alone) and over the timed steps. An option that fails for a method
is reported with its error.

Each (method, device) runs in its own process through the real training loop (``vidssl.train``)
with the method's default hyper-parameters and real decoding (default: the shared frame folders and
videos), so peak RSS is that run's alone. Timings exclude the first ``--warmup`` steps (allocator,
decoder and cudnn warm-up).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from vidssl.engine.config import apply_overrides
from vidssl.methods import METHODS
from vidssl.paths import data_root
from vidssl.train import resolve_config, train

OPTIONS = {"fp32": [], "channels_last": ["optim.channels_last=true"], "bf16": ["optim.amp=true"],
           "compile": ["optim.compile=true"]}


def config_path(args: argparse.Namespace, name: str) -> Path | None:
    """The ``--configs`` file whose stem is ``name`` (None without ``--configs``)."""
    return next((Path(c) for c in args.configs if Path(c).stem == name), None) if args.configs else None


def run_data(name: str, device: str, args: argparse.Namespace, out: str) -> dict[str, Any]:
    """The run's config: ``name``'s file from ``--configs`` with the benchmark's schedule, logging and checkpoints,
    or, without ``--configs``, the registered method ``name`` with its defaults on ``--source``."""
    given = {"source": args.source, "size": args.size, "batch_size": args.batch, "workers": args.workers}
    given = {key: list(value) if key == "size" else value for key, value in given.items() if value is not None}
    path = config_path(args, name)
    if path is not None:
        data: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
        data.setdefault("data", {}).update(given)
    else:
        # still-image methods say so in their config (``input``); everything else reads video
        data = {"method": name, "data": {"kind": getattr(METHODS[name].Config(), "input", "video"),
                                         "source": "shared", "size": [256, 256], "batch_size": 16, "workers": 2}}
        data["data"].update(given)
    data.update({
        "device": device, "out_dir": out, "seed": 0,
        "schedule": {"name": "constant", "steps": args.warmup + args.steps},
        "log": {"every": 1, "tensorboard": False, "progress": False},
        "ckpt": {"every": 10**9, "keep": 1, "resume": "none"},
    })
    return data


def bench_one(name: str, device: str, args: argparse.Namespace, option: str = "fp32") -> dict[str, Any]:
    """One short run; returns the measured figures."""
    with tempfile.TemporaryDirectory() as out:
        data = run_data(name, device, args, out)
        cfg, _ = resolve_config(apply_overrides(data, [*args.set, *OPTIONS[option]]))
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        result = train(cfg)
        losses = [json.loads(line)["loss"] for line in (Path(out) / "metrics.jsonl").read_text().splitlines()
                  if line.strip() and "loss" in json.loads(line)]
    step_s = result.step_seconds[args.warmup:]
    wait_s = result.wait_seconds[args.warmup:]
    return {
        "method": name, "device": device, "option": option, "losses": losses,
        "batch": cfg.data.batch_size, "size": list(cfg.data.size),
        "model": cfg.model, "config": str(config_path(args, name) or ""),
        "steps": len(step_s),
        "samples_per_s": result.samples_per_step * len(step_s) / sum(step_s),
        "step_ms": 1000 * sum(step_s) / len(step_s),
        "data_wait_fraction": sum(wait_s) / sum(step_s),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # Linux: KiB
        "cuda_max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None,
    }


def shared_sources(root: Path, into: Path) -> Path:
    """A folder of links to the shared pretraining data: the 7 frame folders and the 10 videos (17 sources).

    Never the DAVIS evaluation sequences (``davis/``), as for real pretraining.
    """
    for sub in ("frames", "videos"):
        for path in sorted((root / sub).iterdir()):
            (into / f"{sub}_{path.name}").symlink_to(path)
    return into


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="*", default=sorted(METHODS), help="default: every registered method")
    p.add_argument("--configs", nargs="*", default=[], type=Path,
                   help="config files, a row each (named by the file's stem), instead of --methods")
    p.add_argument("--devices", nargs="*", default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--batch", type=int, help="default: 16 (--configs: the config's)")
    p.add_argument("--size", type=int, nargs=2, help="frame size H W; default: 256 256 (--configs: the config's)")
    p.add_argument("--workers", type=int, help="default: 2 (--configs: the config's)")
    p.add_argument("--source", help="data.source; 'shared' (the default without --configs): the shared frame "
                   "folders and videos (17 sources), linked; --configs: the config's unless given")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="run-config overrides for every run")
    p.add_argument("--json", type=Path, default=Path("bench_train.json"))
    p.add_argument("--options", nargs="*", default=["fp32"], choices=sorted(OPTIONS),
                   help="speed options, each against fp32 on the same batches (default: fp32 alone)")
    p.add_argument("--one", nargs=3, metavar=("METHOD", "DEVICE", "OPTION"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:  # child process: one run, JSON on the last stdout line
        print(json.dumps(bench_one(args.one[0], args.one[1], args, args.one[2])))
        return 0
    options = ["fp32", *[o for o in args.options if o != "fp32"]]  # the reference first
    passthrough = list(argv if argv is not None else sys.argv[1:])
    links = tempfile.TemporaryDirectory()
    if args.source is None and not args.configs:
        args.source = "shared"
    names = [c.stem for c in args.configs] or args.methods
    if len(set(names)) != len(names):
        p.error(f"--configs: two files share a stem: {sorted(n for n in names if names.count(n) > 1)}")
    if args.source == "shared":
        root = data_root()
        if root is None:
            p.error("--source shared needs the shared data (set VIDSSL_DATA)")
        args.source = str(shared_sources(root, Path(links.name)))
        passthrough += ["--source", args.source]
    rows, failed = [], []
    for method in names:
        for device in args.devices:
            for option in options:
                cmd = [sys.executable, __file__, *passthrough, "--one", method, device, option]
                done = subprocess.run(cmd, capture_output=True, text=True)
                if done.returncode != 0:
                    error = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
                    print(f"{method} on {device} with {option} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                    failed.append({"method": method, "device": device, "option": option, "error": error})
                    continue
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    reference = {(r["method"], r["device"]): r for r in rows if r["option"] == "fp32"}
    for r in rows:  # each option against eager fp32 on the same batches
        ref = reference.get((r["method"], r["device"]))
        if ref is not None and r["losses"] and ref["losses"]:
            n = min(len(r["losses"]), len(ref["losses"]))
            r["speedup"] = ref["step_ms"] / r["step_ms"]
            r["loss_diff_first"] = abs(r["losses"][0] - ref["losses"][0])
            r["loss_diff_max"] = max(abs(a - b) for a, b in zip(r["losses"][:n], ref["losses"][:n], strict=True))
    w = max([10, *map(len, names)])
    header = f"{'method':<{w}} {'device':<6} {'option':<13} {'batch':>5} {'samples/s':>10} {'step ms':>9} " \
             f"{'speed-up':>8} {'loss diff 1st':>13} {'max':>9} {'data wait':>9} {'peak RSS MB':>11} {'CUDA MB':>8}"
    print(header)
    for r in rows:
        cuda = f"{r['cuda_max_allocated_mb']:.0f}" if r["cuda_max_allocated_mb"] is not None else "-"
        print(f"{r['method']:<{w}} {r['device']:<6} {r['option']:<13} {r['batch']:>5} {r['samples_per_s']:>10.2f} "
              f"{r['step_ms']:>9.1f} {r.get('speedup', float('nan')):>8.2f} "
              f"{r.get('loss_diff_first', float('nan')):>13.2e} {r.get('loss_diff_max', float('nan')):>9.2e} "
              f"{r['data_wait_fraction']:>9.1%} {r['peak_rss_mb']:>11.0f} {cuda:>8}")
    for f in failed:
        print(f"{f['method']:<{w}} {f['device']:<6} {f['option']:<13} failed: {f['error'][:200]}")
    meta = {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available()
            else None, "source": args.source, "steps": args.steps, "warmup": args.warmup, "set": args.set}
    args.json.write_text(json.dumps({"config": meta, "results": rows, "failed": failed}, indent=2) + "\n")
    links.cleanup()
    print(f"wrote {args.json}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
