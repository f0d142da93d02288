"""``configs/eval/crw.yaml`` against a re-implementation of CRW's released test code (ajabri/videowalk).

The reference (``tests/propagation_reference.py``) takes the same features as vidssl's preset: DAVIS at the
native 854x480 (854 is not a multiple of the stride, where the label resizing matters), the shared JHMDB
clip at CRW's 320x320, and the PCK and VIP metrics of ``eval_pck.py`` and ``eval_vip.py``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import propagation_reference as ref
from vidssl.data.label_io import read_indexed_png
from vidssl.engine.config import load_config
from vidssl.eval import jhmdb, propagation, vip
from vidssl.eval.davis import propagate_video, read_frame
from vidssl.eval.davis_metrics import evaluate_sequence
from vidssl.eval.encoders import FrameEncoder, build_encoder
from vidssl.eval.propagation import PropagationConfig, label_to_feature_res, one_hot
from vidssl.paths import REPO_ROOT

SEQUENCE = "dog"


def preset(name: str, **changes: object) -> PropagationConfig:
    return replace(load_config(PropagationConfig, REPO_ROOT / "configs" / "eval" / f"{name}.yaml"), **changes)


def davis_clip(root: Path, sequence: str, frames: int) -> tuple[list[Path], np.ndarray]:
    """The first ``frames`` JPEG paths of a shared DAVIS sequence and their ``(T, H, W)`` ground truth."""
    paths = sorted((root / "JPEGImages" / "480p" / sequence).glob("*.jpg"))[:frames]
    gts = np.stack([read_indexed_png(root / "Annotations" / "480p" / sequence / f"{p.stem}.png") for p in paths])
    return paths, gts


def random_trunk_clip(
    root: Path, sequence: str, frames: int
) -> tuple[list[Path], np.ndarray, FrameEncoder, torch.Tensor]:
    """A shared DAVIS clip, the random trunk (seed 0) cut to its first 64 channels (to keep the dense references
    within a few minutes) and its ``(T, 64, h, w)`` features."""
    paths, gts = davis_clip(root, sequence, frames)
    trunk = build_encoder("random", seed=0)
    assert trunk.encode is not None
    full = trunk.encode
    encoder = replace(trunk, encode=lambda frame: full(frame)[:64])
    feats = torch.stack([encoder.encode(read_frame(p)) for p in paths])  # type: ignore[misc]
    return paths, gts, encoder, feats


def jf(gts: np.ndarray, masks: np.ndarray) -> float:
    """J&F of the frames between the first and the last, with the official definitions."""
    scores = evaluate_sequence(gts, masks)
    return float((scores["J"].mean() + scores["F"].mean()) / 2)


def run_preset(
    encoder: FrameEncoder, paths: list[Path], first: np.ndarray, cfg: PropagationConfig, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[torch.Tensor], np.ndarray]:
    """``propagate_video`` (what ``vidssl eval davis`` writes) and the soft labels it upsampled, per frame."""
    soft: list[torch.Tensor] = []
    real = propagation.upsample_labels  # the top-k mode's last step (propagation.propagate_labels)
    monkeypatch.setattr(propagation, "upsample_labels", lambda s, *a, **k: soft.append(s) or real(s, *a, **k))
    masks = np.stack(list(propagate_video(encoder, paths, first, cfg)))
    monkeypatch.undo()
    labels = one_hot(torch.from_numpy(first.astype(np.int64)), int(first.max()) + 1)
    return [label_to_feature_res(labels, tuple(soft[0].shape[-2:]), encoder.stride, cfg.label_downsample,
                                 cfg.label_resize), *soft], masks


def check_against(
    name: str, want: ref.Reference, encoder: FrameEncoder, paths: list[Path], gts: np.ndarray,
    cfg: PropagationConfig, monkeypatch: pytest.MonkeyPatch,
) -> tuple[ref.Agreement, float, float]:
    """Soft labels to 1e-5 outside near-ties, masks equal outside what near-ties reach, J&F to 1e-4.
    Returns the agreement and both J&F."""
    soft, masks = run_preset(encoder, paths, gts[0], cfg, monkeypatch)
    agree = ref.agreement(soft, want, radius=int(np.ceil(cfg.radius)))
    assert max(agree.max_diff) <= 1e-5, (name, agree.max_diff)
    assert float(agree.reach[-1].float().mean()) < 0.05, (name, agree.ties)  # differences stay rare
    for t in range(1, len(paths)):  # frame 0 is the ground truth itself (DAVIS does not score it)
        # pixels a differing cell reaches, and argmax near-ties (scores within 1e-4) may differ
        free = ~ref.pixel_reach(agree.reach[t], gts.shape[1:]) & (want.margins[t] >= 1e-4)
        assert np.array_equal(masks[t][free], want.ids[t][free]), (name, t, int((masks[t] != want.ids[t]).sum()))
    ours, theirs = jf(gts, masks), jf(gts, np.stack(want.ids))
    assert abs(ours - theirs) <= 1e-4, (name, ours, theirs)
    print(f"{name}: max soft-label difference {max(agree.max_diff):.2e}, near-ties per frame {agree.ties}, "
          f"J&F {ours:.6f} (reference {theirs:.6f})")
    return agree, ours, theirs


@pytest.fixture(scope="module")
def dog(shared_data: Path) -> tuple[list[Path], np.ndarray, FrameEncoder, torch.Tensor]:
    paths, gts = davis_clip(shared_data / "davis", SEQUENCE, 3)
    assert gts.shape[1:] == (480, 854)
    encoder = ref.patch_encoder()
    feats = torch.stack([encoder.encode(read_frame(p)) for p in paths])  # type: ignore[misc]
    return paths, gts, encoder, feats


Dog = tuple[list[Path], np.ndarray, FrameEncoder, torch.Tensor]


def test_crw_preset_reproduces_crw_code_on_davis(dog: Dog, monkeypatch: pytest.MonkeyPatch) -> None:
    paths, gts, encoder, feats = dog
    cfg = preset("crw", context=1)  # --videoLen 1: the dense reference stays quick; the slow test runs 20
    want = ref.crw_davis(feats, gts[0], video_len=1, topk=cfg.topk, radius=cfg.radius, temperature=cfg.temperature)
    check_against("crw", want, encoder, paths, gts, cfg, monkeypatch)
    # frame 0 as CRW writes it (VIP scores it): the first labels' round trip through the feature grid
    assert np.array_equal(vip.first_frame_prediction(gts[0], 8, cfg), want.ids[0])
    # vidssl's former cell-aligned resize is what the reference catches: its round trip of the same labels
    # differs from CRW's in 0.3% of the pixels at 854x480
    old = vip.first_frame_prediction(gts[0], 8, replace(cfg, label_resize="stride"))
    assert (old != want.ids[0]).mean() > 1e-3


@pytest.mark.slow
def test_crw_preset_reproduces_crw_code_on_davis_full_context(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preset as it is (20 context frames, CRW's padding with copies of frame 0) on the random trunk's
    features (seed 0, its first 64 channels, to keep the dense reference within a few minutes)."""
    paths, gts, encoder, feats = random_trunk_clip(shared_data / "davis", SEQUENCE, 8)
    cfg = preset("crw")
    want = ref.crw_davis(feats, gts[0], video_len=20, topk=10, radius=12.0, temperature=0.05)
    check_against("crw", want, encoder, paths, gts, cfg, monkeypatch)


# ----------------------------------------------------------------------------------------------------
# JHMDB: CRW's heat maps, decoding, input size and eval_pck.py


def _jhmdb_case(
    shared_data: Path, frames: int, encoder: FrameEncoder, cfg: PropagationConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vidssl.data.video import open_video

    clip = jhmdb.find_clips(shared_data / "jhmdb")[0]
    with open_video(clip.frames, backend="frames") as reader:
        video = reader.get(range(frames))
    gt = jhmdb.read_joints(clip.mat)[:frames]
    from scipy.io import loadmat

    pos_img = np.asarray(loadmat(str(clip.mat))["pos_img"], dtype=np.float64)[:, :, :frames]
    assert video.shape[1:3] == (240, 320) and cfg.jhmdb.size == (320, 320)
    assert encoder.encode is not None
    feats = torch.stack([encoder.encode(jhmdb.resize_frame(f, (320, 320))) for f in video])
    assert feats.shape[-2:] == (40, 40)
    cells, want = ref.crw_jhmdb(feats, pos_img, (240, 320), (320, 320), video_len=cfg.context, topk=cfg.topk,
                                radius=cfg.radius, temperature=cfg.temperature)
    soft: list[torch.Tensor] = []  # vidssl's propagated heat maps, as propagate_keypoints decodes them
    decode = jhmdb.decode_heatmaps
    monkeypatch.setattr(jhmdb, "decode_heatmaps", lambda heat, *a, **k: soft.append(heat) or decode(heat, *a, **k))
    pred, visible = jhmdb.propagate_keypoints(video, gt[0], encoder, cfg)
    monkeypatch.undo()
    agree = ref.agreement(soft, want, radius=12)
    assert max(agree.max_diff) <= 1e-5, agree.max_diff
    assert np.array_equal(visible, (cells[0] >= 0).T)
    # coordinates: CRW's cells mapped to pixels as eval_pck.py does; joints whose map differs somewhere
    # (a near-tie reached it) may decode elsewhere
    theirs = np.stack([cells[0] / 40 * 320, cells[1] / 40 * 240], axis=-1).transpose(1, 0, 2)  # (T, J, 2)
    touched = np.stack([[bool((want.soft[t][j] > 0)[r].any()) for j in range(gt.shape[1])]
                        for t, r in enumerate(agree.reach)])
    # process_pose's top-3: where the 3rd and 4th cells (nearly) tie, torch.topk picks one (decoding ties)
    ranked = torch.stack(want.soft).flatten(2).topk(4, dim=-1).values  # (T, J, 4)
    tied = ((ranked[..., 2] - ranked[..., 3]) <= 1e-6 * ranked[..., 0]).numpy()
    same = visible & ~touched & ~tied
    np.testing.assert_allclose(pred[same], theirs[same], atol=1e-3)
    distances = jhmdb.normalised_distances(pred, gt, visible, cfg.jhmdb.zero_box)
    ours = 100 * jhmdb.pck([distances])[1]
    np.testing.assert_allclose(ours, ref.crw_pck(cells, pos_img, 240, 320), atol=1e-4)
    print(f"jhmdb ({frames} frames): max heat-map difference {max(agree.max_diff):.2e}, near-ties per frame "
          f"{agree.ties}, joints touched {int(touched.sum())}, decoding ties {int((visible & tied).sum())}, "
          f"PCK@0.1/0.2 {ours[0]:.2f} / {ours[1]:.2f}")


def test_crw_preset_reproduces_crw_code_on_jhmdb(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the preset's JHMDB settings (320x320, CRW's heat maps and top-3 decoding) with --videoLen 2 (quick)
    _jhmdb_case(shared_data, 10, ref.patch_encoder(), preset("crw", context=2), monkeypatch)


@pytest.mark.slow
def test_crw_preset_reproduces_crw_code_on_the_whole_jhmdb_clip(
    shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The preset as it is on the random trunk's features (seed 0): the shared clip's published-protocol PCK."""
    _jhmdb_case(shared_data, 40, build_encoder("random", seed=0), preset("crw"), monkeypatch)


def test_crw_heat_maps_are_draw_labelmap_np() -> None:
    rng = np.random.default_rng(0)
    # joints anywhere, including within 1.5 cells of the top/left edge (where int() truncation moves them)
    # and off the map
    joints = np.concatenate([rng.uniform(-20, 340, (40, 2)), [[0.0, 0.0], [5.0, 3.0], [319.0, 239.0]]])
    heat = jhmdb.joint_heatmaps(joints, (240, 320), (40, 40))
    for j, (x, y) in enumerate(joints):
        want = np.zeros((40, 40))
        ref.crw_draw_labelmap(want, (x * 320 / 320 / 8, y * 320 / 240 / 8), 0.5)
        np.testing.assert_allclose(heat[j].numpy(), want, atol=1e-7, err_msg=str((x, y)))
    assert (heat.reshape(len(joints), -1) > 0).sum(1).max() == 16  # a 4x4 patch


def test_pck_matches_eval_pck() -> None:
    """eval_pck.py's visibility, box, frame-0 exclusion, per-joint pooling and zero-box misses."""
    rng = np.random.default_rng(1)
    t, j = 12, 15
    pos_img = rng.uniform(20, 220, (2, j, t)) + 1
    cells = (pos_img - 1) / np.array([320, 240])[:, None, None] * 40 + rng.normal(0, 0.6, (2, j, t))
    cells[:, 3, 2:9] = -1  # joint 3 not visible in frames 2..8
    cells[:, 1:, 5] = -1  # frame 5: one visible joint: a zero box
    pos_img[:, :, 7] = pos_img[:, :1, 7]  # frame 7: every joint at one point: a zero box
    xy = np.stack([cells[0] / 40 * 320, cells[1] / 40 * 240], axis=-1).transpose(1, 0, 2)
    visible = (cells[0] >= 0).T
    gt = pos_img.transpose(2, 1, 0) - 1
    d = jhmdb.normalised_distances(xy, gt, visible)
    assert np.isinf(d[5, 0]) and np.isinf(d[7]).sum() == visible[7].sum()
    np.testing.assert_allclose(100 * jhmdb.pck([d])[1], ref.crw_pck(cells, pos_img, 240, 320), atol=1e-9)


def test_vip_miou_matches_eval_vip() -> None:
    """eval_vip.py: one confusion matrix over all frames, void ground truth ignored, background counted,
    classes never seen nor predicted left out of the mean."""
    rng = np.random.default_rng(2)
    gts, preds = [], []
    for _ in range(5):
        gt = rng.choice([0, 0, 0, 1, 2, 5, 13, 255], (30, 40)).astype(np.uint8)
        pred = np.where(rng.random(gt.shape) < 0.7, gt % 20, rng.choice([0, 1, 2, 7], gt.shape)).astype(np.uint8)
        pred[gt == 255] = 3  # predictions over void pixels count nowhere
        gts.append(gt)
        preds.append(pred)
    hist = sum(vip.confusion(g, p) for g, p in zip(gts, preds, strict=True))
    iou, miou = vip.mean_iou(hist)
    want_iou, want_miou = ref.crw_vip_hist(gts, preds)
    np.testing.assert_allclose(iou, want_iou, equal_nan=True)
    assert miou == pytest.approx(want_miou) and not np.isnan(iou[0]) and np.isnan(iou[4])


def test_presets_name_the_code_they_follow() -> None:
    """Each propagation preset states the authors' repository, file and function it reproduces, and selects
    that code's label resizing; the CRW preset is also the default configuration."""
    for name, repo, function, resize in [
        ("crw", "ajabri/videowalk", "dump_predictions", "crw"),
        ("vfs", "xvjiarui/VFS", "VanillaTracker.forward_test", "vfs"),
        ("dino", "facebookresearch/dino", "eval_video_tracking_davis", "dino"),
    ]:
        text = (REPO_ROOT / "configs" / "eval" / f"{name}.yaml").read_text()
        assert repo in text and function in text and f"test_reference_{name}.py" in text, name
        assert preset(name).label_resize == resize
    assert preset("crw") == PropagationConfig()
    assert (jhmdb.DEFAULT_CONFIG, vip.DEFAULT_CONFIG) == (Path("configs/eval/crw.yaml"),) * 2
