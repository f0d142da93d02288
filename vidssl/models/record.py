"""The encoder record: the one writer and reader of the encoder a checkpoint carries.

A vidssl training checkpoint holds, beside the training state, the entries written by :func:`encoder_entries`:

- ``encoder``: the trunk's state dict (torchvision names);
- ``backbone``: the trunk's ``config`` (architecture key ``arch``, strides, padding ...), which rebuilds it;
- ``encoder_input``: the input it was trained on, ``"rgb"`` (ImageNet-normalised RGB) or ``"lab"``
  (MAST-normalised Lab), which every evaluation feeds it;
- ``config``: the run config (its ``method`` and the method's own section).

Everything that needs an encoder (``vidssl export``, ``vidssl eval davis|jhmdb|vip|knn``, MAST's memory mode,
a method initialised from another run) loads it through :func:`load_record`, from one read of the file, with
the same ``--encoder`` spec: a vidssl checkpoint, a torchvision state dict (loaded into a named backbone), or
``random`` (a seeded initialisation of a named backbone). Checkpoints from before a field existed still load:
no ``arch`` is a ResNet, no padding is zero padding, and no ``encoder_input`` follows from the method that
wrote them (MAST's two stages were the only ones trained on Lab).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidssl.models.registry import VIDEO_BACKBONES, backbone_from_config, build_image_backbone, build_video_backbone
from vidssl.models.resnet import ResNet, restride, truncate
from vidssl.nn.colour import INPUT_SPACES, InputSpace

__all__ = [
    "EncoderRecord",
    "checkpoint_input",
    "encoder_entries",
    "load_backbone_weights",
    "load_encoder",
    "load_encoder_and_state",
    "load_record",
    "random_backbone",
]

# The methods whose checkpoints predate ``encoder_input`` and trained on Lab (a closed list: every
# checkpoint written since records its input).
_LEGACY_LAB_METHODS = ("mast", "mast_stage2")


@dataclass
class EncoderRecord:
    """An encoder ready to use: the trunk and what to feed it, with where it came from."""

    backbone: nn.Module  # a Backbone or VideoBackbone (vidssl.models.base)
    input: InputSpace
    name: str  # for tables and output folders: the file's stem, or random-<backbone>
    method: str | None = None  # the method that trained it (None: random or torchvision weights)
    run_config: dict[str, Any] | None = None


def encoder_entries(backbone: nn.Module, input: InputSpace) -> dict[str, Any]:
    """The checkpoint entries that record ``backbone`` and its input (written by the training loop)."""
    if input not in INPUT_SPACES:
        raise ValueError(f"encoder input must be one of {', '.join(INPUT_SPACES)}, got {input!r}")
    config = getattr(backbone, "config", None)
    if not isinstance(config, dict):
        raise TypeError(f"{type(backbone).__name__} has no config dict: it does not keep the backbone contract")
    return {"encoder": backbone.state_dict(), "backbone": dict(config), "encoder_input": input}


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise ValueError(f"{path}: cannot read weights ({exc})") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict or a vidssl checkpoint, got {type(state).__name__}")
    return state


def _weights(state: dict[str, Any], path: Path) -> dict[str, Any]:
    if "encoder" in state:  # a vidssl checkpoint
        state = state["encoder"]
    elif "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: the weights entry is not a state dict")
    return state


def _load_into(backbone: nn.Module, state: dict[str, Any], path: Path) -> nn.Module:
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"{path}: missing {len(missing)} backbone parameters, e.g. {missing[:3]}")
    for key, value in own.items():
        if state[key].shape != value.shape:
            raise ValueError(f"{path}: {key} has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}")
    backbone.load_state_dict({k: state[k] for k in own})
    return backbone


def checkpoint_input(state: dict[str, Any], path: str | Path) -> InputSpace:
    """The input the encoder in ``state`` (the dict read from ``path``) was trained on: ``"rgb"`` or ``"lab"``."""
    recorded = state.get("encoder_input")
    if recorded is not None:
        if recorded not in INPUT_SPACES:
            raise ValueError(f"{path}: unknown encoder_input {recorded!r} (expected one of {', '.join(INPUT_SPACES)})")
        return "lab" if recorded == "lab" else "rgb"
    config = state.get("config")
    method = config.get("method") if isinstance(config, dict) else None
    return "lab" if method in _LEGACY_LAB_METHODS else "rgb"


def _named(name: str) -> nn.Module:
    return build_video_backbone(name) if name in VIDEO_BACKBONES else build_image_backbone(name)


def random_backbone(name: str, seed: int = 0) -> nn.Module:
    """A seeded random initialisation of a named backbone (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _named(name)


def load_encoder_and_state(path: str | Path, backbone: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The trunk stored in a local file and the whole dict the file holds, from one read.

    A vidssl checkpoint rebuilds its own architecture from its ``backbone`` entry; a plain (torchvision) state
    dict is loaded into the named ``backbone``, which is then required. Nothing is downloaded.
    """
    path = Path(path)
    state = _read(path)
    recipe = state.get("backbone")
    if "encoder" in state and isinstance(recipe, dict):
        net = backbone_from_config(recipe)
    elif backbone is not None:
        net = _named(backbone)
    else:
        raise ValueError(f"{path}: not a vidssl checkpoint (no 'backbone' entry) and no backbone name given")
    return _load_into(net, _weights(state, path), path), state


def load_encoder(path: str | Path, backbone: str | None = None) -> Any:
    """The trunk stored in a local file (see :func:`load_encoder_and_state`)."""
    return load_encoder_and_state(path, backbone)[0]


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> nn.Module:
    """Load a local torchvision state dict or a vidssl checkpoint's encoder into ``backbone`` (in place).

    Keys the trunk does not have (``fc.*``, a dropped ``layer4``) are ignored; every trunk parameter must be
    present with the right shape.
    """
    path = Path(path)
    return _load_into(backbone, _weights(_read(path), path), path)


def load_record(
    spec: str, *, backbone: str = "resnet18_s8_l3", seed: int = 0, layers: int | None = None, input: str = "auto",
    stride: int | None = None,
) -> EncoderRecord:
    """The encoder an ``--encoder`` spec names: ``random`` (a seeded ``backbone``), a vidssl checkpoint (its own
    architecture, input and method) or a torchvision state dict (loaded into ``backbone``).

    ``layers=3`` drops a ResNet's layer4 (CRW trains with it and evaluates without it; 2 reads block 2, as
    RotNet's evaluation). ``stride=8`` runs a ResNet's last strided stages at stride 1 (``resnet.restride``: the
    same weights at a finer grid, as CRW reads ImageNet trunks). ``input``: ``auto`` is
    what a checkpoint recorded (RGB for random and torchvision weights); ``rgb`` or ``lab`` force one.
    """
    if input not in ("auto", *INPUT_SPACES):
        raise ValueError(f"--input must be auto, {' or '.join(INPUT_SPACES)}, got {input!r}")
    method, run_config, recorded = None, None, "rgb"
    if spec == "random":
        net, name = random_backbone(backbone, seed), f"random-{backbone}"
    else:
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"{spec}: not a weights file and not 'random'")
        net, state = load_encoder_and_state(path, backbone)
        name = path.stem
        recorded = checkpoint_input(state, path)
        config = state.get("config")
        if isinstance(config, dict):
            run_config, method = config, config.get("method")
    if layers is not None:
        if not isinstance(net, ResNet):
            raise ValueError(f"--layers: {spec}: only a ResNet trunk can drop stages, this is {type(net).__name__}")
        try:
            net = truncate(net, layers)
        except ValueError as exc:
            raise ValueError(f"--layers: {spec}: {exc}") from exc
    if stride is not None:
        if not isinstance(net, ResNet):
            raise ValueError(f"--stride: {spec}: only a ResNet trunk can change its stride, this is "
                             f"{type(net).__name__}")
        try:
            net = restride(net, stride)
        except ValueError as exc:
            raise ValueError(f"--stride: {spec}: {exc}") from exc
    space: InputSpace = "lab" if (recorded if input == "auto" else input) == "lab" else "rgb"
    return EncoderRecord(net, space, name, method, run_config)
