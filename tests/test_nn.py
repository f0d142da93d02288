"""The shared layer (vidssl.nn): momentum schedule and EMA, queue and memory bank, heads, the local-window
attention against a dense reference (forward and backward), the input normalisations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidssl.nn import MemoryBank, Prototypes, Queue, ema_update_, mlp, momentum_at
from vidssl.nn.colour import imagenet_normalize, mast_normalize_lab, normalize_input, rgb_to_lab
from vidssl.nn.local_attention import Tile, local_attention, outside_window, tiles


def test_momentum_schedule_closed_forms() -> None:
    assert momentum_at(7, 100, 0.99) == 0.99
    assert momentum_at(0, 100, 0.99, schedule="cosine") == pytest.approx(0.99)
    assert momentum_at(50, 100, 0.99, schedule="cosine") == pytest.approx(0.995)  # halfway: the mean
    assert momentum_at(100, 100, 0.99, schedule="cosine") == pytest.approx(1.0)
    assert momentum_at(500, 100, 0.996, 1.0, "cosine") == pytest.approx(1.0)  # held after the end
    k, total = 30, 120
    byol = 1 - (1 - 0.99) * (math.cos(math.pi * k / total) + 1) / 2  # BYOL's tau_k
    assert momentum_at(k, total, 0.99, schedule="cosine") == pytest.approx(byol)
    with pytest.raises(ValueError, match="schedule"):
        momentum_at(0, 10, 0.9, schedule="linear")  # type: ignore[arg-type]


def test_ema_update_is_exact() -> None:
    torch.manual_seed(0)
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.detach().clone() for p in target.parameters()]
    ema_update_(target, online, 0.9)
    for p, p0, q in zip(target.parameters(), before, online.parameters(), strict=True):
        torch.testing.assert_close(p, 0.9 * p0 + (1 - 0.9) * q, rtol=0, atol=0)


def test_queue_stage_and_commit_once_per_step() -> None:
    q = Queue(6, 2)
    a, b = torch.ones(2, 2), 2 * torch.ones(3, 2)
    q.stage(a)
    q.stage(b)  # two micro-batches
    assert q.fill == 0.0 and int(q.seen) == 0  # nothing written before the commit
    q.commit()
    torch.testing.assert_close(q.keys[:5], torch.cat([a, b]))
    assert int(q.ptr) == 5 and q.fill == pytest.approx(5 / 6)
    q.commit()  # nothing staged: nothing changes
    assert int(q.seen) == 5


def test_memory_bank_update_duplicates_and_negatives() -> None:
    torch.manual_seed(0)
    bank = MemoryBank(10, 4, momentum=0.5)
    assert bank.bank.norm(dim=1).mean().item() == pytest.approx(1.0, abs=0.35)  # NPID's init: expected norm 1
    old = bank.bank.clone()
    f = F.normalize(torch.randn(3, 4), dim=1)
    bank.update(torch.tensor([1, 4, 1]), f)  # index 1 twice: the last one wins
    torch.testing.assert_close(bank.bank[4], F.normalize(0.5 * old[4] + 0.5 * f[1], dim=0))
    torch.testing.assert_close(bank.bank[1], F.normalize(0.5 * old[1] + 0.5 * f[2], dim=0))
    untouched = [i for i in range(10) if i not in (1, 4)]
    torch.testing.assert_close(bank.bank[untouched], old[untouched])
    torch.testing.assert_close(bank(torch.tensor([[4]])), bank.bank[4].view(1, 1, 4))
    neg = bank.negatives(5, 7, torch.Generator().manual_seed(1))
    assert neg.shape == (5, 7) and neg.min() >= 0 and neg.max() < 10
    bank.stage(torch.tensor([0]), f[:1])
    before = bank.bank.clone()
    bank.commit()
    torch.testing.assert_close(bank.bank[0], F.normalize(0.5 * before[0] + 0.5 * f[0], dim=0))


def test_mlp_layouts_of_the_recipes() -> None:
    v2 = mlp((512, 512, 128))  # MoCo v2: Linear, ReLU, Linear with biases: the names of the authors' head
    assert [type(m).__name__ for m in v2] == ["Linear", "ReLU", "Linear"]
    assert set(v2.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    simsiam = mlp((8, 16, 16, 4), bn=True, last_bn=True, last_bn_affine=False)
    kinds = [type(m).__name__ for m in simsiam]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert all(m.bias is None for m in simsiam if isinstance(m, nn.Linear))  # BN follows every linear layer
    assert not simsiam[-1].affine and simsiam[1].affine
    assert mlp((4, 2), bias=False)[0].bias is None
    with pytest.raises(ValueError, match="mlp"):
        mlp((4,))


def test_prototypes_are_unit_vectors() -> None:
    torch.manual_seed(0)
    protos = Prototypes(6, 5)
    torch.testing.assert_close(protos.weight.norm(dim=1), torch.ones(5))
    with torch.no_grad():
        protos.weight.mul_(3.0)
    protos.normalize_()
    torch.testing.assert_close(protos.weight.norm(dim=1), torch.ones(5))
    z = torch.randn(2, 6)
    torch.testing.assert_close(protos(z), F.normalize(z, dim=1) @ protos.weight.t())


def dense_reference(feat_t: torch.Tensor, refs: list[tuple[torch.Tensor, torch.Tensor]], radius: int,
                    scale: float) -> torch.Tensor:
    """All (hw x hw) affinities per reference, masked to |dy|, |dx| <= R, one joint softmax over references."""
    b, _, h, w = feat_t.shape
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1)
    near = ((pos[:, None] - pos[None]).abs() <= radius).all(-1)
    logits = [torch.einsum("bci,bcj->bij", feat_t.flatten(2), f.flatten(2)).mul(scale).masked_fill(~near, -math.inf)
              for f, _ in refs]
    p = F.softmax(torch.cat(logits, 2), dim=2)
    return torch.einsum("bij,bvj->bvi", p, torch.cat([v.flatten(2) for _, v in refs], 2)).view(b, -1, h, w)


@pytest.mark.parametrize("tile", [1, 3, 5, 16])
def test_local_attention_equals_dense_forward_and_backward(tile: int) -> None:
    g = torch.Generator().manual_seed(tile)
    ft = torch.randn(2, 6, 7, 11, generator=g, dtype=torch.float64, requires_grad=True)
    refs = [(torch.randn(2, 6, 7, 11, generator=g, dtype=torch.float64, requires_grad=True),
             torch.rand(2, 3, 7, 11, generator=g, dtype=torch.float64, requires_grad=True)) for _ in range(2)]
    got = local_attention(ft, [(f, v, None) for f, v in refs], 2, 0.7, tile)
    want = dense_reference(ft, refs, 2, 0.7)
    torch.testing.assert_close(got, want)
    weights = torch.randn(got.shape, generator=g, dtype=torch.float64)
    inputs = [ft, *[x for pair in refs for x in pair]]
    for a, b in zip(torch.autograd.grad((got * weights).sum(), inputs),
                    torch.autograd.grad((want * weights).sum(), inputs), strict=True):
        torch.testing.assert_close(a, b)


def test_tiles_cover_the_grid_once_with_their_windows() -> None:
    covered = torch.zeros(9, 13, dtype=torch.long)
    for t in tiles(9, 13, 4, 2):
        covered[t.y0:t.y1, t.x0:t.x1] += 1
        assert (t.wy0, t.wx0) == (max(0, t.y0 - 2), max(0, t.x0 - 2))
        assert (t.wy1, t.wx1) == (min(9, t.y1 + 2), min(13, t.x1 + 2))
    assert bool((covered == 1).all())
    t = next(t for t in tiles(20, 20, 4, 2) if (t.y0, t.x0) == (8, 8))
    assert t == Tile(8, 12, 8, 12, 6, 14, 6, 14)
    mask = outside_window(t.shape, t.window, 2.0, "square")  # (16 targets, 8 x 8 window cells)
    assert mask.shape == (16, 64) and bool(((~mask).sum(1) == 25).all())  # every interior cell sees its 5x5 window
    circle = outside_window(t.shape, t.window, 2.0, "circle")  # CRW's dy^2 + dx^2 < 4: the 3x3 around the cell
    assert bool(((~circle).sum(1) == 9).all())


def test_normalize_input_is_the_stated_normalisation() -> None:
    x = torch.rand(2, 3, 4, 5)
    torch.testing.assert_close(normalize_input(x, "rgb"), imagenet_normalize(x))
    torch.testing.assert_close(normalize_input(x, "lab"), mast_normalize_lab(rgb_to_lab(x)))
    with pytest.raises(ValueError, match="encoder input"):
        normalize_input(x, "hsv")  # type: ignore[arg-type]


def test_embedding_std_reads_collapse() -> None:
    from vidssl.nn import embedding_std

    g = torch.Generator().manual_seed(0)
    spread = torch.randn(4096, 64, generator=g)
    assert float(embedding_std(spread)) == pytest.approx(1.0, abs=0.02)  # even on the sphere: about 1
    assert float(embedding_std(torch.ones(16, 8) + 1e-9 * torch.randn(16, 8, generator=g))) < 1e-6  # collapsed
    with pytest.raises(ValueError, match="B >= 2"):
        embedding_std(torch.ones(1, 3))
