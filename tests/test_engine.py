"""The training engine piece by piece: schedules, LARS, parameter groups, configs, the loop's guarantees,
checkpoints, run metadata and export. ``Tiny`` and ``ClipSet`` are reused by test_resume / test_distributed.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
import torchvision
import yaml
from torch import nn
from torch.utils.data import Dataset

from vidssl import cli
from vidssl import train as train_module
from vidssl.engine import checkpoint as ckpt
from vidssl.engine.config import ConfigError, apply_overrides, from_dict, load_config, to_dict
from vidssl.engine.optim import LARS, build_optimizer, lr_at, param_groups
from vidssl.methods import METHODS, EpochContext, SSLMethod
from vidssl.models import ResNet
from vidssl.train import NonFiniteLoss, epoch_indices, load_run_config, resolve_config, scaled_lr, train


@dataclass
class TinyConfig:
    noise: float = 0.1  # device-side randomness, so an exact resume needs the torch RNG restored
    nan_at: int = -1  # forward returns NaN from this many calls on (-1: never)
    ema: float = 0.9  # momentum of the non-trained target head, updated in after_step


class Tiny(SSLMethod):
    """A method small enough for tests: ResNet-18 stem (trained) -> pooled 64-d -> head, regressed onto
    an EMA copy of the head plus one. Layers 1-4 are frozen so no trainable parameter goes unused."""

    Config = TinyConfig
    input = "video"

    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = ResNet(18, strides=(1, 2, 2), num_layers=3)  # no layer4: 4x smaller checkpoints
        for name, p in self.backbone.named_parameters():
            p.requires_grad = name.startswith(("conv1", "bn1"))
        self.head = nn.Linear(64, 4)
        self.target = nn.Linear(64, 4).requires_grad_(False)
        self.target.load_state_dict(self.head.state_dict())
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def sampler(self) -> Any:
        return lambda n, rng: np.arange(2)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        x = batch["video"].float() / 255  # (B, C, T, H, W)
        x = x + self.cfg.noise * torch.randn_like(x)
        b, c, t, h, w = x.shape
        frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        bb = self.backbone
        f = bb.relu(bb.bn1(bb.conv1(frames))).mean(dim=(2, 3))  # (B * T, 64)
        loss = (self.head(f) - self.target(f) - 1).pow(2).mean()
        self.calls += 1
        if 0 <= self.cfg.nan_at < int(self.calls):
            loss = loss * float("nan")
        return loss, {"feat_std": f.std().detach()}

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        for pt, ph in zip(self.target.parameters(), self.head.parameters(), strict=True):
            pt.mul_(self.cfg.ema).add_(ph, alpha=1 - self.cfg.ema)

    def encoder(self) -> ResNet:
        return self.backbone


class ClipSet(Dataset):
    """``n`` fixed random uint8 clips ``(3, 2, size, size)`` with the item format of vidssl's datasets."""

    def __init__(self, n: int = 24, seed: int = 0, size: int = 16) -> None:
        shape = (n, 3, 2, size, size)
        self.clips = torch.from_numpy(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))
        self.epochs: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)

    def skipped(self) -> list[tuple[str, str]]:
        return [("broken.mp4", "truncated")]

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"video": self.clips[index], "index": index}


def tiny_config(out_dir: Path, **over: Any) -> dict[str, Any]:
    """A plain run-config dict for ``Tiny`` on CPU; ``over`` are dotted keys."""
    data: dict[str, Any] = {
        "method": "tiny", "seed": 0, "out_dir": str(out_dir), "device": "cpu",
        "data": {"batch_size": 4, "workers": 0},
        "optim": {"name": "sgd", "lr": 0.05},
        "schedule": {"name": "cosine", "steps": 6, "warmup_steps": 2},
        "log": {"every": 1, "tensorboard": False, "progress": False},
        "ckpt": {"every": 2, "keep": 3, "resume": "auto"},
    }
    for key, value in over.items():
        *parents, leaf = key.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return data


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> type[Tiny]:
    monkeypatch.setitem(METHODS, "tiny", Tiny)
    return Tiny


# ---- schedules ------------------------------------------------------------------------------------------

def test_cosine_with_warmup_closed_form() -> None:
    base, steps, warm = 0.4, 110, 10
    got = [lr_at(s, base, name="cosine", steps=steps, warmup_steps=warm) for s in range(steps)]
    assert got[0] == pytest.approx(0.04) and got[9] == pytest.approx(0.4)
    assert got[10] == pytest.approx(0.4)
    assert got[60] == pytest.approx(0.2)  # half-way through the cosine part
    assert got[35] == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 0.25)))
    assert all(a >= b for a, b in itertools.pairwise(got[10:]))


def test_step_and_constant_schedules() -> None:
    kw: dict[str, Any] = {"name": "step", "steps": 100, "warmup_steps": 4, "milestones": [30, 60], "gamma": 0.1}
    assert lr_at(1, 1.0, **kw) == pytest.approx(0.5)
    assert [lr_at(s, 1.0, **kw) for s in (4, 29, 30, 59, 60, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert lr_at(50, 0.3, name="constant", steps=100) == 0.3
    with pytest.raises(ValueError, match="unknown schedule 'linear'"):
        lr_at(0, 1.0, name="linear", steps=10)


# ---- optimisers -----------------------------------------------------------------------------------------

def test_lars_one_step_by_hand() -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
        model.bias.fill_(2.0)
    opt = build_optimizer(model, "lars", lr=0.1, weight_decay=0.5, momentum=0.9)
    assert isinstance(opt, LARS)
    model.weight.grad = torch.tensor([[1.0, 0.0]])
    model.bias.grad = torch.tensor([4.0])
    opt.step()
    # weight: d = g + 0.5 w = (2.5, 2); trust = 0.001 * 5 / ||d||; w -= 0.1 * trust * d
    d = np.array([2.5, 2.0])
    trust = 0.001 * 5 / np.linalg.norm(d)
    np.testing.assert_allclose(model.weight.detach().numpy()[0], np.array([3.0, 4.0]) - 0.1 * trust * d, rtol=1e-6)
    # bias: excluded from decay and adaptation -> plain SGD step
    assert model.bias.item() == pytest.approx(2.0 - 0.1 * 4.0)
    # second step: momentum buffer carries the first update direction
    model.weight.grad = torch.zeros(1, 2)
    model.bias.grad = torch.zeros(1)
    opt.step()
    assert model.bias.item() == pytest.approx(2.0 - 0.4 - 0.1 * 0.9 * 4.0)


def test_param_groups_skip_frozen_and_split_norm_bias() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    frozen = nn.Linear(4, 2).requires_grad_(False)
    model.add_module("momentum", frozen)
    groups = param_groups(model, weight_decay=0.1, exclude_norm_bias=True)
    decayed = {id(p) for p in groups[0]["params"]}
    plain = {id(p) for p in groups[1]["params"]}
    assert decayed == {id(model[0].weight), id(model[2].weight)}
    assert plain == {id(model[0].bias), id(model[1].weight), id(model[1].bias), id(model[2].bias)}
    assert groups[1]["weight_decay"] == 0.0 and groups[1]["lars"] is False
    sgd = build_optimizer(model, "sgd", lr=0.1, weight_decay=1e-4)
    assert len(sgd.param_groups) == 1 and len(sgd.param_groups[0]["params"]) == 6  # frozen ones left out
    adamw = build_optimizer(model, "adamw", lr=1e-3, weight_decay=0.05, betas=(0.8, 0.9))
    assert adamw.param_groups[0]["betas"] == (0.8, 0.9)
    with pytest.raises(ValueError, match="unknown optimiser 'adagrad'"):
        build_optimizer(model, "adagrad", lr=0.1)


# ---- configs --------------------------------------------------------------------------------------------

def test_float_fields_take_exponents_without_a_dot(tmp_path: Path) -> None:
    """YAML 1.1 reads ``1e-6`` (no dot) as a string: a float field still takes it, from a file or an override."""
    @dataclass
    class Rates:
        lr: float = 0.1
        name: str = "x"

    assert from_dict(Rates, apply_overrides({}, ["lr=1e-6"])).lr == 1e-6
    path = tmp_path / "c.yaml"
    path.write_text("lr: 5e-4\nname: 1e-3\n")
    rates = load_config(Rates, path)
    assert rates.lr == 5e-4 and rates.name == "1e-3"  # a string field keeps the string
    with pytest.raises(ConfigError, match=r"lr: expected a number, got 'fast'"):
        from_dict(Rates, {"lr": "fast"})


def test_config_errors_name_key_and_nearest(
    tiny: type[Tiny], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"'optim\.lrr'.*'lr'"):
        resolve_config(tiny_config(tmp_path, **{"optim.lrr": 0.1}))
    with pytest.raises(ConfigError, match=r"'model\.nosie'.*'noise'"):
        resolve_config(tiny_config(tmp_path, **{"model.nosie": 0.1}))
    with pytest.raises(ConfigError, match=r"unknown method 'tinyy'.*'tiny'"):
        resolve_config(tiny_config(tmp_path, method="tinyy"))
    with pytest.raises(ConfigError, match=r"model\.ema: expected a number"):
        resolve_config(tiny_config(tmp_path, **{"model.ema": "high"}))
    with pytest.raises(ConfigError, match=r"optim\.name: 'lamb' is not one of"):
        resolve_config(tiny_config(tmp_path, **{"optim.name": "lamb"}))
    with pytest.raises(ConfigError, match=r"data\.batch_size: must be at least 1"):
        resolve_config(tiny_config(tmp_path, **{"data.batch_size": 0}))
    @dataclass
    class Checked(TinyConfig):
        def __post_init__(self) -> None:
            if self.ema >= 1:
                raise ValueError(f"tiny: ema must be below 1, got {self.ema}")

    monkeypatch.setattr(Tiny, "Config", Checked)
    with pytest.raises(ConfigError, match=r"model: tiny: ema must be below 1, got 2\.0"):
        resolve_config(tiny_config(tmp_path, **{"model.ema": 2}))
    monkeypatch.setattr(Tiny, "Config", TinyConfig)
    cfg, model_cfg = resolve_config(tiny_config(tmp_path))
    assert cfg.model == {"noise": 0.1, "nan_at": -1, "ema": 0.9} and model_cfg == TinyConfig()


def test_epoch_indices_distributed_semantics() -> None:
    shares = [epoch_indices(10, seed=3, epoch=1, rank=r, world=4) for r in range(4)]
    assert all(len(s) == 3 for s in shares)  # padded: ceil(10 / 4)
    flat = np.concatenate(shares)
    assert set(flat.tolist()) == set(range(10)) and len(flat) == 12
    assert set(shares[0].tolist()).isdisjoint(shares[1].tolist())
    one = epoch_indices(10, seed=3, epoch=1, rank=0, world=1)
    assert sorted(one.tolist()) == list(range(10))
    assert not np.array_equal(one, epoch_indices(10, seed=3, epoch=2, rank=0, world=1))
    np.testing.assert_array_equal(one, epoch_indices(10, seed=3, epoch=1, rank=0, world=1))


# ---- checkpoints ----------------------------------------------------------------------------------------

def test_atomic_write_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = ckpt.save_checkpoint({"x": torch.ones(3)}, tmp_path, 1, keep=3)

    def broken_save(obj: Any, f: Any) -> None:
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint({"x": torch.zeros(3)}, tmp_path, 2, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == [good.name]  # no ckpt_2, no temporary file
    assert torch.equal(ckpt.load_checkpoint(good)["x"], torch.ones(3))


def test_keep_last_k_and_latest_complete(tmp_path: Path) -> None:
    for step in (5, 10, 15, 20, 25):
        ckpt.save_checkpoint({"step": step}, tmp_path, step, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["ckpt_00000020.pt", "ckpt_00000025.pt"]
    (tmp_path / ".ckpt_abc.tmp").write_bytes(b"interrupted")  # a crash mid-write
    ckpt.checkpoint_path(tmp_path, 30).write_bytes(b"garbage")  # a disk error
    with pytest.warns(UserWarning) as record:
        found = ckpt.load_latest(tmp_path)
    assert found is not None and found[1]["step"] == 25
    messages = " ".join(str(w.message) for w in record)
    assert ".ckpt_abc.tmp" in messages and "ckpt_00000030.pt" in messages
    assert ckpt.load_latest(tmp_path / "empty") is None
    with pytest.raises(ckpt.CheckpointError, match="ckpt_00000030.pt: cannot read"):
        ckpt.load_checkpoint(tmp_path / "ckpt_00000030.pt")


def test_rng_state_round_trip() -> None:
    import random

    state = ckpt.rng_state()
    first = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002 (the global generator is the point)
    saved = tmp_file_round_trip(state)
    ckpt.set_rng_state(saved)
    again = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def tmp_file_round_trip(obj: Any) -> Any:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ---- the loop -------------------------------------------------------------------------------------------

def test_lr_batch_scales_the_rate_linearly(tiny: type[Tiny], tmp_path: Path) -> None:
    """``optim.lr_batch``: lr 0.05 stated for a batch of 16 runs at 0.05 x (4 x 2) / 16 with batch 4 and 2
    micro-batches, in the optimiser and in the log; 0 leaves the rate alone."""
    cfg, _ = resolve_config(tiny_config(tmp_path / "run", **{"optim.lr_batch": 16, "optim.accum_steps": 2,
                                                              "schedule.steps": 2, "schedule.name": "constant",
                                                              "schedule.warmup_steps": 0}))
    assert scaled_lr(cfg.optim, 4) == pytest.approx(0.025)
    assert scaled_lr(replace(cfg.optim, lr_batch=0), 4) == 0.05
    train(cfg, dataset=ClipSet(n=10))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in records] == pytest.approx([0.025, 0.025])
    with pytest.raises(ConfigError, match=r"optim\.lr_batch"):
        resolve_config(tiny_config(tmp_path / "bad", **{"optim.lr_batch": -1}))


def test_loop_writes_run_dir_checkpoints_and_tensorboard(
    tiny: type[Tiny], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, _ = resolve_config(tiny_config(tmp_path / "run", **{"log.tensorboard": True, "log.every": 2}))
    data = ClipSet(n=10)
    result = train(cfg, dataset=data)
    run = tmp_path / "run"
    assert result.step == 6 and math.isfinite(result.last_loss)
    assert yaml.safe_load((run / "config.yaml").read_text()) == to_dict(cfg)
    env = json.loads((run / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["torchvision"] == torchvision.__version__
    assert {"decord", "kornia", "git_commit"} <= env.keys() and env["git_commit"]
    assert list((run / "tb").glob("events.out.tfevents.*"))
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4, 6]
    assert {"loss", "lr", "samples_per_s", "time/data_fraction", "method/feat_std"} <= records[0].keys()
    assert records[0]["lr"] == pytest.approx(lr_at(1, 0.05, name="cosine", steps=6, warmup_steps=2))
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == [f"ckpt_0000000{s}.pt" for s in (2, 4, 6)]
    state = ckpt.load_checkpoint(run / "checkpoints" / "ckpt_00000006.pt")
    assert state["step"] == 6 and state["backbone"]["num_layers"] == 3 and state["config"]["method"] == "tiny"
    assert state["encoder_input"] == "rgb"  # what `vidssl eval` feeds the encoder (MAST records "lab")
    # 10 samples, batch 4 -> 2 batches per epoch; 6 steps end exactly at the end of epoch 2
    assert state["data_position"] == [2, 2] and data.epochs == [0, 1, 2]
    out = capsys.readouterr().out
    assert "epoch 0: skipped broken.mp4: truncated" in out and "step 6" in out


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tiny: type[Tiny], tmp_path: Path) -> None:
    cfg, _ = resolve_config(tiny_config(tmp_path, **{"model.nan_at": 5, "schedule.steps": 10}))
    with pytest.raises(NonFiniteLoss, match="at step 6"):  # the 6th forward is the first NaN
        train(cfg, dataset=ClipSet())
    names = [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["ckpt_00000002.pt", "ckpt_00000004.pt"]
    state = ckpt.load_checkpoint(tmp_path / "checkpoints" / names[-1])
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_non_finite_weights_are_never_checkpointed(tiny: type[Tiny], tmp_path: Path) -> None:
    class Poisoned(Tiny):
        def after_step(self, step: int) -> None:
            super().after_step(step)
            if step == 2:  # the loss of step 3 was finite, the weights after it are not
                self.target.bias.data.fill_(float("inf"))

    METHODS["tiny"] = Poisoned
    cfg, _ = resolve_config(tiny_config(tmp_path, **{"ckpt.every": 1, "ckpt.keep": 0}))
    with pytest.raises(NonFiniteLoss, match=r"target\.bias is not finite after step 3"):
        train(cfg, dataset=ClipSet())
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "checkpoints")] == ["ckpt_00000001.pt", "ckpt_00000002.pt"]


def test_gradient_accumulation_matches_one_big_batch(tiny: type[Tiny], tmp_path: Path) -> None:
    # noise 0 and BN in eval mode: the loss is a mean over samples, so 2 x 4 accumulated == 1 x 8
    class EvalBN(Tiny):
        def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
            self.backbone.bn1.eval()
            return super().forward(batch)

    METHODS["tiny"] = EvalBN
    over = {"model.noise": 0.0, "schedule.steps": 1, "ckpt.resume": "none", "ckpt.every": 100}
    big, _ = resolve_config(tiny_config(tmp_path / "big", **over, **{"data.batch_size": 8}))
    acc, _ = resolve_config(tiny_config(tmp_path / "acc", **over, **{"optim.accum_steps": 2}))
    train(big, dataset=ClipSet(n=8))
    train(acc, dataset=ClipSet(n=8))
    a = ckpt.load_checkpoint(tmp_path / "big" / "checkpoints" / "ckpt_00000001.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "acc" / "checkpoints" / "ckpt_00000001.pt")["model"]
    assert not torch.equal(a["head.weight"], EvalBN(TinyConfig()).head.weight)  # it did train
    assert int(a["calls"]) == 1 and int(b["calls"]) == 2  # two forwards for one accumulated step
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def logged_losses(run_dir: Path) -> dict[int, float]:
    """Per-step loss from ``metrics.jsonl`` (a later record of a step, after a resume, wins)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records}


def test_resume_at_an_epoch_boundary_continues_exactly(
    tiny: type[Tiny], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 8 clips, batch 4: checkpoints every 2 steps fall exactly at epoch ends (data position (e, 2))
    over = {"schedule.name": "constant", "ckpt.keep": 0}
    full, _ = resolve_config(tiny_config(tmp_path / "full", **over))
    train(full, dataset=ClipSet(n=8))
    first, _ = resolve_config(tiny_config(tmp_path / "split", **over, **{"schedule.steps": 4}))
    train(first, dataset=ClipSet(n=8))
    state = ckpt.load_checkpoint(tmp_path / "split" / "checkpoints" / "ckpt_00000004.pt")
    assert state["data_position"] == [1, 2]
    rest, _ = resolve_config(tiny_config(tmp_path / "split", **over))
    train(rest, dataset=ClipSet(n=8))
    out = capsys.readouterr().out
    assert "resumed from" in out and "schedule.steps: 4 -> 6" in out  # a changed config is reported
    want, got = logged_losses(tmp_path / "full"), logged_losses(tmp_path / "split")
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    assert got == pytest.approx(want, abs=1e-6)


def test_bf16_autocast_on_cpu_by_option(tiny: type[Tiny], tmp_path: Path) -> None:
    seen: list[torch.dtype] = []

    class Spy(Tiny):
        def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
            seen.append(self.backbone.conv1(batch["video"][:, :, 0].float()).dtype)
            return super().forward(batch)

    METHODS["tiny"] = Spy
    for amp in (True, False):
        cfg, _ = resolve_config(tiny_config(tmp_path / str(amp), **{"optim.amp": amp, "schedule.steps": 1}))
        assert math.isfinite(train(cfg, dataset=ClipSet(n=4)).last_loss)
    assert seen == [torch.bfloat16, torch.float32]


def test_channels_last_changes_the_layout_not_the_training(tiny: type[Tiny], tmp_path: Path) -> None:
    layouts: list[bool] = []

    class Spy(Tiny):
        def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
            layouts.append(self.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last))
            return super().forward(batch)

    METHODS["tiny"] = Spy
    losses = []
    for cl in (False, True):
        cfg, _ = resolve_config(tiny_config(tmp_path / str(cl), **{"optim.channels_last": cl, "schedule.steps": 3}))
        train(cfg, dataset=ClipSet(n=4))
        lines = (tmp_path / str(cl) / "metrics.jsonl").read_text().splitlines()
        losses.append([json.loads(line)["loss"] for line in lines if "loss" in line])
    assert layouts == [False] * 3 + [True] * 3
    assert np.allclose(losses[0], losses[1], rtol=1e-4, atol=1e-5)  # the same batches, the same arithmetic


def test_a_method_that_does_not_compile_is_named(tmp_path: Path) -> None:
    import torch._dynamo.exc as dynamo_exc

    class Untraceable(nn.Module):
        def forward(self, batch: Any) -> Any:
            raise dynamo_exc.Unsupported("a data-dependent branch")

    with pytest.raises(ConfigError, match=r"optim.compile: method 'odd' does not compile .*optim.compile=false"):
        train_module._forward(Untraceable(), {}, torch.device("cpu"), "odd", compiled=True)
    with pytest.raises(dynamo_exc.Unsupported):  # without the option the error is the method's own
        train_module._forward(Untraceable(), {}, torch.device("cpu"), "odd", compiled=False)


# ---- export and CLI -------------------------------------------------------------------------------------

def test_export_loads_into_torchvision_strict(tiny: type[Tiny], tmp_path: Path) -> None:
    cfg, _ = resolve_config(tiny_config(tmp_path / "run", **{"schedule.steps": 2}))
    train(cfg, dataset=ClipSet())
    ck = tmp_path / "run" / "checkpoints" / "ckpt_00000002.pt"
    assert cli.main(["export", "--checkpoint", str(ck), "--out", str(tmp_path / "enc.pth")]) == 0
    net = torchvision.models.resnet18()
    net.load_state_dict(torch.load(tmp_path / "enc.pth", weights_only=True), strict=True)
    trained = ckpt.load_checkpoint(ck)["encoder"]
    assert torch.equal(net.conv1.weight, trained["conv1.weight"])
    assert torch.equal(net.layer3[1].conv2.weight, trained["layer3.1.conv2.weight"])
    assert "layer4.0.conv1.weight" not in trained  # torchvision's layer4 comes from a seeded initialisation
    assert cli.main(["export", "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "x.pth")]) == 1


def test_export_of_a_reflect_padded_trunk_says_how_to_reproduce_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vidssl.models import build_backbone

    for name, noted in (("resnet18_s8_l3_reflect", True), ("resnet18_s8_l3", False)):
        net = build_backbone(name)
        ck = tmp_path / f"{name}.pt"
        torch.save({"encoder": net.state_dict(), "backbone": net.config}, ck)
        assert cli.main(["export", "--checkpoint", str(ck), "--out", str(tmp_path / f"{name}.pth")]) == 0
        err = capsys.readouterr().err
        assert (f"{name}.pt: the encoder was trained with reflect padding" in err) is noted, err
        assert ("padding_mode='reflect'" in err) is noted


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "train" in out and "export" in out
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    assert "KEY=VALUE" in capsys.readouterr().out


def test_cli_train_reports_config_and_data_errors(
    tiny: type[Tiny], tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_module, "build_dataset_for", lambda cfg, method: ClipSet())
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path / "run")))
    assert cli.main(["train", "--config", str(path), "optim.momentun=0.5"]) == 2
    assert "did you mean 'momentum'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")
    assert cli.main(["train", "--config", str(path), "data.batch_size=64"]) == 1  # 24 clips: no full batch
    assert "fewer than one batch of 64" in capsys.readouterr().err


def test_max_minutes_stops_with_a_checkpoint_that_resumes(
    tiny: type[Tiny], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = train(resolve_config(tiny_config(tmp_path / "whole", **{"ckpt.every": 100}))[0], dataset=ClipSet(n=10))
    cut = tiny_config(tmp_path / "cut", **{"ckpt.every": 100, "schedule.max_minutes": 1e-9})
    first = train(resolve_config(cut)[0], dataset=ClipSet(n=10))
    assert first.step == 1  # the limit is checked after each step: one step, then stop
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "cut" / "checkpoints")] == ["ckpt_00000001.pt"]
    assert "stopping at step 1 of 6: schedule.max_minutes=1e-09 reached" in capsys.readouterr().out
    cut["schedule"]["max_minutes"] = 0.0
    rest = train(resolve_config(cut)[0], dataset=ClipSet(n=10))
    assert rest.step == 6
    a = ckpt.load_checkpoint(tmp_path / "whole" / "checkpoints" / "ckpt_00000006.pt")["model"]
    b = ckpt.load_checkpoint(tmp_path / "cut" / "checkpoints" / "ckpt_00000006.pt")["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a) and whole.step == 6
    with pytest.raises(ConfigError, match="max_minutes"):
        resolve_config(tiny_config(tmp_path, **{"schedule.max_minutes": -1.0}))


def test_every_shipped_training_config_resolves_and_builds(tmp_path: Path) -> None:
    """configs/*.yaml and configs/cpu/*.yaml: every key is known and every method builds from them."""
    from PIL import Image

    from vidssl.engine.config import read_yaml
    from vidssl.methods import METHODS

    labelled = tmp_path / "images"  # a co-training stream's ImageFolder (the configs name the user's copy)
    for c in ("a", "b"):
        (labelled / c).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(labelled / c / "0.png")
    root = Path(__file__).resolve().parents[1] / "configs"
    paths = sorted(root.glob("*.yaml")) + sorted((root / "cpu").glob("*.yaml"))
    assert len(paths) >= 8
    for path in paths:
        # stage 2 starts from a stage-1 run's checkpoint, which a fresh checkout does not have
        overrides = ["model.init_from=null"] if path.stem == "mast_stage2" else []
        if "cotrain" in read_yaml(path):
            overrides.append(f"cotrain.source={labelled}")
        cfg, model_cfg = load_run_config(path, overrides)
        method = METHODS[cfg.method](model_cfg)
        assert sum(p.numel() for p in method.encoder().parameters()) > 0, path


# ---- the method protocol: the epoch hook and one setting for the input ------------------------------------

class EpochWatcher(Tiny):
    """Tiny that records every call of its epoch hook and the dataset pass it was given."""

    seen: ClassVar[list[tuple[int, int, int, list[int]]]] = []

    def on_epoch_start(self, ctx: EpochContext) -> None:
        indices = [int(i) for batch in ctx.batches(5) for i in batch["index"]]
        assert all(batch["video"].device == ctx.device for batch in ctx.batches(5))
        EpochWatcher.seen.append((ctx.epoch, ctx.start, ctx.step, indices))
        torch.rand(1, generator=ctx.generator)  # the hook's randomness: its own generator


def test_epoch_hook_runs_before_every_epoch_with_a_pass_over_the_dataset(
    tiny: type[Tiny], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(METHODS, "tiny", EpochWatcher)
    EpochWatcher.seen = []
    # 24 clips in batches of 4: 6 steps per epoch; 14 steps reach epoch 2
    const = {"schedule.name": "constant", "ckpt.every": 4}  # the same learning rates whatever schedule.steps says
    cfg, _ = resolve_config(tiny_config(tmp_path / "a", **{"schedule.steps": 14, **const}))
    train(cfg, dataset=ClipSet())
    assert [(e, s, k) for e, s, k, _ in EpochWatcher.seen] == [(0, 0, 0), (1, 0, 6), (2, 0, 12)]
    assert all(ix == list(range(24)) for *_, ix in EpochWatcher.seen)  # the whole dataset, in index order
    # a run stopped at step 8 (epoch 1, batch 2) resumes there: the hook runs again, told it resumes
    EpochWatcher.seen = []
    cfg8, _ = resolve_config(tiny_config(tmp_path / "b", **{"schedule.steps": 8, **const}))
    train(cfg8, dataset=ClipSet())
    EpochWatcher.seen = []
    cfg14, _ = resolve_config(tiny_config(tmp_path / "b", **{"schedule.steps": 14, **const}))
    train(cfg14, dataset=ClipSet())
    assert [(e, s, k) for e, s, k, _ in EpochWatcher.seen] == [(1, 2, 8), (2, 0, 12)]
    a = ckpt.load_checkpoint(tmp_path / "a" / "checkpoints" / "ckpt_00000014.pt")
    b = ckpt.load_checkpoint(tmp_path / "b" / "checkpoints" / "ckpt_00000014.pt")
    for key in ("head.weight", "backbone.conv1.weight"):  # the hook's pass moved no training randomness
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=1e-6)


def test_model_input_follows_data_kind(tmp_path: Path) -> None:
    base = {"method": "moco", "out_dir": str(tmp_path), "data": {"kind": "images"}}
    cfg, model_cfg = resolve_config(base)
    assert cfg.model["input"] == "images" and model_cfg.input == "images"  # one setting: data.kind
    cfg, _ = resolve_config({**base, "model": {"input": "images"}})  # saying it twice is fine when they agree
    with pytest.raises(ConfigError, match=r"model\.input: 'video' disagrees with data\.kind: 'images'"):
        resolve_config({**base, "model": {"input": "video"}})
    with pytest.raises(ConfigError, match=r"model\.input.*'images'.*\['video'\]"):
        resolve_config({"method": "crw", "out_dir": str(tmp_path), "data": {"kind": "images"}})  # a walk needs video


def test_a_methods_total_steps_follow_the_schedule(tmp_path: Path) -> None:
    """BYOL's momentum schedule runs over the run's steps unless its section says otherwise."""
    base = {"method": "byol", "out_dir": str(tmp_path), "data": {"kind": "images"}, "schedule": {"steps": 1234}}
    cfg, model_cfg = resolve_config(base)
    assert cfg.model["total_steps"] == model_cfg.total_steps == 1234
    _, model_cfg = resolve_config({**base, "model": {"total_steps": 99}})
    assert model_cfg.total_steps == 99
    assert "total_steps" not in resolve_config({**base, "method": "simclr"})[0].model  # only where a method has it


class Painter(Tiny):
    """Tiny with images at every checkpoint, drawn with the global generator (as augmentations are)."""

    def visuals(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        assert not self.training and not torch.is_grad_enabled()
        return {"noise": torch.rand(2, 3, 8, 8)}


def test_visuals_are_written_at_checkpoints_and_leave_the_run_unchanged(
    tiny: type[Tiny], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(METHODS, "painter", Painter)
    plain = tiny_config(tmp_path / "plain", **{"schedule.name": "constant"})
    painted = tiny_config(tmp_path / "painted", **{"schedule.name": "constant", "log.tensorboard": True})
    painted["method"] = "painter"
    train(resolve_config(plain)[0], dataset=ClipSet(n=8))
    train(resolve_config(painted)[0], dataset=ClipSet(n=8))
    written = sorted(p.name for p in (tmp_path / "painted" / "visuals" / "noise").glob("*.png"))
    assert written == ["00000002.png", "00000004.png", "00000006.png"]
    assert not (tmp_path / "plain" / "visuals").exists()
    # the images' randomness comes from a forked generator: the training draws are those of the plain run
    assert logged_losses(tmp_path / "painted") == pytest.approx(logged_losses(tmp_path / "plain"), abs=0)
