"""Shuffle and Learn: is the middle frame of three in temporal order?

Misra, Zitnick & Hebert, "Shuffle and Learn: Unsupervised Learning using Temporal Order Verification", ECCV 2016
(https://arxiv.org/abs/1603.08561; imisra/shuffle-tuple). Five frames a < b < c < d < e come from one window of
high motion (``vidssl.data.samplers.ordered_tuple`` weighted by optical flow, inside one shot); a positive tuple is
(b, c, d) or (d, c, b), in order in either direction, a negative is (b, a, d) or (b, e, d), its middle frame out of
order (``shuffle_and_learn_tuples``). A sample is positive with probability ``positive_fraction`` (the paper found
25%, three negatives per positive, best). The three frames share one crop, pass one trunk (siamese), a per-frame
layer (fc7), and the three concatenated in the tuple's order a 2-way classifier. A predictor that learned only the
prior scores H(0.25) = 0.5623 nats and 75% accuracy: :meth:`pretext_scores` gives that majority rate as chance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vidssl.data.augment import ClipAugment
from vidssl.data.samplers import ordered_tuple
from vidssl.methods.temporal import TemporalConfig, TemporalTask

# the frame positions (a, b, c, d, e) = (0, 1, 2, 3, 4) of the two positive and the two negative tuples
POSITIVES = ((1, 2, 3), (3, 2, 1))
NEGATIVES = ((1, 0, 3), (1, 4, 3))


@dataclass
class ShuffleLearnConfig(TemporalConfig):
    """Shuffle and Learn hyper-parameters (the ``model:`` section). Defaults: the paper's (CaffeNet there)."""

    max_span: int = 60  # the window the five frames come from (the paper's tau_max, frames at 30 fps)
    positive_fraction: float = 0.25
    frame_dim: int = 512  # the per-frame layer (fc7: 4096 in CaffeNet)

    def __post_init__(self) -> None:
        self.check("shuffle_learn")
        if not 0 < self.positive_fraction < 1 or self.max_span < 5 or self.frame_dim < 1:
            raise ValueError("shuffle_learn: 0 < positive_fraction < 1, max_span >= 5 and frame_dim >= 1")


def tuple_positions(label: Tensor, direction: Tensor) -> Tensor:
    """The frame positions of each sample's tuple: ``label`` 1 (positive) or 0, ``direction`` 0/1 choosing between
    the two tuples of that kind -> long ``(B, 3)`` indices into (a, b, c, d, e)."""
    table = torch.tensor([NEGATIVES, POSITIVES], device=label.device)  # (2 kinds, 2 choices, 3)
    return table[label.long(), direction.long()]


class ShuffleLearn(TemporalTask):
    """Shuffle and Learn (see the module docstring). ``forward(batch) -> (loss, metrics)``."""

    Config = ShuffleLearnConfig
    num_classes = 2

    def __init__(self, cfg: ShuffleLearnConfig) -> None:
        super().__init__(cfg)
        self.use_sampler(ordered_tuple, size=5, max_span=cfg.max_span)
        self.augment = ClipAugment(size=cfg.crop_size, scale=cfg.crop_scale, hflip=cfg.hflip)
        self.frame_layer = nn.Sequential(nn.Linear(self.backbone.num_features, cfg.frame_dim), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(3 * cfg.frame_dim, 2)

    def task(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        video = batch["video"]
        if video.shape[2] != 5:
            raise ValueError(f"shuffle_learn: needs the 5 frames (a, b, c, d, e) of its sampler, got {video.shape[2]}")
        x = self.augment(self.frames(video)).transpose(1, 2)  # (B, 5, 3, S, S), one crop for the five
        b = x.shape[0]
        label = (torch.rand(b) < self.cfg.positive_fraction).long().to(x.device)
        positions = tuple_positions(label, torch.randint(0, 2, (b,)).to(x.device))
        tuples = x[torch.arange(b, device=x.device)[:, None], positions]  # (B, 3, 3, S, S)
        feats = self.frame_layer(self.center(self.embed(tuples)))  # (B, 3, frame_dim)
        return self.classifier(feats.flatten(1)), label

    @torch.no_grad()
    def pretext_scores(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        out = super().pretext_scores(batch)
        majority = max(self.cfg.positive_fraction, 1 - self.cfg.positive_fraction)
        out["chance"] = torch.full_like(out["score"], majority)  # always answering the majority class
        return out
