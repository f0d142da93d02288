"""MAST: the copy maths against dense references, channel dropout, stage 2's layout, the evaluation memory."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vidssl.data.label_io import davis_palette, read_indexed_png, write_indexed_png
from vidssl.data.views import VideoInfo
from vidssl.eval.davis import run
from vidssl.eval.mast_memory import MastMemoryConfig, mast_propagate, mast_references
from vidssl.methods.mast import (
    MAST,
    MASTConfig,
    MASTStage2,
    MASTStage2Config,
    drop_ab_channel,
    local_affinity_copy,
    memory_tuple,
)
from vidssl.nn.local_attention import Reference, local_attention, roi_dilation, roi_offsets


def dense_copy(feat_t: torch.Tensor, refs: list[tuple[torch.Tensor, torch.Tensor]], radius: int,
               scale: float) -> torch.Tensor:
    """Reference: the dense (hw x hw) affinity per reference, masked to |dy|, |dx| <= R, one joint softmax."""
    b, _, h, w = feat_t.shape
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([yy.flatten(), xx.flatten()], 1)  # (hw, 2)
    near = ((pos[:, None] - pos[None]).abs() <= radius).all(-1)  # (hw target, hw reference)
    logits, values = [], []
    for f, v in refs:
        a = torch.einsum("bci,bcj->bij", feat_t.flatten(2), f.flatten(2)) * scale
        logits.append(a.masked_fill(~near, float("-inf")))
        values.append(v.flatten(2))  # (B, V, hw)
    p = F.softmax(torch.cat(logits, 2), dim=2)  # (B, hw, refs * hw)
    return torch.einsum("bij,bvj->bvi", p, torch.cat(values, 2)).view(b, -1, h, w)


def distinct_features(h: int, w: int, sharp: float = 10.0) -> torch.Tensor:
    """One-hot per position, scaled: ``(1, h*w, h, w)``; a position matches only itself."""
    return sharp * torch.eye(h * w).view(h * w, h, w)[None]


def test_copy_reconstructs_values_when_reference_is_target() -> None:
    h, w, s = 6, 7, 4
    feat = distinct_features(h, w)
    values = torch.randn(1, 2, h * s, w * s)
    out = local_affinity_copy(feat, feat, values, radius=3, scale=1.0)  # logits 100 on the diagonal, 0 elsewhere
    torch.testing.assert_close(out, values[:, :, ::s, ::s], atol=1e-6, rtol=0)
    # softer affinities blend neighbours: the error grows as the sharpness falls
    soft = local_affinity_copy(feat, feat, values, radius=3, scale=0.02)
    assert (soft - values[:, :, ::s, ::s]).abs().max() > 0.1


def test_local_affinity_matches_dense_reference_in_window() -> None:
    g = torch.Generator().manual_seed(0)
    feat_t, feat_r = torch.randn(2, 2, 8, 9, 11, generator=g)
    values = torch.randn(2, 3, 9, 11, generator=g)
    for radius in (1, 3, 12):
        got = local_affinity_copy(feat_t, feat_r, values, radius)
        want = dense_copy(feat_t, [(feat_r, values)], radius, 8 ** -0.5)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_memory_copy_joint_softmax_and_bands() -> None:
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(4, 1, 6, 10, 9, generator=g)
    values = torch.randn(3, 1, 2, 10, 9, generator=g)
    refs = [(feats[i], values[i]) for i in range(3)]
    want = dense_copy(feats[3], refs, 2, 0.3)
    for tile in (None, 1, 3, 100):  # the bands change memory, not the result
        got = local_attention(feats[3], [(f, v, None) for f, v in refs], 2, 0.3, tile=tile)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # a zero ROI offset is the local window read bilinearly at whole cells: the same copy
    zero = torch.zeros(1, 2, 10, 9)
    got = local_attention(feats[3], [(f, v, zero) for f, v in refs], 2, 0.3, tile=4)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def roi_copy_reference(feat_t: torch.Tensor, refs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]],
                       radius: int, scale: float, outside: str) -> torch.Tensor:
    """Reference: every window position of every target read by its own bilinear ``grid_sample`` (zero padding,
    ``align_corners=True``, as MAST's ``deform_im2col``) at ``p + offset(p) + d``; values at ``p + value_offset(p)
    + d``; one softmax over all references' windows; ``exclude`` drops positions outside the frame."""
    b, _, h, w = feat_t.shape
    d = torch.arange(-radius, radius + 1, dtype=feat_t.dtype)
    dy, dx = torch.meshgrid(d, d, indexing="ij")  # window order (dy, dx)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=feat_t.dtype), torch.arange(w, dtype=feat_t.dtype), indexing="ij")

    def read(x: torch.Tensor, off: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # -> (B, X, hw, P^2), inside
        px = xx.reshape(1, -1, 1) + off[:, 0].reshape(b, -1, 1) + dx.reshape(1, 1, -1)
        py = yy.reshape(1, -1, 1) + off[:, 1].reshape(b, -1, 1) + dy.reshape(1, 1, -1)
        grid = torch.stack([px * 2 / (w - 1) - 1, py * 2 / (h - 1) - 1], -1)
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        return out, (px >= 0) & (px <= w - 1) & (py >= 0) & (py <= h - 1)

    logits, values = [], []
    for f, v, off, voff in refs:
        keys, inside = read(f, off)
        z = torch.einsum("bci,bcik->bik", feat_t.flatten(2), keys) * scale
        # excluded: the most negative logit (a target whose every window lies outside shares its weight evenly)
        logits.append(z.masked_fill(~inside, torch.finfo(z.dtype).min) if outside == "exclude" else z)
        values.append(read(v, voff)[0])
    p = F.softmax(torch.cat(logits, 2), dim=2)
    return torch.einsum("bik,bvik->bvi", p, torch.cat(values, 3)).view(b, -1, h, w)


@pytest.mark.parametrize("outside", ["zero", "exclude"])
def test_roi_windows_equal_a_bilinear_read_per_window_position(outside: str) -> None:
    """ROI windows are read as the blend of one window of whole cells (``local_attention``'s matrix product
    and gather): the same copy, and the same gradients (features and offsets), as a bilinear read of every
    window position; offsets fractional, some far outside the frame, values read around another offset."""
    g = torch.Generator().manual_seed(3)
    h, w, c, k, radius = 9, 13, 5, 3, 2
    feat_t = torch.randn(1, c, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    feats = [torch.randn(1, c, h, w, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    vals = [torch.randn(1, k, h, w, generator=g, dtype=torch.float64) for _ in range(2)]
    offs = [(torch.randn(1, 2, h, w, generator=g, dtype=torch.float64) * 3).requires_grad_() for _ in range(2)]
    with torch.no_grad():
        offs[1][0, :, :2, :3] = torch.tensor([40.0, -30.0], dtype=torch.float64).view(2, 1, 1)  # all outside
    refs = [(feats[0], vals[0], offs[0], offs[1]), (feats[1], vals[1], offs[1], offs[1])]
    want = roi_copy_reference(feat_t, refs, radius, 0.7, outside)
    for tile in (None, 4):
        got = local_attention(feat_t, [Reference(f, v, o, vo) for f, v, o, vo in refs], radius, 0.7, tile, outside)
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
    weight = torch.randn(want.shape, generator=g, dtype=torch.float64)
    inputs = [feat_t, *feats, *offs]
    grads_want = torch.autograd.grad((want * weight).sum(), inputs)
    got = local_attention(feat_t, [Reference(f, v, o, vo) for f, v, o, vo in refs], radius, 0.7, 4, outside)
    for a, e in zip(torch.autograd.grad((got * weight).sum(), inputs), grads_want, strict=True):
        torch.testing.assert_close(a, e, atol=1e-8, rtol=0)
    with pytest.raises(ValueError, match="not finite"):
        local_attention(feat_t, [(feats[0], vals[0], offs[0] * float("nan"))], radius, 0.7)


def test_drop_ab_channel_zeroes_one_chroma_channel_in_every_frame() -> None:
    lab = torch.randn(4, 3, 3, 5, 5) + 2.0  # no zeros by chance
    channel = torch.tensor([1, 2, 2, 1])
    out = drop_ab_channel(lab, channel)
    for b, ch in enumerate(channel.tolist()):
        assert torch.equal(out[b, ch], torch.zeros(3, 5, 5))  # every frame of the sample
        kept = [c for c in range(3) if c != ch]
        torch.testing.assert_close(out[b, kept], lab[b, kept] * 1.5)
    with pytest.raises(ValueError, match="channel"):
        drop_ab_channel(lab, torch.tensor([0, 1, 2, 1]))


def test_stage1_forward_target_is_the_dropped_channel() -> None:
    torch.manual_seed(0)
    model = MAST(MASTConfig(crop_size=32, radius=2))
    video = torch.randint(0, 256, (2, 3, 2, 40, 40), dtype=torch.uint8)
    loss, metrics = model({"video": video})
    assert loss.dim() == 0 and torch.isfinite(loss) and float(metrics["l1"]) > 0
    idx = model.sampler()(VideoInfo(100), np.random.default_rng(0))
    assert idx.shape == (2,) and idx[1] - idx[0] in (2, 5, 8)
    with pytest.raises(ValueError, match="reference and a target"):
        model({"video": video[:, :, :1]})
    with pytest.raises(ValueError, match="gaps"):
        MASTConfig(gaps=(2, 5), gap_probs=(1.0,))


def test_stage2_sampler_layout_and_memory_shapes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        idx = memory_tuple(100, rng)
        start = idx[0]
        assert idx.tolist() == [start + o for o in (0, 5, 15, 17, 19, 20)]  # {0, 5}, t-5, t-3, t-1, target t
    assert memory_tuple(8, rng, target_offset=20).max() == 7  # short video: the default "repeat" policy
    with pytest.raises(ValueError, match="must increase"):
        memory_tuple(100, rng, long_term=(0, 5), short_term=(16, 1), target_offset=20)
    torch.manual_seed(0)
    cfg = MASTStage2Config(crop_size=32, radius=2, long_term=(0, 2), short_term=(3, 1), target_offset=8,
                           roi_after=3, search_radius=2)
    model = MASTStage2(cfg)
    assert model.reference_distances() == [8, 6, 3, 1]  # frames 0 and 2 use the ROI (more than 3 back)
    idx = model.sampler()(VideoInfo(12), rng)
    assert idx.shape == (5,) and (idx - idx[0]).tolist() == [0, 2, 5, 7, 8]
    feats = torch.randn(2, 5, 16, 8, 8)
    assert model.copy(feats, torch.randn(2, 1, 5, 32, 32)).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="frames"):
        model.copy(feats[:, :3], torch.randn(2, 1, 3, 32, 32))


def test_stage2_init_from_stage1_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    stage1 = MAST(MASTConfig(crop_size=32))
    path = tmp_path / "step.pt"
    torch.save({"encoder": stage1.backbone.state_dict(), "backbone": stage1.backbone.config, "step": 1}, path)
    torch.manual_seed(1)
    stage2 = MASTStage2(MASTStage2Config(init_from=str(path)))
    for (n, a), b in zip(stage1.backbone.state_dict().items(), stage2.backbone.state_dict().values(), strict=True):
        assert torch.equal(a, b), n
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        MASTStage2(MASTStage2Config(init_from=str(tmp_path / "missing.pt")))


def test_mast_references_every_target() -> None:
    # benchmark.py (--ref 0), predicting frame i + 1:
    # sorted(set([x for x in [0, 5] if x <= i] + [x for x in range(i, i - 6, -2) if x > 0]))
    def authors(t: int) -> list[int]:
        i = t - 1
        return sorted({x for x in (0, 5) if x <= i} | {x for x in range(i, i - 6, -2) if x > 0})

    expected = {1: [0], 2: [0, 1], 3: [0, 2], 4: [0, 1, 3], 5: [0, 2, 4], 6: [0, 1, 3, 5], 7: [0, 2, 4, 5, 6],
                8: [0, 3, 5, 7], 9: [0, 4, 5, 6, 8], 10: [0, 5, 7, 9], 30: [0, 5, 25, 27, 29]}
    for t, refs in expected.items():
        assert mast_references(t) == refs == authors(t), t
    for t in range(1, 60):
        assert mast_references(t) == authors(t)
    with pytest.raises(ValueError):
        mast_references(0)
    assert [roi_dilation(d) for d in (16, 29, 30, 44, 45, 200)] == [2, 2, 3, 3, 4, 4]


def roi_offsets_reference(feat_t: torch.Tensor, feat_r: torch.Tensor, dilation: int, search_radius: int,
                          scale: float, outside: str) -> torch.Tensor:
    """Reference: one product map per dilated displacement of the zero-padded reference (MAST's dilated
    ``SpatialCorrelationSampler``), a softmax over displacements, the weighted mean displacement (dx, dy)."""
    h, w = feat_t.shape[-2:]
    reach = search_radius * dilation
    pad = F.pad(feat_r, (reach,) * 4)
    inside = F.pad(torch.ones(1, h, w, dtype=torch.bool), (reach,) * 4)
    zs, disp = [], []
    for iy in range(-search_radius, search_radius + 1):
        for ix in range(-search_radius, search_radius + 1):
            oy, ox = reach + iy * dilation, reach + ix * dilation
            z = (feat_t * pad[:, :, oy:oy + h, ox:ox + w]).sum(1) * scale
            zs.append(z if outside == "zero" else z.masked_fill(~inside[:, oy:oy + h, ox:ox + w], float("-inf")))
            disp.append((ix * dilation, iy * dilation))
    weights = F.softmax(torch.stack(zs, 1), 1)
    return torch.einsum("bnhw,nk->bkhw", weights, torch.tensor(disp, dtype=feat_t.dtype))


@pytest.mark.parametrize("outside", ["zero", "exclude"])
def test_roi_search_equals_one_product_map_per_displacement(outside: str) -> None:
    g = torch.Generator().manual_seed(4)
    for h, w, dilation, s in ((20, 37, 1, 3), (20, 37, 3, 4), (9, 50, 2, 12)):  # reach past the frame, many tiles
        feat_t = torch.randn(2, 6, h, w, generator=g, dtype=torch.float64, requires_grad=True)
        feat_r = torch.randn(2, 6, h, w, generator=g, dtype=torch.float64, requires_grad=True)
        want = roi_offsets_reference(feat_t, feat_r, dilation, s, 0.4, outside)
        got = roi_offsets(feat_t, feat_r, dilation, s, 0.4, outside)
        torch.testing.assert_close(got, want, atol=1e-10, rtol=0)
        weight = torch.randn(want.shape, generator=g, dtype=torch.float64)
        for a, e in zip(torch.autograd.grad((got * weight).sum(), [feat_t, feat_r]),
                        torch.autograd.grad((want * weight).sum(), [feat_t, feat_r]), strict=True):
            torch.testing.assert_close(a, e, atol=1e-9, rtol=0)


def test_roi_search_finds_a_displaced_patch() -> None:
    g = torch.Generator().manual_seed(0)
    h, w, dy, dx = 40, 40, 12, -10  # beyond any local window, inside the coarse reach 12 * 2
    big = F.normalize(torch.randn(1, 32, h + 2 * 24, w + 2 * 24, generator=g), dim=1) * 6.0
    feat_t = big[:, :, 24:24 + h, 24:24 + w]
    feat_r = big[:, :, 24 - dy:24 - dy + h, 24 - dx:24 - dx + w]  # content at p in t is at p + (dy, dx) in r
    offset = roi_offsets(feat_t, feat_r, dilation=2, search_radius=12, scale=1.0)  # (1, 2, h, w): (dx, dy)
    centre = offset[0, :, 12:28, 12:28]
    torch.testing.assert_close(centre[0], torch.full_like(centre[0], float(dx)), atol=0.05, rtol=0)
    torch.testing.assert_close(centre[1], torch.full_like(centre[1], float(dy)), atol=0.05, rtol=0)
    # the fine window around the ROI copies the displaced values; a local window (radius 3) cannot
    values = torch.randn(1, 1, h, w, generator=g)
    roi = local_attention(feat_t, [(feat_r, values, offset)], radius=3, scale=1.0, tile=8)
    want = values[0, 0, 12 + dy:28 + dy, 12 + dx:28 + dx]
    torch.testing.assert_close(roi[0, 0, 12:28, 12:28], want, atol=5e-3, rtol=0)
    local = local_attention(feat_t, [(feat_r, values, None)], radius=3, scale=1.0)
    assert (local[0, 0, 12:28, 12:28] - want).abs().max() > 0.5


def _moving_square(t: int, h: int = 12, size: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """A 6x6 object at rows 3..8 moving 1 cell per frame right over a flat background: features ``(C, h, 32)`` with
    one channel per object cell and one for the background, and the ``(h, 32)`` mask."""
    c = size * size + 1
    feats = torch.zeros(c, h, 32)
    feats[-1] = 1.0
    mask = torch.zeros(h, 32, dtype=torch.long)
    x0 = 2 + t
    feats[:, 3:3 + size, x0:x0 + size] = torch.eye(c)[:-1].T.reshape(c, size, size)
    mask[3:3 + size, x0:x0 + size] = 1
    return feats, mask


@pytest.mark.slow
def test_mast_propagate_tracks_a_moving_object_frame_by_frame() -> None:
    """vidssl's options (``cells``, ``exclude``, ``own``): the object's labels follow it for 20 frames (frame 0
    enters the memory through the ROI once it is 16 frames back); every frame is encoded exactly once."""
    s, n = 4, 20
    encoded: list[int] = []

    def encode(t: int) -> torch.Tensor:
        encoded.append(t)
        return _moving_square(t)[0]

    first = _moving_square(0)[1].repeat_interleave(s, 0).repeat_interleave(s, 1)  # (H, W)
    cfg = MastMemoryConfig(radius=6, temperature=0.05, tile=6, outside="exclude", memory_labels="cells",
                           roi_values="own")
    maps = list(mast_propagate(encode, first, n, s, cfg))
    assert encoded == list(range(n))
    for t, labels in enumerate(maps):
        assert labels.shape == (12 * s, 32 * s)
        assert torch.equal(labels[s // 2::s, s // 2::s], _moving_square(t)[1]), t  # read at the cells' centres


def test_the_codes_memory_labels_erode_the_top_left_corner() -> None:
    """The released code's memory (``memory_labels: pixels``): every 4th pixel of the bilinearly upsampled arg-max
    reads 0.39 of its own cell and 0.61 of the cells above and to the left, so each frame the object's top-left
    corner cell leaves the memory (here frame 0's whole object, still in it, restores the rest); ``cells`` keeps
    the object whole."""
    s = 4
    first = _moving_square(0)[1].repeat_interleave(s, 0).repeat_interleave(s, 1)

    def memory(labels: str, n: int) -> list[torch.Tensor]:
        cfg = MastMemoryConfig(radius=3, temperature=0.05, tile=8, memory_labels=labels)  # type: ignore[arg-type]
        return [m[::s, ::s] if labels == "pixels" else m[s // 2::s, s // 2::s]
                for m in mast_propagate(lambda t: _moving_square(t)[0], first, n, s, cfg)]

    pixels, cells = memory("pixels", 4), memory("cells", 4)
    for t in range(4):
        assert torch.equal(cells[t], _moving_square(t)[1]), t
    assert torch.equal(pixels[0], _moving_square(0)[1])  # the ground truth at stride 4 is the cells themselves
    for t in range(1, 4):  # exactly the top-left corner cell: row 3, column 2 + t
        lost = _moving_square(t)[1] - pixels[t]
        assert lost.min() == 0 and lost.nonzero().tolist() == [[3, 2 + t]], t


def test_eval_davis_mast_mode_end_to_end(tmp_path: Path) -> None:
    """``vidssl eval davis --config configs/eval/mast.yaml``: a tiny DAVIS folder, a random Lab encoder; the
    predictions are written at the ground-truth size and scored (frame 0 is the ground truth itself)."""
    root, seq, n = tmp_path / "davis", "square", 4
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text(f"{seq}\n")
    rng = np.random.default_rng(0)
    for t in range(n):
        image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        mask = np.zeros((40, 48), dtype=np.uint8)
        mask[10:26, 8 + t:24 + t] = 1
        (root / "JPEGImages" / "480p" / seq).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "JPEGImages" / "480p" / seq / f"{t:05d}.jpg")
        write_indexed_png(root / "Annotations" / "480p" / seq / f"{t:05d}.png", mask, davis_palette())
    out = tmp_path / "out"
    args = argparse.Namespace(
        davis_root=root, out=out, encoder="random", backbone="resnet18_s8_l3",
        config=Path(__file__).resolve().parents[1] / "configs" / "eval" / "mast.yaml", overrides=["radius=3", "tile=4"],
        sequences=None, resolution="480p", overlays=False, overlay_video=False, device="cpu", seed=0, input="auto",
        layers=None, stride=None,
    )
    assert run(args) == 0
    first = read_indexed_png(out / seq / "00000.png")
    assert np.array_equal(first, read_indexed_png(root / "Annotations" / "480p" / seq / "00000.png"))
    for t in range(n):
        assert read_indexed_png(out / seq / f"{t:05d}.png").shape == (40, 48)
    assert (out / "propagation.yaml").read_text().startswith("mode: mast")


def test_memory_mode_loads_its_encoder_like_every_evaluation(tmp_path: Path) -> None:
    """MAST's memory reads its encoder through the encoder record: ``--backbone`` and ``--layers`` count, and the
    encoder is fed Lab."""
    from vidssl.eval.encoders import FrameEncoder
    from vidssl.eval.modes import preset_encoder
    from vidssl.models import build_backbone, encoder_entries
    from vidssl.nn.colour import normalize_input

    def build_lab_encoder(spec: str, backbone: str | None = None, layers: int | None = None) -> FrameEncoder:
        return preset_encoder(MastMemoryConfig(), spec, backbone=backbone, layers=layers)

    assert build_lab_encoder("random").stride == 4  # the mode's default trunk: resnet18_mast
    assert build_lab_encoder("random", backbone="resnet18_s8_l3").stride == 8
    torch.manual_seed(0)
    net = build_backbone("resnet18_mast").eval()
    path = tmp_path / "mast.pt"
    torch.save({**encoder_entries(net, "lab"), "config": {"method": "mast"}}, path)
    frame = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    full, short = build_lab_encoder(str(path)), build_lab_encoder(str(path), layers=3)
    assert full.encode is not None and short.encode is not None
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        torch.testing.assert_close(full.encode(frame), net.forward_features(normalize_input(x, "lab"))[0])
    assert full.encode(frame).shape[0] == 512 and short.encode(frame).shape[0] == 256


def test_mast_memory_runs_where_the_frame_is_no_multiple_of_the_stride() -> None:
    """854 px at stride 4 gives a 214-cell grid whose last cell is partial: both ``memory_labels`` read it (``cells``
    at its last pixel), and a grid that is not the ceiling one is a ValueError that says so."""
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 8, 3, 4, generator=gen)  # ceil(10 / 4) x ceil(13 / 4)
    first = torch.zeros(10, 13, dtype=torch.long)
    first[2:8, 3:12] = 1
    for labels in ("pixels", "cells"):
        cfg = MastMemoryConfig(radius=2, memory_labels=labels)  # type: ignore[arg-type]
        maps = list(mast_propagate(lambda t: feats[t], first, 3, 4, cfg))
        assert [m.shape for m in maps] == [(10, 13)] * 3
    with pytest.raises(ValueError, match="needs the features' grid 3x4, got 3x3"):
        list(mast_propagate(lambda t: feats[t][..., :3], first, 2, 4, MastMemoryConfig()))
