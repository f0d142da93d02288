"""The propagation modes: a preset's ``mode:`` picks the config, the trunk, the input and the propagation, and one
driver runs them for DAVIS and VIP (``vidssl.eval.modes``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vidssl.engine.config import ConfigError
from vidssl.eval import vip
from vidssl.eval.encoders import FrameEncoder
from vidssl.eval.mast_memory import MastMemoryConfig, mast_propagate
from vidssl.eval.modes import MODES, FrameInputError, load_preset, preset_encoder, propagate_video
from vidssl.eval.propagation import PropagationConfig, propagate_labels

REPO = Path(__file__).resolve().parents[1]


def test_the_preset_names_its_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the shipped presets are found from any working directory
    for name in ("crw", "vfs", "dino"):
        cfg = load_preset(f"configs/eval/{name}.yaml")
        assert isinstance(cfg, PropagationConfig) and cfg.mode == "topk"
    mast = load_preset("configs/eval/mast.yaml", ["radius=4"])
    assert isinstance(mast, MastMemoryConfig) and mast.radius == 4
    assert load_preset(None) == PropagationConfig()
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: masst\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: mode: 'masst' is not one of \['topk', 'mast'\]; did you mean"):
        load_preset(bad)
    with pytest.raises(ConfigError, match=r"unknown key 'topk'; did you mean"):  # a top-k key in MAST's memory
        load_preset(REPO / "configs/eval/mast.yaml", ["topk=5"])
    with pytest.raises(ConfigError, match=r"unknown key 'long_term'"):  # and the other way round
        load_preset(REPO / "configs/eval/crw.yaml", ["long_term=[0]"])


def test_the_mode_sets_the_trunk_and_the_input() -> None:
    topk, mast = PropagationConfig(), MastMemoryConfig()
    assert MODES["topk"].config is PropagationConfig and MODES["mast"].config is MastMemoryConfig
    assert preset_encoder(topk, "random").stride == 8 and preset_encoder(mast, "random").stride == 4
    assert preset_encoder(mast, "random", backbone="resnet18_s8_l3").stride == 8
    assert preset_encoder(mast, "random").name.endswith("-lab")  # MAST's memory feeds Lab
    assert preset_encoder(topk, "random", input="lab").name.endswith("-lab")
    assert not preset_encoder(topk, "random").name.endswith("-lab")
    with pytest.raises(ValueError, match=r"--input rgb: the preset is MAST's memory \(mode: mast\), which feeds"):
        preset_encoder(mast, "random", input="rgb")


def _frames(tmp_path: Path, n: int, size: tuple[int, int]) -> list[Path]:
    """A random image moving one pixel right per frame."""
    base = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    paths = []
    for t in range(n):
        path = tmp_path / f"{t:05d}.npy"
        np.save(path, np.roll(base, t, axis=1))
        paths.append(path)
    return paths


def _pixel_encoder(stride: int) -> tuple[FrameEncoder, list[np.ndarray]]:
    """Features: each cell's mean colour, centred and unit length, so copies follow colour (MAST's memory takes
    raw dot products)."""
    seen: list[np.ndarray] = []

    def encode(frame: np.ndarray) -> torch.Tensor:
        seen.append(frame)
        x = torch.from_numpy(frame).permute(2, 0, 1).float() / 255
        cells = torch.nn.functional.avg_pool2d(x[None], stride, ceil_mode=True)[0]
        return torch.nn.functional.normalize(cells - 0.5, dim=0)

    return FrameEncoder("cells", stride, encode, torch.device("cpu")), seen


MODE_CONFIGS = [PropagationConfig(context=2, topk=3, radius=3), MastMemoryConfig(radius=3, temperature=0.05, tile=4)]


@pytest.mark.parametrize("cfg", MODE_CONFIGS)
def test_one_driver_reads_each_frame_once_and_runs_the_modes_propagation(tmp_path: Path, cfg: object) -> None:
    n, size = 7, (36, 44)  # not multiples of the stride
    paths = _frames(tmp_path, n, size)
    reads: list[Path] = []

    def read(path: Path) -> np.ndarray:
        reads.append(path)
        return np.load(path)

    first = np.zeros(size, np.uint8)
    first[8:24, 10:30] = 1
    first[26:, :6] = 2
    stride = 4
    encoder, seen = _pixel_encoder(stride)
    assert isinstance(cfg, (PropagationConfig, MastMemoryConfig))
    masks = list(propagate_video(encoder, paths, first, cfg, read))
    assert reads == paths and len(seen) == n  # in order, once each
    assert len(masks) == n and all(m.dtype == np.uint8 and m.shape == size for m in masks)
    assert np.array_equal(masks[0], first)
    # the same as the mode's own propagation on the same features
    feats = [encoder.encode(np.load(p)) for p in paths]  # type: ignore[misc]
    own = propagate_labels if isinstance(cfg, PropagationConfig) else mast_propagate
    mask = torch.from_numpy(first.astype(np.int64))
    expected = list(own(lambda t: feats[t], mask, n, stride, cfg))  # type: ignore[arg-type]
    for got, want in zip(masks, expected, strict=True):
        assert np.array_equal(got, want.numpy())
    assert len(np.unique(masks[-1])) > 1  # something is propagated, not all background

    identity = FrameEncoder("identity", stride, None, torch.device("cpu"))
    assert all(np.array_equal(m, first) for m in propagate_video(identity, paths, first, cfg, read))


def test_a_frame_of_another_size_is_an_error_naming_it(tmp_path: Path) -> None:
    paths = _frames(tmp_path, 3, (32, 32))
    np.save(paths[2], np.zeros((32, 40, 3), np.uint8))
    encoder, _ = _pixel_encoder(4)
    for cfg in (PropagationConfig(context=1), MastMemoryConfig(radius=2)):
        with pytest.raises(FrameInputError, match=rf"{os.sep}00002.npy: frame is 40x32, the first mask 32x32"):
            list(propagate_video(encoder, paths, np.zeros((32, 32), np.uint8), cfg, np.load))


def test_vip_runs_mast_memory_and_jhmdb_refuses_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from vidssl.cli import main
    from vidssl.data.label_io import write_indexed_png
    from vidssl.data.synthetic import write_dataset

    root = write_dataset(tmp_path / "syn", seed=5, num_videos=1, num_frames=4, size=(48, 64), num_objects=2)
    seq = sorted((root / "davis" / "JPEGImages" / "480p").iterdir())[0]
    frames = sorted(seq.glob("*.jpg"))
    labels = []
    for t, _ in enumerate(frames):
        path = tmp_path / "labels" / f"{t:05d}.png"
        mask = np.zeros((48, 64), np.uint8)
        mask[10:30, 12 + t:40 + t] = 7
        write_indexed_png(path, mask)
        labels.append(path)
    video = vip.VipVideo("v", tuple(frames), tuple(labels))
    encoder = preset_encoder(MastMemoryConfig(), "random")
    hist, _ = vip.evaluate_videos([video], encoder, MastMemoryConfig(radius=3, tile=4))
    assert hist.sum() == 4 * 48 * 64  # every frame scored, frame 0 as the labels themselves (no round trip)
    first_row = vip.evaluate_videos([video], encoder, MastMemoryConfig(radius=3, tile=4), score_first=False)[0]
    assert hist.sum() - first_row.sum() == 48 * 64
    out = tmp_path / "out"
    code = main(["eval", "jhmdb", "--root", str(root / "jhmdb"), "--encoder", "pixels", "--out", str(out),
                 "--config", str(REPO / "configs/eval/mast.yaml")])
    assert code == 2 and "mode: mast: JHMDB keypoints propagate with a top-k preset" in capsys.readouterr().err
