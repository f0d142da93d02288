"""MoCo: InfoNCE against closed forms, queue order, EMA, split BN and shuffle-BN against references."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from vidssl.data.samplers import frame_pair
from vidssl.data.views import VideoInfo
from vidssl.engine.config import ConfigError, from_dict, read_yaml
from vidssl.engine.distributed import shuffle_batch, unshuffle_batch
from vidssl.losses import info_nce, info_nce_logits, top1_positive
from vidssl.methods.moco import MoCo, MoCoConfig
from vidssl.models import build_backbone, torchvision_state_dict
from vidssl.nn import SplitBatchNorm, convert_split_bn, key_gaps
from vidssl.nn.colour import imagenet_normalize

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def tiny(**kw: object) -> MoCo:
    base: dict[str, object] = dict(backbone="resnet18", queue_size=16, crop_size=16, num_splits=2)
    base.update(kw)
    return MoCo(MoCoConfig(**base))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ InfoNCE


@pytest.mark.parametrize("t", [0.07, 0.2, 1.0])
def test_info_nce_closed_form(t: float) -> None:
    # q = k = e_i, the queue holds the other basis vectors: logits are 1/t for the positive and 0 for K negatives.
    b, d = 3, 10
    eye = torch.eye(d, dtype=torch.float64)  # float64: at t = 0.07 the loss is ~4e-6
    q = k = eye[:b]
    queue = eye[b:]
    kk = d - b
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + kk * math.exp(0)))
    assert info_nce(q, k, queue, t).item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_matches_cross_entropy_on_hand_built_logits() -> None:
    g = torch.Generator().manual_seed(0)
    q, k = (F.normalize(torch.randn(5, 8, generator=g), dim=1) for _ in range(2))
    queue = F.normalize(torch.randn(7, 8, generator=g), dim=1)
    t = 0.2
    rows = [[float(q[i] @ k[i]) / t] + [float(q[i] @ queue[j]) / t for j in range(7)] for i in range(5)]
    logits = torch.tensor(rows)
    torch.testing.assert_close(info_nce_logits(q, k, queue, t), logits)
    ref = F.cross_entropy(logits, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(info_nce(q, k, queue, t), ref)
    # the positive ranks first exactly where column 0 is the row maximum
    assert top1_positive(logits).item() == pytest.approx(float((logits.argmax(1) == 0).float().mean()))


def test_info_nce_gradient_pulls_towards_key_and_away_from_queue() -> None:
    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(4, 16, generator=g), dim=1).requires_grad_(True)
    k = F.normalize(torch.randn(4, 16, generator=g), dim=1)
    queue = F.normalize(torch.randn(32, 16, generator=g), dim=1).requires_grad_(True)
    loss = info_nce(q, k, queue, 0.2)
    loss.backward()
    assert q.grad is not None and queue.grad is None  # the queue is a constant
    step = -q.grad
    assert torch.all((step * k).sum(1) > 0)  # descent moves every query towards its positive
    with torch.no_grad():
        assert info_nce(q + 0.05 * step, k, queue, 0.2) < loss


def test_batch_negatives_add_the_other_current_keys_by_hand() -> None:
    g = torch.Generator().manual_seed(2)
    q, k = (F.normalize(torch.randn(4, 8, generator=g, dtype=torch.float64), dim=1) for _ in range(2))
    queue = F.normalize(torch.randn(6, 8, generator=g, dtype=torch.float64), dim=1)
    t = 0.2
    logits = info_nce_logits(q, k, queue, t, batch_negatives=True)
    assert logits.shape == (4, 1 + 4 + 6)
    for i in range(4):
        row = logits[i]
        assert row[0].item() == pytest.approx(float(q[i] @ k[i]) / t)
        assert row[1 + i].item() == float("-inf")  # the own key counts once, as the positive
        for j in range(4):
            if j != i:
                assert row[1 + j].item() == pytest.approx(float(q[i] @ k[j]) / t)
        torch.testing.assert_close(row[5:], q[i] @ queue.t() / t)
        # the loss of the row: -log softmax over the positive, the 3 other keys and the queue
        terms = [float(q[i] @ k[j]) / t for j in range(4) if j != i] + (q[i] @ queue.t() / t).tolist()
        want = -(row[0].item() - math.log(math.exp(row[0].item()) + sum(math.exp(x) for x in terms)))
        assert F.cross_entropy(row[None], torch.zeros(1, dtype=torch.long)).item() == pytest.approx(want)
    # off, the same logits as before
    torch.testing.assert_close(info_nce_logits(q, k, queue, t), info_nce_logits(q, k, queue, t, False))


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_the_recency_shortcut_pays_only_without_batch_negatives(t: float) -> None:
    # The state a short MoCo run reaches (docs/results.md, "Why MoCo v2 sat below random"): every query equals every
    # current key (u), the queue's older keys point elsewhere (orthogonal). Without batch negatives the loss is that of
    # a solved task, log(1 + K e^(-1/t)); with them every other current key ties with the positive: log(B + K e^(-1/t)).
    b, kk, d = 6, 5, 8
    eye = torch.eye(d, dtype=torch.float64)
    q = k = eye[0].expand(b, d)
    queue = eye[1:1 + kk]
    zero = torch.zeros(b, dtype=torch.long)
    plain = F.cross_entropy(info_nce_logits(q, k, queue, t), zero).item()
    batch = F.cross_entropy(info_nce_logits(q, k, queue, t, batch_negatives=True), zero).item()
    assert plain == pytest.approx(math.log(1 + kk * math.exp(-1 / t)))
    assert batch == pytest.approx(math.log(b + kk * math.exp(-1 / t)))
    gaps = key_gaps(q @ k.t(), q @ queue.t())
    assert gaps["instance_gap"] == pytest.approx(0.0, abs=1e-12)
    assert gaps["recency_gap"] == pytest.approx(1.0)
    # and instances told apart: orthonormal queries on their own keys, one apart from the others
    spread = key_gaps(eye[:b] @ eye[:b].t(), torch.zeros(b, 0, dtype=torch.float64))
    assert spread["instance_gap"] == pytest.approx(1.0) and "recency_gap" not in spread
    assert key_gaps(q[:1] @ k[:1].t(), q[:1] @ queue.t()) == {}  # one sample: no other key to compare with


def test_moco_logs_its_shortcut_monitors_and_trains_with_batch_negatives() -> None:
    torch.manual_seed(0)
    model = tiny(batch_negatives=True).train()
    video = torch.randint(0, 256, (4, 3, 2, 24, 24), dtype=torch.uint8)
    torch.manual_seed(1)
    loss, metrics = model({"video": video})
    assert {"instance_gap", "recency_gap", "embedding_std"} <= set(metrics)
    # the monitors read the queue's similarities off the logits: the same as computing them afresh
    with torch.no_grad():
        torch.manual_seed(1)
        x_q, x_k = model.views(video)
        q, k = model.query(x_q), model._keys(x_k)
        want = key_gaps(q @ k.t(), q @ model.queue.keys.t())
    for key, value in want.items():
        assert float(metrics[key]) == pytest.approx(float(value), abs=1e-5), key
    model.cfg.batch_negatives = False
    torch.manual_seed(1)  # the same views and keys: the 3 other keys only add to the partition function
    assert math.isfinite(loss.item()) and loss.item() > model({"video": video})[0].item()
    loss.backward()
    assert all(p.grad is not None for p in model.query.parameters() if p.requires_grad)


def test_info_nce_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="queue must be"):
        info_nce(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(3, 5), 0.1)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.zeros(2, 4), torch.zeros(2, 4), torch.zeros(3, 4), 0.0)


# ------------------------------------------------------------------------------------------------ queue and EMA


def test_queue_order_and_wrap_around() -> None:
    m = tiny(queue_size=5, dim=2)
    keys = torch.arange(16, dtype=torch.float32).view(8, 2)  # row i = (2i, 2i + 1), easy to recognise
    m.queue.push(keys[:3])
    torch.testing.assert_close(m.queue.keys[:3], keys[:3])
    assert int(m.queue.ptr) == 3
    m.queue.push(keys[3:6])  # 3 keys at ptr 3 of 5: two at the end, one wraps to the start
    torch.testing.assert_close(m.queue.keys, torch.stack([keys[5], keys[1], keys[2], keys[3], keys[4]]))
    assert int(m.queue.ptr) == 1 and int(m.queue.seen) == 6
    m.queue.push(keys)  # more than K: only the newest 5 survive, in ring order
    assert int(m.queue.ptr) == (1 + 8) % 5
    newest = {tuple(r.tolist()) for r in keys[3:]}
    assert {tuple(r.tolist()) for r in m.queue.keys} == newest
    torch.testing.assert_close(m.queue.keys[(int(m.queue.ptr) - 1) % 5], keys[-1])  # the last key sits before ptr


def _batch(b: int = 4, t: int = 2, size: int = 20, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"video": torch.randint(0, 256, (b, 3, t, size, size), generator=g, dtype=torch.uint8)}


def test_forward_enqueues_keys_only_after_step() -> None:
    m = tiny(queue_size=16, bn="none")
    before = m.queue.keys.clone()
    loss, metrics = m(_batch())
    assert torch.isfinite(loss) and metrics["queue_fill"] == 0.0
    torch.testing.assert_close(m.queue.keys, before)  # nothing enqueued during forward
    m.after_step(0)
    assert int(m.queue.ptr) == 4
    torch.testing.assert_close(m.queue.keys[:4].norm(dim=1), torch.ones(4))
    _, metrics = m(_batch(seed=1))
    assert metrics["queue_fill"] == pytest.approx(4 / 16)


def test_ema_update_is_exact_and_momentum_params_never_train() -> None:
    torch.manual_seed(0)
    m = tiny(momentum=0.9, bn="none")
    trainable = [p for p in m.parameters() if p.requires_grad]
    key_ids = {id(p) for p in m.key.parameters()}
    assert key_ids and not key_ids & {id(p) for p in trainable}  # never handed to the optimiser
    opt = torch.optim.SGD(trainable, lr=0.5)
    key0 = [p.detach().clone() for p in m.key.parameters()]
    loss, _ = m(_batch())
    loss.backward()
    assert all(p.grad is None for p in m.key.parameters())
    opt.step()
    for p, p0 in zip(m.key.parameters(), key0, strict=True):
        assert torch.equal(p, p0)  # backward and the optimiser leave the key encoder alone
    q1 = [p.detach().clone() for p in m.query.parameters()]
    m.after_step(0)
    for p, p0, pq in zip(m.key.parameters(), key0, q1, strict=True):
        torch.testing.assert_close(p, 0.9 * p0 + (1 - 0.9) * pq, rtol=0, atol=0)
    assert any(not torch.equal(p, p0) for p, p0 in zip(m.key.parameters(), key0, strict=True))


# ------------------------------------------------------------------------------------------------ BN variants


def test_split_batch_norm_equals_bn_per_sub_batch() -> None:
    torch.manual_seed(0)
    x = torch.randn(12, 5, 4, 3) * 3 + 1
    bn = SplitBatchNorm(5, num_splits=3, momentum=0.1)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1, 1)
    y = bn(x)
    ref_means, ref_vars = [], []
    for chunk, out in zip(x.chunk(3), y.chunk(3), strict=True):
        rm, rv = torch.zeros(5), torch.ones(5)
        ref = F.batch_norm(chunk, rm, rv, bn.weight, bn.bias, training=True, momentum=0.1, eps=bn.eps)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        ref_means.append(rm)
        ref_vars.append(rv)
    # running stats: the mean over sub-batches of what BatchNorm2d would have tracked for each
    torch.testing.assert_close(bn.running_mean, torch.stack(ref_means).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack(ref_vars).mean(0))
    bn.eval()
    plain = torch.nn.BatchNorm2d(5).eval()
    plain.load_state_dict(bn.state_dict())
    torch.testing.assert_close(bn(x), plain(x))
    with pytest.raises(ValueError, match="num_splits"):
        bn.train()(x[:5])


def test_split_bn_keeps_torchvision_names() -> None:
    backbone = convert_split_bn(build_backbone("resnet18"), 4)
    assert isinstance(backbone.bn1, SplitBatchNorm) and isinstance(backbone.layer1[0].bn2, SplitBatchNorm)
    torchvision.models.resnet18().load_state_dict(torchvision_state_dict(backbone), strict=True)


def test_shuffle_unshuffle_round_trip_and_shuffled_keys() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, 3, 2, 2)
    xs, idx = shuffle_batch(x)
    assert sorted(xs[:, 0, 0, 0].tolist()) == sorted(x[:, 0, 0, 0].tolist())
    torch.testing.assert_close(unshuffle_batch(xs, idx), x)
    # full-batch BN is permutation invariant: shuffled keys equal unshuffled ones, row by row
    for bn in ("shuffle", "none"):
        m = tiny(bn=bn)
        img = torch.randn(4, 3, 16, 16)
        torch.testing.assert_close(m._keys(img), m.key(img), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ views, sampler, config


def test_views_use_frame_zero_and_frame_one() -> None:
    m = tiny(bn="none")
    video = torch.zeros(2, 3, 2, 20, 20, dtype=torch.uint8)
    video[:, :, 1] = 255  # frame 0 black, frame 1 white: no augmentation turns black into anything else
    black = imagenet_normalize(torch.zeros(1, 3, 1, 1))
    q, k = m.views(video)
    assert q.shape == k.shape == (2, 3, 16, 16)
    torch.testing.assert_close(q, black.expand_as(q))
    assert (k - black).abs().amin() > 0.5
    q, k = m.views(video[:, :, :1])  # still images (T = 1): both views from the same frame
    torch.testing.assert_close(k, black.expand_as(k))
    with pytest.raises(ValueError, match="uint8"):
        m.views(video.float())


def test_frame_pair_gaps() -> None:
    rng = np.random.default_rng(0)
    pairs = np.stack([frame_pair(50, rng, max_gap=4) for _ in range(400)])
    gaps = pairs[:, 1] - pairs[:, 0]
    assert pairs.min() >= 0 and pairs.max() < 50
    assert set(gaps.tolist()) == {1, 2, 3, 4}
    assert tiny(max_gap=4).sampler()(VideoInfo(50), np.random.default_rng(1)).shape == (2,)
    assert tiny(input="images").sampler()(VideoInfo(1), rng).tolist() == [0]
    short = frame_pair(2, rng, max_gap=4)  # shorter than the largest gap: clamped into the video
    assert short.min() >= 0 and short.max() <= 1


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="version"):
        MoCoConfig(version=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="momentum"):
        MoCoConfig(momentum=1.0)
    assert tiny(version=1).temperature == 0.07 and tiny(version=2).temperature == 0.2


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("moco_v2_cifar.yaml", dict(version=2, queue_size=4096, momentum=0.99, temperature=0.1, bn="split",
                                    input="images", crop_size=32, batch_negatives=False)),
        ("moco_v2_video.yaml", dict(version=2, queue_size=65536, momentum=0.999, bn="shuffle", input="video")),
        ("moco_v1_video.yaml", dict(version=1, queue_size=65536, momentum=0.999, temperature=0.07, input="video")),
    ],
)
def test_configs_follow_the_papers(name: str, expected: dict[str, object]) -> None:
    data = read_yaml(CONFIGS / name)
    assert data["method"] == "moco"
    cfg = from_dict(MoCoConfig, data["model"])
    for key, value in expected.items():
        assert getattr(cfg, key) == value, key
    assert data["data"]["kind"] == cfg.input
    with pytest.raises(ConfigError, match="queue_size"):
        from_dict(MoCoConfig, {"queue_sise": 3})
