"""Backbones with one contract (``vidssl.models.base``), their registry, and the encoder record.

``build_backbone(name)`` builds a named image trunk, ``build_video_backbone(name)`` a clip trunk;
``backbone_from_config`` rebuilds a recorded one; ``load_record(spec)`` / ``load_encoder(path)`` read the
encoder of a checkpoint or weights file (``vidssl.models.record``).
"""

from vidssl.models.base import Backbone, ClipEncoder, VideoBackbone, feature_size
from vidssl.models.concat import Concat
from vidssl.models.record import (
    EncoderRecord,
    checkpoint_input,
    encoder_entries,
    load_backbone_weights,
    load_encoder,
    load_encoder_and_state,
    load_record,
    random_backbone,
)
from vidssl.models.registry import (
    ARCHITECTURES,
    BACKBONES,
    VIDEO_BACKBONES,
    VIT_BACKBONES,
    backbone_from_config,
    build_backbone,
    build_image_backbone,
    build_video_backbone,
)
from vidssl.models.resnet import ResNet, torchvision_state_dict, truncate
from vidssl.models.video import VideoResNet
from vidssl.models.vit import ViT

__all__ = [
    "ARCHITECTURES",
    "BACKBONES",
    "VIDEO_BACKBONES",
    "VIT_BACKBONES",
    "Backbone",
    "ClipEncoder",
    "Concat",
    "EncoderRecord",
    "ResNet",
    "ViT",
    "VideoBackbone",
    "VideoResNet",
    "backbone_from_config",
    "build_backbone",
    "build_image_backbone",
    "build_video_backbone",
    "checkpoint_input",
    "encoder_entries",
    "feature_size",
    "load_backbone_weights",
    "load_encoder",
    "load_encoder_and_state",
    "load_record",
    "random_backbone",
    "torchvision_state_dict",
    "truncate",
]
