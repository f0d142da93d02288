"""Frame encoders for label propagation: a trained or torchvision ResNet, a random one, raw Lab pixels,
or no features at all (copy the first mask).

Every encoder maps one ``(H, W, 3)`` uint8 RGB frame at its native resolution (no square resize: the
test resolution alone moves published scores by several points, PROTOCOLS.md section 2) to ``(C, h, w)``
features with ``h = ceil(H / stride)``. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vidssl.data.augment import mast_normalize_lab, rgb_to_lab
from vidssl.models import ResNet, build_backbone
from vidssl.models.resnet import load_encoder_and_state, truncate

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Lab normalisation of MAST (mean (50, 0, 0), std (50, 127, 127)): centred, so that the L2-normalised
# colour vector keeps both lightness and chroma
LAB_MEAN = (50.0, 0.0, 0.0)
LAB_STD = (50.0, 127.0, 127.0)
DEFAULT_BACKBONE = "resnet18_s8_l3"  # CRW's label-propagation trunk: layer4 removed, stride 8, 256-d
BUILTIN = ("identity", "pixels", "random")
INPUTS = ("rgb", "lab")  # what a ResNet encoder is fed: ImageNet-normalised RGB or MAST-normalised Lab


@dataclass
class FrameEncoder:
    """``encode(frame (H, W, 3) uint8 RGB) -> (C, h, w)`` float features; ``encode is None`` means no
    features: the first frame's mask is copied to every frame (the identity baseline)."""

    name: str
    stride: int
    encode: Callable[[np.ndarray], torch.Tensor] | None
    device: torch.device


def _check_frame(frame: np.ndarray) -> None:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {frame.shape} {frame.dtype}")


def backbone_encoder(
    backbone: ResNet, device: torch.device | str, name: str = "resnet", input: str = "rgb"
) -> FrameEncoder:
    """A ResNet (in eval mode) at native resolution, fed ImageNet-normalised RGB (``input="rgb"``) or
    MAST-normalised Lab (``input="lab"``: what MAST trains its encoder on)."""
    if input not in INPUTS:
        raise ValueError(f"encoder input must be one of {', '.join(INPUTS)}, got {input!r}")
    device = torch.device(device)
    backbone = backbone.eval().to(device)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    @torch.inference_mode()
    def encode(frame: np.ndarray) -> torch.Tensor:
        _check_frame(frame)
        x = torch.as_tensor(np.array(frame)).to(device).permute(2, 0, 1)[None].float().div_(255)
        x = mast_normalize_lab(rgb_to_lab(x)) if input == "lab" else (x - mean) / std
        return backbone.forward_features(x)[0].float()  # (C, h, w)

    return FrameEncoder(name, backbone.stride, encode, device)


def checkpoint_input(state: dict[str, Any], path: str | Path) -> str:
    """The input the encoder in ``state`` (the dict read from ``path``) was trained on: ``"rgb"`` or ``"lab"``.

    vidssl checkpoints record it (``encoder_input``); for older ones it follows from the method that wrote
    them (MAST's stages train on Lab). Plain state dicts (torchvision weights) are RGB.
    """
    recorded = state.get("encoder_input")
    if recorded is not None:
        if recorded not in INPUTS:
            raise ValueError(f"{path}: unknown encoder_input {recorded!r} (expected one of {', '.join(INPUTS)})")
        return str(recorded)
    config = state.get("config")
    method = config.get("method") if isinstance(config, dict) else None
    if method is None:
        return "rgb"
    from vidssl.methods import METHODS  # late: the methods import the data layer

    return str(getattr(METHODS.get(method), "encoder_input", "rgb"))


def pixel_encoder(device: torch.device | str, stride: int = 8) -> FrameEncoder:
    """Raw Lab colour average-pooled over ``stride`` x ``stride`` cells: 3-d features, a strong baseline.

    The frame is edge-padded to a multiple of the stride, so the grid is ``ceil(H / stride)`` like a
    ResNet's.
    """
    device = torch.device(device)
    mean = torch.tensor(LAB_MEAN, device=device).view(3, 1, 1)
    std = torch.tensor(LAB_STD, device=device).view(3, 1, 1)

    def encode(frame: np.ndarray) -> torch.Tensor:
        _check_frame(frame)
        lab = cv2.cvtColor(frame.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)  # L 0..100, a/b about +-127
        x = (torch.from_numpy(lab).to(device).permute(2, 0, 1) - mean) / std
        h, w = x.shape[-2:]
        x = F.pad(x[None], (0, -w % stride, 0, -h % stride), mode="replicate")
        return F.avg_pool2d(x, stride)[0]  # (3, ceil(H / s), ceil(W / s))

    return FrameEncoder("pixels", stride, encode, device)


def random_backbone(name: str = DEFAULT_BACKBONE, seed: int = 0) -> ResNet:
    """A seeded random initialisation of a named backbone (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_backbone(name)


def build_encoder(
    spec: str, device: torch.device | str = "cpu", backbone: str = DEFAULT_BACKBONE, seed: int = 0,
    layers: int | None = None, input: str = "auto",
) -> FrameEncoder:
    """An encoder from a spec: ``identity``, ``pixels``, ``random`` (a seeded random ``backbone``), a vidssl
    checkpoint (its own architecture) or a local torchvision weights file (loaded into ``backbone``).

    ``layers=3`` drops a trunk's layer4 (CRW trains with it and evaluates without it); None keeps every stage.
    ``input``: ``auto`` feeds a checkpoint what it was trained on (:func:`checkpoint_input`: Lab for MAST, RGB
    otherwise) and a random or torchvision ResNet RGB; ``rgb`` or ``lab`` force one.
    """
    if input not in ("auto", *INPUTS):
        raise ValueError(f"--input must be auto, {' or '.join(INPUTS)}, got {input!r}")
    if spec == "identity":
        return FrameEncoder("identity", 8, None, torch.device(device))
    if spec == "pixels":
        return pixel_encoder(device)
    if spec == "random":
        net, name = random_backbone(backbone, seed), f"random-{backbone}"
    else:
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"{spec}: not a weights file and not one of {', '.join(BUILTIN)}")
        net, state = load_encoder_and_state(path, backbone)
        name = path.stem
        if input == "auto":
            input = checkpoint_input(state, path)
    if input == "auto":
        input = "rgb"
    if layers is not None:
        try:
            net = truncate(net, layers)
        except ValueError as exc:
            raise ValueError(f"--layers: {spec}: {exc}") from exc
    return backbone_encoder(net, device, name if input == "rgb" else f"{name}-{input}", input)


def add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every propagation evaluator shares: ``--encoder``, ``--backbone``, ``--seed``, ``--layers``,
    ``--device``."""
    parser.add_argument("--encoder", required=True,
                        help="vidssl checkpoint, torchvision weights file (see --backbone), random, pixels or identity")
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE, help="architecture for torchvision weights / random")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed of --encoder random")
    parser.add_argument("--layers", type=int, choices=[3, 4], default=None,
                        help="residual stages to keep: 3 drops layer4 (CRW evaluates that way); default: all")
    parser.add_argument("--input", default="auto", choices=["auto", *INPUTS],
                        help="what the ResNet is fed: auto = what a checkpoint trained on (Lab for MAST), else RGB")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
