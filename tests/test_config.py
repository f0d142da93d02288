from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from vidssl.engine.config import ConfigError, load_config, save_config, to_dict


@dataclass
class Optim:
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class Run:
    steps: int = 10
    amp: bool = False
    note: str | None = None
    optim: Optim = field(default_factory=Optim)
    milestones: list[int] = field(default_factory=list)


def test_defaults_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("steps: 5\noptim:\n  lr: 1\n")
    overrides = ["optim.name=adamw", "milestones=[2, 4]", "amp=true", "optim.betas=[0.5, 0.6]"]
    cfg = load_config(Run, path, overrides)
    assert cfg.steps == 5 and cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.optim.name == "adamw" and cfg.milestones == [2, 4] and cfg.amp is True
    assert cfg.optim.betas == (0.5, 0.6)
    save_config(cfg, tmp_path / "out.yaml")
    assert to_dict(load_config(Run, tmp_path / "out.yaml")) == to_dict(cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", "unknown key 'optim.lrr'; did you mean 'lr'"),
        ("stepz=3", "did you mean 'steps'"),
        ("steps=1.5", "steps: expected an integer"),
        ("amp=1", "amp: expected true or false"),
        ("optim.name=adam", "not one of ['sgd', 'adamw']"),
        ("optim.betas=[1]", "expected 2 values"),
        ("steps", "must look like key=value"),
    ],
)
def test_errors_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(Run, None, [override])


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Run, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [1,\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(Run, bad)
