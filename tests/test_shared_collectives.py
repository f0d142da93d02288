"""The shared parts that talk across processes, run in two gloo processes against one process holding the
global batch: the gathered losses' values and gradients (NT-Xent's negatives, Barlow Twins' cross-correlation,
VICReg's variance and covariance, IIC's joint distribution), Sinkhorn's all-reduced codes, the queue's and the
memory bank's commits, the epoch hook's dataset pass (EpochContext.collect), MoCo's batch negatives."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from vidssl.engine import distributed as dist
from vidssl.losses import barlow_twins_loss, iic_loss, info_nce_logits, nt_xent, sinkhorn, supcon, vicreg_loss
from vidssl.nn import MemoryBank, Queue

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_distributed import _free_port, _torchrun_env

WORLD, B, D = 2, 3, 5
LABELS = torch.tensor([0, 1, 1, 0, 2, 1])  # the global batch's classes (SupCon)
GATHERED = {  # losses over the global batch, each process reading the gathered embeddings (and labels)
    "barlow_twins": lambda a, b, y: barlow_twins_loss(a, b, 0.3),
    "vicreg": lambda a, b, y: vicreg_loss(a, b)[0],
    "supcon": lambda a, b, y: supcon(a, b, y, 0.3, 0.07),
    "iic": lambda a, b, y: iic_loss(a.softmax(dim=1), b.softmax(dim=1)),  # the joint over the global batch
}


def _global_views() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.randn(WORLD * B, D, generator=g, dtype=torch.float64),
            torch.randn(WORLD * B, D, generator=g, dtype=torch.float64))


def _moco_queue() -> torch.Tensor:
    return F.normalize(torch.randn(4, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64), dim=1)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    _torchrun_env(rank, world, port)
    dist.setup("cpu")
    try:
        z1, z2 = (z[rank * B:(rank + 1) * B].clone().requires_grad_(True) for z in _global_views())
        loss = nt_xent(z1, z2, 0.3)
        loss.backward()
        grads = {}
        for name, fn in GATHERED.items():
            a, b = (z[rank * B:(rank + 1) * B].clone().requires_grad_(True) for z in _global_views())
            value = fn(a, b, LABELS[rank * B:(rank + 1) * B])
            value.backward()
            grads[name] = (value.detach(), a.grad, b.grad)
        # MoCo with batch negatives: this process's queries against every process's keys and a shared queue
        q = F.normalize(_global_views()[0][rank * B:(rank + 1) * B], dim=1).requires_grad_(True)
        keys = F.normalize(_global_views()[1][rank * B:(rank + 1) * B], dim=1)
        moco = F.cross_entropy(info_nce_logits(q, keys, _moco_queue(), 0.3, batch_negatives=True),
                               torch.zeros(B, dtype=torch.long))
        moco.backward()
        grads["moco_batch_negatives"] = (moco.detach(), q.grad, q.grad)
        torch.manual_seed(0)  # equal initial memories on both processes
        queue, bank = Queue(8, 2), MemoryBank(10, 2, momentum=0.5)
        queue.stage(torch.full((2, 2), 10.0 * rank + 1))
        queue.stage(torch.full((1, 2), 10.0 * rank + 2))  # a second micro-batch
        queue.commit()
        bank.stage(torch.tensor([rank, 5 + rank]), F.normalize(torch.ones(2, 2) * (rank + 1), dim=1))
        bank.commit()
        codes = sinkhorn(_global_views()[0][rank * B:(rank + 1) * B] * 5, 0.05, 3)
        # the epoch hook's pass over 7 samples: this process's share is rank, rank + 2, ... (an uneven split)
        from vidssl.methods import EpochContext

        def share(size: int) -> Any:
            mine = torch.arange(rank, 7, world)
            for i in range(0, len(mine), size):
                yield {"index": mine[i:i + size]}

        ctx = EpochContext(0, 0, 0, 7, torch.device("cpu"), torch.Generator(), share)
        collected = ctx.collect(lambda batch: torch.stack([batch["index"] * 10.0, -batch["index"]], dim=1), 2)
        torch.save({"loss": loss.detach(), "g1": z1.grad, "g2": z2.grad, "keys": queue.keys, "ptr": queue.ptr,
                    "bank": bank.bank, "gathered": grads, "codes": codes, "collected": collected},
                   f"{out}/rank{rank}.pt")
    finally:
        dist.cleanup()


@pytest.mark.slow
def test_gathered_losses_and_memories_across_two_processes(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(WORLD, _free_port(), str(tmp_path)), nprocs=WORLD)
    r = [torch.load(tmp_path / f"rank{k}.pt", weights_only=True) for k in range(WORLD)]
    # NT-Xent: the mean over processes (what DDP's averaged gradients optimise) is the global batch's loss,
    # and each process's gradient, averaged by DDP (/ WORLD), is the global loss's gradient of its slice
    z1, z2 = (z.clone().requires_grad_(True) for z in _global_views())
    whole = nt_xent(z1, z2, 0.3)
    whole.backward()
    assert z1.grad is not None and z2.grad is not None
    torch.testing.assert_close(sum(x["loss"] for x in r) / WORLD, whole.detach())
    for k in range(WORLD):
        rows = slice(k * B, (k + 1) * B)
        torch.testing.assert_close(r[k]["g1"] / WORLD, z1.grad[rows])
        torch.testing.assert_close(r[k]["g2"] / WORLD, z2.grad[rows])
    # Barlow Twins, VICReg and SupCon: the same, each process reading the global batch (lightly #1977 left
    # Barlow Twins' gradient at 1 / world of this)
    for name, fn in GATHERED.items():
        z1, z2 = (z.clone().requires_grad_(True) for z in _global_views())
        whole = fn(z1, z2, LABELS)
        g1, g2 = torch.autograd.grad(whole, (z1, z2))
        torch.testing.assert_close(sum(x["gathered"][name][0] for x in r) / WORLD, whole.detach())
        for k in range(WORLD):
            rows = slice(k * B, (k + 1) * B)
            torch.testing.assert_close(r[k]["gathered"][name][1] / WORLD, g1[rows], msg=name)
            torch.testing.assert_close(r[k]["gathered"][name][2] / WORLD, g2[rows], msg=name)
    # MoCo's batch negatives: each query's row holds every process's other keys, so the mean over processes is the
    # one-process loss of the global batch, and each process's query gradient its rows of that loss's gradient
    q = F.normalize(_global_views()[0], dim=1).requires_grad_(True)
    whole = F.cross_entropy(info_nce_logits(q, F.normalize(_global_views()[1], dim=1), _moco_queue(), 0.3,
                                            batch_negatives=True), torch.zeros(WORLD * B, dtype=torch.long))
    (gq,) = torch.autograd.grad(whole, q)
    torch.testing.assert_close(sum(x["gathered"]["moco_batch_negatives"][0] for x in r) / WORLD, whole.detach())
    for k in range(WORLD):
        torch.testing.assert_close(r[k]["gathered"]["moco_batch_negatives"][1] / WORLD, gq[k * B:(k + 1) * B])
    # Sinkhorn equipartitions over the global batch: each process's codes are its rows of the whole batch's
    whole_codes = sinkhorn(_global_views()[0] * 5, 0.05, 3)
    for k in range(WORLD):
        torch.testing.assert_close(r[k]["codes"], whole_codes[k * B:(k + 1) * B])
    # the queue holds every process's keys of the step in rank order, the same on both
    want = torch.tensor([[1.0] * 2, [1.0] * 2, [2.0] * 2, [11.0] * 2, [11.0] * 2, [12.0] * 2])
    for k in range(WORLD):
        torch.testing.assert_close(r[k]["keys"][:6], want)
        assert int(r[k]["ptr"]) == 6
    # the memory bank moved the entries of both processes' samples, identically on both
    torch.manual_seed(0)
    Queue(8, 2)
    start = MemoryBank(10, 2).bank
    torch.testing.assert_close(r[0]["bank"], r[1]["bank"])
    for i, rank in ((0, 0), (5, 0), (1, 1), (6, 1)):
        feat = F.normalize(torch.ones(2) * (rank + 1), dim=0)
        torch.testing.assert_close(r[0]["bank"][i], F.normalize(0.5 * start[i] + 0.5 * feat, dim=0))
    torch.testing.assert_close(r[0]["bank"][[2, 3, 4, 7, 8, 9]], start[[2, 3, 4, 7, 8, 9]])
    # EpochContext.collect: every process holds the whole dataset's rows, in dataset order
    want_rows = torch.stack([torch.arange(7) * 10.0, -torch.arange(7.0)], dim=1)
    for k in range(WORLD):
        torch.testing.assert_close(r[k]["collected"], want_rows)
