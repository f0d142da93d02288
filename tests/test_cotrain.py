"""The co-training stream (VIVI-Co): a second data source of labelled images beside the video data, its config
following into the method, its loss added with its weight, and its position resumed exactly."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from tests.test_methods import TINY, _batch
from vidssl.engine import checkpoint as ckpt
from vidssl.engine.config import ConfigError
from vidssl.methods import METHODS
from vidssl.train import resolve_config, train


def _image_folder(root: Path, classes: int = 3, per_class: int = 4, size: int = 20) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class_{c}" / f"{i}.png")
    return root


def _vivi(**extra: Any) -> Any:
    cls = METHODS["vivi"]
    return cls(cls.Config(**{**TINY["vivi"], **extra}))


def _labelled(n: int, classes: int, size: int = 28) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return {"video": torch.randint(0, 256, (n, 3, 1, size, size), generator=gen, dtype=torch.uint8),
            "label": torch.arange(n) % classes}


def test_cotrain_loss_is_added_with_its_weight_and_starts_at_chance() -> None:
    method = _vivi(cotrain_classes=5, cotrain_weight=0.5)
    batch = _batch(method)
    images = _labelled(6, 5)
    torch.manual_seed(3)
    alone, _ = method(batch)
    torch.manual_seed(3)  # the same augmentations for the video part: the difference is the co-training term
    total, metrics = method({**batch, "cotrain": images})
    assert {"loss_cotrain", "acc_cotrain", "chance_cotrain"} <= set(metrics)
    assert float((total - alone).detach()) == pytest.approx(0.5 * float(metrics["loss_cotrain"]), rel=1e-5, abs=1e-6)
    assert metrics["chance_cotrain"] == pytest.approx(math.log(5))
    assert method.classifier is not None
    nn.init.zeros_(method.classifier.weight)
    nn.init.zeros_(method.classifier.bias)
    loss, _ = method.cotrain_loss(images)
    assert float(loss.detach()) == pytest.approx(math.log(5), abs=1e-6)  # uniform logits: ln of the classes


def test_cotrain_errors_name_the_setting() -> None:
    plain = _vivi()
    assert plain.classifier is None
    with pytest.raises(ValueError, match="cotrain_classes is 0"):
        plain({**_batch(plain), "cotrain": _labelled(2, 2)})
    method = _vivi(cotrain_classes=2, cotrain_weight=1.0)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        method.cotrain_loss(_labelled(4, 4))
    with pytest.raises(ValueError, match="must be >= 0"):
        _vivi(cotrain_weight=-1.0)


def _config(tmp: Path, images: Path, **over: Any) -> dict[str, Any]:
    model = {k: list(v) if isinstance(v, tuple) else v for k, v in TINY["vivi"].items()}
    cfg: dict[str, Any] = {
        "method": "vivi", "seed": 0, "out_dir": str(tmp / "run"), "device": "cpu", "model": model,
        "data": {"batch_size": 2, "workers": 0},
        "cotrain": {"source": str(images), "batch_size": 2, "size": [28, 28], "weight": 0.7, "workers": 0},
        "optim": {"name": "sgd", "lr": 0.01},
        "schedule": {"name": "constant", "steps": 3},
        "log": {"every": 1, "tensorboard": False, "progress": False},
        "ckpt": {"every": 1, "keep": 0, "resume": "auto"},
    }
    for key, value in over.items():
        section, name = key.split(".")
        cfg[section][name] = value
    return cfg


def test_cotrain_section_follows_into_the_method(tmp_path: Path) -> None:
    images = _image_folder(tmp_path / "images", classes=3)
    cfg, model_cfg = resolve_config(_config(tmp_path, images))
    assert (model_cfg.cotrain_classes, model_cfg.cotrain_weight) == (3, 0.7)
    assert cfg.model["cotrain_classes"] == 3
    plain, plain_model = resolve_config({k: v for k, v in _config(tmp_path, images).items() if k != "cotrain"})
    assert plain.cotrain is None and plain_model.cotrain_classes == 0
    with pytest.raises(ConfigError, match="model.cotrain_classes: 4 disagrees"):
        resolve_config(_config(tmp_path, images, **{"model.cotrain_classes": 4}))
    with pytest.raises(ConfigError, match="cotrain.source: .*missing: image folder not found"):
        resolve_config(_config(tmp_path, images, **{"cotrain.source": str(tmp_path / "missing")}))
    simclr = {"method": "simclr", "cotrain": {"source": str(images)}}
    with pytest.raises(ConfigError, match="'simclr' does not co-train .*vivi"):
        resolve_config(simclr)
    with pytest.raises(ConfigError, match="unknown key 'cotrain.batch'; did you mean 'batch_size'"):
        resolve_config({"method": "vivi", "cotrain": {"source": str(images), "batch": 4}})


class ShotClips(Dataset):
    """Fixed random uint8 clips of the frames VIVI's tiny config samples (3 shots x 2 frames)."""

    def __init__(self, n: int = 4, size: int = 28) -> None:
        gen = torch.Generator().manual_seed(0)
        self.clips = torch.randint(0, 256, (n, 3, 6, size, size), generator=gen, dtype=torch.uint8)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"video": self.clips[index], "index": index}


def test_cotrain_stream_trains_and_resumes_at_its_position(tmp_path: Path) -> None:
    images = _image_folder(tmp_path / "images", classes=2, per_class=5)  # 10 images: 5 batches of 2 per epoch
    full, _ = resolve_config(_config(tmp_path / "full", images))
    train(full, dataset=ShotClips())
    state = ckpt.load_checkpoint(tmp_path / "full" / "run" / "checkpoints" / "ckpt_00000003.pt")
    assert state["cotrain_position"] == [0, 3] and state["data_position"] == [1, 1]
    records = (tmp_path / "full" / "run" / "metrics.jsonl").read_text()
    assert "method/loss_cotrain" in records and "method/acc_cotrain" in records

    # the video stream (2 batches an epoch) and the image stream (5) are at different places: each resumes at its own
    # two steps, then the same run resumed to three: the third step must see the third image batch again
    parted = _config(tmp_path / "parted", images, **{"schedule.steps": 2})
    train(resolve_config(parted)[0], dataset=ShotClips())
    parted["schedule"]["steps"] = 3
    train(resolve_config(parted)[0], dataset=ShotClips())
    resumed = ckpt.load_checkpoint(tmp_path / "parted" / "run" / "checkpoints" / "ckpt_00000003.pt")
    assert resumed["cotrain_position"] == [0, 3]
    for name, value in state["model"].items():
        torch.testing.assert_close(resumed["model"][name], value, rtol=0, atol=0, msg=name)

    # a checkpoint written without the stream is not resumed with one
    plain = {k: v for k, v in _config(tmp_path / "plain", images).items() if k != "cotrain"}
    plain["schedule"]["steps"] = 1
    train(resolve_config(plain)[0], dataset=ShotClips())
    with pytest.raises(ckpt.CheckpointError, match="without the cotrain stream"):
        train(resolve_config(_config(tmp_path / "plain", images))[0], dataset=ShotClips())


def test_vivi_co_config_resolves(tmp_path: Path) -> None:
    from vidssl.train import load_run_config

    images = _image_folder(tmp_path / "images", classes=4, per_class=1)
    cfg, model_cfg = load_run_config(Path(__file__).parents[1] / "configs" / "vivi_co.yaml",
                                     [f"cotrain.source={images}"])
    assert cfg.cotrain is not None and model_cfg.cotrain_classes == 4
    assert model_cfg.cotrain_weight == cfg.cotrain.weight


def test_too_few_cotrain_images_name_the_stream(tmp_path: Path) -> None:
    images = _image_folder(tmp_path / "images", classes=2, per_class=1)
    cfg, _ = resolve_config(_config(tmp_path, images, **{"cotrain.batch_size": 4}))
    with pytest.raises(ValueError, match=r"cotrain: the dataset has 2 samples.*lower cotrain\.batch_size"):
        train(cfg, dataset=ShotClips())
