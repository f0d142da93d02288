"""``vidssl export``: a training checkpoint's encoder as a plain torchvision ResNet state dict.

The result loads with ``torchvision.models.resnetNN().load_state_dict(sd, strict=True)``; parameters the
trained trunk lacks (``fc``, a dropped ``layer4``) come from a seeded torchvision initialisation.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from vidssl.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint
from vidssl.models import backbone_from_config, torchvision_state_dict

HELP = "write a checkpoint's encoder as a torchvision ResNet state dict (loads with strict=True)"


def export_encoder(checkpoint: str | Path, out: str | Path) -> dict[str, torch.Tensor]:
    """Read ``checkpoint`` (written by ``vidssl train``), write the torchvision state dict to ``out``."""
    state = load_checkpoint(checkpoint)
    missing = [k for k in ("encoder", "backbone") if k not in state]
    if missing:
        raise CheckpointError(f"{checkpoint}: not a vidssl training checkpoint (no {' or '.join(missing)} entry)")
    backbone = backbone_from_config(state["backbone"])
    try:
        backbone.load_state_dict(state["encoder"])
    except RuntimeError as exc:
        raise CheckpointError(f"{checkpoint}: encoder does not match its recorded backbone ({exc})") from exc
    weights = torchvision_state_dict(backbone)
    atomic_save(weights, out)
    padding = backbone.config["padding"]
    if padding != "zeros":
        print(f"note: {checkpoint}: the encoder was trained with {padding} padding; torchvision's ResNet pads with "
              f"zeros, so set padding_mode={padding!r} on its padded convolutions to reproduce its features "
              "(vidssl's own loaders do this)", file=sys.stderr)
    return weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="a ckpt_*.pt written by vidssl train")
    parser.add_argument("--out", type=Path, required=True, help="where to write the state dict (e.g. encoder.pth)")


def run(args: argparse.Namespace) -> int:
    try:
        weights = export_encoder(args.checkpoint, args.out)
    except CheckpointError as exc:
        print(f"vidssl export: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({len(weights)} tensors, torchvision ResNet names)")
    return 0
