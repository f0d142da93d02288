"""ResNet backbones from torchvision with per-stage stride control and one contract.

They keep the backbone contract of ``vidssl.models.base.Backbone``: ``forward_features(x) -> (B, C, h, w)``,
``stride``, ``num_features``, ``forward(x) -> (B, C)`` the global-average-pooled embedding, and ``config``
(architecture key ``"resnet"``) that :meth:`ResNet.from_config` rebuilds it from.
Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1``..``layer4``), whatever the strides, so an
encoder trained here loads into ``torchvision.models.resnet18()`` (see ``torchvision_state_dict``).
"""

from __future__ import annotations

from collections.abc import Callable
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


NORMS = ("batch", "layer")  # BatchNorm2d (torchvision), or GroupNorm(1, C): layer norm per sample


class ResNet(nn.Module):
    """A torchvision ResNet trunk (no classifier).

    Args:
        depth: 18, 34 or 50.
        strides: stride of layer1..layerN (torchvision: 1, 2, 2, 2). Setting a stage to 1 keeps its
            parameters (the 1x1 downsample convolution stays) and only changes the convolution stride.
        num_layers: the residual stages kept, 1 to 4: 3 drops layer4 (a stride-8, 256-d ResNet-18 when layer3
            has stride 1); 2 reads block 2, where RotNet's features transfer best.
        maxpool: keep the stem's max-pool (stride 2).
        cifar_stem: a 3x3 stride-1 first convolution and no max-pool, for 32 px images.
        padding: how every padded convolution pads: ``zeros`` (torchvision) or ``reflect`` (CRW's scratch
            model: a small patch encoded on its own is then not dominated by the zero border). The
            parameters are the same either way; the padding is part of the recorded ``config``.
        channels: the input channels the trunk reads (``None``: all three): CMC's L trunk reads channel
            ``(0,)`` of a Lab image, its ab trunk ``(1, 2)``; the input stays ``(B, 3, H, W)`` and the first
            convolution has one input plane per channel read.
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
        channels: tuple[int, ...] | None = None,
        norm: str = "batch",
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"ResNet norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if channels is not None and (not channels or any(not 0 <= c < 3 for c in channels)
                                     or len(set(channels)) != len(channels)):
            raise ValueError(f"ResNet channels must be distinct input channels among 0, 1, 2, got {channels}")
        if depth not in _DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth}")
        if padding not in PADDINGS:
            raise ValueError(f"ResNet padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        if num_layers not in (1, 2, 3, 4) or len(strides) != num_layers:
            raise ValueError(f"need num_layers in 1..4 and one stride per layer, got {num_layers}, {strides}")
        self.depth = depth
        self.config: dict[str, Any] = {
            "arch": "resnet", "depth": depth, "strides": tuple(strides), "num_layers": num_layers,
            "maxpool": maxpool, "cifar_stem": cifar_stem, "padding": padding,
        }
        if channels is not None:
            self.config["channels"] = tuple(channels)
        if norm != "batch":
            self.config["norm"] = norm
        self.channels = tuple(channels) if channels is not None else None
        # layer norm over (C, H, W) of each sample (CPC v2: no statistics shared across the patches of a batch)
        norm_layer = (lambda c: nn.GroupNorm(1, c)) if norm == "layer" else None
        net = _DEPTHS[depth](weights=None, norm_layer=norm_layer)
        planes = len(channels) if channels is not None else 3
        if cifar_stem:
            net.conv1 = nn.Conv2d(planes, 64, kernel_size=3, stride=1, padding=1, bias=False)
            maxpool = False
        elif planes != 3:
            net.conv1 = nn.Conv2d(planes, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.conv1, self.bn1, self.relu = net.conv1, net.bn1, net.relu
        self.maxpool: nn.Module = net.maxpool if maxpool else nn.Identity()
        layers = [net.layer1, net.layer2, net.layer3, net.layer4][:num_layers]
        for layer, stride in zip(layers, strides, strict=True):
            _set_stage_stride(layer, stride)
        kept: list[nn.Module | None] = [*layers, *[None] * (4 - num_layers)]
        self.layer1: nn.Module = layers[0]
        self.layer2: nn.Module | None = kept[1]
        self.layer3: nn.Module | None = kept[2]
        self.layer4: nn.Module | None = kept[3]
        self.num_features = (64 if depth < 50 else 256) * 2 ** (num_layers - 1)
        stem = (1 if cifar_stem else 2) * (2 if maxpool else 1)
        self.stride = stem * int(torch.tensor(strides).prod())
        if padding == "reflect":
            for module in self.modules():
                if isinstance(module, nn.Conv2d) and module.padding != (0, 0):
                    module.padding_mode = "reflect"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ResNet:
        """Rebuild a trunk from its ``config`` (as checkpoints record it)."""
        return cls(
            int(config["depth"]),
            strides=tuple(config["strides"]),
            num_layers=int(config["num_layers"]),
            maxpool=bool(config["maxpool"]),
            cifar_stem=bool(config["cifar_stem"]),
            padding=str(config.get("padding", "zeros")),  # checkpoints from before the option padded with zeros
            channels=tuple(config["channels"]) if config.get("channels") is not None else None,
            norm=str(config.get("norm", "batch")),
        )

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The input channels it reads, conv1, bn1, ReLU and the max-pool: ``(B, 3, H, W)`` -> layer1's input."""
        if x.dim() != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
        if self.channels is not None:
            x = x[:, list(self.channels)]
        out: torch.Tensor = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return out

    def stages(self) -> list[nn.Module]:
        """The residual stages it keeps, layer1 first."""
        return [layer for layer in (self.layer1, self.layer2, self.layer3, self.layer4) if layer is not None]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, num_features, H / stride, W / stride)``."""
        x = self.stem(x)
        for layer in self.stages():
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> pooled embedding ``(B, num_features)``."""
        return self.forward_features(x).mean(dim=(2, 3))


def stage_width(stage: nn.Module) -> int:
    """The output channels of a residual stage: its last block's last convolution (conv3 of a Bottleneck, conv2 of
    a BasicBlock)."""
    block: Any = list(stage.children())[-1]
    conv = block.conv3 if hasattr(block, "conv3") else block.conv2
    return int(conv.out_channels)


def _set_stage_stride(layer: nn.Sequential, stride: int) -> None:
    block: Any = layer[0]  # BasicBlock strides conv1, Bottleneck conv2 (torchvision's ResNet v1.5)
    convs = [block.conv2 if isinstance(block, torchvision.models.resnet.Bottleneck) else block.conv1]
    if block.downsample is not None:
        convs.append(block.downsample[0])
    for conv in convs:
        conv.stride = (stride, stride)


def truncate(backbone: ResNet, num_layers: int) -> ResNet:
    """The same trunk with only its first ``num_layers`` residual stages (3 drops layer4, as CRW and VFS
    evaluate label propagation; 2 reads block 2, as RotNet's evaluation), with a copy of ``backbone``'s weights
    for those stages."""
    config = dict(backbone.config)
    if num_layers == config["num_layers"]:
        return backbone
    if num_layers > config["num_layers"]:
        raise ValueError(f"the trunk has {config['num_layers']} residual stages, so it cannot keep {num_layers}")
    if num_layers < 1:
        raise ValueError(f"a trunk keeps at least one residual stage, got num_layers={num_layers}")
    net = ResNet.from_config({**config, "num_layers": num_layers, "strides": tuple(config["strides"])[:num_layers]})
    dropped = tuple(f"layer{i}." for i in range(num_layers + 1, 5))
    net.load_state_dict({k: v for k, v in backbone.state_dict().items() if not k.startswith(dropped)})
    return net.train(backbone.training)


def restride(backbone: ResNet, stride: int) -> ResNet:
    """The same trunk and weights at output stride ``stride``: the last strided stages run at stride 1 (the
    parameters do not depend on it). How label propagation reads a trunk trained at stride 32: CRW evaluates an
    ImageNet ResNet-18 with layer3 at stride 1 and layer4 dropped (``truncate``), stride 8."""
    if stride == backbone.stride:
        return backbone
    config = dict(backbone.config)
    strides = list(config["strides"])
    current = backbone.stride
    for i in reversed(range(len(strides))):
        if current <= stride:
            break
        current //= strides[i]
        strides[i] = 1
    if current != stride:
        raise ValueError(f"a trunk of output stride {backbone.stride} (stages {tuple(config['strides'])}) cannot run "
                         f"at stride {stride}: setting its stages to stride 1 gives {', '.join(_reachable(backbone))}")
    net = ResNet.from_config({**config, "strides": tuple(strides)})
    net.load_state_dict(backbone.state_dict())
    return net.train(backbone.training)


def _reachable(backbone: ResNet) -> list[str]:
    strides, out, current = list(backbone.config["strides"]), [], backbone.stride
    out.append(str(current))
    for s in reversed(strides):
        if s > 1:
            current //= s
            out.append(str(current))
    return out


def torchvision_state_dict(backbone: ResNet, seed: int = 0) -> dict[str, torch.Tensor]:
    """The backbone's weights under torchvision's names, complete enough for ``strict=True`` loading.

    Parameters a trunk does not have (the ``fc`` classifier; ``layer4`` when removed) come from a seeded
    torchvision initialisation, so ``torchvision.models.resnetNN()`` loads the result with ``strict=True``.
    """
    if backbone.channels is not None:
        raise ValueError(f"a trunk reading input channels {backbone.channels} (CMC's) has no torchvision "
                         "counterpart: its first convolution takes fewer than 3 planes")
    torch.manual_seed(seed)
    full = _DEPTHS[backbone.depth](weights=None).state_dict()
    own = backbone.state_dict()
    for key, value in own.items():
        if key not in full:
            raise KeyError(f"backbone parameter {key!r} has no torchvision counterpart")
        full[key] = value.detach().clone()
    return full
