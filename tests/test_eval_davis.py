"""``vidssl eval davis`` end to end on tiny DAVIS trees made here, plus the frame encoders."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from vidssl.cli import main
from vidssl.data.label_io import davis_palette, read_indexed_png, write_indexed_png
from vidssl.engine.config import load_config
from vidssl.eval.davis import DavisInputError, evaluate_encoder
from vidssl.eval.encoders import backbone_encoder, build_encoder, random_backbone
from vidssl.eval.propagation import PropagationConfig
from vidssl.paths import REPO_ROOT

# (name, height, width, frames, objects): one width that is not a multiple of the stride
SEQUENCES = [("squares", 48, 90, 6, 2), ("single", 40, 56, 5, 1)]


def _make_davis(root: Path, seed: int = 0) -> Path:
    """Flat-coloured objects drifting right by 4 px per frame over a noise background."""
    rng = np.random.default_rng(seed)
    for name, h, w, n, k in SEQUENCES:
        background = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        for t in range(n):
            image = background.copy()
            labels = np.zeros((h, w), np.uint8)
            for obj in range(1, k + 1):
                y0, x0 = 4 + 22 * (obj - 1), 4 + 4 * t + 30 * (obj - 1)
                labels[y0 : y0 + 16, x0 : x0 + 20] = obj
                image[y0 : y0 + 16, x0 : x0 + 20] = (200 * (obj == 1), 200 * (obj == 2), 120)
            (root / "JPEGImages" / "480p" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg", quality=95)
            write_indexed_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", labels)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("".join(f"{s[0]}\n" for s in SEQUENCES))
    return root


@pytest.fixture
def davis(tmp_path: Path) -> Path:
    return _make_davis(tmp_path / "davis")


def _check_outputs(davis: Path, out: Path) -> None:
    for name, h, w, n, _ in SEQUENCES:
        for t in range(n):
            path = out / name / f"{t:05d}.png"
            with Image.open(path) as image:
                assert image.mode == "P" and image.size == (w, h)
                assert np.array_equal(np.array(image.getpalette()[:48]).reshape(-1, 3), davis_palette()[:16])


def test_identity_copies_the_first_mask(davis: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = evaluate_encoder(build_encoder("identity"), davis, out, progress=False)
    _check_outputs(davis, out)
    for name, *_ , n, _k in SEQUENCES:
        first = read_indexed_png(davis / "Annotations" / "480p" / name / "00000.png")
        for t in range(n):
            assert np.array_equal(read_indexed_png(out / name / f"{t:05d}.png"), first)
    assert [o.name for o in result.objects] == ["squares_1", "squares_2", "single_1"]
    assert (out / "global_results-val.csv").is_file() and (out / "propagation.yaml").is_file()


def test_pixels_follow_the_objects_and_beat_identity(davis: Path, tmp_path: Path) -> None:
    cfg = PropagationConfig(radius=4)
    ident = evaluate_encoder(build_encoder("identity"), davis, tmp_path / "i", cfg, progress=False)
    pixels = evaluate_encoder(build_encoder("pixels"), davis, tmp_path / "p", cfg, progress=False)
    _check_outputs(davis, tmp_path / "p")
    assert pixels.global_table["J&F-Mean"] > ident.global_table["J&F-Mean"] + 0.05


def test_cli_with_overrides_overlays_and_video(davis: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    code = main([
        "eval", "davis", "--davis-root", str(davis), "--out", str(out), "--encoder", "pixels",
        "--config", "configs/eval/dino.yaml", "topk=3", "--sequences", "single", "--overlays", "--overlay-video",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert "J&F-Mean" in printed and "single_1" in printed and "squares" not in printed
    saved = load_config(PropagationConfig, out / "propagation.yaml")
    assert saved.topk == 3 and saved.window == "square"  # the preset, with the override, is saved
    assert len(list((out / "overlays" / "single").glob("*.png"))) == 5
    with av.open(str(out / "overlays" / "single.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 5


def test_cli_reports_bad_override_and_missing_annotation(davis: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture) -> None:
    args = ["eval", "davis", "--davis-root", str(davis), "--out", str(tmp_path / "x"), "--encoder", "identity"]
    assert main([*args, "topkk=3"]) == 2
    assert "topkk" in capsys.readouterr().err
    assert main([*args[:-1], "nonsense-spec"]) == 2
    assert "nonsense-spec" in capsys.readouterr().err
    assert main([*args[:-1], "random", "--input", "rgb", "--config", "configs/eval/mast.yaml"]) == 2
    assert "--input rgb: configs/eval/mast.yaml is MAST's memory" in capsys.readouterr().err
    (davis / "Annotations" / "480p" / "single" / "00000.png").unlink()
    with pytest.raises(DavisInputError, match=r"single/00000\.png: first-frame annotation not found"):
        evaluate_encoder(build_encoder("identity"), davis, tmp_path / "y", sequences=["single"], progress=False)


def test_a_corrupt_frame_is_an_error_naming_it(tmp_path: Path) -> None:
    from vidssl.eval.davis import read_frame

    bad = tmp_path / "00003.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(DavisInputError, match=r"00003\.jpg: cannot read image"):
        read_frame(bad)


def test_presets_load() -> None:
    for name in ("crw", "vfs", "dino"):
        cfg = load_config(PropagationConfig, REPO_ROOT / "configs" / "eval" / f"{name}.yaml")
        assert cfg.radius == 12.0
    assert load_config(PropagationConfig, REPO_ROOT / "configs" / "eval" / "crw.yaml") == PropagationConfig()


# ----------------------------------------------------------------------------------------------------
# Encoders


def test_encoders_shapes_and_determinism(tmp_path: Path) -> None:
    frame = np.random.default_rng(0).integers(0, 255, (36, 50, 3), dtype=np.uint8)
    pixels = build_encoder("pixels")
    feats = pixels.encode(frame)  # type: ignore[misc]
    assert feats.shape == (3, 5, 7)  # ceil(36 / 8), ceil(50 / 8)
    # a uniform cell has the normalised Lab colour of its pixels
    grey = np.full((8, 8, 3), 128, np.uint8)
    lab = pixels.encode(grey)[:, 0, 0]  # type: ignore[misc]
    assert abs(float(lab[0]) - (53.585 - 50) / 50) < 1e-2 and abs(float(lab[1])) < 1e-3
    a, b = build_encoder("random"), build_encoder("random")
    fa, fb = a.encode(frame), b.encode(frame)  # type: ignore[misc]
    assert fa.shape == (256, 5, 7) and a.stride == 8
    assert torch.equal(fa, fb)
    assert not torch.equal(fa, build_encoder("random", seed=1).encode(frame))  # type: ignore[misc]


def test_encoder_from_checkpoint_and_torchvision_file(tmp_path: Path) -> None:
    frame = np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    net = random_backbone("resnet18_s8_l3", seed=3)
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"encoder": net.state_dict(), "backbone": net.config}, ckpt)
    plain = tmp_path / "weights.pth"
    torch.save(net.state_dict(), plain)
    want = backbone_encoder(net, "cpu").encode(frame)  # type: ignore[misc]
    torch.testing.assert_close(build_encoder(str(ckpt)).encode(frame), want)  # type: ignore[misc]
    torch.testing.assert_close(build_encoder(str(plain)).encode(frame), want)  # type: ignore[misc]
    with pytest.raises(ValueError, match="missing"):
        build_encoder(str(plain), backbone="resnet18_s8")  # layer4 absent from the file


def test_checkpoint_input_space_follows_the_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A MAST checkpoint's encoder is fed normalised Lab (what it trained on), everything else RGB; --input
    overrides; a checkpoint from before the record follows from its method."""
    from vidssl.models.record import checkpoint_input
    from vidssl.nn.colour import mast_normalize_lab, rgb_to_lab

    frame = np.random.default_rng(2).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    net = random_backbone("resnet18_s8_l3", seed=4).eval()
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        want_lab = net.forward_features(mast_normalize_lab(rgb_to_lab(x)))[0]
        want_rgb = net.forward_features((x - mean) / std)[0]
    assert not torch.allclose(want_lab, want_rgb, atol=1e-3)
    base = {"encoder": net.state_dict(), "backbone": net.config}
    files = {
        "lab_recorded": {**base, "encoder_input": "lab", "config": {"method": "crw"}},  # the record wins
        "mast_old": {**base, "config": {"method": "mast"}},
        "stage2_old": {**base, "config": {"method": "mast_stage2"}},
        "crw_old": {**base, "config": {"method": "crw"}},
        "rgb_recorded": {**base, "encoder_input": "rgb", "config": {"method": "mast"}},
    }
    expect = {"lab_recorded": "lab", "mast_old": "lab", "stage2_old": "lab", "crw_old": "rgb", "rgb_recorded": "rgb"}
    for name, state in files.items():
        torch.save(state, tmp_path / f"{name}.pt")
        path = str(tmp_path / f"{name}.pt")
        assert checkpoint_input(torch.load(path, weights_only=True), path) == expect[name], name
        got = build_encoder(path).encode(frame)  # type: ignore[misc]
        torch.testing.assert_close(got, want_lab if expect[name] == "lab" else want_rgb)
    reads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    build_encoder(str(tmp_path / "mast_old.pt"))
    assert len(reads) == 1  # weights and records come from one read of the file
    monkeypatch.undo()
    forced = build_encoder(str(tmp_path / "mast_old.pt"), input="rgb")
    torch.testing.assert_close(forced.encode(frame), want_rgb)  # type: ignore[misc]
    rand_lab = build_encoder("random", seed=4, input="lab")
    torch.testing.assert_close(rand_lab.encode(frame), want_lab)  # type: ignore[misc]
    assert rand_lab.name.endswith("-lab")
    torch.save({**base, "encoder_input": "hsv"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bad.pt: unknown encoder_input 'hsv'"):
        build_encoder(str(tmp_path / "bad.pt"))
    with pytest.raises(ValueError, match="--input"):
        build_encoder("random", input="bgr")


def test_training_checkpoints_record_the_encoder_input() -> None:
    from vidssl.methods import METHODS
    from vidssl.models.record import _LEGACY_LAB_METHODS

    assert {name for name, cls in METHODS.items() if getattr(cls, "encoder_input", "rgb") == "lab"} == {
        "mast", "mast_stage2", "cmc", "colorization"}
    # CMC and colourisation came after checkpoints recorded their input: only MAST's old ones need the legacy list
    assert set(_LEGACY_LAB_METHODS) == {"mast", "mast_stage2"}


@pytest.mark.slow
def test_synthetic_videos_pixels_beat_identity(tmp_path: Path) -> None:
    from vidssl.data.synthetic import write_dataset

    root = write_dataset(tmp_path / "syn", seed=0, num_videos=2, num_frames=16, size=(96, 128))
    ident = evaluate_encoder(build_encoder("identity"), root / "davis", tmp_path / "i", progress=False)
    pixels = evaluate_encoder(build_encoder("pixels"), root / "davis", tmp_path / "p", progress=False)
    assert pixels.global_table["J&F-Mean"] > ident.global_table["J&F-Mean"]


@pytest.mark.slow
def test_real_davis_sequence_identity(shared_data: Path, tmp_path: Path) -> None:
    root = shared_data / "davis"
    result = evaluate_encoder(build_encoder("identity"), root, tmp_path, sequences=["car-shadow"], progress=False)
    assert read_indexed_png(tmp_path / "car-shadow" / "00039.png").shape == (480, 854)
    assert 0.0 < result.global_table["J-Mean"] < 0.9
