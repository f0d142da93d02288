"""The two-view image methods (SimCLR, BYOL, SimSiam, Barlow Twins, VICReg) beyond the contract of
tests/test_methods.py: the momentum schedule, the collapse monitor, the frames a video sample gives, the configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidssl.data.views import VideoInfo
from vidssl.methods import METHODS
from vidssl.paths import REPO_ROOT
from vidssl.train import load_run_config

TWO_VIEW = ["simclr", "byol", "simsiam", "barlow_twins", "vicreg"]
TINY = dict(crop_size=32, max_gap=3)
HEADS = {"simclr": dict(projector=(32, 16)), "byol": dict(projector=(32, 16), predictor=(32, 16)),
         "simsiam": dict(projector=(32, 32, 16), predictor=(8, 16)), "barlow_twins": dict(projector=(32, 32, 16)),
         "vicreg": dict(projector=(32, 32, 16))}


def make(name: str, **extra: object) -> torch.nn.Module:
    cls = METHODS[name]
    return cls(cls.Config(**{**TINY, **HEADS[name], **extra}))  # type: ignore[return-value]


def test_byol_momentum_rises_from_its_base_to_one() -> None:
    torch.manual_seed(0)
    byol = make("byol", momentum=0.9, total_steps=10)
    with torch.no_grad():
        for p in byol.online.parameters():
            p.add_(1.0)
    before = [p.clone() for p in byol.target.parameters()]
    byol.after_step(0)  # tau = 0.9 at step 0
    for t, t0, o in zip(byol.target.parameters(), before, byol.online.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * t0 + 0.1 * o)
    assert float(byol.tau) == pytest.approx(0.9)
    byol.after_step(5)  # half way: 1 - 0.1 (cos(pi / 2) + 1) / 2 = 0.95
    assert float(byol.tau) == pytest.approx(0.95)
    held = [p.clone() for p in byol.target.parameters()]
    byol.after_step(10)  # tau = 1: the target stays
    for t, t0 in zip(byol.target.parameters(), held, strict=True):
        assert torch.equal(t, t0)
    constant = make("byol", momentum=0.9)  # built outside a run: no schedule length, tau stays at its base
    constant.after_step(7)
    assert float(constant.tau) == pytest.approx(0.9)


@pytest.mark.parametrize("name", TWO_VIEW)
def test_two_view_methods_log_the_collapse_monitor_and_pair_video_frames(name: str) -> None:
    torch.manual_seed(0)
    method = make(name, input="images")
    video = torch.randint(0, 256, (4, 3, 1, 40, 40), dtype=torch.uint8)
    _, metrics = method({"video": video})
    assert 0.0 <= float(metrics["embedding_std"]) <= 2.0
    pair = make(name, max_gap=3).sampler()(VideoInfo(40), np.random.default_rng(0))
    frames = np.asarray(pair)
    assert frames.shape == (2,) and 1 <= int(frames[1]) - int(frames[0]) <= 3


@pytest.mark.parametrize("name", TWO_VIEW)
@pytest.mark.parametrize("kind", ["cifar", "video"])
def test_each_method_has_a_cifar_and_a_video_config(name: str, kind: str) -> None:
    path = REPO_ROOT / "configs" / f"{name}_{kind}.yaml"
    cfg, model_cfg = load_run_config(path)
    assert cfg.method == name and model_cfg.input == ("images" if kind == "cifar" else "video")
    if kind == "cifar":
        assert model_cfg.backbone == "resnet18_cifar" and model_cfg.crop_size == 32
