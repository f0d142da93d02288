"""``vidssl export``: an encoder (a training checkpoint's, by default) as a plain torchvision ResNet state dict.

The result loads with ``torchvision.models.resnetNN().load_state_dict(sd, strict=True)``; parameters the
trained trunk lacks (``fc``, a dropped ``layer4``) come from a seeded torchvision initialisation. The encoder
is read through the encoder record (``vidssl.models.record``), so ``--encoder`` takes the same specs as
``vidssl eval``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from vidssl.engine.checkpoint import CheckpointError, atomic_save
from vidssl.models.record import EncoderRecord, load_record
from vidssl.models.resnet import ResNet, torchvision_state_dict

HELP = "write an encoder (e.g. a training checkpoint's) as a torchvision ResNet state dict (loads with strict=True)"


def export_record(record: EncoderRecord, out: str | Path, source: str = "") -> dict[str, torch.Tensor]:
    """Write ``record``'s trunk as a torchvision state dict to ``out``; notes on what torchvision's ResNet lacks
    (reflect padding, Lab input) go to stderr."""
    backbone = record.backbone
    if not isinstance(backbone, ResNet):
        raise CheckpointError(f"{source or record.name}: a {type(backbone).__name__} has no torchvision ResNet layout")
    weights = torchvision_state_dict(backbone)
    atomic_save(weights, out)
    padding = backbone.config["padding"]
    if padding != "zeros":
        print(f"note: {source}: the encoder was trained with {padding} padding; torchvision's ResNet pads with "
              f"zeros, so set padding_mode={padding!r} on its padded convolutions to reproduce its features "
              "(vidssl's own loaders do this)", file=sys.stderr)
    if record.input != "rgb":
        print(f"note: {source}: the encoder was trained on {record.input} input (vidssl.nn.colour.normalize_input), "
              "not ImageNet-normalised RGB", file=sys.stderr)
    return weights


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", "--checkpoint", dest="encoder", required=True,
                        help="a ckpt_*.pt written by vidssl train (or any --encoder spec of vidssl eval)")
    parser.add_argument("--backbone", default="resnet18", help="architecture for torchvision weights / random")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed of --encoder random")
    parser.add_argument("--layers", type=int, choices=[1, 2, 3, 4], default=None,
                        help="residual stages to keep (3 drops layer4)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the state dict (e.g. encoder.pth)")


def run(args: argparse.Namespace) -> int:
    try:
        record = load_record(args.encoder, backbone=args.backbone, seed=args.seed, layers=args.layers)
        weights = export_record(record, args.out, args.encoder)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"vidssl export: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({len(weights)} tensors, torchvision ResNet names)")
    return 0
