"""Kill a CPU run mid-way (SIGKILL, between checkpoints), resume it with ``resume=auto`` and show the resumed
per-step losses equal an uninterrupted run's from the checkpoint on, and that no checkpoint is half-written.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vidssl.engine import checkpoint as ckpt
from vidssl.methods import METHODS

TESTS = Path(__file__).resolve().parent

# Runs one training in a fresh process: registers the test-only Tiny method, builds an in-memory dataset
# (optionally slowed down so the parent can kill it at a chosen step) and calls the loop.
SCRIPT = """
import json, sys, time
sys.path.insert(0, {tests!r})
from test_engine import ClipSet, Tiny
from vidssl.train import resolve_config, train
from vidssl.methods import METHODS

METHODS["tiny"] = Tiny
spec = json.loads(open(sys.argv[1]).read())

class Slow(ClipSet):
    def __getitem__(self, index):
        time.sleep(spec["delay"])
        return super().__getitem__(index)

cfg, _ = resolve_config(spec["config"])
train(cfg, dataset=Slow(n=spec["n"], size=spec["size"]))
"""


def _spec(tmp: Path, name: str, config: dict[str, Any], *, n: int, size: int, delay: float) -> list[str]:
    (tmp / "run.py").write_text(SCRIPT.format(tests=str(TESTS)))
    spec = tmp / f"{name}.json"
    spec.write_text(json.dumps({"config": config, "n": n, "size": size, "delay": delay}))
    return [sys.executable, str(tmp / "run.py"), str(spec)]


def _losses(run_dir: Path) -> dict[int, float]:
    """Per-step loss from metrics.jsonl; a later record of the same step (after a resume) wins."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records}


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def kill_and_resume(tmp: Path, config: dict[str, Any], *, kill_after: int, n: int, size: int) -> None:
    """Run uninterrupted, run again killed after step ``kill_after``, resume; compare per-step losses."""
    ref = {**config, "out_dir": str(tmp / "ref")}
    subprocess.run(_spec(tmp, "ref", ref, n=n, size=size, delay=0.0), check=True, env=_env(), timeout=300,
                   capture_output=True)
    expected = _losses(tmp / "ref")
    steps = config["schedule"]["steps"]
    assert sorted(expected) == list(range(1, steps + 1))

    killed = {**config, "out_dir": str(tmp / "killed")}
    cmd = _spec(tmp, "killed", killed, n=n, size=size, delay=0.05)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env())
    assert proc.stdout is not None
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        if line.startswith(f"step {kill_after}  loss") or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()  # the pipe the loop above stopped reading (else a ResourceWarning under -W error)
    ckpt_dir = tmp / "killed" / "checkpoints"
    every = config["ckpt"]["every"]
    last_good = kill_after // every * every
    assert kill_after % every != 0, "the test must kill between checkpoints"
    for path in ckpt_dir.glob("*.pt"):  # nothing half-written, whatever the moment of the kill
        ckpt.load_checkpoint(path)
    assert ckpt.list_checkpoints(ckpt_dir)[-1].name == f"ckpt_{last_good:08d}.pt"
    partial = _losses(tmp / "killed")
    assert max(partial) >= kill_after and max(partial) < steps

    done = subprocess.run(cmd, env=_env(), timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {ckpt_dir / f'ckpt_{last_good:08d}.pt'} at step {last_good}" in done.stdout
    got = _losses(tmp / "killed")
    assert sorted(got) == list(range(1, steps + 1))
    for step in range(1, steps + 1):
        assert got[step] == pytest.approx(expected[step], abs=1e-6, rel=0), f"step {step}"
    final = ckpt.load_checkpoint(ckpt_dir / f"ckpt_{steps:08d}.pt")
    reference = ckpt.load_checkpoint(tmp / "ref" / "checkpoints" / f"ckpt_{steps:08d}.pt")
    for key, value in reference["model"].items():
        assert (final["model"][key] - value).abs().max() <= 1e-5, key


def _config(method: str, model: dict[str, Any], *, steps: int, batch: int) -> dict[str, Any]:
    return {
        "method": method, "seed": 1, "device": "cpu", "model": model,
        "data": {"batch_size": batch, "workers": 0},
        "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
        "schedule": {"name": "cosine", "steps": steps, "warmup_steps": 2},
        "log": {"every": 1, "tensorboard": False, "progress": False},
        "ckpt": {"every": 5, "keep": 2, "resume": "auto"},
    }


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_tiny(tmp_path: Path) -> None:
    # 10 clips, batch 4: 2 batches per epoch, so the checkpoint at step 5 is in the middle of epoch 2
    kill_and_resume(tmp_path, _config("tiny", {"noise": 0.2}, steps=12, batch=4), kill_after=7, n=10, size=16)


@pytest.mark.slow
@pytest.mark.skipif("moco" not in METHODS, reason="MoCo is not registered")
def test_sigkill_then_resume_matches_uninterrupted_moco(tmp_path: Path) -> None:
    # A small MoCo v2: queue, EMA key encoder and shuffle-BN all carry state across the kill.
    model = {"backbone": "resnet18_cifar", "dim": 16, "queue_size": 32, "momentum": 0.9, "crop_size": 16,
             "blur_p": 0.0, "max_gap": 1, "bn": "shuffle"}
    kill_and_resume(tmp_path, _config("moco", model, steps=8, batch=4), kill_after=6, n=10, size=16)
