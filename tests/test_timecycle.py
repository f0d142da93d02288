"""TimeCycle: the spatial transformer, affinity, closed-form tracking, cycle and inlier terms, patch choice,
sampler, and that the method's gradients reach the encoder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidssl.methods.timecycle import (
    TimeCycle,
    TimeCycleConfig,
    affinity,
    cycle_loss,
    fit_rigid,
    inlier_score,
    patch_theta,
    theta_from_params,
    timecycle_frames,
    track_step,
)
from vidssl.nn.geometry import affine_crop as crop

H = 12  # frame feature map side
Q = 4  # patch side in cells


def _theta_at(y0: int, x0: int, h: int = H, q: int = Q) -> torch.Tensor:
    """The axis-aligned transform whose crop is exactly cells [y0, y0+q) x [x0, x0+q) of an h x h map."""
    tx = (2 * x0 + q) / h - 1  # centre of the window in normalised coordinates
    ty = (2 * y0 + q) / h - 1
    return theta_from_params(torch.tensor([[tx, ty, 0.0]]), q / h)


def test_theta_params_and_crop_is_an_exact_slice() -> None:
    theta = theta_from_params(torch.tensor([[0.1, -0.2, math.pi / 2]]), 0.5)
    torch.testing.assert_close(theta, torch.tensor([[[0.0, -0.5, 0.1], [0.5, 0.0, -0.2]]]), atol=1e-7, rtol=0)
    x = torch.randn(2, 3, H, H)
    torch.testing.assert_close(crop(x, _theta_at(3, 5).expand(2, 2, 3), Q), x[:, :, 3:3 + Q, 5:5 + Q])


def test_affinity_is_a_softmax_over_frame_positions() -> None:
    g = torch.Generator().manual_seed(0)
    query = F.normalize(torch.randn(2, 8, Q, Q, generator=g), dim=1)
    frame = F.normalize(torch.randn(2, 8, 5, 6, generator=g), dim=1)
    aff = affinity(query, frame, 0.1)
    assert aff.shape == (2, 30, Q, Q)
    torch.testing.assert_close(aff.sum(1), torch.ones(2, Q, Q))
    b, i, j, y, x = 1, 2, 3, 4, 1
    logits = (frame[b].flatten(1).T @ query[b, :, i, j]) / 0.1  # (30,)
    torch.testing.assert_close(aff[b, y * 6 + x, i, j], torch.softmax(logits, 0)[y * 6 + x])


def test_tracking_on_identical_frames_returns_identity_once_affinity_is_sharp() -> None:
    feat = F.normalize(torch.randn(1, 64, H, H, generator=torch.Generator().manual_seed(1)), dim=1)
    theta0 = _theta_at(4, 2)
    query = F.normalize(crop(feat, theta0, Q), dim=1)

    def regress(aff: torch.Tensor) -> torch.Tensor:
        return fit_rigid(aff, (H, H), Q / H)

    thetas = []
    for _ in range(5):  # forward over 3 identical frames, then back: a cycle of 5 steps
        theta, patch, _ = track_step(query, feat, regress, temperature=0.01)
        query = F.normalize(patch, dim=1)
        thetas.append(theta)
    for theta in thetas:  # every step is the identity motion: the patch stays where it started
        torch.testing.assert_close(theta, theta0, atol=1e-4, rtol=0)
    assert cycle_loss(thetas[-1], theta0) < 1e-7
    # a blunt affinity (high temperature) drifts towards the frame centre: the sharpness is what matters
    theta_blunt, _, _ = track_step(F.normalize(crop(feat, theta0, Q), dim=1), feat, regress, temperature=10.0)
    assert cycle_loss(theta_blunt, theta0) > 1e-3


def test_known_translation_recovered_from_hand_built_affinity() -> None:
    g = torch.Generator().manual_seed(2)
    stride, dy, dx = 8, 2, -3
    img_a = torch.rand(1, 3, H * stride, H * stride, generator=g)
    img_b = torch.roll(img_a, shifts=(dy * stride, dx * stride), dims=(2, 3))  # content moves by (dy, dx) cells
    y0, x0 = 3, 5
    theta0 = _theta_at(y0, x0)
    # hand-built affinity: patch cell (i, j) of frame A is at cell (y0 + i + dy, x0 + j + dx) of frame B
    aff = torch.zeros(1, H * H, Q, Q)
    for i in range(Q):
        for j in range(Q):
            aff[0, (y0 + i + dy) * H + (x0 + j + dx), i, j] = 1.0
    theta = fit_rigid(aff, (H, H), Q / H)
    expected = theta0.clone()
    expected[0, :, 2] += torch.tensor([2 * dx / H, 2 * dy / H])  # a cell is 2/H in normalised units
    torch.testing.assert_close(theta, expected, atol=1e-5, rtol=0)
    # the spatial transformer at the recovered transform cuts the same pixels out of frame B
    p = Q * stride
    torch.testing.assert_close(crop(img_b, theta, p), crop(img_a, theta0, p), atol=1e-5, rtol=0)
    # the same through track_step, with features whose affinity is that one-hot map (one code per cell)
    codes = torch.eye(H * H).T.reshape(1, H * H, H, H)
    codes_b = torch.roll(codes, shifts=(dy, dx), dims=(2, 3))
    theta_t, _, _ = track_step(crop(codes, theta0, Q), codes_b, lambda a: fit_rigid(a, (H, H), Q / H), 0.01)
    torch.testing.assert_close(theta_t, expected, atol=1e-5, rtol=0)


def test_fit_rigid_gradients_stay_finite_on_a_uniform_affinity() -> None:
    aff = torch.full((2, H * H, Q, Q), 1.0 / (H * H), requires_grad=True)  # every cell matches the centre
    theta = fit_rigid(aff, (H, H), Q / H)
    torch.testing.assert_close(theta, _theta_at((H - Q) // 2, (H - Q) // 2).expand(2, 2, 3), atol=1e-5, rtol=0)
    theta.sum().backward()
    assert aff.grad is not None and torch.isfinite(aff.grad).all()


def test_cycle_loss_closed_forms() -> None:
    theta = theta_from_params(torch.tensor([[0.2, -0.1, 0.3], [0.0, 0.5, -0.2]]), 1 / 3)
    assert cycle_loss(theta, theta) == 0
    shifted = theta.clone()
    shifted[:, :, 2] += torch.tensor([0.3, -0.4])
    torch.testing.assert_close(cycle_loss(shifted, theta), torch.tensor(0.25))  # every point moves by |d| = 0.5
    rotated = theta_from_params(torch.tensor([[0.2, -0.1, 0.4], [0.0, 0.5, -0.2]]), 1 / 3)
    # rotation by a about the origin of points with mean |p|^2 = m: |R p - p|^2 = 2 (1 - cos a) |p|^2
    lin = torch.linspace(-1, 1, 20)
    m = 2 * (lin ** 2).mean()
    want = 0.5 * 2 * (1 - math.cos(0.1)) * m / 9  # one of two samples rotated by 0.1, scale 1/3
    torch.testing.assert_close(cycle_loss(rotated, theta), want.float(), rtol=1e-4, atol=0)


def test_inlier_score() -> None:
    theta = _theta_at(2, 6)
    aff = torch.zeros(1, H * H, Q, Q)
    for i in range(Q):
        for j in range(Q):
            aff[0, (2 + i) * H + 6 + j, i, j] = 1.0  # every cell's mass exactly where theta maps it
    torch.testing.assert_close(inlier_score(aff, theta, (H, H)), torch.ones(1), atol=1e-4, rtol=0)
    uniform = torch.full((1, H * H, Q, Q), 1 / (H * H))
    torch.testing.assert_close(inlier_score(uniform, theta, (H, H)), torch.tensor([1 / (H * H)]), atol=1e-6, rtol=0)
    torch.testing.assert_close(inlier_score(aff, _theta_at(3, 6), (H, H)), torch.zeros(1), atol=1e-4, rtol=0)


def test_patch_theta_follows_motion() -> None:
    motion = torch.zeros(64, 90, 90)
    motion[:, 60:90, 0:30] = 1.0  # all motion in the bottom-left 3x3 cells of a 9x9 grid
    theta = patch_theta(motion, 1 / 3, grid=9, topk=1, max_angle=30.0, generator=torch.Generator().manual_seed(0))
    # that window is index (x, y) = (0, 6): centre (2 * 0 - 1) * 2/3, (2 * 1 - 1) * 2/3, jitter up to 1/12 * 4/3
    centre = theta[:, :, 2]
    assert (centre[:, 0] - (-2 / 3)).abs().max() <= 1 / 9 + 1e-6 and (centre[:, 1] - 2 / 3).abs().max() <= 1 / 9 + 1e-6
    det = torch.linalg.det(theta[:, :, :2])
    torch.testing.assert_close(det, torch.full((64,), 1 / 9))  # scale 1/3, a pure rotation
    angle = torch.atan2(theta[:, 1, 0], theta[:, 0, 0])
    assert angle.abs().max() <= math.radians(30) + 1e-6 and angle.std() > 0.1


def test_sampler() -> None:
    idx = timecycle_frames(100, np.random.default_rng(0), clip_len=4, gap=2, pred_distance=4)
    s = idx[0]
    np.testing.assert_array_equal(idx, s + np.array([0, 2, 4, 6, 15, 17]))
    assert idx.max() < 100
    short = timecycle_frames(10, np.random.default_rng(0), clip_len=4, gap=2, pred_distance=4)
    assert short.max() == 9  # clamped under the default short-video policy


@pytest.mark.parametrize("transform", ["learned", "procrustes"])
def test_gradients_reach_the_encoder(transform: str) -> None:
    torch.manual_seed(0)
    m = TimeCycle(TimeCycleConfig(crop_size=72, patch_size=24, regressor_kernel=2, transform=transform))  # type: ignore[arg-type]
    video = torch.randint(0, 256, (1, 3, 6, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    loss, metrics = m({"video": video})
    assert torch.isfinite(loss) and 0 <= float(metrics["inlier"]) <= 1
    loss.backward()
    grads = [p.grad for p in m.encoder().parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    assert m.encoder().layer3[1].conv2.weight.grad.abs().sum() > 0  # the last layer of the exported trunk


def test_config_and_input_errors() -> None:
    for bad in (dict(patch_size=300), dict(input="images"), dict(temperature=0.0)):
        with pytest.raises(ValueError, match="timecycle"):
            TimeCycleConfig(**bad)
    with pytest.raises(ValueError, match="at least 7"):
        TimeCycle(TimeCycleConfig(crop_size=96, patch_size=32))  # 4 patch cells: too few for the 4x4 regressor
    m = TimeCycle(TimeCycleConfig(crop_size=72, patch_size=24, regressor_kernel=2))
    with pytest.raises(ValueError, match="clip_len"):
        m({"video": torch.zeros(1, 3, 4, 48, 48, dtype=torch.uint8)})
