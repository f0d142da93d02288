"""Clip augmentation, colour spaces and CRW's patch grid, against closed forms written here."""

from __future__ import annotations

import math
from pathlib import Path

import kornia
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vidssl.data.augment import (
    ClipAugment,
    adjust_hue,
    byol_augment,
    crop_flip,
    moco_v2_augment,
    patch_grid,
    simclr_augment,
    to_float,
)
from vidssl.data.views import TwoViews
from vidssl.nn.colour import (
    imagenet_denormalize,
    imagenet_normalize,
    lab_to_rgb,
    mast_denormalize_lab,
    mast_normalize_lab,
    rgb_to_lab,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def still_clip(b: int = 2, t: int = 4, h: int = 32, w: int = 40, seed: int = 0) -> torch.Tensor:
    """(B, 3, T, H, W) whose T frames are identical copies of one random image."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 1, h, w, generator=g).expand(b, 3, t, h, w).contiguous()


def ramp_clip(h: int, w: int, t: int = 1) -> torch.Tensor:
    """(1, 3, T, H, W): channel 0 = column index, channel 1 = row index, channel 2 = 0 (all / 1000)."""
    cols = torch.arange(w, dtype=torch.float64).expand(h, w)
    rows = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    img = torch.stack([cols, rows, torch.zeros(h, w, dtype=torch.float64)]) / 1000.0
    return img[None, :, None].expand(1, 3, t, h, w).contiguous()


def identity_aug(h: int, w: int, **kw: object) -> ClipAugment:
    """Full-scale crop of the image's own aspect, to its own size."""
    return ClipAugment(size=(h, w), scale=(1.0, 1.0), ratio=(w / h, w / h), **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- ClipAugment


def test_clip_consistent_keeps_identical_frames_identical() -> None:
    x = still_clip()
    y = moco_v2_augment(24)(x, generator=torch.Generator().manual_seed(1))
    assert y.shape == (2, 3, 4, 24, 24)
    for t in range(1, 4):
        assert torch.equal(y[:, :, t], y[:, :, 0])
    assert not torch.equal(y[0], y[1])  # clips of a batch get their own parameters


def test_per_frame_draws_differ_across_frames() -> None:
    x = still_clip()
    aug = ClipAugment(size=24, color_jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=1.0, per_frame=True)
    y = aug(x, generator=torch.Generator().manual_seed(1))
    for t in range(1, 4):
        assert (y[:, :, t] - y[:, :, 0]).abs().amax() > 1e-2


def test_horizontal_flip_equals_torch_flip() -> None:
    x = still_clip(t=3)
    y = identity_aug(32, 40, hflip=1.0)(x)
    torch.testing.assert_close(y, torch.flip(x, dims=[-1]), atol=1e-6, rtol=0)


def test_no_jitter_full_scale_no_flip_is_identity() -> None:
    x = torch.rand(2, 3, 3, 32, 40)
    torch.testing.assert_close(identity_aug(32, 40, hflip=0.0)(x), x, atol=1e-6, rtol=0)


def test_crop_of_coordinate_ramp_is_the_resized_sub_window() -> None:
    h, w, size = 48, 64, (20, 24)
    x = ramp_clip(h, w, t=2)
    aug = ClipAugment(size=size, scale=(0.1, 0.6), hflip=0.0)
    for seed in range(5):
        params = aug.sample_params(1, 2, h, w, torch.Generator().manual_seed(seed))
        y = aug.apply_params(x, params)
        x0, y0, bw, bh = (int(v) for v in params.boxes[0])
        assert 0 <= x0 and x0 + bw <= w and 0 <= y0 and y0 + bh <= h
        # reference: slice the box, then torch's bilinear resize
        crop = x[:, :, 0, y0 : y0 + bh, x0 : x0 + bw]
        ref = F.interpolate(crop, size=size, mode="bilinear", align_corners=False)
        torch.testing.assert_close(y[:, :, 0], ref, atol=1e-9, rtol=0)
        cols, rows = y[0, 0, 0] * 1000, y[0, 1, 0] * 1000
        assert (cols.diff(dim=1) >= 0).all() and (rows.diff(dim=0) >= 0).all()  # monotone ramps
        assert cols.min() >= x0 - 1e-9 and cols.max() <= x0 + bw - 1 + 1e-9  # values within the crop
        assert rows.min() >= y0 - 1e-9 and rows.max() <= y0 + bh - 1 + 1e-9


def test_flip_mirrors_the_crop() -> None:
    x = ramp_clip(48, 64)
    aug = ClipAugment(size=16, scale=(0.2, 0.5), hflip=0.0)
    params = aug.sample_params(1, 1, 48, 64, torch.Generator().manual_seed(3))
    plain = aug.apply_params(x, params)
    params.flip[:] = True
    torch.testing.assert_close(aug.apply_params(x, params), plain.flip(-1))


def test_sampled_boxes_follow_scale_and_ratio() -> None:
    aug = ClipAugment(size=8, scale=(0.2, 0.5), ratio=(0.75, 1.25))
    p = aug.sample_params(500, 1, 200, 300, torch.Generator().manual_seed(0))
    x0, y0, bw, bh = p.boxes.unbind(1)
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x0 + bw <= 300).all() and (y0 + bh <= 200).all()
    frac = bw * bh / (200 * 300)
    assert frac.min() > 0.19 and frac.max() < 0.51  # up to integer rounding
    assert (bw / bh).min() > 0.74 and (bw / bh).max() < 1.26
    assert 0.4 < p.flip.double().mean() < 0.6


def test_brightness_jitter_is_a_per_frame_multiplication() -> None:
    x = torch.rand(3, 3, 2, 16, 16, dtype=torch.float64)
    aug = identity_aug(16, 16, hflip=0.0, color_jitter=(0.5, 0.0, 0.0, 0.0), jitter_p=1.0, per_frame=True)
    params = aug.sample_params(3, 2, 16, 16, torch.Generator().manual_seed(0))
    factor = params.jitter[:, 0].view(3, 2)  # (B, T), clip-major rows
    assert ((factor >= 0.5) & (factor <= 1.5)).all()
    ref = (x * factor[:, None, :, None, None]).clamp(0, 1)
    torch.testing.assert_close(aug.apply_params(x, params), ref)


def test_contrast_and_saturation_blend_with_gray() -> None:
    x = torch.rand(2, 3, 1, 8, 8, dtype=torch.float64)
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]  # (B, 1, T, H, W)
    for k, target in ((1, gray.mean(dim=(-2, -1), keepdim=True)), (2, gray)):
        cj = [0.0, 0.0, 0.0, 0.0]
        cj[k] = 0.6
        aug = identity_aug(8, 8, hflip=0.0, color_jitter=tuple(cj), jitter_p=1.0)
        params = aug.sample_params(2, 1, 8, 8, torch.Generator().manual_seed(0))
        f = params.jitter[:, k].view(2, 1, 1, 1, 1)
        torch.testing.assert_close(aug.apply_params(x, params), (f * x + (1 - f) * target).clamp(0, 1))


def test_hue_rotation_matches_kornia_hsv() -> None:
    x = torch.rand(4, 3, 16, 16, dtype=torch.float64)
    x[0, :, :4] = 0.5  # grey pixels keep their value
    f = torch.tensor([0.0, 0.1, -0.25, 0.5], dtype=torch.float64)
    ref = kornia.enhance.adjust_hue(x, f * 2 * math.pi)
    torch.testing.assert_close(adjust_hue(x, f), ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(adjust_hue(x, f)[0], x[0], atol=1e-12, rtol=0)
    red = torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(adjust_hue(red, torch.tensor([1 / 3])).flatten(), torch.tensor([0.0, 1.0, 0.0]))


def test_grayscale_uses_luma_weights_and_blur_keeps_constants() -> None:
    x = torch.rand(2, 3, 2, 16, 16)
    y = identity_aug(16, 16, hflip=0.0, grayscale_p=1.0)(x)
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    for c in range(3):
        torch.testing.assert_close(y[:, c], luma, atol=1e-6, rtol=0)
    const = torch.full((1, 3, 2, 16, 16), 0.3)
    blurred = identity_aug(16, 16, hflip=0.0, blur_p=1.0)(const)
    torch.testing.assert_close(blurred, const)
    noise = identity_aug(16, 16, hflip=0.0, blur_p=1.0, blur_sigma=(1.5, 2.0))(x)
    assert noise.std() < 0.6 * x.std()


def test_seeded_runs_repeat() -> None:
    x = still_clip(t=2)
    aug = moco_v2_augment(16)
    a = aug(x, generator=torch.Generator().manual_seed(7))
    b = aug(x, generator=torch.Generator().manual_seed(7))
    c = aug(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(5)
    d = aug(x)
    torch.manual_seed(5)
    assert torch.equal(d, aug(x))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_and_dtype_preserved(device: str, dtype: torch.dtype) -> None:
    x = torch.rand(2, 3, 2, 64, 64, dtype=dtype, device=device)
    y = moco_v2_augment(32)(x)
    assert y.dtype == dtype and y.device == x.device and y.shape == (2, 3, 2, 32, 32)
    assert 0 <= y.min() and y.max() <= 1
    p = patch_grid(x, patch=32, stride=16)
    assert p.dtype == dtype and p.device == x.device and p.shape == (2, 9, 3, 2, 32, 32)
    assert rgb_to_lab(x).dtype == dtype


def test_wrong_layout_or_dtype_raises_clearly() -> None:
    aug = crop_flip(16)
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        aug(torch.rand(2, 4, 32, 32, 3))  # channels-last
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        aug(torch.rand(3, 32, 32))
    with pytest.raises(TypeError, match="to_float"):
        aug(torch.zeros(1, 3, 2, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="patch_grid"):
        patch_grid(torch.rand(1, 3, 2, 32, 32), patch=64)
    with pytest.raises(ValueError, match="probability"):
        ClipAugment(size=8, hflip=1.5)
    with pytest.raises(ValueError, match="rgb_to_lab"):
        rgb_to_lab(torch.rand(1, 4, 8, 8))


def test_to_float() -> None:
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(to_float(x).flatten(), torch.tensor([0.0, 0.2, 1.0]))
    with pytest.raises(TypeError, match="uint8"):
        to_float(torch.rand(2))


# ---------------------------------------------------------------- colour


def cie_lab(rgb: tuple[float, float, float]) -> tuple[float, float, float]:
    """sRGB -> Lab by the textbook formulas: sRGB EOTF, the sRGB->XYZ matrix, D65 white, CIE f(t)."""

    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(c) for c in rgb)
    xyz = (
        0.4124 * r + 0.3576 * g + 0.1805 * b,
        0.2126 * r + 0.7152 * g + 0.0722 * b,
        0.0193 * r + 0.1192 * g + 0.9505 * b,
    )
    white = (0.95047, 1.0, 1.08883)
    d = 6 / 29

    def f(t: float) -> float:
        return t ** (1 / 3) if t > d**3 else t / (3 * d * d) + 4 / 29

    fx, fy, fz = (f(v / w) for v, w in zip(xyz, white, strict=True))
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def test_lab_of_known_colours() -> None:
    rgb = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.2, 0.6, 0.4]]).T[None]  # (1, 3, 4)
    lab = rgb_to_lab(rgb)[0].T
    # kornia's 6-digit sRGB->XYZ matrix maps white to a/b of about 5e-3, not exactly 0
    torch.testing.assert_close(lab[0], torch.tensor([100.0, 0.0, 0.0]), atol=1e-2, rtol=0)
    torch.testing.assert_close(lab[1], torch.tensor([0.0, 0.0, 0.0]), atol=1e-3, rtol=0)
    for i, colour in ((2, (1.0, 0.0, 0.0)), (3, (0.2, 0.6, 0.4))):
        # the matrix's 4-digit rounding moves a and b by a few hundredths
        torch.testing.assert_close(lab[i], torch.tensor(cie_lab(colour)), atol=0.05, rtol=0)
    assert abs(lab[2, 0].item() - 53.24) < 0.01  # pure red, the usual L* = 53.24


def test_lab_round_trip_on_clip() -> None:
    x = torch.rand(2, 3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    lab = rgb_to_lab(x)
    assert lab.shape == x.shape
    assert 0 <= lab[:, 0].min() and lab[:, 0].max() <= 100
    torch.testing.assert_close(lab_to_rgb(lab), x, atol=1e-4, rtol=0)


def test_mast_normalisation_and_inverse() -> None:
    lab = torch.tensor([[100.0, 0.0, 0.0], [0.0, 127.0, -127.0]]).T[None]  # (1, 3, 2)
    norm = mast_normalize_lab(lab)
    torch.testing.assert_close(norm[0].T, torch.tensor([[1.0, 0.0, 0.0], [-1.0, 1.0, -1.0]]))
    x = torch.randn(2, 3, 2, 4, 4) * 40
    torch.testing.assert_close(mast_denormalize_lab(mast_normalize_lab(x)), x, atol=1e-4, rtol=0)


def test_imagenet_normalize() -> None:
    x = torch.rand(2, 3, 2, 4, 4)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(imagenet_normalize(x), (x - mean) / std)
    torch.testing.assert_close(imagenet_denormalize(imagenet_normalize(x)), x)


# ---------------------------------------------------------------- patch grid


def test_patch_grid_without_jitter_is_exact_slices() -> None:
    x = torch.rand(2, 3, 2, 256, 256)
    p = patch_grid(x, jitter=None)
    assert p.shape == (2, 49, 3, 2, 64, 64)
    for i in range(7):
        for j in range(7):
            assert torch.equal(p[:, 7 * i + j], x[..., 32 * i : 32 * i + 64, 32 * j : 32 * j + 64])


def periodic_clip(t: int) -> torch.Tensor:
    """(1, 3, T, 128, 128) with period 32 in both axes, so every window at stride 32 is the same image."""
    g = torch.Generator().manual_seed(0)
    tile = torch.rand(3, 32, 32, generator=g)
    return tile.repeat(1, 4, 4)[None, :, None].expand(1, 3, t, 128, 128).contiguous()


def test_patch_grid_jitter_per_frame_and_per_patch() -> None:
    x = periodic_clip(t=3)
    plain = patch_grid(x, jitter=None)
    assert all(torch.equal(plain[:, k], plain[:, 0]) for k in range(9))  # the windows are all alike
    p = patch_grid(x, generator=torch.Generator().manual_seed(0))  # CRW: independent per patch and frame
    assert p.shape == (1, 9, 3, 3, 64, 64)
    for k in range(1, 9):
        assert not torch.allclose(p[:, k], p[:, 0])
    for t in range(1, 3):
        assert not torch.allclose(p[:, :, :, t], p[:, :, :, 0])
    shared = patch_grid(x, per_frame=False, generator=torch.Generator().manual_seed(0))
    for t in range(1, 3):
        assert torch.equal(shared[:, :, :, t], shared[:, :, :, 0])
    for k in range(1, 9):
        assert not torch.allclose(shared[:, k], shared[:, 0])


def test_patch_grid_jitter_stays_inside_its_window() -> None:
    x = ramp_clip(128, 160)
    p = patch_grid(x, generator=torch.Generator().manual_seed(0))  # (1, 3*4, 3, 1, 64, 64)
    assert p.shape[1] == 12
    cols, rows = p[0, :, 0, 0] * 1000, p[0, :, 1, 0] * 1000  # (N, 64, 64)
    for i in range(3):
        for j in range(4):
            c, r = cols[4 * i + j], rows[4 * i + j]
            assert 32 * j - 1e-9 <= c.min() and c.max() <= 32 * j + 63 + 1e-9
            assert 32 * i - 1e-9 <= r.min() and r.max() <= 32 * i + 63 + 1e-9
            span = (c.max() - c.min()) * (r.max() - r.min()) / (63 * 63)
            assert span < 0.95  # a strict sub-window (area scale 0.7 to 0.9), not the whole patch


def test_patch_grid_scale_in_crw_range() -> None:
    # A jittered patch covers sqrt(0.7 * r) .. sqrt(0.9 * r) of the window per side; check the mean area.
    x = ramp_clip(256, 256)
    p = patch_grid(x, generator=torch.Generator().manual_seed(1))
    cols, rows = p[0, :, 0, 0] * 1000, p[0, :, 1, 0] * 1000
    w = cols.amax(dim=(1, 2)) - cols.amin(dim=(1, 2)) + 1
    h = rows.amax(dim=(1, 2)) - rows.amin(dim=(1, 2)) + 1
    area = (w * h / 64**2).mean().item()
    assert 0.65 < area < 0.92, area
    assert math.isclose(p.shape[1], 49)


def test_real_davis_frame(shared_data: Path) -> None:
    path = shared_data / "davis" / "JPEGImages" / "480p" / "blackswan" / "00000.jpg"
    frame = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy())  # (H, W, 3) uint8
    clip = to_float(frame.permute(2, 0, 1)[None, :, None].expand(2, 3, 2, 480, 854))
    torch.testing.assert_close(lab_to_rgb(rgb_to_lab(clip)), clip, atol=1e-4, rtol=0)
    # float32 grid coordinates at 854 px wide put samples ~1e-4 px off the pixel centres
    torch.testing.assert_close(identity_aug(480, 854, hflip=0.0)(clip), clip, atol=1e-4, rtol=0)
    y = crop_flip(256)(clip, generator=torch.Generator().manual_seed(0))
    assert y.shape == (2, 3, 2, 256, 256) and torch.equal(y[:, :, 0], y[:, :, 1])
    p = patch_grid(y)
    assert p.shape == (2, 49, 3, 2, 64, 64)


def test_solarisation_inverts_the_bright_half_and_leaves_other_streams_alone() -> None:
    x = torch.linspace(0, 1, 11, dtype=torch.float64).view(1, 1, 1, 1, 11).expand(1, 3, 1, 1, 11).contiguous()
    out = identity_aug(1, 11, solarize_p=1.0, hflip=0.0)(x)
    want = torch.where(x >= 0.5, 1 - x, x)
    torch.testing.assert_close(out, want)
    # an augmentation without solarisation draws exactly what it drew before the option existed
    a = moco_v2_augment(16).sample_params(2, 4, 32, 40, torch.Generator().manual_seed(3))
    b = ClipAugment(size=16, scale=(0.2, 1.0), color_jitter=(0.4, 0.4, 0.4, 0.1), grayscale_p=0.2, blur_p=0.5,
                    solarize_p=0.0).sample_params(2, 4, 32, 40, torch.Generator().manual_seed(3))
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.jitter, b.jitter) and not b.solarize.any()


def test_simclr_and_byol_presets_are_the_papers() -> None:
    s = simclr_augment(32, strength=0.5, blur_p=0.0)
    assert s.color_jitter == (0.4, 0.4, 0.4, 0.1) and (s.jitter_p, s.grayscale_p, s.blur_p) == (0.8, 0.2, 0.0)
    assert simclr_augment(224).color_jitter == (0.8, 0.8, 0.8, 0.2)
    v1, v2 = byol_augment(224, 1), byol_augment(224, 2)
    assert v1.color_jitter == v2.color_jitter == (0.4, 0.4, 0.2, 0.1)
    assert (v1.blur_p, v1.solarize_p, v2.blur_p, v2.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    assert byol_augment(32, 2, blur=False).blur_p == 0.0
    with pytest.raises(ValueError, match="view is 1 or 2"):
        byol_augment(32, 3)


def test_two_views_with_a_second_augmentation_use_it_for_the_second_view() -> None:
    """An identity first view and a solarising second one: view 1 is the image, view 2 its solarisation."""
    img = (torch.rand(2, 3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    views = TwoViews(identity_aug(8, 8, hflip=0.0), "rgb", second=identity_aug(8, 8, hflip=0.0, solarize_p=1.0))
    a, b = views(img)
    x = img[:, :, 0].float() / 255
    torch.testing.assert_close(a, imagenet_normalize(x))
    torch.testing.assert_close(b, imagenet_normalize(torch.where(x >= 0.5, 1 - x, x)))


def test_augmentation_stays_in_the_clip_dtype_under_autocast() -> None:
    from vidssl.data.augment import moco_v2_augment

    aug = moco_v2_augment((32, 32))
    clip = torch.rand(3, 3, 2, 40, 48)
    params = aug.sample_params(3, 2, 40, 48, torch.Generator().manual_seed(0))
    plain = aug.apply_params(clip, params)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = aug.apply_params(clip, params)
    assert mixed.dtype == torch.float32 and torch.equal(mixed, plain)

