"""ResNet backbones from torchvision with per-stage stride control and one contract.

Contract (every backbone in vidssl): ``forward_features(x) -> (B, C, h, w)`` with ``h = H // stride``,
known ``stride`` and ``num_features``; ``forward(x) -> (B, C)`` is the global-average-pooled embedding.
Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4``), whatever the strides, so an
encoder trained here loads into ``torchvision.models.resnet18()`` (see ``torchvision_state_dict``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

PADDINGS = ("zeros", "reflect")
_DEPTHS: dict[int, Callable[..., torchvision.models.ResNet]] = {
    18: torchvision.models.resnet18,
    34: torchvision.models.resnet34,
    50: torchvision.models.resnet50,
}


class ResNet(nn.Module):
    """A torchvision ResNet trunk (no classifier).

    Args:
        depth: 18, 34 or 50.
        strides: stride of layer1..layerN (torchvision: 1, 2, 2, 2). Setting a stage to 1 keeps its
            parameters (the 1x1 downsample convolution stays) and only changes the convolution stride.
        num_layers: 3 drops layer4 (a stride-8, 256-d ResNet-18 when layer3 has stride 1).
        maxpool: keep the stem's max-pool (stride 2).
        cifar_stem: a 3x3 stride-1 first convolution and no max-pool, for 32 px images.
        padding: how every padded convolution pads: ``zeros`` (torchvision) or ``reflect`` (CRW's scratch
            model: a small patch encoded on its own is then not dominated by the zero border). The
            parameters are the same either way; the padding is part of the recorded ``config``.
    """

    def __init__(
        self,
        depth: int = 18,
        *,
        strides: tuple[int, ...] = (1, 2, 2, 2),
        num_layers: int = 4,
        maxpool: bool = True,
        cifar_stem: bool = False,
        padding: str = "zeros",
    ) -> None:
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth}")
        if padding not in PADDINGS:
            raise ValueError(f"ResNet padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        if num_layers not in (3, 4) or len(strides) != num_layers:
            raise ValueError(f"need num_layers in (3, 4) and one stride per layer, got {num_layers}, {strides}")
        self.depth = depth
        self.config: dict[str, Any] = {
            "depth": depth, "strides": tuple(strides), "num_layers": num_layers,
            "maxpool": maxpool, "cifar_stem": cifar_stem, "padding": padding,
        }
        net = _DEPTHS[depth](weights=None)
        if cifar_stem:
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            maxpool = False
        self.conv1, self.bn1, self.relu = net.conv1, net.bn1, net.relu
        self.maxpool: nn.Module = net.maxpool if maxpool else nn.Identity()
        layers = [net.layer1, net.layer2, net.layer3, net.layer4][:num_layers]
        for layer, stride in zip(layers, strides, strict=True):
            _set_stage_stride(layer, stride)
        self.layer1, self.layer2, self.layer3 = layers[:3]
        self.layer4: nn.Module | None = layers[3] if num_layers == 4 else None
        self.num_features = (512 if depth < 50 else 2048) // (2 if num_layers == 3 else 1)
        stem = (1 if cifar_stem else 2) * (2 if maxpool else 1)
        self.stride = stem * int(torch.tensor(strides).prod())
        if padding == "reflect":
            for module in self.modules():
                if isinstance(module, nn.Conv2d) and module.padding != (0, 0):
                    module.padding_mode = "reflect"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, num_features, H / stride, W / stride)``."""
        if x.dim() != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.layer4(x) if self.layer4 is not None else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> pooled embedding ``(B, num_features)``."""
        return self.forward_features(x).mean(dim=(2, 3))


def _set_stage_stride(layer: nn.Sequential, stride: int) -> None:
    block: Any = layer[0]  # BasicBlock strides conv1, Bottleneck conv2 (torchvision's ResNet v1.5)
    convs = [block.conv2 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.conv1]
    if block.downsample is not None:
        convs.append(block.downsample[0])
    for conv in convs:
        conv.stride = (stride, stride)


# Named variants. Correspondence methods need stride-4 or stride-8 maps (PROTOCOLS.md section 2).
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
}


def build_backbone(name: str) -> ResNet:
    """A named backbone, randomly initialised."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    return BACKBONES[name]()


def backbone_from_config(config: dict[str, Any]) -> ResNet:
    """Rebuild a backbone from ``ResNet.config`` (as saved in checkpoints)."""
    return ResNet(
        int(config["depth"]),
        strides=tuple(config["strides"]),
        num_layers=int(config["num_layers"]),
        maxpool=bool(config["maxpool"]),
        cifar_stem=bool(config["cifar_stem"]),
        padding=str(config.get("padding", "zeros")),  # checkpoints from before the option padded with zeros
    )


def truncate(backbone: ResNet, num_layers: int) -> ResNet:
    """The same trunk with only its first ``num_layers`` residual stages (3 drops layer4, as CRW and VFS
    evaluate label propagation), with a copy of ``backbone``'s weights for those stages."""
    config = dict(backbone.config)
    if num_layers == config["num_layers"]:
        return backbone
    if num_layers > config["num_layers"]:
        raise ValueError(f"the trunk has {config['num_layers']} residual stages, so it cannot keep {num_layers}")
    if num_layers != 3:
        raise ValueError(f"can only drop layer4 (num_layers 3) of a {config['num_layers']}-stage trunk, "
                         f"got num_layers={num_layers}")
    net = backbone_from_config({**config, "num_layers": num_layers, "strides": tuple(config["strides"])[:num_layers]})
    net.load_state_dict({k: v for k, v in backbone.state_dict().items() if not k.startswith("layer4.")})
    return net.train(backbone.training)


def torchvision_state_dict(backbone: ResNet, seed: int = 0) -> dict[str, torch.Tensor]:
    """The backbone's weights under torchvision's names, complete enough for ``strict=True`` loading.

    Parameters a trunk does not have (the ``fc`` classifier; ``layer4`` when removed) come from a seeded
    torchvision initialisation, so ``torchvision.models.resnetNN()`` loads the result with ``strict=True``.
    """
    torch.manual_seed(seed)
    full = _DEPTHS[backbone.depth](weights=None).state_dict()
    own = backbone.state_dict()
    for key, value in own.items():
        if key not in full:
            raise KeyError(f"backbone parameter {key!r} has no torchvision counterpart")
        full[key] = value.detach().clone()
    return full


def _read_weights(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise ValueError(f"{path}: cannot read weights ({exc})") from exc
    if not isinstance(state, dict):
        raise ValueError(f"{path}: expected a state dict or a vidssl checkpoint, got {type(state).__name__}")
    return state


def _trunk_state(state: dict[str, Any], path: Path) -> dict[str, Any]:
    if "encoder" in state:  # a vidssl checkpoint
        state = state["encoder"]
    elif "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path}: the weights entry is not a state dict")
    return state


def _load_into(backbone: ResNet, state: dict[str, Any], path: Path) -> ResNet:
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise ValueError(f"{path}: missing {len(missing)} backbone parameters, e.g. {missing[:3]}")
    for key, value in own.items():
        if state[key].shape != value.shape:
            raise ValueError(f"{path}: {key} has shape {tuple(state[key].shape)}, expected {tuple(value.shape)}")
    backbone.load_state_dict({k: state[k] for k in own})
    return backbone


def load_backbone_weights(backbone: ResNet, path: str | Path) -> ResNet:
    """Load a local torchvision state dict or a vidssl checkpoint (its ``encoder`` entry) into ``backbone``.

    Keys the trunk does not have (``fc.*``, a dropped ``layer4``) are ignored; every trunk parameter must be
    present with the right shape. Nothing is downloaded.
    """
    path = Path(path)
    return _load_into(backbone, _trunk_state(_read_weights(path), path), path)


def load_encoder(path: str | Path, backbone: str | None = None) -> ResNet:
    """The encoder stored in a local file, read once.

    A vidssl checkpoint rebuilds its own architecture from its ``backbone`` entry; a plain (torchvision) state
    dict is loaded into the named ``backbone``, which is then required.
    """
    return load_encoder_and_state(path, backbone)[0]


def load_encoder_and_state(path: str | Path, backbone: str | None = None) -> tuple[ResNet, dict[str, Any]]:
    """:func:`load_encoder` and the whole dict the file holds (a checkpoint's records: ``config``,
    ``encoder_input``...), from one read of the file."""
    path = Path(path)
    state = _read_weights(path)
    recipe = state.get("backbone")
    if "encoder" in state and isinstance(recipe, dict):
        net = backbone_from_config(recipe)
    elif backbone is not None:
        net = build_backbone(backbone)
    else:
        raise ValueError(f"{path}: not a vidssl checkpoint (no 'backbone' entry) and no backbone name given")
    return _load_into(net, _trunk_state(state, path), path), state


class ClipEncoder(nn.Module):
    """Applies a 2D backbone to every frame of a clip by folding time into the batch."""

    def __init__(self, backbone: ResNet) -> None:
        super().__init__()
        self.backbone = backbone
        self.stride = backbone.stride
        self.num_features = backbone.num_features

    def forward_features(self, clip: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> ``(B, num_features, T, h, w)``."""
        if clip.dim() != 5:
            raise ValueError(f"expected a clip (B, C, T, H, W), got shape {tuple(clip.shape)}")
        b, c, t, h, w = clip.shape
        frames = clip.transpose(1, 2).reshape(b * t, c, h, w)
        feats = self.backbone.forward_features(frames)
        return feats.reshape(b, t, *feats.shape[1:]).transpose(1, 2)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` -> per-frame pooled embeddings ``(B, T, num_features)``."""
        return self.forward_features(clip).mean(dim=(3, 4)).transpose(1, 2)
