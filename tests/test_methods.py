"""The method contract (``vidssl/methods/__init__.py``), checked for every registered method.

Each method needs a tiny config in ``TINY`` (small backbone, queue and crops) so a case runs in seconds.
"""

from __future__ import annotations

import typing
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from vidssl.data.views import VideoInfo
from vidssl.methods import METHODS, Method
from vidssl.models import Backbone, encoder_entries

EPOCH_SAMPLES = 4  # the dataset of the first epoch's hook, which every method gets before its first step

# Small values for each registered method's Config; a new method adds its entry here.
TINY: dict[str, dict[str, Any]] = {
    # the ImageNet stem at 32 px costs a quarter of the CIFAR stem at 16 px
    "moco": dict(backbone="resnet18", queue_size=32, crop_size=32, num_splits=2, bn="split", max_gap=3),
    # 3x3 nodes of 16 px per frame and 3-frame clips (cycles of length 2), on the 256-d stride-8 trunk
    "crw": dict(backbone="resnet18_s8_l3", crop_size=32, patch_size=16, patch_stride=8, clip_len=3, dim=16),
    # 8x8 stride-4 features, 5x5 windows; stage 2 with a short memory whose two long-term frames use the ROI
    "mast": dict(crop_size=32, radius=2),
    "mast_stage2": dict(crop_size=32, radius=2, long_term=(0, 2), short_term=(3, 1), target_offset=8, roi_after=3,
                        search_radius=2),
    # 8x8 stride-4 features, 5x5 windows, a triplet
    "corrflow": dict(crop_size=32, window=5),
    # a 3x3-cell patch (24 px) of a 72 px crop; 2x2 regressor convolutions fit it (the recipe's 4x4 need 7 cells)
    "timecycle": dict(crop_size=72, patch_size=24, regressor_kernel=2),
    # the two-view image methods: 32 px crops, narrow heads
    "simclr": dict(crop_size=32, projector=(32, 16), max_gap=3),
    "byol": dict(crop_size=32, projector=(32, 16), predictor=(32, 16), max_gap=3, total_steps=10),
    "simsiam": dict(crop_size=32, projector=(32, 32, 16), predictor=(8, 16), max_gap=3),
    "barlow_twins": dict(crop_size=32, projector=(32, 32, 16), max_gap=3),
    "vicreg": dict(crop_size=32, projector=(32, 32, 16), max_gap=3),
    # 2 global crops of 32 px and 2 local ones of 16 px, a short queue in use from the start
    "swav": dict(global_size=32, local_size=16, num_local=2, projector=(32, 16), num_prototypes=10, queue_length=8,
                 queue_start_epoch=0, freeze_prototypes_steps=0, max_gap=3),
    "dino": dict(global_size=32, local_size=16, num_local=2, head_hidden=32, bottleneck=8, out_dim=16, max_gap=3,
                 total_steps=10),
    "supcon": dict(backbone="resnet18", projector=(32, 16)),
    "moco_v3": dict(crop_size=32, mlp_dim=32, dim=16, max_gap=3, total_steps=10),
    "npid": dict(backbone="resnet18", crop_size=32, dim=16, bank_size=EPOCH_SAMPLES, negatives=16),
    "deepcluster": dict(backbone="resnet18", crop_size=32, num_clusters=(2,), pca_dim=2, pass_batch=2),
    "sela": dict(backbone="resnet18", crop_size=32, heads=2, num_clusters=2, pass_batch=2),
    "iic": dict(backbone="resnet18", crop_size=32, num_clusters=3, overcluster=5, sub_heads=2, max_gap=3),
    "pcl": dict(crop_size=32, dim=16, queue_size=16, max_gap=3, num_clusters=(2, 3), warmup_epochs=0,
                proto_negatives=2, kmeans_restarts=2, pass_batch=2),
    "pirl": dict(backbone="resnet18", crop_size=32, dim=8, bank_size=EPOCH_SAMPLES, negatives=5, jigsaw_size=30,
                 tile_size=8),
    "cmc": dict(backbone="resnet18", crop_size=32, dim=8, bank_size=EPOCH_SAMPLES, negatives=5),
    # the pretext tasks: the ImageNet stem on small crops, tiles and patches, narrow heads
    "rotation": dict(backbone="resnet18", crop_size=32),
    "jigsaw": dict(backbone="resnet18", permutations="configs/jigsaw_permutations_100.json", crop_size=36,
                   tile_size=10, tile_dim=8, hidden=16),
    "relative_position": dict(backbone="resnet18", patch=12, gap=2, jitter=1, hidden=16),
    "colorization": dict(backbone="resnet18_s8_l3", crop_size=32, head_dim=8, prior_batch=2),
    "context_encoder": dict(backbone="resnet18", crop_size=32, overlap=1, bottleneck=16, width=8),
    "exemplar": dict(backbone="resnet18", crop_size=32, num_classes=EPOCH_SAMPLES),
    # the temporal-order tasks: 16-24 px crops of the tiny videos, short tuples and clips, narrow heads
    "shuffle_learn": dict(crop_size=24, max_span=8, frame_dim=8),
    "opn": dict(crop_size=24, window=16, jitter=2, max_span=8, frame_dim=8, pair_dim=8),
    "arrow_of_time": dict(crop_size=24, clip_len=3, stride=2, frame_dim=8, hidden=8),
    "o3n": dict(crop_size=16, num_clips=3, clip_len=3, stride=1, window=6, branch_dim=8),
    "vcop": dict(crop_size=16, clip_len=2, gap=1, pair_dim=8),
    # predictive coding: 3x3 grids of 8 px patches (16 px crops at stride 4), one offset, narrow contexts
    "cpc": dict(crop_size=16, pad=0, offsets=(1,), context_dim=8, context_blocks=1),
    "cpc_v2": dict(crop_size=16, pad=0, offsets=(2,), context_dim=8, context_blocks=1, target_dim=8),
    "greedy_infomax": dict(crop_size=16, pad=0, offsets=(1,), context_dim=8),
    "dim": dict(backbone="resnet18", crop_size=32, pad=0, local_stage=2, dim=8, hidden=16),
    "vivi": dict(num_shots=3, frames_per_shot=2, pseudo_shot_len=4, crop_size=24, projector=(16, 8)),
    # DPC on the 2D trunk: 4 blocks of 2 frames, one predicted, 16 px crops
    "dpc": dict(backbone="resnet18", num_blocks=4, block_len=2, stride=1, pred_steps=1, crop_size=16),
}

VIDEO_FRAMES = 12  # length of the tiny source videos the sampler draws from
SIZE = 40  # decoded frame size


def _make(name: str, **extra: Any) -> nn.Module:
    if name not in TINY:
        pytest.fail(f"method {name!r} has no tiny config: add one to TINY in tests/test_methods.py")
    cls = METHODS[name]
    method = cls(cls.Config(**{**TINY[name], **extra}))
    _first_epoch(method)  # as the training loop, which calls the hook before the first batch
    return method  # type: ignore[no-any-return]


def _first_epoch(method: Any) -> None:
    """``on_epoch_start`` of epoch 0 over a dataset of ``EPOCH_SAMPLES`` samples (the clustering methods label
    them there), in batches of the requested size."""
    from vidssl.methods import EpochContext

    data = _batch(method, EPOCH_SAMPLES, seed=100)

    def batches(size: int) -> Any:
        for i in range(0, EPOCH_SAMPLES, size):
            yield {key: value[i:i + size] for key, value in data.items()}

    method.on_epoch_start(EpochContext(0, 0, 0, EPOCH_SAMPLES, torch.device("cpu"), torch.Generator().manual_seed(0),
                                       batches))


def _batch(method: nn.Module, batch_size: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A uint8 ``(B, 3, T, SIZE, SIZE)`` batch built as a dataset would: the sampler's frames of random videos."""
    g = torch.Generator().manual_seed(seed)
    if method.input == "images":  # still images are 1-frame clips, with class labels as an ImageFolder gives
        return {"video": torch.randint(0, 256, (batch_size, 3, 1, SIZE, SIZE), generator=g, dtype=torch.uint8),
                "label": torch.arange(batch_size) % 2, "index": torch.arange(batch_size)}
    assert method.input == "video", f"input must be 'video' or 'images', got {method.input!r}"
    rng = np.random.default_rng(seed)
    sampler = method.sampler()
    clips = []
    for _ in range(batch_size):
        video = torch.randint(0, 256, (3, VIDEO_FRAMES, SIZE, SIZE), generator=g, dtype=torch.uint8)
        info = VideoInfo(VIDEO_FRAMES, shots=lambda: [(0, VIDEO_FRAMES)],
                         motion=lambda method="flow": np.linspace(1.0, 2.0, VIDEO_FRAMES - 1))
        idx = np.asarray(sampler(info, rng)).reshape(-1)  # any shape, flattened into T as the dataset does
        assert idx.dtype.kind == "i" and idx.min() >= 0 and idx.max() < VIDEO_FRAMES, idx
        clips.append(video[:, torch.from_numpy(idx.astype(np.int64))])
    return {"video": torch.stack(clips), "index": torch.arange(batch_size), "label": torch.full((batch_size,), -1)}


def _trainable(m: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in m.named_parameters() if p.requires_grad}


def _frozen(m: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in m.named_parameters() if not p.requires_grad}


def _accepts_images(name: str) -> bool:
    """Whether a method's Config admits ``input: images`` (a walk over frames, e.g. CRW, does not)."""
    return "images" in typing.get_args(typing.get_type_hints(METHODS[name].Config)["input"])


CASES = [(name, extra) for name in METHODS for extra in ({}, {"input": "images"})
         if not extra or _accepts_images(name)]


@pytest.fixture(params=CASES, ids=[f"{n}-{e.get('input', 'default')}" for n, e in CASES])
def method(request: pytest.FixtureRequest) -> nn.Module:
    torch.manual_seed(0)
    name, extra = request.param
    return _make(name, **extra)


def test_contract_surface(method: nn.Module) -> None:
    assert isinstance(method, Method)  # the protocol the training loop is typed against
    assert method.input in ("video", "images")
    assert isinstance(method.encoder(), Backbone)  # the record writes any trunk that keeps the contract
    assert encoder_entries(method.encoder(), method.encoder_input)["backbone"]["arch"]
    assert any(p is q for p in method.encoder().parameters() for q in _trainable(method).values())


def test_training_step(method: nn.Module) -> None:
    """Finite loss; gradients reach every trainable parameter; frozen ones change only in ``after_step``."""
    method.train()
    opt = torch.optim.SGD(list(_trainable(method).values()), lr=0.1)
    frozen0 = _frozen(method)
    loss, metrics = method(_batch(method))
    assert loss.dim() == 0 and torch.isfinite(loss), loss
    for key, value in metrics.items():
        assert isinstance(key, str) and np.isfinite(float(value)), (key, value)
    loss.backward()
    for name, p in _trainable(method).items():
        assert p.grad is not None, f"{name}: no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: gradient is exactly zero"
    for name, p in method.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, f"{name}: frozen parameter received a gradient"
    opt.step()
    for name, value in _frozen(method).items():  # backward and the optimiser leave them alone
        assert torch.equal(value, frozen0[name]), f"{name}: changed outside after_step"
    if hasattr(method, "after_step"):
        method.after_step(0)
        if frozen0:
            changed = [n for n, v in _frozen(method).items() if not torch.equal(v, frozen0[n])]
            assert changed, "after_step left every frozen parameter unchanged"  # e.g. the EMA ran


def test_state_dict_round_trip(method: nn.Module) -> None:
    name = next(n for n, cls in METHODS.items() if type(method) is cls)  # PCL is a MoCo, not "moco"
    method.train()
    # one step moves the state away from initialisation (queues, EMA, BN statistics)
    loss, _ = method(_batch(method))
    loss.backward()
    with torch.no_grad():
        for p in _trainable(method).values():
            p -= 0.1 * p.grad if p.grad is not None else 0.0
    if hasattr(method, "after_step"):
        method.after_step(0)
    # the training loop refuses to checkpoint a non-finite tensor: a "not measured yet" buffer must not be NaN
    bad = [n for n, t in method.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    assert not bad, f"{bad}: not finite, so no checkpoint could be written"
    torch.manual_seed(123)  # a different initialisation, overwritten by the state dict
    fresh = _make(name, input=method.input)
    fresh.load_state_dict(method.state_dict())
    fresh.train()
    batch = _batch(method, seed=7)
    torch.manual_seed(5)
    loss_a, _ = method(batch)
    torch.manual_seed(5)
    loss_b, _ = fresh(batch)
    torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=0)
    x = torch.randn(2, 3, 32, 32)
    method.eval()
    fresh.eval()
    torch.testing.assert_close(method.encoder()(x), fresh.encoder()(x), rtol=0, atol=0)
