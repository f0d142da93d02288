"""``configs/eval/mast.yaml`` against a re-implementation of MAST's released test code (zlai0/MAST
``benchmark.py`` ``test()`` with ``--ref 0``, ``models/colorizer.py``), on the same features, DAVIS at 854x480.

MAST's memory has no top-k, so there are no top-k ties; but its memory holds hard labels, so an arg-max that
float rounding flips in one frame feeds every later one. The comparison is therefore made twice: one step at a
time on the same memory (the reference is given vidssl's masks as its ``outputs``), soft labels and masks; and
free-running, each loop on its own masks, J&F. The code's raw dot products (temperature 1) make float32 copies
differ from the float64 one by a few 1e-5 in either implementation, so the exact check runs in float64 and the
float32 path is held to 1e-4 (``check_against_mast_code``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import propagation_reference as ref
from tests.test_reference_crw import davis_clip, jf
from vidssl.eval import mast_memory
from vidssl.eval.davis import propagate_video, read_frame
from vidssl.eval.encoders import FrameEncoder
from vidssl.eval.mast_memory import MastMemoryConfig
from vidssl.eval.modes import load_preset, preset_encoder
from vidssl.paths import REPO_ROOT

Clip = tuple[list[Path], np.ndarray, FrameEncoder, torch.Tensor]


def preset(**changes: object) -> MastMemoryConfig:
    cfg = load_preset(REPO_ROOT / "configs" / "eval" / "mast.yaml", [])
    assert isinstance(cfg, MastMemoryConfig)
    return replace(cfg, **changes)


def run_preset(
    encoder: FrameEncoder, paths: list[Path], first: np.ndarray, cfg: MastMemoryConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[list[torch.Tensor], np.ndarray]:
    """``propagate_video`` (what ``vidssl eval davis`` writes) and the ``(K, h, w)`` copies it upsampled."""
    soft: list[torch.Tensor] = []
    real = mast_memory.local_attention

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        out = real(*args, **kwargs)  # type: ignore[arg-type]
        soft.append(out[0])
        return out

    monkeypatch.setattr(mast_memory, "local_attention", spy)
    masks = np.stack(list(propagate_video(encoder, paths, first, cfg)))
    monkeypatch.undo()
    return soft, masks


def in_float64(encoder: FrameEncoder) -> FrameEncoder:
    """The same encoder giving float64 features (the memory then computes in float64)."""
    assert encoder.encode is not None
    encode = encoder.encode
    return replace(encoder, encode=lambda frame: encode(frame).double())


def check_against_mast_code(
    clip: Clip, cfg: MastMemoryConfig, monkeypatch: pytest.MonkeyPatch, free_running: bool = False
) -> float:
    """The preset against :func:`ref.mast_davis` with the preset's radius, ``roi_after`` and search radius.

    In float64, where rounding is out of the way, step by step on vidssl's memory: soft labels to 1e-9 and
    masks equal outside arg-max near-ties (1e-6). Equal steps from equal memories make the free-running loops
    equal but for near-ties; ``free_running`` runs the reference on its own masks too (J&F to 1e-4). Then
    vidssl's float32 path (what ``vidssl eval davis`` runs): with raw dot products (temperature 1) float32 copies
    sit a few 1e-5 from the float64 one, in either implementation; frame 1 (whose memory is the ground truth) to
    1e-4 and J&F to 1e-4. Returns the float32 J&F."""
    paths, gts, encoder, feats = clip
    soft, masks = run_preset(in_float64(encoder), paths, gts[0], cfg, monkeypatch)
    kwargs = dict(dil_int=cfg.roi_after, radius=cfg.radius, search_radius=cfg.search_radius)
    step = ref.mast_davis(feats.double(), gts[0], teacher=list(masks), **kwargs)  # type: ignore[arg-type]
    k = soft[0].shape[0]
    for t in range(1, len(paths)):
        assert not step.soft[t][k:].any()  # the code's 7 channels: those past the objects' copy nothing
        diff = float((soft[t - 1] - step.soft[t][:k]).abs().max())
        assert diff <= 1e-9, (t, diff)
        free = step.margins[t] >= 1e-6  # arg-max near-ties may go either way
        assert np.array_equal(masks[t][free], step.ids[t][free]), (t, int((masks[t] != step.ids[t]).sum()))
    ours = jf(gts, masks)
    theirs, note = ours, ""
    if free_running:
        alone = ref.mast_davis(feats.double(), gts[0], **kwargs)  # type: ignore[arg-type]
        theirs = jf(gts, np.stack(alone.ids))
        assert abs(ours - theirs) <= 1e-4, (ours, theirs)
        differing = [int((m != a).sum()) for m, a in zip(masks, alone.ids, strict=True)]
        note = f" (free-running reference {theirs:.6f}, pixels differing {differing})"
    soft32, masks32 = run_preset(encoder, paths, gts[0], cfg, monkeypatch)
    first = float((soft32[0].double() - soft[0]).abs().max())
    assert first <= 1e-4, first
    ours32 = jf(gts, masks32)
    assert abs(ours32 - theirs) <= 1e-4, (ours32, theirs)
    print(f"mast: J&F {ours:.6f} in float64, {ours32:.6f} in float32{note}; float32 frame-1 difference {first:.1e}")
    return ours32


@pytest.fixture(scope="module")
def dog(shared_data: Path) -> Clip:
    """5 frames of dog at 854x480 (the stride-4 grid is 120 x 214: 854 is no multiple of 4 or 8), seeded random
    16-d patch features at stride 4."""
    paths, gts = davis_clip(shared_data / "davis", "dog", 5)
    encoder = ref.patch_encoder(16, stride=4)
    feats = torch.stack([encoder.encode(read_frame(p)) for p in paths])  # type: ignore[misc]
    return paths, gts, encoder, feats


def test_mast_preset_reproduces_mast_code_on_davis(dog: Clip, monkeypatch: pytest.MonkeyPatch) -> None:
    """Radius 4 and a 9x9 coarse search keep the dense reference quick; ``roi_after: 1`` puts the searched
    references in reach of 5 frames: frame 3 searches frame 0, frame 4 frames 0 and 1 (whose labels the code
    reads around frame 1's ROI)."""
    check_against_mast_code(dog, preset(radius=4, search_radius=4, roi_after=1), monkeypatch)


def test_each_of_the_codes_choices_is_what_tells_it_apart() -> None:
    """vidssl's alternatives (``temperature: null``, ``outside: exclude``, ``memory_labels: cells``,
    ``roi_values: own``) each change the copy: random features on a 20 x 24 grid, two objects, 5 frames, the
    searched references as above."""
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(5, 16, 20, 24, generator=gen)
    first = torch.zeros(80, 96, dtype=torch.long)
    first[8:50, 10:60], first[45:, 50:] = 1, 2
    cfg = preset(radius=4, search_radius=4, roi_after=1, tile=8)

    def last_copy(c: MastMemoryConfig) -> torch.Tensor:
        soft: list[torch.Tensor] = []
        real = mast_memory.local_attention
        with pytest.MonkeyPatch.context() as m:
            m.setattr(mast_memory, "local_attention", lambda *a, **k: soft.append(real(*a, **k)) or soft[-1])
            list(mast_memory.mast_propagate(lambda t: feats[t], first, 5, 4, c))
        return soft[-1]

    base = last_copy(cfg)
    for change in ({"temperature": None}, {"outside": "exclude"}, {"memory_labels": "cells"}, {"roi_values": "own"}):
        assert float((last_copy(replace(cfg, **change)) - base).abs().max()) > 1e-3, change  # type: ignore[arg-type]


@pytest.mark.slow
def test_mast_preset_reproduces_mast_code_with_its_windows(shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The preset's own windows (radius 12, the 25x25 coarse search) and the preset's encoder: the random
    ``resnet18_mast`` trunk (seed 0) fed MAST's Lab at stride 4, cut to its first 16 channels (the dense reference
    stays within minutes), on 5 frames of dog with ``roi_after: 1`` (frame 4 searches two references); the
    reference also free-running."""
    paths, gts = davis_clip(shared_data / "davis", "dog", 5)
    cfg = preset(roi_after=1)
    trunk = preset_encoder(cfg, "random", seed=0)
    assert trunk.stride == 4 and trunk.encode is not None
    full = trunk.encode
    encoder = replace(trunk, encode=lambda frame: full(frame)[:16])
    feats = torch.stack([encoder.encode(read_frame(p)) for p in paths])  # type: ignore[misc]
    check_against_mast_code((paths, gts, encoder, feats), cfg, monkeypatch, free_running=True)


def test_the_preset_names_the_code_it_follows_and_defaults_to_it() -> None:
    text = (REPO_ROOT / "configs" / "eval" / "mast.yaml").read_text()
    assert "zlai0/MAST" in text and "Colorizer.forward" in text and "test_reference_mast.py" in text
    assert preset() == MastMemoryConfig()  # the dataclass's defaults are the code's too
    assert (preset().temperature, preset().outside, preset().memory_labels, preset().roi_values) == (
        1.0, "zero", "pixels", "last")
