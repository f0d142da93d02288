"""Distributed training on CPU with gloo: 2 processes match 1 process with the same global batch; the
collective helpers are correct across processes and no-ops without a process group.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from vidssl.engine import checkpoint as ckpt
from vidssl.engine import distributed as dist
from vidssl.methods import METHODS
from vidssl.train import resolve_config, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_engine import ClipSet, Tiny, TinyConfig, tiny_config


class NoBatchStats(Tiny):
    """Tiny with its BN in eval mode, so samples do not interact and the gradient splits over processes."""

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        self.backbone.bn1.eval()
        return super().forward(batch)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _torchrun_env(rank: int, world: int, port: int) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"})


def _train_worker(rank: int, world: int, port: int, config: dict[str, Any]) -> None:
    _torchrun_env(rank, world, port)
    torch.set_num_threads(1)
    METHODS["nbs"] = NoBatchStats
    try:
        cfg, _ = resolve_config(config)
        train(cfg, dataset=ClipSet(n=16))
    finally:
        dist.cleanup()


def _collectives_worker(rank: int, world: int, port: int, out: str) -> None:
    _torchrun_env(rank, world, port)
    dist.setup("cpu")
    try:
        assert dist.is_distributed() and dist.rank() == rank and dist.world_size() == world
        x = (torch.arange(6, dtype=torch.float64).view(3, 2) + 10 * rank).requires_grad_(True)  # (3, 2)
        gathered = dist.all_gather_with_grad(x)  # (world * 3, 2)
        weights = torch.arange(gathered.numel(), dtype=torch.float64).view_as(gathered) * (rank + 1)
        (weights * gathered).sum().backward()
        torch.manual_seed(rank)  # different local generators: the permutation must still be rank 0's
        shuffled, idx = dist.shuffle_batch(x.detach())
        result = {
            "gathered": gathered.detach(), "grad": x.grad, "no_grad": dist.all_gather_no_grad(x.detach()),
            "mean": dist.all_reduce_mean(torch.tensor([float(rank)])), "shuffled": shuffled, "idx": idx,
            "unshuffled": dist.unshuffle_batch(shuffled, idx), "x": x.detach(),
            "objects": dist.gather_objects({"rank": rank}),
            "flag": torch.tensor([dist.broadcast_flag(rank == 0), dist.broadcast_flag(rank == 1)]),
        }
        torch.save(result, f"{out}/rank{rank}.pt")
    finally:
        dist.cleanup()


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path: Path) -> None:
    over = {"method": "nbs", "model.noise": 0.0, "data.batch_size": 8, "schedule.steps": 2, "ckpt.every": 1,
            "optim.momentum": 0.0, "optim.lr": 0.5, "schedule.warmup_steps": 0}
    one = tiny_config(tmp_path / "one", **over)
    two = tiny_config(tmp_path / "two", **over)
    mp.spawn(_train_worker, args=(1, _free_port(), one), nprocs=1)
    mp.spawn(_train_worker, args=(2, _free_port(), two), nprocs=2)
    init = NoBatchStats(TinyConfig())
    for step in (1, 2):
        a = ckpt.load_checkpoint(tmp_path / "one" / "checkpoints" / f"ckpt_{step:08d}.pt")
        b = ckpt.load_checkpoint(tmp_path / "two" / "checkpoints" / f"ckpt_{step:08d}.pt")
        assert a["data_position"] == b["data_position"]
        assert len(b["rng"]) == 2  # every rank's generators
        for key in ("backbone.conv1.weight", "head.weight", "head.bias", "target.weight"):
            torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=1e-5)
    # without momentum the first step's update is -lr * gradient: the gradients agree to 1e-5 / lr
    moved = a["model"]["backbone.conv1.weight"] - init.state_dict()["backbone.conv1.weight"]
    assert moved.abs().max() > 1e-4


@pytest.mark.slow
def test_collectives_across_two_processes(tmp_path: Path) -> None:
    mp.spawn(_collectives_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    r = [torch.load(tmp_path / f"rank{k}.pt", weights_only=True) for k in range(2)]
    xs = [r[k]["x"] for k in range(2)]
    full = torch.cat(xs)
    for k in range(2):
        torch.testing.assert_close(r[k]["gathered"], full)
        torch.testing.assert_close(r[k]["no_grad"], full)
        assert r[k]["mean"].item() == pytest.approx(0.5)
        assert r[k]["objects"] == [{"rank": 0}, {"rank": 1}]
        assert r[k]["flag"].tolist() == [True, False]  # rank 0's flag everywhere (max_minutes stops all ranks)
        # d/dx_k of sum_j (w * (j + 1) * gathered): the slice k of w times (1 + 2)
        w = torch.arange(full.numel(), dtype=torch.float64).view_as(full)
        torch.testing.assert_close(r[k]["grad"], 3 * w[3 * k:3 * k + 3])
        torch.testing.assert_close(r[k]["unshuffled"], xs[k])
    torch.testing.assert_close(r[0]["idx"], r[1]["idx"])  # one permutation for all ranks
    shuffled = torch.cat([r[0]["shuffled"], r[1]["shuffled"]])
    perm = torch.argsort(r[0]["idx"])
    torch.testing.assert_close(shuffled, full[perm])


def test_helpers_are_no_ops_without_a_group() -> None:
    assert not dist.is_distributed() and dist.rank() == 0 and dist.world_size() == 1 and dist.is_main()
    x = torch.randn(5, 3, requires_grad=True)
    assert dist.all_gather_with_grad(x) is x
    assert torch.equal(dist.all_gather_no_grad(x), x) and not dist.all_gather_no_grad(x).requires_grad
    assert dist.all_reduce_mean(x) is x
    assert dist.gather_objects(7) == [7]
    assert dist.broadcast_flag(True) and not dist.broadcast_flag(False)
    shuffled, idx = dist.shuffle_batch(x)
    assert sorted(shuffled[:, 0].tolist()) == sorted(x[:, 0].tolist())
    assert torch.equal(dist.unshuffle_batch(shuffled, idx), x.detach())
    model = torch.nn.Linear(2, 2)
    assert dist.wrap_model(model, torch.device("cpu"), sync_bn=True) is model and dist.unwrap(model) is model
    dist.barrier()
    dist.cleanup()


@pytest.mark.slow
@pytest.mark.skipif("moco" not in METHODS, reason="MoCo is not registered")
def test_torchrun_smoke_moco(tmp_path: Path, shared_data: Path) -> None:
    config = {
        "method": "moco", "out_dir": str(tmp_path / "run"), "device": "cpu",
        "model": {"backbone": "resnet18_cifar", "dim": 16, "queue_size": 32, "crop_size": 32, "blur_p": 0.0},
        "data": {"kind": "video", "source": str(shared_data / "frames"), "size": [40, 40], "batch_size": 4,
                 "workers": 0},
        "schedule": {"steps": 2}, "log": {"every": 1, "tensorboard": False, "progress": False},
        "ckpt": {"every": 2},
    }
    path = tmp_path / "moco.yaml"
    path.write_text(yaml.safe_dump(config))
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--nproc_per_node=2", f"--master_port={_free_port()}", "-m", "vidssl", "train",
           "--config", str(path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "done: 2 steps" in done.stdout
    state = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "ckpt_00000002.pt")
    assert len(state["rng"]) == 2 and state["step"] == 2
