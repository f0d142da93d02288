"""The shared form of the pretext tasks: a sample is one image (or one random frame of a video) and the encoder is
``self.backbone`` (:class:`FrameTask`); the tasks that classify a transformation they drew themselves add the loss,
the accuracy and the held-out score once (:class:`PretextClassifier`)."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidssl.data.augment import pad_crop, to_float
from vidssl.data.views import Sampler
from vidssl.methods.base import Metrics, SSLMethod, instance_frame
from vidssl.models import ResNet

__all__ = ["FrameTask", "PretextClassifier"]


class FrameTask(SSLMethod):
    """A method whose sample is one image (or one random frame of a video, :func:`instance_frame`) and whose encoder
    is ``self.backbone``: the pretext tasks. :meth:`crops` is the sample's augmented frame, after an optional
    ``RandomCrop(S, padding=pad)`` at the image's own size (the CIFAR recipes' shift of up to ``pad`` px)."""

    input: str
    backbone: ResNet

    def sampler(self) -> Sampler:
        return instance_frame(self.input)

    def encoder(self) -> ResNet:
        return self.backbone

    @staticmethod
    def crops(video: Tensor, augment: nn.Module, pad: int = 0,
              pad_mode: Literal["zeros", "reflect"] = "zeros") -> Tensor:
        """Frame 0 of a uint8 batch ``(B, 3, T, H, W)`` -> augmented RGB in [0, 1] ``(B, 3, S, S)``, shifted by up to
        ``pad`` px first (``augment.pad_crop``, padded with ``pad_mode``)."""
        x = to_float(video[:, :, :1])
        if pad > 0:
            x = pad_crop(x, min(x.shape[-2:]), pad, mode=pad_mode)
        out: Tensor = augment(x)[:, :, 0]
        return out


class PretextClassifier(FrameTask):
    """A pretext task that is a classification of a transformation the method applied itself (RotNet's rotation,
    the jigsaw permutation, the relative position of two patches, the surrogate class): :meth:`task` returns the
    logits and the labels of the transformations it drew; the loss is their cross-entropy (ln C at uniform logits),
    ``acc`` its accuracy, and :meth:`pretext_scores` scores it on held-out samples against chance 1 / C."""

    num_classes: int

    def task(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """``(logits (N, C), target (N,))`` for the batch (N may be a multiple of B: RotNet's four rotations)."""
        raise NotImplementedError

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Metrics]:
        logits, target = self.task(batch)
        loss = F.cross_entropy(logits, target)
        acc = (logits.detach().argmax(dim=1) == target).float().mean()
        return loss, {"acc": acc, "loss_over_lnC": loss.detach() / math.log(self.num_classes)}

    @torch.no_grad()
    def pretext_scores(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        logits, target = self.task(batch)
        correct = (logits.argmax(dim=1) == target).float()
        return {"score": correct, "chance": torch.full_like(correct, 1 / self.num_classes), "target": target}
