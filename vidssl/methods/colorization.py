"""Colourful image colourisation: predict the ab colour of every pixel from its lightness, as a distribution
over the quantised in-gamut colours.

Zhang, Isola & Efros, "Colorful Image Colorization", ECCV 2016 (https://arxiv.org/abs/1603.08511;
richzhang/colorization). The trunk reads the L channel of the Lab image only (``vidssl.models.ResNet(channels=
(0,))``; the encoder record says ``lab``, so every evaluation feeds it Lab and it reads L). A head on its feature
map predicts, at ``out_stride`` of the input, logits over the 313 ab bins (``vidssl.nn.colour.gamut_bins``); the
target is the ab of the image at that resolution soft-encoded over its nearest bins (``soft_encode``: the paper's
5, its code's 10, sigma 5). The loss is the multinomial cross-entropy per pixel, weighted by the rebalancing weight
of the pixel's nearest bin (``rebalancing_weights`` of the prior smoothed with sigma 5, mixed with the uniform at
0.5, expectation 1 under the prior), so rare saturated colours are not washed out by the common greys. The prior is
counted in the first epoch's hook over the training images (a buffer, kept by checkpoints). Grayscale images are
skipped (their targets carry no colour). Colourised samples are decoded by the annealed mean (T 0.38) and written
at every checkpoint (``visuals``: grey input, colourised, truth) to the run folder and TensorBoard.

On video a sample is one random frame of a video, which is the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment, centre_crop_clip, to_float
from vidssl.engine.distributed import all_reduce_sum
from vidssl.methods.base import EpochContext, Metrics
from vidssl.methods.frame_task import FrameTask
from vidssl.models import ResNet, build_backbone
from vidssl.nn.colour import (
    InputSpace,
    ab_error_auc,
    annealed_mean,
    gamut_bins,
    lab_to_rgb,
    mast_normalize_lab,
    quantize_ab,
    rebalancing_weights,
    rgb_to_lab,
    smooth_prior,
    soft_encode,
)


@dataclass
class ColorizationConfig:
    """Colourisation hyper-parameters (the ``model:`` section). Defaults: the paper's ImageNet values."""

    backbone: str = "resnet18"
    input: Literal["video", "images"] = "images"
    crop_size: int = 176
    pad: int = 0  # a shift of up to pad px first (RandomCrop(S, padding=pad)), the CIFAR recipes' crop
    # how that shift pads: reflect (a zero border is black, L 0 and neutral ab, colour the task gets for free)
    pad_mode: Literal["zeros", "reflect"] = "reflect"
    crop_scale: tuple[float, float] = (0.5, 1.0)
    out_stride: int = 4  # the prediction's resolution (the paper: 1/4 of the input)
    head_dim: int = 256
    neighbours: int = 5  # of the soft encoding (the paper 5, the code 10)
    sigma: float = 5.0  # of the soft encoding and of the prior's smoothing
    rebalance: float = 0.5  # the uniform's share in the rebalancing (lambda); 1: no rebalancing
    temperature: float = 0.38  # of the annealed-mean decoding
    gray_threshold: float = 2.0  # an image whose mean chroma |ab| is below this is grey: skipped
    prior_batch: int = 256  # images per batch of the prior's pass

    def __post_init__(self) -> None:
        if min(self.crop_size, self.out_stride, self.head_dim, self.neighbours, self.prior_batch) < 1:
            raise ValueError("colorization: crop_size, out_stride, head_dim, neighbours and prior_batch >= 1")
        if self.crop_size % self.out_stride:
            raise ValueError(f"colorization: crop_size={self.crop_size} is not a multiple of out_stride="
                             f"{self.out_stride}")
        if self.sigma <= 0 or self.temperature <= 0 or not 0 <= self.rebalance <= 1 or self.pad < 0:
            raise ValueError("colorization: sigma and temperature > 0, rebalance in [0, 1], pad >= 0")


class Colorization(FrameTask):
    """Colourisation (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = ColorizationConfig
    encoder_input: InputSpace = "lab"
    pretext_metric = "rebalanced_ab_auc"  # see pretext_scores
    bins: Tensor
    prior: Tensor
    weights: Tensor

    def __init__(self, cfg: ColorizationConfig) -> None:
        super().__init__()
        self.cfg, self.input = cfg, cfg.input
        self.backbone = ResNet.from_config({**build_backbone(cfg.backbone).config, "channels": (0,)})
        if cfg.crop_size // self.backbone.stride < 2:
            raise ValueError(
                f"colorization: backbone {cfg.backbone!r} (stride {self.backbone.stride}) leaves a "
                f"{cfg.crop_size // self.backbone.stride or 1}x1 map of a {cfg.crop_size} px crop, so the head would "
                "predict one colour per image (measured: no better than grey); use a trunk at stride 8 (the paper's "
                "dilated design: resnet18_s8_l3, resnet18_s8) or the CIFAR stem (resnet18_cifar)")
        q = gamut_bins()
        self.register_buffer("bins", q)
        self.register_buffer("prior", torch.zeros(len(q)))  # all zero: not counted yet
        self.register_buffer("weights", torch.ones(len(q)))
        self.head = nn.Sequential(
            nn.Conv2d(self.backbone.num_features, cfg.head_dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(cfg.head_dim), nn.ReLU(inplace=True), nn.Conv2d(cfg.head_dim, len(q), 1))
        self.augment = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, hflip=0.5)

    # ------------------------------------------------------------------------------------------------ pieces

    def views(self, batch: dict[str, Tensor]) -> Tensor:
        """The augmented crops as Lab ``(B, 3, S, S)`` (L in [0, 100], ab about +-110)."""
        return rgb_to_lab(self.crops(batch["video"], self.augment, self.cfg.pad, self.cfg.pad_mode))

    def target_ab(self, lab: Tensor) -> Tensor:
        """The ab at the prediction's resolution (area average), ``(B, 2, S / stride, S / stride)``."""
        return F.avg_pool2d(lab[:, 1:], self.cfg.out_stride)

    def logits(self, lab: Tensor) -> Tensor:
        """``(B, Q, S / stride, S / stride)`` from the normalised Lab (the trunk reads its L)."""
        f = self.head(self.backbone.forward_features(mast_normalize_lab(lab)))
        size = lab.shape[-1] // self.cfg.out_stride
        return F.interpolate(f, size=(size, size), mode="bilinear", align_corners=False)

    def colourful(self, ab: Tensor) -> Tensor:
        """``(B,)`` 1.0 for images with colour, 0.0 for grey ones (mean chroma below ``gray_threshold``)."""
        return (ab.norm(dim=1).flatten(1).mean(dim=1) >= self.cfg.gray_threshold).float()

    # ---------------------------------------------------------------------------------------------- training

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        lab = self.views(batch)
        ab = self.target_ab(lab)
        logits = self.logits(lab)
        target = soft_encode(ab, self.bins, self.cfg.neighbours, self.cfg.sigma)  # (B, Q, h, w)
        nearest = quantize_ab(ab, self.bins)  # (B, h, w)
        colourful = self.colourful(ab)
        w = self.weights[nearest] * colourful[:, None, None]
        ce = -(target * F.log_softmax(logits.float(), dim=1)).sum(dim=1)  # (B, h, w)
        loss = (w * ce).sum() / (colourful.sum() * ce[0].numel()).clamp(min=1)  # the mean over colour pixels
        with torch.no_grad():
            acc = (logits.argmax(dim=1) == nearest).float().mean()
        return loss, {"acc": acc, "ce": ce.mean().detach(), "colour_images": colourful.mean()}

    @torch.no_grad()
    def on_epoch_start(self, ctx: EpochContext) -> None:
        if bool(self.prior.sum() > 0):  # counted once (a resumed run has it from the checkpoint)
            return
        counts = torch.zeros(len(self.bins), device=ctx.device, dtype=torch.float64)
        size = self.cfg.crop_size
        for batch in ctx.batches(self.cfg.prior_batch):
            frame = to_float(batch["video"][:, :, :1].to(ctx.device))
            lab = rgb_to_lab(centre_crop_clip(frame, size)[:, :, 0])  # the centre square at the crop size
            ab = self.target_ab(lab)
            keep = self.colourful(ab) > 0
            if keep.any():
                counts += torch.bincount(quantize_ab(ab[keep], self.bins).flatten(), minlength=len(self.bins))
        counts = all_reduce_sum(counts)
        if counts.sum() == 0:
            raise ValueError("colorization: the training images have no colour (every one is grey by "
                             f"model.gray_threshold={self.cfg.gray_threshold}), so there is nothing to predict")
        self.prior.copy_(smooth_prior(counts, self.bins, self.cfg.sigma).float())
        self.weights.copy_(rebalancing_weights(self.prior, self.cfg.rebalance))

    # -------------------------------------------------------------------------------------------- evaluation

    def decoded_ab(self, logits: Tensor, size: Sequence[int]) -> Tensor:
        """``(B, 2, *size)``: the annealed-mean ab of ``logits``, upsampled to the input's ``size`` (the paper's
        output)."""
        ab = annealed_mean(logits, self.bins, self.cfg.temperature)
        return F.interpolate(ab, size=tuple(size), mode="bilinear", align_corners=False)

    def colourise(self, lab: Tensor) -> Tensor:
        """RGB ``(B, 3, S, S)`` in [0, 1]: the input's L with the annealed-mean ab."""
        return lab_to_rgb(torch.cat([lab[:, :1], self.decoded_ab(self.logits(lab), lab.shape[-2:])], dim=1))

    @torch.no_grad()
    def pretext_scores(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The paper's own measure: the class-rebalanced AuC of the ab error (:func:`vidssl.nn.colour.ab_error_auc`:
        the share of pixels whose decoded colour, the annealed mean at the input's resolution, lies within ``t`` of
        the truth, averaged over ``t = 0..150``) with each pixel weighted inversely by the probability of its true
        colour's bin. The probability is the test images' own bin frequency, so the measure is the mean over the
        colour bins present of each bin's mean AuC (``*_by_class``: ``vidssl eval pretext`` pools them over the test
        set): weighting by a prior counted elsewhere (the training prior, smoothed) lets its far tail decide
        (measured on CIFAR: weights over 10^16 apart, one bin of 3 test pixels carrying half the measure). Chance:
        the grey answer ab = 0, the paper's "Gray" baseline. Per colour image, ``score`` and ``chance`` are the
        unbalanced AuC and grey's (grey is hard to beat there, as in the paper); extras at the prediction's
        resolution: the share of pixels whose most likely bin is the truth's nearest (``bin_accuracy``) against
        always answering the prior's most frequent bin (``bin_chance``)."""
        lab = self.views(batch)
        ab, low, logits = lab[:, 1:], self.target_ab(lab), self.logits(lab)
        keep = self.colourful(low) > 0
        if not bool(self.prior.sum() > 0):
            raise ValueError("colorization: the colour prior is not counted yet (it is counted at the start of the "
                             "first epoch), so there is no most frequent bin to compare with")
        auc = ab_error_auc((self.decoded_ab(logits, lab.shape[-2:]) - ab).norm(dim=1)).flatten(1)[keep].double()
        grey = ab_error_auc(ab.norm(dim=1)).flatten(1)[keep].double()
        true_bin = quantize_ab(ab, self.bins).flatten(1)[keep]
        classes = torch.zeros(len(true_bin), len(self.bins), dtype=torch.float64, device=auc.device)
        nearest = quantize_ab(low, self.bins).flatten(1)  # the bin metrics at the prediction's resolution
        hit = (logits.argmax(dim=1).flatten(1) == nearest).float()
        mode = (nearest == self.prior.argmax()).float()
        return {"score": auc.mean(1), "chance": grey.mean(1),
                "score_by_class": classes.scatter_add(1, true_bin, auc),
                "chance_by_class": classes.scatter_add(1, true_bin, grey),
                "count_by_class": classes.scatter_add(1, true_bin, torch.ones_like(auc)),
                "bin_accuracy": hit.mean(1)[keep], "bin_chance": mode.mean(1)[keep]}

    @torch.no_grad()
    def visuals(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        lab = self.views({"video": batch["video"][:8]})
        grey = lab_to_rgb(torch.cat([lab[:, :1], torch.zeros_like(lab[:, 1:])], dim=1))
        return {"colourised": torch.stack([grey, self.colourise(lab), lab_to_rgb(lab)])}  # rows
