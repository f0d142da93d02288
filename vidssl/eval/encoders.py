"""Frame encoders for label propagation: a trained or torchvision ResNet, a random one, raw Lab pixels,
or no features at all (copy the first mask).

Every encoder maps one ``(H, W, 3)`` uint8 RGB frame at its native resolution (no square resize: the
test resolution alone moves published scores by several points, PROTOCOLS.md section 2) to ``(C, h, w)``
features with ``h = ceil(H / stride)``. Trunks come from the encoder record (``vidssl.models.record``), so
every evaluation takes the same ``--encoder`` specs and feeds a checkpoint what it trained on. Nothing is
downloaded.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vidssl.models import Backbone, VideoBackbone, load_record, random_backbone
from vidssl.nn.colour import INPUT_SPACES, MAST_LAB_MEAN, MAST_LAB_STD, InputSpace, normalize_input

__all__ = ["BUILTIN", "DEFAULT_BACKBONE", "FrameEncoder", "add_encoder_arguments", "backbone_encoder",
           "build_encoder", "pixel_encoder", "random_backbone"]

DEFAULT_BACKBONE = "resnet18_s8_l3"  # CRW's label-propagation trunk: layer4 removed, stride 8, 256-d
BUILTIN = ("identity", "pixels", "random")


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
    backbone: nn.Module, device: torch.device | str, name: str = "resnet", input: InputSpace = "rgb"
) -> FrameEncoder:
    """An image trunk (in eval mode) at native resolution, fed ImageNet-normalised RGB (``input="rgb"``) or
    MAST-normalised Lab (``input="lab"``: what MAST trains its encoder on)."""
    if input not in INPUT_SPACES:
        raise ValueError(f"encoder input must be one of {', '.join(INPUT_SPACES)}, got {input!r}")
    if not isinstance(backbone, Backbone) or isinstance(backbone, VideoBackbone):
        raise ValueError(f"{name}: a {type(backbone).__name__} is not an image trunk; label propagation encodes frames")
    device = torch.device(device)
    net: Backbone = backbone.eval().to(device)

    @torch.inference_mode()
    def encode(frame: np.ndarray) -> torch.Tensor:
        _check_frame(frame)
        x = torch.as_tensor(np.array(frame)).to(device).permute(2, 0, 1)[None].float().div_(255)
        return net.forward_features(normalize_input(x, input))[0].float()  # (C, h, w)

    return FrameEncoder(name, net.stride, encode, device)


def pixel_encoder(device: torch.device | str, stride: int = 8) -> FrameEncoder:
    """Raw Lab colour average-pooled over ``stride`` x ``stride`` cells: 3-d features, a strong baseline.

    Normalised as MAST's input (``vidssl.nn.colour``): centred, so that the L2-normalised colour vector keeps
    both lightness and chroma. The frame is edge-padded to a multiple of the stride, so the grid is
    ``ceil(H / stride)`` like a ResNet's.
    """
    device = torch.device(device)
    mean = torch.tensor(MAST_LAB_MEAN, device=device).view(3, 1, 1)
    std = torch.tensor(MAST_LAB_STD, device=device).view(3, 1, 1)

    def encode(frame: np.ndarray) -> torch.Tensor:
        _check_frame(frame)
        lab = cv2.cvtColor(frame.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)  # L 0..100, a/b about +-127
        x = (torch.from_numpy(lab).to(device).permute(2, 0, 1) - mean) / std
        h, w = x.shape[-2:]
        x = F.pad(x[None], (0, -w % stride, 0, -h % stride), mode="replicate")
        return F.avg_pool2d(x, stride)[0]  # (3, ceil(H / s), ceil(W / s))

    return FrameEncoder("pixels", stride, encode, device)


def build_encoder(
    spec: str, device: torch.device | str = "cpu", backbone: str = DEFAULT_BACKBONE, seed: int = 0,
    layers: int | None = None, input: str = "auto", stride: int | None = None,
) -> FrameEncoder:
    """An encoder from a spec: ``identity``, ``pixels``, or any spec of the encoder record
    (``vidssl.models.record.load_record``): ``random`` (a seeded random ``backbone``), a vidssl checkpoint (its
    own architecture and input) or a local torchvision weights file (loaded into ``backbone``).

    ``layers=3`` drops a trunk's layer4 (CRW trains with it and evaluates without it); None keeps every stage.
    ``stride``: run a ResNet at this output stride, the same weights (8 for a trunk trained at 32: CRW's reading of
    ImageNet ResNets); None keeps its own. ``input``: ``auto`` feeds a checkpoint what it was trained on (Lab for
    MAST, RGB otherwise) and a random or torchvision ResNet RGB; ``rgb`` or ``lab`` force one.
    """
    if input not in ("auto", *INPUT_SPACES):
        raise ValueError(f"--input must be auto, {' or '.join(INPUT_SPACES)}, got {input!r}")
    if spec == "identity":
        return FrameEncoder("identity", 8, None, torch.device(device))
    if spec == "pixels":
        return pixel_encoder(device)
    if spec != "random" and not Path(spec).is_file():
        raise ValueError(f"{spec}: not a weights file and not one of {', '.join(BUILTIN)}")
    record = load_record(spec, backbone=backbone, seed=seed, layers=layers, input=input, stride=stride)
    name = record.name if record.input == "rgb" else f"{record.name}-{record.input}"
    return backbone_encoder(record.backbone, device, name, record.input)


def add_encoder_arguments(parser: argparse.ArgumentParser, backbone: str | None = DEFAULT_BACKBONE) -> None:
    """The options every evaluator shares: ``--encoder``, ``--backbone``, ``--seed``, ``--layers``, ``--stride``,
    ``--input``, ``--device``. ``backbone`` is ``--backbone``'s default (None: the evaluation mode's own)."""
    parser.add_argument("--encoder", required=True,
                        help="vidssl checkpoint, torchvision weights file (see --backbone), random, pixels or identity")
    parser.add_argument("--backbone", default=backbone,
                        help=f"architecture for torchvision weights / random (default: {backbone or 'per mode'})")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed of --encoder random")
    parser.add_argument("--layers", type=int, choices=[1, 2, 3, 4], default=None,
                        help="residual stages to keep: 3 drops layer4 (CRW evaluates that way); default: all")
    parser.add_argument("--stride", type=int, default=None,
                        help="run a ResNet at this output stride, same weights (8 for an image trunk trained at 32, "
                             "with --layers 3: CRW's reading of ImageNet ResNets); default: its own")
    parser.add_argument("--input", default="auto", choices=["auto", *INPUT_SPACES],
                        help="what the ResNet is fed: auto = what a checkpoint trained on (Lab for MAST), else RGB")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
