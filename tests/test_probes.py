"""kNN and linear probes against hand-computed votes and separable data; ImageFolder reading; a short MoCo run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vidssl.cli import main
from vidssl.eval.probes import (
    extract_features,
    knn_accuracy,
    knn_scores,
    linear_accuracy,
    load_encoder,
    read_image_folder,
    select_linear_probe,
    train_linear_probe,
    validation_split,
)
from vidssl.models import build_backbone


def _clusters(n_per: int, classes: int, dim: int, seed: int, spread: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.eye(dim)[:classes] * 3.0
    labels = torch.arange(classes).repeat_interleave(n_per)
    return centres[labels] + spread * torch.randn(len(labels), dim, generator=g), labels


def test_knn_separated_clusters_are_perfect() -> None:
    xtr, ytr = _clusters(30, 5, 8, seed=0)
    xte, yte = _clusters(10, 5, 8, seed=1)
    assert knn_accuracy(xtr, ytr, xte, yte, k=200, temperature=0.1, chunk=7) == 1.0
    # and a permuted labelling of the test set is wrong wherever the label moved
    assert knn_accuracy(xtr, ytr, xte, (yte + 1) % 5) == 0.0


def test_knn_weighted_vote_by_hand() -> None:
    # One class-0 neighbour at cosine 0.9, two class-1 neighbours at cosine 0.5, one far class-2 point.
    q = torch.tensor([[1.0, 0.0]])
    c9, c5 = (0.9, math.sqrt(1 - 0.81)), (0.5, math.sqrt(1 - 0.25))
    bank = torch.tensor([[c9[0], c9[1]], [c5[0], c5[1]], [c5[0], -c5[1]], [-1.0, 0.0]]) * torch.tensor(
        [[2.0], [0.5], [3.0], [1.0]]
    )  # lengths must not matter: cosine similarity
    labels = torch.tensor([0, 1, 1, 2])
    for t in (0.1, 10.0):
        scores = knn_scores(q, bank, labels, num_classes=3, k=3, temperature=t)
        expected = torch.tensor([[math.exp(0.9 / t), 2 * math.exp(0.5 / t), 0.0]])
        torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-6)
    # sharp votes follow the nearest neighbour, flat votes the majority
    assert knn_scores(q, bank, labels, 3, k=3, temperature=0.1).argmax().item() == 0
    assert knn_scores(q, bank, labels, 3, k=3, temperature=10.0).argmax().item() == 1
    # k larger than the bank uses every point
    full = knn_scores(q, bank, labels, 3, k=200, temperature=1.0)
    assert full[0, 2].item() == pytest.approx(math.exp(-1.0), rel=1e-5)
    with pytest.raises(ValueError, match="bank_labels"):
        knn_scores(q, bank, labels[:2], 3)


def test_linear_probe_separates_and_is_deterministic() -> None:
    xtr, ytr = _clusters(50, 4, 8, seed=0, spread=0.3)
    xte, yte = _clusters(25, 4, 8, seed=1, spread=0.3)
    scale = torch.linspace(1.0, 1000.0, 8)  # unstandardised features: the probe must standardise them
    xtr, xte = xtr * scale + 500.0, xte * scale + 500.0
    probe = train_linear_probe(xtr, ytr, epochs=20, lr=5e-2, batch_size=100, seed=3)
    assert linear_accuracy(probe, xtr, ytr) == 1.0
    assert linear_accuracy(probe, xte, yte) == 1.0
    assert linear_accuracy(probe, xte, (yte + 1) % 4) == 0.0
    again = train_linear_probe(xtr, ytr, epochs=20, lr=5e-2, batch_size=100, seed=3)
    torch.testing.assert_close(probe.fc.weight, again.fc.weight, rtol=0, atol=0)


def test_validation_split_is_stratified_and_disjoint() -> None:
    labels = torch.tensor([0] * 20 + [1] * 10 + [2] * 1)
    tr, va = validation_split(labels, 0.1, seed=0)
    assert not set(tr.tolist()) & set(va.tolist()) and len(tr) + len(va) == 31
    assert torch.bincount(labels[va], minlength=3).tolist() == [2, 1, 0]  # 10% of each class; a singleton stays
    assert torch.equal(validation_split(labels, 0.1, seed=0)[1], va)  # deterministic


def test_linear_protocol_chooses_on_validation_and_keeps_the_trunk_frozen() -> None:
    """The offline probe: features from a trunk in eval mode under no gradient (its weights, its BN statistics
    and its mode untouched), settings chosen on the validation split, the final probe fit on all of train."""
    torch.manual_seed(0)
    trunk = build_backbone("resnet18").train()
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    feats = extract_features(trunk, images, batch_size=16)
    assert not trunk.training and not feats.requires_grad
    assert all(p.grad is None for p in trunk.parameters())
    for k, v in trunk.state_dict().items():
        assert torch.equal(v, before[k]), k  # BN running statistics included: never a training-mode pass
    xtr, ytr = _clusters(40, 3, 6, seed=0, spread=0.3)
    probe, chosen, val = select_linear_probe(xtr, ytr, lrs=(1e-5, 5e-2), weight_decays=(0.0,), epochs=15,
                                             batch_size=32)
    assert chosen == {"lr": 5e-2, "weight_decay": 0.0}  # the rate that learns in 15 epochs wins on validation
    assert val["lr=0.05,wd=0"] > val["lr=1e-05,wd=0"]
    refit = train_linear_probe(xtr, ytr, epochs=15, lr=5e-2, batch_size=32, seed=0)  # refit on all of train
    torch.testing.assert_close(probe.fc.weight, refit.fc.weight, rtol=0, atol=0)
    assert feats.shape == (40, 512)


def _write_folder(root: Path, per_class: int = 3, size: tuple[int, int] = (12, 10)) -> None:
    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            noise = rng.integers(0, 20, (size[1], size[0], 3), dtype=np.uint8)
            arr = np.full((size[1], size[0], 3), 60 + 120 * c, dtype=np.uint8) + noise
            Image.fromarray(arr).save(root / name / f"{i}.png")
    (root / "dog" / "notes.txt").write_text("not an image")


def test_read_image_folder(tmp_path: Path) -> None:
    _write_folder(tmp_path / "train")
    x, y, classes = read_image_folder(tmp_path / "train")
    assert classes == ["cat", "dog"] and x.shape == (6, 3, 10, 12) and x.dtype == torch.uint8
    assert y.tolist() == [0, 0, 0, 1, 1, 1]
    assert x[3:].float().mean() > x[:3].float().mean() + 60  # dog images are the bright ones
    x8, _, _ = read_image_folder(tmp_path / "train", size=8)
    assert x8.shape == (6, 3, 8, 8)
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "train" / "cat" / "small.png")
    with pytest.raises(ValueError, match=r"small\.png: size 5x5 differs"):
        read_image_folder(tmp_path / "train")
    (tmp_path / "train" / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"broken\.jpg: cannot read image"):
        read_image_folder(tmp_path / "train", size=8)
    with pytest.raises(FileNotFoundError, match="missing"):
        read_image_folder(tmp_path / "missing")


def test_cli_knn_on_a_tiny_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_folder(tmp_path / "data" / "train", per_class=4)
    _write_folder(tmp_path / "data" / "test", per_class=2)
    torch.manual_seed(0)
    ckpt = tmp_path / "r18.pt"
    torch.save(build_backbone("resnet18").state_dict(), ckpt)  # a plain state dict, loaded into --backbone
    out = tmp_path / "res.json"
    code = main(["eval", "knn", "--checkpoint", str(ckpt), "--backbone", "resnet18", "--data",
                 str(tmp_path / "data"), "--size", "32", "--k", "3", "--json", str(out), "--device", "cpu"])
    assert code == 0
    res = json.loads(out.read_text())
    assert res["train"] == 8 and res["test"] == 4 and res["knn_top1"] == 1.0  # dark vs bright images
    assert "kNN top-1 (weighted, cosine, k=3, t=0.1): 100.00%" in capsys.readouterr().out
    assert main(["eval", "knn", "--checkpoint", str(ckpt), "--backbone", "resnet18", "--data", str(tmp_path / "data"),
                 "--size", "32", "--k", "3", "--patches", "8", "4", "--json", str(out), "--device", "cpu"]) == 0
    assert json.loads(out.read_text())["patches"] == [8, 4]
    assert main(["eval", "knn", "--backbone", "resnet18", "--data", str(tmp_path / "data"), "--size", "32",
                 "--patches", "8", "5"]) == 1  # a grid that does not tile the images: an error, not a crash
    assert main(["eval", "knn", "--data", str(tmp_path / "nowhere")]) == 1


@pytest.mark.slow
def test_short_moco_cifar_run_beats_chance(shared_data: Path, tmp_path: Path) -> None:
    """MoCo v2 through the training loop on the shared CIFAR-10 subset, then kNN from its checkpoint."""
    from vidssl.train import load_run_config, train

    config = Path(__file__).resolve().parents[1] / "configs" / "moco_v2_cifar.yaml"
    cfg, _ = load_run_config(config, [
        f"data.source={shared_data / 'cifar10' / 'train'}", f"out_dir={tmp_path / 'run'}", "device=cpu",
        "model.backbone=resnet18", "model.queue_size=256", "model.num_splits=4", "data.batch_size=32",
        "data.workers=0", "schedule.steps=8", "ckpt.every=8", "log.every=4", "log.tensorboard=false",
        "log.progress=false",
    ])
    result = train(cfg)
    assert result.step == 8 and math.isfinite(result.last_loss)
    checkpoint = sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))[-1]
    encoder = load_encoder(checkpoint)
    assert encoder.config["cifar_stem"] is False  # the checkpoint's own architecture, not the default
    per_class = slice(0, 1000, 10)  # 100 training and 100 test images per class keep this fast
    feats = {}
    for split in ("train", "test"):
        x, y, _ = read_image_folder(shared_data / "cifar10" / split)
        sel = torch.cat([torch.nonzero(y == c)[per_class, 0] for c in range(10)])
        feats[split] = (extract_features(encoder, x[sel]), y[sel])
    acc = knn_accuracy(*feats["train"], *feats["test"], k=200, temperature=0.1)
    # chance is 0.1; a random ResNet-18 already gets about 0.23 here, 8 CPU steps do not move it (0.21):
    # this checks the pipeline (train -> checkpoint -> load_encoder -> kNN), not learning
    assert acc > 0.15, f"kNN top-1 {acc:.3f}"


def test_knn_feeds_a_mast_checkpoint_lab(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``vidssl eval knn`` feeds every encoder what it trained on: a MAST checkpoint gets MAST-normalised Lab."""
    from vidssl.models import encoder_entries, load_record
    from vidssl.nn.colour import mast_normalize_lab, rgb_to_lab

    _write_folder(tmp_path / "data" / "train", per_class=4)
    _write_folder(tmp_path / "data" / "test", per_class=2)
    torch.manual_seed(0)
    net = build_backbone("resnet18").eval()
    results = {}
    for method, space in (("mast", "lab"), ("crw", "rgb")):
        ckpt = tmp_path / f"{method}.pt"
        torch.save({**encoder_entries(net, space), "config": {"method": method}}, ckpt)
        out = tmp_path / f"{method}.json"
        assert main(["eval", "knn", "--encoder", str(ckpt), "--data", str(tmp_path / "data"), "--size", "32",
                     "--k", "3", "--json", str(out), "--device", "cpu"]) == 0
        results[method] = json.loads(out.read_text())
        assert f"fed {space}" in capsys.readouterr().out
    assert results["mast"]["input"] == "lab" and results["crw"]["input"] == "rgb"
    x, _, _ = read_image_folder(tmp_path / "data" / "train", 32)
    record = load_record(str(tmp_path / "mast.pt"))
    with torch.no_grad():
        want = net(mast_normalize_lab(rgb_to_lab(x.float() / 255)))
    torch.testing.assert_close(extract_features(record.backbone, x, input=record.input), want)
    assert not torch.allclose(extract_features(record.backbone, x), want, atol=1e-3)  # RGB would differ


def test_patch_grid_features_average_each_patch_on_its_own() -> None:
    """``patches=(8, 4)``: the 7 x 7 grid of a 32 px image (the CPC configs'), each patch through the trunk alone,
    averaged; equal to slicing the patches out by hand. A grid that does not tile the image is refused."""
    from vidssl.data.augment import to_float
    from vidssl.nn.colour import normalize_input

    torch.manual_seed(0)
    trunk = build_backbone("resnet18").eval()
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    got = extract_features(trunk, images, batch_size=2, patches=(8, 4))
    with torch.no_grad():
        x = normalize_input(to_float(images), "rgb")
        tiles = [x[:, :, r:r + 8, c:c + 8] for r in range(0, 25, 4) for c in range(0, 25, 4)]
        want = torch.stack([trunk(t) for t in tiles], dim=1).mean(dim=1)
    assert len(tiles) == 49
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="do not tile 32x32"):
        extract_features(trunk, images, patches=(8, 5))
