"""Backbones with one contract: ``forward_features``, ``stride``, ``num_features`` and a pooled embedding."""

from vidssl.models.resnet import (
    BACKBONES,
    ClipEncoder,
    ResNet,
    backbone_from_config,
    build_backbone,
    load_backbone_weights,
    load_encoder,
    torchvision_state_dict,
)

__all__ = [
    "BACKBONES",
    "ClipEncoder",
    "ResNet",
    "backbone_from_config",
    "build_backbone",
    "load_backbone_weights",
    "load_encoder",
    "torchvision_state_dict",
]
