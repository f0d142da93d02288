"""CRW's maths against closed forms and explicit products, and the method's own behaviour."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidssl.data.views import VideoInfo
from vidssl.methods.crw import (
    CRW,
    CRWConfig,
    palindrome_transitions,
    palindrome_walks,
    transition_matrices,
    walk_loss,
)

TINY: dict[str, Any] = dict(backbone="resnet18_s8_l3", crop_size=32, patch_size=16, patch_stride=8, clip_len=3, dim=16)


def _walk(feats: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    fwd, bwd = palindrome_transitions(feats, temperature)
    return walk_loss(palindrome_walks(fwd, bwd))


def test_orthogonal_nodes_on_identical_frames_return_home() -> None:
    n, t = 6, 4
    feats = torch.eye(n).expand(2, t, n, n).clone()  # node i = e_i in every frame
    loss, _, acc = _walk(feats, temperature=0.05)
    assert float(loss) < 1e-6  # at a low temperature the walk stays home with probability ~1
    assert torch.equal(acc, torch.ones(t - 1))
    # closed form at t = 0.2: one step stays with p = 1 / (1 + (N-1) e^{-1/t}) and moves to each other node
    # with q = e^{-1/t} p; the 1-step round trip returns with p^2 + (N-1) q^2
    _, per_cycle, _ = _walk(feats, temperature=0.2)
    p = 1.0 / (1.0 + (n - 1) * math.exp(-1.0 / 0.2))
    q = math.exp(-1.0 / 0.2) * p
    torch.testing.assert_close(per_cycle[0], torch.tensor(-math.log(p * p + (n - 1) * q * q)))
    assert float(per_cycle[0]) < float(per_cycle[1]) < float(per_cycle[2])  # longer walks stray more


def test_two_node_closed_form() -> None:
    # two unit vectors at angle theta in both frames: A = [[1, c], [c, 1]] with c = cos(theta), so each
    # step stays with p = sigmoid((1 - c) / t) and the round trip returns with p^2 + (1 - p)^2
    theta, temp = 1.0, 0.5
    u = torch.tensor([[1.0, 0.0], [math.cos(theta), math.sin(theta)]])
    feats = u.expand(1, 2, 2, 2)
    p = 1.0 / (1.0 + math.exp(-(1.0 - math.cos(theta)) / temp))
    fwd, bwd = palindrome_transitions(feats, temp)
    torch.testing.assert_close(fwd[0, 0], torch.tensor([[p, 1 - p], [1 - p, p]]))
    loss, _, acc = walk_loss(palindrome_walks(fwd, bwd))
    torch.testing.assert_close(loss, torch.tensor(-math.log(p * p + (1 - p) ** 2)))
    assert float(acc[0]) == 1.0  # p > 1/2: the most likely end is home


def test_two_node_asymmetric_closed_form() -> None:
    # frame 1 swaps the nodes' directions partly: a non-symmetric affinity, checked entry by entry
    temp = 0.3
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = F.normalize(torch.tensor([[0.2, 1.0], [1.0, 0.5]]), dim=1)
    aff = a @ b.T  # (2, 2)
    f = torch.softmax(aff / temp, dim=1)
    g = torch.softmax(aff.T / temp, dim=1)
    expected = [float(sum(f[i, j] * g[j, i] for j in range(2))) for i in range(2)]
    loss, _, _ = _walk(torch.stack([a, b])[None], temp)
    torch.testing.assert_close(loss, torch.tensor(-(math.log(expected[0]) + math.log(expected[1])) / 2))


def test_random_features_give_chance() -> None:
    g = torch.Generator().manual_seed(0)
    n = 49
    feats = F.normalize(torch.randn(64, 4, n, 512, generator=g), dim=-1)  # independent nodes in every frame
    loss, _, acc = _walk(feats, temperature=1.0)
    # near-orthogonal random nodes at a high temperature: every transition is close to uniform
    assert abs(float(loss) - math.log(n)) < 1e-2
    assert float(acc.max()) < 3.0 / n  # about chance (1/49), nowhere near 1


def test_transition_rows_and_values() -> None:
    g = torch.Generator().manual_seed(1)
    feats = F.normalize(torch.randn(2, 3, 5, 8, generator=g), dim=-1)
    p = transition_matrices(feats, 0.1)
    assert p.shape == (2, 2, 5, 5)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 2, 5))
    expected = torch.softmax(torch.einsum("bnd,bmd->bnm", feats[:, 1], feats[:, 2]) / 0.1, dim=-1)
    torch.testing.assert_close(p[:, 1], expected)


def test_edge_dropout_renormalises_surviving_edges() -> None:
    g = torch.Generator().manual_seed(2)
    feats = F.normalize(torch.randn(8, 3, 40, 16, generator=g), dim=-1)
    clean = transition_matrices(feats, 0.2)
    dropped = transition_matrices(feats, 0.2, dropout=0.1, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(dropped.sum(-1), torch.ones(8, 2, 40))
    gone = dropped == 0
    assert abs(float(gone.float().mean()) - 0.1) < 0.01  # about 10% of the edges are dropped
    # a surviving edge is the clean probability rescaled by 1 / (clean mass kept in its row)
    kept_mass = (clean * ~gone).sum(-1, keepdim=True)
    torch.testing.assert_close(dropped[~gone], (clean / kept_mass)[~gone])


def test_backward_dropout_also_loses_forward_edges() -> None:
    g = torch.Generator().manual_seed(4)
    feats = F.normalize(torch.randn(8, 4, 30, 16, generator=g), dim=-1)
    fwd, bwd = palindrome_transitions(feats, 0.2, dropout=0.1, generator=torch.Generator().manual_seed(5))
    fwd_gone, bwd_gone = fwd == 0, bwd == 0
    assert bool(bwd_gone[fwd_gone.transpose(-1, -2)].all())  # an edge dropped going out is dropped coming back
    assert abs(float(bwd_gone.float().mean()) - (1 - 0.9**2)) < 0.01  # the authors' effective 0.19
    assert abs(float(fwd_gone.float().mean()) - 0.1) < 0.01


def test_palindrome_equals_explicit_product() -> None:
    g = torch.Generator().manual_seed(6)
    t, n = 5, 7
    feats = F.normalize(torch.randn(3, t, n, 8, generator=g), dim=-1)
    fwd, bwd = palindrome_transitions(feats, 0.3)
    walks = palindrome_walks(fwd, bwd)
    assert walks.shape == (3, t - 1, n, n)
    aff = [feats[:, s] @ feats[:, s + 1].transpose(1, 2) for s in range(t - 1)]
    for k in range(1, t):
        expected = torch.eye(n).expand(3, n, n)
        for s in range(k):  # out: frame s -> s + 1
            expected = expected @ torch.softmax(aff[s] / 0.3, dim=-1)
        for s in reversed(range(k)):  # back: frame s + 1 -> s
            expected = expected @ torch.softmax(aff[s].transpose(1, 2) / 0.3, dim=-1)
        torch.testing.assert_close(walks[:, k - 1], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(walks.sum(-1), torch.ones(3, t - 1, n))


def test_walk_loss_is_cross_entropy_of_log_walks() -> None:
    g = torch.Generator().manual_seed(7)
    walks = torch.softmax(torch.randn(2, 3, 6, 6, generator=g), dim=-1)
    loss, per_cycle, acc = walk_loss(walks)
    target = torch.arange(6).repeat(2)
    for k in range(3):
        logits = torch.log(walks[:, k] + 1e-20).flatten(0, 1)
        torch.testing.assert_close(per_cycle[k], F.cross_entropy(logits, target))
        torch.testing.assert_close(acc[k], (logits.argmax(-1) == target).float().mean())
    torch.testing.assert_close(loss, per_cycle.mean())


def test_shape_errors_are_clear() -> None:
    with pytest.raises(ValueError, match=r"\(B, T, N, D\)"):
        transition_matrices(torch.zeros(2, 1, 3, 4), 0.1)
    with pytest.raises(ValueError, match="walk_loss"):
        walk_loss(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="clip_len"):
        CRWConfig(clip_len=1)
    with pytest.raises(ValueError, match="min_cycle"):
        CRWConfig(clip_len=4, min_cycle=4)
    model = CRW(CRWConfig(**TINY))
    with pytest.raises(ValueError, match="uint8"):
        model({"video": torch.zeros(1, 3, 3, 40, 40)})


def test_method_cycles_metrics_and_gradient_reach_encoder() -> None:
    torch.manual_seed(0)
    model = CRW(CRWConfig(**TINY, min_cycle=1))
    video = torch.randint(0, 256, (2, 3, 3, 40, 40), dtype=torch.uint8)
    loss, metrics = model({"video": video})
    assert set(metrics) == {"acc", "loss_k1", "acc_k1", "loss_k2", "acc_k2"}
    torch.testing.assert_close(loss, (metrics["loss_k1"] + metrics["loss_k2"]) / 2)
    loss.backward()
    conv1 = model.encoder().conv1.weight.grad
    assert conv1 is not None and float(conv1.abs().sum()) > 0
    assert model.head.weight.grad is not None
    # the authors' default trains cycles 2 .. T-1 only
    model.cfg.min_cycle = 2
    _, metrics = model({"video": video[:1]})
    assert "loss_k1" not in metrics and "loss_k2" in metrics


def test_sampler_is_a_strided_clip() -> None:
    model = CRW(CRWConfig(**{**TINY, "clip_len": 4, "frame_stride": 3}))
    idx = model.sampler()(VideoInfo(100), np.random.default_rng(0))
    assert idx.shape == (4,) and np.all(np.diff(idx) == 3) and idx.max() < 100
