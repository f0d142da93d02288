"""CorrFlow: quantisation, the local copy against a dense reference, channel dropout, scheduled sampling,
the centroid tool, and the method's losses."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vidssl.methods.corrflow import CorrFlow, CorrFlowConfig, drop_rgb_channels, teacher_forcing_prob
from vidssl.nn.colour import load_centroids, quantize_ab, rgb_to_lab
from vidssl.nn.local_attention import local_copy

ROOT = Path(__file__).resolve().parents[1]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("corrflow_centroids", ROOT / "tools" / "corrflow_centroids.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quantize_matches_nearest_centroid_reference() -> None:
    g = torch.Generator().manual_seed(0)
    ab = torch.randn(2, 2, 3, 5, 7, generator=g) * 40  # (B, 2, T, H, W)
    cents = torch.randn(16, 2, generator=g) * 40
    got = quantize_ab(ab, cents)
    assert got.shape == (2, 3, 5, 7) and got.dtype == torch.long
    pts = ab.permute(0, 2, 3, 4, 1).reshape(-1, 2).numpy()
    ref = np.array([min(range(16), key=lambda k: float(np.sum((p - cents[k].numpy()) ** 2))) for p in pts])
    np.testing.assert_array_equal(got.reshape(-1).numpy(), ref)
    with pytest.raises(ValueError, match="quantize_ab"):
        quantize_ab(ab[:, :1], cents)


def _dense_window_copy(ft: torch.Tensor, fr: torch.Tensor, lab: torch.Tensor, window: int, t: float) -> torch.Tensor:
    """Dense all-pairs affinity, then every reference position outside the window masked: the reference."""
    b, _, h, w = ft.shape
    r = window // 2
    logits = torch.einsum("bcp,bcq->bpq", ft.flatten(2), fr.flatten(2)) / t  # (B, hw, hw)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    near = ((ys[:, None] - ys[None]).abs() <= r) & ((xs[:, None] - xs[None]).abs() <= r)
    attn = torch.softmax(logits.masked_fill(~near, float("-inf")), dim=-1)
    return torch.einsum("bpq,bkq->bkp", attn, lab.flatten(2)).view(b, -1, h, w)


@pytest.mark.parametrize("window", [1, 3, 5])
def test_local_copy_equals_dense_reference_restricted_to_window(window: int) -> None:
    g = torch.Generator().manual_seed(1)
    ft, fr = torch.randn(2, 8, 6, 7, generator=g), torch.randn(2, 8, 6, 7, generator=g)
    lab = torch.softmax(torch.randn(2, 4, 6, 7, generator=g), dim=1)
    got = local_copy(ft, fr, lab, window, temperature=0.5)
    torch.testing.assert_close(got, _dense_window_copy(ft, fr, lab, window, 0.5), rtol=1e-5, atol=1e-6)
    # default temperature sqrt(C); a window wider than the frame is the dense copy
    torch.testing.assert_close(local_copy(ft, fr, lab, 15), _dense_window_copy(ft, fr, lab, 15, 8 ** 0.5))


@pytest.mark.parametrize("band", [1, 2, 5, None])
def test_local_copy_gradients_equal_dense_reference_for_any_band(band: int | None) -> None:
    g = torch.Generator().manual_seed(3)
    ft, fr = torch.randn(2, 8, 7, 9, generator=g), torch.randn(2, 8, 7, 9, generator=g)
    lab = torch.softmax(torch.randn(2, 4, 7, 9, generator=g), dim=1)
    weight = torch.randn(2, 4, 7, 9, generator=g)
    grads = []
    for fn in (lambda a, b, c: local_copy(a, b, c, 5, 0.7, band=band),
               lambda a, b, c: _dense_window_copy(a, b, c, 5, 0.7)):
        a, b_, c = (x.clone().requires_grad_() for x in (ft, fr, lab))
        out = fn(a, b_, c)
        (out * weight).sum().backward()
        grads.append((out.detach(), a.grad, b_.grad, c.grad))
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_local_copy_reproduces_labels_when_reference_is_target() -> None:
    h, w, k = 6, 5, 16
    feats = 30.0 * torch.eye(h * w).T.reshape(1, h * w, h, w)  # a distinct one-hot code per position
    labels = torch.randint(0, k, (1, h, w), generator=torch.Generator().manual_seed(2))
    onehot = F.one_hot(labels, k).permute(0, 3, 1, 2).float()
    out = local_copy(feats, feats, onehot, 13, temperature=1.0)
    torch.testing.assert_close(out, onehot, atol=1e-6, rtol=0)
    ce = F.nll_loss(torch.log(out + 1e-8), labels)
    assert ce < 1e-5  # the cross-entropy's minimum is 0
    with pytest.raises(ValueError, match="local_copy"):
        local_copy(feats, feats, onehot, 4)


def test_channel_dropout() -> None:
    x = torch.rand(4000, 3, 2, 3, 3) + 0.5  # strictly positive, so a dropped channel is exactly zero
    torch.testing.assert_close(drop_rgb_channels(x, 0.0), x, rtol=0, atol=0)
    y = drop_rgb_channels(x, 1.0, generator=torch.Generator().manual_seed(0))
    zero = (y == 0).all(dim=(2, 3, 4))  # (B, 3): channel dropped in every frame of the sample
    n = zero.sum(1)
    assert set(n.tolist()) == {1, 2}
    assert abs((n == 1).float().mean().item() - 0.5) < 0.05  # one or two channels with equal probability
    assert (zero.float().mean(0) - zero.float().mean()).abs().max() < 0.04  # every channel equally likely
    scale = (3.0 / (3.0 - n.float())).view(-1, 1, 1, 1, 1)
    keep = ~zero.view(-1, 3, 1, 1, 1).expand_as(x)
    torch.testing.assert_close(y[keep], (x * scale)[keep])
    rate = (drop_rgb_channels(x, 0.7, generator=torch.Generator().manual_seed(1)) != x).any(dim=(1, 2, 3, 4))
    assert abs(rate.float().mean().item() - 0.7) < 0.03
    with pytest.raises(ValueError, match="drop_rgb_channels"):
        drop_rgb_channels(torch.rand(2, 4, 3, 3), 0.5)


def test_teacher_forcing_schedule() -> None:
    assert teacher_forcing_prob(0, 1000) == pytest.approx(0.9)
    assert teacher_forcing_prob(500, 1000) == pytest.approx(0.75)
    assert teacher_forcing_prob(1000, 1000) == pytest.approx(0.6)
    assert teacher_forcing_prob(5000, 1000) == pytest.approx(0.6)  # held after the end
    assert teacher_forcing_prob(250, 1000, start=1.0, end=0.0) == pytest.approx(0.75)


def test_method_counts_steps_and_samples_own_predictions() -> None:
    torch.manual_seed(0)
    cfg = CorrFlowConfig(backbone="resnet18_s8_l3", crop_size=32, window=3, sampling_steps=10, jitter_p=0.0,
                         channel_drop_p=0.0, sampling_start=1.0, sampling_end=0.0)
    m = CorrFlow(cfg)
    video = torch.randint(0, 256, (2, 3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    _, met = m({"video": video})
    assert met["p_true"] == pytest.approx(1.0)
    m.after_step(4)
    assert int(m.step) == 5
    _, met = m({"video": video})
    assert met["p_true"] == pytest.approx(0.5)
    m.after_step(20)
    torch.manual_seed(1)
    own, _ = m({"video": video})  # p_true = 0: the second pair copies the model's own prediction
    m.step.zero_()
    truth, _ = m({"video": video})  # p_true = 1: the true labels of frame 1
    assert not torch.allclose(own, truth)
    m.eval()  # evaluation always feeds the true labels
    with torch.no_grad():
        torch.testing.assert_close(m({"video": video})[0], m({"video": video})[0])


def _planted_frames(root: Path, colours: list[tuple[int, int, int]]) -> None:
    rng = np.random.default_rng(0)
    for v in range(2):
        folder = root / f"video{v}"
        folder.mkdir(parents=True)
        for f in range(3):
            img = np.zeros((24, 24, 3), dtype=np.int16)
            for i, c in enumerate(colours):  # four vertical bands, one planted colour each, slight noise
                img[:, 6 * i:6 * i + 6] = c
            img = np.clip(img + rng.integers(-2, 3, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(folder / f"{f:05d}.png")


def test_centroid_tool_recovers_planted_colours(tmp_path: Path) -> None:
    tool = _tool()
    colours = [(200, 30, 30), (30, 160, 40), (40, 60, 210), (220, 200, 40)]
    _planted_frames(tmp_path / "data", colours)
    out = tmp_path / "c.json"
    assert tool.main([str(tmp_path / "data"), "--out", str(out), "--k", "4", "--size", "24", "--pixels", "300"]) == 0
    got = load_centroids(out)
    planted = rgb_to_lab(torch.tensor(colours, dtype=torch.float32).T[None] / 255)[0, 1:].T  # (4, 2)
    # each planted colour has its own centroid (bands are resampled, so edges blur them slightly)
    dist = torch.cdist(planted, got)
    assert sorted(dist.argmin(1).tolist()) == [0, 1, 2, 3]
    assert dist.min(1).values.max() < 6.0, dist
    assert json.loads(out.read_text())["sources"] == 2
    tool.main([str(tmp_path / "data"), "--out", str(tmp_path / "c.npy"), "--k", "4", "--size", "24"])
    assert load_centroids(tmp_path / "c.npy").shape == (4, 2)


def test_centroid_files_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_centroids(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"centroids": [[1, 2, 3]]}))
    with pytest.raises(ValueError, match="bad.json"):
        load_centroids(bad)
    good = tmp_path / "eight.npy"
    np.save(good, np.zeros((8, 2)))
    with pytest.raises(ValueError, match="eight.npy"):
        CorrFlow(CorrFlowConfig(centroids=str(good), backbone="resnet18_s8_l3"))  # 8 centroids, 16 clusters


def test_config_validation() -> None:
    for bad in (dict(window=4), dict(channel_drop_p=1.5), dict(input="images"), dict(num_frames=1)):
        with pytest.raises(ValueError, match="corrflow"):
            CorrFlowConfig(**bad)


def test_shipped_centroids_config() -> None:
    assert load_centroids(ROOT / "configs" / "corrflow_centroids.json").shape == (16, 2)  # what the config uses
