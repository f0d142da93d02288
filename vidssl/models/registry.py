"""Named backbones and the architecture keys that rebuild a recorded one.

``BACKBONES`` (ResNet image trunks), ``VIT_BACKBONES`` (Vision Transformer image trunks) and ``VIDEO_BACKBONES``
(clip trunks) map a config name to a builder; a trunk's ``config["arch"]`` names its entry in ``ARCHITECTURES``,
whose ``from_config`` rebuilds it (checkpoints record that dict; those written before the key existed are
ResNets). ``build_backbone`` builds the ResNets (the methods that read their stages need one);
``build_image_backbone`` any image trunk, for methods and evaluations that use only the backbone contract.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from vidssl.models.concat import Concat
from vidssl.models.resnet import ResNet
from vidssl.models.video import VideoResNet
from vidssl.models.vit import ViT

__all__ = [
    "ARCHITECTURES", "BACKBONES", "VIDEO_BACKBONES", "VIT_BACKBONES", "backbone_from_config", "build_backbone",
    "build_image_backbone", "build_video_backbone",
]

# Image trunks. Correspondence methods need stride-4 or stride-8 maps (PROTOCOLS.md section 2).
BACKBONES: dict[str, Callable[[], ResNet]] = {
    "resnet18": lambda: ResNet(18),
    "resnet50": lambda: ResNet(50),
    # CRW / VFS: layer3 and layer4 at stride 1 -> stride 8, 512-d.
    "resnet18_s8": lambda: ResNet(18, strides=(1, 2, 1, 1)),
    # layer4 removed, layer3 at stride 1 -> stride 8, 256-d (the label-propagation default of CRW).
    "resnet18_s8_l3": lambda: ResNet(18, strides=(1, 2, 1), num_layers=3),
    # the same two with reflect padding: CRW's own scratch model (its code's ``modify(padding='reflect')``)
    "resnet18_s8_reflect": lambda: ResNet(18, strides=(1, 2, 1, 1), padding="reflect"),
    "resnet18_s8_l3_reflect": lambda: ResNet(18, strides=(1, 2, 1), num_layers=3, padding="reflect"),
    "resnet50_s8": lambda: ResNet(50, strides=(1, 2, 1, 1)),
    # MAST: no max-pool, layer3 and layer4 at stride 1 -> stride 4.
    "resnet18_mast": lambda: ResNet(18, strides=(1, 2, 1, 1), maxpool=False),
    # 32 px images: 3x3 stem, no max-pool.
    "resnet18_cifar": lambda: ResNet(18, cifar_stem=True),
    "resnet50_cifar": lambda: ResNet(50, cifar_stem=True),
    # layer norm instead of batch norm (CPC v2's patch encoder: no batch statistics across patches)
    "resnet18_ln": lambda: ResNet(18, norm="layer"),
    "resnet18_cifar_ln": lambda: ResNet(18, cifar_stem=True, norm="layer"),
}

# Vision Transformers (torchvision's, any input size; vidssl.models.vit). DINO's small models at 224 px (ViT-S/16,
# ViT-S/8: 12 layers, 6 heads, 384 wide), and DeiT-Tiny's widths (192, 3 heads) with 4 px patches for 32 px images.
VIT_BACKBONES: dict[str, Callable[[], ViT]] = {
    "vit_small_16": lambda: ViT(image_size=224, patch_size=16, num_layers=12, num_heads=6, hidden_dim=384,
                                mlp_dim=1536),
    "vit_small_8": lambda: ViT(image_size=224, patch_size=8, num_layers=12, num_heads=6, hidden_dim=384,
                               mlp_dim=1536),
    "vit_tiny_cifar": lambda: ViT(image_size=32, patch_size=4, num_layers=12, num_heads=3, hidden_dim=192,
                                  mlp_dim=768),
}

# Clip trunks (temporal-order and predictive-coding methods).
VIDEO_BACKBONES: dict[str, Callable[[], VideoResNet]] = {
    "r3d_18": lambda: VideoResNet("r3d_18"),
    "r2plus1d_18": lambda: VideoResNet("r2plus1d_18"),
}

ARCHITECTURES: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "resnet": ResNet.from_config,
    "video_resnet": VideoResNet.from_config,
    "vit": ViT.from_config,
    "concat": lambda config: Concat([backbone_from_config(part) for part in config["parts"]]),
}


def build_backbone(name: str) -> ResNet:
    """A named ResNet image trunk, randomly initialised."""
    if name not in BACKBONES:
        hint = (" (a clip trunk: see VIDEO_BACKBONES)" if name in VIDEO_BACKBONES
                else " (a Vision Transformer: this method reads a ResNet's stages)" if name in VIT_BACKBONES else "")
        raise ValueError(f"unknown backbone {name!r}{hint}; choose from {sorted(BACKBONES)}")
    return BACKBONES[name]()


def build_image_backbone(name: str) -> ResNet | ViT:
    """A named image trunk of any architecture (a ResNet or a ViT), randomly initialised."""
    if name in VIT_BACKBONES:
        return VIT_BACKBONES[name]()
    if name not in BACKBONES:
        hint = " (a clip trunk: see VIDEO_BACKBONES)" if name in VIDEO_BACKBONES else ""
        raise ValueError(f"unknown backbone {name!r}{hint}; choose from {sorted([*BACKBONES, *VIT_BACKBONES])}")
    return BACKBONES[name]()


def build_video_backbone(name: str) -> nn.Module:
    """A named clip trunk (a ``VideoBackbone``), randomly initialised."""
    if name not in VIDEO_BACKBONES:
        hint = " (an image trunk: see BACKBONES, or wrap it in ClipEncoder)" if name in BACKBONES else ""
        raise ValueError(f"unknown clip backbone {name!r}{hint}; choose from {sorted(VIDEO_BACKBONES)}")
    return VIDEO_BACKBONES[name]()


def backbone_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild a trunk (a Backbone or VideoBackbone) from its recorded ``config`` (``arch`` names the
    architecture; a ResNet when absent, as checkpoints from before the key)."""
    arch = str(config.get("arch", "resnet"))
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown backbone architecture {arch!r} (known: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[arch](config)
