"""Context encoders: inpaint the masked centre of an image from its surroundings.

Pathak, Krähenbühl, Donahue, Darrell & Efros, "Context Encoders: Feature Learning by Inpainting", CVPR 2016
(https://arxiv.org/abs/1604.07379; pathak22/context-encoder, ``train.lua``). The centre ``crop/2`` square of a
``crop`` px image, shrunk by ``overlap`` px on each side, is filled with the mean pixel (the ImageNet mean, 0 after
the encoder's normalisation) and the trunk encodes the masked image; its feature map, pooled to 4 x 4, is a
``bottleneck``-d code through a 4 x 4 convolution (the paper's 4000-d fc), and a decoder of 4 x 4 transposed
convolutions (the first to 4 x 4, then stride 2 each, batch norm and ReLU, tanh out) paints the whole centre
square in [-1, 1]. The reconstruction loss is the squared error over the centre, ``border_weight`` (10) times
heavier on the ``overlap`` ring the encoder saw, as the code's ``wtl2``; with ``adversarial`` > 0 a discriminator
of stride-2 4 x 4 convolutions judges real against painted centres and the generator gains ``adversarial x`` its
non-saturating GAN loss (the paper: 0.999 L2 + 0.001 adversarial).

vidssl trains one optimiser: the discriminator's loss on detached paintings trains the discriminator alone, and
the generator's adversarial term reaches the painting only (it is computed with the discriminator's parameters
detached, ``torch.func.functional_call``), so each network follows its own objective in one step as the two
optimisers of the code. Inpainted samples (masked input, painting, truth) are written at every checkpoint.

On video a sample is one random frame of a video, which is the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from vidssl.data.augment import ClipAugment
from vidssl.methods.base import Metrics
from vidssl.methods.frame_task import FrameTask
from vidssl.models import build_backbone
from vidssl.nn.colour import imagenet_normalize


def _log2(n: int, where: str) -> int:
    k = round(math.log2(n)) if n > 0 else -1
    if k < 0 or 2**k != n:
        raise ValueError(f"{where} must be a power of two, got {n}")
    return k


def centre_box(crop: int, overlap: int) -> tuple[slice, slice]:
    """The masked hole of a ``crop`` px image: the centre ``crop/2`` square shrunk by ``overlap`` on each side."""
    lo, hi = crop // 4 + overlap, crop // 4 + crop // 2 - overlap
    return slice(lo, hi), slice(lo, hi)


def loss_weights(centre: int, overlap: int, border_weight: float) -> Tensor:
    """``(centre, centre)`` weights of the reconstruction: 1 in the hole, ``border_weight`` on the ``overlap`` ring."""
    w = torch.full((centre, centre), float(border_weight))
    w[overlap:centre - overlap, overlap:centre - overlap] = 1.0
    return w


@dataclass
class ContextEncoderConfig:
    """Context-encoder hyper-parameters (the ``model:`` section). Defaults: the paper's 128 px recipe."""

    backbone: str = "resnet18"
    input: Literal["video", "images"] = "images"
    crop_size: int = 128
    pad: int = 0  # a shift of up to pad px first (RandomCrop(S, padding=pad)), the CIFAR recipes' crop
    crop_scale: tuple[float, float] = (0.5, 1.0)
    overlap: int = 4  # the ring of the centre square the encoder sees (the code's overlapPred)
    border_weight: float = 10.0  # its weight in the reconstruction (the code's overlapL2Weight)
    bottleneck: int = 4000
    width: int = 64  # the decoder's and the discriminator's base width (the code's ngf, ndf)
    adversarial: float = 0.001  # the adversarial term's weight (the L2 term's: 1 - this); 0: L2 only

    def __post_init__(self) -> None:
        _log2(self.crop_size // 2 // 4, "context_encoder: crop_size / 8")
        if self.crop_size % 8 or not 0 <= 2 * self.overlap < self.crop_size // 2:
            raise ValueError("context_encoder: crop_size a multiple of 8 and 0 <= overlap < crop_size / 4")
        if min(self.bottleneck, self.width) < 1 or self.border_weight < 0 or not 0 <= self.adversarial < 1:
            raise ValueError("context_encoder: bottleneck and width >= 1, border_weight >= 0, adversarial in [0, 1)")


def _decoder(bottleneck: int, width: int, centre: int) -> nn.Sequential:
    ups = _log2(centre // 4, "context_encoder: the centre / 4")
    chans = [width * 2 ** max(0, ups - 1 - i) for i in range(ups)] + [3]  # e.g. 512 .. 64, then 3
    layers: list[nn.Module] = [nn.ConvTranspose2d(bottleneck, chans[0], 4, 1, 0, bias=False),
                               nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True)]  # 1 -> 4
    for i in range(ups):
        layers.append(nn.ConvTranspose2d(chans[i], chans[i + 1], 4, 2, 1, bias=i == ups - 1))
        layers += [nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True)] if i < ups - 1 else [nn.Tanh()]
    if ups == 0:
        layers += [nn.Conv2d(chans[0], 3, 1), nn.Tanh()]
    return nn.Sequential(*layers)


def _discriminator(width: int, centre: int) -> nn.Sequential:
    downs = _log2(centre // 4, "context_encoder: the centre / 4")
    layers: list[nn.Module] = []
    c_in = 3
    for i in range(downs):
        c_out = width * 2**i
        layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False))
        if i > 0:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        c_in = c_out
    layers += [nn.Conv2d(c_in, 1, 4, 1, 0), nn.Flatten()]  # 4 x 4 -> one logit
    return nn.Sequential(*layers)


class ContextEncoder(FrameTask):
    """Context encoder (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = ContextEncoderConfig
    pretext_metric = "hole_mse"
    pretext_higher_is_better = False
    wmap: Tensor

    def __init__(self, cfg: ContextEncoderConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        self.centre = cfg.crop_size // 2
        self.backbone = build_backbone(cfg.backbone)
        self.code = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Conv2d(self.backbone.num_features, cfg.bottleneck, 4),
                                  nn.BatchNorm2d(cfg.bottleneck), nn.LeakyReLU(0.2, inplace=True))
        self.decoder = _decoder(cfg.bottleneck, cfg.width, self.centre)
        self.disc = _discriminator(cfg.width, self.centre) if cfg.adversarial > 0 else None
        self.register_buffer("wmap", loss_weights(self.centre, cfg.overlap, cfg.border_weight), persistent=False)
        self.augment = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, hflip=0.5)

    def images(self, batch: dict[str, Tensor]) -> Tensor:
        """The augmented crops, RGB in [0, 1] ``(B, 3, S, S)``."""
        return self.crops(batch["video"], self.augment, self.cfg.pad)

    def paint(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(masked input normalised for the trunk, painted centre in [-1, 1] (B, 3, S/2, S/2))``."""
        masked = imagenet_normalize(x).clone()
        rows, cols = centre_box(self.cfg.crop_size, self.cfg.overlap)
        masked[:, :, rows, cols] = 0.0  # the mean pixel
        return masked, self.decoder(self.code(self.backbone.forward_features(masked)))

    def truth(self, x: Tensor) -> Tensor:
        """The real centre square in [-1, 1]."""
        q = self.cfg.crop_size // 4
        return x[:, :, q:q + self.centre, q:q + self.centre] * 2 - 1

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        x = self.images(batch)
        _, fake = self.paint(x)
        real = self.truth(x)
        l2 = (self.wmap * (fake.float() - real).square()).mean()
        metrics: Metrics = {"l2": l2.detach()}
        if self.disc is None:
            return l2, metrics
        a = self.cfg.adversarial
        ones, zeros = torch.ones(x.shape[0], 1, device=x.device), torch.zeros(x.shape[0], 1, device=x.device)
        d_real, d_fake = self.disc(real), self.disc(fake.detach())
        d_loss = F.binary_cross_entropy_with_logits(d_real, ones) + F.binary_cross_entropy_with_logits(d_fake, zeros)
        frozen = {n: p.detach() for n, p in self.disc.named_parameters()}
        g_adv = F.binary_cross_entropy_with_logits(functional_call(self.disc, frozen, (fake,)), ones)
        metrics.update(adv=g_adv.detach(), d_loss=d_loss.detach(),
                       d_acc=((d_real > 0).float().mean() + (d_fake < 0).float().mean()).detach() / 2)
        return (1 - a) * l2 + a * g_adv + d_loss, metrics

    @torch.no_grad()
    def pretext_scores(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per image: the mean squared error of the painted hole in [0, 1] RGB (``score``, lower is better) and that
        of the hole left at the mean-pixel fill (``chance``)."""
        x = self.images(batch)
        _, fake = self.paint(x)
        o, c = self.cfg.overlap, self.centre
        hole = (slice(None), slice(None), slice(o, c - o), slice(o, c - o))
        real = (self.truth(x)[hole] + 1) / 2
        mean = torch.tensor((0.485, 0.456, 0.406), device=x.device).view(1, 3, 1, 1)
        return {"score": (((fake[hole] + 1) / 2 - real).square()).flatten(1).mean(dim=1),
                "chance": ((mean - real).square()).flatten(1).mean(dim=1)}

    @torch.no_grad()
    def visuals(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x = self.images({"video": batch["video"][:8]})
        _, fake = self.paint(x)
        rows, cols = centre_box(self.cfg.crop_size, self.cfg.overlap)
        shown = x.clone()
        shown[:, :, rows, cols] = torch.tensor((0.485, 0.456, 0.406), device=x.device).view(1, 3, 1, 1)
        painted = x.clone()
        q = self.cfg.crop_size // 4
        painted[:, :, q:q + self.centre, q:q + self.centre] = (fake.float() + 1) / 2
        return {"inpainted": torch.stack([shown, painted, x])}  # rows: masked, painted, truth
